//! Opening a model on the GPU: resident (every weight uploaded once) or streamed (each block
//! read from disk and uploaded when it is used, so a 7B model needs one block of GPU memory and
//! host memory for one block, not the model).

use anyhow::{bail, Result};
use clap::Args;
use lutlab_core::{ModelConfig, ModelFiles, TextTokenizer};
use lutlab_model::burn::tensor::DType;
use lutlab_model::{Decoder, Gpu};
use std::path::Path;

/// Models above this many parameters stream unless told otherwise: their f32 weights (4 GB)
/// would crowd a consumer GPU and host memory.
const STREAM_ABOVE_PARAMETERS: u64 = 1_000_000_000;

#[derive(Args, Clone, Debug, Default)]
pub struct StreamOptions {
    /// Read each decoder block from disk when it is used: the GPU holds one block's weights
    /// (default above 1B parameters).
    #[arg(long)]
    pub stream: bool,
    /// Upload the whole model once, even above 1B parameters.
    #[arg(long, conflicts_with = "stream")]
    pub no_stream: bool,
}

impl StreamOptions {
    pub fn streams(&self, config: &ModelConfig) -> bool {
        self.stream || (!self.no_stream && config.parameter_count() as u64 > STREAM_ABOVE_PARAMETERS)
    }
}

/// The model in `dir` on `gpu`, resident or streamed as `options` and its size say, with its
/// tokenizer; dense weights in f32.
pub fn open_decoder(dir: &Path, options: &StreamOptions, gpu: &Gpu) -> Result<(Decoder, TextTokenizer)> {
    open_decoder_as(dir, options, gpu, None)
}

/// [`open_decoder`] with the dense weights stored as `dtype` resolves for this model (eval,
/// generate), converted block by block as they upload.
pub fn open_decoder_as(dir: &Path, options: &StreamOptions, gpu: &Gpu, dtype: Option<&DtypeOptions>) -> Result<(Decoder, TextTokenizer)> {
    let opened = ModelFiles::open_dir(dir)?;
    let dtype = dtype.map(|d| d.resolve(&opened.config, gpu)).transpose()?.unwrap_or(DType::F32);
    if options.streams(&opened.config) {
        let (name, numel) = opened.config.largest_tensor();
        gpu.check_buffer_fits(numel as u64 * 4, &format!("tensor `{name}`"), "nothing: this GPU cannot hold the model")?;
        let model = Decoder::streamed(&opened.config, opened.checkpoint, &gpu.device)?.stored_as(dtype);
        return Ok((model, opened.tokenizer));
    }
    let loaded = opened.load()?;
    gpu.check_fits(&loaded.weights)?;
    Ok((Decoder::new_as(&loaded.weights, &gpu.device, dtype), loaded.tokenizer))
}

/// `--dtype`: what the GPU stores and multiplies a model's dense weights in (issue 17: f32 up to
/// 1B parameters, f16 above where the adapter has it). bf16 is refused: WGSL has no bf16 type.
#[derive(Args, Clone, Debug, Default)]
pub struct DtypeOptions {
    /// f32 or f16 (f16: weights and matmul operands in half precision, f32 accumulation, norms
    /// and softmax; default f16 above 1B parameters where the GPU has shader-f16, else f32).
    #[arg(long)]
    pub dtype: Option<String>,
}

impl DtypeOptions {
    /// The dtype for `config` on `gpu`: as asked (refused by name where the GPU cannot), or the
    /// default.
    pub fn resolve(&self, config: &ModelConfig, gpu: &Gpu) -> Result<DType> {
        match self.requested()? {
            Some(DType::F16) if !gpu.has_f16() => bail!("--dtype f16: this GPU ({}) has no shader-f16; use --dtype f32", gpu.describe()),
            Some(dtype) => Ok(dtype),
            None if config.parameter_count() as u64 > STREAM_ABOVE_PARAMETERS && gpu.has_f16() => Ok(DType::F16),
            None => Ok(DType::F32),
        }
    }

    /// Checks the word before any model is read.
    pub fn check(&self) -> Result<()> {
        self.requested().map(|_| ())
    }

    /// The dtype the word names, `None` without `--dtype`.
    fn requested(&self) -> Result<Option<DType>> {
        match self.dtype.as_deref() {
            None => Ok(None),
            Some("f32") => Ok(Some(DType::F32)),
            Some("f16") => Ok(Some(DType::F16)),
            Some("bf16") => bail!("--dtype bf16: WGSL, the shading language of wgpu and WebGPU, has no bf16 type; use f16 (same memory) or f32"),
            Some(other) => bail!("--dtype {other}: use f32 or f16"),
        }
    }
}

/// `f32` / `f16`, for reports.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}
