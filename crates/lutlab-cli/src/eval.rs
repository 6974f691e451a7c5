//! `lutlab eval`: perplexity of a model on a text file. [`measure`] is shared with `quantize`.

use crate::paths::{repo_path, SHIPPED_MODEL, WIKITEXT_TEST};
use crate::input_quant::{recorded_input_quantization, InputQuantArgs};
use crate::model::{dtype_name, open_decoder_as, DtypeOptions, StreamOptions};
use crate::progress::Bar;
use anyhow::Result;
use clap::Args;
use lutlab_core::files::read_text;
use lutlab_core::{ModelWeights, ModelFiles, TextTokenizer};
use lutlab_core::packed_file::PackedModel;
use lutlab_core::quant::inputs::InputMultipliers;
use lutlab_model::{open_gpu, perplexity, EvalSettings, Decoder, Gpu};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Where and how to measure perplexity; flattened into every command that evaluates.
#[derive(Args, Clone)]
pub struct EvalOptions {
    /// UTF-8 text to evaluate (default: WikiText-2 test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Window length in tokens (default: the model's n_positions).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Tokens between window starts (default: max-length / 2).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Input (activation) quantization during the evaluation.
    #[command(flatten)]
    pub inputs: InputQuantArgs,
    #[command(flatten)]
    pub dtype: DtypeOptions,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Hugging Face model directory (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Evaluate this packed file (`lutlab quantize --packed`) through the LUT kernels instead;
    /// only the tokenizer is read from --model.
    #[arg(long)]
    packed: Option<PathBuf>,
    #[command(flatten)]
    eval: EvalOptions,
    #[command(flatten)]
    stream: StreamOptions,
    /// Evaluate the text once untimed before the timed run, as PyTorch benchmarks warm up: the
    /// timed run then leaves out compiling the GPU's pipelines and tuning burn's kernels, which a
    /// first run in a process pays (for comparing speeds; the perplexity is the same).
    #[arg(long)]
    warm_up: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One perplexity measurement, as printed by `--json`.
#[derive(Serialize)]
pub struct EvalReport {
    pub data: String,
    /// The input quantization evaluated with (`--input-*`), if any.
    pub inputs: Option<String>,
    /// What the dense weights were multiplied in (`--dtype`).
    pub dtype: &'static str,
    pub device: String,
    pub max_length: usize,
    pub stride: usize,
    pub perplexity: f64,
    pub nll_sum: f64,
    pub tokens: usize,
    pub scored: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

impl EvalReport {
    pub fn line(&self) -> String {
        let inputs = self.inputs.as_ref().map(|label| format!(", inputs {label}")).unwrap_or_default();
        format!(
            "perplexity {:.4} on {} ({} tokens, {} scored; max-length {}, stride {}{inputs}; {}) in {:.1} s, {:.0} tokens/s on {}",
            self.perplexity, self.data, self.tokens, self.scored, self.max_length, self.stride, self.dtype, self.seconds, self.tokens_per_s, self.device
        )
    }
}

/// Perplexity of dense `weights` on the GPU, whose layers multiply their inputs by `multipliers`
/// (folded into the weights; input quantization applies them), with a progress bar unless `quiet`.
pub fn measure(weights: &ModelWeights, multipliers: InputMultipliers, tokenizer: &TextTokenizer, options: &EvalOptions, quiet: bool) -> Result<EvalReport> {
    let gpu = pollster::block_on(open_gpu())?;
    gpu.check_fits(weights)?;
    let dtype = options.dtype.resolve(&weights.config, &gpu)?;
    let model = Decoder { input_multipliers: multipliers, ..Decoder::new_as(weights, &gpu.device, dtype) };
    measure_model(model, &gpu, tokenizer, options, quiet, false)
}

/// [`measure_packed`] of a model the caller is done with: it is dropped once it is on the GPU, so
/// host memory holds a 7B packed model only while it uploads. `warm_up`: see `eval --warm-up`.
pub fn measure_packed_owned(packed: PackedModel, tokenizer: &TextTokenizer, options: &EvalOptions, quiet: bool, warm_up: bool) -> Result<EvalReport> {
    let gpu = pollster::block_on(open_gpu())?;
    let model = Decoder::from_packed(&packed, &gpu.device)?;
    drop(packed);
    measure_model(model, &gpu, tokenizer, options, quiet, warm_up)
}

/// Perplexity of a packed model, its linear layers running from their codes.
pub fn measure_packed(packed: &PackedModel, tokenizer: &TextTokenizer, options: &EvalOptions, quiet: bool) -> Result<EvalReport> {
    let gpu = pollster::block_on(open_gpu())?;
    measure_model(Decoder::from_packed(packed, &gpu.device)?, &gpu, tokenizer, options, quiet, false)
}

/// Perplexity of `model`, its inputs quantized first if `options` ask; with `warm_up`, the timed
/// run is the second.
fn measure_model(model: Decoder, gpu: &Gpu, tokenizer: &TextTokenizer, options: &EvalOptions, quiet: bool, warm_up: bool) -> Result<EvalReport> {
    let dtype = options.dtype.resolve(&model.config, gpu)?;
    let mut model = model.stored_as(dtype);
    // The --input-* options, else what the checkpoint's config.json records (`export`).
    let inputs = match options.inputs.apply(&mut model, tokenizer, quiet)? {
        Some(label) => Some(label),
        None => model.input_quant.as_ref().map(|q| format!("{} (recorded in config.json)", q.settings.label())),
    };
    let model = &model;
    let data_path = options.data.clone().unwrap_or_else(|| repo_path(WIKITEXT_TEST));
    let what = data_path.display().to_string();
    let tokens = tokenizer.encode(&read_text(&data_path)?)?;
    let settings = EvalSettings::with_overrides(model, options.max_length, options.stride).fitted_to(gpu);

    if warm_up {
        let mut bar = Bar::new("warm-up", "tokens", quiet);
        pollster::block_on(perplexity(model, &tokens, settings, &what, &mut bar))?;
        bar.finish();
    }
    let mut bar = Bar::new("perplexity", "tokens", quiet);
    let start = Instant::now();
    let nll = pollster::block_on(perplexity(model, &tokens, settings, &what, &mut bar))?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    Ok(EvalReport {
        data: what,
        inputs,
        dtype: dtype_name(dtype),
        device: gpu.describe(),
        max_length: settings.max_length,
        stride: settings.stride,
        perplexity: nll.perplexity(),
        nll_sum: nll.nll_sum,
        tokens: tokens.len(),
        scored: nll.scored,
        seconds,
        tokens_per_s: nll.scored as f64 / seconds,
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    // Settings are checked before any model is read or the GPU opened.
    args.eval.inputs.settings()?;
    args.eval.dtype.check()?;
    let (report, evaluated) = match &args.packed {
        Some(path) => {
            let packed = read_packed(path)?;
            let tokenizer = TextTokenizer::from_files(&ModelFiles::read_tokenizer(&tokenizer_dir(&packed, args.model.as_deref(), path)?)?)?;
            (measure_packed_owned(packed, &tokenizer, &args.eval, args.json, args.warm_up)?, path.display().to_string())
        }
        None => {
            let model_dir = args.model.unwrap_or_else(|| repo_path(SHIPPED_MODEL));
            let gpu = pollster::block_on(open_gpu())?;
            let (mut model, tokenizer) = open_decoder_as(&model_dir, &args.stream, &gpu, Some(&args.eval.dtype))?;
            if let Some(recorded) = recorded_input_quantization(&model_dir, &model.config)? {
                model.input_multipliers = recorded.multipliers.clone();
                model.quantize_inputs(recorded)?;
            }
            (measure_model(model, &gpu, &tokenizer, &args.eval, args.json, args.warm_up)?, model_dir.display().to_string())
        }
    };
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["model"] = evaluated.into();
        println!("{json}");
    } else {
        println!("{}", report.line());
    }
    Ok(())
}

/// Where a packed model's tokenizer comes from: `--model`, or for GPT-2 files the shipped model
/// (GPT-2's tokenizer). Other families' tokenizers differ per model, so they must be named.
pub fn tokenizer_dir(packed: &PackedModel, model: Option<&std::path::Path>, path: &std::path::Path) -> Result<std::path::PathBuf> {
    match model {
        Some(dir) => Ok(dir.to_path_buf()),
        None if packed.config.family == lutlab_core::Family::Gpt2 => Ok(repo_path(SHIPPED_MODEL)),
        None => anyhow::bail!(
            "{}: a packed {} model; give --model DIR holding its tokenizer (it was made from {})",
            path.display(),
            packed.config.model_type,
            if packed.meta.base_model.is_empty() { "an unrecorded model" } else { packed.meta.base_model.as_str() }
        ),
    }
}

/// Reads and validates a packed model file.
pub fn read_packed(path: &std::path::Path) -> Result<PackedModel> {
    // A tensor at a time: the file's bytes and the parsed model are never in memory together.
    Ok(PackedModel::read_file(path)?)
}
