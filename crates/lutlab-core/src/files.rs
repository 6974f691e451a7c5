//! The files of a Hugging Face model directory, as bytes. The same type serves files read from
//! disk and files fetched by the browser, so loading code never touches the file system.

#[cfg(not(target_arch = "wasm32"))]
use crate::checkpoint::shard_files;
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::LoadError;
use crate::error::Result;
use crate::tokenizer::{TextTokenizer, TokenizerFiles};
use crate::weights::ModelWeights;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const TOKENIZER_JSON_FILE: &str = "tokenizer.json";
pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Raw bytes of a model's files.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub config_json: Vec<u8>,
    /// `(file name, bytes)` for `model.safetensors` or each shard.
    pub safetensors: Vec<(String, Vec<u8>)>,
    pub tokenizer: TokenizerFiles,
}

/// A model ready to run: config, weights and tokenizer.
pub struct LoadedModel {
    pub weights: ModelWeights,
    pub tokenizer: TextTokenizer,
}

impl LoadedModel {
    pub fn config(&self) -> &ModelConfig {
        &self.weights.config
    }
}

impl ModelFiles {
    /// Parses and checks everything: config, every tensor, the tokenizer.
    pub fn load(&self) -> Result<LoadedModel> {
        let config = ModelConfig::from_json(&self.config_json, CONFIG_FILE)?;
        let checkpoint =
            Checkpoint::from_safetensors(self.safetensors.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())))?;
        let weights = ModelWeights::from_checkpoint(&config, checkpoint)?;
        let tokenizer = TextTokenizer::from_files(&self.tokenizer)?;
        Ok(LoadedModel { weights, tokenizer })
    }

    /// Reads a model directory: `config.json`, `model.safetensors` or the shards named by
    /// `model.safetensors.index.json`, and `tokenizer.json` or `vocab.json` + `merges.txt`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| read_file(&dir.join(name));
        let shards = weight_files(dir)?;
        let config_json = read(CONFIG_FILE)?;
        let safetensors = shards.into_iter().map(|name| Ok((name.clone(), read(&name)?))).collect::<Result<_>>()?;
        let tokenizer = Self::read_tokenizer(dir)?;
        Ok(Self { config_json, safetensors, tokenizer })
    }

    /// Opens a model directory without reading its weights: the config and tokenizer are parsed,
    /// the safetensors headers checked, and each tensor is read when it is used.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &std::path::Path) -> Result<OpenedModel> {
        let paths: Vec<_> = weight_files(dir)?.iter().map(|name| dir.join(name)).collect();
        let config = ModelConfig::from_json(&read_file(&dir.join(CONFIG_FILE))?, CONFIG_FILE)?;
        let checkpoint = Checkpoint::open(&paths)?;
        let tokenizer = TextTokenizer::from_files(&Self::read_tokenizer(dir)?)?;
        Ok(OpenedModel { config, checkpoint, tokenizer })
    }

    /// Reads just a model directory's tokenizer: `tokenizer.json`, or `vocab.json` + `merges.txt`
    /// (with `tokenizer_config.json` when there is one).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_tokenizer(dir: &std::path::Path) -> Result<TokenizerFiles> {
        let read = |name: &str| read_file(&dir.join(name));
        Ok(if dir.join(TOKENIZER_JSON_FILE).is_file() {
            TokenizerFiles::Json(read(TOKENIZER_JSON_FILE)?)
        } else {
            let config = dir.join(TOKENIZER_CONFIG_FILE);
            let config = if config.is_file() { Some(read_file(&config)?) } else { None };
            TokenizerFiles::VocabMerges { vocab: read(VOCAB_FILE)?, merges: read(MERGES_FILE)?, config }
        })
    }
}

/// Bytes of a model directory's checkpoint: its safetensors file, or the sum of its shards (what
/// a packed file's size is set beside).
#[cfg(not(target_arch = "wasm32"))]
pub fn checkpoint_bytes(dir: &std::path::Path) -> Result<u64> {
    weight_files(dir)?
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::metadata(&path).map(|m| m.len()).map_err(|_| LoadError::MissingFile { file: path.display().to_string() })
        })
        .sum()
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards its index
/// names.
#[cfg(not(target_arch = "wasm32"))]
fn weight_files(dir: &std::path::Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(LoadError::MissingFile { file: dir.display().to_string() });
    }
    let exists = |name: &str| dir.join(name).is_file();
    if exists(WEIGHTS_FILE) || !exists(WEIGHTS_INDEX_FILE) {
        Ok(vec![WEIGHTS_FILE.to_string()])
    } else {
        shard_files(&read_file(&dir.join(WEIGHTS_INDEX_FILE))?, WEIGHTS_INDEX_FILE)
    }
}

/// A model directory opened natively ([`ModelFiles::open_dir`]): config, tokenizer, and the
/// checkpoint's index (no weights read yet).
#[cfg(not(target_arch = "wasm32"))]
pub struct OpenedModel {
    pub config: ModelConfig,
    pub checkpoint: Checkpoint<'static>,
    pub tokenizer: TextTokenizer,
}

#[cfg(not(target_arch = "wasm32"))]
impl OpenedModel {
    /// Reads every weight into host memory (models that fit: the page's and GPT-2's path).
    pub fn load(self) -> Result<LoadedModel> {
        Ok(LoadedModel { weights: ModelWeights::from_checkpoint(&self.config, self.checkpoint)?, tokenizer: self.tokenizer })
    }
}

/// Reads a file, naming it in the error.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::MissingFile { file: path.display().to_string() },
        _ => LoadError::Io { file: path.display().to_string(), reason: e.to_string() },
    })
}

/// Reads a UTF-8 text file for evaluation or calibration.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = read_file(path)?;
    String::from_utf8(bytes).map_err(|e| LoadError::Io { file: path.display().to_string(), reason: format!("not UTF-8 text: {e}") })
}
