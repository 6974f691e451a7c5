//! Reading safetensors checkpoints (one file or shards) into f32 host tensors, with every
//! structural problem reported by name instead of a panic.

use std::borrow::Cow;
use crate::error::{LoadError, Result};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::BTreeMap;

/// A dense f32 tensor in host memory, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Where one tensor's values are: converted already (`from_tensors`), in file bytes the caller
/// holds (`from_safetensors`: the page, tests), or in a file on disk (`open`: read when taken,
/// so a 7B checkpoint never sits in host memory).
#[derive(Debug)]
enum Stored<'a> {
    Host(HostTensor),
    Bytes { dtype: Dtype, shape: Vec<usize>, bytes: &'a [u8] },
    #[cfg(not(target_arch = "wasm32"))]
    File { dtype: Dtype, shape: Vec<usize>, file: std::sync::Arc<crate::tensor_file::TensorFile>, range: std::ops::Range<u64> },
}

/// The tensors of one checkpoint, keyed by name with the `transformer.` prefix removed
/// (HF writes GPT-2 both with and without it). Tensors keep their stored dtype (F32, F16, BF16)
/// until they are read, one at a time.
#[derive(Debug, Default)]
pub struct Checkpoint<'a> {
    tensors: BTreeMap<String, Stored<'a>>,
}

/// The part of a name that lutlab ignores: `transformer.h.0.ln_1.weight` → `h.0.ln_1.weight`.
pub fn canonical_name(name: &str) -> &str {
    name.strip_prefix("transformer.").unwrap_or(name)
}

impl<'a> Checkpoint<'a> {
    /// Indexes one or more safetensors files held in memory (`(file name, bytes)`).
    pub fn from_safetensors(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self> {
        let mut checkpoint = Self::default();
        // Which file each tensor came from, so a tensor stored twice names both.
        let mut source: BTreeMap<String, String> = BTreeMap::new();
        for (file, bytes) in files {
            let parsed = parse_safetensors(file, bytes)?;
            for (name, view) in parsed.tensors() {
                let canonical = note_source(&mut source, &name, file)?;
                check_float(&canonical, view.dtype())?;
                let stored = Stored::Bytes { dtype: view.dtype(), shape: view.shape().to_vec(), bytes: view.data() };
                checkpoint.tensors.insert(canonical, stored);
            }
        }
        Ok(checkpoint)
    }

    /// A checkpoint of tensors already in memory, names canonicalised as when reading a file.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, HostTensor)>) -> Self {
        let tensors = tensors.into_iter().map(|(name, t)| (canonical_name(&name).to_string(), Stored::Host(t))).collect();
        Self { tensors }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| match t {
            Stored::Host(t) => t.shape.as_slice(),
            Stored::Bytes { shape, .. } => shape.as_slice(),
            #[cfg(not(target_arch = "wasm32"))]
            Stored::File { shape, .. } => shape.as_slice(),
        })
    }

    /// Reads `name` as f32, checking its shape and that every value is finite; the checkpoint
    /// keeps it (streamed models read a block's tensors each time the block is used).
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        self.check_shape(name, expected)?;
        let tensor = self.read_any(name)?;
        check_finite(name, &tensor.data)?;
        Ok(tensor)
    }

    /// Reads `name` as f32 whatever its shape, without the finiteness check.
    pub fn read_any(&self, name: &str) -> Result<HostTensor> {
        let missing = || LoadError::MissingTensor { name: name.to_string() };
        Ok(match self.tensors.get(name).ok_or_else(missing)? {
            Stored::Host(t) => t.clone(),
            Stored::Bytes { dtype, shape, bytes } => HostTensor::new(shape.clone(), to_f32(name, *dtype, bytes)?),
            #[cfg(not(target_arch = "wasm32"))]
            Stored::File { dtype, shape, file, range } => {
                let bytes = file.read_range(range.clone())?;
                HostTensor::new(shape.clone(), to_f32(name, *dtype, &bytes)?)
            }
        })
    }

    /// `name` as stored (F32, F16 or BF16 bytes, little-endian), checking its shape and that
    /// every value is finite from the bits alone, for a GPU that widens it itself: half the bytes
    /// of f32 to move for a half-precision checkpoint, and no f32 copy on the host. A tensor on
    /// disk is read into the front of `scratch`, which is handed back without that front (a
    /// streamed model reuses one buffer for every block: a fresh 400 MB buffer a block cost more
    /// in page faults than the copy itself); `scratch` must be at least [`Self::file_bytes`] long.
    pub fn read_stored<'s>(&'s self, name: &str, expected: &[usize], scratch: &'s mut [u8]) -> Result<(StoredTensor<'s>, &'s mut [u8])> {
        self.check_shape(name, expected)?;
        let missing = || LoadError::MissingTensor { name: name.to_string() };
        let (dtype, bytes, rest) = match self.tensors.get(name).ok_or_else(missing)? {
            Stored::Host(t) => (StoredDtype::F32, Cow::Owned(TensorData::F32(&t.data).to_le_bytes()), scratch),
            Stored::Bytes { dtype, bytes, .. } => (StoredDtype::of(name, *dtype)?, Cow::Borrowed(*bytes), scratch),
            #[cfg(not(target_arch = "wasm32"))]
            Stored::File { dtype, file, range, .. } => {
                let len = (range.end - range.start) as usize;
                if scratch.len() < len {
                    return Err(LoadError::InvalidSetting(format!("reading `{name}`: a {len}-byte tensor into {} bytes of buffer", scratch.len())));
                }
                let (front, rest) = scratch.split_at_mut(len);
                file.read_into(range.start, front)?;
                (StoredDtype::of(name, *dtype)?, Cow::Borrowed(&*front), rest)
            }
        };
        let tensor = StoredTensor { dtype, shape: expected.to_vec(), bytes };
        tensor.check_finite(name)?;
        Ok((tensor, rest))
    }

    /// The bytes `name` takes on disk (0 for a tensor already in memory): what
    /// [`Self::read_stored`] needs of its buffer.
    pub fn file_bytes(&self, name: &str) -> usize {
        match self.tensors.get(name) {
            #[cfg(not(target_arch = "wasm32"))]
            Some(Stored::File { range, .. }) => (range.end - range.start) as usize,
            _ => 0,
        }
    }

    /// That `name` is there with shape `expected`.
    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        match self.shape(name) {
            None => Err(LoadError::MissingTensor { name: name.to_string() }),
            Some(found) if found != expected => Err(LoadError::WrongShape { name: name.to_string(), expected: expected.to_vec(), found: found.to_vec() }),
            Some(_) => Ok(()),
        }
    }

    /// `name` as f32 if it is there and readable (fixtures and tests; model loading uses
    /// [`Self::read`], which says what is wrong).
    pub fn get(&self, name: &str) -> Option<HostTensor> {
        self.read_any(name).ok()
    }

    /// Removes and returns `name`, checking its shape and that every value is finite.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let tensor = self.read(name, expected)?;
        self.tensors.remove(name);
        Ok(tensor)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Checkpoint<'static> {
    /// Indexes safetensors files on disk by their headers alone; each tensor is read from its
    /// file when it is taken. This is how the CLI holds a model larger than host memory.
    pub fn open(paths: &[std::path::PathBuf]) -> Result<Self> {
        let mut checkpoint = Self::default();
        let mut source: BTreeMap<String, String> = BTreeMap::new();
        for path in paths {
            let file = std::sync::Arc::new(crate::tensor_file::TensorFile::open(path)?);
            let shown = path.display().to_string();
            for entry in file.entries() {
                let canonical = note_source(&mut source, &entry.name, &shown)?;
                check_float(&canonical, entry.dtype)?;
                let stored = Stored::File { dtype: entry.dtype, shape: entry.shape.clone(), file: file.clone(), range: entry.range.clone() };
                checkpoint.tensors.insert(canonical, stored);
            }
        }
        Ok(checkpoint)
    }
}

/// The element types a checkpoint's floats may be stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
}

impl StoredDtype {
    fn of(name: &str, dtype: Dtype) -> Result<Self> {
        match dtype {
            Dtype::F32 => Ok(Self::F32),
            Dtype::F16 => Ok(Self::F16),
            Dtype::BF16 => Ok(Self::BF16),
            other => Err(LoadError::WrongDtype { name: name.to_string(), found: format!("{other:?}") }),
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// One tensor's bytes as the checkpoint stores them ([`Checkpoint::read_stored`]).
#[derive(Clone, Debug)]
pub struct StoredTensor<'a> {
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl StoredTensor<'_> {
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.bytes()
    }

    /// The values widened to f32 on the host (the CPU reference of a GPU widening).
    pub fn to_f32(&self) -> Vec<f32> {
        let dtype = match self.dtype {
            StoredDtype::F32 => Dtype::F32,
            StoredDtype::F16 => Dtype::F16,
            StoredDtype::BF16 => Dtype::BF16,
        };
        // The dtype is a float one, which `to_f32` always converts.
        to_f32("", dtype, &self.bytes).unwrap_or_default()
    }

    /// As [`check_finite`], from the bits: an all-ones exponent is an infinity or a NaN.
    fn check_finite(&self, name: &str) -> Result<()> {
        let size = self.dtype.bytes();
        let exponent = match self.dtype {
            StoredDtype::F32 => 0x7f80_0000,
            StoredDtype::F16 => 0x7c00,
            StoredDtype::BF16 => 0x7f80,
        };
        let infinite = |b: &[u8]| word_bits(b) & exponent == exponent;
        // First a scan without branches, which vectorizes (a 7B block's 200M values: a
        // per-value search took as long as reading them); the position only on failure.
        if !self.bytes.chunks(1 << 16).any(|chunk| chunk.chunks_exact(size).fold(false, |bad, b| bad | infinite(b))) {
            return Ok(());
        }
        let mut bad = self.bytes.chunks_exact(size).enumerate().filter(|(_, b)| infinite(b));
        if let Some((first, _)) = bad.next() {
            return Err(LoadError::NonFinite { name: name.to_string(), count: 1 + bad.count(), first });
        }
        Ok(())
    }
}

/// A stored value's bits from its 4 or 2 little-endian bytes.
fn word_bits(b: &[u8]) -> u32 {
    match *b {
        [b0, b1, b2, b3] => u32::from_le_bytes([b0, b1, b2, b3]),
        [b0, b1] => u32::from(u16::from_le_bytes([b0, b1])),
        // Callers pass `chunks_exact` of the dtype's size: no other length reaches here.
        _ => 0,
    }
}

/// Checkpoints hold F32, F16 or BF16 tensors; anything else is refused when the file is indexed,
/// as it was when every tensor was converted on load.
fn check_float(name: &str, dtype: Dtype) -> Result<()> {
    match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        other => Err(LoadError::WrongDtype { name: name.to_string(), found: format!("{other:?}") }),
    }
}

/// Records that `name` comes from `file`; a tensor stored twice is an error naming both files.
fn note_source(source: &mut BTreeMap<String, String>, name: &str, file: &str) -> Result<String> {
    let canonical = canonical_name(name).to_string();
    if let Some(first) = source.insert(canonical.clone(), file.to_string()) {
        return Err(LoadError::BadSafetensors {
            file: file.to_string(),
            reason: format!("tensor `{canonical}` is stored again (first in {first}): shards must not repeat a tensor"),
        });
    }
    Ok(canonical)
}

/// Fails with the count and first position of NaN/Inf values.
pub fn check_finite(name: &str, data: &[f32]) -> Result<()> {
    // A branch-free scan first (it vectorizes); the position only when there is one.
    if !data.chunks(1 << 14).any(|chunk| chunk.iter().fold(false, |bad, v| bad | !v.is_finite())) {
        return Ok(());
    }
    let mut bad = data.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((first, _)) = bad.next() {
        return Err(LoadError::NonFinite { name: name.to_string(), count: 1 + bad.count(), first });
    }
    Ok(())
}

/// Checks the 8-byte header length against the file before handing it to the `safetensors`
/// crate, so the two commonest corruptions (truncation, a lying header) get a precise message.
pub fn parse_safetensors<'a>(file: &str, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    let bad = |reason: String| LoadError::BadSafetensors { file: file.to_string(), reason };
    if bytes.len() < 8 {
        return Err(bad(format!("the file is {} bytes, too short to hold the 8-byte header length", bytes.len())));
    }
    let header_len = u64::from_le_bytes(std::array::from_fn(|i| bytes[i]));
    let available = (bytes.len() - 8) as u64;
    if header_len > available {
        return Err(bad(header_length_problem(header_len, available, &bytes[..bytes.len().min(24)])));
    }
    SafeTensors::deserialize(bytes).map_err(|e| bad(describe(e)))
}

/// Why a header length of `header_len` with only `available` bytes after it is wrong, from the
/// file's first bytes `start`: a safetensors file is an 8-byte length and then a JSON header
/// (`{`), so a file that does not look like that is named as not safetensors at all (a text or
/// pickle file saved under the name), and only one that does as truncated or corrupt.
pub(crate) fn header_length_problem(header_len: u64, available: u64, start: &[u8]) -> String {
    if start.get(8) == Some(&b'{') {
        return format!("the header says it is {header_len} bytes but only {available} bytes follow (truncated or corrupt file)");
    }
    let shown: String = start.iter().take(16).map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    format!(
        "this is not a safetensors file: one starts with an 8-byte header length and a JSON header (`{{`), this one with `{shown}` \
         (a text, HTML or PyTorch pickle file under a .safetensors name?)"
    )
}

pub(crate) fn describe(error: SafeTensorError) -> String {
    match error {
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}` has data offsets outside the data section (truncated or corrupt file)")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors' offsets do not cover the data section exactly (truncated file or extra bytes)".into()
        }
        SafeTensorError::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte range".into(),
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("the JSON header is invalid: {e}"),
        SafeTensorError::InvalidHeader(e) => format!("the header is not UTF-8: {e}"),
        SafeTensorError::HeaderTooLarge => "the header is larger than 100 MB".into(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(LoadError::WrongDtype { name: name.to_string(), found: format!("{other:?}") }),
    };
    let mut out = vec![0f32; bytes.len() / size];
    crate::parallel::for_row_chunks(&mut out, 4096, |first, chunk| {
        let words = bytes[first * 4096 * size..].chunks_exact(size);
        for (v, b) in chunk.iter_mut().zip(words) {
            *v = match dtype {
                Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            };
        }
    });
    Ok(out)
}

/// Reads integer tensors (fixtures, token ids) as i64.
pub fn read_i64(tensors: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
    let view = tensors.tensor(name).map_err(|_| LoadError::MissingTensor { name: name.to_string() })?;
    let data = match view.dtype() {
        Dtype::I64 => view.data().chunks_exact(8).map(|b| i64::from_le_bytes(std::array::from_fn(|i| b[i]))).collect(),
        Dtype::I32 => view.data().chunks_exact(4).map(|b| i64::from(i32::from_le_bytes(std::array::from_fn(|i| b[i])))).collect(),
        other => return Err(LoadError::WrongDtype { name: name.to_string(), found: format!("{other:?}") }),
    };
    Ok((view.shape().to_vec(), data))
}

/// Reads a float tensor (any of F32/F16/BF16) as f32.
pub fn read_f32(tensors: &SafeTensors<'_>, name: &str) -> Result<HostTensor> {
    let view = tensors.tensor(name).map_err(|_| LoadError::MissingTensor { name: name.to_string() })?;
    Ok(HostTensor::new(view.shape().to_vec(), to_f32(name, view.dtype(), view.data())?))
}

/// The shard files named by a `model.safetensors.index.json`, in order, without repeats.
pub fn shard_files(index_json: &[u8], file: &str) -> Result<Vec<String>> {
    let json: serde_json::Value = serde_json::from_slice(index_json)
        .map_err(|e| LoadError::BadJson { file: file.to_string(), reason: e.to_string() })?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| LoadError::BadConfig {
        file: file.to_string(),
        reason: "no `weight_map` object".into(),
    })?;
    let mut shards: Vec<String> = Vec::new();
    for value in map.values() {
        let shard = value.as_str().ok_or_else(|| LoadError::BadConfig {
            file: file.to_string(),
            reason: "a `weight_map` value is not a file name".into(),
        })?;
        if shard.contains('/') || shard.contains("..") {
            return Err(LoadError::BadConfig { file: file.to_string(), reason: format!("shard name `{shard}` is not a plain file name") });
        }
        if !shards.iter().any(|s| s == shard) {
            shards.push(shard.to_string());
        }
    }
    shards.sort();
    Ok(shards)
}

/// The values of one tensor for [`write_tensors`].
#[derive(Clone, Copy, Debug)]
pub enum TensorData<'a> {
    /// Stored as F32.
    F32(&'a [f32]),
    /// Stored as F16, each value rounded to nearest (ties to even) by `half`.
    F16(&'a [f32]),
    /// Stored as BF16, each value rounded to nearest (ties to even) by `half`.
    BF16(&'a [f32]),
    /// Stored as U32.
    U32(&'a [u32]),
}

impl TensorData<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) | TensorData::F16(v) | TensorData::BF16(v) => v.len(),
            TensorData::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F16(_) => Dtype::F16,
            TensorData::BF16(_) => Dtype::BF16,
            TensorData::U32(_) => Dtype::U32,
        }
    }

    pub(crate) fn to_le_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.append_le(0..self.len(), &mut bytes);
        bytes
    }

    /// Writes the little-endian bytes to `out` a slice of values at a time, through one small
    /// buffer (a 7B model's Fisher pass writes 13 GB; a byte-wise iterator collected into one
    /// vector took longer than the pass's GPU work).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn write_le(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        const VALUES: usize = 1 << 16;
        let mut buffer = Vec::with_capacity(VALUES * 4);
        for start in (0..self.len()).step_by(VALUES) {
            buffer.clear();
            self.append_le(start..(start + VALUES).min(self.len()), &mut buffer);
            out.write_all(&buffer)?;
        }
        Ok(())
    }

    /// Appends the values at `range` as little-endian bytes: each value into its own slot of a
    /// buffer sized at once, a loop the compiler vectorizes.
    fn append_le(&self, range: std::ops::Range<usize>, bytes: &mut Vec<u8>) {
        fn encode<T: Copy, const N: usize>(values: &[T], bytes: &mut Vec<u8>, le: impl Fn(T) -> [u8; N]) {
            let start = bytes.len();
            bytes.resize(start + values.len() * N, 0);
            for (slot, &v) in bytes[start..].chunks_exact_mut(N).zip(values) {
                slot.copy_from_slice(&le(v));
            }
        }
        match self {
            TensorData::F32(v) => encode(&v[range], bytes, f32::to_le_bytes),
            TensorData::F16(v) => encode(&v[range], bytes, |x| half::f16::from_f32(x).to_le_bytes()),
            TensorData::BF16(v) => encode(&v[range], bytes, |x| half::bf16::from_f32(x).to_le_bytes()),
            TensorData::U32(v) => encode(&v[range], bytes, u32::to_le_bytes),
        }
    }
}

/// Serializes tensors of mixed dtypes (`name`, `shape`, values) to safetensors bytes with
/// `metadata`. A shape whose element count differs from the values is an error.
pub fn write_tensors(
    tensors: &[(&str, &[usize], TensorData<'_>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, data)| data.to_le_bytes()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, data), b)| {
            let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let len = data.len();
            if numel != Some(len) {
                return Err(LoadError::InvalidSetting(format!("tensor `{name}`: shape {shape:?} does not hold {len} values")));
            }
            safetensors::tensor::TensorView::new(data.dtype(), shape.to_vec(), b)
                .map(|view| (name.to_string(), view))
                .map_err(|e| LoadError::InvalidSetting(format!("tensor `{name}`: {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, metadata).map_err(|e| LoadError::InvalidSetting(format!("safetensors: {e:?}")))?;
    canonical_header(bytes)
}

/// safetensors' writer emits the metadata in `HashMap` order, so two runs wrote the same tensors
/// under differently ordered headers: the header is rewritten with its keys sorted (serde_json's
/// map is ordered), so equal content gives equal bytes. Offsets are relative to the data, which
/// stays as it is.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |reason: String| LoadError::InvalidSetting(format!("safetensors header: {reason}"));
    let length = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(|| bad("no length".into()))?;
    let end = usize::try_from(length).ok().and_then(|n| n.checked_add(8)).filter(|&end| end <= bytes.len()).ok_or_else(|| bad("length past the end".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end]).map_err(|e| bad(e.to_string()))?;
    let mut json = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    // Padded with spaces so the data starts 8-byte aligned, as safetensors does.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - end);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// Serializes f32 tensors (`name`, `shape`, values) to safetensors bytes with `metadata`.
pub fn write_safetensors(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let typed: Vec<(&str, &[usize], TensorData<'_>)> =
        tensors.iter().map(|&(name, shape, data)| (name, shape, TensorData::F32(data))).collect();
    write_tensors(&typed, metadata)
}
