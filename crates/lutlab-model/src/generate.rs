//! Text generation: continue a prompt one token at a time, greedily or by sampling, with the same
//! forward pass (dense or packed LUT kernels) that evaluation uses.
//!
//! The first step runs the prompt through the blocks, keeping each block's keys and values (a KV
//! cache); every later step runs just the new token, attending to the cache, through the same
//! block code. Only the last position's logits (one `[vocab]` row) are read back. Sampling
//! happens on the host from that row, with lutlab's own seeded generator, so a seed gives the same
//! text natively and in the browser.

use crate::device::download;
use crate::error::{ModelError, Result};
use crate::decoder::{Decoder, KvCache};
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::tokenizer::END_OF_TEXT;
use lutlab_core::{LoadError, Progress, TextTokenizer};

/// How the next token is chosen from the last position's logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id among exact ties).
    Greedy,
    /// A draw from `softmax(logits / temperature)` restricted to the `top_k` most likely tokens
    /// (`0`: the whole vocabulary), from a generator seeded with `seed`.
    Sample { temperature: f64, top_k: usize, seed: u64 },
}

impl std::fmt::Display for Sampling {
    /// "greedy", or "sampled at temperature 0.8, top-50, seed 3".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Greedy => write!(f, "greedy"),
            Self::Sample { temperature, top_k: 0, seed } => write!(f, "sampled at temperature {temperature}, seed {seed}"),
            Self::Sample { temperature, top_k, seed } => write!(f, "sampled at temperature {temperature}, top-{top_k}, seed {seed}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GenerateSettings {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Stop after producing this token (GPT-2's `<|endoftext|>`); it is kept in the output.
    pub stop_token: Option<u32>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    MaxNewTokens,
    EndOfText,
    /// The context reached the model's `n_positions`: GPT-2 has no position beyond it.
    ContextFull,
}

impl StopReason {
    /// A short name for reports ("max_new_tokens", "end_of_text", "context_full").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxNewTokens => "max_new_tokens",
            Self::EndOfText => "end_of_text",
            Self::ContextFull => "context_full",
        }
    }

    /// What a user should read when generation stopped early; `None` when it simply finished.
    pub fn explain(self, n_positions: usize) -> Option<String> {
        match self {
            Self::MaxNewTokens => None,
            Self::EndOfText => Some("the model ended the text (its end-of-text token)".into()),
            Self::ContextFull => Some(format!("stopped at the model's context of {n_positions} positions")),
        }
    }
}

/// The new tokens (the prompt is not repeated) and why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stopped: StopReason,
}

impl GenerateSettings {
    /// Refuses settings that cannot generate anything meaningful, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if let Sampling::Sample { temperature, .. } = self.sampling
            && !(temperature.is_finite() && temperature > 0.0)
        {
            return Err(invalid(format!("temperature must be a positive number, got {temperature} (use greedy decoding for temperature 0)")));
        }
        Ok(())
    }
}

fn invalid(message: String) -> ModelError {
    LoadError::InvalidSetting(message).into()
}

/// Checks that `prompt` can be continued by `model`: not empty, in the vocabulary, and leaving
/// room in the context for at least one new token's prediction.
pub fn check_prompt(model: &Decoder, prompt: &[u32]) -> Result<()> {
    let config = &model.config;
    if prompt.is_empty() {
        return Err(invalid("the prompt is empty: give at least one token of text to continue".into()));
    }
    if prompt.len() > config.n_positions {
        return Err(invalid(format!(
            "the prompt has {} tokens but the model's context holds {}: shorten it",
            prompt.len(),
            config.n_positions
        )));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= config.vocab_size) {
        return Err(invalid(format!("token id {bad} is outside the vocabulary of {}", config.vocab_size)));
    }
    Ok(())
}

/// Continues `prompt` by up to `settings.max_new_tokens` tokens. `progress` counts new tokens and
/// is polled for cancellation before each step.
pub async fn generate(model: &Decoder, prompt: &[u32], settings: GenerateSettings, progress: &mut dyn Progress) -> Result<Generation> {
    check_prompt(model, prompt)?;
    settings.validate()?;
    let n_positions = model.config.n_positions;
    let mut rng = match settings.sampling {
        Sampling::Sample { seed, .. } => Some(SplitMix64::new(seed)),
        Sampling::Greedy => None,
    };
    let mut context = prompt.to_vec();
    let mut caches = vec![KvCache::default(); model.n_blocks()];
    let mut tokens = Vec::with_capacity(settings.max_new_tokens);
    let total = settings.max_new_tokens as u64;
    progress.update(0, total);
    let stopped = loop {
        if tokens.len() == settings.max_new_tokens {
            break StopReason::MaxNewTokens;
        }
        // The logits at position n_positions - 1 predict one more token; past that GPT-2 has no
        // position embedding to run the next step with.
        if context.len() > n_positions {
            break StopReason::ContextFull;
        }
        if progress.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        // The cache holds every position but the newest token's (the whole prompt at first).
        let logits = cached_next_token_logits(model, &context[caches[0].len()..], &mut caches).await?;
        if logits.iter().all(|v| v.is_nan()) {
            return Err(ModelError::Gpu(format!("the model's logits after {} tokens are all NaN: its weights or the GPU are broken", context.len())));
        }
        let token = match (&settings.sampling, rng.as_mut()) {
            (Sampling::Sample { temperature, top_k, .. }, Some(rng)) => sample(&logits, *temperature, *top_k, rng),
            _ => argmax(&logits),
        };
        context.push(token);
        tokens.push(token);
        progress.update(tokens.len() as u64, total);
        if Some(token) == settings.stop_token {
            break StopReason::EndOfText;
        }
    };
    Ok(Generation { tokens, stopped })
}

/// The logits `[vocab]` predicting the token after `context` (1 to `n_positions` tokens): the
/// whole context through the blocks, only its last position through the head, and only that row
/// read back.
pub async fn next_token_logits(model: &Decoder, context: &[u32]) -> Result<Vec<f32>> {
    check_prompt(model, context)?;
    let hidden = model.hidden(model.tokens(&[context]))?;
    let [b, t, c] = hidden.dims();
    let last = hidden.slice([0..b, t - 1..t, 0..c]);
    download(model.lm_head(last)).await
}

/// The logits `[vocab]` predicting the token after the cached positions and `new` tokens, which
/// the caches then hold too.
pub async fn cached_next_token_logits(model: &Decoder, new: &[u32], caches: &mut [KvCache]) -> Result<Vec<f32>> {
    let hidden = model.hidden_cached(model.tokens(&[new]), caches)?;
    let [b, t, c] = hidden.dims();
    let last = hidden.slice([0..b, t - 1..t, 0..c]);
    download(model.lm_head(last)).await
}

/// The index of the largest logit; the lowest index among exact ties, and NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// One draw from `softmax(logits / temperature)` over the `top_k` largest logits (`0`: all).
/// Candidates are ordered by logit, then id, so the draw depends only on the logits and the
/// generator's state. Needs a positive, finite temperature ([`GenerateSettings::validate`]).
pub fn sample(logits: &[f32], temperature: f64, top_k: usize, rng: &mut SplitMix64) -> u32 {
    let mut candidates: Vec<u32> = (0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()).collect();
    candidates.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    if top_k > 0 {
        candidates.truncate(top_k);
    }
    let Some(&best) = candidates.first() else { return 0 };
    let max = logits[best as usize] as f64;
    // f64 weights relative to the largest logit: no overflow, and the top candidate weighs 1.
    let weights: Vec<f64> = candidates.iter().map(|&i| ((logits[i as usize] as f64 - max) / temperature).exp()).collect();
    let mut target = rng.next_f64() * weights.iter().sum::<f64>();
    for (&id, &w) in candidates.iter().zip(&weights) {
        if target < w {
            return id;
        }
        target -= w;
    }
    // Rounding left a sliver past the last weight: the last candidate.
    candidates[candidates.len() - 1]
}

/// The end-of-text token of this tokenizer, when it has one: where to stop. GPT-2's and OPT's
/// `<|endoftext|>`, Llama 2's `</s>`, Llama 3's `<|end_of_text|>`.
pub fn end_of_text(tokenizer: &TextTokenizer) -> Option<u32> {
    [END_OF_TEXT, "</s>", "<|end_of_text|>"].into_iter().find_map(|token| tokenizer.token_id(token))
}

/// The text `new` tokens add after `prompt`. Decoded together with the prompt, so a character
/// whose bytes straddle the boundary (byte-level BPE splits them) comes out whole.
pub fn continuation(tokenizer: &TextTokenizer, prompt: &[u32], new: &[u32]) -> Result<String> {
    let whole = tokenizer.decode(&[prompt, new].concat())?;
    let before = tokenizer.decode(prompt)?;
    Ok(match whole.strip_prefix(&before) {
        Some(rest) => rest.to_string(),
        None => tokenizer.decode(new)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.7]), 2);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_the_candidates() {
        let logits = [0.1, 2.0, -1.0, 1.9, 0.0];
        let mut rng = SplitMix64::new(3);
        for _ in 0..100 {
            assert_eq!(sample(&logits, 5.0, 1, &mut rng), 1);
            assert!([1, 3].contains(&sample(&logits, 5.0, 2, &mut rng)));
        }
    }

    #[test]
    fn draws_follow_the_softmax_of_the_scaled_logits() {
        let logits = [0.0f32, 1.0, 2.0, -30.0];
        let temperature = 0.7;
        let n = 200_000;
        let mut counts = [0usize; 4];
        let mut rng = SplitMix64::new(42);
        for _ in 0..n {
            counts[sample(&logits, temperature, 0, &mut rng) as usize] += 1;
        }
        let weights: Vec<f64> = logits.iter().map(|&l| (l as f64 / temperature).exp()).collect();
        let z: f64 = weights.iter().sum();
        for (i, (&count, w)) in counts.iter().zip(&weights).enumerate() {
            let p = w / z;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let freq = count as f64 / n as f64;
            // 5 standard deviations: fails for a wrong distribution, not for chance.
            assert!((freq - p).abs() <= 5.0 * sd + 1e-9, "token {i}: frequency {freq} vs probability {p}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) / 20.0).collect();
        let draws = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..50).map(|_| sample(&logits, 1.0, 0, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
    }

    #[test]
    fn a_zero_or_negative_temperature_is_refused() {
        for temperature in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let settings = GenerateSettings { max_new_tokens: 4, sampling: Sampling::Sample { temperature, top_k: 0, seed: 0 }, stop_token: None };
            let message = settings.validate().unwrap_err().to_string();
            assert!(message.contains("temperature must be a positive number"), "{message}");
        }
    }
}
