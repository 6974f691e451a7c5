//! Seed 000's centering statistics on the GPU: the mean input vector of every linear layer over
//! calibration text (`docs/SEED000.md`).
//!
//! The reference (`collect_activation_stats` in `apple-silicon-4bit-quant`) runs the original,
//! unquantized fp32 model on 100 windows of `n_positions` (1024) tokens, each a separate
//! sequence, records `x.mean(dim=-2)` (the mean over all positions of the window, position 0
//! included) at the input of every linear layer, and averages those per-window means: with
//! equal-length windows, the mean over every calibration position. Its windows come from C4
//! (documents of at least `seqlen` tokens, Python's `random.seed(42)`); here they are drawn by
//! [`sample_starts`] from the token stream the caller gives, as `lutlab fisher` draws its own (same
//! seed, `seqlen` and text → the same windows as the first `nsamples` Fisher windows).
//!
//! Layer inputs are what the one decoder block (`decoder::Block::forward`) feeds each linear: in
//! GPT-2 `attn.c_attn` ← `ln_1(x)`; `attn.c_proj` ← the merged attention heads; `mlp.c_fc` ←
//! `ln_2(x)`; `mlp.c_proj` ← `gelu_new(c_fc(·))` (the reference's separate q, k and v projections
//! all see `ln_1(x)`, so `c_attn`'s single shift is theirs); in OPT and Llama q, k and v each get
//! the same normed input, gate and up likewise.

use crate::device::download;
use crate::error::{ModelError, Result};
use crate::fisher::{FisherSettings, sample_starts};
use crate::decoder::{BlockVisitor, Decoder};
use burn::tensor::Tensor;
use lutlab_core::{LoadError, Progress};
use std::collections::BTreeMap;

/// How to sample the calibration text for the means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationSettings {
    /// Number of windows (seed 000: 100).
    pub nsamples: usize,
    /// Tokens per window; defaults to the model's context (`n_positions`; seed 000: 1024).
    pub seqlen: usize,
    /// Seed of the window sampler (the Fisher default, so both see the same windows).
    pub seed: u64,
    /// Windows per forward pass (memory only; the result does not depend on it beyond rounding).
    pub batch: usize,
}

impl ActivationSettings {
    pub const DEFAULT_NSAMPLES: usize = 100;
    pub const DEFAULT_BATCH: usize = 4;

    pub fn for_model(model: &Decoder) -> Self {
        Self {
            nsamples: Self::DEFAULT_NSAMPLES,
            seqlen: model.config.n_positions.min(crate::eval::DEFAULT_MAX_LENGTH),
            seed: FisherSettings::DEFAULT_SEED,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// The start of each window these settings draw from `tokens`, checked against the model
    /// (context, text length, vocabulary).
    pub(crate) fn starts(&self, model: &Decoder, tokens: &[u32]) -> Result<Vec<usize>> {
        if self.nsamples == 0 {
            return Err(LoadError::InvalidSetting("nsamples must be at least 1".into()).into());
        }
        check_seqlen(model, self.seqlen)?;
        let starts = sample_starts(tokens.len(), self.nsamples, self.seqlen, self.seed, "calibration text")?;
        check_windows(model, tokens, &starts, self.seqlen)?;
        Ok(starts)
    }

    /// The model's defaults with a user's choices.
    pub fn with_overrides(
        model: &Decoder,
        nsamples: Option<usize>,
        seqlen: Option<usize>,
        seed: Option<u64>,
        batch: Option<usize>,
    ) -> Self {
        let d = Self::for_model(model);
        Self {
            nsamples: nsamples.unwrap_or(d.nsamples),
            seqlen: seqlen.unwrap_or(d.seqlen),
            seed: seed.unwrap_or(d.seed),
            batch: batch.unwrap_or(d.batch),
        }
    }
}

/// The mean input of every linear layer (`h.{i}.attn.c_attn`, `h.{i}.attn.c_proj`,
/// `h.{i}.mlp.c_fc`, `h.{i}.mlp.c_proj`: `in` values each, the `PackedLinear::input_shift` of
/// centering) over `settings.nsamples` random windows of `tokens`. Cancellable between batches.
pub async fn linear_input_means(
    model: &Decoder,
    tokens: &[u32],
    settings: ActivationSettings,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, Vec<f32>>> {
    Ok(linear_input_stats(model, tokens, settings, progress).await?.means)
}

/// [`linear_input_means`] with each input channel's largest magnitude beside the mean.
pub async fn linear_input_stats(
    model: &Decoder,
    tokens: &[u32],
    settings: ActivationSettings,
    progress: &mut dyn Progress,
) -> Result<InputStats> {
    let starts = settings.starts(model, tokens)?;
    linear_input_stats_windows(model, tokens, &starts, settings.seqlen, settings.batch, progress).await
}

/// Per linear layer by full name, statistics of its input channels over the calibration
/// positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputStats {
    /// The mean (seed 000's centering).
    pub means: BTreeMap<String, Vec<f32>>,
    /// The largest magnitude, `max |x_j|` (SmoothQuant's activation range).
    pub absmax: BTreeMap<String, Vec<f32>>,
}

/// [`linear_input_stats`] on given windows `tokens[start..start + seqlen]`. Each batch's sums and
/// maxima over its positions are read back and accumulated on the host (sums in f64).
pub async fn linear_input_stats_windows(
    model: &Decoder,
    tokens: &[u32],
    starts: &[usize],
    seqlen: usize,
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<InputStats> {
    check_seqlen(model, seqlen)?;
    if batch == 0 {
        return Err(LoadError::InvalidSetting("batch must be at least 1".into()).into());
    }
    check_windows(model, tokens, starts, seqlen)?;

    let names: Vec<String> = model.config.linear_names().into_iter().map(|(name, _)| name).collect();
    let (mut sums, mut maxima): (Vec<Vec<f64>>, Vec<Vec<f32>>) = (Vec::new(), Vec::new());
    let ctx = model.context(seqlen);
    let total = (starts.len() * seqlen) as u64;
    let mut done = 0u64;
    progress.update(0, total);
    for chunk in starts.chunks(batch) {
        if progress.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let rows: Vec<&[u32]> = chunk.iter().map(|&s| &tokens[s..s + seqlen]).collect();
        let mut states = [(ctx.clone(), model.embed(model.tokens(&rows)))];
        let mut batch_stats = InputReductions::default();
        model.run_blocks(&mut states, Some(&mut batch_stats))?;
        drop(states);
        let widths: Vec<usize> = batch_stats.sums.iter().map(|p| p.dims()[0]).collect();
        let flat_sums = download(Tensor::cat(batch_stats.sums, 0)).await?;
        let flat_maxima = download(Tensor::cat(batch_stats.maxima, 0)).await?;
        if let Some(i) = flat_sums.iter().chain(&flat_maxima).position(|v| !v.is_finite()) {
            return Err(ModelError::Gpu(format!("a non-finite activation statistic (element {i}) in windows {chunk:?}")));
        }
        if sums.is_empty() {
            sums = widths.iter().map(|&w| vec![0f64; w]).collect();
            maxima = widths.iter().map(|&w| vec![0f32; w]).collect();
        }
        let mut offset = 0;
        for ((sum, max), &w) in sums.iter_mut().zip(&mut maxima).zip(&widths) {
            sum.iter_mut().zip(&flat_sums[offset..offset + w]).for_each(|(s, &v)| *s += f64::from(v));
            max.iter_mut().zip(&flat_maxima[offset..offset + w]).for_each(|(m, &v)| *m = m.max(v));
            offset += w;
        }
        done += (chunk.len() * seqlen) as u64;
        progress.update(done, total);
    }
    let positions = (starts.len() * seqlen) as f64;
    let means = names.iter().cloned().zip(sums).map(|(name, sum)| (name, sum.iter().map(|s| (s / positions) as f32).collect())).collect();
    Ok(InputStats { means, absmax: names.into_iter().zip(maxima).collect() })
}

/// Each linear input's sum and largest magnitude over batch and positions, in model order.
#[derive(Default)]
struct InputReductions {
    sums: Vec<Tensor<1>>,
    maxima: Vec<Tensor<1>>,
}

impl BlockVisitor for InputReductions {
    fn inputs(&mut self, _index: usize, inputs: Vec<Tensor<3>>) -> Result<()> {
        for input in inputs {
            let n_in = input.dims()[2];
            self.maxima.push(input.clone().abs().max_dim(0).max_dim(1).reshape([n_in]));
            self.sums.push(input.sum_dim(0).sum_dim(1).reshape([n_in]));
        }
        Ok(())
    }
}

/// Every window `tokens[start..start + seqlen]` inside the text and the vocabulary.
pub(crate) fn check_windows(model: &Decoder, tokens: &[u32], starts: &[usize], seqlen: usize) -> Result<()> {
    if starts.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()).into());
    }
    let vocab = model.config.vocab_size;
    for (i, &start) in starts.iter().enumerate() {
        let window = tokens.get(start..start + seqlen).ok_or_else(|| {
            LoadError::InvalidSetting(format!(
                "window {i} ({start}..{}) runs past the end of the text ({} tokens)",
                start + seqlen,
                tokens.len()
            ))
        })?;
        if let Some(&bad) = window.iter().find(|&&t| t as usize >= vocab) {
            return Err(LoadError::InvalidSetting(format!("token id {bad} is outside the vocabulary of {vocab}")).into());
        }
    }
    Ok(())
}

pub(crate) fn check_seqlen(model: &Decoder, seqlen: usize) -> Result<()> {
    let n_positions = model.config.n_positions;
    if seqlen == 0 || seqlen > n_positions {
        return Err(LoadError::InvalidSetting(format!(
            "seqlen {seqlen} must be between 1 and the model's context of {n_positions}"
        ))
        .into());
    }
    Ok(())
}
