//! `lutlab fisher`: the diagonal Fisher information of a model's linear weights on a calibration
//! text, written as safetensors with the model's tensor names (see `lutlab_core::fisher_file`).

use crate::paths::{SHIPPED_MODEL, repo_path};
use crate::progress::Bar;
use anyhow::{Context, Result, bail};
use clap::Args;
use crate::model::{open_decoder, StreamOptions};
use lutlab_core::HostTensor;
use lutlab_core::files::read_text;
use lutlab_core::fisher_file::FisherWriter;
use lutlab_model::{FisherSettings, Decoder, fisher_into, open_gpu};
use crate::paths::WIKITEXT_VALID;
use std::path::PathBuf;
use std::time::Instant;


#[derive(Args)]
pub struct FisherArgs {
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// UTF-8 calibration text (default: WikiText-2 validation; the test split is for evaluation).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Number of random calibration windows.
    #[arg(long, default_value_t = FisherSettings::DEFAULT_NSAMPLES)]
    nsamples: usize,
    /// Tokens per window (default: the model's n_positions).
    #[arg(long)]
    seqlen: Option<usize>,
    /// Seed of the window sampler.
    #[arg(long, default_value_t = FisherSettings::DEFAULT_SEED)]
    seed: u64,
    /// Samples per forward/backward pass: more is faster on big GPUs and takes
    /// micro-batch × (linear weights + their gradients + activations) of memory.
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Blocks whose diagonal accumulates on the GPU in one pass over the windows (default: all
    /// of a resident model; for a streamed one, as many as 14 GiB of f32 accumulators hold, spread evenly over the passes). Fewer
    /// take less GPU memory and more passes.
    #[arg(long)]
    blocks_per_pass: Option<usize>,
    #[command(flatten)]
    stream: StreamOptions,
    /// Run one micro-batch untimed before the timed run, as PyTorch benchmarks warm up: the timed
    /// run then leaves out compiling the GPU's pipelines, which a first run in a process pays
    /// (for comparing speeds; the diagonal is the same).
    #[arg(long)]
    warm_up: bool,
    /// Output safetensors file (f32, the model's tensor names and shapes).
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: FisherArgs) -> Result<()> {
    let model_dir = args.model.unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    let data_path = args.data.unwrap_or_else(|| repo_path(WIKITEXT_VALID));
    // Fail before the long part if the result could not be written.
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!("{}: the output directory {} does not exist", args.out.display(), parent.display());
    }
    let gpu = pollster::block_on(open_gpu())?;
    let (model, tokenizer) = open_decoder(&model_dir, &args.stream, &gpu)?;
    let tokens = tokenizer.encode(&read_text(&data_path)?)?;
    let mut settings = FisherSettings::with_overrides(
        &model,
        Some(args.nsamples),
        args.seqlen,
        Some(args.seed),
        Some(args.micro_batch),
    )
    .fitted_to(&gpu);
    settings.blocks_per_pass = args.blocks_per_pass.or_else(|| model.is_streamed().then(|| default_blocks_per_pass(&model)));
    gpu.check_buffer_fits(settings.logits_bytes(model.config.vocab_size), "one micro-batch's logits", "--micro-batch or --seqlen")?;

    let what = data_path.display().to_string();
    if args.warm_up {
        let mut bar = Bar::new("warm-up", "tokens", args.json);
        let one_batch = FisherSettings { nsamples: settings.micro_batch.min(settings.nsamples), ..settings };
        pollster::block_on(fisher_into(&model, &tokens, one_batch, &what, &mut bar, &mut |_, _| Ok(())))?;
        bar.finish();
    }
    let mut bar = Bar::new("fisher", "tokens", args.json);
    let start = Instant::now();
    // Each block group's diagonal goes to disk as its pass ends; the file appears at the end.
    let mut writer = FisherWriter::create(&args.out, &model.config)?;
    let mut written = 0;
    let mut sink = |name: String, tensor: HostTensor| {
        written += 1;
        writer.add(&name, &tensor).map_err(Into::into)
    };
    let mut run = pollster::block_on(fisher_into(&model, &tokens, settings, &what, &mut bar, &mut sink))?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    run.diagonal.meta.model = model_dir.display().to_string();
    run.diagonal.meta.data = what.clone();
    writer.finish(&run.diagonal.meta).with_context(|| format!("writing {}", args.out.display()))?;

    let tokens_processed = settings.nsamples * settings.seqlen;
    let tokens_per_s = tokens_processed as f64 / seconds;
    let mean_loss = run.diagonal.meta.mean_loss.unwrap_or(f64::NAN);
    if args.json {
        let report = serde_json::json!({
            "model": model_dir.display().to_string(),
            "data": what,
            "device": gpu.describe(),
            "out": args.out.display().to_string(),
            "nsamples": settings.nsamples,
            "seqlen": settings.seqlen,
            "seed": settings.seed,
            "micro_batch": settings.micro_batch,
            "blocks_per_pass": settings.blocks_per_pass,
            "streamed": model.is_streamed(),
            "text_tokens": tokens.len(),
            "tokens": tokens_processed,
            "mean_loss": mean_loss,
            "seconds": seconds,
            "tokens_per_s": tokens_per_s,
            "peak_reserved_bytes": run.peak_reserved_bytes,
            "warm_up": args.warm_up,
        });
        println!("{report}");
    } else {
        let peak = run.peak_reserved_bytes.map_or(String::new(), |b| {
            format!(
                "; GPU pools peaked at {:.1} MiB",
                b as f64 / (1 << 20) as f64
            )
        });
        println!(
            "Fisher diagonal of {} linear weights from {} windows of {} tokens of {} (seed {}, mean loss {:.4}) in {:.1} s, {:.0} tokens/s on {}{peak}; wrote {}",
            written,
            settings.nsamples,
            settings.seqlen,
            what,
            settings.seed,
            mean_loss,
            seconds,
            tokens_per_s,
            gpu.describe(),
            args.out.display()
        );
    }
    Ok(())
}

/// GPU memory a streamed model's Fisher accumulators may take in one pass. A Llama-2-7B-shaped
/// model then runs 2 passes of 16 blocks (13 GB), which at micro-batch 1 and 2048 tokens should
/// peak near 20 GB: its last measured run peaked at 22 GiB with 8 GB of accumulators and 8 GB of
/// squared gradients that passes no longer hold (BENCHMARKS, "Fisher in passes").
const ACCUMULATOR_BYTES: usize = 14 << 30;

/// A streamed model's blocks per pass: each pass's f32 accumulators within
/// [`ACCUMULATOR_BYTES`].
fn default_blocks_per_pass(model: &Decoder) -> usize {
    let per_block: usize = model.config.block_linears().iter().map(|s| s.n_in * s.n_out * 4).sum();
    blocks_per_pass(model.n_blocks(), per_block, ACCUMULATOR_BYTES)
}

/// Blocks per pass for `blocks` blocks of `per_block` accumulator bytes when a pass may hold
/// `budget` bytes: the fewest passes, the blocks spread evenly over them (at least one a pass).
fn blocks_per_pass(blocks: usize, per_block: usize, budget: usize) -> usize {
    let fit = (budget / per_block.max(1)).max(1);
    let n = blocks.max(1);
    n.div_ceil(n.div_ceil(fit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_as_few_as_the_budget_allows_and_even() {
        // Llama-2-7B: 32 blocks of 202,375,168 linear weights, 0.81 GB of f32 each.
        let llama7b = 202_375_168 * 4;
        assert_eq!(blocks_per_pass(32, llama7b, ACCUMULATOR_BYTES), 16, "18 fit: 2 passes of 16, not 18 + 14");
        assert_eq!(blocks_per_pass(32, llama7b, 8 << 30), 8, "10 fit: 4 passes of 8");
        assert_eq!(blocks_per_pass(32, llama7b, 1), 1, "at least one block a pass");
        assert_eq!(blocks_per_pass(12, 1 << 20, ACCUMULATOR_BYTES), 12, "a small model in one pass");
        assert_eq!(blocks_per_pass(0, 1, 1), 1);
    }
}
