//! The packed model file: a GPT-2 whose quantized linear weights are stored in their packed LUT
//! form ([`PackedLinear`]: codes in 32-row blocks per output column, tables, a CSC sparse part,
//! optional scales and input shift) and every other tensor dense, losslessly in the smallest
//! dtype that holds its values (f16, bf16 or f32: [`DenseDtype`]). One safetensors file,
//! `__metadata__["format"] = "lutlab-packed"`, versioned; `docs/FORMAT.md` is the specification.
//!
//! For a packed layer `L` (`h.0.attn.c_attn`) the file holds `L.qweight` (U32), `L.lut` (F16 or
//! F32), `L.sparse_col_ptr`, `L.sparse_row_idx` (U32) and `L.sparse_values` (F32) when it has
//! outliers, and optionally `L.scales` and `L.input_shift` (F32); its shape is in the metadata
//! `layers` JSON. `L.bias` stays dense, under its Hugging Face name, as do the embeddings, the
//! LayerNorms and the weights of linears left unquantized.
//!
//! The tied token embedding may be packed too, as the layer `lm_head` (the head's `[n_embd,
//! vocab]` linear, `wte` transposed; `wte.weight` is then absent): such files are version 2
//! (`docs/FORMAT.md` §10). Layers with a scale and zero point per group of input rows (GPTQ's
//! `groupsize`: `L.group_scales`, `L.group_zeros`, `group_size` in `layers`) make version 3 (§11).
//! Dense tensors in F16 or BF16 make version 4 (§2). Every file is written as the lowest version
//! that holds it, so older lutlabs read the rest.
//!
//! Reading treats the bytes as untrusted: every size is checked against the metadata before it
//! is used, every value is checked (finite floats, indices in range, zero padding), the result
//! must be a complete GPT-2, and anything unknown is refused by name. It returns an error, never
//! panics, on any input (`tests/packed_file.rs` fuzzes it).

use crate::checkpoint::{Checkpoint, HostTensor, TensorData, parse_safetensors, write_tensors};
use crate::config::{LinearLayout, ModelConfig};
use crate::dense_dtype::DenseDtype;
use crate::error::{LoadError, Result};
use crate::quant::head::{is_head, transpose, HEAD};
use crate::quant::model::{QuantizedLayer, QuantizedModel};
use crate::quant::incoherence::{Incoherence, Rotation};
use crate::quant::lut::{InputGroupScales, INPUT_GROUP_MULTIPLE};
use crate::quant::packed::{PackedLinear, SparseColumns, blocks};
use crate::weights::ModelWeights;
use safetensors::{Dtype, SafeTensors};
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `__metadata__["format"]` of a packed model file.
pub const FORMAT_NAME: &str = "lutlab-packed";
/// The newest `__metadata__["format_version"]`, read with every older one: 6 for files with
/// layers of column parts, 5 for files with vector tables, 4 for files with a dense tensor in F16 or BF16, 3 for files with input-group
/// scales, 2 for files with a packed LM head (`lm_head`, the tied embedding), 1 for all others
/// (see [`version_needed`]).
pub const FORMAT_VERSION: u32 = 6;
/// The version of files without a packed head or input-group scales.
pub const FORMAT_VERSION_WITHOUT_HEAD: u32 = 1;
/// The first version with a packed LM head.
pub const FORMAT_VERSION_HEAD: u32 = 2;
/// The first version with input-group scales.
pub const FORMAT_VERSION_INPUT_GROUPS: u32 = 3;
/// The first version with dense tensors in F16 or BF16 (before, every dense tensor was F32).
pub const FORMAT_VERSION_DENSE_16: u32 = 4;
/// The first version with vector tables (`vector_dim` > 1).
pub const FORMAT_VERSION_VECTORS: u32 = 5;
/// The first version with layers of column parts (`--allocate-per channels:N`).
pub const FORMAT_VERSION_COLUMN_PARTS: u32 = 6;

/// The lowest version that holds these layers and dense tensors of these dtypes (older readers
/// then still read the file).
fn version_needed(layers: &BTreeMap<String, LayerMeta>, dense_16: bool) -> u32 {
    if layers.values().any(|l| l.parts.is_some()) {
        FORMAT_VERSION_COLUMN_PARTS
    } else if layers.values().any(|l| l.vector_dim.is_some() || l.parts().any(|p| p.vector_dim.is_some())) {
        FORMAT_VERSION_VECTORS
    } else if dense_16 {
        FORMAT_VERSION_DENSE_16
    } else if layers.values().any(LayerMeta::needs_version_3) {
        FORMAT_VERSION_INPUT_GROUPS
    } else if layers.contains_key(HEAD) {
        FORMAT_VERSION_HEAD
    } else {
        FORMAT_VERSION_WITHOUT_HEAD
    }
}

/// Suffixes of the tensors of a packed layer (`{layer}.{suffix}`).
const PACKED_SUFFIXES: [&str; 16] = [
    "qweight", "lut", "group_scales", "group_zeros", "sparse_col_ptr", "sparse_row_idx", "sparse_values", "scales",
    "input_shift", "input_scale", "rotation_in_a", "rotation_in_b", "rotation_in_perm", "rotation_out_a", "rotation_out_b",
    "rotation_out_perm",
];
/// The incoherence tensors of a packed layer (version 3).
const INCOHERENCE_SUFFIXES: [&str; 7] =
    ["input_scale", "rotation_in_a", "rotation_in_b", "rotation_in_perm", "rotation_out_a", "rotation_out_b", "rotation_out_perm"];

/// Largest config dimension accepted from a file. GPT-2's are far below; the limit keeps every
/// product of dimensions the reader forms far from overflow.
const MAX_CONFIG_DIM: u64 = 1 << 31;

/// How LUT entries are stored in the file. The sparse values, scales and shift are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TableDtype {
    /// IEEE half precision: what `QuantizedLayer::bits_per_weight` counts, and the default.
    #[default]
    F16,
    F32,
}

impl TableDtype {
    pub fn name(self) -> &'static str {
        match self {
            TableDtype::F16 => "f16",
            TableDtype::F32 => "f32",
        }
    }

    /// Bytes per table entry.
    pub fn bytes(self) -> usize {
        match self {
            TableDtype::F16 => 2,
            TableDtype::F32 => 4,
        }
    }
}

impl std::fmt::Display for TableDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TableDtype {
    type Err = LoadError;
    /// `f16` or `f32`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            _ => Err(LoadError::InvalidSetting(format!("table dtype `{s}`: use f16 or f32"))),
        }
    }
}

/// Where a packed model came from (free text; `settings` is JSON or empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PackedMeta {
    /// The model directory or Hugging Face id that was quantized.
    pub base_model: String,
    /// A label of the method, e.g. `kmeans 4-bit channel`.
    pub method: String,
    /// The quantization request as JSON text (empty when unknown).
    pub settings: String,
    /// A mixed-precision allocation (`quant::mixed::AllocationReport`) as JSON text: the budget,
    /// each layer's chosen width and estimate; empty when every layer has the request's width.
    pub allocation: String,
}

/// A GPT-2 with packed LUT linear layers: the content of a `lutlab-packed` file.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedModel {
    pub config: ModelConfig,
    pub meta: PackedMeta,
    /// Every tensor that is not a packed weight, under canonical HF names (`wte.weight`,
    /// `wpe.weight`, `ln_*`, all biases including those of packed layers, and the weights of
    /// linears left unquantized), f32 in memory; the file stores each in the smallest dtype
    /// that holds it exactly ([`DenseDtype::smallest_exact`]).
    pub dense: BTreeMap<String, HostTensor>,
    /// Packed linear weights by layer name (`h.0.attn.c_attn`).
    pub layers: BTreeMap<String, PackedLinear>,
}

/// One entry of the metadata `layers` JSON object.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerMeta {
    rows: usize,
    cols: usize,
    bits: u32,
    channels_per_table: usize,
    /// Input rows per group of `group_scales` (version 3); absent without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_size: Option<usize>,
    /// QuIP's incoherence processing: the layer has input scales and/or rotations (version 3);
    /// absent (false) without.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    incoherence: bool,
    /// Weights per code of vector tables, 2 or 4 (version 5); absent for scalar tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vector_dim: Option<usize>,
    /// A layer of column parts (version 6): each part's entry, in column order; its tensors are
    /// `{layer}.part{i}.{suffix}`. The layer's own `bits` is the widest part's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<Vec<LayerMeta>>,
}

impl LayerMeta {
    fn of(l: &PackedLinear) -> Self {
        let group_size = l.input_groups.as_ref().map(|g| g.size);
        let incoherence = l.incoherence.is_some();
        let vector_dim = l.is_vector().then_some(l.vector_dim);
        let parts = l.is_split().then(|| l.column_parts.iter().map(Self::of).collect());
        Self { rows: l.rows, cols: l.cols, bits: l.bits, channels_per_table: l.channels_per_table, group_size, incoherence, vector_dim, parts }
    }

    /// The entries of its column parts (none for a whole layer).
    fn parts(&self) -> impl Iterator<Item = &LayerMeta> {
        self.parts.iter().flatten()
    }

    fn describe(&self) -> String {
        let groups = self.group_size.map_or(String::new(), |g| format!(", group_size {g}"));
        let incoherence = if self.incoherence { ", incoherence" } else { "" };
        let vectors = self.vector_dim.map_or(String::new(), |d| format!(", vector_dim {d}"));
        let parts = self.parts.as_ref().map_or(String::new(), |p| format!(", {} column parts", p.len()));
        format!(
            "rows {}, cols {}, bits {}, channels_per_table {}{groups}{incoherence}{vectors}{parts}",
            self.rows, self.cols, self.bits, self.channels_per_table
        )
    }

    /// Whether the layer needs format version 3.
    fn needs_version_3(&self) -> bool {
        self.group_size.is_some() || self.incoherence || self.parts().any(LayerMeta::needs_version_3)
    }
}

impl PackedModel {
    /// From the original weights and a quantization of them: every layer with `lut: Some` is
    /// packed, everything else stays dense. With [`TableDtype::F16`] the table entries are
    /// rounded to f16 here (see [`Self::round_tables_to_f16`]), so what is evaluated equals what
    /// is stored; the sparse values stay f32.
    pub fn from_quantized(
        weights: &ModelWeights,
        quantized: &QuantizedModel,
        meta: PackedMeta,
        table_dtype: TableDtype,
    ) -> Result<Self> {
        let mut linears: HashMap<String, (usize, usize)> =
            weights.linears().map(|(name, l)| (name, (l.in_features(), l.out_features()))).collect();
        linears.insert(HEAD.to_string(), (weights.config.embed_dim, weights.config.vocab_size));
        let mut layers = BTreeMap::new();
        let mut biases: HashMap<String, HostTensor> = HashMap::new();
        for layer in &quantized.layers {
            if !layer.has_packed_form() {
                continue;
            }
            let name = &layer.name;
            let &(rows, cols) = linears
                .get(name)
                .ok_or_else(|| invalid(format!("quantized layer `{name}` is not a linear layer of the model")))?;
            let (packed, bias) = pack_layer(layer, rows, cols)?;
            if let Some(bias) = bias {
                biases.insert(format!("{name}.bias"), bias);
            }
            if layers.insert(name.clone(), packed).is_some() {
                return Err(invalid(format!("layer `{name}` is quantized twice")));
            }
        }
        let config = &weights.config;
        let packed_weights: BTreeSet<String> = layers.keys().map(|layer| weight_of(config, layer)).collect();
        let mut dense: BTreeMap<String, HostTensor> = weights
            .to_checkpoint_tensors()
            .into_iter()
            .filter(|(name, _)| !packed_weights.contains(name))
            .collect();
        // Transformed biases replace the stored ones (or join them, on bias-less families).
        dense.extend(biases);
        let mut model = Self { config: weights.config.clone(), meta, dense, layers };
        if table_dtype == TableDtype::F16 {
            model.round_tables_to_f16()?;
        }
        model.validate("packed model")?;
        Ok(model)
    }

    /// Rounds every table entry to the nearest f16 (ties to even). Each sparse value is re-taken
    /// against the rounded entry it is added to, so the weights the sparse part keeps stay what
    /// they were (to f32 rounding). Fails if an entry is beyond f16's range (±65504).
    pub fn round_tables_to_f16(&mut self) -> Result<()> {
        for (name, layer) in &mut self.layers {
            round_layer_tables_to_f16(name, layer)?;
        }
        Ok(())
    }

    /// Checks that this is a complete, consistent GPT-2: every packed layer is a linear layer of
    /// the config with its shape and passes [`PackedLinear::validate`]; every dense tensor is a
    /// known GPT-2 tensor with its shape and finite values; every tensor GPT-2 needs is there,
    /// dense or packed, and no weight is both; `settings` is JSON or empty. `file` names the
    /// source in errors.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: file.to_string(), reason });
        let config = &self.config;
        // Each block has 16 tensors: a config with more blocks than tensors is wrong, whatever
        // else is, and this bounds the lists below.
        if config.n_layer > self.dense.len() + self.layers.len() {
            return bad(format!(
                "the config has {} blocks but the model holds only {} tensors",
                config.n_layer,
                self.dense.len() + self.layers.len()
            ));
        }
        for (key, text) in [("settings", &self.meta.settings), ("allocation", &self.meta.allocation)] {
            if !text.trim().is_empty()
                && let Err(e) = serde_json::from_str::<serde_json::Value>(text)
            {
                return bad(format!("the {key} metadata is not JSON: {e}"));
            }
        }
        let expected: BTreeMap<String, (Vec<usize>, bool)> =
            config.tensor_shapes().into_iter().map(|(name, shape, required)| (name, (shape, required))).collect();
        let linears = linear_names(config);
        for (name, layer) in &self.layers {
            if !linears.contains(name) {
                return bad(not_a_linear(name, config));
            }
            let weight = weight_of(config, name);
            if let Some((rows, cols)) = packed_shape(config, name)
                && (rows, cols) != (layer.rows, layer.cols)
            {
                return bad(format!("packed layer `{name}` is {}x{}, the config's is {rows}x{cols}", layer.rows, layer.cols));
            }
            layer.validate(&format!("{file}: packed layer `{name}`"))?;
            if is_head(name) && layer.input_shift.is_some() {
                return bad(format!("packed layer `{HEAD}` has an input shift: the LM head has no bias to fold it into"));
            }
            if self.dense.contains_key(&weight) {
                return bad(format!("`{weight}` is stored both dense and packed"));
            }
        }
        for (name, tensor) in &self.dense {
            let Some((shape, _)) = expected.get(name) else {
                return bad(unknown_tensor(name));
            };
            if &tensor.shape != shape {
                return bad(format!("tensor `{name}` has shape {:?}, expected {shape:?}", tensor.shape));
            }
            if tensor.data.len() != shape.iter().product::<usize>() {
                return bad(format!("tensor `{name}` holds {} values for shape {shape:?}", tensor.data.len()));
            }
            let mut non_finite = tensor.data.iter().enumerate().filter(|(_, v)| !v.is_finite());
            if let Some((first, _)) = non_finite.next() {
                return bad(format!(
                    "tensor `{name}` contains {} non-finite values (NaN or Inf), first at flat index {first}",
                    1 + non_finite.count()
                ));
            }
        }
        let packed_weights: BTreeSet<String> = self.layers.keys().map(|layer| weight_of(config, layer)).collect();
        for (name, (_, required)) in &expected {
            let packed = packed_weights.contains(name);
            if *required && !packed && !self.dense.contains_key(name) {
                return bad(format!("tensor `{name}` is missing: a complete {} model needs it, dense or packed", config.model_type));
            }
        }
        Ok(())
    }

    /// The file: safetensors bytes laid out as `docs/FORMAT.md` specifies, tables stored as
    /// `table_dtype`. F16 needs tables that f16 holds exactly (build with
    /// `from_quantized(.., TableDtype::F16)` or call [`Self::round_tables_to_f16`]): this never
    /// rounds silently.
    pub fn to_safetensors(&self, table_dtype: TableDtype) -> Result<Vec<u8>> {
        self.validate("packed model")?;
        if table_dtype == TableDtype::F16 {
            for (name, layer) in &self.layers {
                if !holds_f16(layer) {
                    return Err(invalid(format!(
                        "packed layer `{name}`: a table entry or group scale is not exactly an f16; build the model with \
                         TableDtype::F16 (or call round_tables_to_f16) to store f16 tables"
                    )));
                }
            }
        }
        let mut tensors: Vec<(String, Vec<usize>, TensorData<'_>)> = Vec::new();
        for (name, t) in &self.dense {
            tensors.push((name.clone(), t.shape.clone(), DenseDtype::smallest_exact(&t.data).data(&t.data)));
        }
        let mut layer_meta = BTreeMap::new();
        for (name, l) in &self.layers {
            layer_meta.insert(name.clone(), LayerMeta::of(l));
            tensors.extend(layer_tensors(name, l, table_dtype));
        }
        let metadata = file_metadata(&self.config, &self.meta, &layer_meta, self.has_dense_16())?;
        let refs: Vec<(&str, &[usize], TensorData<'_>)> =
            tensors.iter().map(|(name, shape, data)| (name.as_str(), shape.as_slice(), *data)).collect();
        write_tensors(&refs, Some(metadata))
    }

    /// Parses and validates a packed model file (`file` names it in errors). Everything is
    /// checked, as for untrusted input: the format name and version, the config, each packed
    /// layer's tensors (presence, dtype, shape against the metadata `layers`, then
    /// [`PackedLinear::validate`]), dense tensors (F32, or from version 4 F16 or BF16, read as
    /// the f32 values they hold; known names, shapes, finite), and that
    /// the whole forms a complete GPT-2. Unknown tensors are refused by name. Never panics.
    pub fn from_safetensors(file: &str, bytes: &[u8]) -> Result<Self> {
        let parsed = parse_safetensors(file, bytes).map_err(|e| match (&e, mismatched_tensor(bytes)) {
            (LoadError::BadSafetensors { .. }, Some(reason)) => LoadError::BadSafetensors { file: file.to_string(), reason },
            _ => e,
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| LoadError::BadSafetensors { file: file.to_string(), reason: format!("{e:?}") })?;
        Self::from_source(file, &Source::Bytes(parsed), header.metadata().as_ref())
    }

    /// [`Self::from_safetensors`] of a file on disk, read a tensor at a time (a 7B model's packed
    /// file is never in memory twice).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_file(path: &std::path::Path) -> Result<Self> {
        let shown = path.display().to_string();
        let tensors = crate::tensor_file::TensorFile::open(path)?;
        let metadata = Some(tensors.metadata()).filter(|m| !m.is_empty());
        Self::from_source(&shown, &Source::File(&tensors), metadata)
    }

    fn from_source(file: &str, parsed: &Source<'_>, metadata: Option<&HashMap<String, String>>) -> Result<Self> {
        let bad = |reason: String| LoadError::BadConfig { file: file.to_string(), reason };
        let not_ours = format!("not a lutlab packed model file (format `{FORMAT_NAME}`)");
        let Some(meta) = metadata else {
            return Err(bad(format!("the file has no `__metadata__`: {not_ours}")));
        };
        let get = |key: &str| meta.get(key).ok_or_else(|| bad(format!("metadata `{key}` is missing")));
        match meta.get("format") {
            Some(f) if f == FORMAT_NAME => {}
            Some(f) => return Err(bad(format!("metadata `format` is `{f}`: {not_ours}"))),
            None => return Err(bad(format!("metadata `format` is missing: {not_ours}"))),
        }
        let version = get("format_version")?;
        let version = match version.trim().parse::<u32>() {
            Ok(v) if (FORMAT_VERSION_WITHOUT_HEAD..=FORMAT_VERSION).contains(&v) => v,
            Ok(v) => {
                return Err(bad(format!(
                    "format version {v} is not supported: this lutlab reads versions {FORMAT_VERSION_WITHOUT_HEAD} to \
                     {FORMAT_VERSION} of `{FORMAT_NAME}` (a newer lutlab may have written the file)"
                )));
            }
            Err(_) => return Err(bad(format!("metadata `format_version` is `{version}`, not a version number"))),
        };
        let config_text = get("config")?;
        check_config_dims(file, config_text)?;
        let config_file = format!("{file}: metadata `config`");
        let config = ModelConfig::from_json(config_text.as_bytes(), &config_file).map_err(|e| match e {
            // The one config error that does not name its source.
            LoadError::UnsupportedArchitecture { .. } => LoadError::BadConfig { file: config_file.clone(), reason: e.to_string() },
            other => other,
        })?;
        let layer_meta: BTreeMap<String, LayerMeta> = serde_json::from_str(get("layers")?)
            .map_err(|e| bad(format!("metadata `layers` is not a valid layer table: {e}")))?;
        let text = |key: &str| meta.get(key).cloned().unwrap_or_default();
        let meta = PackedMeta { base_model: text("base_model"), method: text("method"), settings: text("settings"), allocation: text("allocation") };

        if config.n_layer > parsed.len() {
            return Err(bad(format!(
                "the config has {} blocks but the file holds only {} tensors",
                config.n_layer,
                parsed.len()
            )));
        }
        let expected: BTreeSet<String> = config.tensor_shapes().into_iter().map(|(name, _, _)| name).collect();
        let linears = linear_names(&config);
        for (name, m) in &layer_meta {
            if !linears.contains(name) {
                return Err(bad(format!("metadata `layers`: {}", not_a_linear(name, &config))));
            }
            if is_head(name) && version < FORMAT_VERSION_HEAD {
                return Err(bad(format!(
                    "metadata `layers` lists `{HEAD}` (a packed LM head), which needs format version {FORMAT_VERSION_HEAD}; the file says {version}"
                )));
            }
            if m.needs_version_3() && version < FORMAT_VERSION_INPUT_GROUPS {
                return Err(bad(format!(
                    "metadata `layers` gives `{name}` a group_size (input-group scales) or incoherence processing, which \
                     needs format version {FORMAT_VERSION_INPUT_GROUPS}; the file says {version}"
                )));
            }
            if m.parts.is_some() && version < FORMAT_VERSION_COLUMN_PARTS {
                return Err(bad(format!(
                    "metadata `layers` gives `{name}` column parts, which need format version {FORMAT_VERSION_COLUMN_PARTS}; the \
                     file says {version}"
                )));
            }
            if (m.vector_dim.is_some() || m.parts().any(|p| p.vector_dim.is_some())) && version < FORMAT_VERSION_VECTORS {
                return Err(bad(format!(
                    "metadata `layers` gives `{name}` a vector_dim (vector tables), which needs format version \
                     {FORMAT_VERSION_VECTORS}; the file says {version}"
                )));
            }
            if let Some((rows, cols)) = packed_shape(&config, name)
                && (rows, cols) != (m.rows, m.cols)
            {
                return Err(bad(format!("metadata `layers`: `{name}` is {}x{}, the config's is {rows}x{cols}", m.rows, m.cols)));
            }
        }

        let mut names = parsed.names();
        names.sort_unstable();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut dense = BTreeMap::new();
        for name in names {
            if let Some((layer, part, _)) = packed_part(name) {
                let Some(m) = layer_meta.get(layer) else {
                    return Err(bad(format!(
                        "tensor `{name}` belongs to packed layer `{layer}`, which metadata `layers` does not list"
                    )));
                };
                let parts = m.parts.as_ref().map(Vec::len);
                if part.is_some() != parts.is_some() || part.zip(parts).is_some_and(|(i, n)| i >= n) {
                    return Err(bad(format!(
                        "tensor `{name}` does not match `{layer}` in metadata `layers` ({})",
                        parts.map_or("a whole layer".to_string(), |n| format!("{n} column parts"))
                    )));
                }
                continue;
            }
            if !expected.contains(name) {
                return Err(bad(unknown_tensor(name)));
            }
            let view = parsed.tensor(name).ok_or_else(|| bad(format!("tensor `{name}` cannot be read")))?;
            let dtype = match DenseDtype::of(view.dtype()) {
                Some(DenseDtype::F32) => DenseDtype::F32,
                Some(half) if version >= FORMAT_VERSION_DENSE_16 => half,
                Some(_) => {
                    return Err(bad(format!(
                        "dense tensor `{name}` has dtype {:?}, which needs format version {FORMAT_VERSION_DENSE_16}; the file \
                         says {version} (dense tensors are F32 before version {FORMAT_VERSION_DENSE_16})",
                        view.dtype()
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "dense tensor `{name}` has dtype {:?}, expected F32, F16 or BF16",
                        view.dtype()
                    )));
                }
            };
            dense.insert(name.to_string(), HostTensor { shape: view.shape().to_vec(), data: dtype.decode(view.data()) });
        }
        let mut layers = BTreeMap::new();
        for (name, m) in &layer_meta {
            layers.insert(name.clone(), read_layer(file, parsed, name, m)?);
        }
        let model = Self { config, meta, dense, layers };
        model.validate(file)?;
        Ok(model)
    }

    /// Each layer's explicit input multiplier (its `input_scale`), which an input quantizer
    /// sees applied (`quant::inputs`).
    pub fn input_multipliers(&self) -> crate::quant::inputs::InputMultipliers {
        self.layers
            .iter()
            .filter_map(|(name, l)| Some((name.clone(), l.incoherence.as_ref()?.input_scale.clone()?)))
            .collect()
    }

    /// The dense model these packed layers stand for: each packed weight becomes
    /// [`PackedLinear::effective_weights`] (`scale_c · (table + sparse)`), and an input shift μ is
    /// folded into the bias. From `y = s ⊙ ((x − μ)·W) + b` and `W' = W·diag(s)`:
    /// `y = x·W' + (b − μ·W')`, so `b'_c = b_c − Σ_r μ_r W'_{r,c}` (summed in f64). For
    /// `lutlab export --dequantized` and the dense comparison.
    pub fn dequantized_weights(&self) -> Result<ModelWeights> {
        self.validate("packed model")?;
        let config = &self.config;
        let mut tensors = self.dense.clone();
        for (name, layer) in &self.layers {
            let w = layer.effective_weights();
            if is_head(name) {
                // The head's weight `[vocab, embed_dim]` is the layer transposed (validation
                // refused an input shift).
                let head = transpose(&w, layer.rows, layer.cols);
                tensors.insert(weight_of(config, name), HostTensor::new(vec![layer.cols, layer.rows], head));
                continue;
            }
            if let Some(shift) = &layer.input_shift {
                let bias_name = format!("{name}.bias");
                let bias = tensors.entry(bias_name).or_insert_with(|| HostTensor::new(vec![layer.cols], vec![0.0; layer.cols]));
                let mut folded = vec![0f64; layer.cols];
                for (r, row) in w.chunks_exact(layer.cols).enumerate() {
                    let mu = f64::from(shift[r]);
                    folded.iter_mut().zip(row).for_each(|(acc, &v)| *acc += mu * f64::from(v));
                }
                bias.data.iter_mut().zip(&folded).for_each(|(b, f)| *b = (f64::from(*b) - f) as f32);
            }
            // Packed codes are `[in, out]`; the checkpoint's layout may be `[out, in]`.
            let weight = match config.linear_layout() {
                LinearLayout::InOut => HostTensor::new(vec![layer.rows, layer.cols], w),
                LinearLayout::OutIn => HostTensor::new(vec![layer.cols, layer.rows], transpose(&w, layer.rows, layer.cols)),
            };
            tensors.insert(format!("{name}.weight"), weight);
        }
        ModelWeights::from_checkpoint(config, Checkpoint::from_tensors(tensors))
    }

    /// The `format_version` this model is written as: the lowest that holds it.
    pub fn format_version(&self) -> u32 {
        version_needed(&self.layers.iter().map(|(name, l)| (name.clone(), LayerMeta::of(l))).collect(), self.has_dense_16())
    }

    /// How the file stores each dense tensor: the smallest dtype that holds it exactly.
    pub fn dense_dtypes(&self) -> BTreeMap<String, DenseDtype> {
        self.dense.iter().map(|(name, t)| (name.clone(), DenseDtype::smallest_exact(&t.data))).collect()
    }

    /// Whether a dense tensor is stored in F16 or BF16 (which makes the file version 4).
    fn has_dense_16(&self) -> bool {
        self.dense.values().any(|t| DenseDtype::smallest_exact(&t.data) != DenseDtype::F32)
    }

    /// Bytes of the dense tensors as the file stores them (data only).
    pub fn dense_bytes(&self) -> usize {
        self.dense.values().map(|t| DenseDtype::smallest_exact(&t.data).bytes() * t.data.len()).sum()
    }

    /// Bytes of the packed layers' tensors as the file stores them (data only, no header):
    /// words, tables (2 bytes an entry when every entry of the layer is exactly an f16, as
    /// `from_quantized(.., TableDtype::F16)` makes them and `to_safetensors(TableDtype::F16)`
    /// requires, else 4), the sparse part when it has entries, scales and shift.
    pub fn packed_bytes(&self) -> usize {
        self.layers.values().map(layer_bytes).sum()
    }

    /// Bytes the packed layers' weights take as a dense f16 matrix (`rows * cols * 2`), to set
    /// beside [`Self::packed_bytes`] as a compression ratio.
    pub fn f16_bytes_of_packed_layers(&self) -> usize {
        self.layers.values().map(|l| l.rows * l.cols * 2).sum()
    }
}

/// Bytes of one packed layer's tensors as the file stores them (see [`PackedModel::packed_bytes`]).
pub fn layer_bytes(l: &PackedLinear) -> usize {
    if l.is_split() {
        return l.column_parts.iter().map(layer_bytes).sum();
    }
    let table_bytes = table_entry_bytes(l);
    let sparse = if l.sparse.is_empty() { 0 } else { 4 * l.sparse.col_ptr.len() + 8 * l.sparse.len() };
    let groups = l.input_groups.as_ref().map_or(0, |g| g.scales.len() + g.zeros.as_ref().map_or(0, Vec::len));
    let incoherence = l.incoherence.as_ref().map_or(0, |t| {
        let rotation = |r: &Option<Rotation>| r.as_ref().map_or(0, |r| r.factor_a.len() + r.factor_b.len() + r.perm.len());
        t.input_scale.as_ref().map_or(0, Vec::len) + rotation(&t.input) + rotation(&t.output)
    });
    4 * l.qweight.len()
        + 4 * incoherence
        + table_bytes * (l.tables.len() + groups)
        + sparse
        + 4 * l.scales.as_ref().map_or(0, Vec::len)
        + 4 * l.input_shift.as_ref().map_or(0, Vec::len)
}

/// Bytes per table entry (and group scale and zero) of a layer: 2 when all are exact f16s, else 4.
pub fn table_entry_bytes(l: &PackedLinear) -> usize {
    if holds_f16(l) { 2 } else { 4 }
}

/// A quantized layer with a LUT form as a packed layer of `rows` x `cols` (`[in, out]`), with the
/// bias its transform stores (seed 000's centering folds into it), if any.
pub fn pack_layer(layer: &QuantizedLayer, rows: usize, cols: usize) -> Result<(PackedLinear, Option<HostTensor>)> {
    let name = &layer.name;
    let mut packed = match (&layer.lut, &layer.vector, &layer.column_parts) {
        (Some(lut), _, _) => PackedLinear::from_lut(lut),
        (None, Some(vector), _) => PackedLinear::from_vector(vector),
        (None, None, Some(split)) => Ok(split.clone()),
        (None, None, None) => return Err(invalid(format!("quantized layer `{name}` has no look-up-table form"))),
    }
    .map_err(|e| invalid(format!("quantized layer `{name}`: {e}")))?;
    if (packed.rows, packed.cols) != (rows, cols) {
        return Err(invalid(format!("quantized layer `{name}` is {}x{}, the model's weight is {rows}x{cols}", packed.rows, packed.cols)));
    }
    let mut bias = None;
    // Seed 000's transforms: scales and shift beside the codes, the bias they come with.
    if let Some(t) = &layer.transform {
        packed.scales.clone_from(&t.scales);
        packed.input_shift.clone_from(&t.input_shift);
        packed.incoherence.clone_from(&t.incoherence);
        // Only centering changes the bias; the head has none (its transform's is zero, and it is
        // never centered).
        if t.input_shift.is_some() && !is_head(name) {
            bias = Some(HostTensor::new(vec![t.bias.len()], t.bias.clone()));
        }
    }
    Ok((packed, bias))
}

/// The bytes quantized `layer` takes in a packed file written with `table_dtype` (its tensors'
/// data, as [`layer_bytes`] counts them), or `None` when it has no look-up-table form.
pub fn stored_layer_bytes(layer: &QuantizedLayer, table_dtype: TableDtype) -> Result<Option<usize>> {
    Ok(stored_layer(layer, table_dtype)?.map(|packed| layer_bytes(&packed)))
}

/// Quantized `layer` packed as a file written with `table_dtype` stores it (tables rounded to f16
/// for [`TableDtype::F16`]), or `None` when it has no look-up-table form.
pub fn stored_layer(layer: &QuantizedLayer, table_dtype: TableDtype) -> Result<Option<PackedLinear>> {
    let Some((rows, cols)) = layer.packed_shape() else { return Ok(None) };
    let (mut packed, _) = pack_layer(layer, rows, cols)?;
    if table_dtype == TableDtype::F16 {
        round_layer_tables_to_f16(&layer.name, &mut packed)?;
    }
    Ok(Some(packed))
}

/// Whether every value the file stores in the table dtype (table entries, group scales and
/// zeros) is exactly an f16.
fn holds_f16(l: &PackedLinear) -> bool {
    if l.is_split() {
        return l.column_parts.iter().all(holds_f16);
    }
    let exact = |values: &[f32]| values.iter().all(|&v| round_f16(v) == v);
    exact(&l.tables)
        && l.input_groups.as_ref().is_none_or(|g| exact(&g.scales) && g.zeros.as_deref().is_none_or(exact))
}

/// Rounds a layer's table entries (and input-group scales and zeros) to the nearest f16 (ties
/// to even), re-taking each sparse value against the rounded value it is added to, so the
/// weights the sparse part keeps stay what they were (to f32 rounding). Fails if a value is
/// beyond f16's range (±65504).
pub fn round_layer_tables_to_f16(name: &str, layer: &mut PackedLinear) -> Result<()> {
    layer.validate(&format!("packed layer `{name}`"))?;
    if layer.is_split() {
        for (i, part) in layer.column_parts.iter_mut().enumerate() {
            round_layer_tables_to_f16(&format!("{name}.part{i}"), part)?;
        }
        return Ok(());
    }
    let round_all = |what: &str, values: &[f32]| -> Result<Vec<f32>> {
        let rounded: Vec<f32> = values.iter().map(|&v| round_f16(v)).collect();
        match rounded.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(invalid(format!("packed layer `{name}`: {what} {i} ({}) is outside f16's range", values[i]))),
            None => Ok(rounded),
        }
    };
    let tables = round_all("table entry", &layer.tables)?;
    let input_groups = match &layer.input_groups {
        Some(g) => Some(InputGroupScales {
            size: g.size,
            scales: round_all("group scale", &g.scales)?,
            zeros: g.zeros.as_deref().map(|z| round_all("group zero", z)).transpose()?,
        }),
        None => None,
    };
    let mut values = layer.sparse.values.clone();
    let s = &layer.sparse;
    for c in 0..layer.cols {
        for i in s.col_ptr[c] as usize..s.col_ptr[c + 1] as usize {
            let r = s.row_idx[i] as usize;
            let weight = layer.dense_value(r, c) + s.values[i];
            values[i] = weight - layer.dense_value_with(&tables, input_groups.as_ref(), r, c);
        }
    }
    layer.tables = tables;
    layer.input_groups = input_groups;
    layer.sparse.values = values;
    Ok(())
}

/// The tensors of packed layer `name` as the file stores them (`docs/FORMAT.md`).
fn layer_tensors<'l>(name: &str, l: &'l PackedLinear, table_dtype: TableDtype) -> Vec<(String, Vec<usize>, TensorData<'l>)> {
    if l.is_split() {
        return l.column_parts.iter().enumerate().flat_map(|(i, part)| layer_tensors(&format!("{name}.part{i}"), part, table_dtype)).collect();
    }
    let mut tensors = Vec::new();
    let words = blocks(l.code_rows()) * l.code_bits() as usize;
    tensors.push((format!("{name}.qweight"), vec![words, l.cols], TensorData::U32(&l.qweight)));
    let tables = match table_dtype {
        TableDtype::F16 => TensorData::F16(&l.tables),
        TableDtype::F32 => TensorData::F32(&l.tables),
    };
    tensors.push((format!("{name}.lut"), lut_shape(l.num_tables(), l.levels(), l.vector_dim), tables));
    if let Some(groups) = &l.input_groups {
        let shape = vec![l.rows.div_ceil(groups.size), l.cols];
        let stored = |values| match table_dtype {
            TableDtype::F16 => TensorData::F16(values),
            TableDtype::F32 => TensorData::F32(values),
        };
        tensors.push((format!("{name}.group_scales"), shape.clone(), stored(&groups.scales)));
        if let Some(zeros) = &groups.zeros {
            tensors.push((format!("{name}.group_zeros"), shape, stored(zeros)));
        }
    }
    if !l.sparse.is_empty() {
        let s = &l.sparse;
        tensors.push((format!("{name}.sparse_col_ptr"), vec![s.col_ptr.len()], TensorData::U32(&s.col_ptr)));
        tensors.push((format!("{name}.sparse_row_idx"), vec![s.row_idx.len()], TensorData::U32(&s.row_idx)));
        tensors.push((format!("{name}.sparse_values"), vec![s.values.len()], TensorData::F32(&s.values)));
    }
    if let Some(scales) = &l.scales {
        tensors.push((format!("{name}.scales"), vec![scales.len()], TensorData::F32(scales)));
    }
    if let Some(shift) = &l.input_shift {
        tensors.push((format!("{name}.input_shift"), vec![shift.len()], TensorData::F32(shift)));
    }
    if let Some(incoherence) = &l.incoherence {
        if let Some(scale) = &incoherence.input_scale {
            tensors.push((format!("{name}.input_scale"), vec![scale.len()], TensorData::F32(scale)));
        }
        for (side, rotation) in [("in", &incoherence.input), ("out", &incoherence.output)] {
            if let Some(r) = rotation {
                tensors.push((format!("{name}.rotation_{side}_a"), vec![r.a, r.a], TensorData::F32(&r.factor_a)));
                tensors.push((format!("{name}.rotation_{side}_b"), vec![r.b, r.b], TensorData::F32(&r.factor_b)));
                tensors.push((format!("{name}.rotation_{side}_perm"), vec![r.perm.len()], TensorData::U32(&r.perm)));
            }
        }
    }
    tensors
}

/// The file's `__metadata__`; the version follows from the layers and whether a dense tensor
/// is F16 or BF16 (`dense_16`).
fn file_metadata(
    config: &ModelConfig,
    meta: &PackedMeta,
    layers: &BTreeMap<String, LayerMeta>,
    dense_16: bool,
) -> Result<HashMap<String, String>> {
    let layers_json = serde_json::to_string(layers).map_err(|e| invalid(format!("layers metadata: {e}")))?;
    let version = version_needed(layers, dense_16);
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), version.to_string()),
        ("config".to_string(), config_json(config)?),
        ("layers".to_string(), layers_json),
        ("base_model".to_string(), meta.base_model.clone()),
        ("method".to_string(), meta.method.clone()),
        ("settings".to_string(), meta.settings.clone()),
    ]);
    // Only mixed-precision files carry it, so other files stay as they were byte for byte.
    if !meta.allocation.is_empty() {
        metadata.insert("allocation".to_string(), meta.allocation.clone());
    }
    Ok(metadata)
}

/// Writes a packed model file a layer at a time (a streamed model's quantization): dense
/// tensors and packed layers as they are made, the metadata when it ends. Each layer is checked
/// as [`PackedModel::to_safetensors`] checks it; completeness is checked when the file is read.
#[cfg(not(target_arch = "wasm32"))]
pub struct PackedWriter {
    writer: crate::tensor_file::TensorWriter,
    layers: BTreeMap<String, LayerMeta>,
    table_dtype: TableDtype,
    /// Whether a dense tensor went in as F16 or BF16 (the file is then version 4).
    dense_16: bool,
    /// Bytes of the dense tensors' data so far.
    dense_bytes: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl PackedWriter {
    pub fn create(path: &std::path::Path, config: &ModelConfig, table_dtype: TableDtype) -> Result<Self> {
        // Room for every tensor of the model and up to 7 per packed layer, and the metadata
        // (config, a line per layer, the settings).
        let shapes = config.tensor_shapes();
        let linears = config.linear_names();
        let tensors = shapes.len() + PACKED_SUFFIXES.len() * linears.len();
        let name_bytes = shapes.iter().map(|(n, _, _)| n.len()).sum::<usize>() + linears.iter().map(|(n, _)| 7 * (n.len() + 16)).sum::<usize>();
        let metadata = config.to_json().len() + 120 * linears.len() + 8192;
        let reserve = crate::tensor_file::header_bytes_estimate(tensors, name_bytes, metadata);
        Ok(Self { writer: crate::tensor_file::TensorWriter::create(path, reserve)?, layers: BTreeMap::new(), table_dtype, dense_16: false, dense_bytes: 0 })
    }

    /// Adds a dense tensor, in the smallest dtype that holds it exactly.
    pub fn add_dense(&mut self, name: &str, tensor: &HostTensor) -> Result<()> {
        crate::checkpoint::check_finite(name, &tensor.data)?;
        let dtype = DenseDtype::smallest_exact(&tensor.data);
        self.dense_16 |= dtype != DenseDtype::F32;
        self.dense_bytes += dtype.bytes() * tensor.data.len();
        self.writer.add(name, &tensor.shape, dtype.data(&tensor.data))
    }

    /// Bytes of the dense tensors' data written so far (for the size report).
    pub fn dense_bytes(&self) -> usize {
        self.dense_bytes
    }

    /// Adds packed layer `name`; with f16 tables they must be exact f16s (see
    /// [`round_layer_tables_to_f16`]).
    pub fn add_layer(&mut self, name: &str, layer: &PackedLinear) -> Result<()> {
        layer.validate(&format!("packed layer `{name}`"))?;
        if self.table_dtype == TableDtype::F16 && !holds_f16(layer) {
            return Err(invalid(format!("packed layer `{name}`: tables or group scales are not exact f16s")));
        }
        for (tensor, shape, data) in layer_tensors(name, layer, self.table_dtype) {
            self.writer.add(&tensor, &shape, data)?;
        }
        self.layers.insert(name.to_string(), LayerMeta::of(layer));
        Ok(())
    }

    pub fn finish(self, config: &ModelConfig, meta: &PackedMeta) -> Result<()> {
        let metadata = file_metadata(config, meta, &self.layers, self.dense_16)?;
        self.writer.finish(metadata)
    }
}

/// The config as Hugging Face `config.json` text, as the packed file's `config` metadata stores it.
pub fn config_json(config: &ModelConfig) -> Result<String> {
    Ok(config.to_json())
}

fn invalid(reason: String) -> LoadError {
    LoadError::InvalidSetting(reason)
}

fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

fn unknown_tensor(name: &str) -> String {
    format!("tensor `{name}` is neither a tensor of the model nor a packed-layer tensor (unknown name)")
}

fn not_a_linear(name: &str, config: &ModelConfig) -> String {
    let specs: Vec<&str> = config.block_linears().iter().map(|s| s.name).collect();
    format!(
        "`{name}` is not a linear layer of this {} model ({} to {} × {}, or {HEAD})",
        config.model_type,
        config.block_prefix(0),
        config.block_prefix(config.n_layer.saturating_sub(1)),
        specs.join(", ")
    )
}

/// The dense weight a packed layer stands for: `{layer}.weight`, or the head's weight.
fn weight_of(config: &ModelConfig, layer: &str) -> String {
    if is_head(layer) { config.head_weight_name() } else { format!("{layer}.weight") }
}

/// `(rows, cols)` of packed layer `name` in `config`: its `[in, out]` shape; the head's is
/// `[embed_dim, vocab]`. `None` for a name that is no linear layer.
fn packed_shape(config: &ModelConfig, name: &str) -> Option<(usize, usize)> {
    if is_head(name) {
        return Some((config.embed_dim, config.vocab_size));
    }
    config.linear_names().into_iter().find(|(n, _)| n == name).map(|(_, s)| (s.n_in, s.n_out))
}

/// The layers a file may pack: the blocks' linears and the head.
fn linear_names(config: &ModelConfig) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = config.linear_names().into_iter().map(|(name, _)| name).collect();
    names.insert(HEAD.to_string());
    names
}

/// `h.0.attn.c_attn.qweight` → `("h.0.attn.c_attn", "qweight")`; `None` for other names.
fn packed_part(name: &str) -> Option<(&str, Option<usize>, &str)> {
    let (layer, suffix) = name.rsplit_once('.').filter(|(_, suffix)| PACKED_SUFFIXES.contains(suffix))?;
    // A column part's tensors (`{layer}.part{i}.{suffix}`, version 6) belong to their layer.
    let part = layer.rsplit_once('.').and_then(|(whole, part)| {
        let i = part.strip_prefix("part").filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))?;
        Some((whole, i.parse().ok()?))
    });
    Some(match part {
        Some((whole, i)) => (whole, Some(i), suffix),
        None => (layer, None, suffix),
    })
}

/// Refuses absurd dimensions before `ModelConfig::from_json` multiplies them.
fn check_config_dims(file: &str, text: &str) -> Result<()> {
    let Ok(serde_json::Value::Object(json)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Ok(()); // from_json reports it
    };
    for key in [
        "n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "n_inner", "hidden_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "ffn_dim", "intermediate_size",
        "max_position_embeddings", "word_embed_proj_dim",
    ] {
        if let Some(v) = json.get(key).and_then(serde_json::Value::as_u64)
            && v > MAX_CONFIG_DIM
        {
            return Err(LoadError::BadConfig {
                file: format!("{file}: metadata `config`"),
                reason: format!("`{key}` is {v}, beyond the {MAX_CONFIG_DIM} lutlab accepts"),
            });
        }
    }
    Ok(())
}

/// The first tensor whose declared dtype and shape do not match its byte range, named (the
/// safetensors crate reports the mismatch without the name); `None` when there is none or the
/// header does not parse.
fn mismatched_tensor(bytes: &[u8]) -> Option<String> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(len)?)?).ok()?;
    for (name, info) in header.as_object()?.iter().filter(|(name, _)| *name != "__metadata__") {
        let dtype = info.get("dtype")?.as_str()?;
        let size: u128 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
            "U16" | "I16" | "F16" | "BF16" => 2,
            "U32" | "I32" | "F32" => 4,
            "U64" | "I64" | "F64" => 8,
            _ => continue,
        };
        let numel = info.get("shape")?.as_array()?.iter().try_fold(1u128, |n, d| d.as_u64().map(|d| n * u128::from(d)))?;
        let offsets = info.get("data_offsets")?.as_array()?;
        let (start, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
        let range = u128::from(end.saturating_sub(start));
        if numel * size != range {
            let shape = info.get("shape")?;
            return Some(format!(
                "tensor `{name}` is declared {dtype} {shape}, which is {} bytes, but its data holds {range} bytes (a wrong dtype or \
                 shape in the header, or a corrupt file)",
                numel * size
            ));
        }
    }
    None
}

/// Where a packed file's tensors are read from: bytes in memory, or a file on disk.
enum Source<'a> {
    Bytes(SafeTensors<'a>),
    #[cfg(not(target_arch = "wasm32"))]
    File(&'a crate::tensor_file::TensorFile),
}

/// One tensor of a [`Source`].
struct View<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: std::borrow::Cow<'a, [u8]>,
}

impl View<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> &[u8] {
        &self.data
    }
}

impl<'a> Source<'a> {
    fn names(&self) -> Vec<String> {
        match self {
            Source::Bytes(parsed) => parsed.names().into_iter().map(str::to_string).collect(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::File(file) => file.entries().iter().map(|e| e.name.clone()).collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Source::Bytes(parsed) => parsed.len(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::File(file) => file.entries().len(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Source::Bytes(parsed) => parsed.tensor(name).is_ok(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::File(file) => file.entries().iter().any(|e| e.name == name),
        }
    }

    /// The tensor, or `None` if absent (or, from disk, unreadable).
    fn tensor(&self, name: &str) -> Option<View<'a>> {
        match self {
            Source::Bytes(parsed) => parsed.tensor(name).ok().map(|v: TensorView<'a>| View {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: std::borrow::Cow::Borrowed(v.data()),
            }),
            #[cfg(not(target_arch = "wasm32"))]
            Source::File(file) => {
                let e = file.entries().iter().find(|e| e.name == name)?;
                let data = file.read_range(e.range.clone()).ok()?;
                Some(View { dtype: e.dtype, shape: e.shape.clone(), data: std::borrow::Cow::Owned(data) })
            }
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn f16s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// The shape of a `lut` tensor: `[tables, levels]`, or `[tables, levels, dim]` for vector tables.
fn lut_shape(tables: usize, levels: usize, vector_dim: usize) -> Vec<usize> {
    if vector_dim > 1 { vec![tables, levels, vector_dim] } else { vec![tables, levels] }
}

/// Reads packed layer `name`'s tensors, checking each one's dtype and shape against the
/// metadata entry `m` before reading it. The layer's values are checked by the caller.
fn read_layer(file: &str, parsed: &Source<'_>, name: &str, m: &LayerMeta) -> Result<PackedLinear> {
    let bad = |reason: String| LoadError::BadConfig { file: file.to_string(), reason };
    let entry = || format!("the metadata `layers` entry of `{name}` ({})", m.describe());
    if let Some(parts) = &m.parts {
        if parts.is_empty() || parts.iter().any(|p| p.parts.is_some()) {
            return Err(bad(format!("{}: column parts must be a non-empty list of whole layers", entry())));
        }
        if let Some(suffix) = PACKED_SUFFIXES.iter().find(|s| parsed.contains(&format!("{name}.{s}"))) {
            return Err(bad(format!("tensor `{name}.{suffix}` is present but {} stores its weights in column parts", entry())));
        }
        let parts = parts.iter().enumerate().map(|(i, p)| read_layer(file, parsed, &format!("{name}.part{i}"), p)).collect::<Result<Vec<_>>>()?;
        if parts.iter().any(|p| p.rows != m.rows) || parts.iter().map(|p| p.cols).sum::<usize>() != m.cols {
            return Err(bad(format!("{}: its column parts do not make a {}x{} layer", entry(), m.rows, m.cols)));
        }
        return PackedLinear::from_parts(parts).map_err(|e| bad(format!("{}: {e}", entry())));
    }
    if m.rows == 0 || m.cols == 0 {
        return Err(bad(format!("{} has an empty shape", entry())));
    }
    if !(1..=8).contains(&m.bits) {
        return Err(bad(format!("{} has {} bits; lutlab supports 1 to 8", entry(), m.bits)));
    }
    if m.channels_per_table == 0 || !m.cols.is_multiple_of(m.channels_per_table) {
        return Err(bad(format!("{}: channels_per_table must divide cols", entry())));
    }
    if m.vector_dim == Some(1) {
        return Err(bad(format!("{}: vector_dim 1 is written as no vector_dim", entry())));
    }
    let vector_dim = m.vector_dim.unwrap_or(1);
    if let Some(reason) = crate::quant::packed::vector_layout_problem(vector_dim, m.bits, m.rows) {
        return Err(bad(format!("{}: {reason}", entry())));
    }
    let code_bits = m.bits as usize * vector_dim;
    let words = blocks(m.rows / vector_dim)
        .checked_mul(code_bits)
        .ok_or_else(|| bad(format!("{} is too large", entry())))?;
    let levels = 1usize << code_bits;
    let num_tables = m.cols / m.channels_per_table;

    // A tensor of the layer, checked: `None` when absent and optional.
    let get = |suffix: &str, dtypes: &[Dtype], shape: Option<&[usize]>, required: bool| -> Result<Option<View<'_>>> {
        let tensor_name = format!("{name}.{suffix}");
        let Some(view) = parsed.tensor(&tensor_name) else {
            return if required {
                Err(bad(format!("tensor `{tensor_name}` is missing: metadata `layers` lists `{name}` as packed")))
            } else {
                Ok(None)
            };
        };
        if !dtypes.contains(&view.dtype()) {
            let names: Vec<String> = dtypes.iter().map(|d| format!("{d:?}")).collect();
            return Err(bad(format!(
                "tensor `{tensor_name}` has dtype {:?}, expected {}",
                view.dtype(),
                names.join(" or ")
            )));
        }
        if let Some(shape) = shape
            && view.shape() != shape
        {
            return Err(bad(format!(
                "tensor `{tensor_name}` has shape {:?}, expected {shape:?} for {}",
                view.shape(),
                entry()
            )));
        }
        Ok(Some(view))
    };

    let qweight = get("qweight", &[Dtype::U32], Some(&[words, m.cols]), true)?.map_or_else(Vec::new, |v| u32s(v.data()));
    let tables = match get("lut", &[Dtype::F16, Dtype::F32], Some(&lut_shape(num_tables, levels, vector_dim)), true)? {
        Some(v) if v.dtype() == Dtype::F16 => f16s(v.data()),
        Some(v) => f32s(v.data()),
        None => Vec::new(),
    };
    // The sparse part: all three tensors or none (none: no outliers).
    let parts = ["sparse_col_ptr", "sparse_row_idx", "sparse_values"];
    let present: Vec<bool> = parts.iter().map(|p| parsed.contains(&format!("{name}.{p}"))).collect();
    let sparse = if present.iter().all(|&p| !p) {
        // `cols` is bounded by the file now: `qweight` holds at least `cols` words.
        SparseColumns { col_ptr: vec![0; m.cols + 1], row_idx: Vec::new(), values: Vec::new() }
    } else {
        if let Some(i) = present.iter().position(|&p| !p) {
            return Err(bad(format!(
                "tensor `{name}.{}` is missing: the sparse part needs sparse_col_ptr, sparse_row_idx and sparse_values together",
                parts[i]
            )));
        }
        let col_ptr = get("sparse_col_ptr", &[Dtype::U32], Some(&[m.cols + 1]), true)?;
        let row_idx = get("sparse_row_idx", &[Dtype::U32], None, true)?;
        let nnz = match row_idx.as_ref().map(|v| v.shape()) {
            Some(&[n]) => n,
            other => {
                return Err(bad(format!("tensor `{name}.sparse_row_idx` has shape {:?}, expected [nnz]", other.unwrap_or(&[]))));
            }
        };
        let values = get("sparse_values", &[Dtype::F32], Some(&[nnz]), true)?;
        SparseColumns {
            col_ptr: col_ptr.map_or_else(Vec::new, |v| u32s(v.data())),
            row_idx: row_idx.map_or_else(Vec::new, |v| u32s(v.data())),
            values: values.map_or_else(Vec::new, |v| f32s(v.data())),
        }
    };
    let input_groups = match m.group_size {
        Some(size) => {
            if size == 0 || !size.is_multiple_of(INPUT_GROUP_MULTIPLE) {
                return Err(bad(format!("{}: group_size must be a positive multiple of {INPUT_GROUP_MULTIPLE}", entry())));
            }
            let shape = [m.rows.div_ceil(size), m.cols];
            let floats = |v: View<'_>| if v.dtype() == Dtype::F16 { f16s(v.data()) } else { f32s(v.data()) };
            let scales = get("group_scales", &[Dtype::F16, Dtype::F32], Some(&shape), true)?.map_or_else(Vec::new, floats);
            let zeros = get("group_zeros", &[Dtype::F16, Dtype::F32], Some(&shape), false)?.map(floats);
            Some(InputGroupScales { size, scales, zeros })
        }
        None => {
            if let Some(part) = ["group_scales", "group_zeros"].into_iter().find(|p| parsed.contains(&format!("{name}.{p}"))) {
                return Err(bad(format!("tensor `{name}.{part}` is present but {} has no group_size", entry())));
            }
            None
        }
    };
    let incoherence = if m.incoherence {
        // One side's rotation: its two square factors (sizes from their shapes) and permutation.
        let rotation = |side: &str, n: usize| -> Result<Option<Rotation>> {
            let factor = |which: &str| -> Result<Option<(usize, Vec<f32>)>> {
                let Some(v) = get(&format!("rotation_{side}_{which}"), &[Dtype::F32], None, false)? else { return Ok(None) };
                match *v.shape() {
                    [k, l] if k == l && k >= 1 && k <= n => Ok(Some((k, f32s(v.data())))),
                    _ => Err(bad(format!("tensor `{name}.rotation_{side}_{which}` has shape {:?}: a rotation factor is square, at most {n} wide", v.shape()))),
                }
            };
            let perm = get(&format!("rotation_{side}_perm"), &[Dtype::U32], Some(&[n]), false)?.map(|v| u32s(v.data()));
            match (factor("a")?, factor("b")?, perm) {
                (Some((a, factor_a)), Some((b, factor_b)), Some(perm)) => Ok(Some(Rotation { a, b, factor_a, factor_b, perm })),
                (None, None, None) => Ok(None),
                _ => Err(bad(format!("{}: the {side}put rotation needs rotation_{side}_a, rotation_{side}_b and rotation_{side}_perm together", entry()))),
            }
        };
        let input_scale = get("input_scale", &[Dtype::F32], Some(&[m.rows]), false)?.map(|v| f32s(v.data()));
        Some(Incoherence { input_scale, input: rotation("in", m.rows)?, output: rotation("out", m.cols)? })
    } else {
        if let Some(part) = INCOHERENCE_SUFFIXES.into_iter().find(|p| parsed.contains(&format!("{name}.{p}"))) {
            return Err(bad(format!("tensor `{name}.{part}` is present but {} has no incoherence", entry())));
        }
        None
    };
    let scales = get("scales", &[Dtype::F32], Some(&[m.cols]), false)?.map(|v| f32s(v.data()));
    let input_shift = get("input_shift", &[Dtype::F32], Some(&[m.rows]), false)?.map(|v| f32s(v.data()));
    Ok(PackedLinear {
        rows: m.rows,
        cols: m.cols,
        bits: m.bits,
        vector_dim,
        channels_per_table: m.channels_per_table,
        qweight,
        tables,
        input_groups,
        sparse,
        scales,
        input_shift,
        incoherence,
        column_parts: Vec::new(),
    })
}
