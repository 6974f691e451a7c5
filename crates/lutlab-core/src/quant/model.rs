//! Quantizing a whole model: every selected linear weight through one method, with a report per
//! layer, and the model rebuilt from the quantized weights for evaluation.

use crate::error::{LoadError, Result};
use crate::progress::Progress;
use crate::quant::head::{head_calibration, head_linear, head_outliers, is_head, transpose, HEAD};
use crate::quant::kmeans::{quantize_kmeans_report, KmeansOutput, KmeansSettings};
use crate::quant::lut::{Granularity, InputGroupScales, LutMatrix, SparseOutliers, INPUT_GROUP_MULTIPLE};
use crate::quant::outliers::{select_outliers, sparse_corrections, OutlierSelection, OutlierSettings};
use crate::quant::transforms::{fold_input_shift, prepare_linear, unapply_scales};
use crate::quant::hessian::{proxy_loss, round_with_hessian, Grid, HessianRounder, Rounded, RoundingSettings, Square};
use crate::quant::incoherence::{layer_rotations, preprocess, Incoherence, IncoherenceSettings, RmsGrid};
use crate::quant::uniform::{grid_levels, input_group_scales, quantize_uniform, UniformGranularity, UniformSettings};
use crate::quant::packed::PackedLinear;
use crate::quant::vector::{fit, VectorLut, VectorProblems, VectorSettings};
use crate::weights::{ModelWeights, LinearWeights};
use std::borrow::Cow;
use std::ops::Range;

/// How each weight matrix is quantized.
#[derive(Clone, Debug)]
pub enum Method {
    /// Fisher-weighted (or plain) k-means LUTs, optionally dense-and-sparse, optionally with seed
    /// 000's per-channel scaling (`scaling`; centering comes with the calibration's input means).
    Kmeans { settings: KmeansSettings, outliers: Option<OutlierSettings>, scaling: bool },
    /// Round-to-nearest onto an integer or minifloat grid.
    Uniform(UniformSettings),
    /// Second-order rounding (GPTQ, LDLQ, greedy passes; `quant::hessian`) onto a uniform grid
    /// or k-means tables, with each layer's Hessian from the calibration, optionally after QuIP's
    /// incoherence processing (`quant::incoherence`).
    Hessian { rounding: RoundingSettings, grid: HessianGrid, incoherence: Option<IncoherenceSettings> },
}

/// The grid a Hessian method rounds to.
#[derive(Clone, Debug)]
pub enum HessianGrid {
    /// Integer or minifloat scales at any granularity; input-row groups (GPTQ's groupsize) are
    /// fitted as the rounding reaches them, or beforehand with `static_groups`.
    Uniform { settings: UniformSettings, static_groups: bool },
    /// k-means tables fitted first (Fisher-weighted with a Fisher file, otherwise each weight
    /// weighted by its input's `H[k,k]`), then rounded to with error feedback; outliers are kept
    /// exactly at their updated value.
    Kmeans { settings: KmeansSettings, outliers: Option<OutlierSettings> },
    /// QuIP's `qfn b`: `2^bits` evenly spaced values over ±2.4 × the RMS of the matrix (QuIP's
    /// code) or, `per_channel`, of each output channel (`quant::incoherence::RmsGrid`), for
    /// incoherent (near-Gaussian) weights.
    Rms { bits: u32, per_channel: bool },
}

impl Method {
    pub fn bits(&self) -> u32 {
        match self {
            Method::Kmeans { settings, .. } => settings.bits,
            Method::Uniform(settings) => settings.bits,
            Method::Hessian { grid: HessianGrid::Uniform { settings, .. }, .. } => settings.bits,
            Method::Hessian { grid: HessianGrid::Kmeans { settings, .. }, .. } => settings.bits,
            Method::Hessian { grid: HessianGrid::Rms { bits, .. }, .. } => *bits,
        }
    }

    /// This method with `bits` bits per code, other settings unchanged.
    pub fn with_bits(&self, bits: u32) -> Method {
        let mut method = self.clone();
        match &mut method {
            Method::Kmeans { settings, .. } | Method::Hessian { grid: HessianGrid::Kmeans { settings, .. }, .. } => settings.bits = bits,
            Method::Uniform(settings) | Method::Hessian { grid: HessianGrid::Uniform { settings, .. }, .. } => settings.bits = bits,
            Method::Hessian { grid: HessianGrid::Rms { bits: b, .. }, .. } => *b = bits,
        }
        method
    }

    /// The widths (bits per code) this method's other settings allow: 1 to 8 for tables (k-means,
    /// QuIP's RMS grid), 2 to 8 for an integer grid, only its own width for a minifloat format.
    pub fn widths(&self) -> Vec<u32> {
        (1..=8).filter(|&bits| self.check_bits(bits).is_ok()).collect()
    }

    /// Whether this method's other settings allow `bits` bits per code, and if not why.
    pub fn check_bits(&self, bits: u32) -> Result<()> {
        match self {
            Method::Uniform(settings) | Method::Hessian { grid: HessianGrid::Uniform { settings, .. }, .. } => settings.format.check_bits(bits),
            Method::Kmeans { settings, .. } if settings.vector_dim > 1 => KmeansSettings { bits, ..*settings }.vector_settings().map(|_| ()),
            _ if (1..=8).contains(&bits) => Ok(()),
            _ => Err(LoadError::InvalidSetting(format!("{bits} bits per code: tables take 1 to 8"))),
        }
    }

    /// Whether the method needs each layer's Hessian.
    pub fn needs_hessians(&self) -> bool {
        matches!(self, Method::Hessian { .. })
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
    /// The vector-table form (`--vector-dim`), which `lut` cannot hold.
    pub vector: Option<VectorLut>,
    /// The packed form of a layer whose blocks of channels got different widths (`--allocate-per
    /// channels:N`): column parts, each cut from the packed layer at its width.
    pub column_parts: Option<PackedLinear>,
    /// Mean squared error against the original weights.
    pub mse: f64,
    /// Weights kept exactly in the sparse part.
    pub outliers: usize,
    /// Storage cost in bits per weight: codes, tables (f16), scales, sparse part.
    pub bits_per_weight: f64,
    /// `tr(ΔW H ΔWᵀ)` against the layer's Hessian, when the calibration has one.
    pub proxy_loss: Option<f64>,
    /// Seed 000's transforms, when applied: the layer runs as `scales ⊙ ((x − input_shift) · W) +
    /// bias` with `W` the LUT form above (see `quant::transforms`).
    pub transform: Option<LayerTransform>,
}

/// What seed 000's scaling and centering store beside a layer's codes.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTransform {
    /// Per output column (scaling), or `None`.
    pub scales: Option<Vec<f32>>,
    /// Per input row: the layer's mean input (centering), or `None`.
    pub input_shift: Option<Vec<f32>>,
    /// The bias to store: `b + μ · W` with centering.
    pub bias: Vec<f32>,
    /// QuIP's incoherence processing: the codes are of the processed weights, and the layer
    /// runs through these transforms (`quant::incoherence`).
    pub incoherence: Option<Incoherence>,
}

/// The mean input of each linear layer by name (`h.0.attn.c_attn`), for centering.
pub type InputMeans = std::collections::BTreeMap<String, Vec<f32>>;

/// What calibration gives the quantizers: the Fisher diagonal (sample weights) and, for seed
/// 000's centering, the mean input of each linear layer.
#[derive(Clone, Copy, Default)]
pub struct Calibration<'a> {
    pub fisher: Option<SampleWeights<'a>>,
    pub input_means: Option<&'a InputMeans>,
    /// Each linear's Hessian by name (`h.0.attn.c_attn`), for the Hessian methods and every
    /// method's proxy loss.
    pub hessians: Option<Hessians<'a>>,
    /// Where the Hessian methods round when not on this CPU (the GPU, from `lutlab-model`); it
    /// may decline a case, which the CPU reference then rounds.
    pub rounder: Option<&'a dyn HessianRounder>,
}

impl<'a> Calibration<'a> {
    pub fn fisher(fisher: Option<SampleWeights<'a>>) -> Self {
        Self { fisher, ..Self::default() }
    }
}

/// The Hessian of a linear layer by its full name, when known.
pub type Hessians<'a> = &'a dyn Fn(&str) -> Option<&'a Square>;

pub struct QuantizedModel {
    pub layers: Vec<QuantizedLayer>,
}

/// Sample weights (the Fisher diagonal) of a linear weight by its full name, when known.
pub type SampleWeights<'a> = &'a dyn Fn(&str) -> Option<&'a [f32]>;

/// Which weights a model's quantization covers: the linear weights of `blocks` (all by default)
/// and, when `embeddings` is set, the tied token embedding / LM head (`quant::head`). Off by
/// default, as in seed 000 and SqueezeLLM, which keep them in full precision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSelection {
    pub blocks: Option<Range<usize>>,
    pub embeddings: bool,
}

impl From<Option<Range<usize>>> for LayerSelection {
    fn from(blocks: Option<Range<usize>>) -> Self {
        Self { blocks, embeddings: false }
    }
}

/// Quantizes the weights `selection` names (an `Option<Range>` of blocks converts into one; the
/// embeddings stay in full precision unless it says otherwise).
pub fn quantize_model(
    weights: &ModelWeights,
    method: &Method,
    selection: impl Into<LayerSelection>,
    calibration: Calibration,
    progress: &mut dyn Progress,
) -> Result<QuantizedModel> {
    let selected = selected_layers(weights, selection)?;
    let total = selected.iter().map(|(_, l)| l.weight.numel() as u64).sum();
    let mut done = 0;
    progress.update(0, total);
    let mut layers = Vec::with_capacity(selected.len());
    for (name, linear) in selected {
        if progress.is_cancelled() {
            return Err(LoadError::Cancelled);
        }
        layers.push(quantize_layer(&name, &linear, method, calibration, weights.config.n_embd)?);
        done += linear.weight.numel() as u64;
        progress.update(done, total);
    }
    Ok(QuantizedModel { layers })
}

/// The linear layers `selection` names, with their names, in model order; the head (`lm_head`,
/// built from `wte`, so owned) last.
pub fn selected_layers(weights: &ModelWeights, selection: impl Into<LayerSelection>) -> Result<Vec<(String, Cow<'_, LinearWeights>)>> {
    let selection = selection.into();
    let n_layer = weights.blocks.len();
    let blocks = selection.blocks.unwrap_or(0..n_layer);
    if blocks.is_empty() || blocks.end > n_layer {
        return Err(LoadError::InvalidSetting(format!(
            "blocks {}..{} are not a non-empty range inside the model's {n_layer} blocks",
            blocks.start, blocks.end
        )));
    }
    let mut layers: Vec<(String, Cow<'_, LinearWeights>)> = weights
        .linears()
        .filter(|(name, _)| weights.linear_position(name).is_some_and(|(b, _)| blocks.contains(&b)))
        .map(|(name, linear)| (name, Cow::Borrowed(linear)))
        .collect();
    if selection.embeddings {
        layers.push((HEAD.to_string(), Cow::Owned(head_linear(weights))));
    }
    Ok(layers)
}

/// Quantizes one linear weight; the calibration's Fisher lookup finds its sample weights by
/// `{name}.weight`, its input means by `name`.
pub fn quantize_layer(
    name: &str,
    linear: &LinearWeights,
    method: &Method,
    calibration: Calibration,
    n_embd: usize,
) -> Result<QuantizedLayer> {
    match method {
        Method::Kmeans { settings, .. } if settings.vector_dim > 1 => quantize_layer_vector(name, linear, settings, calibration, n_embd),
        Method::Kmeans { .. } => {
            let job = KmeansJob::new(name, linear, method, calibration, n_embd)?;
            let output = quantize_kmeans_report(&job.weights, job.rows, job.cols, job.sample_weights, job.excluded(), job.settings)
                .map_err(|e| job.in_layer(e))?;
            Ok(with_proxy_loss(job.finish(output)?, linear, calibration))
        }
        Method::Uniform(settings) => {
            let (rows, cols) = (linear.in_features(), linear.out_features());
            let result = quantize_uniform(&linear.weight.data, rows, cols, settings).map_err(|e| in_layer(name, e))?;
            let lut = result.to_lut().ok();
            let outliers = lut.as_ref().map_or(0, |m| m.outliers.len());
            let bits_per_weight = uniform_bits_per_weight(settings, result.scales.len(), linear.weight.numel());
            let layer = layer_report(name, &linear.weight.data, result.dequantize(), lut, outliers, bits_per_weight, None);
            Ok(with_proxy_loss(layer, linear, calibration))
        }
        Method::Hessian { rounding, grid, incoherence } => {
            // The CPU reference, or the rounder the calibration names (the GPU's, natively).
            let (rows, cols) = (linear.in_features(), linear.out_features());
            let elsewhere = async |w: &[f32], h: &Square, grid: &Grid, exact: Option<&[bool]>| {
                calibration.rounder.and_then(|r| r.round(w, rows, cols, h, grid, exact, rounding))
            };
            crate::ready::now(quantize_layer_hessian(name, linear, rounding, grid, incoherence.as_ref(), calibration, n_embd, elsewhere))
        }
    }
}

/// A GPTQ-style layer (`Method::Hessian`) whose rounding `elsewhere` may wait, e.g. on a GPU
/// from the browser; `None` from it leaves the case to the CPU reference. Every other method goes
/// to [`quantize_layer`].
pub async fn quantize_layer_rounded_by(
    name: &str,
    linear: &LinearWeights,
    method: &Method,
    calibration: Calibration<'_>,
    n_embd: usize,
    elsewhere: impl AsyncFn(&[f32], &Square, &Grid, Option<&[bool]>) -> Option<Result<Rounded>>,
) -> Result<QuantizedLayer> {
    match method {
        Method::Hessian { rounding, grid, incoherence } => quantize_layer_hessian(name, linear, rounding, grid, incoherence.as_ref(), calibration, n_embd, elsewhere).await,
        _ => quantize_layer(name, linear, method, calibration, n_embd),
    }
}

/// Vector look-up tables (`quant::vector`), on the CPU: a [`VectorJob`] whose tables are fitted
/// here.
fn quantize_layer_vector(name: &str, linear: &LinearWeights, settings: &KmeansSettings, calibration: Calibration, n_embd: usize) -> Result<QuantizedLayer> {
    let job = VectorJob::new(name, linear, settings, calibration, n_embd)?;
    let problems = &job.problems;
    let fits = problems.tables.iter().enumerate().map(|(t, points)| fit(points, problems.entries, &job.settings, t).centres).collect();
    job.finish(fits)
}

/// One layer's vector-table quantization before and after its k-means (which the CPU or the GPU
/// does): codebooks fitted to the layer's vectors of `vector_dim` input rows, Fisher-weighted per
/// element. As for scalar tables, GPT-2's fused `c_attn` gets a codebook per projection when the
/// granularity is the whole tensor, and the head no Fisher weights.
pub struct VectorJob<'a, 'c> {
    name: &'a str,
    linear: &'a LinearWeights,
    calibration: Calibration<'c>,
    pub settings: VectorSettings,
    pub problems: VectorProblems,
}

impl<'a, 'c> VectorJob<'a, 'c> {
    pub fn new(name: &'a str, linear: &'a LinearWeights, settings: &KmeansSettings, calibration: Calibration<'c>, n_embd: usize) -> Result<Self> {
        if calibration.input_means.is_some() {
            return Err(in_layer(name, LoadError::InvalidSetting("vector tables do not combine with centering yet".into())));
        }
        let sample_weights = sample_weights_of(head_calibration(name, calibration).fisher, name)?;
        let mut v = settings.vector_settings()?;
        if name.ends_with("attn.c_attn") && v.granularity == Granularity::Tensor {
            v.granularity = Granularity::Group(n_embd);
        }
        let (rows, cols) = (linear.in_features(), linear.out_features());
        let problems = VectorProblems::new(&linear.weight.data, rows, cols, sample_weights, &v).map_err(|e| in_layer(name, e))?;
        Ok(VectorJob { name, linear, calibration, settings: v, problems })
    }

    /// The layer from each table's fitted centres (`[entries][dim]`).
    pub fn finish(self, centres: Vec<Vec<f64>>) -> Result<QuantizedLayer> {
        let (rows, cols) = (self.linear.in_features(), self.linear.out_features());
        let (lut, _) = self.problems.finish(centres);
        let bits_per_weight = lut.storage_bits() as f64 / (rows * cols) as f64;
        let mut layer = layer_report(self.name, &self.linear.weight.data, lut.dequantize(), None, 0, bits_per_weight, None);
        layer.vector = Some(lut);
        Ok(with_proxy_loss(layer, self.linear, self.calibration))
    }
}

/// Scales (and zero points) are stored as f16 beside the codes.
fn uniform_bits_per_weight(settings: &UniformSettings, scales: usize, numel: usize) -> f64 {
    let per_scale = if settings.symmetric { 16.0 } else { 32.0 };
    f64::from(settings.bits) + scales as f64 * per_scale / numel as f64
}

/// `layer` with its proxy loss, when the calibration has the layer's Hessian.
fn with_proxy_loss(mut layer: QuantizedLayer, linear: &LinearWeights, calibration: Calibration) -> QuantizedLayer {
    if let Some(h) = calibration.hessians.and_then(|lookup| lookup(&layer.name)) {
        let (rows, cols) = (linear.in_features(), linear.out_features());
        if h.n == rows {
            layer.proxy_loss = Some(proxy_loss(&linear.weight.data, &layer.dequantized, rows, cols, h));
        }
    }
    layer
}

/// GPTQ / LDLQ / greedy for one layer: the grid first (uniform scales, or k-means tables), then
/// the rounding with error feedback through the layer's Hessian, `elsewhere` if it takes the case
/// (processed weights, Hessian, grid, kept weights), else by the CPU reference. With
/// `incoherence`, both happen on QuIP's processed weights and Hessian, and the layer keeps what
/// undoes the processing.
#[allow(clippy::too_many_arguments)]
async fn quantize_layer_hessian(
    name: &str,
    linear: &LinearWeights,
    rounding: &RoundingSettings,
    grid: &HessianGrid,
    incoherence: Option<&IncoherenceSettings>,
    calibration: Calibration<'_>,
    n_embd: usize,
    elsewhere: impl AsyncFn(&[f32], &Square, &Grid, Option<&[bool]>) -> Option<Result<Rounded>>,
) -> Result<QuantizedLayer> {
    let original_h = calibration
        .hessians
        .and_then(|lookup| lookup(name))
        .ok_or_else(|| LoadError::InvalidSetting(format!("{name}: no Hessian for this layer (GPTQ-style methods need calibration)")))?;
    let (rows, cols) = (linear.in_features(), linear.out_features());
    let numel = linear.weight.numel();
    let processed = incoherence
        .map(|s| {
            // `preprocess` refuses a Hessian of another size, naming both.
            let rotations = s.project.then(|| layer_rotations(name, rows, cols, s.seed));
            preprocess(&linear.weight.data, rows, cols, original_h, s.rescale, rotations)
        })
        .transpose()
        .map_err(|e| in_layer(name, e))?;
    let (w, h) = match &processed {
        Some(p) => (&p.weights, &p.hessian),
        None => (&linear.weight.data, original_h),
    };
    let round = async |grid: &Grid, exact: Option<&[bool]>| {
        let there = elsewhere(w, h, grid, exact).await;
        there.unwrap_or_else(|| round_with_hessian(w, rows, cols, h, grid, exact, rounding)).map_err(|e| in_layer(name, e))
    };
    // A LUT's tables as the grid to round to.
    let tables_of = |lut: &LutMatrix| -> Result<Grid> {
        Ok(Grid::Tables { levels: lut.levels(), tables: lut.tables.clone(), channels_per_table: lut.granularity.channels_per_table(cols)? })
    };
    let (mut layer, proxy) = match grid {
        HessianGrid::Uniform { settings, static_groups } => match settings.granularity {
            UniformGranularity::InputGroup(size) => {
                let r = round(&Grid::InputGroups { size, settings: *settings, static_groups: *static_groups }, None).await?;
                let bits = uniform_bits_per_weight(settings, numel / size, numel);
                // The packed form: the shared grid, each group's scale and zero point (groups of a
                // multiple of 32 rows; others stay dense).
                let fitted = r.groups.as_ref().ok_or_else(|| in_layer(name, LoadError::InvalidSetting("input groups were not fitted".into())))?;
                let lut = match input_group_scales(size, &fitted.scales, &fitted.zero_points) {
                    Ok(groups) => Some(LutMatrix {
                        rows,
                        cols,
                        bits: settings.bits,
                        granularity: Granularity::Tensor,
                        tables: grid_levels(settings)?,
                        codes: r.codes,
                        input_groups: Some(groups),
                        outliers: SparseOutliers::none(rows),
                    }),
                    Err(_) => None,
                };
                (layer_report(name, w, r.values, lut, 0, bits, None), r.proxy_loss)
            }
            _ => {
                let fit = quantize_uniform(w, rows, cols, settings).map_err(|e| in_layer(name, e))?;
                let mut lut = fit.to_lut().map_err(|e| in_layer(name, e))?;
                // Round to the fit's own tables (the LUT may hold the unscaled grid with a scale
                // per channel instead); the codes are the same either way.
                let granularity = settings.granularity.lut_granularity(rows).unwrap_or(Granularity::Channel);
                let tables = Grid::Tables { levels: settings.levels(), tables: fit.tables.clone(), channels_per_table: granularity.channels_per_table(cols)? };
                let r = round(&tables, None).await?;
                lut.codes = r.codes;
                let bits = uniform_bits_per_weight(settings, fit.scales.len(), numel);
                (layer_report(name, w, r.values, Some(lut), 0, bits, None), r.proxy_loss)
            }
        },
        HessianGrid::Rms { bits, per_channel } => {
            let grid = RmsGrid::new(w, rows, cols, *bits, *per_channel);
            let r = round(&Grid::Tables { levels: 1 << bits, tables: grid.tables(), channels_per_table: 1 }, None).await?;
            // Per channel: the shared levels and one step per channel (an input group of every
            // row); per tensor: one table.
            let (tables, input_groups) = match per_channel {
                true => (grid.levels, Some(InputGroupScales { size: rows.next_multiple_of(INPUT_GROUP_MULTIPLE), scales: grid.steps, zeros: None })),
                false => (grid.tables()[..1 << bits].to_vec(), None),
            };
            let lut = LutMatrix { rows, cols, bits: *bits, granularity: Granularity::Tensor, tables, codes: r.codes, input_groups, outliers: SparseOutliers::none(rows) };
            let bits = lut.storage_bits() as f64 / numel as f64;
            (layer_report(name, w, r.values, Some(lut), 0, bits, None), r.proxy_loss)
        }
        HessianGrid::Kmeans { settings, outliers } => {
            if processed.is_some() && outliers.is_some() {
                return Err(in_layer(name, LoadError::InvalidSetting("incoherence processing spreads outliers over the whole matrix: it does not combine with dense-and-sparse outliers".into())));
            }
            // Without a Fisher file each weight counts as much as its input's energy, H[k,k];
            // after incoherence processing always (Fisher values do not survive a rotation).
            let diagonal: Vec<f32> = (0..rows).flat_map(|k| std::iter::repeat_n(h.at(k, k) as f32, cols)).collect();
            let fisher = if processed.is_some() { None } else { sample_weights_of(calibration.fisher, name)? };
            let sample_weights: &[f32] = fisher.unwrap_or(&diagonal);
            let lookup = |_: &str| Some(sample_weights);
            let method = Method::Kmeans { settings: *settings, outliers: *outliers, scaling: false };
            let rotated;
            let target = match &processed {
                Some(p) => {
                    rotated = LinearWeights { weight: crate::checkpoint::HostTensor::new(vec![rows, cols], p.weights.clone()), bias: linear.bias.clone() };
                    &rotated
                }
                None => linear,
            };
            let job = KmeansJob::new(name, target, &method, Calibration::fisher(Some(&lookup)), n_embd)?;
            let fitted = quantize_kmeans_report(&job.weights, rows, cols, job.sample_weights, job.excluded(), job.settings).map_err(|e| job.in_layer(e))?;
            let mut lut = fitted.matrix;
            let r = round(&tables_of(&lut)?, job.excluded()).await?;
            lut.codes = r.codes;
            if let Some(mask) = job.excluded() {
                lut.outliers = sparse_corrections(&r.values, &lut, mask).map_err(|e| in_layer(name, e))?;
            }
            let bits = lut.storage_bits() as f64 / numel as f64;
            let outliers = lut.outliers.len();
            (layer_report(name, w, lut.dequantize(), Some(lut), outliers, bits, None), r.proxy_loss)
        }
    };
    let Some(p) = processed else {
        layer.proxy_loss = Some(proxy);
        return Ok(layer);
    };
    // The layer as it will run: the rounded weights taken back through the processing, its error
    // and proxy loss against the original weights and Hessian, its size with the transforms.
    let original = &linear.weight.data;
    let dequantized = p.incoherence.effective_weights(&layer.dequantized, rows, cols);
    let bits = layer.bits_per_weight + incoherence_bits(&p.incoherence) as f64 / numel as f64;
    let transform = LayerTransform { scales: None, input_shift: None, bias: linear.bias.data.clone(), incoherence: Some(p.incoherence) };
    let mut layer = layer_report(name, original, dequantized, layer.lut, layer.outliers, bits, Some(transform));
    layer.proxy_loss = Some(proxy_loss(original, &layer.dequantized, rows, cols, original_h));
    Ok(layer)
}

/// Bits to store incoherence processing: f32 factors and input scales, u32 permutations.
fn incoherence_bits(t: &Incoherence) -> u64 {
    let rotation = |r: &Option<crate::quant::incoherence::Rotation>| r.as_ref().map_or(0, |r| 32 * (r.a * r.a + r.b * r.b + r.len()) as u64);
    rotation(&t.input) + rotation(&t.output) + 32 * t.input_scale.as_ref().map_or(0, Vec::len) as u64
}

/// The k-means of one layer, prepared and finished here and run by whoever holds the job: the
/// CPU reference in [`quantize_layer`], the GPU in `lutlab-gpu`. Preparing picks the tables (seed
/// 000: q, k and v of a whole-tensor `c_attn` get one each), the sample weights and, for
/// dense-and-sparse, the outliers the k-means must leave out, and applies seed 000's transforms
/// (the k-means then runs on the scaled weights); finishing stores those outliers exactly and
/// reports the error (of the layer as it will run, against the original) and size.
pub struct KmeansJob<'a> {
    pub name: &'a str,
    /// What the k-means quantizes: the layer's weights, divided by the scales with scaling.
    pub weights: std::borrow::Cow<'a, [f32]>,
    original: &'a [f32],
    transform: Option<LayerTransform>,
    pub rows: usize,
    pub cols: usize,
    pub sample_weights: Option<&'a [f32]>,
    pub settings: KmeansSettings,
    pub selection: Option<OutlierSelection>,
}

impl<'a> KmeansJob<'a> {
    /// Fails for a uniform `method`, a Fisher lookup without the layer, or input means (centering)
    /// without it.
    pub fn new<'c: 'a>(name: &'a str, linear: &'a LinearWeights, method: &Method, calibration: Calibration<'c>, n_embd: usize) -> Result<Self> {
        let Method::Kmeans { settings, outliers, scaling } = method else {
            return Err(LoadError::InvalidSetting(format!("{name}: not a k-means method")));
        };
        // The head gets no Fisher weights, sensitive weights or centering (`quant::head`).
        let calibration = head_calibration(name, calibration);
        let outliers = &head_outliers(name, *outliers);
        let sample_weights = sample_weights_of(calibration.fisher, name)?;
        let mut settings = *settings;
        if name.ends_with("attn.c_attn") && settings.granularity == Granularity::Tensor {
            settings.granularity = Granularity::Group(n_embd);
        }
        let (rows, cols) = (linear.in_features(), linear.out_features());
        let original = linear.weight.data.as_slice();
        let input_mean = match calibration.input_means {
            Some(means) => Some(
                means
                    .get(name)
                    .map(Vec::as_slice)
                    .ok_or_else(|| LoadError::InvalidSetting(format!("no mean input for `{name}` (centering)")))?,
            ),
            None => None,
        };
        let (weights, transform) = if *scaling || input_mean.is_some() {
            let bits = scaling.then_some(settings.bits);
            let t = prepare_linear(original, &linear.bias.data, rows, cols, sample_weights, input_mean, bits).map_err(|e| in_layer(name, e))?;
            let transform = LayerTransform { scales: t.scales, input_shift: t.input_shift, bias: t.bias, incoherence: None };
            (std::borrow::Cow::Owned(t.weight), Some(transform))
        } else {
            (std::borrow::Cow::Borrowed(original), None)
        };
        let selection = outliers.map(|o| select_outliers(&weights, sample_weights, o)).transpose().map_err(|e| in_layer(name, e))?;
        Ok(Self { name, weights, original, transform, rows, cols, sample_weights, settings, selection })
    }

    /// Weights the k-means must leave out (dense-and-sparse outliers).
    pub fn excluded(&self) -> Option<&[bool]> {
        self.selection.as_ref().map(|s| s.mask.as_slice())
    }

    /// Names the layer in a setting error.
    pub fn in_layer(&self, e: LoadError) -> LoadError {
        in_layer(self.name, e)
    }

    /// The layer's result from the k-means `output` (run with [`Self::excluded`]).
    pub fn finish(self, mut output: KmeansOutput) -> Result<QuantizedLayer> {
        if let Some(selection) = &self.selection {
            output.matrix.outliers = sparse_corrections(&self.weights, &output.matrix, &selection.mask).map_err(|e| in_layer(self.name, e))?;
        }
        let matrix = output.matrix;
        let n = self.weights.len();
        // Scales and the input shift are stored as f32 beside the codes.
        let transform_bits = self.transform.as_ref().map_or(0, |t| {
            32 * (t.scales.as_ref().map_or(0, Vec::len) + t.input_shift.as_ref().map_or(0, Vec::len))
        });
        let bits_per_weight = (matrix.storage_bits() as f64 + transform_bits as f64) / n as f64;
        let outliers = matrix.outliers.len();
        let mut dequantized = matrix.dequantize();
        if let Some(scales) = self.transform.as_ref().and_then(|t| t.scales.as_ref()) {
            unapply_scales(&mut dequantized, self.cols, scales);
        }
        Ok(layer_report(self.name, self.original, dequantized, Some(matrix), outliers, bits_per_weight, self.transform))
    }
}

/// The sample weights (Fisher diagonal) of layer `name` from `fisher`, which looks them up by
/// `{name}.weight`; an error when the lookup lacks the layer.
pub fn sample_weights_of<'f>(fisher: Option<SampleWeights<'f>>, name: &str) -> Result<Option<&'f [f32]>> {
    match fisher {
        Some(lookup) => lookup(&format!("{name}.weight"))
            .map(Some)
            .ok_or_else(|| LoadError::InvalidSetting(format!("the Fisher file has no `{name}.weight`"))),
        None => Ok(None),
    }
}

/// Names the layer (the tied head in words) in a setting error.
pub(crate) fn in_layer(name: &str, e: LoadError) -> LoadError {
    let what = if is_head(name) { format!("{HEAD} (the token embedding, tied; one output channel per token)") } else { name.to_string() };
    match e {
        LoadError::InvalidSetting(reason) => LoadError::InvalidSetting(format!("{what}: {reason}")),
        other => other,
    }
}

/// `dequantized`: the `[in, out]` weights the layer multiplies by (scales applied).
fn layer_report(
    name: &str,
    original: &[f32],
    dequantized: Vec<f32>,
    lut: Option<LutMatrix>,
    outliers: usize,
    bits_per_weight: f64,
    transform: Option<LayerTransform>,
) -> QuantizedLayer {
    let n = original.len() as f64;
    let mse = original.iter().zip(&dequantized).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>() / n;
    QuantizedLayer { name: name.to_string(), dequantized, lut, vector: None, column_parts: None, mse, outliers, bits_per_weight, proxy_loss: None, transform }
}

impl QuantizedLayer {
    /// Whether the layer has a packed form (scalar or vector look-up tables).
    pub fn has_packed_form(&self) -> bool {
        self.packed_shape().is_some()
    }

    /// `(rows, cols)` of the packed form, when the layer has one.
    pub fn packed_shape(&self) -> Option<(usize, usize)> {
        match (&self.lut, &self.vector, &self.column_parts) {
            (Some(lut), _, _) => Some((lut.rows, lut.cols)),
            (None, Some(vector), _) => Some((vector.rows, vector.cols)),
            (None, None, Some(split)) => Some((split.rows, split.cols)),
            (None, None, None) => None,
        }
    }
}

impl QuantizedModel {
    /// Gives layers that store their own bias (a [`LayerTransform`] without an input shift,
    /// whose bias is the layer's own) the bias of the same linear in `weights`: after bias
    /// correction, the corrected one.
    pub fn take_biases(&mut self, weights: &ModelWeights) {
        for layer in &mut self.layers {
            if let (Some(t), Some(linear)) = (layer.transform.as_mut(), weights.linear(&layer.name))
                && t.input_shift.is_none()
            {
                t.bias.clone_from(&linear.bias.data);
            }
        }
    }

    /// Each layer's explicit input multiplier (`PackedModel::input_multipliers`).
    pub fn input_multipliers(&self) -> crate::quant::inputs::InputMultipliers {
        self.layers
            .iter()
            .filter_map(|l| Some((l.name.clone(), l.transform.as_ref()?.incoherence.as_ref()?.input_scale.clone()?)))
            .collect()
    }

    /// A copy of `weights` with every quantized linear weight replaced by its dequantized form
    /// (the head's, transposed, as `wte`: embedding and logits both use it); with centering, the
    /// stored bias less `μ · W` (the dense layer computes the same outputs).
    pub fn apply(&self, weights: &ModelWeights) -> ModelWeights {
        let mut out = weights.clone();
        for layer in &self.layers {
            if is_head(&layer.name) {
                let (vocab, c) = (weights.config.vocab_size, weights.config.embed_dim);
                let head = if out.config.tied_head { &mut out.wte } else { out.lm_head.get_or_insert_with(|| weights.wte.clone()) };
                head.data = transpose(&layer.dequantized, c, vocab);
                continue;
            }
            if let Some(linear) = out.linear_mut(&layer.name) {
                linear.weight.data.clone_from(&layer.dequantized);
                if let Some(t) = &layer.transform {
                    linear.bias.data.clone_from(&t.bias);
                    if let Some(mean) = &t.input_shift {
                        let cols = linear.bias.data.len();
                        let negated: Vec<f32> = mean.iter().map(|m| -m).collect();
                        // b − μ·W' is `fold_input_shift` of −μ.
                        let _ = fold_input_shift(&layer.dequantized, &mut linear.bias.data, cols, &negated);
                    }
                }
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
