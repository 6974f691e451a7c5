//! Shared by the cross-crate tests: paths into the repository, the shipped model, the GPU
//! device and a named tolerance check.

use lutlab_core::{LoadedModel, ModelFiles};
use lutlab_model::burn::tensor::Device;
use std::path::PathBuf;

pub fn repo(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

pub fn shipped_model() -> LoadedModel {
    ModelFiles::read_dir(&repo("models/gpt2-tiny-wikitext")).and_then(|f| f.load()).expect("shipped model loads")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo("tests/fixtures").join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

pub fn gpu() -> Device {
    pollster::block_on(lutlab_model::gpu_device()).expect("a wgpu adapter (lavapipe in CI)")
}

/// Elementwise `|got - want| <= abs`; panics naming the worst element. Returns the max error.
pub fn assert_all_close(what: &str, got: &[f32], want: &[f32], abs: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (worst, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0f32), |best, (i, e)| if e > best.1 || e.is_nan() { (i, e) } else { best });
    assert!(err <= abs, "{what}: max |error| {err:e} at {worst} (got {}, want {}) exceeds {abs:e}", got[worst], want[worst]);
    err
}

/// Log-sum-exp of each row of `cols`-wide rows, in f64.
pub fn row_logsumexp(values: &[f32], cols: usize) -> Vec<f32> {
    values
        .chunks_exact(cols)
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            (max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()) as f32
        })
        .collect()
}

/// The first `keep` columns of each `cols`-wide row.
pub fn head_columns(values: &[f32], cols: usize, keep: usize) -> Vec<f32> {
    values.chunks_exact(cols).flat_map(|row| row[..keep].iter().copied()).collect()
}

/// A model's weights from a Hugging Face folder (`config.json` + `model.safetensors`), without
/// a tokenizer: the random-weight architecture fixtures and stories260K have none.
pub fn load_weights(dir: &std::path::Path) -> lutlab_core::ModelWeights {
    let config = std::fs::read(dir.join("config.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let config = lutlab_core::ModelConfig::from_json(&config, "config.json").expect("config parses");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("model.safetensors");
    let checkpoint = lutlab_core::Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).expect("checkpoint parses");
    lutlab_core::ModelWeights::from_checkpoint(&config, checkpoint).expect("weights match the config")
}

/// A random `[rows, cols]` layer (`[in, out]`) and the Hessian `(2/N) Σ x xᵀ` of `tokens`
/// correlated random inputs, input `dead` never firing (xorshift, deterministic per seed).
pub fn random_layer_with_hessian(rows: usize, cols: usize, tokens: usize, seed: u64, dead: Option<usize>) -> (Vec<f32>, lutlab_core::quant::hessian::Square) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let weights: Vec<f32> = (0..rows * cols).map(|_| next() as f32).collect();
    let shared: Vec<f64> = (0..tokens).map(|_| next()).collect();
    let x: Vec<f64> = (0..rows * tokens).map(|i| if Some(i / tokens) == dead { 0.0 } else { next() + 0.7 * shared[i % tokens] }).collect();
    let mut h = lutlab_core::quant::hessian::Square::zeros(rows);
    for i in 0..rows {
        for j in 0..=i {
            let v = 2.0 / tokens as f64 * (0..tokens).map(|t| x[i * tokens + t] * x[j * tokens + t]).sum::<f64>();
            h.data[i * rows + j] = v;
            h.data[j * rows + i] = v;
        }
    }
    (weights, h)
}

/// The shipped GPT-2 (LayerNorm, Conv1D `[in, out]` weights, the head as `wteᵀ`) and Llama
/// (RMSNorm, HF `[out, in]` weights, GQA, RoPE) give the same logits, within the transformers
/// bound (1e-4), with a kernel choice `choose(true)` as with `choose(false)`; returns the largest
/// difference per model. For tests that switch one of the model's kernels.
pub fn same_logits_either_way(choose: impl Fn(bool)) -> Vec<f32> {
    let device = gpu();
    ["models/gpt2-tiny-wikitext", "models/llama-tiny-wikitext"]
        .into_iter()
        .map(|folder| {
            let weights = load_weights(&repo(folder));
            let model = lutlab_model::Decoder::new(&weights, &device);
            let ids: Vec<u32> = (0..200u32).map(|i| (i * 37 + 11) % weights.config.vocab_size as u32).collect();
            let rows: Vec<&[u32]> = ids.chunks(100).collect();
            let logits = |on: bool| {
                choose(on);
                pollster::block_on(lutlab_model::device::download(model.forward(model.tokens(&rows)).unwrap())).unwrap()
            };
            let (on, off) = (logits(true), logits(false));
            let err = assert_all_close(&format!("{folder} logits"), &on, &off, 1e-4);
            eprintln!("{folder}: max |logit difference| {err:e}");
            err
        })
        .collect()
}
