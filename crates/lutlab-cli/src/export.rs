//! `lutlab export --dequantized`: a packed model as a plain Hugging Face checkpoint.

use crate::eval::read_packed;
use crate::paths::{repo_path, SHIPPED_MODEL};
use crate::quantize::write_checkpoint;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    /// The packed model file.
    #[arg(long)]
    packed: PathBuf,
    /// Write dequantized f32 weights (the only export so far; required to say so).
    #[arg(long)]
    dequantized: bool,
    /// Output directory: model.safetensors, config.json and the tokenizer files.
    #[arg(long)]
    out: PathBuf,
    /// Where to copy tokenizer files from (default: the shipped model; GPT-2's tokenizer).
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if !args.dequantized {
        bail!("pass --dequantized: lutlab exports packed models as dequantized Hugging Face checkpoints");
    }
    let packed = read_packed(&args.packed)?;
    let weights = packed.dequantized_weights()?;
    let tokenizer_dir = args.tokenizer_from.unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    write_checkpoint(&tokenizer_dir, &args.out, &weights, &packed.meta.method)?;
    println!("wrote {} ({}, {} packed layers dequantized)", args.out.display(), packed.meta.method, packed.layers.len());
    Ok(())
}
