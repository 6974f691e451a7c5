//! The Hessians of every linear layer's output error on the GPU, `H = (2/N) Σ x xᵀ` over the
//! positions of `N` calibration windows (GPTQ's normalisation), and GPTQ's sequential
//! quantization on top of them.
//!
//! All windows are embedded once and kept on the GPU as residual streams; the blocks are walked
//! one at a time ([`run_block`], the layer loop's step). At each block every window runs through
//! it while each distinct linear input (q, k and v share one) adds `xᵀx` to a GPU sum; the sums
//! are read back, scaled, and handed over. Sequentially ([`quantize_sequential`]), the caller
//! then quantizes the block's linears, the block is rebuilt from the dequantized weights, and the
//! windows go on through *that* block, so block `i + 1`'s Hessians see the quantized blocks
//! before it. The linears of one input (q, k, v) are rounded against its one Hessian, whose
//! factorization they share (`quant::hessian::shared`). With `true_sequential` (Llama's option
//! in GPTQ), the block's input groups are done in order — [q,k,v], [o], [gate,up], [down] — each
//! group's Hessians taken with the groups before it already quantized.

use crate::activations::ActivationSettings;
use crate::decoder::{run_block, visit_block_inputs, BlockContext, BlockVisitor, Decoder, Linear};
use crate::device::{download, upload};
use crate::error::{ModelError, Result};
use lutlab_core::parallel::map_ranges;
use lutlab_core::profile;
use burn::tensor::Tensor;
use lutlab_core::quant::hessian::{ShareFactors, Square};
use lutlab_core::{LoadError, Progress};
use std::ops::Range;

/// How to sample the calibration text (as for the mean inputs, so the same seed and sizes give
/// the same windows), and the order of a block's linears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HessianSettings {
    pub windows: ActivationSettings,
    /// Quantize a block's input groups one after another ([q,k,v], [o], [gate,up], [down]).
    pub true_sequential: bool,
}

impl HessianSettings {
    /// GPTQ's 128 windows.
    pub const DEFAULT_NSAMPLES: usize = 128;
    pub const DEFAULT_BATCH: usize = 8;

    /// 128 windows of the model's context (at most 2048 tokens), 8 per forward pass.
    pub fn for_model(model: &Decoder) -> Self {
        let windows = ActivationSettings { nsamples: Self::DEFAULT_NSAMPLES, batch: Self::DEFAULT_BATCH, ..ActivationSettings::for_model(model) };
        Self { windows, true_sequential: false }
    }
}

/// One linear's Hessian, as handed to a caller.
pub struct LayerHessian<'a> {
    pub block: usize,
    /// Index into `ModelConfig::block_linears`.
    pub linear: usize,
    /// Full name (`h.0.attn.c_attn`).
    pub name: &'a str,
    pub hessian: &'a Square,
}

/// The Hessian of every distinct linear input of the float model, block by block: `sink` gets
/// each with the name of the first linear reading it (the Hessian file's key). Cancellable
/// between blocks.
pub async fn hessians(
    model: &Decoder,
    tokens: &[u32],
    settings: HessianSettings,
    sink: &mut dyn FnMut(&str, Square) -> Result<()>,
    progress: &mut dyn Progress,
) -> Result<()> {
    let mut states = embed_windows(model, tokens, &settings.windows)?;
    let groups = model.config.input_groups();
    progress.update(0, model.n_blocks() as u64);
    for i in 0..model.n_blocks() {
        if progress.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let block = model.block(i)?;
        let mut sums = InputHessians::new(groups.clone(), 0..groups.len());
        run_block(i, &block, &mut states, Some(&mut sums))?;
        let names = block_linear_names(model, i);
        for (g, h) in sums.read(settings.windows.nsamples, &groups, &names).await? {
            sink(&names[groups[g].start], h)?;
        }
        progress.update(i as u64 + 1, model.n_blocks() as u64);
    }
    Ok(())
}

/// GPTQ's sequential loop: block by block, the Hessians of its linears (their inputs computed by
/// the blocks before it as already quantized), `quantize` for each linear (returning its
/// dequantized `[in, out]` weights, or `None` to keep it as it is), the block rebuilt from them,
/// the windows on through it. The linears of one step are independent given their Hessians, so
/// `quantize` runs for them concurrently (natively; one after another in the browser).
pub async fn quantize_sequential(
    model: &Decoder,
    tokens: &[u32],
    settings: HessianSettings,
    quantize: &(dyn Fn(LayerHessian) -> Result<Option<Vec<f32>>> + Sync),
    progress: &mut dyn Progress,
) -> Result<()> {
    let mut states = embed_windows(model, tokens, &settings.windows)?;
    let groups = model.config.input_groups();
    let steps: Vec<Range<usize>> = if settings.true_sequential { (0..groups.len()).map(|g| g..g + 1).collect() } else { vec![0..groups.len()] };
    let device = model.device();
    progress.update(0, model.n_blocks() as u64);
    for i in 0..model.n_blocks() {
        let upload = profile::start();
        let mut block = model.block(i)?.into_owned();
        profile::stop("block read and upload", upload);
        let names = block_linear_names(model, i);
        for step in &steps {
            if progress.is_cancelled() {
                return Err(ModelError::Cancelled);
            }
            let mut sums = InputHessians::new(groups.clone(), step.clone());
            let gpu = profile::start();
            visit_block_inputs(i, &block, &states, &mut sums)?;
            let hessians = sums.read(settings.windows.nsamples, &groups, &names).await?;
            profile::stop("GPU: block forwards, x·xᵀ sums, read-back (waits for the previous block's last pass)", gpu);
            profile::span(|| format!("block {i} GPU phase"), gpu);
            let jobs: Vec<(usize, &Square)> = hessians.iter().flat_map(|(g, h)| groups[*g].clone().map(move |linear| (linear, h))).collect();
            // q, k and v (gate and up) round against one Hessian: factor it once for them.
            let _shared: Vec<ShareFactors> = hessians.iter().filter(|(g, _)| groups[*g].len() > 1).map(|(_, h)| ShareFactors::new(h)).collect();
            let host = profile::start();
            let results = map_ranges(jobs.len(), |range| {
                range
                    .map(|j| {
                        let layer = profile::start();
                        let quantized = quantize(LayerHessian { block: i, linear: jobs[j].0, name: &names[jobs[j].0], hessian: jobs[j].1 });
                        profile::stop("host: a layer quantized (summed over the step's layers)", layer);
                        profile::span(|| format!("block {i} {}", names[jobs[j].0]), layer);
                        quantized
                    })
                    .collect::<Vec<_>>()
            });
            profile::stop("host: the step's layers (grid, rounding, report), concurrently", host);
            let replace = profile::start();
            for ((linear, _), quantized) in jobs.iter().zip(results.into_iter().flatten()) {
                if let Some(weights) = quantized? {
                    replace_weight(&mut block.linears[*linear], &weights, &device, &names[*linear])?;
                }
            }
            profile::stop("quantized weights uploaded", replace);
        }
        run_block(i, &block, &mut states, None)?;
        progress.update(i as u64 + 1, model.n_blocks() as u64);
    }
    profile::report("sequential Hessian quantization");
    Ok(())
}

/// Every window `settings` draws, embedded, `batch` windows per residual stream.
fn embed_windows(model: &Decoder, tokens: &[u32], settings: &ActivationSettings) -> Result<Vec<(BlockContext, Tensor<3>)>> {
    if settings.batch == 0 {
        return Err(LoadError::InvalidSetting("batch must be at least 1".into()).into());
    }
    let starts = settings.starts(model, tokens)?;
    Ok(embed_starts(model, tokens, &starts, settings.seqlen, settings.batch))
}

/// The windows `tokens[start..start + seqlen]` embedded, `batch` per residual stream (checked
/// windows, `batch` ≥ 1), fewer where one pass's attention scores would pass
/// [`MAX_SCORES_BYTES`].
pub(crate) fn embed_starts(model: &Decoder, tokens: &[u32], starts: &[usize], seqlen: usize, batch: usize) -> Vec<(BlockContext, Tensor<3>)> {
    let batch = batch.min(windows_per_pass(&model.config, seqlen));
    let ctx = model.context(seqlen);
    starts
        .chunks(batch)
        .map(|chunk| {
            let rows: Vec<&[u32]> = chunk.iter().map(|&s| &tokens[s..s + seqlen]).collect();
            (ctx.clone(), model.embed(model.tokens(&rows)))
        })
        .collect()
}

/// The largest attention-score tensor `[windows, heads, seqlen, seqlen]` (f32) a pass may make:
/// a 7B model's 32 heads at 2048 positions take 512 MiB per window, and one buffer past the
/// adapter's binding limit (often 2 to 4 GiB) fails the whole pass.
pub const MAX_SCORES_BYTES: usize = 1 << 30;

/// Windows per pass at `seqlen` positions under [`MAX_SCORES_BYTES`] (at least 1).
pub fn windows_per_pass(config: &lutlab_core::ModelConfig, seqlen: usize) -> usize {
    let per_window = config.n_head * seqlen * seqlen * 4;
    (MAX_SCORES_BYTES / per_window.max(1)).max(1)
}

fn block_linear_names(model: &Decoder, i: usize) -> Vec<String> {
    let prefix = model.config.block_prefix(i);
    model.config.block_linears().iter().map(|s| format!("{prefix}.{}", s.name)).collect()
}

/// A dense linear with new `[in, out]` weights and its old bias.
fn replace_weight(linear: &mut Linear, weights: &[f32], device: &burn::tensor::Device, name: &str) -> Result<()> {
    let Linear::Dense { weight, bias } = linear else {
        return Err(LoadError::InvalidSetting(format!("{name}: sequential quantization needs the float model's dense layers")).into());
    };
    let [n_in, n_out] = weight.dims();
    if weights.len() != n_in * n_out {
        return Err(LoadError::InvalidSetting(format!("{name}: {} quantized weights for a {n_in}x{n_out} layer", weights.len())).into());
    }
    *linear = Linear::Dense { weight: upload(weights, [n_in, n_out], device), bias: bias.clone() };
    Ok(())
}

/// GPU sums `Σ xᵀx` of the linear inputs of one block, for the input groups `collect`.
struct InputHessians {
    groups: Vec<Range<usize>>,
    collect: Range<usize>,
    sums: Vec<Option<Tensor<2>>>,
}

impl InputHessians {
    fn new(groups: Vec<Range<usize>>, collect: Range<usize>) -> Self {
        let sums = vec![None; groups.len()];
        Self { groups, collect, sums }
    }

    /// The collected Hessians `(2/windows) Σ xᵀx`, by input group; a non-finite one names the
    /// first linear reading that input.
    async fn read(self, windows: usize, groups: &[Range<usize>], names: &[String]) -> Result<Vec<(usize, Square)>> {
        let mut out = Vec::new();
        for (g, sum) in self.sums.into_iter().enumerate() {
            let Some(sum) = sum else { continue };
            let n = sum.dims()[0];
            let values = download(crate::gemm::symmetric_from_upper(sum)).await?;
            let widen = profile::start();
            let name = &names[groups[g].start];
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::Gpu(format!("the Hessian of `{name}` has a non-finite entry at ({}, {}): the activations reaching it are not finite", i / n, i % n)));
            }
            // Scaled, in f64 (on every core: 9.4 M entries for a 3072-wide input, every block).
            let scale = 2.0 / windows as f64;
            let mut data = vec![0.0; n * n];
            lutlab_core::parallel::for_row_chunks(&mut data, n, |first, rows| {
                let from = &values[first * n..first * n + rows.len()];
                rows.iter_mut().zip(from).for_each(|(v, &x)| *v = f64::from(x) * scale);
            });
            profile::stop("GPU: … of which the Hessians checked and widened to f64 on the host", widen);
            out.push((g, Square { n, data }));
        }
        Ok(out)
    }
}

impl BlockVisitor for InputHessians {
    fn inputs(&mut self, _index: usize, inputs: Vec<Tensor<3>>) -> Result<()> {
        for g in self.collect.clone() {
            let input = inputs[self.groups[g].start].clone();
            let [b, t, n] = input.dims();
            let x = input.reshape([b * t, n]);
            self.sums[g] = Some(crate::gemm::add_gram(self.sums[g].take(), x)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(heads: usize, context: usize) -> lutlab_core::ModelConfig {
        let json = format!(
            r#"{{"model_type": "llama", "hidden_size": {}, "intermediate_size": 11008, "num_attention_heads": {heads},
                "num_hidden_layers": 1, "num_key_value_heads": {heads}, "max_position_embeddings": {context},
                "rms_norm_eps": 1e-5, "vocab_size": 32000, "tie_word_embeddings": false}}"#,
            heads * 128
        );
        lutlab_core::ModelConfig::from_json(json.as_bytes(), "config.json").unwrap()
    }

    #[test]
    fn long_windows_pass_a_few_at_a_time() {
        // A 7B model's 32 heads at 2048 positions: 512 MiB of scores per window, 2 per pass (the
        // device run that found it asked a 4 GiB buffer for 8 and failed).
        assert_eq!(windows_per_pass(&llama(32, 4096), 2048), 2);
        assert_eq!(windows_per_pass(&llama(32, 4096), 4096), 1);
        // Short windows keep the default batch.
        assert!(windows_per_pass(&llama(12, 1024), 1024) >= HessianSettings::DEFAULT_BATCH);
    }
}
