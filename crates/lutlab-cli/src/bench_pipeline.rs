//! `lutlab bench pipeline`: the whole path a user takes, in one process and on one GPU — Fisher
//! on calibration windows → Fisher-weighted k-means → pack → upload the packed model → perplexity
//! through the LUT kernels — each phase timed by the wall clock, beside the dense model's
//! perplexity on the same text (the eval peer of the packed one). Loading the files and opening
//! the GPU are not timed: they are the same for every method.

use crate::paths::{repo_path, SHIPPED_MODEL, WIKITEXT_TEST, WIKITEXT_VALID};
use crate::progress::Bar;
use anyhow::{bail, Context, Result};
use clap::Args;
use lutlab_core::files::read_text;
use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::model::SampleWeights;
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::ModelFiles;
use lutlab_gpu::quantize_model_gpu;
use lutlab_model::{fisher, open_gpu, perplexity, EvalSettings, FisherSettings, Decoder};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PipelineArgs {
    /// Hugging Face model directory (default: the shipped model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Calibration text for Fisher (default: WikiText-2 validation).
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Evaluation text (default: WikiText-2 test).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Fisher windows (the pipeline: 128).
    #[arg(long, default_value_t = 128)]
    nsamples: usize,
    /// Tokens per Fisher window and evaluation window (default: the model's n_positions).
    #[arg(long)]
    seqlen: Option<usize>,
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    #[arg(long, default_value_t = 4)]
    bits: u32,
    /// tensor, channel or group:G.
    #[arg(long, default_value = "channel")]
    granularity: String,
    /// k-means++ restarts per table (1 is sklearn's `n_init="auto"`, as `nuq.py`).
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// Evaluate only the first N tokens of the text (default: all of it).
    #[arg(long)]
    eval_tokens: Option<usize>,
    /// Run k-means with the CPU reference instead of the GPU (software adapters).
    #[arg(long)]
    cpu_kmeans: bool,
    /// A smoke run for CI: 2 Fisher windows of 64 tokens, 2,000 evaluation tokens, CPU k-means.
    #[arg(long)]
    quick: bool,
    /// Also write the Fisher file and the packed model into this directory (after the clock), for
    /// the peers' scripts (`bench_sklearn.py --fisher --packed` compares objectives).
    #[arg(long)]
    save: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// What `--json` prints: every phase's seconds and the rates users compare.
#[derive(Serialize)]
pub struct PipelineReport {
    pub model: String,
    pub device: String,
    pub method: String,
    pub fisher_tokens: usize,
    pub fisher_seconds: f64,
    pub fisher_tokens_per_s: f64,
    /// The GPU memory pools' peak during Fisher, where the backend reports it.
    pub fisher_peak_reserved_bytes: Option<u64>,
    pub kmeans_on: &'static str,
    pub kmeans_seconds: f64,
    pub pack_seconds: f64,
    pub packed_bytes: usize,
    pub upload_seconds: f64,
    pub eval_window: usize,
    pub eval_scored_tokens: usize,
    pub packed_eval_seconds: f64,
    pub packed_eval_tokens_per_s: f64,
    pub packed_perplexity: f64,
    pub dense_eval_seconds: f64,
    pub dense_eval_tokens_per_s: f64,
    pub dense_perplexity: f64,
    /// Fisher + k-means + pack + upload + packed evaluation.
    pub pipeline_seconds: f64,
}

pub fn run(mut args: PipelineArgs) -> Result<()> {
    if args.quick {
        (args.nsamples, args.seqlen, args.eval_tokens, args.cpu_kmeans) = (2, Some(64), Some(2_000), true);
    }
    if args.restarts == 0 {
        bail!("--restarts must be at least 1");
    }
    let report = pipeline(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    Ok(())
}

fn pipeline(args: &PipelineArgs) -> Result<PipelineReport> {
    let model_dir = args.model.clone().unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    let loaded = ModelFiles::read_dir(&model_dir)?.load()?;
    let weights = &loaded.weights;
    let calibration_path = args.calibration.clone().unwrap_or_else(|| repo_path(WIKITEXT_VALID));
    let calibration_tokens = loaded.tokenizer.encode(&read_text(&calibration_path)?)?;
    let data_path = args.data.clone().unwrap_or_else(|| repo_path(WIKITEXT_TEST));
    let mut eval_tokens = loaded.tokenizer.encode(&read_text(&data_path)?)?;
    eval_tokens.truncate(args.eval_tokens.unwrap_or(usize::MAX));
    let request = QuantizeRequest {
        bits: args.bits,
        granularity: args.granularity.clone(),
        restarts: Some(args.restarts),
        ..QuantizeRequest::default()
    };
    let method = request.method(weights, true)?;
    let gpu = pollster::block_on(open_gpu())?;
    gpu.check_fits(weights)?;
    let dense = Decoder::new(weights, &gpu.device);

    let clock = Instant::now();
    let settings = FisherSettings::with_overrides(&dense, Some(args.nsamples), args.seqlen, None, Some(args.micro_batch)).fitted_to(&gpu);
    let mut bar = Bar::new("fisher", "tokens", args.json);
    let what = calibration_path.display().to_string();
    let run = pollster::block_on(fisher(&dense, &calibration_tokens, settings, &what, &mut bar))?;
    let (diagonal, fisher_peak_reserved_bytes) = (run.diagonal, run.peak_reserved_bytes);
    bar.finish();
    let fisher_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let lookup = |name: &str| diagonal.get(name).map(|t| t.data.as_slice());
    let sample_weights: SampleWeights = &lookup;
    let calibration = Calibration { fisher: Some(sample_weights), ..Default::default() };
    let mut bar = Bar::new("quantize", "weights", args.json);
    let quantized = if args.cpu_kmeans {
        quantize_model(weights, &method, None, calibration, &mut bar)?
    } else {
        pollster::block_on(quantize_model_gpu(&gpu, weights, &method, None, calibration, &mut bar))?
    };
    bar.finish();
    let kmeans_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let label = request.label(true);
    let meta = PackedMeta { base_model: model_dir.display().to_string(), method: label.clone(), settings: serde_json::to_string(&request)?, allocation: String::new() };
    let packed = PackedModel::from_quantized(weights, &quantized, meta, TableDtype::F16)?;
    let packed_file = packed.to_safetensors(TableDtype::F16)?;
    let pack_seconds = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let packed_model = Decoder::from_packed(&packed, &gpu.device)?;
    let upload_seconds = clock.elapsed().as_secs_f64();

    let eval_settings = EvalSettings::with_overrides(&dense, args.seqlen, None).fitted_to(&gpu);
    let what = data_path.display().to_string();
    let (packed_eval_seconds, packed_nll) = timed_eval(&packed_model, &eval_tokens, eval_settings, &what, args.json)?;
    let (dense_eval_seconds, dense_nll) = timed_eval(&dense, &eval_tokens, eval_settings, &what, args.json)?;
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).with_context(|| format!("writing {}", dir.join(name).display()));
        write("fisher.safetensors", &diagonal.to_safetensors()?)?;
        write("packed.safetensors", &packed_file)?;
    }
    let fisher_tokens = settings.nsamples * settings.seqlen;
    Ok(PipelineReport {
        model: model_dir.display().to_string(),
        device: gpu.describe(),
        method: label,
        fisher_tokens,
        fisher_seconds,
        fisher_tokens_per_s: fisher_tokens as f64 / fisher_seconds,
        fisher_peak_reserved_bytes,
        kmeans_on: if args.cpu_kmeans { "cpu" } else { "gpu" },
        kmeans_seconds,
        pack_seconds,
        packed_bytes: packed_file.len(),
        upload_seconds,
        eval_window: eval_settings.max_length,
        eval_scored_tokens: packed_nll.scored,
        packed_eval_seconds,
        packed_eval_tokens_per_s: packed_nll.scored as f64 / packed_eval_seconds,
        packed_perplexity: packed_nll.perplexity(),
        dense_eval_seconds,
        dense_eval_tokens_per_s: dense_nll.scored as f64 / dense_eval_seconds,
        dense_perplexity: dense_nll.perplexity(),
        pipeline_seconds: fisher_seconds + kmeans_seconds + pack_seconds + upload_seconds + packed_eval_seconds,
    })
}

fn timed_eval(model: &Decoder, tokens: &[u32], settings: EvalSettings, what: &str, quiet: bool) -> Result<(f64, lutlab_core::NllSum)> {
    let mut bar = Bar::new("perplexity", "tokens", quiet);
    let clock = Instant::now();
    let nll = pollster::block_on(perplexity(model, tokens, settings, what, &mut bar))?;
    bar.finish();
    Ok((clock.elapsed().as_secs_f64(), nll))
}

fn print(r: &PipelineReport) {
    println!("{} · {} · {}", r.model, r.method, r.device);
    println!("{:<34} {:>10} {:>14}", "phase", "seconds", "rate");
    println!("{:<34} {:>10.3} {:>10.0} tok/s", format!("fisher ({} tokens)", r.fisher_tokens), r.fisher_seconds, r.fisher_tokens_per_s);
    println!("{:<34} {:>10.3}", format!("k-means ({})", r.kmeans_on), r.kmeans_seconds);
    println!("{:<34} {:>10.3} {:>11.1} MB", "pack (file bytes)", r.pack_seconds, r.packed_bytes as f64 / 1e6);
    println!("{:<34} {:>10.3}", "upload packed model", r.upload_seconds);
    println!("{:<34} {:>10.3} {:>10.0} tok/s", format!("eval packed (ppl {:.3})", r.packed_perplexity), r.packed_eval_seconds, r.packed_eval_tokens_per_s);
    println!("{:<34} {:>10.3}", "pipeline total", r.pipeline_seconds);
    println!("{:<34} {:>10.3} {:>10.0} tok/s", format!("eval dense (ppl {:.3})", r.dense_perplexity), r.dense_eval_seconds, r.dense_eval_tokens_per_s);
}
