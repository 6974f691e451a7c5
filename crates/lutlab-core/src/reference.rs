//! GPT-2's forward pass in plain Rust, written out step by step: the CPU reference that the GPU
//! model is tested against. Slow by design; clarity over speed.

use crate::checkpoint::HostTensor;
use crate::error::{LoadError, Result};
use crate::weights::{Gpt2Weights, LayerNormWeights, LinearWeights};
use std::collections::BTreeMap;

/// `gelu_new`: GPT-2's tanh approximation of GELU.
pub fn gelu_new(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// Checks tokens against the vocabulary and the sequence against the context length.
pub fn check_tokens(weights: &Gpt2Weights, tokens: &[u32]) -> Result<()> {
    let config = &weights.config;
    if tokens.is_empty() || tokens.len() > config.n_positions {
        return Err(LoadError::InvalidSetting(format!(
            "a sequence has {} tokens; the model takes 1 to {}",
            tokens.len(),
            config.n_positions
        )));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
        return Err(LoadError::InvalidSetting(format!("token id {bad} is outside the vocabulary of {}", config.vocab_size)));
    }
    Ok(())
}

/// Logits `[T, vocab]` (row-major) for one sequence.
pub fn forward(weights: &Gpt2Weights, tokens: &[u32]) -> Result<Vec<f32>> {
    let x = hidden_observed(weights, tokens, &mut |_, _, _| {})?;
    Ok(tied_lm_head(&x, &weights.wte))
}

/// The four linear layers of a block, in forward order, as their names end
/// (`h.{i}.attn.c_attn`, ...).
pub const LINEAR_LAYERS: [&str; 4] = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

/// Seed 000's centering statistics on the CPU: for every linear layer `h.{i}.{LINEAR_LAYERS}`,
/// the mean of its input vector over every position of every window (each window a separate
/// sequence starting at position 0), summed in f64. `windows` must be non-empty.
pub fn linear_input_means(weights: &Gpt2Weights, windows: &[&[u32]]) -> Result<BTreeMap<String, Vec<f64>>> {
    if windows.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()));
    }
    let mut sums: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut positions = 0usize;
    for window in windows {
        hidden_observed(weights, window, &mut |block, layer, input| {
            let sum = sums.entry(format!("h.{block}.{}", LINEAR_LAYERS[layer])).or_default();
            let width = input.len() / window.len();
            sum.resize(width, 0.0);
            for row in input.chunks_exact(width) {
                sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
            }
        })?;
        positions += window.len();
    }
    for sum in sums.values_mut() {
        sum.iter_mut().for_each(|s| *s /= positions as f64);
    }
    Ok(sums)
}

/// The final hidden states `[T, C]` (after `ln_f`); `observe(block, layer, input)` sees the input
/// `[T, in]` of linear layer `LINEAR_LAYERS[layer]` of every block.
fn hidden_observed(
    weights: &Gpt2Weights,
    tokens: &[u32],
    observe: &mut dyn FnMut(usize, usize, &[f32]),
) -> Result<Vec<f32>> {
    check_tokens(weights, tokens)?;
    let config = &weights.config;
    let (t_len, c) = (tokens.len(), config.n_embd);
    let eps = config.layer_norm_epsilon as f32;

    let mut x = vec![0f32; t_len * c];
    for (t, &tok) in tokens.iter().enumerate() {
        let tok_row = &weights.wte.data[tok as usize * c..][..c];
        let pos_row = &weights.wpe.data[t * c..][..c];
        for i in 0..c {
            x[t * c + i] = tok_row[i] + pos_row[i];
        }
    }
    for (i, block) in weights.blocks.iter().enumerate() {
        let h = layer_norm(&x, &block.ln_1, eps);
        observe(i, 0, &h);
        let qkv = linear(&h, &block.attn_c_attn);
        let attn = causal_attention(&qkv, t_len, config.n_head, c);
        observe(i, 1, &attn);
        add_in_place(&mut x, &linear(&attn, &block.attn_c_proj));

        let h = layer_norm(&x, &block.ln_2, eps);
        observe(i, 2, &h);
        let mut f = linear(&h, &block.mlp_c_fc);
        f.iter_mut().for_each(|v| *v = gelu_new(*v));
        observe(i, 3, &f);
        add_in_place(&mut x, &linear(&f, &block.mlp_c_proj));
    }
    Ok(layer_norm(&x, &weights.ln_f, eps))
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// LayerNorm over the last dimension, biased variance, as PyTorch computes it.
pub fn layer_norm(x: &[f32], ln: &LayerNormWeights, eps: f32) -> Vec<f32> {
    let c = ln.gamma.numel();
    let mut out = vec![0f32; x.len()];
    for (row, out_row) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..c {
            out_row[i] = ((row[i] as f64 - mean) * inv) as f32 * ln.gamma.data[i] + ln.beta.data[i];
        }
    }
    out
}

/// `y = x · W + b` with W in Conv1D layout `[in, out]`.
pub fn linear(x: &[f32], layer: &LinearWeights) -> Vec<f32> {
    let (n_in, n_out) = (layer.in_features(), layer.out_features());
    let mut out = Vec::with_capacity(x.len() / n_in * n_out);
    for row in x.chunks_exact(n_in) {
        let mut acc: Vec<f32> = layer.bias.data.clone();
        for (i, &xi) in row.iter().enumerate() {
            let w_row = &layer.weight.data[i * n_out..][..n_out];
            acc.iter_mut().zip(w_row).for_each(|(a, &w)| *a += xi * w);
        }
        out.extend_from_slice(&acc);
    }
    out
}

/// Multi-head causal self-attention on a fused `[T, 3C]` q|k|v projection.
fn causal_attention(qkv: &[f32], t_len: usize, n_head: usize, c: usize) -> Vec<f32> {
    let d = c / n_head;
    let scale = 1.0 / (d as f32).sqrt();
    let at = |t: usize, part: usize, h: usize| &qkv[t * 3 * c + part * c + h * d..][..d];
    let mut out = vec![0f32; t_len * c];
    for h in 0..n_head {
        for t in 0..t_len {
            let q = at(t, 0, h);
            let scores: Vec<f32> =
                (0..=t).map(|s| q.iter().zip(at(s, 1, h)).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = exps.iter().sum();
            let out_row = &mut out[t * c + h * d..][..d];
            for (s, e) in exps.iter().enumerate() {
                let p = e / total;
                out_row.iter_mut().zip(at(s, 2, h)).for_each(|(o, v)| *o += p * v);
            }
        }
    }
    out
}

/// Logits against the tied embedding: `x · wteᵀ`.
fn tied_lm_head(x: &[f32], wte: &HostTensor) -> Vec<f32> {
    let c = wte.shape[1];
    let mut logits = Vec::with_capacity(x.len() / c * wte.shape[0]);
    for row in x.chunks_exact(c) {
        logits.extend(wte.data.chunks_exact(c).map(|e| row.iter().zip(e).map(|(a, b)| a * b).sum::<f32>()));
    }
    logits
}

/// Negative log-likelihood of `target` under one row of logits, in f64.
pub fn nll(logits_row: &[f32], target: u32) -> f64 {
    let max = logits_row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits_row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    lse - logits_row[target as usize] as f64
}
