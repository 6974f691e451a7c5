//! `lutlab hessian --summary`: QuIP's per-layer Hessian statistics (`compute_Hsummary`) from a
//! Hessian file — the LDL trace ratio, ranks, condition and the incoherence of H's eigenvectors —
//! with the incoherence of the layer's weights, and with `--incoherence` both again after QuIP's
//! processing (rescale and random rotations). Reads the model a block at a time.

use crate::progress::Bar;
use anyhow::Result;
use lutlab_core::hessian_file::HessianFile;
use lutlab_core::quant::hessian::{summarize, HessianSummary};
use lutlab_core::quant::incoherence::{incoherence_mu, layer_rotations, preprocess};
use lutlab_core::weights::BlockWeights;
use lutlab_core::{ModelFiles, Progress};
use std::path::Path;

/// One Hessian (one distinct linear input) summarized.
#[derive(serde::Serialize)]
struct Line {
    /// The first linear reading this input (`h.0.attn.c_attn`, `…q_proj` for q, k and v).
    layer: String,
    #[serde(flatten)]
    summary: HessianSummary,
    /// Incoherence `max|W_ij|·√(mn)/‖W‖_F` of each linear reading this input.
    weight_mu: Vec<(String, f64)>,
    /// After QuIP's processing (`--incoherence`): μ of H's eigenvectors and of each weight.
    processed_mu: Option<f64>,
    processed_weight_mu: Option<Vec<(String, f64)>>,
}

pub fn print(model_dir: &Path, hessian: &Path, incoherence: bool, seed: u64, json: bool) -> Result<()> {
    let opened = ModelFiles::open_dir(model_dir)?;
    let config = &opened.config;
    let file = HessianFile::open(hessian, config)?;
    let specs = config.block_linears();
    let groups = config.input_groups();
    let mut bar = Bar::new("summary", "Hessians", json);
    let total = (config.n_layer * groups.len()) as u64;
    let mut lines = Vec::new();
    for b in 0..config.n_layer {
        let weights = BlockWeights::read(config, &opened.checkpoint, b)?;
        let prefix = config.block_prefix(b);
        for group in &groups {
            if bar.is_cancelled() {
                anyhow::bail!("cancelled");
            }
            let layer = format!("{prefix}.{}", specs[group.start].name);
            let h = file.read(&layer)?;
            let summary = summarize(&h, 0.01).map_err(|e| anyhow::anyhow!("{layer}: {e}"))?;
            let mut weight_mu = Vec::new();
            let mut processed_weight_mu = Vec::new();
            let mut processed_mu = None;
            for i in group.clone() {
                let (name, spec, w) = (format!("{prefix}.{}", specs[i].name), &specs[i], &weights.linears[i].weight.data);
                weight_mu.push((name.clone(), incoherence_mu(w, spec.n_in, spec.n_out)));
                if incoherence {
                    let rotations = layer_rotations(&name, spec.n_in, spec.n_out, seed);
                    let p = preprocess(w, spec.n_in, spec.n_out, &h, true, Some(rotations))?;
                    processed_weight_mu.push((name, incoherence_mu(&p.weights, spec.n_in, spec.n_out)));
                    // H's processing depends on the weights only through the rescaling: one per input.
                    if processed_mu.is_none() {
                        processed_mu = Some(summarize(&p.hessian, 0.01)?.mu);
                    }
                }
            }
            lines.push(Line { layer, summary, weight_mu, processed_mu, processed_weight_mu: incoherence.then_some(processed_weight_mu) });
            bar.update(lines.len() as u64, total);
        }
    }
    bar.finish();
    if json {
        println!("{}", serde_json::json!({ "hessian": hessian, "layers": lines }));
        return Ok(());
    }
    let after = if incoherence { format!(" {:>9} {:>9}", "μ_H after", "μ_W after") } else { String::new() };
    println!("{:<36} {:>6} {:>11} {:>6} {:>9} {:>10} {:>7} {:>7}{after}", "layer (input)", "inputs", "tr(D)/tr(H)", "rank", "rank@1e-2", "condition", "μ_H", "μ_W");
    for l in &lines {
        let s = &l.summary;
        let max = |v: &[(String, f64)]| v.iter().map(|x| x.1).fold(0f64, f64::max);
        let after = match (&l.processed_mu, &l.processed_weight_mu) {
            (Some(h), Some(w)) => format!(" {h:>9.2} {:>9.2}", max(w)),
            _ => String::new(),
        };
        println!(
            "{:<36} {:>6} {:>11.4} {:>6} {:>9} {:>10.3e} {:>7.2} {:>7.2}{after}",
            l.layer, s.inputs, s.trace_ratio, s.rank, s.rank_1e2, s.condition, s.mu, max(&l.weight_mu)
        );
    }
    println!("μ_W: the largest over the linears reading the input. μ = 1: spread evenly; √n: on one coordinate.");
    Ok(())
}
