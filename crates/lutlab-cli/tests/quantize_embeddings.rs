//! `lutlab quantize --quantize-embeddings` end to end through the binary: the packed file's
//! perplexity (`lutlab eval --packed`, LUT kernels) equals the quantize run's and that of its
//! dequantized export (`lutlab export --dequantized`, then `lutlab eval --model`, dense), and the
//! exported `wte` is the quantized one.

mod common;

use common::{lutlab, lutlab_json, repo};
use lutlab_core::checkpoint::{parse_safetensors, read_f32};
use serde_json::Value;

#[test]
fn packed_eval_equals_the_dequantized_export_with_quantized_embeddings() {
    let dir = std::env::temp_dir().join(format!("lutlab-embeddings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..4000]).unwrap();
    let (packed, exported) = (dir.join("q.safetensors"), dir.join("dequantized"));
    let (data, packed_s, exported_s) = (data.to_str().unwrap(), packed.to_str().unwrap(), exported.to_str().unwrap());
    let eval = ["--data", data, "--max-length", "128", "--stride", "64", "--json"];

    let quantize_args = ["quantize", "--quantize-embeddings", "--bits", "3", "--granularity", "channel", "--packed", packed_s, "--eval"];
    let quantized = lutlab_json(&[&quantize_args[..], &eval[..]].concat());
    assert!(quantized["method"].as_str().unwrap().ends_with("+embeddings"), "{}", quantized["method"]);
    let layers = quantized["layers"].as_array().unwrap();
    assert_eq!(layers.last().unwrap()["name"], "lm_head");
    // 3-bit codes plus a 16-bit table of 8 entries per token of 128 weights: 4 bits per weight.
    assert!((layers.last().unwrap()["bits_per_weight"].as_f64().unwrap() - 4.0).abs() < 1e-12);

    let from_file = lutlab_json(&[&["eval", "--packed", packed_s][..], &eval[..]].concat());
    let export = lutlab(&["export", "--dequantized", "--packed", packed_s, "--out", exported_s]);
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let dense = lutlab_json(&[&["eval", "--model", exported_s][..], &eval[..]].concat());

    let ppl = |v: &Value| v["perplexity"].as_f64().unwrap();
    let (during, packed_ppl, dense_ppl) = (ppl(&quantized["eval"]), ppl(&from_file), ppl(&dense));
    assert_eq!(during, packed_ppl, "the file evaluates as the quantize run did");
    let rel = (packed_ppl / dense_ppl - 1.0).abs();
    assert!(rel < 1e-4, "packed {packed_ppl} vs dequantized export {dense_ppl}: relative {rel:e}");

    // The export's wte is the quantized matrix: 3 bits per channel = ≤ 8 values per token's row.
    let bytes = std::fs::read(exported.join("model.safetensors")).unwrap();
    let st = parse_safetensors("model.safetensors", &bytes).unwrap();
    let wte = read_f32(&st, "wte.weight").unwrap();
    assert_eq!(wte.shape, vec![50257, 128]);
    for row in wte.data.chunks_exact(128).step_by(997) {
        let mut distinct: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 8, "{} distinct values in one exported token row", distinct.len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
