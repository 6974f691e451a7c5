//! `lutlab quantize --ln-affine-merge --act-equalization fused|layerwise` end to end through the
//! binary: the packed file holds plain norms after the merge, SmoothQuant's scales live in the
//! norms (fused) or in each linear's input scale (layerwise), a Fisher file is carried over, and
//! what is not supported is refused by name.

mod common;

use common::{lutlab, lutlab_json, repo};
use lutlab_core::packed_file::PackedModel;
use std::path::PathBuf;

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lutlab-transforms-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_norm_affine_merge_quantizes_merged_weights_and_keeps_plain_norms() {
    let dir = work_dir("merge");
    let fisher = dir.join("fisher.safetensors");
    lutlab_json(&["fisher", "--nsamples", "2", "--seqlen", "32", "--out", fisher.to_str().unwrap(), "--json"]);
    let packed = dir.join("merged.safetensors");
    let out = lutlab_json(&["quantize", "--granularity", "channel", "--restarts", "1", "--ln-affine-merge", "--fisher", fisher.to_str().unwrap(), "--packed", packed.to_str().unwrap(), "--json"]);
    assert!(out["method"].as_str().unwrap().contains("+ln-affine-merge"), "{}", out["method"]);
    let file = PackedModel::read_file(&packed).unwrap();
    for name in ["h.0.ln_1.weight", "h.3.ln_2.weight"] {
        assert!(file.dense[name].data.iter().all(|&g| g == 1.0), "{name} keeps γ = 1");
    }
    assert!(file.dense["h.0.ln_1.bias"].data.iter().all(|&b| b == 0.0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smoothquant_scales_move_into_the_norms_and_unsupported_forms_are_refused() {
    let dir = work_dir("smooth");
    let packed = dir.join("smoothed.safetensors");
    let model = repo("models/llama-tiny-wikitext");
    let args = ["quantize", "--model", model.to_str().unwrap(), "--method", "rtn", "--granularity", "channel", "--calibration-samples", "2", "--packed", packed.to_str().unwrap(), "--json"];
    let out = lutlab_json(&[&args[..], &["--act-equalization", "fused", "--alpha", "0.5"]].concat());
    assert!(out["method"].as_str().unwrap().contains("+smoothquant fused α=0.5"), "{}", out["method"]);
    // The norms now hold γ / s: no longer the checkpoint's.
    let file = PackedModel::read_file(&packed).unwrap();
    let original = lutlab_core::ModelFiles::open_dir(&model).unwrap().load().unwrap().weights;
    let name = "model.layers.0.input_layernorm.weight";
    assert_ne!(file.dense[name].data, original.blocks[0].norm_1.gamma.data, "{name} absorbed the scales");
    for (flags, expected) in [
        (&["--act-equalization", "global"][..], "use fused"),
        (&["--act-equalization", "fused", "--alpha", "2"][..], "between 0 and 1"),
        (&["--act-equalization", "layerwise", "--centering"][..], "give one"),
    ] {
        let out = lutlab(&[&args[..], flags].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{flags:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn layerwise_smoothquant_keeps_an_input_scale_per_linear_with_every_method() {
    let dir = work_dir("layerwise");
    let packed = dir.join("layerwise.safetensors");
    let model = repo("models/llama-tiny-wikitext");
    let text = std::fs::read_to_string(repo("data/wikitext-2/test.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..12_000]).unwrap();
    let (model_s, packed_s, data_s) = (model.to_str().unwrap(), packed.to_str().unwrap(), data.to_str().unwrap());
    let inputs = ["--input-bit-width", "8", "--act-calibration-samples", "8", "--data", data_s];
    let quantize = ["quantize", "--model", model_s, "--method", "rtn", "--bits", "8", "--granularity", "channel", "--asym", "--calibration-samples", "8", "--eval", "--json"];
    let layerwise = ["--act-equalization", "layerwise", "--packed", packed_s];
    let out = lutlab_json(&[&quantize[..], &layerwise[..], &inputs[..]].concat());
    assert!(out["method"].as_str().unwrap().contains("+smoothquant layerwise α=0.5"), "{}", out["method"]);
    // Every linear keeps `1/s` as its input scale (no rotations); the norms are the checkpoint's.
    let file = PackedModel::read_file(&packed).unwrap();
    let original = lutlab_core::ModelFiles::open_dir(&model).unwrap().load().unwrap().weights;
    assert_eq!(file.layers.len(), original.linears().count());
    for (name, layer) in &file.layers {
        let t = layer.incoherence.as_ref().unwrap_or_else(|| panic!("{name} has no input scale"));
        assert!(t.input.is_none() && t.output.is_none(), "{name}: no rotations");
        assert!(t.input_scale.as_ref().unwrap().iter().all(|&m| m.is_finite() && m > 0.0), "{name}");
    }
    assert_eq!(file.dense["model.layers.0.input_layernorm.weight"].data, original.blocks[0].norm_1.gamma.data);
    // `eval` of the file applies the same input scales before quantizing inputs: the same number.
    let eval = lutlab_json(&[&["eval", "--packed", packed_s, "--model", model_s, "--json"][..], &inputs[..]].concat());
    let ppl = |v: &serde_json::Value| v["perplexity"].as_f64().unwrap();
    assert_eq!(ppl(&eval), ppl(&out["eval"]), "quantize --eval and eval --packed");
    // W8A8 static per tensor: smoothing each linear beats none (measured 74.81 → 74.37).
    let plain = lutlab_json(&[&quantize[..], &inputs[..]].concat());
    assert!(ppl(&out["eval"]) < ppl(&plain["eval"]), "layerwise {} vs plain {}", ppl(&out["eval"]), ppl(&plain["eval"]));
    // GPTQ rounds the scaled weights against the scaled inputs' Hessians, block by block.
    let gptq = ["quantize", "--model", model_s, "--method", "gptq", "--bits", "4", "--granularity", "channel", "--calibration-samples", "4", "--hessian-samples", "4", "--eval", "--data", data_s, "--json"];
    let (smoothed, unsmoothed) = (lutlab_json(&[&gptq[..], &["--act-equalization", "layerwise"]].concat()), lutlab_json(&gptq));
    let (a, b) = (ppl(&smoothed["eval"]), ppl(&unsmoothed["eval"]));
    println!("GPTQ 4-bit: layerwise {a}, plain {b}");
    assert!(a.is_finite() && (a / b - 1.0).abs() < 0.05, "GPTQ with layerwise smoothing {a} vs without {b}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn weight_equalization_runs_on_opt_and_carries_a_fisher_file_over() {
    let dir = work_dir("equalize");
    let model = repo("models/opt-tiny-wikitext");
    let fisher = dir.join("fisher.safetensors");
    lutlab_json(&["fisher", "--model", model.to_str().unwrap(), "--nsamples", "2", "--seqlen", "32", "--out", fisher.to_str().unwrap(), "--json"]);
    let packed = dir.join("equalized.safetensors");
    let out = lutlab_json(&["quantize", "--model", model.to_str().unwrap(), "--granularity", "channel", "--restarts", "1", "--weight-equalization", "--fisher", fisher.to_str().unwrap(), "--packed", packed.to_str().unwrap(), "--json"]);
    assert!(out["method"].as_str().unwrap().contains("+weight-equalization"), "{}", out["method"]);
    let refused = lutlab(&["quantize", "--model", model.to_str().unwrap(), "--weight-equalization", "--hessian", fisher.to_str().unwrap(), "--method", "gptq", "--eval"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("--weight-equalization"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bias_correction_moves_the_packed_biases_and_refuses_centering() {
    let dir = work_dir("biascorr");
    let model = repo("models/llama-tiny-wikitext");
    let (plain, corrected) = (dir.join("plain.safetensors"), dir.join("corrected.safetensors"));
    let args = ["quantize", "--model", model.to_str().unwrap(), "--method", "rtn", "--bits", "3", "--granularity", "tensor", "--asym", "--calibration-samples", "2", "--json"];
    lutlab_json(&[&args[..], &["--packed", plain.to_str().unwrap()]].concat());
    let out = lutlab_json(&[&args[..], &["--bias-corr", "--packed", corrected.to_str().unwrap()]].concat());
    assert!(out["method"].as_str().unwrap().ends_with("+bias-corr"), "{}", out["method"]);
    // Llama's linears have no bias: the correction adds them, with the same codes.
    let (plain, corrected) = (PackedModel::read_file(&plain).unwrap(), PackedModel::read_file(&corrected).unwrap());
    let name = "model.layers.0.mlp.down_proj";
    assert!(!plain.dense.contains_key(&format!("{name}.bias")));
    let bias = &corrected.dense[&format!("{name}.bias")].data;
    assert!(bias.iter().any(|&b| b != 0.0) && bias.iter().all(|b| b.is_finite()), "{name}.bias");
    assert_eq!(plain.layers[name].qweight, corrected.layers[name].qweight, "bias correction leaves the codes alone");
    let refused = lutlab(&[&args[..], &["--bias-corr", "--centering", "--eval"]].concat());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("give one"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn awq_results_load_before_quantizing_and_another_models_are_refused() {
    let dir = work_dir("awq");
    let model = repo("models/opt-tiny-wikitext");
    let weights = lutlab_core::ModelFiles::open_dir(&model).unwrap().load().unwrap().weights;
    let (prefix, n) = (weights.config.block_prefix(0), weights.config.n_embd);
    // One scale entry (norm → q, k, v), written as scripts/awq_to_safetensors.py writes it.
    let scales: Vec<f32> = (0..n).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
    let listing = serde_json::json!([{ "prev_op": format!("{prefix}.self_attn_layer_norm"),
        "layers": [format!("{prefix}.self_attn.q_proj"), format!("{prefix}.self_attn.k_proj"), format!("{prefix}.self_attn.v_proj")], "tensor": "scale.0" }]);
    let metadata = std::collections::HashMap::from([("awq_scales".to_string(), listing.to_string())]);
    let bytes = lutlab_core::checkpoint::write_safetensors(&[("scale.0", &[n], &scales)], Some(metadata)).unwrap();
    let awq = dir.join("awq.safetensors");
    std::fs::write(&awq, bytes).unwrap();
    let packed = dir.join("awq-int4.safetensors");
    let out = lutlab_json(&["quantize", "--model", model.to_str().unwrap(), "--method", "rtn", "--granularity", "channel", "--load-awq", awq.to_str().unwrap(), "--packed", packed.to_str().unwrap(), "--json"]);
    assert!(out["method"].as_str().unwrap().contains("+awq"), "{}", out["method"]);
    let llama = repo("models/llama-tiny-wikitext");
    let refused = lutlab(&["quantize", "--model", llama.to_str().unwrap(), "--method", "rtn", "--load-awq", awq.to_str().unwrap(), "--eval"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("another model"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
