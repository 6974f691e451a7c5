//! llm-awq's search results applied to a model (`--load-awq`, Brevitas' option): per-channel
//! input scales found by AWQ's activation-aware search, and per-group clipping ranges, so that
//! lutlab's quantizers then round the weights AWQ prepared.
//!
//! llm-awq saves `{"scale": [(prev_op, (layers…), scales)], "clip": [(layer, max_val)]}` with
//! `torch.save`, names relative to the causal-LM model (`model.decoder.layers.0.fc1`), which are
//! the checkpoint's names lutlab uses. A pickle is not read here:
//! `scripts/awq_to_safetensors.py` rewrites the file as safetensors (f32 tensors `scale.{i}` and
//! `clip.{layer}`, and `__metadata__["awq_scales"]`, a JSON list of `{"prev_op", "layers",
//! "tensor"}`), which [`AwqResults::from_safetensors`] reads.
//!
//! Applying a scale `s` (llm-awq's `apply_scale`): after a norm, the norm's γ and β are divided by
//! `s` and each listed linear's input rows multiplied by it; after a linear (v → o, fc1 → fc2,
//! up → down), that linear's last `len(s)` output columns and bias are divided by `s` and the
//! listed linear's input rows multiplied by it. Both are exact before quantization. After an
//! activation (GELU models), llm-awq inserts an explicit scale module, which lutlab's blocks
//! have no place for: refused by name. Clipping (`apply_clip`) clamps each output channel's
//! group of input rows to `±max_val[channel, group]`.

use crate::error::{LoadError, Result};
use crate::model_transforms::{divide_columns, merge_factors, scale_rows, ColumnScales, RowScales};
use crate::weights::ModelWeights;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One searched scale: the op before `layers`, and the scale of each channel between them.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqScale {
    pub prev_op: String,
    pub layers: Vec<String>,
    pub scales: Vec<f32>,
}

/// A model's AWQ search results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AwqResults {
    pub scales: Vec<AwqScale>,
    /// Per linear (full name), `[out, groups]` row-major clipping ranges.
    pub clips: BTreeMap<String, (usize, usize, Vec<f32>)>,
}

#[derive(Deserialize)]
struct ScaleEntry {
    prev_op: String,
    layers: Vec<String>,
    tensor: String,
}

/// The metadata key listing the scale entries.
pub const AWQ_SCALES_KEY: &str = "awq_scales";

impl AwqResults {
    /// Reads the safetensors form written by `scripts/awq_to_safetensors.py`.
    pub fn from_safetensors(file: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| LoadError::BadSafetensors { file: file.to_string(), reason };
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e:?}")))?;
        let listing = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(AWQ_SCALES_KEY))
            .ok_or_else(|| bad(format!("no `{AWQ_SCALES_KEY}` metadata: not an AWQ results file (scripts/awq_to_safetensors.py writes one from llm-awq's .pt)")))?;
        let entries: Vec<ScaleEntry> = serde_json::from_str(listing).map_err(|e| bad(format!("`{AWQ_SCALES_KEY}`: {e}")))?;
        let tensors = crate::checkpoint::parse_safetensors(file, bytes)?;
        let mut results = AwqResults::default();
        for entry in entries {
            let t = crate::checkpoint::read_f32(&tensors, &entry.tensor)?;
            results.scales.push(AwqScale { prev_op: entry.prev_op, layers: entry.layers, scales: t.data });
        }
        for name in tensors.names() {
            if let Some(layer) = name.strip_prefix("clip.") {
                let t = crate::checkpoint::read_f32(&tensors, name)?;
                if t.shape.len() != 2 {
                    return Err(bad(format!("`{name}` has shape {:?}; clipping ranges are [out, groups]", t.shape)));
                }
                results.clips.insert(layer.to_string(), (t.shape[0], t.shape[1], t.data));
            }
        }
        Ok(results)
    }

    /// Applies the scales, then the clipping, to `weights` (see the module documentation).
    /// Returns the row factors and column divisors, for carrying a Fisher diagonal over. A name
    /// this model lacks, or a length that does not fit, means the results are for another model.
    pub fn apply(&self, weights: &mut ModelWeights) -> Result<(RowScales, ColumnScales)> {
        let other_model = |what: String| LoadError::InvalidSetting(format!("--load-awq: {what}: these AWQ results were searched on another model"));
        let (mut rows_scaled, mut columns_scaled) = (RowScales::new(), ColumnScales::new());
        for entry in &self.scales {
            let s = &entry.scales;
            if let Some(i) = s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(LoadError::InvalidSetting(format!("--load-awq: scale {i} before `{}` is {}: scales must be positive", entry.prev_op, s[i])));
            }
            match norm_of(weights, &entry.prev_op) {
                Some((block, which)) => {
                    let norm = if which == 0 { &mut weights.blocks[block].norm_1 } else { &mut weights.blocks[block].norm_2 };
                    if norm.gamma.data.len() != s.len() {
                        return Err(other_model(format!("`{}` has {} channels, the scales {}", entry.prev_op, norm.gamma.data.len(), s.len())));
                    }
                    norm.gamma.data.iter_mut().zip(s).for_each(|(g, f)| *g /= f);
                    if let Some(beta) = &mut norm.beta {
                        beta.data.iter_mut().zip(s).for_each(|(b, f)| *b /= f);
                    }
                }
                None => {
                    let linear = weights.linear_mut(&entry.prev_op).ok_or_else(|| {
                        if entry.prev_op.ends_with("act") || entry.prev_op.contains("gelu") {
                            LoadError::InvalidSetting(format!(
                                "--load-awq: a scale after the activation `{}` needs an explicit scale module, which lutlab's blocks do not have",
                                entry.prev_op
                            ))
                        } else {
                            other_model(format!("no norm or linear `{}`", entry.prev_op))
                        }
                    })?;
                    let cols = linear.out_features();
                    if s.len() > cols || entry.layers.len() != 1 {
                        return Err(other_model(format!("`{}` has {cols} outputs for {} scales into {} layers", entry.prev_op, s.len(), entry.layers.len())));
                    }
                    // The last len(s) outputs: v in a fused q/k/v, or the whole layer.
                    let mut divisor = vec![1f32; cols];
                    divisor[cols - s.len()..].copy_from_slice(s);
                    divide_columns(linear, &divisor);
                    merge_factors(columns_scaled.entry(entry.prev_op.clone()).or_insert_with(|| vec![1.0; cols]), &divisor);
                }
            }
            for name in &entry.layers {
                let linear = weights.linear_mut(name).ok_or_else(|| other_model(format!("no linear `{name}`")))?;
                if linear.in_features() != s.len() {
                    return Err(other_model(format!("`{name}` has {} inputs, the scales {}", linear.in_features(), s.len())));
                }
                scale_rows(linear, s);
                merge_factors(rows_scaled.entry(name.clone()).or_insert_with(|| vec![1.0; s.len()]), s);
            }
        }
        for (name, (out, groups, max_val)) in &self.clips {
            let linear = weights.linear_mut(name).ok_or_else(|| other_model(format!("no linear `{name}` to clip")))?;
            let (rows, cols) = (linear.in_features(), linear.out_features());
            if *out != cols || *groups == 0 || !rows.is_multiple_of(*groups) {
                return Err(other_model(format!("`{name}` is {rows} inputs × {cols} outputs; its clipping ranges are {out} × {groups} groups")));
            }
            let size = rows / groups;
            for (r, row) in linear.weight.data.chunks_exact_mut(cols).enumerate() {
                for (c, w) in row.iter_mut().enumerate() {
                    let m = max_val[c * groups + r / size];
                    *w = w.clamp(-m, m);
                }
            }
        }
        Ok((rows_scaled, columns_scaled))
    }
}

/// `(block, 0 | 1)` when `name` is block `block`'s first or second norm.
fn norm_of(weights: &ModelWeights, name: &str) -> Option<(usize, usize)> {
    let config = &weights.config;
    let norms = config.block_norms();
    (0..config.n_layer).find_map(|b| {
        let prefix = config.block_prefix(b);
        norms.iter().position(|n| name == format!("{prefix}.{n}")).map(|which| (b, which))
    })
}
