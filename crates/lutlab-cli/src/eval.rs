//! `lutlab eval`: perplexity of a model on a text file.

use crate::paths::{repo_path, SHIPPED_MODEL, WIKITEXT_TEST};
use crate::progress::Bar;
use anyhow::Result;
use clap::Args;
use lutlab_core::files::read_text;
use lutlab_core::ModelFiles;
use lutlab_model::{open_gpu, perplexity, EvalSettings, Gpt2};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// UTF-8 text to evaluate.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Window length in tokens (default: the model's n_positions).
    #[arg(long)]
    max_length: Option<usize>,
    /// Tokens between window starts (default: max-length / 2).
    #[arg(long)]
    stride: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model_dir = args.model.unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    let data_path = args.data.unwrap_or_else(|| repo_path(WIKITEXT_TEST));
    let loaded = ModelFiles::read_dir(&model_dir)?.load()?;
    let text = read_text(&data_path)?;
    let tokens = loaded.tokenizer.encode(&text)?;

    let gpu = pollster::block_on(open_gpu())?;
    gpu.check_fits(&loaded.weights)?;
    let model = Gpt2::new(&loaded.weights, &gpu.device);
    let settings = EvalSettings::with_overrides(&model, args.max_length, args.stride);

    let mut bar = Bar::new("perplexity", "tokens", args.json);
    let start = Instant::now();
    let what = data_path.display().to_string();
    let nll = pollster::block_on(perplexity(&model, &tokens, settings, &what, &mut bar))?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();

    let tokens_per_s = nll.scored as f64 / seconds;
    if args.json {
        let report = serde_json::json!({
            "model": model_dir.display().to_string(),
            "data": what,
            "device": gpu.describe(),
            "max_length": settings.max_length,
            "stride": settings.stride,
            "perplexity": nll.perplexity(),
            "nll_sum": nll.nll_sum,
            "tokens": tokens.len(),
            "scored": nll.scored,
            "seconds": seconds,
            "tokens_per_s": tokens_per_s,
        });
        println!("{report}");
    } else {
        println!(
            "perplexity {:.4} on {} ({} tokens, {} scored; max-length {}, stride {}) in {:.1} s, {:.0} tokens/s on {}",
            nll.perplexity(),
            what,
            tokens.len(),
            nll.scored,
            settings.max_length,
            settings.stride,
            seconds,
            tokens_per_s,
            gpu.describe()
        );
    }
    Ok(())
}
