//! The diagonal Fisher information of a model's linear weights, with burn's autodiff on the GPU:
//! for each weight `w`, `F(w) = Σ_samples (∂ loss_sample / ∂ w)²`, the sensitivity that
//! SqueezeLLM and seed 000 weight k-means by.
//!
//! The protocol, as SqueezeLLM's gradient script (and GPTQ's calibration loader):
//! - `nsamples` windows of `seqlen` consecutive tokens are cut from the calibration token stream
//!   at random starts, drawn uniformly from `0..=n_tokens - seqlen` by a splitmix64 generator
//!   seeded with `seed` (deterministic, independent of the platform; GPTQ's
//!   `randint(0, n - seqlen - 1)` leaves out the last start, we do not);
//! - each sample's loss is its mean next-token cross-entropy, as Hugging Face's
//!   `model(input_ids=x, labels=x).loss` with a batch of one: logits at positions `0..seqlen-1`
//!   against the tokens at `1..seqlen`;
//! - its gradient is squared elementwise and added to a per-weight accumulator on the GPU.
//!
//! Like SqueezeLLM, only the linear weights of every block are kept (the tensors that get
//! quantized: `ModelConfig::block_linears`); no gradient is computed for embeddings, biases or
//! norms, which saves the `[vocab, n_embd]` gradient of the head.
//!
//! Micro-batching: a sample's squared gradient is not the square of a batch's gradient, so a
//! micro-batch of `B` samples runs with `B` copies of each linear weight (a `[B, in, out]` leaf
//! that the `B` samples multiply by in one batched matmul): the gradient of the summed loss with
//! respect to copy `b` is exactly sample `b`'s gradient. `B = 1` is the leanest in memory;
//! larger `B` trades memory for fewer, larger GPU launches.
//!
//! Memory: a whole-model graph at GPT-2's context holds every block's attention scores and
//! softmax (`[B, heads, T, T]` each) and the `[B, T, vocab]` logits, several GB for GPT-2 124M.
//! So a micro-batch runs as activation checkpointing at block granularity:
//! 1. a forward pass without a graph keeps only each block's input `[B, T, C]`;
//! 2. the head runs over chunks of positions outside autodiff: logits, then one kernel for the
//!    loss and its gradient with respect to the logits (`fused::token_nll_gradient`), then the
//!    head's matmul back to the final hidden states; one small graph through `ln_f` (and OPT's
//!    output projection) takes that to the last block's output;
//! 3. blocks are then recomputed last to first, each with a graph of its own: the upstream
//!    gradient is pulled through the block (`backward` of `Σ output ⊙ upstream`), giving the
//!    block's weight gradients (squared and accumulated at once) and the gradient of its input.
//!
//! One block's graph and gradients are alive at a time, at the cost of a second forward pass.
//! After each micro-batch one small read-back (each sample's loss and per-tensor sum of squared
//! gradients) checks every sample for NaN/Inf and bounds how far the host runs ahead of the GPU.

use crate::device::download;
use crate::error::{ModelError, Result};
use crate::decoder::{finish, Block, BlockContext, Decoder, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lutlab_core::fisher_file::{FisherDiagonal, FisherMeta};
use lutlab_core::{profile, HostTensor, LoadError, Progress};
use std::borrow::Cow;

/// How to sample the calibration text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FisherSettings {
    /// Number of calibration windows (SqueezeLLM's and seed 000's default: 128).
    pub nsamples: usize,
    /// Tokens per window; defaults to the model's context (`n_positions`), at most 2048.
    pub seqlen: usize,
    /// Seed of the window sampler.
    pub seed: u64,
    /// Samples per forward/backward pass (see the module documentation); 1 by default.
    pub micro_batch: usize,
    /// Blocks whose Fisher accumulates in one pass over the windows (all by default). A model
    /// whose accumulators do not fit the GPU next to it runs several passes, last blocks first,
    /// each handing its blocks' diagonal over when it ends (see [`fisher_into`]). Each block's
    /// backward runs once per window whatever the passes; each later pass repeats the forward
    /// of the blocks below its group.
    pub blocks_per_pass: Option<usize>,
    /// Upper bound on one chunk of the head's logits (micro-batch × positions × vocabulary
    /// f32s): the head runs over chunks of positions of this size. Larger chunks give the head's
    /// matmuls more rows to spread over the GPU (GPT-2's 1023 positions in 32 MB chunks of 163
    /// left its gradient product 12 workgroups); [`Self::fitted_to`] takes what the GPU can bind.
    pub max_logits_bytes: usize,
}

impl FisherSettings {
    pub const DEFAULT_NSAMPLES: usize = 128;
    pub const DEFAULT_SEED: u64 = 0;
    /// [`Self::max_logits_bytes`] by default (and in the page): within any adapter's binding limit.
    pub const DEFAULT_LOGITS_BYTES: usize = 32 << 20;
    /// The most [`Self::fitted_to`] gives a chunk: a GPT-2 window's 1023 positions in one chunk.
    const FITTED_LOGITS_BYTES: usize = 256 << 20;

    pub fn for_model(model: &Decoder) -> Self {
        Self {
            nsamples: Self::DEFAULT_NSAMPLES,
            seqlen: model.config.n_positions.min(crate::eval::DEFAULT_MAX_LENGTH),
            seed: Self::DEFAULT_SEED,
            micro_batch: 1,
            blocks_per_pass: None,
            max_logits_bytes: Self::DEFAULT_LOGITS_BYTES,
        }
    }

    /// These settings for a native `gpu`: head chunks as large as half of what it binds in one
    /// buffer, up to 256 MB.
    pub fn fitted_to(mut self, gpu: &crate::Gpu) -> Self {
        let holdable = usize::try_from(gpu.max_binding_bytes()).unwrap_or(usize::MAX) / 2;
        self.max_logits_bytes = holdable.clamp(Self::DEFAULT_LOGITS_BYTES.min(holdable), Self::FITTED_LOGITS_BYTES);
        self
    }

    /// The model's defaults with a user's choices.
    pub fn with_overrides(
        model: &Decoder,
        nsamples: Option<usize>,
        seqlen: Option<usize>,
        seed: Option<u64>,
        micro_batch: Option<usize>,
    ) -> Self {
        let d = Self::for_model(model);
        Self {
            nsamples: nsamples.unwrap_or(d.nsamples),
            seqlen: seqlen.unwrap_or(d.seqlen),
            seed: seed.unwrap_or(d.seed),
            micro_batch: micro_batch.unwrap_or(d.micro_batch),
            blocks_per_pass: None,
            max_logits_bytes: d.max_logits_bytes,
        }
    }

    /// Bytes of the largest logits buffer of a pass (one chunk of positions of one
    /// micro-batch), so callers can compare it with the GPU's binding limit before starting.
    pub fn logits_bytes(&self, vocab_size: usize) -> u64 {
        let b = self.micro_batch.min(self.nsamples.max(1));
        let positions = head_chunk_positions(b, vocab_size, self.max_logits_bytes).min(self.seqlen.saturating_sub(1));
        (b * positions * vocab_size * 4) as u64
    }
}

/// A finished Fisher pass: the diagonal (with `nsamples`, `seqlen`, `seed` and the mean loss in
/// its metadata; `model` and `data` are left for the caller to fill), the window starts used,
/// and the GPU memory it took.
#[derive(Clone, Debug)]
pub struct FisherRun {
    pub diagonal: FisherDiagonal,
    pub starts: Vec<usize>,
    /// The largest reservation of burn's memory pools seen right after each backward (pools keep
    /// pages for reuse, so this bounds the peak in use from above). `None` where the backend does
    /// not report it.
    pub peak_reserved_bytes: Option<u64>,
}

/// splitmix64 (Steele, Lea, Flood 2014): a tiny, well-mixed, platform-independent generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw from `0..n` by the multiply-shift map (Lemire), `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The start positions of `nsamples` windows of `seqlen` tokens in a stream of `n_tokens`,
/// uniform over `0..=n_tokens - seqlen`, deterministic for `seed` (`what` names the text).
pub fn sample_starts(
    n_tokens: usize,
    nsamples: usize,
    seqlen: usize,
    seed: u64,
    what: &str,
) -> Result<Vec<usize>> {
    if n_tokens < seqlen {
        return Err(LoadError::TextTooShort {
            what: what.to_string(),
            tokens: n_tokens,
            needed: seqlen,
        }
        .into());
    }
    let choices = (n_tokens - seqlen + 1) as u64;
    let mut rng = SplitMix64::new(seed);
    Ok((0..nsamples).map(|_| rng.below(choices) as usize).collect())
}

/// The Fisher diagonal of `model`'s linear weights on random windows of `tokens` (see the module
/// documentation); `what` names the text in errors. Cancellable between micro-batches.
pub async fn fisher(
    model: &Decoder,
    tokens: &[u32],
    settings: FisherSettings,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<FisherRun> {
    let mut collected = Vec::new();
    let mut run = fisher_into(model, tokens, settings, what, progress, &mut |name, t| {
        collected.push((name, t));
        Ok(())
    })
    .await?;
    run.diagonal.tensors = in_model_order(model, collected);
    Ok(run)
}

/// [`fisher`], each tensor of the diagonal handed to `sink` as soon as its pass ends (so a large
/// model's diagonal is written to disk block group by block group, never held whole); the
/// returned run's `diagonal.tensors` is empty.
pub async fn fisher_into(
    model: &Decoder,
    tokens: &[u32],
    settings: FisherSettings,
    what: &str,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(String, HostTensor) -> Result<()>,
) -> Result<FisherRun> {
    check_settings(model, settings.seqlen, settings.micro_batch)?;
    if settings.nsamples == 0 {
        return Err(LoadError::InvalidSetting("nsamples must be at least 1".into()).into());
    }
    let starts = sample_starts(tokens.len(), settings.nsamples, settings.seqlen, settings.seed, what)?;
    let plan = Plan { seqlen: settings.seqlen, micro_batch: settings.micro_batch, blocks_per_pass: settings.blocks_per_pass, max_logits_bytes: settings.max_logits_bytes };
    let mut run = fisher_passes(model, tokens, &starts, plan, what, progress, sink).await?;
    run.diagonal.meta.seed = Some(settings.seed);
    Ok(run)
}

/// The Fisher diagonal on given windows `tokens[start..start + seqlen]` (the fixed windows of a
/// reference, say), in one pass. The result's metadata has no seed.
pub async fn fisher_windows(
    model: &Decoder,
    tokens: &[u32],
    starts: &[usize],
    seqlen: usize,
    micro_batch: usize,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<FisherRun> {
    let mut collected = Vec::new();
    let plan = Plan { seqlen, micro_batch, blocks_per_pass: None, max_logits_bytes: FisherSettings::DEFAULT_LOGITS_BYTES };
    let mut run = fisher_passes(model, tokens, starts, plan, what, progress, &mut |name, t| {
        collected.push((name, t));
        Ok(())
    })
    .await?;
    run.diagonal.tensors = in_model_order(model, collected);
    Ok(run)
}

/// How the windows are run: their length, samples per pass, blocks per pass, head chunks.
#[derive(Clone, Copy, Debug)]
struct Plan {
    seqlen: usize,
    micro_batch: usize,
    blocks_per_pass: Option<usize>,
    max_logits_bytes: usize,
}

/// `tensors` sorted into the Fisher file's order (model order).
fn in_model_order(model: &Decoder, mut tensors: Vec<(String, HostTensor)>) -> Vec<(String, HostTensor)> {
    let names = weight_names(model);
    tensors.sort_by_key(|(name, _)| names.iter().position(|n| n == name));
    tensors
}

/// The passes over `starts`, one per group of `blocks_per_pass` blocks, last group first: the
/// first runs the whole forward and the backward down to its group's first block; each later
/// one runs the forward up to its group's end and the backward through its group, from the
/// gradient the pass before handed down (kept on the host: `nsamples · seqlen · hidden` f32s,
/// 4.3 GB for 128 windows of 2048 tokens at hidden 4096). Each pass hands its blocks' diagonal
/// to `sink`. Losses (the metadata's mean) come from the first pass.
async fn fisher_passes(
    model: &Decoder,
    tokens: &[u32],
    starts: &[usize],
    plan: Plan,
    what: &str,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(String, HostTensor) -> Result<()>,
) -> Result<FisherRun> {
    let Plan { seqlen, micro_batch, blocks_per_pass, max_logits_bytes } = plan;
    check_settings(model, seqlen, micro_batch)?;
    if starts.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()).into());
    }
    if let Some((i, &start)) = starts.iter().enumerate().find(|&(_, &s)| s + seqlen > tokens.len()) {
        return Err(LoadError::InvalidSetting(format!(
            "{what}: window {i} ({start}..{}) runs past the end of the text ({} tokens)",
            start + seqlen,
            tokens.len()
        ))
        .into());
    }
    let vocab = model.config.vocab_size;
    for &start in starts {
        if let Some(&bad) = tokens[start..start + seqlen].iter().find(|&&t| t as usize >= vocab) {
            return Err(LoadError::InvalidSetting(format!("token id {bad} is outside the vocabulary of {vocab}")).into());
        }
    }
    let n_layer = model.n_blocks();
    let per_pass = blocks_per_pass.unwrap_or(n_layer).clamp(1, n_layer.max(1));
    let groups: Vec<std::ops::Range<usize>> = (0..n_layer).step_by(per_pass).map(|g| g..(g + per_pass).min(n_layer)).rev().collect();

    let device = model.device();
    let names = weight_names(model);
    let specs = model.config.block_linears();
    let per_block = specs.len();
    let passes = FisherPasses::new(model, seqlen, max_logits_bytes);
    let total = (groups.len() * starts.len() * seqlen) as u64;
    let mut peak = PeakMemory::new(&device);
    let mut loss_sum = 0f64;
    // Per micro-batch: its samples' losses (from the first pass) and the gradient with respect to
    // the input of the last pass's first block, which the next pass starts its backward from.
    let mut losses: Vec<Vec<f32>> = Vec::new();
    let mut handed_down: Vec<Option<Vec<f32>>> = vec![None; starts.len().div_ceil(micro_batch)];
    progress.update(0, total);
    for (pass, group) in groups.iter().enumerate() {
        let tensor_names = &names[group.start * per_block..group.end * per_block];
        let mut accumulators: Vec<Tensor<2>> =
            group.clone().flat_map(|_| specs.iter().map(|s| Tensor::zeros([s.n_in, s.n_out], &device))).collect();
        for (batch_index, batch) in starts.chunks(micro_batch).enumerate() {
            if progress.is_cancelled() {
                return Err(ModelError::Cancelled);
            }
            let first_sample = batch_index * micro_batch;
            let b = batch.len();
            let from_above = handed_down[batch_index].take().map(|g| passes.upload_gradient(g, b));
            let step = passes.accumulate(tokens, batch, group.clone(), tensor_names, from_above, &mut accumulators, &mut peak)?;
            // One read-back per micro-batch: it checks every sample and bounds how far the host
            // runs ahead of the GPU.
            let phase = profile::start();
            let read = match step.losses {
                Some(l) => Tensor::cat(vec![l, step.sums], 0),
                None => step.sums,
            };
            let mut sums = download(read).await?;
            if pass == 0 {
                losses.push(sums.drain(..b).collect());
                loss_sum += losses[batch_index].iter().map(|&l| f64::from(l)).sum::<f64>();
            }
            check_samples(&losses[batch_index], &sums, first_sample, batch, seqlen, tensor_names, what)?;
            if let Some(below) = step.below {
                handed_down[batch_index] = Some(download(below).await?);
            }
            profile::stop("fisher: read-back (waits for the GPU)", phase);
            peak.sample();
            progress.update(((pass * starts.len() + first_sample + b) * seqlen) as u64, total);
        }
        for (name, acc) in tensor_names.iter().zip(accumulators) {
            let phase = profile::start();
            let shape = acc.dims().to_vec();
            let values = download(acc).await?;
            profile::stop("fisher: the pass's diagonal read back", phase);
            let phase = profile::start();
            sink(name.clone(), HostTensor::new(shape, values))?;
            profile::stop("fisher: the pass's diagonal handed over (written)", phase);
        }
        profile::report(&format!("fisher pass {} of {} (blocks {}..{})", pass + 1, groups.len(), group.start, group.end));
    }
    let meta = FisherMeta {
        nsamples: Some(starts.len()),
        seqlen: Some(seqlen),
        mean_loss: Some(loss_sum / starts.len() as f64),
        ..FisherMeta::default()
    };
    Ok(FisherRun {
        diagonal: FisherDiagonal { tensors: Vec::new(), meta, linear_layout: model.config.linear_layout() },
        starts: starts.to_vec(),
        peak_reserved_bytes: peak.bytes,
    })
}

fn check_settings(model: &Decoder, seqlen: usize, micro_batch: usize) -> Result<()> {
    let n_positions = model.config.n_positions;
    if seqlen < 2 || seqlen > n_positions {
        return Err(LoadError::InvalidSetting(format!(
            "seqlen {seqlen} must be between 2 (one next-token prediction) and the model's context of {n_positions}"
        ))
        .into());
    }
    if micro_batch == 0 {
        return Err(LoadError::InvalidSetting("micro-batch must be at least 1".into()).into());
    }
    Ok(())
}

/// `{linear}.weight` of every block linear, in model order.
fn weight_names(model: &Decoder) -> Vec<String> {
    model.config.linear_names().into_iter().map(|(name, _)| format!("{name}.weight")).collect()
}

/// `losses`: each sample's loss; `sums`: for each tensor, each sample's sum of squared
/// gradients. The first non-finite value names its sample (global index and window) and tensor.
fn check_samples(
    losses: &[f32],
    sums: &[f32],
    first_sample: usize,
    batch: &[usize],
    seqlen: usize,
    names: &[String],
    what: &str,
) -> Result<()> {
    let b = losses.len();
    let window = |j: usize| {
        let start = batch[j];
        format!(
            "Fisher sample {} (the window of tokens {start}..{})",
            first_sample + j,
            start + seqlen
        )
    };
    for (j, &loss) in losses.iter().enumerate() {
        if !loss.is_finite() {
            return Err(non_finite(
                what,
                format!("{} has a non-finite loss ({loss})", window(j)),
            ));
        }
        for (k, name) in names.iter().enumerate() {
            let sum = sums[k * b + j];
            if !sum.is_finite() {
                return Err(non_finite(
                    what,
                    format!(
                        "{} gives a non-finite gradient for `{name}` (sum of squares {sum}; loss {loss})",
                        window(j)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn non_finite(what: &str, reason: String) -> ModelError {
    LoadError::BadConfig {
        file: what.to_string(),
        reason: format!("{reason}: the model's weights overflow f32 on this text, or hold NaN/Inf"),
    }
    .into()
}

/// Positions per head chunk for a micro-batch of `b` samples, so that a chunk's logits stay
/// within `max_bytes` (the `[B, T, vocab]` logits and their gradient dominate a step's memory).
fn head_chunk_positions(b: usize, vocab: usize, max_bytes: usize) -> usize {
    (max_bytes / (b.max(1) * vocab.max(1) * 4)).max(1)
}

/// The largest reservation of burn's memory pools seen at the points where a pass holds the
/// most (right after each backward, while its gradients are alive).
struct PeakMemory {
    device: Device,
    bytes: Option<u64>,
}

impl PeakMemory {
    fn new(device: &Device) -> Self {
        let mut peak = Self { device: device.clone(), bytes: None };
        peak.sample();
        peak
    }

    fn sample(&mut self) {
        if let Some(usage) = self.device.memory_pool_usage() {
            self.bytes = Some(self.bytes.unwrap_or(0).max(usage.bytes_reserved));
        }
    }
}

/// One micro-batch of one pass: each sample's loss `[b]` (first pass only), for each of the
/// group's linears in model order each sample's sum of squared gradients (`[tensors · b]`), and
/// the gradient handed down to the next pass (`[b, t, hidden]`, unless the group starts at 0).
struct Step {
    losses: Option<Tensor<1>>,
    sums: Tensor<1>,
    below: Option<Tensor<3>>,
}

/// Adds a micro-batch's squared gradients `[b, in, out]` to their accumulator `[in, out]` in one
/// kernel (`fused::add_squares`); returns each sample's sum of squares `[b]`.
fn add_squares(accumulator: &mut Tensor<2>, grad: Tensor<3>) -> Result<Tensor<1>> {
    // Gradients come out of autodiff as plain f32 tensors, and each accumulator is this pass's own.
    crate::fused::add_squares(accumulator, &grad)
        .ok_or_else(|| ModelError::Gpu("Fisher's accumulation needs f32 gradients outside autodiff and an accumulator of its own".into()))
}

/// The two passes that give per-sample gradients while holding one block's graph at a time
/// (activation checkpointing at block granularity, see the module documentation).
struct FisherPasses<'a> {
    model: &'a Decoder,
    seqlen: usize,
    ctx: BlockContext,
    ctx_diff: BlockContext,
    max_logits_bytes: usize,
}

impl<'a> FisherPasses<'a> {
    fn new(model: &'a Decoder, seqlen: usize, max_logits_bytes: usize) -> Self {
        let ctx = model.context(seqlen);
        Self { model, seqlen, ctx_diff: ctx.map(|t| t.autodiff()), ctx, max_logits_bytes }
    }

    /// Adds each sample's squared gradients of the linears of the blocks in `group` to their
    /// `accumulators` (the group's linears in model order, named by `tensor_names`) as each
    /// block's backward ends, so only one block's gradients are alive at a time.
    ///
    /// The first pass (`from_above` is `None`) runs the forward through every block and the
    /// head, and its backward from the loss down to the group's first block. A later pass gets
    /// the gradient with respect to the output of its group's last block from the pass before
    /// (`from_above`), so its forward stops at the group's end and no block above the group is
    /// recomputed. Unless the group starts at block 0, the step hands down the gradient with
    /// respect to its first block's input for the next pass.
    fn accumulate(
        &self,
        tokens: &[u32],
        starts: &[usize],
        group: std::ops::Range<usize>,
        tensor_names: &[String],
        from_above: Option<Tensor<3>>,
        accumulators: &mut [Tensor<2>],
        peak: &mut PeakMemory,
    ) -> Result<Step> {
        let m = self.model;
        let (b, t) = (starts.len(), self.seqlen);
        let ids: Vec<i32> = starts
            .iter()
            .flat_map(|&s| tokens[s..s + t].iter().map(|&id| id as i32))
            .collect();
        let ids = TensorData::new(ids, [b, t]);
        let per_block = m.config.block_linears().len();
        let end = if from_above.is_some() { group.end } else { m.n_blocks() };

        // Forward without a graph, keeping each input of the group's blocks. A later pass needs
        // no output of its group's last block: it stops at that block's input.
        let mut inputs = Vec::with_capacity(group.len());
        let mut x = m.embed(Tensor::<2, Int>::from_data(ids, &m.device()));
        for i in 0..end {
            if i >= group.start {
                inputs.push(x.clone());
            }
            if from_above.is_some() && i + 1 == end {
                break;
            }
            let block = self.read_block(i)?;
            let phase = profile::start();
            let per_sample = per_sample_block(m, &block, i, b, false)?.0;
            x = per_sample.forward(&self.ctx, x, None);
            self.phase_done("fisher: block forwards without a graph", phase);
        }
        let (mut upstream, losses) = match from_above {
            Some(gradient) => (gradient, None),
            None => {
                let phase = profile::start();
                let targets: Vec<u32> = starts.iter().flat_map(|&s| tokens[s + 1..s + t].iter().copied()).collect();
                let (gradient, losses) = self.head_gradient(x, &targets, peak)?;
                self.phase_done("fisher: head, loss and its gradient", phase);
                (gradient, Some(losses))
            }
        };

        // Backward block by block, last first: recompute the block's forward with a graph, pull
        // the upstream gradient through it, and add its weights' squared gradients to their
        // accumulators.
        let mut sums = Vec::with_capacity(group.len());
        for (i, input) in group.clone().zip(inputs).rev() {
            let block = self.read_block(i)?;
            let phase = profile::start();
            // Block 0's input is the embedding, which needs no gradient.
            let needs_input_grad = i > 0;
            let input = if needs_input_grad { input.autodiff().require_grad() } else { input.autodiff() };
            let (per_sample, leaves) = per_sample_block(m, &block, i, b, true)?;
            let output = per_sample.forward(&self.ctx_diff, input.clone(), None);
            // Σ output ⊙ upstream, reduced in two stages as above (its gradient is `upstream`).
            let mut grads = (output * upstream.autodiff()).sum_dim(2).sum().backward();
            peak.sample();
            self.phase_done("fisher: block backwards (forward with a graph, then backward)", phase);
            let phase = profile::start();
            let mut block_sums = Vec::with_capacity(leaves.len());
            for (k, leaf) in leaves.iter().enumerate() {
                let grad = leaf.grad_remove(&mut grads).ok_or_else(|| missing_gradient(&tensor_names[(i - group.start) * per_block + k]))?;
                block_sums.push(add_squares(&mut accumulators[(i - group.start) * per_block + k], grad)?);
            }
            sums.push(block_sums);
            upstream = if needs_input_grad {
                input.grad_remove(&mut grads).ok_or_else(|| missing_gradient(&format!("the input of block {i}")))?
            } else {
                Tensor::empty([0, 0, 0], &m.device())
            };
            self.phase_done("fisher: squares accumulated", phase);
        }
        sums.reverse();
        let sums = Tensor::cat(sums.into_iter().flatten().collect(), 0);
        Ok(Step { losses, sums, below: (group.start > 0).then_some(upstream) })
    }

    /// A gradient handed down from the pass before, back on the GPU `[b, t, hidden]`.
    fn upload_gradient(&self, values: Vec<f32>, b: usize) -> Tensor<3> {
        let hidden = values.len() / (b * self.seqlen).max(1);
        Tensor::from_data(TensorData::new(values, [b, self.seqlen, hidden]), &self.model.device())
    }

    /// Block `i`, read from the checkpoint and uploaded if the model streams.
    fn read_block(&self, i: usize) -> Result<Cow<'a, Block>> {
        let phase = profile::start();
        let block = self.model.block(i)?;
        self.phase_done("fisher: blocks read and uploaded", phase);
        Ok(block)
    }

    /// Ends a profiled phase: under `LUTLAB_PROFILE=1` it first waits for the GPU, so that each
    /// phase is charged with its own GPU work (profiling serializes host and GPU).
    fn phase_done(&self, name: &'static str, phase: profile::Phase) {
        if phase.is_some() {
            // A failed sync shows up at the micro-batch's read-back; here it only ends the timing.
            let _ = self.model.device().sync();
        }
        profile::stop(name, phase);
    }

    /// Each sample's mean next-token cross-entropy `[b]` and its gradient with respect to the
    /// last block's output `x` `[b, t, c]`; `targets`: each sample's tokens at `1..t`.
    ///
    /// The logits are the largest tensors of a step, so they are made a chunk of positions at a
    /// time, outside autodiff: one kernel gives each chunk's loss and its gradient with respect
    /// to the logits (`softmax − one-hot`), and a matmul by the head takes that back to the final
    /// hidden states. Autodiff runs only through what lies between `x` and those (the final
    /// norm, OPT's output projection), once for the window.
    fn head_gradient(&self, x: Tensor<3>, targets: &[u32], peak: &mut PeakMemory) -> Result<(Tensor<3>, Tensor<1>)> {
        let m = self.model;
        let [b, t, _] = x.dims();
        let (vocab, scored) = (m.config.vocab_size, t - 1);
        // The final norm and output projection as constants of the differentiable pass.
        let ln_f = m.ln_f.as_ref().map(|n| n.map(|t| t.autodiff()));
        let project_out = m.project_out.as_ref().map(|p| match p.dense() {
            Some((w, bias)) => Linear::Dense { weight: w.clone().autodiff(), bias: bias.clone().autodiff() },
            None => p.clone(),
        });
        let differentiable = ln_f.is_some() || project_out.is_some();
        let leaf = x.clone().autodiff().require_grad();
        let hidden_tracked = differentiable.then(|| finish(ln_f.as_ref(), project_out.as_ref(), leaf.clone()));
        let hidden = hidden_tracked.as_ref().map_or(x, |h| h.clone().inner());
        let e = hidden.dims()[2];
        let (head, head_transposed) = (m.head_weight().clone(), m.head_weight().clone().transpose());
        let chunk = head_chunk_positions(b, vocab, self.max_logits_bytes);
        let mut losses = Tensor::<1>::zeros([b], &m.device());
        let mut hidden_grads = Vec::with_capacity(scored.div_ceil(chunk) + 1);
        for p0 in (0..scored).step_by(chunk) {
            let p1 = (p0 + chunk).min(scored);
            let p = p1 - p0;
            let rows = hidden.clone().slice([0..b, p0..p1, 0..e]).reshape([b * p, e]);
            let logits = crate::gemm::model_matmul(rows, head_transposed.clone());
            let chunk_targets: Vec<u32> = targets.chunks_exact(scored).flat_map(|sample| sample[p0..p1].iter().copied()).collect();
            let (nll, logits_grad) = crate::fused::token_nll_gradient(&logits, &chunk_targets, 1.0 / scored as f32)
                .ok_or_else(|| ModelError::Gpu("the loss kernel needs f32 logits outside autodiff".into()))?;
            peak.sample();
            losses = losses + nll.reshape([b, p]).sum_dim(1).reshape([b]) / scored as f64;
            hidden_grads.push(crate::gemm::model_matmul(logits_grad, head.clone()).reshape([b, p, e]));
        }
        // The last position predicts no token of the window.
        hidden_grads.push(Tensor::zeros([b, 1, e], &m.device()));
        let hidden_grad = Tensor::cat(hidden_grads, 1);
        let Some(hidden_tracked) = hidden_tracked else { return Ok((hidden_grad, losses)) };
        // Σ hidden ⊙ hidden_grad, whose gradient with respect to `hidden` is `hidden_grad`.
        let mut g = (hidden_tracked * hidden_grad.autodiff()).sum_dim(2).sum().backward();
        let grad = leaf.grad_remove(&mut g).ok_or_else(|| missing_gradient("the final hidden states"))?;
        Ok((grad, losses))
    }
}

fn missing_gradient(what: &str) -> ModelError {
    ModelError::Gpu(format!("autodiff returned no gradient for {what}"))
}

/// Block `index` for a Fisher pass, its inputs unquantized. With `leaves`, the block is
/// differentiable: its linears are per-sample copies `[b, in, out]` of the weights, autodiff
/// leaves (also returned) whose gradients are the samples' own, and its biases and norms are
/// constants. Without, the weights themselves. The one block implementation then runs it.
fn per_sample_block(model: &Decoder, block: &Block, index: usize, b: usize, leaves: bool) -> Result<(Block, Vec<Tensor<3>>)> {
    let constant1 = |t: Tensor<1>| if leaves { t.autodiff() } else { t };
    let mut linears = Vec::with_capacity(block.linears.len());
    let mut leaf_copies = Vec::with_capacity(block.linears.len());
    for (weight, bias) in dense_linears(model, block, index)? {
        if !leaves {
            // A forward without a graph needs no copies: every sample multiplies the one weight.
            linears.push(Linear::Dense { weight: weight.clone(), bias: bias.clone() });
            continue;
        }
        let weight = weight.clone().unsqueeze::<3>().repeat_dim(0, b).autodiff().require_grad();
        leaf_copies.push(weight.clone());
        linears.push(Linear::PerSample { weight, bias: constant1(bias.clone()) });
    }
    let per_sample = Block { norm_1: block.norm_1.map(constant1), norm_2: block.norm_2.map(constant1), linears, inputs: None };
    Ok((per_sample, leaf_copies))
}

/// A block's `(weight, bias)` pairs in `block_linears` order; Fisher differentiates the dense
/// model, so a packed layer is refused by name.
fn dense_linears<'b>(model: &Decoder, block: &'b Block, index: usize) -> Result<Vec<(&'b Tensor<2>, &'b Tensor<1>)>> {
    let prefix = model.config.block_prefix(index);
    let specs = model.config.block_linears();
    let mut out = Vec::with_capacity(block.linears.len());
    for (linear, spec) in block.linears.iter().zip(&specs) {
        out.push(linear.dense().ok_or_else(|| {
            LoadError::InvalidSetting(format!(
                "Fisher information needs the dense model, but `{prefix}.{}.weight` is packed",
                spec.name
            ))
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // First outputs for seed 1234567 (from the reference C implementation).
        let mut rng = SplitMix64::new(1234567);
        let want = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(rng.next_u64(), w);
        }
    }

    #[test]
    fn starts_are_deterministic_in_range_and_seed_dependent() {
        let a = sample_starts(1000, 64, 100, 7, "t").unwrap();
        assert_eq!(a, sample_starts(1000, 64, 100, 7, "t").unwrap());
        assert_ne!(a, sample_starts(1000, 64, 100, 8, "t").unwrap());
        assert!(a.iter().all(|&s| s <= 900));
        assert_eq!(sample_starts(100, 3, 100, 0, "t").unwrap(), vec![0, 0, 0]);
        let err = sample_starts(99, 3, 100, 0, "short.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("short.txt") && err.contains("99"), "{err}");
    }

    #[test]
    fn non_finite_values_name_the_sample_window_and_tensor() {
        let weights = [
            "h.0.attn.c_attn.weight".to_string(),
            "h.0.mlp.c_fc.weight".to_string(),
        ];
        // Micro-batch of 2 samples (global 4 and 5, starts 100 and 300): their losses, and the
        // sums of 2 tensors.
        let losses = [3.0, 4.0];
        let sums = [1.0, 2.0, 0.5, 0.25];
        assert!(check_samples(&losses, &sums, 4, &[100, 300], 16, &weights, "cal.txt").is_ok());
        let mut bad = sums;
        bad[3] = f32::INFINITY;
        let err = check_samples(&losses, &bad, 4, &[100, 300], 16, &weights, "cal.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cal.txt")
                && err.contains("sample 5")
                && err.contains("300..316")
                && err.contains("h.0.mlp.c_fc.weight"),
            "{err}"
        );
        let mut bad = losses;
        bad[0] = f32::NAN;
        let err = check_samples(&bad, &sums, 4, &[100, 300], 16, &weights, "cal.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sample 4") && err.contains("100..116") && err.contains("loss"),
            "{err}"
        );
    }
}
