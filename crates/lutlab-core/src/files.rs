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
        let exists = |name: &str| dir.join(name).is_file();
        if !dir.is_dir() {
            return Err(LoadError::MissingFile { file: dir.display().to_string() });
        }
        let config_json = read(CONFIG_FILE)?;
        let shards = if exists(WEIGHTS_FILE) || !exists(WEIGHTS_INDEX_FILE) {
            vec![WEIGHTS_FILE.to_string()]
        } else {
            shard_files(&read(WEIGHTS_INDEX_FILE)?, WEIGHTS_INDEX_FILE)?
        };
        let safetensors = shards.into_iter().map(|name| Ok((name.clone(), read(&name)?))).collect::<Result<_>>()?;
        let tokenizer = Self::read_tokenizer(dir)?;
        Ok(Self { config_json, safetensors, tokenizer })
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
