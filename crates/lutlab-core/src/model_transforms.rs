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
//! - [`LayerwiseSmoothing`] (`--act-equalization layerwise`, Brevitas' layerwise mode):
//!   SmoothQuant for every linear on its own, from its own input's ranges and its own weight
//!   rows, with `1/s` kept as an explicit multiplication of the layer's input (the packed
//!   layer's `input_scale`) instead of folded into a norm, so the linears after attention and
//!   the MLP's activation (o_proj, down_proj, fc2), which have no norm before them, are smoothed
//!   too, and q, k and v each get their own scales.
//! - [`equalize_weights`] (`--weight-equalization`, cross-layer equalization as in "Data-Free
//!   Quantization", Nagel et al. 2019): where a linear's output channel reaches the next linear
//!   through an operation that commutes with a positive per-channel scale, the channel is divided
//!   by `s` in the first and the matching input row multiplied by `s` in the second, with
//!   `s = √(r₁ / r₂)` from the two weight ranges, which become equal (`√(r₁·r₂)` each).

use crate::error::{LoadError, Result};
use crate::fisher_file::FisherDiagonal;
use crate::quant::hessian::Square;
use crate::quant::incoherence::Incoherence;
use crate::quant::model::{LayerTransform, QuantizedLayer, QuantizedModel};
use crate::weights::{LinearWeights, ModelWeights, NormWeights};
use std::borrow::Cow;
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

/// SmoothQuant's `s_j = max|x_j|^α / max|W_j|^(1−α)` for an input with channel ranges `ranges`
/// read by `linears` (the weight range of row `j` is over all of them).
pub fn smoothing_scales(ranges: &[f32], linears: &[&LinearWeights], alpha: f64) -> Vec<f32> {
    let mut weight_range = vec![0f32; ranges.len()];
    for linear in linears {
        for (range, row) in weight_range.iter_mut().zip(linear.weight.data.chunks_exact(linear.out_features())) {
            *range = row.iter().fold(*range, |m, w| m.max(w.abs()));
        }
    }
    ranges.iter().zip(&weight_range).map(|(&a, &w)| smoothing_scale(a, w, alpha)).collect()
}

/// [`smoothing_scales`] for the input of linear `layer` (full name), read by the linears that
/// share it (q, k and v; gate and up): what `--act-equalization` would divide it by.
pub fn layer_smoothing_scales(weights: &ModelWeights, layer: &str, ranges: &[f32], alpha: f64) -> Result<Vec<f32>> {
    let config = &weights.config;
    let specs = config.block_linears();
    let (block, slot) = (0..config.n_layer)
        .flat_map(|b| (0..specs.len()).map(move |s| (b, s)))
        .find(|&(b, s)| format!("{}.{}", config.block_prefix(b), specs[s].name) == layer)
        .ok_or_else(|| LoadError::InvalidSetting(format!("`{layer}` is not a linear layer of this model")))?;
    let group = config.input_groups().into_iter().find(|g| g.contains(&slot)).unwrap_or(slot..slot + 1);
    let readers: Vec<&LinearWeights> = weights.blocks[block].linears[group].iter().collect();
    if ranges.len() != readers[0].in_features() {
        return Err(LoadError::InvalidSetting(format!("`{layer}`: {} activation ranges for {} inputs", ranges.len(), readers[0].in_features())));
    }
    Ok(smoothing_scales(ranges, &readers, alpha))
}

/// SmoothQuant fused into the norms (`--act-equalization fused`, `--alpha`): for the linears
/// reading each block norm, with `absmax[name]` the largest magnitude of each input channel over
/// the calibration text (`reference::linear_input_absmax`, or the GPU's `linear_input_stats`),
/// `s_j = max|x_j|^α / max_k |W_jk|^(1−α)` (the weight range over all the linears sharing the
/// input); γ and β are divided by `s`, the linears' rows multiplied by it. Exact before
/// quantization. Returns the row factors (`s`) for [`scale_fisher_rows`]. Pre-norm models only;
/// the linears after attention and the MLP's activation have no norm to absorb `1/s`.
pub fn smooth_activations(weights: &mut ModelWeights, absmax: &BTreeMap<String, Vec<f32>>, alpha: f64) -> Result<RowScales> {
    check_alpha(alpha)?;
    let mut scales = RowScales::new();
    for_each_block_norm(weights, "act-equalization", &mut |norm, linears, names| {
        let first = &names[0];
        let ranges = absmax.get(first).ok_or_else(|| LoadError::InvalidSetting(format!("no activation range for `{first}`")))?;
        let rows = norm.gamma.data.len();
        if ranges.len() != rows {
            return Err(LoadError::InvalidSetting(format!("`{first}`: {} activation ranges for {rows} inputs", ranges.len())));
        }
        let readers: Vec<&LinearWeights> = linears.iter().collect();
        let s = smoothing_scales(ranges, &readers, alpha);
        for (linear, name) in linears.iter_mut().zip(names) {
            scale_rows(linear, &s);
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

/// `--act-equalization layerwise`: per linear (full name), SmoothQuant's
/// `s_j = max|x_j|^α / max_k |W_jk|^(1−α)` from that linear's own input ranges and weight rows.
/// The quantizers round `diag(s)·W` ([`Self::scaled`]); the layer then runs as
/// `(x ⊙ (1/s)) · Q`, the `1/s` stored as the packed layer's `input_scale` ([`Self::unscale`]),
/// and an input quantizer sees `x ⊙ (1/s)` (`quant::inputs`). Exact before quantization, for
/// every family, pre- or post-norm.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerwiseSmoothing {
    pub scales: RowScales,
}

impl LayerwiseSmoothing {
    /// The scales of every linear of the blocks, `absmax[name]` its input's channel ranges over
    /// the calibration text (as for [`smooth_activations`]).
    pub fn new(weights: &ModelWeights, absmax: &BTreeMap<String, Vec<f32>>, alpha: f64) -> Result<Self> {
        check_alpha(alpha)?;
        let mut scales = RowScales::new();
        for (name, linear) in weights.linears() {
            let ranges = absmax.get(&name).ok_or_else(|| LoadError::InvalidSetting(format!("no activation range for `{name}`")))?;
            if ranges.len() != linear.in_features() {
                return Err(LoadError::InvalidSetting(format!("`{name}`: {} activation ranges for {} inputs", ranges.len(), linear.in_features())));
            }
            scales.insert(name, smoothing_scales(ranges, &[linear], alpha));
        }
        Ok(Self { scales })
    }

    /// `linear` (named `name`) as the quantizers see it: rows multiplied by its scales.
    pub fn scale_linear<'a>(&self, name: &str, linear: &'a LinearWeights) -> Cow<'a, LinearWeights> {
        match self.scales.get(name) {
            Some(s) => {
                let mut scaled = linear.clone();
                scale_rows(&mut scaled, s);
                Cow::Owned(scaled)
            }
            None => Cow::Borrowed(linear),
        }
    }

    /// A copy of `weights` with every smoothed linear's rows multiplied by its scales.
    pub fn scaled(&self, weights: &ModelWeights) -> ModelWeights {
        let mut out = weights.clone();
        for (name, s) in &self.scales {
            if let Some(linear) = out.linear_mut(name) {
                scale_rows(linear, s);
            }
        }
        out
    }

    /// The Hessian of linear `name`'s scaled input `x ⊙ (1/s)`: `H_ij / (s_i s_j)`.
    pub fn scale_hessian<'a>(&self, name: &str, h: &'a Square) -> Cow<'a, Square> {
        let Some(s) = self.scales.get(name).filter(|s| s.len() == h.n) else { return Cow::Borrowed(h) };
        let mut scaled = h.clone();
        for (i, row) in scaled.data.chunks_exact_mut(h.n).enumerate() {
            row.iter_mut().zip(s).for_each(|(v, &sj)| *v /= f64::from(s[i]) * f64::from(sj));
        }
        Cow::Owned(scaled)
    }

    /// A layer quantized from [`Self::scaled`] weights as it runs on the original input: its
    /// input multiplied by `1/s` (the layer's `input_scale`, composed with QuIP's if it has one),
    /// its dense weights `diag(1/s)·Q`, its error measured against `original`, and the `1/s`
    /// (f32 per input) counted in its size. Seed 000's centering measured the unscaled inputs:
    /// it is refused.
    pub fn unscale(&self, original: &LinearWeights, mut layer: QuantizedLayer) -> Result<QuantizedLayer> {
        let Some(s) = self.scales.get(&layer.name) else { return Ok(layer) };
        let (rows, cols) = (original.in_features(), original.out_features());
        let inverse: Vec<f32> = s.iter().map(|&v| 1.0 / v).collect();
        let transform = layer.transform.get_or_insert_with(|| LayerTransform {
            scales: None,
            input_shift: None,
            bias: original.bias.data.clone(),
            incoherence: None,
        });
        if transform.input_shift.is_some() {
            return Err(LoadError::InvalidSetting(format!(
                "{}: --act-equalization layerwise scales the layer's input, which seed 000's centering measured unscaled: give one",
                layer.name
            )));
        }
        let incoherence = transform.incoherence.get_or_insert(Incoherence { input_scale: None, input: None, output: None });
        let added = incoherence.input_scale.is_none();
        incoherence.input_scale = Some(match incoherence.input_scale.take() {
            Some(a) => a.iter().zip(&inverse).map(|(a, i)| a * i).collect(),
            None => inverse.clone(),
        });
        for (row, &f) in layer.dequantized.chunks_exact_mut(cols).zip(&inverse) {
            row.iter_mut().for_each(|w| *w *= f);
        }
        let n = (rows * cols) as f64;
        layer.mse = original.weight.data.iter().zip(&layer.dequantized).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>() / n;
        if added {
            layer.bits_per_weight += 32.0 * rows as f64 / n;
        }
        Ok(layer)
    }

    /// [`Self::unscale`] for every layer of `model`, `original` the unscaled weights.
    pub fn unscale_model(&self, original: &ModelWeights, model: QuantizedModel) -> Result<QuantizedModel> {
        let layers = model
            .layers
            .into_iter()
            .map(|layer| match original.linear(&layer.name) {
                Some(linear) => self.unscale(linear, layer),
                None => Ok(layer),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QuantizedModel { layers })
    }
}

/// Brevitas' `--act-equalization` kinds lutlab has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActEqualization {
    /// Scales folded into the norms before q/k/v and the MLP ([`smooth_activations`]).
    Fused,
    /// Every linear its own scales, kept as an explicit input scale ([`LayerwiseSmoothing`]).
    Layerwise,
}

impl std::str::FromStr for ActEqualization {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fused" => Ok(Self::Fused),
            "layerwise" => Ok(Self::Layerwise),
            other => Err(LoadError::InvalidSetting(format!(
                "act-equalization `{other}`: use fused (SmoothQuant's scales folded into the norms before q/k/v and the MLP) or layerwise (every linear its own scales, kept as an explicit multiplication of its input)"
            ))),
        }
    }
}

/// SmoothQuant of `kind` at `alpha`, `absmax` each linear input's channel ranges: fused changes
/// `weights` and carries a Fisher diagonal of them over; layerwise leaves both and returns the
/// scales the quantizers apply (a Fisher diagonal for those is [`scale_fisher_rows`] by them).
pub fn act_equalize(
    kind: ActEqualization,
    weights: &mut ModelWeights,
    absmax: &BTreeMap<String, Vec<f32>>,
    alpha: f64,
    fisher: Option<&mut FisherDiagonal>,
) -> Result<Option<LayerwiseSmoothing>> {
    match kind {
        ActEqualization::Fused => {
            let rows = smooth_activations(weights, absmax, alpha)?;
            if let Some(fisher) = fisher {
                scale_fisher_rows(fisher, &rows);
            }
            Ok(None)
        }
        ActEqualization::Layerwise => Ok(Some(LayerwiseSmoothing::new(weights, absmax, alpha)?)),
    }
}

/// SmoothQuant's migration strength must lie in [0, 1].
fn check_alpha(alpha: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(LoadError::InvalidSetting(format!("alpha {alpha}: SmoothQuant's migration strength is between 0 and 1 (default 0.5)")));
    }
    Ok(())
}

/// Per linear (full name), the factor each output column of its weight (and its bias) was divided by.
pub type ColumnScales = BTreeMap<String, Vec<f32>>;

/// One pair [`equalize_weights`] balances: `producer`'s output columns `first_column..` feed, one
/// to one or (grouped-query attention) one to several, `consumer`'s input rows; `column_of_row`
/// maps each consumer row to the producer column it reads.
struct EqualizedPair {
    producer: usize,
    consumer: usize,
    column_of_row: Vec<usize>,
}

/// The pairs of a block whose link commutes with a positive per-channel scale: attention's
/// values and output projection (attention is linear in v, heads and GQA's shared heads
/// included), ReLU MLPs (`relu(x/s) = relu(x)/s`) and SwiGLU's up and down projections
/// (`silu(g)·(u/s) = silu(g)·u/s`). GELU (GPT-2's MLP) does not commute, so it is left alone.
fn equalized_pairs(config: &crate::config::ModelConfig) -> Vec<EqualizedPair> {
    use crate::config::{Activation, Family};
    let (c, d) = (config.n_embd, config.head_dim);
    let group = config.n_head / config.n_kv_head.max(1);
    // Query head h reads key/value head h / group: o's input row h·D + j reads v's column (h / group)·D + j.
    let value_columns = |first: usize| (0..config.n_head * d).map(|r| first + (r / d / group) * d + r % d).collect::<Vec<_>>();
    let one_to_one = |n: usize| (0..n).collect::<Vec<_>>();
    let mut pairs = match config.family {
        Family::Gpt2 => vec![EqualizedPair { producer: 0, consumer: 1, column_of_row: value_columns(2 * c) }],
        Family::Opt | Family::Llama => vec![EqualizedPair { producer: 2, consumer: 3, column_of_row: value_columns(0) }],
    };
    match (config.family, config.activation) {
        (Family::Opt, Activation::Relu) => pairs.push(EqualizedPair { producer: 4, consumer: 5, column_of_row: one_to_one(config.n_inner) }),
        (Family::Llama, Activation::SwiGlu) => pairs.push(EqualizedPair { producer: 5, consumer: 6, column_of_row: one_to_one(config.n_inner) }),
        _ => {}
    }
    pairs
}

/// Cross-layer weight equalization (`--weight-equalization`) of every block's
/// [`equalized_pairs`]: for each producer column `c` with range `r₁ = max |W₁[·, c]|` and its
/// consumer rows' range `r₂ = max |W₂[r, ·]|` over the rows reading it, `s = √(r₁ / r₂)` (1 where
/// either is 0); the column and its bias are divided by `s`, the rows multiplied by it. Exact
/// before quantization. Returns the consumers' row factors and the producers' column divisors,
/// for carrying a Fisher diagonal over ([`scale_fisher_rows`], [`scale_fisher_columns`]).
pub fn equalize_weights(weights: &mut ModelWeights) -> Result<(RowScales, ColumnScales)> {
    let pairs = equalized_pairs(&weights.config);
    let names: Vec<String> = weights.linears().map(|(name, _)| name).collect();
    let per_block = weights.config.block_linears().len();
    let (mut rows_scaled, mut columns_scaled) = (RowScales::new(), ColumnScales::new());
    for (block, names) in weights.blocks.iter_mut().zip(names.chunks_exact(per_block)) {
        for pair in &pairs {
            let (producer, consumer) = (&block.linears[pair.producer], &block.linears[pair.consumer]);
            let (p_cols, c_cols) = (producer.out_features(), consumer.out_features());
            if pair.column_of_row.len() != consumer.in_features() || pair.column_of_row.iter().any(|&col| col >= p_cols) {
                return Err(LoadError::InvalidSetting(format!(
                    "weight-equalization: `{}` and `{}` do not have the shapes this family's attention/MLP implies",
                    names[pair.producer], names[pair.consumer]
                )));
            }
            let mut producer_range = vec![0f32; p_cols];
            for row in producer.weight.data.chunks_exact(p_cols) {
                producer_range.iter_mut().zip(row).for_each(|(m, w)| *m = m.max(w.abs()));
            }
            let mut consumer_range = vec![0f32; p_cols];
            for (row, &col) in consumer.weight.data.chunks_exact(c_cols).zip(&pair.column_of_row) {
                consumer_range[col] = row.iter().fold(consumer_range[col], |m, w| m.max(w.abs()));
            }
            let mut divisor = vec![1f32; p_cols];
            for &col in &pair.column_of_row {
                let (r1, r2) = (producer_range[col], consumer_range[col]);
                if r1 > 0.0 && r2 > 0.0 {
                    divisor[col] = (f64::from(r1) / f64::from(r2)).sqrt().clamp(1e-5, 1e5) as f32;
                }
            }
            divide_columns(&mut block.linears[pair.producer], &divisor);
            let row_factor: Vec<f32> = pair.column_of_row.iter().map(|&col| divisor[col]).collect();
            scale_rows(&mut block.linears[pair.consumer], &row_factor);
            merge_factors(rows_scaled.entry(names[pair.consumer].clone()).or_insert_with(|| vec![1.0; row_factor.len()]), &row_factor);
            merge_factors(columns_scaled.entry(names[pair.producer].clone()).or_insert_with(|| vec![1.0; p_cols]), &divisor);
        }
    }
    Ok((rows_scaled, columns_scaled))
}

/// Accumulates per-row or per-column factors: `total *= more`.
pub(crate) fn merge_factors(total: &mut [f32], more: &[f32]) {
    total.iter_mut().zip(more).for_each(|(t, m)| *t *= m);
}

/// Multiplies input row `r` of `linear`'s `[in, out]` weight by `factors[r]`.
pub(crate) fn scale_rows(linear: &mut LinearWeights, factors: &[f32]) {
    let cols = linear.out_features();
    for (row, &f) in linear.weight.data.chunks_exact_mut(cols).zip(factors) {
        row.iter_mut().for_each(|w| *w *= f);
    }
}

/// Divides output column `c` of `linear` (weight and bias) by `divisor[c]` (one per column).
pub(crate) fn divide_columns(linear: &mut LinearWeights, divisor: &[f32]) {
    let cols = linear.out_features();
    crate::quant::transforms::apply_scales(&mut linear.weight.data, cols, divisor);
    linear.bias.data.iter_mut().zip(divisor).for_each(|(b, s)| *b /= s);
}

/// A Fisher diagonal carried over a column division: a weight divided by `s` has gradient
/// `s·∂L/∂w`, so its Fisher value is multiplied by `s²`.
pub fn scale_fisher_columns(fisher: &mut FisherDiagonal, divisors: &ColumnScales) {
    for (name, tensor) in &mut fisher.tensors {
        let Some(divisor) = name.strip_suffix(".weight").and_then(|layer| divisors.get(layer)) else { continue };
        let cols = tensor.shape[1];
        for row in tensor.data.chunks_exact_mut(cols) {
            row.iter_mut().zip(divisor).for_each(|(f, s)| *f *= s * s);
        }
    }
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
