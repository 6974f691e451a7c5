//! Safetensors files on disk, read and written a tensor at a time (native only): what lets the
//! CLI quantize models larger than host memory.
//!
//! Reading: [`TensorFile::open`] reads and checks the header only (every tensor's dtype, shape
//! and byte range against the file's real size); [`TensorFile::read_range`] then reads one
//! tensor's bytes with a positioned read. Positioned reads rather than a memory map: the crate
//! forbids `unsafe`, and the process holds only the tensors in use while the kernel's page cache
//! does the caching a map would.
//!
//! Writing: [`TensorWriter`] appends each tensor's bytes to a data file as it is produced and
//! writes the header (which names every offset, and the metadata that is only known at the end)
//! when it finishes, so a file larger than host memory is written layer by layer.

use crate::checkpoint::TensorData;
use crate::error::{LoadError, Result};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes a core reads at a time when a tensor is read in parallel (pieces are whole multiples).
const READ_PIECE: usize = 1 << 16;

/// safetensors' own bound on the JSON header.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// One tensor of a file: name as stored, dtype, shape, and absolute byte range in the file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub range: Range<u64>,
}

/// A safetensors file whose header has been read and checked.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    file: File,
    entries: Vec<TensorEntry>,
    metadata: HashMap<String, String>,
}

/// The JSON of one header entry.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl TensorFile {
    /// Reads the header of `path` and checks it as the `safetensors` crate would (offsets inside
    /// the data section, covering it exactly, each range the size its dtype and shape say).
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let bad = |reason: String| LoadError::BadSafetensors { file: shown.clone(), reason };
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::MissingFile { file: shown.clone() },
            _ => LoadError::Io { file: shown.clone(), reason: e.to_string() },
        };
        let mut file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size < 8 {
            return Err(bad(format!("the file is {size} bytes, too short to hold the 8-byte header length")));
        }
        let mut start = vec![0u8; size.min(24) as usize];
        file.read_exact(&mut start).map_err(io)?;
        let header_len = u64::from_le_bytes(std::array::from_fn(|i| start[i]));
        if header_len > size - 8 {
            return Err(bad(crate::checkpoint::header_length_problem(header_len, size - 8, &start)));
        }
        file.seek(std::io::SeekFrom::Start(8)).map_err(io)?;
        if header_len > MAX_HEADER_BYTES {
            return Err(bad("the header is larger than 100 MB".into()));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let text = std::str::from_utf8(&header).map_err(|e| bad(format!("the header is not UTF-8: {e}")))?;
        let mut json: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| bad(format!("the JSON header is invalid: {e}")))?;
        let metadata = match json.remove("__metadata__") {
            Some(m) => serde_json::from_value(m).map_err(|e| bad(format!("the JSON header is invalid: `__metadata__`: {e}")))?,
            None => HashMap::new(),
        };
        let data_start = 8 + header_len;
        let data_len = size - data_start;
        let mut entries = Vec::with_capacity(json.len());
        for (name, value) in json {
            let e: HeaderEntry = serde_json::from_value(value).map_err(|e| bad(format!("the JSON header is invalid: tensor `{name}`: {e}")))?;
            let (begin, end) = e.data_offsets;
            if begin > end || end > data_len {
                return Err(bad(format!("tensor `{name}` has data offsets outside the data section (truncated or corrupt file)")));
            }
            let numel = e.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if numel.and_then(|n| n.checked_mul(e.dtype.bitsize() as u64 / 8)) != Some(end - begin) {
                return Err(bad("a tensor's shape and dtype do not match its byte range".into()));
            }
            entries.push(TensorEntry { name, dtype: e.dtype, shape: e.shape, range: data_start + begin..data_start + end });
        }
        entries.sort_by_key(|e| e.range.start);
        let mut covered = data_start;
        for e in &entries {
            if e.range.start != covered {
                return Err(bad("the tensors' offsets do not cover the data section exactly (truncated file or extra bytes)".into()));
            }
            covered = e.range.end;
        }
        if covered != size {
            return Err(bad("the tensors' offsets do not cover the data section exactly (truncated file or extra bytes)".into()));
        }
        Ok(Self { path: path.to_path_buf(), file, entries, metadata })
    }

    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The bytes at `range` (absolute offsets in the file).
    pub fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; (range.end - range.start) as usize];
        self.read_into(range.start, &mut bytes)?;
        Ok(bytes)
    }

    /// Fills `out` with the bytes from `offset` on. A large read is split over the CPU's cores:
    /// one thread copying a 7B block's 404 MB out of the page cache took longer than the GPU's
    /// work on that block.
    pub fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let failure = Mutex::new(None);
        crate::parallel::for_row_chunks(out, READ_PIECE, |first, piece| {
            if let Err(e) = self.read_at(offset + (first * READ_PIECE) as u64, piece) {
                failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            }
        });
        match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(LoadError::Io { file: self.path.display().to_string(), reason: e.to_string() }),
            None => Ok(()),
        }
    }

    /// Fills `out` from `offset` with a positioned read (no shared cursor, so the cores' pieces
    /// do not wait on each other).
    fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        #[cfg(unix)]
        return std::os::unix::fs::FileExt::read_exact_at(&self.file, out, offset);
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < out.len() {
                match std::os::windows::fs::FileExt::seek_read(&self.file, &mut out[done..], offset + done as u64)? {
                    0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    n => done += n,
                }
            }
            Ok(())
        }
    }
}

/// Writes a safetensors file one tensor at a time (see the module documentation). The data goes
/// to `path` + `.partial`, after `header_reserve` bytes left for the header; [`Self::finish`]
/// writes the header there (padded with spaces, which safetensors allows) and renames the file,
/// so a large file is written once. A header larger than the reserve costs one copy of the data.
/// Nothing is at `path` until `finish` succeeds; an unfinished file is removed on drop.
pub struct TensorWriter {
    path: PathBuf,
    partial: PathBuf,
    data: Option<BufWriter<File>>,
    reserve: u64,
    entries: Vec<(String, Dtype, Vec<usize>, u64, u64)>,
    offset: u64,
}

impl TensorWriter {
    /// `header_reserve`: bytes to leave for the header (8-byte length included), e.g. from
    /// [`header_bytes_estimate`]; 0 writes the data first and copies it behind the header.
    pub fn create(path: &Path, header_reserve: u64) -> Result<Self> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let io = |e: std::io::Error| LoadError::Io { file: partial.display().to_string(), reason: e.to_string() };
        let reserve = if header_reserve == 0 { 0 } else { header_reserve.max(16).next_multiple_of(8) };
        let mut file = File::create(&partial).map_err(io)?;
        file.seek(SeekFrom::Start(reserve)).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), partial, data: Some(BufWriter::with_capacity(8 << 20, file)), reserve, entries: Vec::new(), offset: 0 })
    }

    /// Appends one tensor. A shape whose element count differs from the values is an error.
    pub fn add(&mut self, name: &str, shape: &[usize], data: TensorData<'_>) -> Result<()> {
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(LoadError::InvalidSetting(format!("tensor `{name}`: shape {shape:?} does not hold {} values", data.len())));
        }
        if self.entries.iter().any(|(n, ..)| n == name) {
            return Err(LoadError::InvalidSetting(format!("tensor `{name}` is written twice")));
        }
        // `data` is `Some` from `create` until `finish`, which consumes the writer: cannot fail.
        let out = self.data.as_mut().expect("open until finish");
        data.write_le(out).map_err(|e| LoadError::Io { file: self.partial.display().to_string(), reason: e.to_string() })?;
        let end = self.offset + (data.len() * data.dtype().bitsize() / 8) as u64;
        self.entries.push((name.to_string(), data.dtype(), shape.to_vec(), self.offset, end));
        self.offset = end;
        Ok(())
    }

    /// Writes the header with `metadata` in front of the data, and the file to `path`.
    pub fn finish(mut self, metadata: HashMap<String, String>) -> Result<()> {
        let io = |file: &Path, e: std::io::Error| LoadError::Io { file: file.display().to_string(), reason: e.to_string() };
        // Only `finish` takes `data`, once, and it consumes the writer: cannot fail.
        let mut data = self.data.take().expect("open until finish");
        data.flush().map_err(|e| io(&self.partial, e))?;
        let mut file = data.into_inner().map_err(|e| io(&self.partial, e.into_error()))?;
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| LoadError::InvalidSetting(e.to_string()))?);
        }
        for (name, dtype, shape, begin, end) in &self.entries {
            let dtype = serde_json::to_value(dtype).map_err(|e| LoadError::InvalidSetting(e.to_string()))?;
            header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}));
        }
        let mut json = serde_json::to_vec(&header).map_err(|e| LoadError::InvalidSetting(e.to_string()))?;
        // safetensors pads the header with spaces so the data starts 8-byte aligned.
        json.resize(json.len().next_multiple_of(8), b' ');
        if 8 + json.len() as u64 <= self.reserve {
            json.resize(self.reserve as usize - 8, b' ');
            file.seek(SeekFrom::Start(0)).map_err(|e| io(&self.partial, e))?;
            file.write_all(&(json.len() as u64).to_le_bytes()).map_err(|e| io(&self.partial, e))?;
            file.write_all(&json).map_err(|e| io(&self.partial, e))?;
            file.sync_data().map_err(|e| io(&self.partial, e))?;
            drop(file);
            return std::fs::rename(&self.partial, &self.path).map_err(|e| io(&self.path, e));
        }
        drop(file);
        let mut out = BufWriter::new(File::create(&self.path).map_err(|e| io(&self.path, e))?);
        out.write_all(&(json.len() as u64).to_le_bytes()).map_err(|e| io(&self.path, e))?;
        out.write_all(&json).map_err(|e| io(&self.path, e))?;
        let mut partial = File::open(&self.partial).map_err(|e| io(&self.partial, e))?;
        partial.seek(SeekFrom::Start(self.reserve)).map_err(|e| io(&self.partial, e))?;
        std::io::copy(&mut partial, &mut out).map_err(|e| io(&self.path, e))?;
        out.flush().map_err(|e| io(&self.path, e))?;
        std::fs::remove_file(&self.partial).map_err(|e| io(&self.partial, e))?;
        Ok(())
    }
}

/// A generous bound on the header of a file of `tensors` tensors whose names total
/// `name_bytes`, with `metadata_bytes` of metadata: room for every dtype, shape and offset.
pub fn header_bytes_estimate(tensors: usize, name_bytes: usize, metadata_bytes: usize) -> u64 {
    (8 + name_bytes + tensors * 160 + 2 * metadata_bytes + 4096) as u64
}

impl Drop for TensorWriter {
    fn drop(&mut self) {
        // An unfinished file leaves nothing behind (a finished one was renamed or removed).
        let _ = std::fs::remove_file(&self.partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{write_tensors, Checkpoint};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lutlab-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn the_writer_makes_the_bytes_safetensors_makes_and_the_reader_reads_them_back() {
        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let b = [7u32, 8, 9];
        let tensors = [("a", &[2usize, 3][..], TensorData::F16(&a)), ("b", &[3][..], TensorData::U32(&b))];
        let metadata = HashMap::from([("format".to_string(), "test".to_string())]);
        let path = temp("w.safetensors");
        // Header behind the data (no reserve), in a reserve too small, in a large enough one.
        for reserve in [0u64, 64, 4096] {
            let mut writer = TensorWriter::create(&path, reserve).unwrap();
            for (name, shape, data) in tensors {
                writer.add(name, shape, data).unwrap();
            }
            writer.finish(metadata.clone()).unwrap();
            let written = std::fs::read(&path).unwrap();
            if reserve == 4096 {
                assert_eq!(written.len(), 4096 + 24, "the header fills the reserve exactly");
            }
            let parsed = crate::checkpoint::parse_safetensors("w", &written).unwrap();
            assert_eq!(parsed.tensor("b").unwrap().data(), b.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        }
        let written = std::fs::read(&path).unwrap();
        // The `safetensors` crate reads what the writer wrote, tensor for tensor.
        let parsed = crate::checkpoint::parse_safetensors("w", &written).unwrap();
        let reference = write_tensors(&tensors, Some(metadata)).unwrap();
        let expected = crate::checkpoint::parse_safetensors("r", &reference).unwrap();
        for name in ["a", "b"] {
            let (got, want) = (parsed.tensor(name).unwrap(), expected.tensor(name).unwrap());
            assert_eq!((got.dtype(), got.shape(), got.data()), (want.dtype(), want.shape(), want.data()));
        }
        let file = TensorFile::open(&path).unwrap();
        assert_eq!(file.metadata()["format"], "test");
        let entry = file.entries().iter().find(|e| e.name == "a").unwrap();
        let bytes = file.read_range(entry.range.clone()).unwrap();
        assert_eq!(crate::checkpoint::to_f32("a", entry.dtype, &bytes).unwrap(), a);
        // A checkpoint holds float tensors only: the U32 one is refused by name.
        let err = Checkpoint::open(&[path.clone()]).unwrap_err().to_string();
        assert!(err.contains("`b`") && err.contains("U32"), "{err}");
        assert!(!PathBuf::from(format!("{}.partial", path.display())).exists());
    }

    #[test]
    fn truncated_and_lying_files_are_named_errors() {
        let data = [1.0f32, 2.0];
        let bytes = write_tensors(&[("x", &[2], TensorData::F32(&data))], None).unwrap();
        for (cut, want) in [(4, "too short"), (bytes.len() - 1, "outside the data section"), (12, "only")] {
            let path = temp(&format!("cut{cut}.safetensors"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = TensorFile::open(&path).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("cut"), "{cut}: {err}");
        }
        let err = TensorFile::open(&temp("absent.safetensors")).unwrap_err().to_string();
        assert!(err.contains("absent.safetensors") && err.contains("not found"), "{err}");
    }
}
