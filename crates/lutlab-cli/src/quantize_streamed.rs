//! `lutlab quantize` on a streamed model (above 1B parameters, or `--stream`): one block at a
//! time. Each block's weights are read from disk, its linears quantized (with their Fisher
//! tensors read from the Fisher file as they are needed) and written to the packed file at once,
//! so host memory holds one block and the packed file is written layer by layer. The packed
//! file is then evaluated from disk if `--eval` asks.

use crate::eval::measure_packed_owned;
use crate::progress::Bar;
use crate::quantize::{report, LayerLine, QuantizeArgs};
use anyhow::{bail, Context, Result};
use lutlab_core::fisher_file::FisherFile;
use lutlab_core::files::checkpoint_bytes;
use lutlab_core::packed_file::{pack_layer, round_layer_tables_to_f16, PackedMeta, PackedModel, PackedWriter, TableDtype};
use lutlab_core::packed_size::{LayerSummary, PackedSizes};
use lutlab_core::quant::model::{quantize_layer, Calibration, SampleWeights};
use lutlab_core::quant::QuantizeRequest;
use lutlab_core::weights::{check_layout, BlockWeights};
use lutlab_core::{Checkpoint, HostTensor, ModelConfig, ModelFiles, Progress};
use lutlab_gpu::quantize_layer_gpu;
use lutlab_model::open_gpu;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// Quantizes the model in `model_dir` block by block into `args.packed`.
pub fn run(args: &QuantizeArgs, model_dir: &Path, request: &QuantizeRequest, blocks: Option<Range<usize>>, table_dtype: TableDtype) -> Result<()> {
    let Some(packed_path) = &args.packed else {
        bail!("a streamed model is quantized into a packed file: pass --packed FILE (--out, a dense copy of the whole model, is not written for streamed models)");
    };
    if args.out.is_some() {
        bail!("--out writes a dense copy of the whole model, which a streamed model never holds: use --packed (and `lutlab export` if a dense checkpoint is needed)");
    }
    if request.embeddings {
        bail!("--quantize-embeddings is not supported for streamed models yet: the head stays dense");
    }
    if request.centering {
        bail!("--centering is not supported for streamed models yet");
    }
    if request.ln_affine_merge || request.weight_equalization || request.bias_corr || request.load_awq.is_some() || request.act_equalization.is_some() {
        bail!("--load-awq, --ln-affine-merge, --weight-equalization, --bias-corr and --act-equalization are not supported for streamed models yet");
    }
    if request.is_mixed() {
        bail!("--budget and --layer-bits quantize the model at every candidate width before choosing, which a streamed model (one block at a time) does not do yet: quantize at one --bits, or pass --no-stream if the model fits in memory");
    }
    let opened = ModelFiles::open_dir(model_dir)?;
    let config = &opened.config;
    check_layout(config, &opened.checkpoint)?;
    let fisher = args.fisher.as_deref().map(|p| FisherFile::open(p, config)).transpose()?;
    let method = request.method_streamed(fisher.is_some())?;
    if method.needs_hessians() {
        bail!("GPTQ-style methods are not streamed yet: quantize this model with --no-stream (it must then fit in host and GPU memory)");
    }
    let blocks = blocks.unwrap_or(0..config.n_layer);
    if blocks.is_empty() || blocks.end > config.n_layer {
        bail!("--blocks {}..{} is not a non-empty range inside the model's {} blocks", blocks.start, blocks.end, config.n_layer);
    }
    let label = request.label(fisher.is_some());
    let gpu = if args.gpu { Some(pollster::block_on(open_gpu())?) } else { None };

    let mut writer = PackedWriter::create(packed_path, config, table_dtype)?;
    let mut bar = Bar::new("quantize", "weights", args.json);
    let total: u64 = config.linear_names().iter().filter(|(n, _)| in_blocks(config, n, &blocks)).map(|(_, s)| (s.n_in * s.n_out) as u64).sum();
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut done = 0u64;
    // What the size report needs of each packed layer (the layers themselves are not kept).
    let mut summaries = Vec::new();
    bar.update(0, total);
    for b in blocks.clone() {
        let weights = BlockWeights::read(config, &opened.checkpoint, b)?;
        let prefix = config.block_prefix(b);
        for (spec, linear) in config.block_linears().iter().zip(&weights.linears) {
            if bar.is_cancelled() {
                bail!("cancelled: nothing was written to {}", packed_path.display());
            }
            let name = format!("{prefix}.{}", spec.name);
            let sample = fisher.as_ref().map(|f| f.read(&format!("{name}.weight"), spec.n_in, spec.n_out)).transpose()?;
            let lookup = |_: &str| sample.as_ref().map(|t| t.data.as_slice());
            let sample_weights: Option<SampleWeights> = sample.as_ref().map(|_| &lookup as _);
            let calibration = Calibration::fisher(sample_weights);
            let layer = match &gpu {
                Some(gpu) => pollster::block_on(quantize_layer_gpu(gpu, &name, linear, &method, calibration, config.n_embd))?,
                None => quantize_layer(&name, linear, &method, calibration, config.n_embd)?,
            };
            if layer.lut.is_none() {
                bail!("{label} does not produce look-up tables for `{name}`: it cannot be packed");
            }
            let (mut packed, bias) = pack_layer(&layer, spec.n_in, spec.n_out)?;
            if table_dtype == TableDtype::F16 {
                round_layer_tables_to_f16(&name, &mut packed)?;
            }
            writer.add_layer(&name, &packed)?;
            summaries.push(LayerSummary::of(&packed));
            written.insert(format!("{name}.weight"));
            if let Some(bias) = bias {
                writer.add_dense(&format!("{name}.bias"), &bias)?;
                written.insert(format!("{name}.bias"));
            }
            lines.push(LayerLine::of(&layer));
            done += (spec.n_in * spec.n_out) as u64;
            bar.update(done, total);
        }
    }
    // Everything not packed goes in as the checkpoint stores it (names, layout), in the smallest
    // dtype that holds it exactly (f16 for an f16 checkpoint).
    for (name, _, _) in config.tensor_shapes() {
        if !written.contains(&name) && opened.checkpoint.contains(&name) {
            writer.add_dense(&name, &dense_tensor(&opened.checkpoint, &name)?)?;
        }
    }
    let meta = PackedMeta { base_model: model_dir.display().to_string(), method: label.clone(), settings: serde_json::to_string(request)?, allocation: String::new() };
    let dense_bytes = writer.dense_bytes();
    writer.finish(config, &meta).with_context(|| format!("writing {}", packed_path.display()))?;
    let file_bytes = std::fs::metadata(packed_path).with_context(|| format!("reading {}", packed_path.display()))?.len() as usize;
    let sizes = PackedSizes::from_layers(&summaries, dense_bytes, file_bytes, checkpoint_bytes(model_dir).ok());
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();

    let eval = if args.eval {
        let packed = PackedModel::read_file(packed_path)?;
        Some(measure_packed_owned(packed, &opened.tokenizer, &args.eval_options, args.json)?)
    } else {
        None
    };
    report(args, &label, &lines, seconds, eval.as_ref(), Some(sizes), None)
}

fn in_blocks(config: &ModelConfig, name: &str, blocks: &Range<usize>) -> bool {
    blocks.clone().any(|b| name.starts_with(&format!("{}.", config.block_prefix(b))))
}

fn dense_tensor(checkpoint: &Checkpoint<'_>, name: &str) -> Result<HostTensor> {
    let shape = checkpoint.shape(name).map(<[usize]>::to_vec).unwrap_or_default();
    Ok(checkpoint.read(name, &shape)?)
}
