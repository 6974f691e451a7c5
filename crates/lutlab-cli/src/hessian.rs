//! `lutlab hessian`: the Hessian `H = (2/N) Σ x xᵀ` of every linear input of the float model on
//! a calibration text, on the GPU, written as safetensors (`lutlab_core::hessian_file`) for
//! `lutlab quantize --hessian`; with `--summary`, QuIP's per-layer statistics of it (or, with
//! `--from FILE`, of a file written before).

use crate::model::{open_decoder, StreamOptions};
use crate::paths::{repo_path, SHIPPED_MODEL, WIKITEXT_VALID};
use crate::progress::Bar;
use anyhow::{bail, Result};
use clap::Args;
use lutlab_core::files::read_text;
use lutlab_core::hessian_file::{HessianMeta, HessianWriter};
use lutlab_model::{hessians, open_gpu, ActivationSettings, HessianSettings};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct HessianArgs {
    /// Hugging Face model directory (default: the shipped model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// UTF-8 calibration text (default: WikiText-2 validation).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Random calibration windows (GPTQ: 128).
    #[arg(long, default_value_t = HessianSettings::DEFAULT_NSAMPLES)]
    nsamples: usize,
    /// Tokens per window (default: the model's context, at most 2048).
    #[arg(long)]
    seqlen: Option<usize>,
    /// Seed of the window sampler (the Fisher default: the same windows).
    #[arg(long, default_value_t = lutlab_model::FisherSettings::DEFAULT_SEED)]
    seed: u64,
    /// Windows per forward pass (memory only).
    #[arg(long, default_value_t = HessianSettings::DEFAULT_BATCH)]
    batch: usize,
    #[command(flatten)]
    stream: StreamOptions,
    /// Output safetensors file.
    #[arg(long, required_unless_present = "from")]
    out: Option<PathBuf>,
    /// Print QuIP's per-layer statistics of the Hessians (trace ratio, ranks, condition, μ).
    #[arg(long)]
    summary: bool,
    /// Summarize this Hessian file (`lutlab hessian --out`) instead of computing one.
    #[arg(long, conflicts_with = "out")]
    from: Option<PathBuf>,
    /// With --summary: also μ of H's eigenvectors and of the weights after QuIP's incoherence
    /// processing (seeded by --seed).
    #[arg(long)]
    incoherence: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: HessianArgs) -> Result<()> {
    let model_dir = args.model.clone().unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    if let Some(from) = &args.from {
        return crate::hessian_summary::print(&model_dir, from, args.incoherence, args.seed, args.json);
    }
    let Some(out) = args.out.clone() else { bail!("give --out FILE to write the Hessians (or --from FILE to summarize a file)") };
    compute(&args, &model_dir, &out)?;
    if args.summary {
        crate::hessian_summary::print(&model_dir, &out, args.incoherence, args.seed, args.json)?;
    }
    Ok(())
}

/// Computes the Hessians on the GPU and writes them to `out`.
fn compute(args: &HessianArgs, model_dir: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let data_path = args.data.clone().unwrap_or_else(|| repo_path(WIKITEXT_VALID));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!("{}: the output directory {} does not exist", out.display(), parent.display());
    }
    let gpu = pollster::block_on(open_gpu())?;
    let (model, tokenizer) = open_decoder(model_dir, &args.stream, &gpu)?;
    let tokens = tokenizer.encode(&read_text(&data_path)?)?;
    let defaults = HessianSettings::for_model(&model).windows;
    let windows = ActivationSettings { nsamples: args.nsamples, seqlen: args.seqlen.unwrap_or(defaults.seqlen), seed: args.seed, batch: args.batch };
    let settings = HessianSettings { windows, true_sequential: false };
    let mut writer = HessianWriter::create(out, &model.config)?;
    let mut bar = Bar::new("hessian", "blocks", args.json);
    let start = Instant::now();
    let mut written = 0usize;
    pollster::block_on(hessians(&model, &tokens, settings, &mut |name, h| {
        writer.add(name, &h)?;
        written += 1;
        Ok(())
    }, &mut bar))?;
    bar.finish();
    let meta = HessianMeta { model: model_dir.display().to_string(), data: data_path.display().to_string(), nsamples: windows.nsamples, seqlen: windows.seqlen, seed: windows.seed };
    writer.finish(&meta)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::json!({"out": out, "hessians": written, "nsamples": windows.nsamples, "seqlen": windows.seqlen, "seconds": seconds}));
    } else {
        println!("{written} Hessians of {} windows × {} tokens written to {} in {seconds:.1} s", windows.nsamples, windows.seqlen, out.display());
    }
    Ok(())
}
