//! `lutlab generate`: continue a prompt with a model or a packed file (through the LUT kernels),
//! greedily or by seeded sampling; the page's "see the difference in words" from the shell.

use crate::eval::{read_packed, tokenizer_dir};
use crate::model::{dtype_name, DtypeOptions};
use crate::paths::{repo_path, SHIPPED_MODEL};
use crate::progress::Bar;
use anyhow::{bail, Result};
use clap::Args;
use lutlab_core::{ModelFiles, TextTokenizer};
use lutlab_model::generate::{continuation, end_of_text, generate, GenerateSettings, Sampling};
use lutlab_model::{open_gpu, Decoder};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct GenerateArgs {
    /// Hugging Face model directory (default: the shipped model); with --packed, only its
    /// tokenizer is read.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Generate with this packed file (`lutlab quantize --packed`) through the LUT kernels.
    #[arg(long)]
    packed: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// How many tokens to add at most (fewer if the model ends the text or its context is full).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sample at this temperature instead of taking the most likely token (greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// When sampling: draw among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 50, requires = "temperature")]
    top_k: usize,
    /// When sampling: the generator's seed (the same seed gives the same text).
    #[arg(long, default_value_t = 0, requires = "temperature")]
    seed: u64,
    #[command(flatten)]
    dtype: DtypeOptions,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct GenerateReport {
    model: String,
    device: String,
    /// What the dense weights were multiplied in (`--dtype`).
    dtype: &'static str,
    prompt: String,
    prompt_tokens: Vec<u32>,
    /// The new tokens and their text (the prompt not repeated).
    tokens: Vec<u32>,
    text: String,
    sampling: String,
    stopped: &'static str,
    seconds: f64,
    tokens_per_s: f64,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    args.dtype.check()?;
    let gpu = pollster::block_on(open_gpu())?;
    let (model, tokenizer, what) = match &args.packed {
        Some(path) => {
            let packed = read_packed(path)?;
            let tokenizer = TextTokenizer::from_files(&ModelFiles::read_tokenizer(&tokenizer_dir(&packed, args.model.as_deref(), path)?)?)?;
            let dtype = args.dtype.resolve(&packed.config, &gpu)?;
            (Decoder::from_packed(&packed, &gpu.device)?.stored_as(dtype), tokenizer, path.display().to_string())
        }
        None => {
            let model_dir = args.model.clone().unwrap_or_else(|| repo_path(SHIPPED_MODEL));
            let loaded = ModelFiles::read_dir(&model_dir)?.load()?;
            gpu.check_fits(&loaded.weights)?;
            let dtype = args.dtype.resolve(&loaded.weights.config, &gpu)?;
            (Decoder::new_as(&loaded.weights, &gpu.device, dtype), loaded.tokenizer, model_dir.display().to_string())
        }
    };
    let dtype = model.dtype;
    let prompt_tokens = tokenizer.encode(&args.prompt)?;
    if prompt_tokens.is_empty() {
        bail!("the prompt is empty: give some text to continue (--prompt)");
    }
    let sampling = match args.temperature {
        Some(temperature) => Sampling::Sample { temperature, top_k: args.top_k, seed: args.seed },
        None => Sampling::Greedy,
    };
    let settings = GenerateSettings { max_new_tokens: args.max_new_tokens, sampling, stop_token: end_of_text(&tokenizer) };

    let mut bar = Bar::new("generate", "tokens", args.json);
    let start = Instant::now();
    let generation = pollster::block_on(generate(&model, &prompt_tokens, settings, &mut bar))?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    let text = continuation(&tokenizer, &prompt_tokens, &generation.tokens)?;
    let report = GenerateReport {
        model: what,
        device: gpu.describe(),
        dtype: dtype_name(dtype),
        prompt: args.prompt,
        prompt_tokens,
        tokens_per_s: generation.tokens.len() as f64 / seconds.max(1e-9),
        tokens: generation.tokens,
        text,
        sampling: sampling.to_string(),
        stopped: generation.stopped.as_str(),
        seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}{}", report.prompt, report.text);
        eprintln!(
            "{} new tokens ({}) in {:.2} s, {:.1} tokens/s on {}",
            report.tokens.len(),
            report.sampling,
            report.seconds,
            report.tokens_per_s,
            report.device
        );
        if let Some(why) = generation.stopped.explain(model.config.n_positions) {
            eprintln!("{why}");
        }
    }
    Ok(())
}
