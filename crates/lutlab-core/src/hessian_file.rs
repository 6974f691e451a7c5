//! The Hessians `H = (2/N) Σ x xᵀ` of a model's linear inputs as a file (`lutlab hessian --out`),
//! read back by `lutlab quantize --hessian` and `lutlab hessian --summary`.
//!
//! safetensors, f32, one `[in, in]` tensor per distinct linear input, named after the first
//! linear that reads it (`h.0.attn.c_attn`; `model.layers.0.self_attn.q_proj` serves q, k and v,
//! `…mlp.gate_proj` gate and up), so a file holds each Hessian once. `__metadata__`: `format`
//! (`lutlab-hessian`), `model`, `data`, `nsamples`, `seqlen`, `seed`, and `inputs`: `float`
//! (every block saw the float model's activations).

use crate::config::ModelConfig;
#[cfg(not(target_arch = "wasm32"))]
use crate::{checkpoint::Checkpoint, error::{LoadError, Result}, quant::hessian::Square};
use std::collections::HashMap;

pub const HESSIAN_FORMAT: &str = "lutlab-hessian";

/// Every distinct linear input of `config`'s model in model order: the stored name (the first
/// linear reading it) and its width.
pub fn hessian_keys(config: &ModelConfig) -> Vec<(String, usize)> {
    let specs = config.block_linears();
    let groups = config.input_groups();
    let mut keys = Vec::new();
    for i in 0..config.n_layer {
        let prefix = config.block_prefix(i);
        keys.extend(groups.iter().map(|g| (format!("{prefix}.{}", specs[g.start].name), specs[g.start].n_in)));
    }
    keys
}

/// The stored name of linear `name`'s Hessian, or `None` for a name that is not a block linear.
pub fn hessian_key(config: &ModelConfig, name: &str) -> Option<String> {
    let specs = config.block_linears();
    let (prefix, linear) = (0..config.n_layer).find_map(|i| {
        let prefix = config.block_prefix(i);
        name.strip_prefix(&format!("{prefix}.")).map(|rest| (prefix, rest.to_string()))
    })?;
    let index = specs.iter().position(|s| s.name == linear)?;
    let group = config.input_groups().into_iter().find(|g| g.contains(&index))?;
    Some(format!("{prefix}.{}", specs[group.start].name))
}

/// Where a Hessian file came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HessianMeta {
    pub model: String,
    pub data: String,
    pub nsamples: usize,
    pub seqlen: usize,
    pub seed: u64,
}

impl HessianMeta {
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), HESSIAN_FORMAT.to_string()),
            ("model".to_string(), self.model.clone()),
            ("data".to_string(), self.data.clone()),
            ("nsamples".to_string(), self.nsamples.to_string()),
            ("seqlen".to_string(), self.seqlen.to_string()),
            ("seed".to_string(), self.seed.to_string()),
            ("inputs".to_string(), "float".to_string()),
            ("reduction".to_string(), "2/nsamples * sum over every window position of x x^T".to_string()),
        ])
    }
}

/// Writes a Hessian file a tensor at a time, as the blocks produce them.
#[cfg(not(target_arch = "wasm32"))]
pub struct HessianWriter {
    writer: crate::tensor_file::TensorWriter,
}

#[cfg(not(target_arch = "wasm32"))]
impl HessianWriter {
    pub fn create(path: &std::path::Path, config: &ModelConfig) -> Result<Self> {
        let keys = hessian_keys(config);
        let name_bytes = keys.iter().map(|(k, _)| k.len()).sum();
        let reserve = crate::tensor_file::header_bytes_estimate(keys.len(), name_bytes, 4096);
        Ok(Self { writer: crate::tensor_file::TensorWriter::create(path, reserve)? })
    }

    /// Adds the Hessian stored as `key` (see [`hessian_keys`]), refusing a non-finite one.
    pub fn add(&mut self, key: &str, h: &Square) -> Result<()> {
        let values: Vec<f32> = h.data.iter().map(|&v| v as f32).collect();
        crate::checkpoint::check_finite(key, &values)?;
        self.writer.add(key, &[h.n, h.n], crate::checkpoint::TensorData::F32(&values))
    }

    pub fn finish(self, meta: &HessianMeta) -> Result<()> {
        self.writer.finish(meta.to_metadata())
    }
}

/// A Hessian file opened against a model: every input's tensor checked present with its shape;
/// the values are read when asked for.
#[cfg(not(target_arch = "wasm32"))]
pub struct HessianFile {
    file: String,
    checkpoint: Checkpoint<'static>,
    config: ModelConfig,
}

#[cfg(not(target_arch = "wasm32"))]
impl HessianFile {
    pub fn open(path: &std::path::Path, config: &ModelConfig) -> Result<Self> {
        let file = path.display().to_string();
        let checkpoint = Checkpoint::open(&[path.to_path_buf()])?;
        for (key, n) in hessian_keys(config) {
            match checkpoint.shape(&key) {
                None => return Err(LoadError::BadConfig { file, reason: format!("tensor `{key}` is missing: is this a Hessian file of this model?") }),
                Some(found) if found != [n, n] => {
                    return Err(LoadError::BadConfig { file, reason: format!("tensor `{key}` has shape {found:?}, expected [{n}, {n}]: a Hessian file of another model?") });
                }
                Some(_) => {}
            }
        }
        Ok(Self { file, checkpoint, config: config.clone() })
    }

    /// The Hessian of linear `name`'s input (`h.0.attn.c_attn`).
    pub fn read(&self, name: &str) -> Result<Square> {
        let key = hessian_key(&self.config, name).ok_or_else(|| LoadError::InvalidSetting(format!("`{name}` is not a linear of this model")))?;
        let n = self.checkpoint.shape(&key).map_or(0, |s| s[0]);
        let tensor = self.checkpoint.read(&key, &[n, n])?;
        let h = Square::from_f32(n, &tensor.data)?;
        if let Some(k) = h.diagonal().iter().position(|&d| d < 0.0) {
            return Err(LoadError::BadConfig { file: self.file.clone(), reason: format!("`{key}` has a negative diagonal at {k}: not a Hessian of squared errors") });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_inputs_are_stored_once_under_their_first_linear() {
        let gpt2 = ModelConfig::gpt2(2, 2, 8, 16, 10);
        assert_eq!(hessian_keys(&gpt2).len(), 8);
        assert_eq!(hessian_key(&gpt2, "h.1.mlp.c_proj").as_deref(), Some("h.1.mlp.c_proj"));
        assert_eq!(hessian_key(&gpt2, "h.2.mlp.c_proj"), None);
        assert_eq!(hessian_key(&gpt2, "h.1.mlp.nope"), None);
    }
}
