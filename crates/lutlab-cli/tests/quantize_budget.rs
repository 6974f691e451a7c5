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

/// `--allocate-per channels:64`: each block of 64 output channels gets its own width. The first
/// 64 channels of block 0's layers are made a million times more sensitive (Fisher), so those
/// blocks get the wider width and the rest of their layers the narrower: layers mix widths,
/// stored as column parts (format version 6) that evaluate as the quantize run did, within the
/// budget; a granularity whose tables a block would cut, and unknown units, are refused by name.
#[test]
fn a_budget_per_block_of_channels_mixes_widths_inside_layers() {
    let dir = work_dir("blocks");
    let weights = ModelFiles::open_dir(&repo("models/gpt2-tiny-wikitext")).unwrap().load().unwrap().weights;
    let tensors = fisher_tensor_shapes(&weights)
        .into_iter()
        .map(|(name, shape)| {
            // GPT-2's Conv1D weights are [in, out]: the output channel is the last index.
            let cols = shape[1];
            let n: usize = shape.iter().product();
            let data = (0..n).map(|i| if name.starts_with("h.0.") && i % cols < 64 { 1.0 } else { 1e-6 }).collect();
            (name, HostTensor::new(shape, data))
        })
        .collect();
    let fisher = dir.join("fisher.safetensors");
    let diagonal = FisherDiagonal { tensors, linear_layout: weights.config.linear_layout(), ..Default::default() };
    std::fs::write(&fisher, diagonal.to_safetensors().unwrap()).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap()[..3000]).unwrap();
    let packed = dir.join("blocks.safetensors");
    let (fisher_s, data_s, packed_s) = (fisher.to_str().unwrap(), data.to_str().unwrap(), packed.to_str().unwrap());
    let out = lutlab_json(&[
        "quantize", "--granularity", "channel", "--restarts", "1", "--widths", "2,4", "--budget", "3bpw", "--allocate-per", "channels:64",
        "--fisher", fisher_s, "--packed", packed_s, "--eval", "--data", data_s, "--max-length", "128", "--stride", "64", "--json",
    ]);
    let allocation = &out["allocation"];
    let units = allocation["layers"].as_array().unwrap();
    // Per block: c_attn 384, attn.c_proj 128, c_fc 512, mlp.c_proj 128 output channels.
    assert_eq!(units.len(), 4 * (6 + 2 + 8 + 2));
    let bits = |name: &str| units.iter().find(|u| u["name"] == name).unwrap_or_else(|| panic!("no unit {name}"))["bits"].as_u64().unwrap();
    for layer in ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj"] {
        assert_eq!(bits(&format!("{layer}[0..64]")), 4, "{layer}: its sensitive channels get the wider width");
    }
    let bits_per_weight = out["sizes"]["bits_per_weight"].as_f64().unwrap();
    assert!(bits_per_weight <= 3.0, "{bits_per_weight} bits per weight under 3bpw");
    let file = PackedModel::read_file(&packed).unwrap();
    assert_eq!(file.format_version(), 6);
    let split: Vec<&String> = file.layers.iter().filter(|(_, l)| l.is_split()).map(|(n, _)| n).collect();
    assert!(split.iter().any(|n| n.starts_with("h.0.")), "block 0's layers mix widths: {split:?}");
    let from_file = lutlab_json(&["eval", "--packed", packed_s, "--data", data_s, "--max-length", "128", "--stride", "64", "--json"]);
    assert_eq!(out["eval"]["perplexity"], from_file["perplexity"], "the file evaluates as the quantize run did");

    let refused = |extra: &[&str], expected: &str| {
        let args = [&["quantize", "--restarts", "1", "--budget", "3bpw", "--eval", "--data", data_s][..], extra].concat();
        let out = lutlab(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    refused(&["--granularity", "group:32", "--allocate-per", "channels:48"], "do not hold whole tables");
    refused(&["--granularity", "channel", "--allocate-per", "channels:0"], "give `layers` or `channels:N`");
    refused(&["--granularity", "channel", "--allocate-per", "rows:8"], "give `layers` or `channels:N`");
    refused(&["--granularity", "channel", "--scaling", "--allocate-per", "channels:64"], "act on whole layers");
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
