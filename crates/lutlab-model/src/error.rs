//! Errors of GPU work: bad input (from lutlab-core), a GPU that failed, or a user who cancelled.

use lutlab_core::LoadError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] LoadError),

    /// No usable GPU adapter, a lost device, or an allocation the GPU refused.
    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
