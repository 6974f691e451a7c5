//! `lutlab quantize --budget` end to end through the binary: the allocation fits the budget
//! (bits per weight and file size, every stored byte counted), follows the Fisher estimate, is
//! recorded in `--json` and in the packed file, and evaluates; impossible budgets name the
//! feasible range.

mod common;

use common::{lutlab, lutlab_json, repo};
use lutlab_core::fisher_file::{fisher_tensor_shapes, FisherDiagonal};
use lutlab_core::packed_file::PackedModel;
use lutlab_core::{HostTensor, ModelFiles};
use serde_json::Value;
use std::path::PathBuf;

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lutlab-budget-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Fisher file of the shipped model that makes block 0's weights a million times more
/// sensitive than every other block's.
fn block0_fisher(dir: &std::path::Path) -> PathBuf {
    let weights = ModelFiles::open_dir(&repo("models/gpt2-tiny-wikitext")).unwrap().load().unwrap().weights;
    let tensors = fisher_tensor_shapes(&weights)
        .into_iter()
        .map(|(name, shape)| {
            let value = if name.starts_with("h.0.") { 1.0 } else { 1e-6 };
            let n = shape.iter().product();
            (name, HostTensor::new(shape, vec![value; n]))
        })
        .collect();
    let fisher = FisherDiagonal { tensors, linear_layout: weights.config.linear_layout(), ..Default::default() };
    let path = dir.join("fisher.safetensors");
    std::fs::write(&path, fisher.to_safetensors().unwrap()).unwrap();
    path
}

#[test]
fn a_budget_spends_bits_where_the_fisher_estimate_says_and_records_them() {
    let dir = work_dir("fisher");
    let fisher = block0_fisher(&dir);
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..3000]).unwrap();
    let packed = dir.join("mixed.safetensors");
    let (fisher_s, data_s, packed_s) = (fisher.to_str().unwrap(), data.to_str().unwrap(), packed.to_str().unwrap());
    let out = lutlab_json(&[
        "quantize", "--granularity", "channel", "--restarts", "1", "--budget", "3.5bpw", "--fisher", fisher_s, "--packed", packed_s,
        "--eval", "--data", data_s, "--max-length", "128", "--stride", "64", "--json",
    ]);
    assert!(out["method"].as_str().unwrap().contains("mixed 2–8-bit channel under 3.5bpw"), "{}", out["method"]);
    let allocation = &out["allocation"];
    assert_eq!(allocation["estimate"], "fisher");
    assert_eq!(allocation["solver"], "exact");
    assert_eq!(allocation["relative_gap"].as_f64(), Some(0.0));
    // Every stored byte of the layers counts: the file's own figure stays within the budget.
    let bits_per_weight = out["sizes"]["bits_per_weight"].as_f64().unwrap();
    assert!(bits_per_weight <= 3.5 && bits_per_weight > 3.0, "{bits_per_weight} bits per weight");
    assert_eq!(out["sizes"]["layer_bytes"].as_u64(), allocation["layer_bytes"].as_u64());
    // Block 0 is a million times more sensitive: every one of its layers gets more than the
    // narrowest width and at least as many bits as any other layer (bytes it cannot use go
    // elsewhere).
    let layers = allocation["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 16);
    let bits_of = |block0: bool| layers.iter().filter(move |l| l["name"].as_str().unwrap().starts_with("h.0.") == block0).map(|l| l["bits"].as_u64().unwrap());
    let (least_in_0, most_elsewhere) = (bits_of(true).min().unwrap(), bits_of(false).max().unwrap());
    assert!(least_in_0 > 2 && least_in_0 >= most_elsewhere, "block 0 at least {least_in_0} bits, others up to {most_elsewhere}: {layers:?}");
    // The file records the allocation, and each layer is stored at its allocated width.
    let file = PackedModel::read_file(&packed).unwrap();
    let recorded: Value = serde_json::from_str(&file.meta.allocation).unwrap();
    assert_eq!(&recorded, allocation);
    for layer in layers {
        let stored = &file.layers[layer["name"].as_str().unwrap()];
        assert_eq!(u64::from(stored.bits), layer["bits"].as_u64().unwrap());
    }
    let from_file = lutlab_json(&["eval", "--packed", packed_s, "--data", data_s, "--max-length", "128", "--stride", "64", "--json"]);
    assert_eq!(out["eval"]["perplexity"], from_file["perplexity"], "the file evaluates as the quantize run did");

    // A larger budget never estimates more loss.
    let wider = lutlab_json(&["quantize", "--granularity", "channel", "--restarts", "1", "--budget", "5bpw", "--fisher", fisher_s, "--packed", packed_s, "--json"]);
    let loss = |v: &Value| v["allocation"]["estimated_loss"].as_f64().unwrap();
    assert!(loss(&wider) <= loss(&out), "5 bpw {} vs 3.5 bpw {}", loss(&wider), loss(&out));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_size_budget_is_met_by_the_written_file() {
    let dir = work_dir("size");
    let packed = dir.join("mixed.safetensors");
    let out = lutlab_json(&["quantize", "--granularity", "channel", "--restarts", "1", "--budget", "13.2MB", "--widths", "2,3,4", "--packed", packed.to_str().unwrap(), "--json"]);
    let bytes = std::fs::metadata(&packed).unwrap().len();
    assert!(bytes <= 13_200_000, "{bytes} bytes written for a 13.2 MB budget");
    assert_eq!(out["file_bytes"].as_u64(), Some(bytes));
    assert_eq!(out["allocation"]["estimate"], "squared-error");
    assert!(out["allocation"]["layers"].as_array().unwrap().iter().all(|l| [2, 3, 4].contains(&l["bits"].as_u64().unwrap())));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn impossible_budgets_and_widths_are_refused_with_the_feasible_range() {
    let refused = |extra: &[&str], expected: &str| {
        let args = [&["quantize", "--granularity", "channel", "--eval"][..], extra].concat();
        let out = lutlab(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    refused(&["--restarts", "1", "--budget", "1bpw"], "below every layer at its narrowest width; feasible: 2.");
    refused(&["--restarts", "1", "--budget", "16bpw"], "at or above the layers in f16");
    refused(&["--restarts", "1", "--budget", "1MB"], "below every layer at its narrowest width");
    refused(&["--budget", "3.5bpw", "--widths", "3,9"], "candidate width 9");
    refused(&["--budget", "3 furlongs"], "give bits per weight (3.5bpw) or a file size");
    refused(&["--method", "rtn", "--format", "e2m1", "--bits", "4", "--budget", "3.5bpw"], "candidate width 2");
}

#[test]
fn layer_rules_fix_the_widths_as_llama_cpps_tensor_types_do() {
    let dir = work_dir("rules");
    let packed = dir.join("rules.safetensors");
    let out = lutlab_json(&["quantize", "--granularity", "channel", "--restarts", "1", "--bits", "3", "--layer-bits", "c_attn=5,h.0.=6", "--packed", packed.to_str().unwrap(), "--json"]);
    assert_eq!(out["allocation"]["solver"], "rules");
    assert!(out["allocation"]["relative_gap"].is_null());
    for layer in out["allocation"]["layers"].as_array().unwrap() {
        let name = layer["name"].as_str().unwrap();
        let expected = if name.starts_with("h.0.") { 6 } else if name.contains("c_attn") { 5 } else { 3 };
        assert_eq!(layer["bits"].as_u64(), Some(expected), "{name}: the last matching rule wins");
    }
    let out = lutlab(&["quantize", "--budget", "3bpw", "--layer-bits", "c_attn=5", "--eval"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lutlab(&["quantize", "--layer-bits", "c_attn", "--eval"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give PATTERN=BITS"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
}
