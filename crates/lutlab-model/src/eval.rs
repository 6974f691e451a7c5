//! Perplexity of a token stream on the GPU, with HF's strided protocol (see
//! `lutlab_core::perplexity`). Windows that share a shape run as one batch; only the scored
//! positions go through the language-model head.

use crate::device::download;
use crate::error::{ModelError, Result};
use crate::decoder::Decoder;
use burn::tensor::{Int, Tensor, TensorData};
use lutlab_core::perplexity::{batches, strided_windows, NllSum, Window};
use lutlab_core::{LoadError, Progress};

/// The longest default window: what GPTQ, SqueezeLLM and the Brevitas example evaluate OPT and
/// Llama at, whose configs allow 4k to 128k positions.
pub const DEFAULT_MAX_LENGTH: usize = 2048;

/// How to cut the text into windows.
#[derive(Clone, Copy, Debug)]
pub struct EvalSettings {
    /// Window length; defaults to the model's context (`n_positions`), at most
    /// [`DEFAULT_MAX_LENGTH`].
    pub max_length: usize,
    /// Distance between window starts; HF's and seed 000's default is `max_length / 2`.
    pub stride: usize,
    /// Upper bound on the bytes of one batch's logits, which dominate memory.
    pub max_logits_bytes: usize,
    /// A streamed model: upper bound on the residual streams of the windows that go through the
    /// blocks together (each block is read once per such chunk).
    pub max_stream_bytes: usize,
}

impl EvalSettings {
    pub fn for_model(model: &Decoder) -> Self {
        let max_length = model.config.n_positions.min(DEFAULT_MAX_LENGTH);
        Self { max_length, stride: max_length / 2, max_logits_bytes: 256 << 20, max_stream_bytes: 2 << 30 }
    }

    /// The model's defaults with a user's choices: a new `max_length` also halves into the stride
    /// unless a stride is given.
    pub fn with_overrides(model: &Decoder, max_length: Option<usize>, stride: Option<usize>) -> Self {
        let mut settings = Self::for_model(model);
        if let Some(max_length) = max_length {
            settings.max_length = max_length;
            settings.stride = max_length / 2;
        }
        if let Some(stride) = stride {
            settings.stride = stride;
        }
        settings
    }

    /// These settings for a native `gpu`: one batch's logits as large as it can hold in a buffer,
    /// up to 1 GiB. Larger batches amortize burn's cost per kernel launch over more windows
    /// (GPT-2 124M at 1024 tokens: 10 windows a batch instead of 2); software adapters such as
    /// lavapipe allocate at most 128 MiB at once. The page keeps the smaller default.
    pub fn fitted_to(mut self, gpu: &crate::Gpu) -> Self {
        let holdable = usize::try_from(gpu.max_binding_bytes()).unwrap_or(usize::MAX) / 2;
        self.max_logits_bytes = holdable.min(1 << 30);
        self
    }
}

/// Evaluates the mean negative log-likelihood of `tokens` (`what` names the text in errors).
pub async fn perplexity(
    model: &Decoder,
    tokens: &[u32],
    settings: EvalSettings,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<NllSum> {
    let config = &model.config;
    if settings.max_length > config.n_positions {
        return Err(LoadError::InvalidSetting(format!(
            "max-length {} exceeds the model's context of {} positions",
            settings.max_length, config.n_positions
        ))
        .into());
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
        return Err(LoadError::InvalidSetting(format!("token id {bad} is outside the vocabulary of {}", config.vocab_size)).into());
    }
    let windows = strided_windows(tokens.len(), settings.max_length, settings.stride, what)?;
    let total: u64 = windows.iter().map(|w| w.scored() as u64).sum();
    let mut sum = NllSum::default();
    progress.update(0, total);
    let batches = batches(&windows, batch_size(&windows, settings, config));
    // A streamed model reads every block once per chunk of batches, so its chunks are as large
    // as the residual streams they keep allow; a resident one runs a batch at a time.
    let per_chunk = if model.is_streamed() {
        let batch_bytes = batches.iter().map(|b| b.len() * b[0].len() * config.n_embd * 4).max().unwrap_or(1).max(1);
        (settings.max_stream_bytes / batch_bytes).max(1)
    } else {
        1
    };
    for chunk in batches.chunks(per_chunk) {
        if progress.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let nll = chunk_nll(model, tokens, chunk).await?;
        sum.add(nll.iter().map(|&v| v as f64).sum(), nll.len());
        progress.update(sum.scored as u64, total);
    }
    Ok(sum)
}

/// Windows per batch so that one batch's logits stay under `max_logits_bytes`.
/// The attention scores `[B, heads, T, T]` of a batch are bounded the same way: a Llama-7B window
/// of 2048 has 512 MiB of them, more than its logits.
fn batch_size(windows: &[Window], settings: EvalSettings, config: &lutlab_core::ModelConfig) -> usize {
    let scored = windows.iter().map(Window::scored).max().unwrap_or(1).max(1);
    let len = windows.iter().map(Window::len).max().unwrap_or(1).max(1);
    let by_logits = settings.max_logits_bytes / (scored * config.vocab_size * 4);
    let by_scores = settings.max_logits_bytes / (config.n_head * len * len * 4);
    by_logits.min(by_scores).clamp(1, 64)
}

/// Per-token NLL of the scored tokens of `batches` of windows (each batch's windows share a
/// length and first scored position), in order: one walk through the blocks for all of them.
pub async fn chunk_nll(model: &Decoder, tokens: &[u32], batches: &[Vec<Window>]) -> Result<Vec<f32>> {
    let ids = batches
        .iter()
        .map(|batch| model.tokens(&batch.iter().map(|w| &tokens[w.begin..w.end]).collect::<Vec<_>>()))
        .collect();
    let mut out = Vec::new();
    for (batch, hidden) in batches.iter().zip(model.hidden_batches(ids)?) {
        out.extend(scored_nll(model, tokens, batch, hidden).await?);
    }
    Ok(out)
}

/// Per-token NLL of the scored tokens of windows that share a length and first scored position.
pub async fn batch_nll(model: &Decoder, tokens: &[u32], batch: &[Window]) -> Result<Vec<f32>> {
    chunk_nll(model, tokens, &[batch.to_vec()]).await
}

/// The NLL of a batch's scored tokens from its final hidden states `[B, T, C]`.
async fn scored_nll(model: &Decoder, tokens: &[u32], batch: &[Window], hidden: Tensor<3>) -> Result<Vec<f32>> {
    let first = batch[0];
    let (p, s, b) = (first.first_scored_position(), first.scored(), batch.len());
    let [_, t, c] = hidden.dims();
    debug_assert!(p + s <= t);
    let scored_hidden = hidden.slice([0..b, p..p + s, 0..c]);
    let targets: Vec<u32> = batch.iter().flat_map(|w| tokens[w.score_from..w.end].iter().copied()).collect();
    let logits = model.lm_head(scored_hidden);
    if let Some(nll) = crate::fused::nll_in_model().then(|| crate::fused::token_nll(&logits, &targets)).flatten() {
        return download(nll).await;
    }
    let targets = targets.into_iter().map(|id| id as i32).collect();
    let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, s, 1]), &model.device());
    download(token_nll(logits, targets)).await
}

/// Vocabulary entries summed together before the partial sums are added (see [`token_nll`]).
const SUM_BLOCK: usize = 128;

/// The negative log-likelihood `[B, S, 1]` of `targets` `[B, S, 1]` under `logits` `[B, S, V]`:
/// `log Σ exp(x − max) − (x_target − max)`, with the softmax denominator summed in two stages
/// (blocks of [`SUM_BLOCK`] entries, then the blocks). burn's reduction adds a row into one f32
/// total in vocabulary order; past ~10⁴ entries the smallest probabilities round away against
/// it, which made GPT-2's and OPT's perplexity (50,257 entries) 8.6e-5 lower than float64's
/// (issue 21, `scripts/numpy_reference.py`). Used by evaluation and by Fisher's loss.
pub(crate) fn token_nll(logits: Tensor<3>, targets: Tensor<3, Int>) -> Tensor<3> {
    let [b, s, v] = logits.dims();
    // The maximum only keeps exp() in range: it cancels from the result, so no gradient.
    let shifted = logits.clone() - logits.max_dim(2).detach();
    let target = shifted.clone().gather(2, targets);
    let exp = shifted.exp();
    let whole = v / SUM_BLOCK * SUM_BLOCK;
    let mut sum = exp.clone().slice([0..b, 0..s, 0..whole]).reshape([b, s, whole / SUM_BLOCK, SUM_BLOCK]).sum_dim(3).sum_dim(2).reshape([b, s, 1]);
    if whole < v {
        sum = sum + exp.slice([0..b, 0..s, whole..v]).sum_dim(2);
    }
    sum.log() - target
}
