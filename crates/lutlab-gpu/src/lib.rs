//! lutlab-gpu: lutlab's own WGSL kernels, run through raw wgpu on the device burn opened
//! (`lutlab_model::Gpu`), so the CLI and the page share one GPU with the model.
//!
//! - [`kmeans`]: weighted 1-D Lloyd k-means for LUT quantization (issue 6): many tables at once,
//!   the CPU reference's semantics, and [`quantize_kmeans_gpu`], the GPU twin of
//!   `lutlab_core::quant::quantize_kmeans`. [`vector_kmeans`]: the vector tables' k-means (issue
//!   20), its assignment on the GPU.
//!
//! - [`bench`]: kernel benchmarks (native): the LUT GEMV against dense f32/f16 GEMV and a copy.
//!   [`requantize_bench`]: the page's bit slider natively (one layer's k-means on the GPU).
//!
//! Everything is async: the browser must not block on the GPU. Natively, wrap calls in
//! `pollster::block_on`; buffer read-backs then poll the device until the GPU is done.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod init;
pub mod kmeans;
pub mod layer;
/// Phase timing lives in the core (the Hessian methods and the layer loop are timed too).
pub use lutlab_core::profile;
#[cfg(not(target_arch = "wasm32"))]
pub mod requantize_bench;
mod seeding;
mod util;
pub mod vector_kmeans;

pub use layer::{quantize_layer_gpu, quantize_model_gpu};
pub use kmeans::{KmeansBatch, LloydGpuOutput, LloydKernels, lloyd_gpu, lloyd_gpu_with, quantize_kmeans_gpu, quantize_kmeans_gpu_report};
