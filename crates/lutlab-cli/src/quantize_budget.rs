//! `lutlab quantize --budget` and `--layer-bits`: the model quantized at every candidate width,
//! then each layer's width allocated for the least estimated loss under the budget, or as the
//! rules say (`quant::mixed`).

use anyhow::{Context, Result};
use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::allocate::{Budget, Solver};
use lutlab_core::quant::mixed::{candidates, AllocationReport, AllocationUnit};
use lutlab_core::quant::model::SampleWeights;
use lutlab_core::quant::{Method, QuantizeRequest, QuantizedLayer, QuantizedModel};
use lutlab_core::ModelWeights;

/// Quantizes through `quantize_at` at each of the request's widths, then allocates under its
/// budget or by its layer rules, and returns the model made of the chosen layers with the
/// allocation. A file-size budget counts the whole packed file as `meta` and `table_dtype`
/// write it, the allocation's own metadata included.
pub fn quantize_mixed(
    request: &QuantizeRequest,
    weights: &ModelWeights,
    method: &Method,
    fisher: Option<SampleWeights>,
    meta: &PackedMeta,
    table_dtype: TableDtype,
    quantize_at: &mut dyn FnMut(&Method) -> Result<QuantizedModel>,
) -> Result<(QuantizedModel, AllocationReport)> {
    let widths = request.candidate_widths()?;
    let rules = request.layer_rules()?;
    let Some(budget) = &request.budget else {
        let found = candidates(weights, method, &widths, fisher, table_dtype, AllocationUnit::Layer, quantize_at)?;
        let allocation = found.by_rules(&rules, method.bits())?;
        let report = found.report(&allocation, "none (layer rules)".to_string(), &widths);
        return Ok((found.chosen(&allocation), report));
    };
    let widths = &widths[..];
    let budget: Budget = budget.parse()?;
    let found = candidates(weights, method, widths, fisher, table_dtype, request.allocation_unit()?, quantize_at)?;
    let narrowest = widths.iter().copied().min().context("no candidate width")?;
    let file_bytes = |model: &QuantizedModel, allocation: String| -> Result<Option<(u64, u64)>> {
        if !model.layers.iter().all(QuantizedLayer::has_packed_form) {
            return Ok(None);
        }
        let packed = PackedModel::from_quantized(weights, model, PackedMeta { allocation, ..meta.clone() }, table_dtype)?;
        let file = packed.to_safetensors(table_dtype)?.len() as u64;
        Ok(Some((file, packed.packed_bytes() as u64)))
    };
    // A file-size budget: what the file holds besides the quantized layers (header, dense
    // tensors), measured on the narrowest quantization; the allocation's metadata is added to it
    // below. A bits-per-weight budget needs no file.
    let fixed = match budget {
        Budget::BitsPerWeight(_) => None,
        Budget::FileBytes(_) => {
            let narrow_model = found.model_at(narrowest).context("the narrowest width was not quantized")?;
            let (file, layers) = file_bytes(narrow_model, String::new())?.context(
                "a file-size budget needs every layer packed; this method leaves some layers dense (give bits per weight, e.g. 3.5bpw)",
            )?;
            Some(file - layers)
        }
    };
    let mut layer_budget = found.layer_budget(budget, fixed)?;
    // The allocation's metadata and the layer table's digits change the header: a file budget is
    // met by taking any overshoot off the layers' budget and allocating again.
    for _ in 0..4 {
        let allocation = found.allocate(layer_budget)?;
        let report = found.report(&allocation, budget.to_string(), widths);
        let chosen = found.chosen(&allocation);
        let Budget::FileBytes(limit) = budget else { return Ok((chosen, report)) };
        let (file, _) = file_bytes(&chosen, serde_json::to_string(&report)?)?.context("every layer packs")?;
        if file <= limit {
            return Ok((chosen, report));
        }
        layer_budget = layer_budget.checked_sub(file - limit).context("the budget leaves no bytes for the layers")?;
    }
    anyhow::bail!("could not meet the file-size budget {budget} after four allocations (the header kept growing)")
}

/// The allocation in a few lines: how many layers got each width, the estimate and how close
/// to the optimum it is, then each layer's width.
pub fn allocation_lines(a: &AllocationReport) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for layer in &a.layers {
        *counts.entry(layer.bits).or_insert(0usize) += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(bits, n)| format!("{n} at {bits}-bit")).collect();
    let optimality = match a.solver {
        Solver::Exact => "optimal (exact DP)".to_string(),
        Solver::Lagrangian => format!(
            "within {:.2}% of optimal (Lagrangian bound {:.4e})",
            100.0 * a.relative_gap.unwrap_or(f64::NAN),
            a.lower_bound.unwrap_or(f64::NAN)
        ),
        Solver::Rules => "widths by the layer rules".to_string(),
    };
    let estimate = serde_json::to_value(a.estimate).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let widths: Vec<String> = a.layers.iter().map(|l| format!("{} {}", l.name, l.bits)).collect();
    let mut text = format!(
        "allocation, budget {}: {} ({estimate} estimate {:.4e}, {optimality})\nwidths: {}",
        a.budget,
        counts.join(", "),
        a.estimated_loss,
        widths.join(", ")
    );
    if !a.pinned.is_empty() {
        text.push_str(&format!("\nkept at the request's width (no Fisher values): {}", a.pinned.join(", ")));
    }
    text
}
