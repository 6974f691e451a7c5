//! The float-model transforms of `model_transforms` keep the model's outputs (CPU reference
//! forward, every shipped family), and refuse what they cannot transform.

use lutlab_core::checkpoint::HostTensor;
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::model_transforms::{merge_norm_affine, scale_fisher_rows, RowScales};
use lutlab_core::reference::forward;
use lutlab_core::{Checkpoint, ModelConfig, ModelWeights};
use std::path::Path;

/// A model directory's weights (some test models have no tokenizer).
fn load(relative: &str) -> ModelWeights {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    let config = ModelConfig::from_json(&std::fs::read(dir.join("config.json")).unwrap(), "config.json").unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    ModelWeights::from_checkpoint(&config, Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap()).unwrap()
}

#[test]
fn merging_the_norm_affine_keeps_every_familys_logits() {
    for model in ["models/gpt2-tiny-wikitext", "models/opt-tiny-wikitext", "models/llama-tiny-wikitext", "models/llama2c-stories260k"] {
        let original = load(model);
        let mut merged = original.clone();
        let scales = merge_norm_affine(&mut merged).unwrap();
        let vocab = original.config.vocab_size as u32;
        let tokens: Vec<u32> = (0..48u32).map(|i| (i * 37 + 5) % vocab).collect();
        let (before, after) = (forward(&original, &tokens).unwrap(), forward(&merged, &tokens).unwrap());
        let largest = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("{model}: max |logit change| {worst:e} of max |logit| {largest}");
        assert!(worst <= 2e-5 * largest, "{model}: logits moved by {worst} (largest {largest})");
        // The norms are plain now, and their affine went into the linears after them.
        for block in &merged.blocks {
            for norm in [&block.norm_1, &block.norm_2] {
                assert!(norm.gamma.data.iter().all(|&g| g == 1.0));
                assert!(norm.beta.as_ref().is_none_or(|b| b.data.iter().all(|&v| v == 0.0)));
            }
        }
        let readers = merged.config.input_groups()[0].len() + merged.config.input_groups()[2].len();
        assert_eq!(scales.len(), readers * merged.config.n_layer, "{model}");
        let changed = merged.linears().zip(original.linears()).filter(|((_, a), (_, b))| a.weight.data != b.weight.data).count();
        assert_eq!(changed, scales.len(), "{model}: exactly the linears after a norm change");
    }
}

#[test]
fn post_norm_blocks_are_refused_by_name() {
    let mut post_norm = load("tests/models/opt-postln-proj");
    let e = merge_norm_affine(&mut post_norm).unwrap_err().to_string();
    assert!(e.contains("do_layer_norm_before = false"), "{e}");
}

#[test]
fn a_fisher_diagonal_follows_its_rows_scaling() {
    // A weight scaled by γ has gradient ∂L/∂w / γ: its squared gradient is divided by γ².
    let tensor = HostTensor::new(vec![3, 2], vec![1.0, 2.0, 4.0, 8.0, 5.0, 6.0]);
    let mut fisher = FisherDiagonal { tensors: vec![("h.0.attn.c_attn.weight".into(), tensor)], ..Default::default() };
    let scales = RowScales::from([("h.0.attn.c_attn".to_string(), vec![2.0, 0.5, 0.0])]);
    scale_fisher_rows(&mut fisher, &scales);
    assert_eq!(fisher.tensors[0].1.data, vec![0.25, 0.5, 16.0, 32.0, 0.0, 0.0]);
}
