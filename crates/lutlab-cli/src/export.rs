//! `lutlab export`: a packed model as a plain Hugging Face checkpoint of its dequantized weights
//! (`--dequantized`), or as one ONNX file a standard runtime executes (`--onnx-qcdq`). Either
//! carries the input quantization the `--input-*` options describe: the checkpoint in its
//! `config.json` (`input_quantization`), the ONNX graph as QCDQ or explicit arithmetic nodes.

use crate::eval::{read_packed, tokenizer_dir};
use crate::input_quant::{InputQuantArgs, RecordedInputs};
use crate::quantize::write_checkpoint;
use anyhow::{bail, Context, Result};
use clap::Args;
use lutlab_core::onnx::export_onnx;
use lutlab_core::packed_file::PackedModel;
use lutlab_core::quant::inputs::InputQuantization;
use lutlab_core::{ModelFiles, TextTokenizer};
use lutlab_model::{open_gpu, Decoder};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ExportArgs {
    /// The packed model file.
    #[arg(long)]
    packed: PathBuf,
    /// Write dequantized f32 weights as a Hugging Face checkpoint (directory --out).
    #[arg(long, conflicts_with = "onnx_qcdq")]
    dequantized: bool,
    /// Write one ONNX file (--out; opset 21): packed weights as DequantizeLinear of their integer
    /// codes or as tables gathered by them, inputs quantized by the --input-* options.
    #[arg(long)]
    onnx_qcdq: bool,
    /// Output directory (--dequantized: model.safetensors, config.json, tokenizer files) or
    /// file (--onnx-qcdq).
    #[arg(long)]
    out: PathBuf,
    /// Where to copy tokenizer files from (default for GPT-2 files: the shipped model, GPT-2's
    /// tokenizer; other families must name their model directory).
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
    #[command(flatten)]
    inputs: InputQuantArgs,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if !args.dequantized && !args.onnx_qcdq {
        bail!("say what to export: --dequantized (a Hugging Face checkpoint) or --onnx-qcdq (an ONNX file)");
    }
    args.inputs.settings()?;
    let packed = read_packed(&args.packed)?;
    let inputs = input_quantization(&args, &packed)?;
    if args.onnx_qcdq {
        let onnx = export_onnx(&packed, inputs.as_ref())?;
        std::fs::write(&args.out, &onnx.bytes).with_context(|| format!("writing {}", args.out.display()))?;
        println!(
            "wrote {} ({} MB; {} packed layers as DequantizeLinear, {} as gathered tables{})",
            args.out.display(),
            onnx.bytes.len() / 1_000_000,
            onnx.dequantize_layers,
            onnx.table_layers,
            inputs.map(|q| format!(", inputs {}", q.settings.label())).unwrap_or_default()
        );
        return Ok(());
    }
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
    if let Some(q) = &inputs {
        record_input_quantization(&args.out, q)?;
    }
    println!("wrote {} ({}, {} packed layers dequantized)", args.out.display(), packed.meta.method, packed.layers.len());
    Ok(())
}

/// The input quantization to export; static scales calibrated on the GPU unless read from a file.
fn input_quantization(args: &ExportArgs, packed: &PackedModel) -> Result<Option<InputQuantization>> {
    args.inputs.quantization(&packed.config, packed.input_multipliers(), |settings, multipliers| {
        let tokenizer = TextTokenizer::from_files(&ModelFiles::read_tokenizer(&tokenizer_dir(packed, args.tokenizer_from.as_deref(), &args.packed)?)?)?;
        let gpu = pollster::block_on(open_gpu())?;
        let model = Decoder::from_packed(packed, &gpu.device)?;
        args.inputs.calibrate(&model, &tokenizer, settings, multipliers, args.quiet)
    })
}

/// Adds `input_quantization` to the checkpoint's `config.json`: the settings in Brevitas' words
/// and, for static scales, each layer's scale and zero point. transformers keeps unknown keys
/// as attributes of the config, so the checkpoint still loads; `lutlab eval` reads them back.
fn record_input_quantization(dir: &Path, q: &InputQuantization) -> Result<()> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    config["input_quantization"] = serde_json::to_value(RecordedInputs::of(q))?;
    std::fs::write(&path, serde_json::to_string_pretty(&config)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
