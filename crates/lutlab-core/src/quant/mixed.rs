//! Mixed precision under a size budget: the model is quantized at every candidate width (by
//! whichever quantizer the caller runs: CPU, GPU or a Hessian method), each layer's candidates
//! are priced in stored bytes and estimated loss, [`allocate`] picks one width per layer, and
//! the chosen layers make the result.

use crate::error::{LoadError, Result};
use crate::packed_file::{stored_layer_bytes, TableDtype};
use crate::quant::allocate::{allocate, byte_range, summed, weighted_error, Allocation, Budget, Candidate, LayerChoices, Solver};
use crate::quant::head::{head_linear, is_head};
use crate::quant::model::{sample_weights_of, Method, QuantizedModel, SampleWeights};
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

/// Every layer's candidates, and the quantized models they come from.
pub struct Candidates {
    pub estimate: Estimate,
    pub layers: Vec<LayerChoices>,
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
    let mut layers = Vec::with_capacity(first.layers.len());
    for (l, layer) in first.layers.iter().enumerate() {
        let pin = pinned.contains(&layer.name);
        let sample_weights = if estimate == Estimate::Fisher && !pin { sample_weights_of(fisher, &layer.name)? } else { None };
        let mut choices = Vec::new();
        for (bits, model) in models.iter().filter(|(bits, _)| if pin { *bits == own } else { widths.contains(bits) }) {
            let candidate = &model.layers[l];
            let bytes = match stored_layer_bytes(candidate, table_dtype)? {
                Some(bytes) => bytes as u64,
                // No packed form (input groups not a multiple of 32 rows): its counted bits.
                None => (candidate.bits_per_weight * candidate.dequantized.len() as f64 / 8.0).ceil() as u64,
            };
            let loss = match (estimate, candidate.proxy_loss) {
                (Estimate::HessianProxy, Some(proxy)) => proxy,
                _ => weighted_error(&original_of(weights, &layer.name)?, &candidate.dequantized, sample_weights),
            };
            choices.push(Candidate { bits: *bits, bytes, loss });
        }
        layers.push(LayerChoices { name: layer.name.clone(), candidates: choices });
    }
    Ok(Candidates { estimate, layers, pinned, models })
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
    /// another allocation).
    pub fn chosen(&self, allocation: &Allocation) -> QuantizedModel {
        let layers = self
            .layers
            .iter()
            .zip(&allocation.choice)
            .enumerate()
            .filter_map(|(l, (choices, &i))| self.model_at(choices.candidates[i].bits).map(|m| m.layers[l].clone()))
            .collect();
        QuantizedModel { layers }
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
