//! Transforms of the float model before quantization (seed 002, Brevitas' LLM example), each an
//! exact re-parametrisation: the transformed model computes what the original does, to f32
//! rounding, and the quantizers then see different weights.
//!
//! - [`merge_norm_affine`] (`--ln-affine-merge`): a pre-norm block's norm `y = γ ⊙ n + β` feeds
//!   only the linears after it, so `y·W + b = n·(diag(γ)·W) + (β·W + b)`: γ and β move into
//!   those linears and the norm keeps γ = 1, β = 0.

use crate::error::{LoadError, Result};
use crate::fisher_file::FisherDiagonal;
use crate::weights::{LinearWeights, ModelWeights, NormWeights};
use std::collections::BTreeMap;

/// Per linear (full name), the factor each input row of its weight was multiplied by.
pub type RowScales = BTreeMap<String, Vec<f32>>;

/// Folds every block norm's affine (γ, and β for LayerNorm) into the linears that read the norm's
/// output (q/k/v or GPT-2's `c_attn`; the MLP's first linear(s)). The final norm stays: its output
/// goes to the head, which is the tied embedding (GPT-2, OPT) or not quantized. Returns each
/// changed linear's row factors (γ), with which a Fisher diagonal of the original weights is
/// carried over ([`scale_fisher_rows`]). Refuses post-norm blocks (OPT-350m's
/// `do_layer_norm_before = false`), whose norm output also feeds the residual stream.
pub fn merge_norm_affine(weights: &mut ModelWeights) -> Result<RowScales> {
    if !weights.config.pre_norm {
        return Err(LoadError::InvalidSetting(
            "ln-affine-merge: this model normalizes after each sub-block (do_layer_norm_before = false), where the norm's \
             output also feeds the residual stream: its affine has no linear of its own to move into"
                .into(),
        ));
    }
    let groups = weights.config.input_groups();
    let (attention_inputs, mlp_inputs) = (groups[0].clone(), groups[2].clone());
    let names: Vec<String> = weights.linears().map(|(name, _)| name).collect();
    let per_block = weights.config.block_linears().len();
    let mut scales = RowScales::new();
    for (b, block) in weights.blocks.iter_mut().enumerate() {
        for (norm, inputs) in [(&mut block.norm_1, attention_inputs.clone()), (&mut block.norm_2, mlp_inputs.clone())] {
            for k in inputs.clone() {
                fold_into(norm, &mut block.linears[k]);
                scales.insert(names[b * per_block + k].clone(), norm.gamma.data.clone());
            }
            norm.gamma.data.fill(1.0);
            if let Some(beta) = &mut norm.beta {
                beta.data.fill(0.0);
            }
        }
    }
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
