//! lutlab-model: the decoder (GPT-2, OPT, Llama) on burn, running on wgpu natively and WebGPU in the browser, and the
//! perplexity evaluation built on it.

pub mod activations;
pub mod device;
pub mod error;
pub mod eval;
pub mod fisher;
pub mod fused;
pub mod gemm;
pub mod generate;
pub mod hessian;
pub mod hessian_rounding;
pub mod input_quant;
pub mod decoder;
pub mod lut_linear;
pub mod tracked_fused;
pub mod tracked_gemm;
pub mod widen;

pub use activations::{linear_input_means, linear_input_stats, linear_input_stats_windows, ActivationSettings, InputStats};
pub use burn;
pub use device::{gpu_device, open_gpu, Gpu};
pub use error::{ModelError, Result};
pub use eval::{perplexity, EvalSettings};
pub use hessian_rounding::{cholesky_on_gpu, Factorization, GpuRounder};
pub use hessian::{hessians, quantize_sequential, HessianSettings, LayerHessian};
pub use fisher::{fisher, fisher_into, fisher_windows, sample_starts, FisherRun, FisherSettings};
pub use lutlab_core::fisher_file::{FisherDiagonal, FisherMeta};
pub use input_quant::{calibrate_inputs, calibrate_inputs_windows, InputQuantizer, Windows};
pub use decoder::{run_block, BlockVisitor, Decoder};
