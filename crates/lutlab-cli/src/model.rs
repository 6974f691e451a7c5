//! Opening a model on the GPU: resident (every weight uploaded once) or streamed (each block
//! read from disk and uploaded when it is used, so a 7B model needs one block of GPU memory and
//! host memory for one block, not the model).

use anyhow::Result;
use clap::Args;
use lutlab_core::{ModelConfig, ModelFiles, TextTokenizer};
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
/// tokenizer.
pub fn open_decoder(dir: &Path, options: &StreamOptions, gpu: &Gpu) -> Result<(Decoder, TextTokenizer)> {
    let opened = ModelFiles::open_dir(dir)?;
    if options.streams(&opened.config) {
        let (name, numel) = opened.config.largest_tensor();
        gpu.check_buffer_fits(numel as u64 * 4, &format!("tensor `{name}`"), "nothing: this GPU cannot hold the model")?;
        let model = Decoder::streamed(&opened.config, opened.checkpoint, &gpu.device)?;
        return Ok((model, opened.tokenizer));
    }
    let loaded = opened.load()?;
    gpu.check_fits(&loaded.weights)?;
    Ok((Decoder::new(&loaded.weights, &gpu.device), loaded.tokenizer))
}
