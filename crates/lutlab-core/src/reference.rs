//! The decoder's forward pass in plain Rust, written out step by step for every family (GPT-2,
//! OPT, Llama): the CPU reference that the GPU model is tested against. Slow by design; clarity
//! over speed.

use crate::checkpoint::HostTensor;
use crate::error::{LoadError, Result};
use crate::config::{Activation, ModelConfig, NormKind, Positions};
use crate::quant::head::HEAD;
use crate::quant::hessian::Square;
use crate::quant::inputs::{InputCalibration, InputMultipliers, InputParams, InputQuantSettings, InputQuantization};
use crate::weights::{LinearWeights, ModelWeights, NormWeights};
use std::collections::BTreeMap;

/// `gelu_new`: GPT-2's tanh approximation of GELU.
pub fn gelu_new(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// Checks tokens against the vocabulary and the sequence against the context length.
pub fn check_tokens(weights: &ModelWeights, tokens: &[u32]) -> Result<()> {
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
pub fn forward(weights: &ModelWeights, tokens: &[u32]) -> Result<Vec<f32>> {
    forward_with_inputs(weights, tokens, None)
}

/// [`forward`] with every linear's input fake-quantized by `inputs` (`quant::inputs`), the
/// LM head's too when `inputs.settings.quantize_head`.
pub fn forward_with_inputs(weights: &ModelWeights, tokens: &[u32], inputs: Option<&InputQuantization>) -> Result<Vec<f32>> {
    let mut x = hidden_observed(weights, tokens, inputs, &mut |_, _, _| {})?;
    if let Some(q) = inputs.filter(|q| q.settings.quantize_head) {
        q.quantize(HEAD, &mut x, weights.config.embed_dim)?;
    }
    let head = weights.lm_head.as_ref().unwrap_or(&weights.wte);
    Ok(lm_head(&x, head))
}

/// Seed 000's centering statistics on the CPU: for every linear layer of the blocks (by full
/// name, `ModelConfig::linear_names`), the mean of its input vector over every position of every
/// window (each window a separate sequence starting at position 0), summed in f64. `windows`
/// must be non-empty.
pub fn linear_input_means(weights: &ModelWeights, windows: &[&[u32]]) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut sums: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let positions = for_each_input_row(weights, windows, &mut |name, row| {
        let sum = sums.entry(name.to_string()).or_insert_with(|| vec![0.0; row.len()]);
        sum.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v));
    })?;
    for sum in sums.values_mut() {
        sum.iter_mut().for_each(|s| *s /= positions as f64);
    }
    Ok(sums)
}

/// SmoothQuant's activation ranges on the CPU: for every linear layer of the blocks, the largest
/// magnitude of each input channel over every position of every window.
pub fn linear_input_absmax(weights: &ModelWeights, windows: &[&[u32]]) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut maxima: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for_each_input_row(weights, windows, &mut |name, row| {
        let max = maxima.entry(name.to_string()).or_insert_with(|| vec![0.0; row.len()]);
        max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v.abs()));
    })?;
    Ok(maxima)
}

/// Static input scales on the CPU (`quant::inputs::InputCalibration`): every linear input of
/// every window, unquantized (times the layer's multiplier, if any), and the head's input when
/// `settings.quantize_head`.
pub fn calibrate_inputs(
    weights: &ModelWeights,
    windows: &[&[u32]],
    settings: &InputQuantSettings,
    multipliers: &InputMultipliers,
) -> Result<BTreeMap<String, InputParams>> {
    if windows.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()));
    }
    let names = weights.config.linear_names();
    let per_block = weights.config.block_linears().len();
    let mut calibration = InputCalibration::default();
    let mut failed = None;
    for window in windows {
        let hidden = hidden_observed(weights, window, None, &mut |block, layer, input| {
            if failed.is_none() {
                let name = &names[block * per_block + layer].0;
                failed = calibration.add_window(settings, name, input, multipliers.get(name).map(Vec::as_slice)).err();
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(e);
        }
        if settings.quantize_head {
            calibration.add_window(settings, HEAD, &hidden, None)?;
        }
    }
    Ok(calibration.finish(settings))
}

/// Calls `visit(linear name, input row)` for every position of every window and every linear of
/// the blocks; returns the number of positions.
fn for_each_input_row(weights: &ModelWeights, windows: &[&[u32]], visit: &mut dyn FnMut(&str, &[f32])) -> Result<usize> {
    if windows.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()));
    }
    let names = weights.config.linear_names();
    let per_block = weights.config.block_linears().len();
    let mut positions = 0usize;
    for window in windows {
        hidden_observed(weights, window, None, &mut |block, layer, input| {
            let name = &names[block * per_block + layer].0;
            let width = input.len() / window.len();
            input.chunks_exact(width).for_each(|row| visit(name, row));
        })?;
        positions += window.len();
    }
    Ok(positions)
}

/// The Hessians `(2/N) Σ x xᵀ` of every distinct linear input over `N` windows, in f64, keyed
/// as the Hessian file keys them (the first linear reading the input, `hessian_file`).
pub fn linear_input_hessians(weights: &ModelWeights, windows: &[&[u32]]) -> Result<BTreeMap<String, Square>> {
    if windows.is_empty() {
        return Err(LoadError::InvalidSetting("no calibration windows".into()));
    }
    let config = &weights.config;
    let specs = config.block_linears();
    let firsts: Vec<usize> = config.input_groups().iter().map(|g| g.start).collect();
    let mut sums: BTreeMap<String, Square> = BTreeMap::new();
    for window in windows {
        hidden_observed(weights, window, None, &mut |block, layer, input| {
            if !firsts.contains(&layer) {
                return;
            }
            let n = specs[layer].n_in;
            let h = sums.entry(format!("{}.{}", config.block_prefix(block), specs[layer].name)).or_insert_with(|| Square::zeros(n));
            for row in input.chunks_exact(n) {
                for (i, &xi) in row.iter().enumerate() {
                    let out = &mut h.data[i * n..(i + 1) * n];
                    out.iter_mut().zip(row).for_each(|(o, &xj)| *o += f64::from(xi) * f64::from(xj));
                }
            }
        })?;
    }
    let scale = 2.0 / windows.len() as f64;
    sums.values_mut().for_each(|h| h.data.iter_mut().for_each(|v| *v *= scale));
    Ok(sums)
}

/// The final hidden states `[T, embed_dim]` (after the final norm and any output projection);
/// `observe(block, layer, input)` sees the input `[T, in]` of linear `layer` (in
/// `ModelConfig::block_linears` order) of every block, before `inputs` (if any) quantizes it.
fn hidden_observed(
    weights: &ModelWeights,
    tokens: &[u32],
    inputs: Option<&InputQuantization>,
    observe: &mut dyn FnMut(usize, usize, &[f32]),
) -> Result<Vec<f32>> {
    check_tokens(weights, tokens)?;
    let config = &weights.config;
    let specs = config.block_linears();
    // Linear `layer` of block `block` reads `x` quantized (`InputQuantization::quantize`).
    let quantized = |block: usize, layer: usize, x: &[f32]| -> Result<Vec<f32>> {
        let mut x = x.to_vec();
        if let Some(q) = inputs {
            let name = format!("{}.{}", config.block_prefix(block), specs[layer].name);
            q.quantize(&name, &mut x, specs[layer].n_in)?;
        }
        Ok(x)
    };
    // The inputs of the linears `layers`, which share `x` (q, k and v; gate and up): quantized
    // once, by the first of them (they are calibrated on the same values), unless input
    // multipliers give each its own.
    let shared = |block: usize, layers: std::ops::Range<usize>, x: &[f32]| -> Result<Vec<Vec<f32>>> {
        let own = inputs.is_some_and(|q| layers.clone().any(|l| q.multipliers.contains_key(&format!("{}.{}", config.block_prefix(block), specs[l].name))));
        if own {
            return layers.map(|l| quantized(block, l, x)).collect();
        }
        let first = quantized(block, layers.start, x)?;
        Ok(vec![first; layers.len()])
    };
    let (t_len, e) = (tokens.len(), config.embed_dim);
    let mut x: Vec<f32> = tokens.iter().flat_map(|&tok| weights.wte.data[tok as usize * e..][..e].iter().copied()).collect();
    if let Some(project_in) = &weights.project_in {
        x = linear(&x, project_in);
    }
    if let (Some(wpe), Positions::Learned { offset }) = (&weights.wpe, &config.positions) {
        let c = config.n_embd;
        for t in 0..t_len {
            let row = &wpe.data[(t + offset) * c..][..c];
            x[t * c..][..c].iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
    }
    let rope = Rope::new(config, t_len);
    for (i, block) in weights.blocks.iter().enumerate() {
        let l = &block.linears;
        let norm_in = |x: &[f32], n| if config.pre_norm { norm(x, n, config) } else { x.to_vec() };
        // Attention.
        let h = norm_in(&x, &block.norm_1);
        let (q, k, v, next) = if config.fused_qkv() {
            observe(i, 0, &h);
            let qkv = linear(&quantized(i, 0, &h)?, &l[0]);
            let c = config.n_embd;
            let part = |p: usize| qkv.chunks_exact(3 * c).flat_map(|row| row[p * c..][..c].iter().copied()).collect::<Vec<f32>>();
            (part(0), part(1), part(2), 1)
        } else {
            (0..3).for_each(|j| observe(i, j, &h));
            let h = shared(i, 0..3, &h)?;
            (linear(&h[0], &l[0]), linear(&h[1], &l[1]), linear(&h[2], &l[2]), 3)
        };
        let attn = causal_attention(config, &rope, q, k, v, t_len);
        observe(i, next, &attn);
        add_in_place(&mut x, &linear(&quantized(i, next, &attn)?, &l[next]));
        if !config.pre_norm {
            x = norm(&x, &block.norm_1, config);
        }
        // MLP.
        let h = norm_in(&x, &block.norm_2);
        let m = &l[next + 1..];
        let hidden = match config.activation {
            Activation::SwiGlu => {
                observe(i, next + 1, &h);
                observe(i, next + 2, &h);
                let h = shared(i, next + 1..next + 3, &h)?;
                let up = linear(&h[1], &m[1]);
                linear(&h[0], &m[0]).iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect::<Vec<f32>>()
            }
            Activation::GeluTanh | Activation::Relu => {
                observe(i, next + 1, &h);
                let mut f = linear(&quantized(i, next + 1, &h)?, &m[0]);
                let act = if config.activation == Activation::Relu { |v: f32| v.max(0.0) } else { gelu_new };
                f.iter_mut().for_each(|v| *v = act(*v));
                f
            }
        };
        let down = m.len() - 1;
        observe(i, next + 1 + down, &hidden);
        add_in_place(&mut x, &linear(&quantized(i, next + 1 + down, &hidden)?, &m[down]));
        if !config.pre_norm {
            x = norm(&x, &block.norm_2, config);
        }
    }
    if let Some(ln_f) = &weights.ln_f {
        x = norm(&x, ln_f, config);
    }
    if let Some(project_out) = &weights.project_out {
        x = linear(&x, project_out);
    }
    Ok(x)
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// `x · sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The family's norm over the last dimension.
pub fn norm(x: &[f32], n: &NormWeights, config: &ModelConfig) -> Vec<f32> {
    match config.norm {
        NormKind::LayerNorm => layer_norm(x, n, config.norm_eps as f32),
        NormKind::RmsNorm => rms_norm(x, n, config.norm_eps),
    }
}

/// LayerNorm over the last dimension, biased variance, as PyTorch computes it.
pub fn layer_norm(x: &[f32], ln: &NormWeights, eps: f32) -> Vec<f32> {
    let c = ln.gamma.numel();
    let zeros = vec![0f32; c];
    let beta = ln.beta.as_ref().map_or(&zeros[..], |b| &b.data[..]);
    let mut out = vec![0f32; x.len()];
    for (row, out_row) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..c {
            out_row[i] = ((row[i] as f64 - mean) * inv) as f32 * ln.gamma.data[i] + beta[i];
        }
    }
    out
}

/// RMSNorm as Llama computes it: `γ · x / sqrt(mean(x²) + eps)`.
pub fn rms_norm(x: &[f32], n: &NormWeights, eps: f64) -> Vec<f32> {
    let c = n.gamma.numel();
    let mut out = vec![0f32; x.len()];
    for (row, out_row) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let ms = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            out_row[i] = (f64::from(row[i]) * inv) as f32 * n.gamma.data[i];
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

/// Rotary tables for `t_len` positions: `cos`/`sin` `[T, head_dim / 2]`, or none.
pub struct Rope {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

impl Rope {
    /// The tables of `config` (HF's `rotate_half` convention: pair `i` is `(x_i, x_{i+d/2})`),
    /// computed in f64; `None` for learned positions.
    pub fn new(config: &ModelConfig, t_len: usize) -> Option<Self> {
        let Positions::Rope { theta, scaling } = &config.positions else { return None };
        let half = config.head_dim / 2;
        let mut inv_freq: Vec<f64> = (0..half).map(|i| 1.0 / theta.powf(2.0 * i as f64 / config.head_dim as f64)).collect();
        if let Some(s) = scaling {
            s.apply(&mut inv_freq);
        }
        // transformers computes the angles in f32 from f32 inverse frequencies.
        let inv_freq: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let angles: Vec<f32> = (0..t_len).flat_map(|t| inv_freq.iter().map(move |&f| t as f32 * f)).collect();
        Some(Self { cos: angles.iter().map(|a| a.cos()).collect(), sin: angles.iter().map(|a| a.sin()).collect(), half })
    }

    /// Rotates one head's vector at position `t` in place.
    fn apply(&self, x: &mut [f32], t: usize) {
        let h = self.half;
        for i in 0..h {
            let (c, s) = (self.cos[t * h + i], self.sin[t * h + i]);
            let (a, b) = (x[i], x[i + h]);
            x[i] = a * c - b * s;
            x[i + h] = b * c + a * s;
        }
    }
}

/// Causal self-attention: `q` `[T, H·D]`, `k`/`v` `[T, KV·D]` (each query head reads key/value
/// head `h / (H / KV)`), rotary embeddings applied when the family has them; `[T, H·D]` out.
fn causal_attention(config: &ModelConfig, rope: &Option<Rope>, mut q: Vec<f32>, mut k: Vec<f32>, v: Vec<f32>, t_len: usize) -> Vec<f32> {
    let (n_head, n_kv, d) = (config.n_head, config.n_kv_head, config.head_dim);
    if let Some(rope) = rope {
        for t in 0..t_len {
            q[t * n_head * d..][..n_head * d].chunks_exact_mut(d).for_each(|h| rope.apply(h, t));
            k[t * n_kv * d..][..n_kv * d].chunks_exact_mut(d).for_each(|h| rope.apply(h, t));
        }
    }
    let scale = 1.0 / (d as f32).sqrt();
    let group = n_head / n_kv;
    let mut out = vec![0f32; t_len * n_head * d];
    for h in 0..n_head {
        let kv = h / group;
        let q_at = |t: usize| &q[(t * n_head + h) * d..][..d];
        let k_at = |t: usize| &k[(t * n_kv + kv) * d..][..d];
        let v_at = |t: usize| &v[(t * n_kv + kv) * d..][..d];
        for t in 0..t_len {
            let scores: Vec<f32> = (0..=t).map(|s| q_at(t).iter().zip(k_at(s)).map(|(a, b)| a * b).sum::<f32>() * scale).collect();
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = exps.iter().sum();
            let out_row = &mut out[(t * n_head + h) * d..][..d];
            for (s, e) in exps.iter().enumerate() {
                let p = e / total;
                out_row.iter_mut().zip(v_at(s)).for_each(|(o, v)| *o += p * v);
            }
        }
    }
    out
}

/// Logits against an embedding-shaped head `[vocab, embed_dim]`: `x · headᵀ`.
fn lm_head(x: &[f32], head: &HostTensor) -> Vec<f32> {
    let c = head.shape[1];
    let mut logits = Vec::with_capacity(x.len() / c * head.shape[0]);
    for row in x.chunks_exact(c) {
        logits.extend(head.data.chunks_exact(c).map(|e| row.iter().zip(e).map(|(a, b)| a * b).sum::<f32>()));
    }
    logits
}

/// Negative log-likelihood of `target` under one row of logits, in f64.
pub fn nll(logits_row: &[f32], target: u32) -> f64 {
    let max = logits_row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits_row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    lse - logits_row[target as usize] as f64
}
