//! Quantizing a whole model: every selected linear weight through one method, with a report per
//! layer, and the model rebuilt from the quantized weights for evaluation.

use crate::error::{LoadError, Result};
use crate::progress::Progress;
use crate::quant::kmeans::{quantize_kmeans_report, KmeansSettings};
use crate::quant::lut::{Granularity, LutMatrix};
use crate::quant::outliers::{quantize_dense_and_sparse, OutlierSettings};
use crate::quant::uniform::{quantize_uniform, UniformSettings};
use crate::weights::{Gpt2Weights, LinearWeights};
use std::ops::Range;

/// How each weight matrix is quantized.
#[derive(Clone, Debug)]
pub enum Method {
    /// Fisher-weighted (or plain) k-means LUTs, optionally dense-and-sparse.
    Kmeans { settings: KmeansSettings, outliers: Option<OutlierSettings> },
    /// Round-to-nearest onto an integer or minifloat grid.
    Uniform(UniformSettings),
}

impl Method {
    pub fn bits(&self) -> u32 {
        match self {
            Method::Kmeans { settings, .. } => settings.bits,
            Method::Uniform(settings) => settings.bits,
        }
    }
}

/// The result for one linear weight.
#[derive(Clone, Debug)]
pub struct QuantizedLayer {
    /// `h.{i}.attn.c_attn` etc.
    pub name: String,
    /// `[in, out]` weights the quantized form stands for.
    pub dequantized: Vec<f32>,
    /// The LUT form, when the method's result is one (all but Brevitas-style input groups).
    pub lut: Option<LutMatrix>,
    /// Mean squared error against the original weights.
    pub mse: f64,
    /// Weights kept exactly in the sparse part.
    pub outliers: usize,
    /// Storage cost in bits per weight: codes, tables (f16), scales, sparse part.
    pub bits_per_weight: f64,
}

pub struct QuantizedModel {
    pub layers: Vec<QuantizedLayer>,
}

/// Sample weights (the Fisher diagonal) of a linear weight by its full name, when known.
pub type SampleWeights<'a> = &'a dyn Fn(&str) -> Option<&'a [f32]>;

/// Quantizes the linear weights of blocks `blocks` (all by default). Embeddings and the tied
/// `lm_head` stay in full precision, as in seed 000 and SqueezeLLM.
pub fn quantize_model(
    weights: &Gpt2Weights,
    method: &Method,
    blocks: Option<Range<usize>>,
    fisher: Option<SampleWeights>,
    progress: &mut dyn Progress,
) -> Result<QuantizedModel> {
    let selected = selected_layers(weights, blocks)?;
    let total = selected.iter().map(|(_, l)| l.weight.numel() as u64).sum();
    let mut done = 0;
    progress.update(0, total);
    let mut layers = Vec::with_capacity(selected.len());
    for (name, linear) in selected {
        if progress.is_cancelled() {
            return Err(LoadError::Cancelled);
        }
        layers.push(quantize_layer(&name, linear, method, fisher, weights.config.n_embd)?);
        done += linear.weight.numel() as u64;
        progress.update(done, total);
    }
    Ok(QuantizedModel { layers })
}

/// The linear layers of `blocks` (all by default), with their names, in model order.
pub fn selected_layers(weights: &Gpt2Weights, blocks: Option<Range<usize>>) -> Result<Vec<(String, &LinearWeights)>> {
    let n_layer = weights.blocks.len();
    let blocks = blocks.unwrap_or(0..n_layer);
    if blocks.is_empty() || blocks.end > n_layer {
        return Err(LoadError::InvalidSetting(format!(
            "blocks {}..{} are not a non-empty range inside the model's {n_layer} blocks",
            blocks.start, blocks.end
        )));
    }
    Ok(weights.linears().filter(|(name, _)| block_of(name).is_some_and(|b| blocks.contains(&b))).collect())
}

fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("h.")?.split('.').next()?.parse().ok()
}

/// Quantizes one linear weight; `fisher` looks up its sample weights by `{name}.weight`.
pub fn quantize_layer(
    name: &str,
    linear: &LinearWeights,
    method: &Method,
    fisher: Option<SampleWeights>,
    n_embd: usize,
) -> Result<QuantizedLayer> {
    let sample_weights = match fisher {
        Some(lookup) => Some(
            lookup(&format!("{name}.weight"))
                .ok_or_else(|| LoadError::InvalidSetting(format!("the Fisher file has no `{name}.weight`")))?,
        ),
        None => None,
    };
    let (rows, cols) = (linear.in_features(), linear.out_features());
    let original = &linear.weight.data;
    let in_layer = |e: LoadError| match e {
        LoadError::InvalidSetting(reason) => LoadError::InvalidSetting(format!("{name}: {reason}")),
        other => other,
    };
    let (dequantized, lut, outliers, scale_bits) = match method {
        Method::Kmeans { settings, outliers } => {
            let mut settings = *settings;
            // Seed 000 gives q, k and v of the fused `c_attn` a table each: three column groups.
            if name.ends_with("attn.c_attn") && settings.granularity == Granularity::Tensor {
                settings.granularity = Granularity::Group(n_embd);
            }
            let matrix = match outliers {
                Some(o) => quantize_dense_and_sparse(original, rows, cols, sample_weights, settings, *o).map(|d| d.output.matrix),
                None => quantize_kmeans_report(original, rows, cols, sample_weights, None, settings).map(|k| k.matrix),
            }
            .map_err(in_layer)?;
            (matrix.dequantize(), Some(matrix), 0, 0.0)
        }
        Method::Uniform(settings) => {
            let result = quantize_uniform(original, rows, cols, settings).map_err(in_layer)?;
            // Scales (and zero points) are stored as f16 beside the codes.
            let per_scale = if settings.symmetric { 16.0 } else { 32.0 };
            let scale_bits = result.scales.len() as f64 * per_scale;
            (result.dequantize(), result.to_lut().ok(), 0, scale_bits)
        }
    };
    let outliers = lut.as_ref().map_or(outliers, |m| m.outliers.len());
    let n = original.len() as f64;
    let mse = original.iter().zip(&dequantized).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>() / n;
    let bits_per_weight = match (&lut, method) {
        (Some(m), Method::Kmeans { .. }) => m.storage_bits() as f64 / n,
        _ => f64::from(method.bits()) + scale_bits / n,
    };
    Ok(QuantizedLayer { name: name.to_string(), dequantized, lut, mse, outliers, bits_per_weight })
}

impl QuantizedModel {
    /// A copy of `weights` with every quantized linear weight replaced by its dequantized form.
    pub fn apply(&self, weights: &Gpt2Weights) -> Gpt2Weights {
        let mut out = weights.clone();
        for layer in &self.layers {
            if let Some(linear) = linear_mut(&mut out, &layer.name) {
                linear.weight.data.clone_from(&layer.dequantized);
            }
        }
        out
    }

    /// Average storage bits per quantized weight.
    pub fn bits_per_weight(&self) -> f64 {
        let (bits, n) = self.layers.iter().fold((0.0, 0.0), |(bits, n), l| {
            let numel = l.dequantized.len() as f64;
            (bits + l.bits_per_weight * numel, n + numel)
        });
        bits / n.max(1.0)
    }
}

fn linear_mut<'a>(weights: &'a mut Gpt2Weights, name: &str) -> Option<&'a mut LinearWeights> {
    let block = weights.blocks.get_mut(block_of(name)?)?;
    match name.split_once('.').and_then(|(_, rest)| rest.split_once('.')).map(|(_, n)| n)? {
        "attn.c_attn" => Some(&mut block.attn_c_attn),
        "attn.c_proj" => Some(&mut block.attn_c_proj),
        "mlp.c_fc" => Some(&mut block.mlp_c_fc),
        "mlp.c_proj" => Some(&mut block.mlp_c_proj),
        _ => None,
    }
}
