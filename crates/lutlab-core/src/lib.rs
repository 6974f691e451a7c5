//! lutlab-core: everything that needs no GPU. Model config and checkpoints, tokenization, the
//! perplexity protocol and the CPU reference math that every GPU kernel is tested against.

pub mod awq;
pub mod checkpoint;
pub mod config;
pub mod dense_dtype;
pub mod error;
pub mod files;
pub mod fisher_file;
pub mod hessian_file;
pub mod model_transforms;
pub mod onnx;
pub mod packed_file;
pub mod packed_size;
pub mod parallel;
pub mod perplexity;
pub mod plot_data;
pub mod profile;
pub mod progress;
pub mod quant;
pub mod ready;
pub mod reference;
#[cfg(not(target_arch = "wasm32"))]
pub mod tensor_file;
pub mod tokenizer;
mod tokenizer_checks;
pub mod weights;

pub use checkpoint::{Checkpoint, HostTensor};
pub use config::{Family, ModelConfig};
pub use error::{LoadError, Result};
pub use files::{LoadedModel, ModelFiles};
pub use perplexity::{NllSum, Window};
pub use progress::{NoProgress, Progress};
pub use tokenizer::{TextTokenizer, TokenizerFiles};
pub use weights::ModelWeights;
