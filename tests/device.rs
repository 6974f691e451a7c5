//! Every GPU test file compiled into one binary, for the device machine (`scripts/device_tests.sh`):
//! the tree that travels there is capped at 64 MiB, which holds one stripped test binary but not
//! a dozen. Built only with `--features device`, so CI compiles each file once, as its own test.

#[path = "activations.rs"]
mod activations;
#[path = "architectures.rs"]
mod architectures;
#[path = "embeddings_packed.rs"]
mod embeddings_packed;
#[path = "fisher.rs"]
mod fisher;
#[path = "fused.rs"]
mod fused;
#[path = "gemm.rs"]
mod gemm;
#[path = "generate.rs"]
mod generate;
#[path = "half_precision.rs"]
mod half_precision;
#[path = "hessian_rounding_gpu.rs"]
mod hessian_rounding_gpu;
#[path = "hessians.rs"]
mod hessians;
#[path = "input_quant.rs"]
mod input_quant;
#[path = "lut_kernels.rs"]
mod lut_kernels;
#[path = "packed_eval.rs"]
mod packed_eval;
#[path = "packer_oracle.rs"]
mod packer_oracle;
#[path = "perplexity.rs"]
mod perplexity;
#[path = "reference_logits.rs"]
mod reference_logits;
#[path = "streaming.rs"]
mod streaming;
#[path = "widen.rs"]
mod widen;
