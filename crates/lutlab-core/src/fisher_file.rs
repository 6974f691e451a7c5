//! The diagonal Fisher information of a model as a file: safetensors, f32, with the **same tensor
//! names, shapes and layout as the model** (SqueezeLLM's gradient-checkpoint convention), so a
//! quantizer looks a layer's sensitivities up by the layer's own name.
//!
//! What is stored: one tensor per linear weight of every block (`ModelConfig::linear_names`:
//! `h.{i}.attn.c_attn.weight`, ... for GPT-2, `model.layers.{i}.self_attn.q_proj.weight`, ... for
//! Llama), in the checkpoint's layout (GPT-2's Conv1D `[in, out]`, `nn.Linear`'s `[out, in]` for
//! OPT and Llama), holding `Σ_samples (∂ loss_sample / ∂ w)²`. In memory the tensors are
//! `[in, out]` like the model's weights; `linear_layout` says how the file stores them. Like SqueezeLLM, only
//! the linear weights are kept: they are what gets quantized (embeddings, biases and LayerNorms
//! stay in full precision). `__metadata__` holds `format: "lutlab-fisher"`, `model`, `data`,
//! `nsamples`, `seqlen`, `seed` (and `loss`, the mean per-sample loss).
//!
//! Reading checks a file against a model's weights and names the first mismatch (a missing tensor,
//! a wrong shape, a non-finite or negative value, a block the model does not have). Files from
//! other tools are accepted when their names carry HF's `transformer.` prefix, their dtype is F16
//! or BF16, or they have no metadata; extra tensors (biases, LayerNorms) are ignored.

use crate::checkpoint::{Checkpoint, HostTensor, check_finite, write_safetensors};
use crate::error::{LoadError, Result};
use crate::config::LinearLayout;
use crate::quant::head::transpose;
use crate::weights::ModelWeights;
use std::collections::HashMap;

/// The value of `__metadata__["format"]` in files lutlab writes.
pub const FISHER_FORMAT: &str = "lutlab-fisher";

/// Where a Fisher diagonal came from. Fields other tools do not write are `None` (or empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FisherMeta {
    /// The model directory (or name) the gradients were taken of.
    pub model: String,
    /// The calibration text.
    pub data: String,
    pub nsamples: Option<usize>,
    pub seqlen: Option<usize>,
    pub seed: Option<u64>,
    /// Mean over samples of each sample's mean next-token cross-entropy (a sanity figure).
    pub mean_loss: Option<f64>,
}

impl FisherMeta {
    /// The file's `__metadata__`.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            ("format".to_string(), FISHER_FORMAT.to_string()),
            ("model".to_string(), self.model.clone()),
            ("data".to_string(), self.data.clone()),
            (
                "reduction".to_string(),
                "sum over samples of the squared gradient of each sample's mean next-token cross-entropy".to_string(),
            ),
        ]);
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                metadata.insert(key.to_string(), value);
            }
        };
        put("nsamples", self.nsamples.map(|v| v.to_string()));
        put("seqlen", self.seqlen.map(|v| v.to_string()));
        put("seed", self.seed.map(|v| v.to_string()));
        put("loss", self.mean_loss.map(|v| v.to_string()));
        metadata
    }
}

/// An `[in, out]` tensor as a file of `layout` stores it.
fn in_layout(t: &HostTensor, layout: LinearLayout) -> std::borrow::Cow<'_, HostTensor> {
    match layout {
        LinearLayout::InOut => std::borrow::Cow::Borrowed(t),
        LinearLayout::OutIn => std::borrow::Cow::Owned(transposed(t)),
    }
}

/// Writes a Fisher file a tensor at a time, as a streamed model's passes produce them.
#[cfg(not(target_arch = "wasm32"))]
pub struct FisherWriter {
    writer: crate::tensor_file::TensorWriter,
    layout: LinearLayout,
}

#[cfg(not(target_arch = "wasm32"))]
impl FisherWriter {
    pub fn create(path: &std::path::Path, config: &crate::ModelConfig) -> Result<Self> {
        let names = config.linear_names();
        let name_bytes = names.iter().map(|(n, _)| n.len() + 7).sum();
        let reserve = crate::tensor_file::header_bytes_estimate(names.len(), name_bytes, 4096);
        Ok(Self { writer: crate::tensor_file::TensorWriter::create(path, reserve)?, layout: config.linear_layout() })
    }

    /// Adds tensor `name` (`[in, out]`), refusing a non-finite one.
    pub fn add(&mut self, name: &str, tensor: &HostTensor) -> Result<()> {
        check_finite(name, &tensor.data)?;
        let stored = in_layout(tensor, self.layout);
        self.writer.add(name, &stored.shape, crate::checkpoint::TensorData::F32(&stored.data))
    }

    pub fn finish(self, meta: &FisherMeta) -> Result<()> {
        self.writer.finish(meta.to_metadata())
    }
}

/// Per-weight sums of squared gradients, keyed by the model's tensor names, in model order.
#[derive(Clone, Debug, Default)]
pub struct FisherDiagonal {
    /// `[in, out]`, as the model's linear weights are held.
    pub tensors: Vec<(String, HostTensor)>,
    pub meta: FisherMeta,
    /// How the file stores the tensors: the model's checkpoint layout.
    pub linear_layout: LinearLayout,
}

/// `[rows, cols]` → `[cols, rows]` as a tensor.
fn transposed(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    HostTensor::new(vec![cols, rows], transpose(&t.data, rows, cols))
}

/// The tensors a Fisher file of `weights`' model holds: `(name, shape)` of every linear weight,
/// in model order.
pub fn fisher_tensor_shapes(weights: &ModelWeights) -> Vec<(String, Vec<usize>)> {
    weights
        .linears()
        .map(|(name, linear)| (format!("{name}.weight"), linear.weight.shape.clone()))
        .collect()
}

impl FisherDiagonal {
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Serializes to safetensors bytes (f32, the model's tensor names, metadata as described in
    /// the module documentation).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let stored: Vec<(&str, std::borrow::Cow<'_, HostTensor>)> =
            self.tensors.iter().map(|(name, t)| (name.as_str(), in_layout(t, self.linear_layout))).collect();
        let views: Vec<(&str, &[usize], &[f32])> =
            stored.iter().map(|(name, t)| (*name, t.shape.as_slice(), t.data.as_slice())).collect();
        write_safetensors(&views, Some(self.meta.to_metadata()))
    }

    /// Reads a Fisher file (`file` names it in errors) and checks it against `weights`: every
    /// linear weight must be there with the model's shape, finite and non-negative. The first
    /// mismatch, in model order, is the error.
    pub fn from_safetensors(file: &str, bytes: &[u8], weights: &ModelWeights) -> Result<Self> {
        let mut checkpoint = Checkpoint::from_safetensors([(file, bytes)])?;
        let mut tensors = Vec::new();
        let linear_layout = weights.config.linear_layout();
        for (name, shape) in fisher_tensor_shapes(weights) {
            // `take` reports a missing tensor, a wrong shape or a NaN/Inf by name.
            let tensor = match linear_layout {
                LinearLayout::InOut => checkpoint.take(&name, &shape)?,
                LinearLayout::OutIn => transposed(&checkpoint.take(&name, &[shape[1], shape[0]])?),
            };
            if let Some(first) = tensor.data.iter().position(|&v| v < 0.0) {
                return Err(LoadError::BadConfig {
                    file: file.to_string(),
                    reason: format!(
                        "tensor `{name}` has a negative value ({}) at flat index {first}; a Fisher diagonal is a sum of squares",
                        tensor.data[first]
                    ),
                });
            }
            tensors.push((name, tensor));
        }
        // A file of a deeper model has every tensor this one needs, and more blocks.
        let n_layer = weights.config.n_layer;
        let block_prefix = weights.config.block_prefix(0);
        let block_prefix = block_prefix.trim_end_matches('0');
        if let Some(extra) = checkpoint
            .names()
            .find(|name| block_index(name, block_prefix).is_some_and(|i| i >= n_layer))
        {
            return Err(LoadError::BadConfig {
                file: file.to_string(),
                reason: format!(
                    "tensor `{extra}` belongs to a block the model does not have (it has {n_layer} blocks)"
                ),
            });
        }
        Ok(Self {
            tensors,
            meta: read_meta(file, bytes)?,
            linear_layout,
        })
    }
}

/// A Fisher file on disk, read a layer at a time (a streamed model's quantization): every
/// tensor the model needs is checked present with its shape when it opens; values are checked
/// (finite, non-negative) as each is read.
#[cfg(not(target_arch = "wasm32"))]
pub struct FisherFile {
    file: String,
    checkpoint: Checkpoint<'static>,
    layout: LinearLayout,
}

#[cfg(not(target_arch = "wasm32"))]
impl FisherFile {
    pub fn open(path: &std::path::Path, config: &crate::ModelConfig) -> Result<Self> {
        let file = path.display().to_string();
        let checkpoint = Checkpoint::open(&[path.to_path_buf()])?;
        let layout = config.linear_layout();
        for (name, spec) in config.linear_names() {
            let name = format!("{name}.weight");
            let expected = match layout {
                LinearLayout::InOut => vec![spec.n_in, spec.n_out],
                LinearLayout::OutIn => vec![spec.n_out, spec.n_in],
            };
            match checkpoint.shape(&name) {
                None => return Err(LoadError::BadConfig { file, reason: format!("tensor `{name}` is missing") }),
                Some(found) if found != expected.as_slice() => {
                    return Err(LoadError::BadConfig { file, reason: format!("tensor `{name}` has shape {found:?}, expected {expected:?}") });
                }
                Some(_) => {}
            }
        }
        Ok(Self { file, checkpoint, layout })
    }

    /// The diagonal of linear weight `name` (`….weight`) as `[n_in, n_out]`.
    pub fn read(&self, name: &str, n_in: usize, n_out: usize) -> Result<HostTensor> {
        let tensor = match self.layout {
            LinearLayout::InOut => self.checkpoint.read(name, &[n_in, n_out])?,
            LinearLayout::OutIn => transposed(&self.checkpoint.read(name, &[n_out, n_in])?),
        };
        if let Some(first) = tensor.data.iter().position(|&v| v < 0.0) {
            return Err(LoadError::BadConfig {
                file: self.file.clone(),
                reason: format!("tensor `{name}` has a negative value ({}) at flat index {first}; a Fisher diagonal is a sum of squares", tensor.data[first]),
            });
        }
        Ok(tensor)
    }
}

/// `h.12.attn.c_attn.weight` with prefix `h.` → `Some(12)`.
fn block_index(name: &str, prefix: &str) -> Option<usize> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.split('.').next()?;
    digits.parse().ok()
}

/// The metadata fields lutlab knows; a field that is present in a lutlab file but malformed is
/// an error, fields of other tools' files are taken when they parse.
fn read_meta(file: &str, bytes: &[u8]) -> Result<FisherMeta> {
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| LoadError::BadSafetensors {
            file: file.to_string(),
            reason: format!("{e:?}"),
        })?;
    let Some(map) = header.metadata() else {
        return Ok(FisherMeta::default());
    };
    let ours = map.get("format").is_some_and(|f| f == FISHER_FORMAT);
    let text = |key: &str| map.get(key).cloned().unwrap_or_default();
    fn number<T: std::str::FromStr>(
        map: &HashMap<String, String>,
        key: &str,
        strict: bool,
        file: &str,
    ) -> Result<Option<T>> {
        match map.get(key).map(|v| v.trim().parse::<T>()) {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(_)) if strict => Err(LoadError::BadSafetensors {
                file: file.to_string(),
                reason: format!(
                    "metadata `{key}` is `{}`, not a number",
                    map.get(key).map_or("", String::as_str)
                ),
            }),
            Some(Err(_)) => Ok(None),
        }
    }
    Ok(FisherMeta {
        model: text("model"),
        data: text("data"),
        nsamples: number(map, "nsamples", ours, file)?,
        seqlen: number(map, "seqlen", ours, file)?,
        seed: number(map, "seed", ours, file)?,
        mean_loss: number(map, "loss", ours, file)?,
    })
}

/// Checks that a computed diagonal is finite (a sum of finite squares can still overflow), so a
/// writer never produces a file that `from_safetensors` would refuse.
pub fn check_diagonal_finite(diagonal: &FisherDiagonal) -> Result<()> {
    diagonal
        .tensors
        .iter()
        .try_for_each(|(name, t)| check_finite(name, &t.data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn tensor(shape: &[usize], value: f32) -> HostTensor {
        HostTensor::new(shape.to_vec(), vec![value; shape.iter().product()])
    }

    /// A GPT-2 of `n_layer` blocks and width `c` (weights are never read, only shapes).
    fn weights(n_layer: usize, c: usize) -> ModelWeights {
        let config = ModelConfig::gpt2(n_layer, 2, c, 8, 10);
        let tensors = config.tensor_shapes().into_iter().map(|(name, shape, _)| {
            let t = tensor(&shape, if name.ends_with("ln_1.weight") { 1.0 } else { 0.0 });
            (name, t)
        });
        ModelWeights::from_checkpoint(&config, Checkpoint::from_tensors(tensors)).unwrap()
    }

    fn diagonal(w: &ModelWeights) -> FisherDiagonal {
        let tensors = fisher_tensor_shapes(w)
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n: usize = shape.iter().product();
                (
                    name,
                    HostTensor::new(shape, (0..n).map(|i| (i * 7 + k) as f32 * 0.5).collect()),
                )
            })
            .collect();
        let meta = FisherMeta {
            model: "models/x".into(),
            data: "valid.txt".into(),
            nsamples: Some(3),
            seqlen: Some(8),
            seed: Some(u64::MAX),
            mean_loss: Some(4.25),
        };
        FisherDiagonal { tensors, meta, linear_layout: LinearLayout::InOut }
    }

    #[test]
    fn roundtrip_keeps_names_shapes_values_and_metadata() {
        let w = weights(2, 4);
        let d = diagonal(&w);
        let bytes = d.to_safetensors().unwrap();
        let back = FisherDiagonal::from_safetensors("f.safetensors", &bytes, &w).unwrap();
        assert_eq!(back.meta, d.meta);
        assert_eq!(back.tensors, d.tensors);
        assert_eq!(back.tensors[0].0, "h.0.attn.c_attn.weight");
        assert_eq!(back.tensors.len(), 8);
    }

    #[test]
    fn accepts_squeezellm_style_prefixed_names_without_metadata() {
        let w = weights(2, 4);
        let d = diagonal(&w);
        let mut renamed: Vec<(String, &HostTensor)> = d
            .tensors
            .iter()
            .map(|(n, t)| (format!("transformer.{n}"), t))
            .collect();
        let bias = tensor(&[4], 1.0);
        renamed.push(("transformer.h.0.attn.c_proj.bias".into(), &bias));
        let views: Vec<(&str, &[usize], &[f32])> = renamed
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice()))
            .collect();
        let bytes = write_safetensors(&views, None).unwrap();
        let back = FisherDiagonal::from_safetensors("sq.safetensors", &bytes, &w).unwrap();
        assert_eq!(back.tensors, d.tensors);
        assert_eq!(back.meta, FisherMeta::default());
    }

    #[test]
    fn another_models_file_is_rejected_naming_the_first_mismatch() {
        let bytes = diagonal(&weights(2, 4)).to_safetensors().unwrap();
        // Wider model: the first tensor in model order has the wrong shape.
        let err = FisherDiagonal::from_safetensors("f", &bytes, &weights(2, 8))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.0.attn.c_attn.weight")
                && err.contains("[4, 12]")
                && err.contains("[8, 24]"),
            "{err}"
        );
        // Deeper model: the first missing block.
        let err = FisherDiagonal::from_safetensors("f", &bytes, &weights(3, 4))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.2.attn.c_attn.weight") && err.contains("missing"),
            "{err}"
        );
        // Shallower model: the file has a block too many.
        let err = FisherDiagonal::from_safetensors("f", &bytes, &weights(1, 4))
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.1.") && err.contains("1 blocks"), "{err}");
    }

    #[test]
    fn non_finite_and_negative_values_are_rejected_by_name() {
        let w = weights(2, 4);
        let mut d = diagonal(&w);
        d.tensors[5].1.data[3] = f32::NAN;
        let err = FisherDiagonal::from_safetensors("f", &d.to_safetensors().unwrap(), &w)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.1.attn.c_proj.weight") && err.contains("first at flat index 3"),
            "{err}"
        );
        assert!(check_diagonal_finite(&d).is_err());
        let mut d = diagonal(&w);
        d.tensors[2].1.data[1] = -1.0;
        let err = FisherDiagonal::from_safetensors("f", &d.to_safetensors().unwrap(), &w)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.0.mlp.c_fc.weight") && err.contains("negative"),
            "{err}"
        );
    }

    #[test]
    fn malformed_lutlab_metadata_is_an_error() {
        let w = weights(1, 4);
        let d = diagonal(&w);
        let views: Vec<(&str, &[usize], &[f32])> = d
            .tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice()))
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), FISHER_FORMAT.to_string()),
            ("seqlen".to_string(), "many".to_string()),
        ]);
        let bytes = write_safetensors(&views, Some(meta)).unwrap();
        let err = FisherDiagonal::from_safetensors("f", &bytes, &w)
            .unwrap_err()
            .to_string();
        assert!(err.contains("seqlen") && err.contains("many"), "{err}");
        assert!(FisherDiagonal::from_safetensors("f", &bytes[..bytes.len() - 1], &w).is_err());
    }
}
