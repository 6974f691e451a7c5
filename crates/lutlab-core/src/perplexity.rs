//! Hugging Face's strided perplexity protocol ("perplexity of fixed-length models"): windows of
//! `max_length` tokens every `stride` tokens; each window scores only the tokens after the previous
//! window's end, so every token but the first is scored exactly once, with as much context as the
//! window allows.
//!
//! With `stride == max_length` the windows do not overlap and this is GPTQ's protocol (also
//! SqueezeLLM's and the Brevitas example's): `⌊N / max_length⌋` windows, each scoring all its
//! tokens but the first, and the tail shorter than a window dropped.

use crate::error::{LoadError, Result};

/// One evaluation window over the token stream: tokens `[begin, end)`, targets `[score_from, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub score_from: usize,
}

impl Window {
    pub fn len(&self) -> usize {
        self.end - self.begin
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.begin
    }
    /// Position inside the window of the logits that predict the first target.
    pub fn first_scored_position(&self) -> usize {
        self.score_from - 1 - self.begin
    }
    pub fn scored(&self) -> usize {
        self.end - self.score_from
    }
}

/// Windows of the strided protocol over `num_tokens` tokens. `what` names the text in errors.
pub fn strided_windows(num_tokens: usize, max_length: usize, stride: usize, what: &str) -> Result<Vec<Window>> {
    if max_length < 2 {
        return Err(LoadError::InvalidSetting(format!("max-length {max_length} must be at least 2")));
    }
    if stride == 0 || stride > max_length {
        return Err(LoadError::InvalidSetting(format!("stride {stride} must be between 1 and max-length {max_length}")));
    }
    if num_tokens == 0 {
        return Err(LoadError::EmptyText { what: what.to_string() });
    }
    if num_tokens < max_length {
        return Err(LoadError::TextTooShort { what: what.to_string(), tokens: num_tokens, needed: max_length });
    }
    let mut windows = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    loop {
        let end = (begin + max_length).min(num_tokens);
        if stride == max_length && end - begin < max_length {
            return Ok(windows); // GPTQ's protocol drops the tail.
        }
        windows.push(Window { begin, end, score_from: prev_end.max(begin + 1) });
        prev_end = end;
        if end == num_tokens {
            return Ok(windows);
        }
        begin += stride;
    }
}

/// Windows that share a length and a first scored position, so they can run as one batch.
pub fn batches(windows: &[Window], max_batch: usize) -> Vec<Vec<Window>> {
    let mut out: Vec<Vec<Window>> = Vec::new();
    for &w in windows {
        match out.last_mut() {
            Some(batch)
                if batch.len() < max_batch.max(1)
                    && batch[0].len() == w.len()
                    && batch[0].first_scored_position() == w.first_scored_position() =>
            {
                batch.push(w)
            }
            _ => out.push(vec![w]),
        }
    }
    out
}

/// Summed negative log-likelihood over scored tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct NllSum {
    pub nll_sum: f64,
    pub scored: usize,
}

impl NllSum {
    pub fn add(&mut self, nll: f64, count: usize) {
        self.nll_sum += nll;
        self.scored += count;
    }
    pub fn perplexity(&self) -> f64 {
        (self.nll_sum / self.scored as f64).exp()
    }
}
