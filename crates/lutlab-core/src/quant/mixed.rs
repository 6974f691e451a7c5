//! Mixed precision under a size budget: the model is quantized at every candidate width (by
//! whichever quantizer the caller runs: CPU, GPU or a Hessian method), each layer's candidates
//! are priced in stored bytes and estimated loss, [`allocate`] picks one width per layer, and
//! the chosen layers make the result.

use crate::error::{LoadError, Result};
use crate::packed_file::{layer_bytes, stored_layer, stored_layer_bytes, TableDtype};
use crate::quant::packed::PackedLinear;
use crate::quant::QuantizedLayer;
use std::ops::Range;
use crate::quant::allocate::{allocate, byte_range, summed, weighted_error, Allocation, Budget, Candidate, LayerChoices, Solver};
use crate::quant::head::{head_linear, is_head};
use crate::quant::model::{in_layer, sample_weights_of, Method, QuantizedModel, SampleWeights};
use crate::weights::ModelWeights;
use serde::Serialize;
use std::borrow::Cow;

/// The widths tried when none are given (issue 20: {2, 3, 4, 5, 6, 8}).
pub const DEFAULT_WIDTHS: [u32; 6] = [2, 3, 4, 5, 6, 8];

/// What a candidate's loss estimate is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimate {
    /// `Σ F·(w − q)²` with the Fisher diagonal (the loss increase to second order, times 2).
    Fisher,
    /// `tr(ΔW H ΔWᵀ)` with each layer's Hessian of its inputs (GPTQ's proxy loss).
    HessianProxy,
    /// `Σ (w − q)²`: no calibration, every weight counted alike (a weak estimate).
    SquaredError,
}

/// What one width is chosen for: each layer, or each block of `N` output channels of a layer
/// (`--allocate-per channels:N`; the last block of a layer may be narrower).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllocationUnit {
    #[default]
    Layer,
    Channels(usize),
}

impl std::str::FromStr for AllocationUnit {
    type Err = LoadError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || LoadError::InvalidSetting(format!("--allocate-per `{text}`: give `layers` or `channels:N` (N output channels per block, N ≥ 1)"));
        match text.trim() {
            "layer" | "layers" => Ok(Self::Layer),
            other => match other.strip_prefix("channels:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Self::Channels(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// The output columns of one layer that one allocation choice covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// Index of the layer in the quantized models.
    pub layer: usize,
    pub cols: std::ops::Range<usize>,
    /// The layer's input rows.
    pub rows: usize,
}

/// Every layer's (or channel block's) candidates, and the quantized models they come from.
pub struct Candidates {
    pub estimate: Estimate,
    /// One entry per allocation unit: a layer, or a block of its channels (named
    /// `layer[start..end]`).
    pub layers: Vec<LayerChoices>,
    /// What each entry of `layers` covers.
    pub units: Vec<Unit>,
    /// Per entry of `layers` that is a block of channels, per candidate: what it adds to its layer.
    details: Vec<Vec<UnitDetail>>,
    /// Layers held at one width because the estimate does not cover them (the head has no
    /// Fisher values), by name.
    pub pinned: Vec<String>,
    models: Vec<(u32, QuantizedModel)>,
}

/// Quantizes `weights` with `method` at each of `widths` through `quantize_at` and prices every
/// layer's result. A layer without Fisher values when the others have them (the head) keeps
/// `method`'s own width.
pub fn candidates<E: From<LoadError>>(
    weights: &ModelWeights,
    method: &Method,
    widths: &[u32],
    fisher: Option<SampleWeights>,
    table_dtype: TableDtype,
    unit: AllocationUnit,
    quantize_at: &mut dyn FnMut(&Method) -> std::result::Result<QuantizedModel, E>,
) -> std::result::Result<Candidates, E> {
    check_widths(method, widths)?;
    let mut all: Vec<u32> = widths.to_vec();
    all.sort_unstable();
    all.dedup();
    let mut models = Vec::with_capacity(all.len() + 1);
    for &bits in &all {
        models.push((bits, quantize_at(&method.with_bits(bits))?));
    }
    let estimate = match fisher {
        Some(_) => Estimate::Fisher,
        None if models[0].1.layers.iter().all(|l| l.proxy_loss.is_some()) => Estimate::HessianProxy,
        None => Estimate::SquaredError,
    };
    // The head has no Fisher values: with a Fisher estimate it keeps the method's own width.
    let pinned: Vec<String> = match estimate {
        Estimate::Fisher => models[0].1.layers.iter().filter(|l| is_head(&l.name)).map(|l| l.name.clone()).collect(),
        _ => Vec::new(),
    };
    let own = method.bits();
    if !pinned.is_empty() && !all.contains(&own) {
        models.push((own, quantize_at(method)?));
    }
    let first = &models[0].1;
    for (bits, model) in &models {
        let same = model.layers.len() == first.layers.len() && model.layers.iter().zip(&first.layers).all(|(a, b)| a.name == b.name);
        if !same {
            return Err(LoadError::InvalidSetting(format!("the {bits}-bit quantization produced other layers than the first")).into());
        }
    }
    if unit != AllocationUnit::Layer && estimate == Estimate::HessianProxy {
        return Err(LoadError::InvalidSetting(
            "--allocate-per channels prices blocks of channels by their (Fisher-weighted) squared error; the Hessian proxy loss is \
             per layer: give --fisher, or allocate per layer"
                .into(),
        )
        .into());
    }
    let (mut layers, mut units, mut details) = (Vec::new(), Vec::new(), Vec::new());
    for (l, layer) in first.layers.iter().enumerate() {
        let pin = pinned.contains(&layer.name);
        let sample_weights = if estimate == Estimate::Fisher && !pin { sample_weights_of(fisher, &layer.name)? } else { None };
        let original = original_of(weights, &layer.name)?;
        let (rows, cols) = shape_of(weights, &layer.name)?;
        let ranges: Vec<Range<usize>> = match unit {
            AllocationUnit::Channels(n) if n < cols => (0..cols).step_by(n).map(|start| start..(start + n).min(cols)).collect(),
            _ => vec![0..cols],
        };
        let widths_here: Vec<(u32, &QuantizedLayer)> = models
            .iter()
            .filter(|(bits, _)| if pin { *bits == own } else { widths.contains(bits) })
            .map(|(bits, model)| (*bits, &model.layers[l]))
            .collect();
        // Split layers are priced by their packed columns.
        let packed: Vec<PackedLinear> = if ranges.len() > 1 {
            widths_here.iter().map(|(_, c)| packed_for_split(c, table_dtype)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        for range in ranges {
            let whole = range.len() == cols;
            let (mut choices, mut detail) = (Vec::new(), Vec::new());
            for (i, (bits, candidate)) in widths_here.iter().enumerate() {
                let (bytes, loss) = if whole {
                    let bytes = match stored_layer_bytes(candidate, table_dtype)? {
                        Some(bytes) => bytes as u64,
                        // No packed form (input groups not a multiple of 32 rows): its counted bits.
                        None => (candidate.bits_per_weight * candidate.dequantized.len() as f64 / 8.0).ceil() as u64,
                    };
                    let loss = match (estimate, candidate.proxy_loss) {
                        (Estimate::HessianProxy, Some(proxy)) => proxy,
                        _ => weighted_error(&original, &candidate.dequantized, sample_weights),
                    };
                    (bytes, loss)
                } else {
                    let (bytes, loss, unit_detail) = price_block(&packed[i], range.clone(), &original, &candidate.dequantized, sample_weights)
                        .map_err(|e| in_layer(&layer.name, e))?;
                    detail.push(unit_detail);
                    (bytes, loss)
                };
                choices.push(Candidate { bits: *bits, bytes, loss });
            }
            let name = if whole { layer.name.clone() } else { format!("{}[{}..{}]", layer.name, range.start, range.end) };
            layers.push(LayerChoices { name, candidates: choices });
            units.push(Unit { layer: l, cols: range, rows });
            details.push(detail);
        }
    }
    Ok(Candidates { estimate, layers, units, details, pinned, models })
}

/// A block of channels of one candidate: its packed columns' bytes, its columns' estimate, and
/// what it adds to the layer it ends up in.
fn price_block(packed: &PackedLinear, range: Range<usize>, original: &[f32], dequantized: &[f32], fisher: Option<&[f32]>) -> Result<(u64, f64, UnitDetail)> {
    let part = packed.columns(range.clone())?;
    let columns = |m: &[f32]| -> Vec<f32> { m.chunks_exact(packed.cols).flat_map(|row| row[range.clone()].iter().copied()).collect() };
    let (w, q) = (columns(original), columns(dequantized));
    let loss = weighted_error(&w, &q, fisher.map(columns).as_deref());
    let detail = UnitDetail { sq_error: weighted_error(&w, &q, None), outliers: part.sparse.len(), packed: part };
    Ok((layer_bytes(&detail.packed) as u64, loss, detail))
}

/// What a block of channels adds to the layer it ends up in, per candidate.
#[derive(Clone, Debug, PartialEq)]
struct UnitDetail {
    /// `Σ (w − q)²` over the block.
    sq_error: f64,
    outliers: usize,
    /// The block's columns of the packed layer at this width.
    packed: PackedLinear,
}

/// Neighbouring blocks of columns of one packed layer (one width) as one part: the same layer's
/// columns from the first block's to the last's. `None` when they do not fit together.
fn join_columns(blocks: &[&PackedLinear]) -> Option<PackedLinear> {
    let first = *blocks.first()?;
    if blocks.len() == 1 {
        return Some(first.clone());
    }
    let cols: usize = blocks.iter().map(|b| b.cols).sum();
    let rows = first.rows;
    let stitch = |get: &dyn Fn(&PackedLinear) -> &[f32]| -> Vec<f32> {
        let per_row: Vec<usize> = blocks.iter().map(|b| b.cols).collect();
        let height = get(first).len() / per_row[0];
        (0..height).flat_map(|r| blocks.iter().zip(&per_row).flat_map(move |(b, &w)| get(b)[r * w..(r + 1) * w].to_vec())).collect()
    };
    // Blocks cut from one shared table keep one copy of it; blocks of whole tables keep theirs.
    let shared = blocks.iter().all(|b| b.channels_per_table == b.cols && b.tables == first.tables);
    let (tables, channels_per_table) = if shared {
        (first.tables.clone(), cols)
    } else if blocks.iter().all(|b| b.channels_per_table == first.channels_per_table) {
        (blocks.iter().flat_map(|b| b.tables.iter().copied()).collect(), first.channels_per_table)
    } else {
        return None;
    };
    let words = first.qweight.len() / first.cols;
    let qweight = (0..words).flat_map(|r| blocks.iter().flat_map(move |b| b.qweight[r * b.cols..(r + 1) * b.cols].to_vec())).collect();
    let mut sparse = crate::quant::SparseColumns { col_ptr: vec![0], row_idx: Vec::new(), values: Vec::new() };
    for b in blocks {
        let base = *sparse.col_ptr.last()?;
        sparse.col_ptr.extend(b.sparse.col_ptr[1..].iter().map(|&p| p + base));
        sparse.row_idx.extend_from_slice(&b.sparse.row_idx);
        sparse.values.extend_from_slice(&b.sparse.values);
    }
    let joined = PackedLinear {
        rows,
        cols,
        qweight,
        tables,
        channels_per_table,
        input_groups: first.input_groups.as_ref().map(|g| crate::quant::lut::InputGroupScales {
            size: g.size,
            scales: stitch(&|b| &b.input_groups.as_ref().map_or(&[][..], |g| &g.scales[..])),
            zeros: g.zeros.as_ref().map(|_| stitch(&|b| b.input_groups.as_ref().and_then(|g| g.zeros.as_deref()).unwrap_or(&[]))),
        }),
        sparse,
        scales: first.scales.as_ref().map(|_| blocks.iter().flat_map(|b| b.scales.iter().flatten().copied()).collect()),
        ..first.clone()
    };
    joined.validate("joined column blocks").ok()?;
    Some(joined)
}

/// A candidate layer's packed form, for pricing blocks of its channels; layers whose columns
/// cannot be cut apart are refused by name.
fn packed_for_split(layer: &QuantizedLayer, table_dtype: TableDtype) -> Result<PackedLinear> {
    let refuse = |why: &str| Err(in_layer(&layer.name, LoadError::InvalidSetting(format!("--allocate-per channels: {why}"))));
    if layer.transform.is_some() {
        return refuse("seed 000's scaling and centering and QuIP's incoherence processing act on whole layers; allocate per layer");
    }
    match stored_layer(layer, table_dtype)? {
        Some(packed) => Ok(packed),
        None => refuse("the layer has no look-up-table form to cut into blocks of channels"),
    }
}

/// `(rows, cols)` of layer `name`'s `[in, out]` weights (the head's from the embedding).
fn shape_of(weights: &ModelWeights, name: &str) -> Result<(usize, usize)> {
    if is_head(name) {
        return Ok((weights.config.embed_dim, weights.config.vocab_size));
    }
    let linear = weights.linear(name).ok_or_else(|| LoadError::InvalidSetting(format!("{name}: not a linear layer of the model")))?;
    Ok((linear.in_features(), linear.out_features()))
}

/// The `[in, out]` weights layer `name` quantizes (the head's built from the embedding).
fn original_of<'w>(weights: &'w ModelWeights, name: &str) -> Result<Cow<'w, [f32]>> {
    if is_head(name) {
        return Ok(Cow::Owned(head_linear(weights).weight.data));
    }
    let linear = weights.linear(name).ok_or_else(|| LoadError::InvalidSetting(format!("{name}: not a linear layer of the model")))?;
    Ok(Cow::Borrowed(linear.weight.data.as_slice()))
}

fn check_widths(method: &Method, widths: &[u32]) -> Result<()> {
    if widths.is_empty() {
        return Err(LoadError::InvalidSetting(format!("no candidate width: give some of {:?}", method.widths())));
    }
    for &bits in widths {
        if let Err(e) = method.check_bits(bits) {
            let reason = match e {
                LoadError::InvalidSetting(reason) => reason,
                other => other.to_string(),
            };
            return Err(LoadError::InvalidSetting(format!("candidate width {bits}: {reason} (this method allows {:?})", method.widths())));
        }
    }
    Ok(())
}

impl Candidates {
    /// Weights the quantized layers stand for.
    pub fn layer_weights(&self) -> usize {
        self.models[0].1.layers.iter().map(|l| l.dequantized.len()).sum()
    }

    /// The quantization at `bits` (each of the candidate widths, and the method's own).
    pub fn model_at(&self, bits: u32) -> Option<&QuantizedModel> {
        self.models.iter().find(|(b, _)| *b == bits).map(|(_, m)| m)
    }

    /// The bytes the quantized layers may take under `budget`. A file-size budget needs
    /// `file_rest`, the bytes the rest of the packed file (header and dense tensors) takes. A
    /// budget at or above the layers in f16, or one that leaves less than every layer at its
    /// narrowest width, is refused with the feasible range.
    pub fn layer_budget(&self, budget: Budget, file_rest: Option<u64>) -> Result<u64> {
        let weights = self.layer_weights();
        let (smallest, largest) = byte_range(&self.layers);
        let f16 = 2 * weights as u64;
        let (low, high) = self.feasible_bits_per_weight();
        let mut feasible = format!("feasible: {low:.3} to {high:.3} bits per weight");
        let bytes = match (budget, file_rest) {
            (Budget::BitsPerWeight(b), _) => bytes_for_bits(weights, b),
            (Budget::FileBytes(n), Some(rest)) => {
                feasible += &format!(", or a file of {:.3} to {:.3} MB", (rest + smallest) as f64 / 1e6, (rest + largest) as f64 / 1e6);
                n.saturating_sub(rest)
            }
            (Budget::FileBytes(_), None) => {
                return Err(LoadError::InvalidSetting(format!("a budget of {budget} needs the rest of the file's size; {feasible}")));
            }
        };
        if bytes >= f16 {
            return Err(LoadError::InvalidSetting(format!("a budget of {budget} is at or above the layers in f16 (16 bits per weight): nothing to allocate; {feasible}")));
        }
        if bytes < smallest {
            return Err(LoadError::InvalidSetting(format!("a budget of {budget} is below every layer at its narrowest width; {feasible}")));
        }
        Ok(bytes)
    }

    /// The bits per weight a budget may ask: every layer at its smallest candidate, and at its
    /// largest.
    pub fn feasible_bits_per_weight(&self) -> (f64, f64) {
        let (smallest, largest) = byte_range(&self.layers);
        let bpw = |bytes: u64| 8.0 * bytes as f64 / self.layer_weights().max(1) as f64;
        (bpw(smallest), bpw(largest))
    }

    /// The least estimated loss within `max_bytes` of quantized layers.
    pub fn allocate(&self, max_bytes: u64) -> Result<Allocation> {
        allocate(&self.layers, max_bytes)
    }

    /// The model with each layer at its allocated width (copies: the candidates stay for
    /// another allocation). A layer whose blocks of channels got different widths is made of
    /// their columns and stored as column parts.
    pub fn chosen(&self, allocation: &Allocation) -> QuantizedModel {
        let mut picks: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.models[0].1.layers.len()];
        for (u, (unit, &i)) in self.units.iter().zip(&allocation.choice).enumerate() {
            picks[unit.layer].push((u, i));
        }
        let layers = picks
            .iter()
            .enumerate()
            .filter_map(|(l, picks)| {
                let bits: Vec<u32> = picks.iter().map(|&(u, i)| self.layers[u].candidates[i].bits).collect();
                if bits.windows(2).all(|b| b[0] == b[1]) {
                    self.model_at(*bits.first()?).map(|m| m.layers[l].clone())
                } else {
                    Some(self.mixed_layer(l, picks))
                }
            })
            .collect();
        QuantizedModel { layers }
    }

    /// Layer `l` made of its blocks' columns at their widths (`picks`: unit and candidate), its
    /// packed form their packed columns (neighbours of one width joined into one part).
    fn mixed_layer(&self, l: usize, picks: &[(usize, usize)]) -> QuantizedLayer {
        let first = &self.models[0].1.layers[l];
        let n = first.dequantized.len();
        let cols = n / self.units[picks[0].0].rows.max(1);
        let mut dequantized = vec![0f32; n];
        let (mut bytes, mut sq_error, mut outliers) = (0u64, 0f64, 0usize);
        let mut parts: Vec<(u32, Vec<&PackedLinear>)> = Vec::new();
        for &(u, i) in picks {
            let bits = self.layers[u].candidates[i].bits;
            match parts.last_mut() {
                Some((b, blocks)) if *b == bits => blocks.push(&self.details[u][i].packed),
                _ => parts.push((bits, vec![&self.details[u][i].packed])),
            }
            let (unit, candidate) = (&self.units[u], &self.layers[u].candidates[i]);
            if let Some(source) = self.model_at(candidate.bits) {
                for (to, from) in dequantized.chunks_exact_mut(cols).zip(source.layers[l].dequantized.chunks_exact(cols)) {
                    to[unit.cols.clone()].copy_from_slice(&from[unit.cols.clone()]);
                }
            }
            bytes += candidate.bytes;
            sq_error += self.details[u][i].sq_error;
            outliers += self.details[u][i].outliers;
        }
        // Joined parts cost what their blocks did, less the sparse part's repeated column
        // pointers; the allocation counted the blocks, an upper bound. Blocks that do not join
        // (tables of different sizes) stay parts of their own.
        let joined: Vec<PackedLinear> = parts
            .into_iter()
            .flat_map(|(_, blocks)| match join_columns(&blocks) {
                Some(joined) => vec![joined],
                None => blocks.into_iter().cloned().collect(),
            })
            .collect();
        QuantizedLayer {
            name: first.name.clone(),
            dequantized,
            lut: None,
            vector: None,
            // Every part was validated when it was cut, so the layer is one.
            column_parts: PackedLinear::from_parts(joined).ok(),
            mse: sq_error / n as f64,
            outliers,
            bits_per_weight: 8.0 * bytes as f64 / n as f64,
            proxy_loss: None,
            transform: None,
        }
    }

    /// The allocation `rules` fix: each layer gets the bits of the last rule whose pattern its
    /// name contains, the others `default_bits` (llama.cpp's `--tensor-type`). No budget.
    pub fn by_rules(&self, rules: &[LayerRule], default_bits: u32) -> Result<Allocation> {
        let choice = self
            .layers
            .iter()
            .map(|layer| {
                let bits = rules.iter().rev().find(|r| layer.name.contains(&r.pattern)).map_or(default_bits, |r| r.bits);
                layer.candidates.iter().position(|c| c.bits == bits).ok_or_else(|| {
                    LoadError::InvalidSetting(format!("{}: {bits} bits was not among its candidates", layer.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(summed(&self.layers, choice, Solver::Rules))
    }

    /// What was allocated, per layer and in all, for reports and the packed file.
    pub fn report(&self, allocation: &Allocation, budget: String, widths: &[u32]) -> AllocationReport {
        let layers = self
            .layers
            .iter()
            .zip(&allocation.choice)
            .map(|(choices, &i)| {
                let c = choices.candidates[i];
                AllocatedLayer { name: choices.name.clone(), bits: c.bits, bytes: c.bytes, estimate: c.loss }
            })
            .collect();
        AllocationReport {
            budget,
            estimate: self.estimate,
            solver: allocation.solver,
            widths: widths.to_vec(),
            pinned: self.pinned.clone(),
            layers,
            layer_bytes: allocation.bytes,
            estimated_loss: allocation.loss,
            lower_bound: allocation.relative_gap().map(|_| allocation.lower_bound),
            relative_gap: allocation.relative_gap(),
        }
    }
}

/// `PATTERN=BITS`: layers whose name contains `PATTERN` get `BITS` bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRule {
    pub pattern: String,
    pub bits: u32,
}

impl std::str::FromStr for LayerRule {
    type Err = LoadError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || LoadError::InvalidSetting(format!("layer rule `{text}`: give PATTERN=BITS, e.g. mlp.c_proj=6 or h.0.=6"));
        let (pattern, bits) = text.split_once('=').ok_or_else(bad)?;
        let bits = bits.trim().parse().map_err(|_| bad())?;
        if pattern.trim().is_empty() {
            return Err(bad());
        }
        Ok(Self { pattern: pattern.trim().to_string(), bits })
    }
}

/// One layer's allocated width.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocatedLayer {
    pub name: String,
    pub bits: u32,
    pub bytes: u64,
    pub estimate: f64,
}

/// The allocation as the CLI's `--json` and the packed file's `allocation` metadata record it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllocationReport {
    pub budget: String,
    pub estimate: Estimate,
    pub solver: Solver,
    pub widths: Vec<u32>,
    pub pinned: Vec<String>,
    pub layers: Vec<AllocatedLayer>,
    pub layer_bytes: u64,
    pub estimated_loss: f64,
    /// `None` for widths fixed by rules.
    pub lower_bound: Option<f64>,
    pub relative_gap: Option<f64>,
}

/// The bytes `layer_weights` quantized weights may take at `bits_per_weight` on average.
pub fn bytes_for_bits(layer_weights: usize, bits_per_weight: f64) -> u64 {
    (bits_per_weight * layer_weights as f64 / 8.0).floor() as u64
}
