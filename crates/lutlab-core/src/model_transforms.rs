//! Transforms of the float model before quantization (seed 002, Brevitas' LLM example), each an
//! exact re-parametrisation: the transformed model computes what the original does, to f32
//! rounding, and the quantizers then see different weights.
//!
//! - [`merge_norm_affine`] (`--ln-affine-merge`): a pre-norm block's norm `y = γ ⊙ n + β` feeds
//!   only the linears after it, so `y·W + b = n·(diag(γ)·W) + (β·W + b)`: γ and β move into
//!   those linears and the norm keeps γ = 1, β = 0.
//! - [`smooth_activations`] (`--act-equalization fused`, SmoothQuant): per input channel `j` of
//!   the linears after a norm, `s_j = max|x_j|^α / max|W_j|^(1−α)`; the norm's γ and β are
//!   divided by `s` and the linears' rows multiplied by it, so activations lose their outlier
//!   channels to the weights, which quantize them more easily.

use crate::error::{LoadError, Result};
use crate::fisher_file::FisherDiagonal;
use crate::weights::{LinearWeights, ModelWeights, NormWeights};
use std::collections::BTreeMap;
use std::ops::Range;

/// Per linear (full name), the factor each input row of its weight was multiplied by.
pub type RowScales = BTreeMap<String, Vec<f32>>;

/// Folds every block norm's affine (γ, and β for LayerNorm) into the linears that read the norm's
/// output (q/k/v or GPT-2's `c_attn`; the MLP's first linear(s)). The final norm stays: its output
/// goes to the head, which is the tied embedding (GPT-2, OPT) or not quantized. Returns each
/// changed linear's row factors (γ), with which a Fisher diagonal of the original weights is
/// carried over ([`scale_fisher_rows`]). Pre-norm models only ([`norm_readers`]).
pub fn merge_norm_affine(weights: &mut ModelWeights) -> Result<RowScales> {
    let mut scales = RowScales::new();
    for_each_block_norm(weights, "ln-affine-merge", &mut |norm, linears, names| {
        for (linear, name) in linears.iter_mut().zip(names) {
            fold_into(norm, linear);
            scales.insert(name.clone(), norm.gamma.data.clone());
        }
        norm.gamma.data.fill(1.0);
        if let Some(beta) = &mut norm.beta {
            beta.data.fill(0.0);
        }
        Ok(())
    })?;
    Ok(scales)
}

/// Calls `change(norm, the linears reading it, their full names)` for each block norm.
fn for_each_block_norm(
    weights: &mut ModelWeights,
    what: &str,
    change: &mut dyn FnMut(&mut NormWeights, &mut [LinearWeights], &[String]) -> Result<()>,
) -> Result<()> {
    let [attention_inputs, mlp_inputs] = norm_readers(weights, what)?;
    let names: Vec<String> = weights.linears().map(|(name, _)| name).collect();
    let per_block = weights.config.block_linears().len();
    for (block, names) in weights.blocks.iter_mut().zip(names.chunks_exact(per_block)) {
        for (norm, inputs) in [(&mut block.norm_1, attention_inputs.clone()), (&mut block.norm_2, mlp_inputs.clone())] {
            change(norm, &mut block.linears[inputs.clone()], &names[inputs])?;
        }
    }
    Ok(())
}

/// The linears reading each block norm, as index ranges into the block's linears: norm 1's (q,
/// k, v or `c_attn`) and norm 2's (the MLP's first linear or gate and up). Refuses post-norm
/// blocks (OPT-350m's `do_layer_norm_before = false`), whose norm output also feeds the residual
/// stream, so no linear of its own can absorb a change of it; `what` names the transform.
fn norm_readers(weights: &ModelWeights, what: &str) -> Result<[Range<usize>; 2]> {
    if !weights.config.pre_norm {
        return Err(LoadError::InvalidSetting(format!(
            "{what}: this model normalizes after each sub-block (do_layer_norm_before = false), where the norm's output also \
             feeds the residual stream: no linear of its own can absorb a change of the norm"
        )));
    }
    let groups = weights.config.input_groups();
    Ok([groups[0].clone(), groups[2].clone()])
}

/// The scale SmoothQuant moves from an activation channel of range `activation` into weight
/// rows of range `weight`; 1 where either range is 0 (nothing to balance).
fn smoothing_scale(activation: f32, weight: f32, alpha: f64) -> f32 {
    if activation <= 0.0 || weight <= 0.0 {
        return 1.0;
    }
    let s = f64::from(activation).powf(alpha) / f64::from(weight).powf(1.0 - alpha);
    s.clamp(1e-5, 1e5) as f32
}

/// SmoothQuant fused into the norms (`--act-equalization fused`, `--alpha`): for the linears
/// reading each block norm, with `absmax[name]` the largest magnitude of each input channel over
/// the calibration text (`reference::linear_input_absmax`, or the GPU's `linear_input_stats`),
/// `s_j = max|x_j|^α / max_k |W_jk|^(1−α)` (the weight range over all the linears sharing the
/// input); γ and β are divided by `s`, the linears' rows multiplied by it. Exact before
/// quantization. Returns the row factors (`s`) for [`scale_fisher_rows`]. Pre-norm models only;
/// the linears after attention and the MLP's activation have no norm to absorb `1/s`.
pub fn smooth_activations(weights: &mut ModelWeights, absmax: &BTreeMap<String, Vec<f32>>, alpha: f64) -> Result<RowScales> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(LoadError::InvalidSetting(format!("alpha {alpha}: SmoothQuant's migration strength is between 0 and 1 (default 0.5)")));
    }
    let mut scales = RowScales::new();
    for_each_block_norm(weights, "act-equalization", &mut |norm, linears, names| {
        let first = &names[0];
        let ranges = absmax.get(first).ok_or_else(|| LoadError::InvalidSetting(format!("no activation range for `{first}`")))?;
        let rows = norm.gamma.data.len();
        if ranges.len() != rows {
            return Err(LoadError::InvalidSetting(format!("`{first}`: {} activation ranges for {rows} inputs", ranges.len())));
        }
        // Each input row's largest weight over every linear reading it.
        let mut weight_range = vec![0f32; rows];
        for linear in linears.iter() {
            for (range, row) in weight_range.iter_mut().zip(linear.weight.data.chunks_exact(linear.out_features())) {
                *range = row.iter().fold(*range, |m, w| m.max(w.abs()));
            }
        }
        let s: Vec<f32> = ranges.iter().zip(&weight_range).map(|(&a, &w)| smoothing_scale(a, w, alpha)).collect();
        for (linear, name) in linears.iter_mut().zip(names) {
            let cols = linear.out_features();
            for (row, &f) in linear.weight.data.chunks_exact_mut(cols).zip(&s) {
                row.iter_mut().for_each(|w| *w *= f);
            }
            scales.insert(name.clone(), s.clone());
        }
        norm.gamma.data.iter_mut().zip(&s).for_each(|(g, f)| *g /= f);
        if let Some(beta) = &mut norm.beta {
            beta.data.iter_mut().zip(&s).for_each(|(v, f)| *v /= f);
        }
        Ok(())
    })?;
    Ok(scales)
}

/// `linear` as it reads `γ ⊙ n + β` instead of `n`: rows scaled by γ, `β·W` added to the bias
/// (summed in f64 from the unscaled weights).
fn fold_into(norm: &NormWeights, linear: &mut LinearWeights) {
    let cols = linear.out_features();
    if let Some(beta) = &norm.beta {
        for (c, bias) in linear.bias.data.iter_mut().enumerate() {
            let shift: f64 = beta.data.iter().enumerate().map(|(r, &b)| f64::from(b) * f64::from(linear.weight.data[r * cols + c])).sum();
            *bias = (f64::from(*bias) + shift) as f32;
        }
    }
    for (row, &g) in linear.weight.data.chunks_exact_mut(cols).zip(&norm.gamma.data) {
        row.iter_mut().for_each(|w| *w *= g);
    }
}

/// A Fisher diagonal of the original weights as one of the merged weights: a weight scaled by γ
/// has gradient `∂L/∂w / γ`, so its Fisher value is divided by γ² (0 where γ is 0: that row no
/// longer affects anything).
pub fn scale_fisher_rows(fisher: &mut FisherDiagonal, scales: &RowScales) {
    for (name, tensor) in &mut fisher.tensors {
        let Some(gamma) = name.strip_suffix(".weight").and_then(|layer| scales.get(layer)) else { continue };
        let cols = tensor.shape[1];
        for (row, &g) in tensor.data.chunks_exact_mut(cols).zip(gamma) {
            let factor = if g == 0.0 { 0.0 } else { 1.0 / (g * g) };
            row.iter_mut().for_each(|f| *f *= factor);
        }
    }
}
