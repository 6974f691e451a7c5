//! Errors of GPU work: bad input (from lutlab-core), a GPU that failed, or a user who cancelled.

use lutlab_core::LoadError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] LoadError),

    /// No usable GPU adapter, or an allocation the GPU refused.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// The device was lost (driver reset, GPU removed, `destroy()`): every later call on it
    /// fails, so the caller has to open a new one.
    #[error("the GPU was lost: {0}")]
    GpuLost(String),

    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
