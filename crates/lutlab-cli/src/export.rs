//! `lutlab export --dequantized`: a packed model as a plain Hugging Face checkpoint.

use crate::eval::{read_packed, tokenizer_dir};
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
    /// Where to copy tokenizer files from (default for GPT-2 files: the shipped model, GPT-2's
    /// tokenizer; other families must name their model directory).
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if !args.dequantized {
        bail!("pass --dequantized: lutlab exports packed models as dequantized Hugging Face checkpoints");
    }
    let packed = read_packed(&args.packed)?;
    let weights = packed.dequantized_weights()?;
    // Centering folds a shift into the bias; a family whose linears have none cannot hold it.
    let specs = weights.config.linear_names();
    if let Some((name, _)) = specs.iter().zip(weights.linears()).find(|((_, spec), (_, l))| !spec.bias && l.bias.data.iter().any(|&b| b != 0.0)).map(|(s, _)| s) {
        bail!(
            "`{name}` has a bias (seed 000's centering folded its input shift into one), but {} checkpoints have no bias there: \
             transformers would ignore it. Quantize without --centering to export, or keep the packed file",
            weights.config.model_type
        );
    }
    let tokenizer_dir = tokenizer_dir(&packed, args.tokenizer_from.as_deref(), &args.packed)?;
    write_checkpoint(&tokenizer_dir, &args.out, &weights, &packed.meta.method)?;
    println!("wrote {} ({}, {} packed layers dequantized)", args.out.display(), packed.meta.method, packed.layers.len());
    Ok(())
}
