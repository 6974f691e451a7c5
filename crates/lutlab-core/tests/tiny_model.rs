//! A tiny random GPT-2 written as real HF files in memory, shared by the loading tests.

use lutlab_core::checkpoint::write_safetensors;
use lutlab_core::{ModelFiles, TokenizerFiles};

pub const N_EMBD: usize = 8;
pub const VOCAB: usize = 16;
pub const POSITIONS: usize = 12;

pub fn config_json(model_type: &str) -> Vec<u8> {
    format!(
        r#"{{"model_type":"{model_type}","n_layer":1,"n_head":2,"n_embd":{N_EMBD},"n_positions":{POSITIONS},"vocab_size":{VOCAB},"layer_norm_epsilon":1e-5,"activation_function":"gelu_new"}}"#
    )
    .into_bytes()
}

/// Every tensor of a 1-layer GPT-2, `(name, shape)`, with the `transformer.` prefix.
pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    let c = N_EMBD;
    let mut shapes = vec![
        ("transformer.wte.weight".to_string(), vec![VOCAB, c]),
        ("transformer.wpe.weight".to_string(), vec![POSITIONS, c]),
        ("transformer.ln_f.weight".to_string(), vec![c]),
        ("transformer.ln_f.bias".to_string(), vec![c]),
    ];
    for (name, i, o) in [("attn.c_attn", c, 3 * c), ("attn.c_proj", c, c), ("mlp.c_fc", c, 4 * c), ("mlp.c_proj", 4 * c, c)] {
        shapes.push((format!("transformer.h.0.{name}.weight"), vec![i, o]));
        shapes.push((format!("transformer.h.0.{name}.bias"), vec![o]));
    }
    for ln in ["ln_1", "ln_2"] {
        shapes.push((format!("transformer.h.0.{ln}.weight"), vec![c]));
        shapes.push((format!("transformer.h.0.{ln}.bias"), vec![c]));
    }
    shapes
}

/// Deterministic pseudo-random values in [-0.5, 0.5).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

pub fn safetensors_with(edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>) -> bool) -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (i, (name, mut shape)) in tensor_shapes().into_iter().enumerate() {
        let mut data = values(shape.iter().product(), i as u64);
        if edit(&name, &mut shape, &mut data) {
            data.resize(shape.iter().product(), 0.1);
            tensors.push((name, shape, data));
        }
    }
    let refs: Vec<(&str, &[usize], &[f32])> = tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_safetensors(&refs, None).expect("serialize")
}

pub fn tokenizer() -> TokenizerFiles {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gpt2-tokenizer/");
    TokenizerFiles::VocabMerges {
        vocab: std::fs::read(format!("{root}encoder.json")).expect("vocab"),
        merges: std::fs::read(format!("{root}vocab.bpe")).expect("merges"),
        config: None,
    }
}

pub fn model_files(safetensors: Vec<u8>) -> ModelFiles {
    ModelFiles {
        config_json: config_json("gpt2"),
        safetensors: vec![("model.safetensors".into(), safetensors)],
        tokenizer: tokenizer(),
    }
}
