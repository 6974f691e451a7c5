//! One error type for everything that reads user input: each variant names the problem and the file.

use thiserror::Error;

/// What can go wrong while reading a model, a tokenizer or a text.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{file}: file not found")]
    MissingFile { file: String },

    #[error("{file}: could not be read: {reason}")]
    Io { file: String, reason: String },

    #[error("{file}: not valid JSON: {reason}")]
    BadJson { file: String, reason: String },

    #[error("{file}: {field} is missing or not a positive integer")]
    BadConfigField { file: String, field: &'static str },

    #[error("{file}: {reason}")]
    BadConfig { file: String, reason: String },

    #[error("model type `{model_type}` is not supported (lutlab runs model_type {})", crate::config::SUPPORTED_MODEL_TYPES)]
    UnsupportedArchitecture { model_type: String },

    #[error("{file}: not a valid safetensors file: {reason}")]
    BadSafetensors { file: String, reason: String },

    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor { name: String },

    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WrongShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("tensor `{name}` has dtype {found}, expected one of F32, F16, BF16")]
    WrongDtype { name: String, found: String },

    #[error("tensor `{name}` contains {count} non-finite values (NaN or Inf), first at flat index {first}")]
    NonFinite { name: String, count: usize, first: usize },

    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },

    #[error("{what}: the text is empty")]
    EmptyText { what: String },

    #[error("{what}: the text has {tokens} tokens, fewer than the {needed} needed for one evaluation window")]
    TextTooShort { what: String, tokens: usize, needed: usize },

    #[error("invalid setting: {0}")]
    InvalidSetting(String),

    /// The user stopped the work; nothing they made is lost.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;
