//! `lutlab quantize`: quantizes every linear weight of a model (k-means LUTs or uniform RTN), reports
//! the error per layer, evaluates the result and/or writes it as a Hugging Face checkpoint of
//! dequantized weights (loads in transformers and in `lutlab eval`).

use crate::eval::{measure, measure_packed, EvalOptions};
use crate::paths::{repo_path, SHIPPED_MODEL};
use crate::model::StreamOptions;
use crate::progress::Bar;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use lutlab_core::checkpoint::write_safetensors;
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::model_transforms::scale_fisher_rows;
use lutlab_core::files::{read_file, CONFIG_FILE, MERGES_FILE, TOKENIZER_JSON_FILE, VOCAB_FILE};
use lutlab_core::quant::mixed::AllocationReport;
use lutlab_core::quant::{quantize_model, Calibration, Method, QuantizeRequest, QuantizedLayer, QuantizedModel};
use crate::quantize_budget::quantize_mixed;
use lutlab_gpu::quantize_model_gpu;
use lutlab_model::{open_gpu, ActivationSettings};
use lutlab_core::files::checkpoint_bytes;
use lutlab_core::packed_file::{config_json, PackedMeta, PackedModel, TableDtype};
use lutlab_core::packed_size::PackedSizes;
use lutlab_core::{ModelWeights, ModelFiles};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
enum MethodName {
    /// Weighted k-means look-up tables (seed 000, SqueezeLLM).
    Kmeans,
    /// Round-to-nearest onto a uniform integer or minifloat grid (Brevitas' options).
    Rtn,
    /// GPTQ: error feedback through each layer's Hessian, onto --grid.
    Gptq,
    /// QuIP's LDLQ (the same rounding as GPTQ, written with H's LDL factors).
    Ldlq,
    /// LDLQ with inputs reordered by H's diagonal, then --npasses greedy passes.
    #[value(name = "ldlq-rg")]
    LdlqRg,
    /// Greedy coordinate passes over the proxy loss from round-to-nearest (QuIP's allbal).
    Greedy,
    /// QuIP's ldlbal_admm: feedback with bounded columns found by ADMM, then --npasses
    /// triangle-greedy passes.
    #[value(name = "ldlbal-admm")]
    LdlbalAdmm,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// Hugging Face model directory (default: the shipped model).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "kmeans")]
    method: MethodName,
    /// Bits per weight: 1..8 for k-means, 2..8 for rtn.
    #[arg(long, default_value_t = 4)]
    pub(crate) bits: u32,
    /// Mixed precision: each layer's width chosen from --widths for the least estimated loss
    /// under this size, in bits per weight (3.5bpw) or the packed file's size (12MB, 12MiB).
    /// The estimate: the Fisher-weighted error Σ F·(w−q)² with --fisher, a Hessian method's
    /// proxy loss, else the plain squared error. Every stored byte (codes, tables, scales,
    /// outliers) counts toward the budget.
    #[arg(long)]
    pub(crate) budget: Option<String>,
    /// Candidate widths for --budget (default 2,3,4,5,6,8).
    #[arg(long, value_delimiter = ',', requires = "budget")]
    pub(crate) widths: Vec<u32>,
    /// What --budget gives a width to: `layers` (default), or `channels:N`, each block of N
    /// output channels of a layer (tables per channel or per group dividing N; priced by the
    /// Fisher-weighted or plain squared error of its columns). A layer whose blocks get
    /// different widths is stored as column parts (format version 6), one per run of blocks of
    /// one width, each through its own kernels.
    #[arg(long, requires = "budget")]
    pub(crate) allocate_per: Option<String>,
    /// Fold each block norm's γ and β into the linears that read it before quantizing (Brevitas'
    /// --ln-affine-merge; pre-norm models). The float model is unchanged; the quantizers see
    /// the merged weights. A --fisher file is carried over (divided by γ²).
    #[arg(long)]
    pub(crate) ln_affine_merge: bool,
    /// Cross-layer weight equalization before quantizing (Brevitas' --weight-equalization): each
    /// value/output projection pair, and ReLU (OPT) or SwiGLU (Llama) up/down pair, gets equal
    /// weight ranges per channel, s = √(r₁/r₂) moved from one into the other; exact in float.
    #[arg(long)]
    pub(crate) weight_equalization: bool,
    /// Bias correction after quantizing (Brevitas' --bias-corr): each linear's bias gets
    /// E[x]·(W − W_q), its mean input measured in the weight-quantized model on --calibration-data.
    #[arg(long)]
    pub(crate) bias_corr: bool,
    /// llm-awq's search results, applied before anything else (Brevitas' --load-awq): its
    /// per-channel scales (exact in float) and per-group clipping. The .pt file that llm-awq's
    /// --dump_awq writes, converted by scripts/awq_to_safetensors.py.
    #[arg(long)]
    pub(crate) load_awq: Option<PathBuf>,
    /// SmoothQuant before quantizing (Brevitas' --act-equalization): `fused` divides each input
    /// channel of q/k/v and the MLP's first linear(s) by s = max|x|^α / max|w|^(1−α) inside the
    /// norm before them and multiplies the weights by it; ranges from --calibration-data.
    #[arg(long)]
    pub(crate) act_equalization: Option<String>,
    /// SmoothQuant's migration strength α (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub(crate) alpha: f64,
    /// Widths by rule, PATTERN=BITS (comma-separated or repeated; llama.cpp's --tensor-type):
    /// layers whose name contains PATTERN get BITS bits, the last matching rule winning; the
    /// others get --bits. E.g. `mlp.c_proj=6,h.0.=6`.
    #[arg(long, value_delimiter = ',', conflicts_with = "budget")]
    pub(crate) layer_bits: Vec<String>,
    /// tensor | channel | group | group:G (k-means: G output channels per table; rtn: G input
    /// rows per scale, as Brevitas, or channel-group:G).
    #[arg(long, default_value = "tensor")]
    pub(crate) granularity: String,
    /// Fisher diagonal (`lutlab fisher`, or SqueezeLLM-style gradients with the model's names):
    /// weights the k-means objective and picks sensitive weights. Without it, uniform weights.
    #[arg(long)]
    pub(crate) fisher: Option<PathBuf>,
    /// Dense-and-sparse: keep this percent of weights, the farthest from each layer's quartiles,
    /// exactly (SqueezeLLM's paper: 0.45).
    #[arg(long)]
    pub(crate) outlier_percent: Option<f64>,
    /// Dense-and-sparse: SqueezeLLM's `range` factor directly, instead of --outlier-percent.
    #[arg(long, conflicts_with = "outlier_percent")]
    pub(crate) range: Option<f64>,
    /// Dense-and-sparse: also keep the top PCT % of weights by Fisher value (paper: 0.05).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) sensitive: f64,
    /// k-means++ seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// k-means++ runs per table, the best kept (default 10; sklearn's `n_init="auto"`, as
    /// SqueezeLLM's nuq.py calls it, is 1).
    #[arg(long)]
    pub(crate) restarts: Option<usize>,
    /// k-means over vectors of this many consecutive input rows of a channel (2 or 4): codebooks
    /// of 2^(bits·dim) entries, bits per weight as a scalar table (fitted on the CPU).
    #[arg(long)]
    pub(crate) vector_dim: Option<usize>,
    /// Quantize on the GPU: k-means' Lloyd iterations (WGSL), and GPTQ/LDLQ's factorization,
    /// row loop and batch updates onto fixed tables (f32, as GPTQ's own code); the CPU reference
    /// (f64 for the Hessian methods) otherwise.
    #[arg(long)]
    pub(crate) gpu: bool,
    /// k-means: seed 000's scaling (a ± standard-deviation scale per output channel).
    #[arg(long)]
    pub(crate) scaling: bool,
    /// k-means: seed 000's centering (each layer's mean input, from --calibration-data, is
    /// subtracted from its input and folded into its bias).
    #[arg(long)]
    pub(crate) centering: bool,
    /// Calibration text for centering (default: WikiText-2 valid).
    #[arg(long)]
    pub(crate) calibration_data: Option<PathBuf>,
    /// Random windows of calibration text for centering (seed 000: 100).
    #[arg(long, default_value_t = ActivationSettings::DEFAULT_NSAMPLES)]
    pub(crate) calibration_samples: usize,
    /// rtn number format: int, e4m3, e5m2, fnuz_e4m3, e2m1, e3m2, e2m3, ...
    #[arg(long, default_value = "int")]
    pub(crate) format: String,
    /// rtn: asymmetric grid with a zero point (integers only).
    #[arg(long)]
    pub(crate) asym: bool,
    /// rtn scale estimation: stats | percentile:P | mse | hqo.
    #[arg(long, default_value = "stats")]
    pub(crate) scale_stats: String,
    /// rtn scale type: float | po2.
    #[arg(long, default_value = "float")]
    pub(crate) scale_type: String,
    /// Asymmetric uniform grids: round each zero point to an integer, as GPTQ's quantizer does
    /// (Brevitas' --quantize-weight-zero-point).
    #[arg(long)]
    pub(crate) quantize_zero_point: bool,
    /// Only blocks START,END (end exclusive), as SqueezeLLM's nuq.py `--range`.
    #[arg(long)]
    pub(crate) blocks: Option<String>,
    /// Also quantize the token embedding and the LM head (one tied matrix, quantized as the head's
    /// [n_embd, vocab] linear: a table per token at channel granularity). Off by default: they
    /// stay f32, as in seed 000 and SqueezeLLM. The head's k-means is never Fisher-weighted
    /// (`lutlab fisher` measures the blocks' linears) nor centered.
    #[arg(long)]
    pub(crate) quantize_embeddings: bool,
    /// Hessian methods: the grid, kmeans or a number format (int, e2m1, e4m3, ...; scales as
    /// for rtn: --asym, --scale-stats, --scale-type).
    #[arg(long, default_value = "int")]
    pub(crate) grid: String,
    /// Hessian methods: round inputs by decreasing H[k,k] (GPTQ's --act-order).
    #[arg(long)]
    pub(crate) act_order: bool,
    /// Hessian methods: damping, a fraction of H's mean diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) percdamp: f64,
    /// Hessian methods: rows updated together (lazy batch updates).
    #[arg(long, default_value_t = 128)]
    pub(crate) blocksize: usize,
    /// Hessian methods: fit group:G scales on the original weights before rounding.
    #[arg(long)]
    pub(crate) static_groups: bool,
    /// ldlq-rg and greedy: greedy passes (default 1).
    #[arg(long)]
    pub(crate) npasses: Option<usize>,
    /// Hessian methods: QuIP's incoherence processing (--pre-rescale --pre-proj --qfn b). The
    /// packed layer keeps its rotated codes and applies the rotations in the forward pass.
    #[arg(long)]
    pub(crate) incoherence: bool,
    /// Hessian methods: QuIP's diagonal rescaling of each input by (H_ii / |W_i|²)^(1/4).
    #[arg(long)]
    pub(crate) pre_rescale: bool,
    /// Hessian methods: QuIP's random orthogonal (Kronecker) transforms on both sides.
    #[arg(long)]
    pub(crate) pre_proj: bool,
    /// Hessian methods: QuIP's quantizer, a (the --grid) or b (per channel, ±2.4 RMS).
    #[arg(long, default_value = "a")]
    pub(crate) qfn: String,
    /// Hessian methods: read each layer's Hessian from this file (`lutlab hessian --out`,
    /// float inputs) instead of computing them sequentially on the GPU.
    #[arg(long)]
    pub(crate) hessian: Option<PathBuf>,
    /// Hessian methods: windows of --calibration-data for the sequential Hessians (GPTQ: 128).
    #[arg(long, default_value_t = lutlab_model::HessianSettings::DEFAULT_NSAMPLES)]
    pub(crate) hessian_samples: usize,
    /// Hessian methods: tokens per window (default: the model's context, at most 2048).
    #[arg(long)]
    pub(crate) hessian_seqlen: Option<usize>,
    /// Hessian methods: quantize each block's input groups in turn ([q,k,v], [o], [gate,up],
    /// [down]), each seeing the groups before it quantized.
    #[arg(long)]
    pub(crate) true_sequential: bool,
    /// Evaluate the quantized model's perplexity (on --data, default WikiText-2 test).
    #[arg(long)]
    pub(crate) eval: bool,
    #[command(flatten)]
    pub(crate) eval_options: EvalOptions,
    #[command(flatten)]
    pub(crate) stream: StreamOptions,
    /// Write the dequantized model as a Hugging Face checkpoint directory.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Write the packed model (docs/FORMAT.md) to this file; `lutlab eval --packed` and the
    /// page run it through the LUT kernels.
    #[arg(long)]
    pub(crate) packed: Option<PathBuf>,
    /// How the packed file stores table entries: f16 (tables rounded, and evaluated as stored)
    /// or f32.
    #[arg(long, default_value = "f16")]
    pub(crate) table_dtype: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let model_dir = args.model.clone().unwrap_or_else(|| repo_path(SHIPPED_MODEL));
    if !args.eval && args.out.is_none() && args.packed.is_none() {
        bail!("nothing to do with the result: pass --eval, --out DIR and/or --packed FILE");
    }
    if args.bias_corr && args.centering {
        bail!("--bias-corr and --centering both fold mean inputs into the biases: give one");
    }
    if args.eval_options.inputs.settings()?.is_some() && !args.eval {
        bail!("--input-bit-width quantizes inputs while evaluating: add --eval");
    }
    let table_dtype: TableDtype = args.table_dtype.parse()?;
    let blocks = args.blocks.as_deref().map(parse_blocks).transpose()?;
    let config = ModelFiles::open_dir(&model_dir)?.config;
    if args.stream.streams(&config) {
        return crate::quantize_streamed::run(&args, &model_dir, &args.request(), blocks, table_dtype);
    }
    let mut loaded = ModelFiles::open_dir(&model_dir)?.load()?;
    // A Fisher file describes the original weights: read, then carried over by the transforms.
    let mut fisher = args.fisher.as_deref().map(|path| read_fisher(path, &loaded.weights)).transpose()?;
    let smoothing = crate::model_transforms::apply(&args, &mut loaded, fisher.as_mut())?;
    let weights = &loaded.weights;
    let request = args.request();
    let method = request.method(weights, fisher.is_some())?;
    let selection = request.selection(blocks);
    // Layerwise smoothing: the quantizers round `diag(s)·W` with the Fisher diagonal carried
    // over, and each result is turned back into the layer as it runs on its unscaled input.
    let scaled_weights = smoothing.as_ref().map(|s| s.scaled(weights));
    let scaled_fisher = smoothing.as_ref().zip(fisher.as_ref()).map(|(s, f)| {
        let mut f = f.clone();
        scale_fisher_rows(&mut f, &s.scales);
        f
    });
    let rounded_weights = scaled_weights.as_ref().unwrap_or(weights);
    let rounded_fisher = scaled_fisher.as_ref().or(fisher.as_ref());

    let input_means = if args.centering { Some(crate::model_transforms::input_stats(&args, &loaded, "mean inputs")?.means) } else { None };

    // The GPU is opened before the clock starts: `quantize_seconds` is the quantization itself.
    let gpu = if args.gpu { Some(pollster::block_on(open_gpu())?) } else { None };
    let start = Instant::now();
    let lookup = |name: &str| fisher.as_ref().and_then(|f| f.get(name)).map(|t| t.data.as_slice());
    let sample_weights: Option<lutlab_core::quant::model::SampleWeights> = fisher.as_ref().map(|_| &lookup as _);
    let rounded_lookup = |name: &str| rounded_fisher.and_then(|f| f.get(name)).map(|t| t.data.as_slice());
    let rounded_sample_weights: Option<lutlab_core::quant::model::SampleWeights> = rounded_fisher.map(|_| &rounded_lookup as _);
    let calibration = Calibration { fisher: rounded_sample_weights, input_means: input_means.as_ref(), ..Default::default() };
    let mut sequential_seconds = None;
    let mut quantize_at = |method: &Method| -> Result<QuantizedModel> {
        let title = if request.is_mixed() { format!("quantize {}-bit", method.bits()) } else { "quantize".to_string() };
        let mut bar = Bar::new(&title, "weights", args.json);
        let quantized = if method.needs_hessians() {
            let target = crate::quantize_hessian::Target { loaded: &loaded, fisher: rounded_fisher, smoothing: smoothing.as_ref() };
            let (quantized, seconds) = crate::quantize_hessian::run(&args, target, method, selection.clone(), &mut bar)?;
            sequential_seconds = seconds;
            quantized
        } else {
            let rounded = if let Some(gpu) = &gpu {
                pollster::block_on(quantize_model_gpu(gpu, rounded_weights, method, selection.clone(), calibration, &mut bar))?
            } else {
                quantize_model(rounded_weights, method, selection.clone(), calibration, &mut bar)?
            };
            match &smoothing {
                Some(s) => s.unscale_model(weights, rounded)?,
                None => rounded,
            }
        };
        bar.finish();
        Ok(quantized)
    };
    let meta = PackedMeta {
        base_model: model_dir.display().to_string(),
        method: request.label(fisher.is_some()),
        settings: serde_json::to_string(&request)?,
        allocation: String::new(),
    };
    let (mut quantized, allocation) = if request.is_mixed() {
        let (quantized, report) = quantize_mixed(&request, weights, &method, sample_weights, &meta, table_dtype, &mut quantize_at)?;
        (quantized, Some(report))
    } else {
        (quantize_at(&method)?, None)
    };
    // Bias correction changes only the float model's biases, which the packed file and the
    // dequantized model take from it.
    let corrected;
    let weights = if args.bias_corr {
        corrected = crate::model_transforms::bias_corrected(&args, &loaded, &quantized)?;
        quantized.take_biases(&corrected);
        &corrected
    } else {
        weights
    };
    let seconds = Seconds { total: start.elapsed().as_secs_f64(), sequential: sequential_seconds };
    let label = meta.method.clone();

    // Every layer a LUT: the model is packed, and evaluated as packed through the LUT kernels.
    // (Input groups of a size that is not a multiple of 32 rows have no packed form; those run
    // dequantized.)
    let packed = if quantized.layers.iter().all(QuantizedLayer::has_packed_form) {
        let allocation = allocation.as_ref().map(serde_json::to_string).transpose()?.unwrap_or_default();
        Some(PackedModel::from_quantized(weights, &quantized, PackedMeta { allocation, ..meta }, table_dtype)?)
    } else {
        None
    };
    // The whole file: written for --packed, else built in memory only to report its size.
    let file_bytes = match &packed {
        Some(packed) => {
            let bytes = packed.to_safetensors(table_dtype)?;
            if let Some(path) = &args.packed {
                std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            }
            Some(bytes.len())
        }
        None if args.packed.is_some() => {
            bail!("--packed: {label} does not produce look-up tables for every layer (groups of input rows pack only in multiples of 32 rows)")
        }
        None => None,
    };
    // A full dense copy of the model: made only for --out, or to evaluate what is not packed.
    let dequantized = || -> Result<ModelWeights> {
        Ok(match &packed {
            Some(packed) => packed.dequantized_weights()?,
            None => quantized.apply(weights),
        })
    };
    if let Some(out) = &args.out {
        write_checkpoint(&model_dir, out, &dequantized()?, &label)?;
    }
    let eval = match (&packed, args.eval) {
        (Some(packed), true) => Some(measure_packed(packed, &loaded.tokenizer, &args.eval_options, args.json)?),
        (None, true) => Some(measure(&dequantized()?, quantized.input_multipliers(), &loaded.tokenizer, &args.eval_options, args.json)?),
        (_, false) => None,
    };
    let original = checkpoint_bytes(&model_dir).ok();
    let sizes = packed.as_ref().zip(file_bytes).map(|(p, file)| PackedSizes::of(p, file, original));
    let lines: Vec<LayerLine> = quantized.layers.iter().map(LayerLine::of).collect();
    report(&args, &label, &lines, seconds, eval.as_ref(), sizes, allocation.as_ref())
}

impl QuantizeArgs {
    pub(crate) fn request(&self) -> QuantizeRequest {
        QuantizeRequest {
            method: match self.method {
                MethodName::Kmeans => "kmeans",
                MethodName::Rtn => "rtn",
                MethodName::Gptq => "gptq",
                MethodName::Ldlq => "ldlq",
                MethodName::LdlqRg => "ldlq-rg",
                MethodName::LdlbalAdmm => "ldlbal-admm",
                MethodName::Greedy => "greedy",
            }
            .into(),
            bits: self.bits,
            granularity: self.granularity.clone(),
            outlier_percent: self.outlier_percent,
            range: self.range,
            sensitive: self.sensitive,
            seed: self.seed,
            restarts: self.restarts,
            vector_dim: self.vector_dim,
            format: self.format.clone(),
            asym: self.asym,
            scale_stats: self.scale_stats.clone(),
            scale_type: self.scale_type.clone(),
            quantize_zero_point: self.quantize_zero_point,
            scaling: self.scaling,
            centering: self.centering,
            embeddings: self.quantize_embeddings,
            grid: self.grid.clone(),
            act_order: self.act_order,
            percdamp: self.percdamp,
            blocksize: self.blocksize,
            static_groups: self.static_groups,
            npasses: self.npasses,
            incoherence: self.incoherence,
            pre_rescale: self.pre_rescale,
            pre_proj: self.pre_proj,
            qfn: self.qfn.clone(),
            budget: self.budget.clone(),
            widths: self.widths.clone(),
            allocate_per: self.allocate_per.clone(),
            layer_bits: self.layer_bits.clone(),
            ln_affine_merge: self.ln_affine_merge,
            weight_equalization: self.weight_equalization,
            bias_corr: self.bias_corr,
            load_awq: self.load_awq.as_ref().map(|p| p.display().to_string()),
            act_equalization: self.act_equalization.clone(),
            alpha: self.alpha,
        }
    }
}

fn parse_blocks(text: &str) -> Result<Range<usize>> {
    let parse = |s: &str| s.trim().parse::<usize>().with_context(|| format!("--blocks {text}: expected START,END"));
    match text.split_once(',') {
        Some((a, b)) => Ok(parse(a)?..parse(b)?),
        None => bail!("--blocks {text}: expected START,END (END exclusive)"),
    }
}

/// The Fisher diagonal, checked against the model's names and shapes.
fn read_fisher(path: &Path, weights: &ModelWeights) -> Result<FisherDiagonal> {
    Ok(FisherDiagonal::from_safetensors(&path.display().to_string(), &read_file(path)?, weights)?)
}

/// Writes `weights` as a Hugging Face checkpoint directory: model.safetensors, a config.json
/// made from `weights.config`, and the tokenizer files copied from `tokenizer_dir`.
pub fn write_checkpoint(tokenizer_dir: &Path, out: &Path, weights: &ModelWeights, label: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The checkpoint's own names and layout (`nn.Linear` families back to `[out, in]`).
    let tensors = weights.to_checkpoint_tensors();
    let views: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice())).collect();
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("lutlab".to_string(), format!("dequantized from {label}")),
    ]);
    std::fs::write(out.join("model.safetensors"), write_safetensors(&views, Some(metadata))?)?;
    std::fs::write(out.join(CONFIG_FILE), config_json(&weights.config)?)?;
    for file in [TOKENIZER_JSON_FILE, VOCAB_FILE, MERGES_FILE, "tokenizer_config.json", "special_tokens_map.json"] {
        if tokenizer_dir.join(file).is_file() {
            std::fs::copy(tokenizer_dir.join(file), out.join(file)).with_context(|| format!("copying {file}"))?;
        }
    }
    Ok(())
}

/// The packed file's sizes, when every layer packs.
type Sizes = Option<PackedSizes>;

/// One quantized layer's line of the report.
pub struct LayerLine {
    pub name: String,
    pub mse: f64,
    pub outliers: usize,
    pub bits_per_weight: f64,
    pub numel: usize,
    pub proxy_loss: Option<f64>,
}

impl LayerLine {
    pub fn of(l: &lutlab_core::quant::QuantizedLayer) -> Self {
        Self { name: l.name.clone(), mse: l.mse, outliers: l.outliers, bits_per_weight: l.bits_per_weight, numel: l.dequantized.len(), proxy_loss: l.proxy_loss }
    }
}

/// `quantize_seconds` (the whole quantization: tokenizing, uploading, every layer) and, for
/// GPTQ-style methods with calibration text, `sequential_seconds` (their layer loop alone).
pub struct Seconds {
    pub total: f64,
    pub sequential: Option<f64>,
}

pub fn report(
    args: &QuantizeArgs,
    label: &str,
    layers: &[LayerLine],
    seconds: Seconds,
    eval: Option<&crate::eval::EvalReport>,
    sizes: Sizes,
    allocation: Option<&AllocationReport>,
) -> Result<()> {
    let outliers: usize = layers.iter().map(|l| l.outliers).sum();
    let weights: usize = layers.iter().map(|l| l.numel).sum();
    let bits_per_weight = layers.iter().map(|l| l.bits_per_weight * l.numel as f64).sum::<f64>() / weights.max(1) as f64;
    if args.json {
        let lines: Vec<_> = layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "mse": l.mse, "outliers": l.outliers, "bits_per_weight": l.bits_per_weight, "proxy_loss": l.proxy_loss}))
            .collect();
        let json = serde_json::json!({
            "method": label,
            "bits_per_weight": bits_per_weight,
            "outlier_percent": 100.0 * outliers as f64 / weights.max(1) as f64,
            "quantize_seconds": seconds.total,
            "sequential_seconds": seconds.sequential,
            "layers": lines,
            // The quantized layers' tensors, and the same weights as dense f16.
            "packed_bytes": sizes.as_ref().map(|s| s.layer_bytes),
            "f16_bytes": sizes.as_ref().map(|s| 2 * s.layer_weights),
            // The whole packed file beside the original checkpoint's safetensors file(s).
            "file_bytes": sizes.as_ref().map(|s| s.file_bytes),
            "original_bytes": sizes.as_ref().and_then(|s| s.original_bytes),
            "sizes": sizes,
            "allocation": allocation,
            "eval": eval,
        });
        println!("{json}");
        return Ok(());
    }
    let proxy = layers.iter().any(|l| l.proxy_loss.is_some());
    let header = if proxy { format!(" {:>12}", "proxy loss") } else { String::new() };
    println!("{:<20} {:>12} {:>9} {:>6}{header}", "layer", "mse", "outliers", "bits");
    for l in layers {
        let loss = l.proxy_loss.map_or(String::new(), |p| format!(" {p:>12.4e}"));
        println!("{:<20} {:>12.4e} {:>9} {:>6.3}{loss}", l.name, l.mse, l.outliers, l.bits_per_weight);
    }
    println!(
        "{}: {} layers, {:.3} bits/weight, {:.3}% outliers, in {:.1} s",
        label,
        layers.len(),
        bits_per_weight,
        100.0 * outliers as f64 / weights.max(1) as f64,
        seconds.total
    );
    if args.quantize_embeddings && args.fisher.is_some() {
        println!("note: lm_head (the tied embedding) was quantized without Fisher weights: the Fisher file covers the blocks' linears");
    }
    if let Some(a) = allocation {
        println!("{}", crate::quantize_budget::allocation_lines(a));
    }
    if let Some(s) = sizes {
        let f16 = 2 * s.layer_weights;
        println!("packed layers: {} bytes, {:.2}x smaller than f16 ({f16} bytes)", s.layer_bytes, f16 as f64 / s.layer_bytes.max(1) as f64);
        println!("packed file: {}", s.file_line());
        println!("quantized layers: {}", s.explanation);
    }
    if let Some(eval) = eval {
        println!("{}", eval.line());
    }
    Ok(())
}
