//! `lutlab quantize` on a streamed model (above 1B parameters, or `--stream`): one block at a
//! time. Each block's weights are read from disk, its linears quantized (with their Fisher
//! tensors, and Hessians from a `--hessian` file, read as they are needed) and written to the
//! packed file at once, so host memory holds one block and the packed file is written layer by
//! layer. The Hessian methods without a file run GPTQ's sequential loop on the streamed model
//! (the GPU holds one block and the calibration windows' activations). The packed file is then
//! evaluated from disk if `--eval` asks.

use crate::eval::measure_packed_owned;
use crate::progress::Bar;
use crate::quantize::{report, LayerLine, QuantizeArgs, Seconds};
use anyhow::{bail, Context, Result};
use lutlab_core::fisher_file::FisherFile;
use lutlab_core::files::checkpoint_bytes;
use lutlab_core::packed_file::{pack_layer, round_layer_tables_to_f16, PackedMeta, PackedModel, PackedWriter, TableDtype};
use lutlab_core::packed_size::{LayerSummary, PackedSizes};
use lutlab_core::config::LinearSpec;
use lutlab_core::files::OpenedModel;
use lutlab_core::hessian_file::HessianFile;
use lutlab_core::quant::hessian::Square;
use lutlab_core::quant::model::{quantize_layer, Calibration, Hessians, SampleWeights};
use lutlab_core::quant::{QuantizeRequest, QuantizedLayer};
use lutlab_core::weights::{check_layout, BlockWeights, LinearWeights};
use lutlab_core::{profile, Checkpoint, HostTensor, ModelConfig, ModelFiles, Progress};
use lutlab_gpu::quantize_layer_gpu;
use lutlab_model::{open_gpu, quantize_sequential, Decoder, LayerHessian};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
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
    let blocks = blocks.unwrap_or(0..config.n_layer);
    if blocks.is_empty() || blocks.end > config.n_layer {
        bail!("--blocks {}..{} is not a non-empty range inside the model's {} blocks", blocks.start, blocks.end, config.n_layer);
    }
    let sequential = method.needs_hessians() && args.hessian.is_none();
    if args.true_sequential && !sequential {
        bail!("--true-sequential is for the Hessian methods computing their Hessians as they quantize (no --hessian FILE)");
    }
    let hessians = args.hessian.as_deref().map(|p| HessianFile::open(p, config)).transpose()?;
    let label = request.label(fisher.is_some());
    let gpu = if args.gpu { Some(pollster::block_on(open_gpu())?) } else { None };
    let rounder = crate::quantize_hessian::gpu_rounder(args)?;

    let sink = Mutex::new(Sink::new(PackedWriter::create(packed_path, config, table_dtype)?, table_dtype));
    let mut bar = Bar::new("quantize", if sequential { "blocks" } else { "weights" }, args.json);
    let start = Instant::now();
    // The layer named `name` (`spec` its shape) of block weights `linear`, with its Fisher tensor
    // read as it is needed and its Hessian given or read from the file.
    let quantize_one = |name: &str, spec: &LinearSpec, linear: &LinearWeights, hessian: Option<&Square>| -> Result<QuantizedLayer> {
        let sample = fisher.as_ref().map(|f| f.read(&format!("{name}.weight"), spec.n_in, spec.n_out)).transpose()?;
        let lookup = |_: &str| sample.as_ref().map(|t| t.data.as_slice());
        let read;
        let hessian = match (hessian, &hessians) {
            (Some(h), _) => Some(h),
            (None, Some(file)) => {
                read = file.read(name)?;
                Some(&read)
            }
            (None, None) => None,
        };
        let h_lookup = |n: &str| (n == name).then_some(hessian).flatten();
        let calibration = Calibration {
            fisher: sample.as_ref().map(|_| &lookup as SampleWeights),
            input_means: None,
            hessians: hessian.map(|_| &h_lookup as Hessians),
            rounder: rounder.as_ref().map(|r| r as _),
        };
        let layer = match &gpu {
            Some(gpu) if !method.needs_hessians() => pollster::block_on(quantize_layer_gpu(gpu, name, linear, &method, calibration, config.n_embd))?,
            _ => quantize_layer(name, linear, &method, calibration, config.n_embd)?,
        };
        if !layer.has_packed_form() {
            bail!("{label} does not produce look-up tables for `{name}`: it cannot be packed");
        }
        Ok(layer)
    };
    let specs = config.block_linears();
    if sequential {
        quantize_sequentially(args, model_dir, &opened, &blocks, &sink, &quantize_one, &mut bar)?;
    } else {
        let total: u64 = config.linear_names().iter().filter(|(n, _)| in_blocks(config, n, &blocks)).map(|(_, s)| (s.n_in * s.n_out) as u64).sum();
        let mut done = 0u64;
        bar.update(0, total);
        for b in blocks.clone() {
            let weights = BlockWeights::read(config, &opened.checkpoint, b)?;
            let prefix = config.block_prefix(b);
            for (k, (spec, linear)) in specs.iter().zip(&weights.linears).enumerate() {
                if bar.is_cancelled() {
                    bail!("cancelled: nothing was written to {}", packed_path.display());
                }
                let name = format!("{prefix}.{}", spec.name);
                let layer = quantize_one(&name, spec, linear, None)?;
                lock(&sink).add(b * specs.len() + k, &layer, spec)?;
                done += (spec.n_in * spec.n_out) as u64;
                bar.update(done, total);
            }
        }
    }
    let Sink { mut writer, summaries, mut lines, written, .. } = sink.into_inner().unwrap_or_else(|e| e.into_inner());
    lines.sort_by_key(|(order, _)| *order);
    let lines: Vec<LayerLine> = lines.into_iter().map(|(_, line)| line).collect();
    let phase = profile::start();
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
    profile::stop("dense tensors written, file finished", phase);
    profile::report("streamed quantization's end");
    let file_bytes = std::fs::metadata(packed_path).with_context(|| format!("reading {}", packed_path.display()))?.len() as usize;
    let sizes = PackedSizes::from_layers(&summaries, dense_bytes, file_bytes, checkpoint_bytes(model_dir).ok());
    let seconds = Seconds { total: start.elapsed().as_secs_f64(), sequential: None };
    bar.finish();

    let eval = if args.eval {
        let packed = PackedModel::read_file(packed_path)?;
        Some(measure_packed_owned(packed, &opened.tokenizer, &args.eval_options, args.json, false)?)
    } else {
        None
    };
    report(args, &label, &lines, seconds, eval.as_ref(), Some(sizes), None)
}

/// The packed file as it is written, layer by layer, and what the report needs of each layer
/// (the layers themselves are not kept).
struct Sink {
    writer: PackedWriter,
    table_dtype: TableDtype,
    summaries: Vec<LayerSummary>,
    /// Each layer's line with its place in the model (layers may arrive out of order).
    lines: Vec<(usize, LayerLine)>,
    written: BTreeSet<String>,
}

impl Sink {
    fn new(writer: PackedWriter, table_dtype: TableDtype) -> Self {
        Self { writer, table_dtype, summaries: Vec::new(), lines: Vec::new(), written: BTreeSet::new() }
    }

    /// Packs `layer` (`spec` its shape, `order` its place in the model) and writes it.
    fn add(&mut self, order: usize, layer: &QuantizedLayer, spec: &LinearSpec) -> Result<()> {
        let name = &layer.name;
        let (mut packed, bias) = pack_layer(layer, spec.n_in, spec.n_out)?;
        if self.table_dtype == TableDtype::F16 {
            round_layer_tables_to_f16(name, &mut packed)?;
        }
        self.writer.add_layer(name, &packed)?;
        self.summaries.push(LayerSummary::of(&packed));
        self.written.insert(format!("{name}.weight"));
        if let Some(bias) = bias {
            self.writer.add_dense(&format!("{name}.bias"), &bias)?;
            self.written.insert(format!("{name}.bias"));
        }
        self.lines.push((order, LayerLine::of(layer)));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Quantizes layer `name` (its shape, its host weights, its Hessian if the caller has it).
type QuantizeOne<'a> = dyn Fn(&str, &LinearSpec, &LinearWeights, Option<&Square>) -> Result<QuantizedLayer> + Sync + 'a;

/// GPTQ's sequential order on the streamed model: each block uploaded when its turn comes, its
/// linears' Hessians computed from the calibration windows as the already-quantized blocks
/// before it pass them on, each linear rounded (from its host weights, read once per block) and
/// written at once, the block rebuilt from the quantized weights, the windows on through it.
fn quantize_sequentially(
    args: &QuantizeArgs,
    model_dir: &Path,
    opened: &OpenedModel,
    blocks: &Range<usize>,
    sink: &Mutex<Sink>,
    quantize_one: &QuantizeOne<'_>,
    bar: &mut Bar,
) -> Result<()> {
    let config = &opened.config;
    let gpu = pollster::block_on(open_gpu())?;
    let model = Decoder::streamed(config, ModelFiles::open_dir(model_dir)?.checkpoint, &gpu.device)?;
    let tokens = crate::quantize_hessian::calibration_tokens(args, &opened.tokenizer)?;
    let settings = crate::quantize_hessian::settings(args, &model);
    let specs = config.block_linears();
    // The host weights of the block being quantized (the step's layers share it).
    let current: Mutex<Option<(usize, std::sync::Arc<BlockWeights>)>> = Mutex::new(None);
    let block_weights = |b: usize| -> Result<std::sync::Arc<BlockWeights>> {
        let mut current = lock(&current);
        match &*current {
            Some((index, w)) if *index == b => Ok(w.clone()),
            _ => {
                let w = std::sync::Arc::new(BlockWeights::read(config, &opened.checkpoint, b)?);
                *current = Some((b, w.clone()));
                Ok(w)
            }
        }
    };
    let in_layer = |e: anyhow::Error| lutlab_core::LoadError::InvalidSetting(format!("{e:#}"));
    let quantize = |layer: LayerHessian| -> lutlab_model::Result<Option<Vec<f32>>> {
        if !blocks.contains(&layer.block) {
            // Outside --blocks: the float weights go on unchanged.
            return Ok(None);
        }
        let phase = profile::start();
        let weights = block_weights(layer.block).map_err(in_layer)?;
        profile::stop("host: block weights read (once per block; the others wait)", phase);
        let spec = &specs[layer.linear];
        let phase = profile::start();
        let quantized = quantize_one(layer.name, spec, &weights.linears[layer.linear], Some(layer.hessian)).map_err(in_layer)?;
        profile::stop("host: quantize_layer (grid, rounding, report)", phase);
        let phase = profile::start();
        lock(sink).add(layer.block * specs.len() + layer.linear, &quantized, spec).map_err(in_layer)?;
        profile::stop("host: packed and written (one layer at a time)", phase);
        Ok(Some(quantized.dequantized))
    };
    pollster::block_on(quantize_sequential(&model, &tokens, settings, &quantize, bar))?;
    Ok(())
}

fn in_blocks(config: &ModelConfig, name: &str, blocks: &Range<usize>) -> bool {
    blocks.clone().any(|b| name.starts_with(&format!("{}.", config.block_prefix(b))))
}

fn dense_tensor(checkpoint: &Checkpoint<'_>, name: &str) -> Result<HostTensor> {
    let shape = checkpoint.shape(name).map(<[usize]>::to_vec).unwrap_or_default();
    Ok(checkpoint.read(name, &shape)?)
}
