//! The CLI on the shipped Llama (untied head, GQA) and OPT models end to end: `quantize` (with the
//! head packed too) → `eval --packed` equals the quantize run → `export --dequantized` writes a
//! checkpoint in the family's own layout that `eval --model` scores the same; a packed file of a
//! family whose tokenizer lutlab cannot guess is refused without `--model`.

mod common;

use common::{lutlab, lutlab_json, repo};
use lutlab_core::checkpoint::{parse_safetensors, read_f32};
use serde_json::Value;

fn round_trip(model: &str, head_weight: &str, layout: [usize; 2]) {
    let dir = std::env::temp_dir().join(format!("lutlab-families-{model}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..3000]).unwrap();
    let model_dir = repo(&format!("models/{model}"));
    let (packed, exported) = (dir.join("q.safetensors"), dir.join("dequantized"));
    let (model_s, data, packed_s, exported_s) =
        (model_dir.to_str().unwrap(), data.to_str().unwrap(), packed.to_str().unwrap(), exported.to_str().unwrap());
    let eval = ["--data", data, "--max-length", "128", "--stride", "64", "--json"];

    let quantize = ["quantize", "--model", model_s, "--quantize-embeddings", "--bits", "4", "--granularity", "channel", "--restarts", "1", "--packed", packed_s, "--eval"];
    let quantized = lutlab_json(&[&quantize[..], &eval[..]].concat());
    assert_eq!(quantized["layers"].as_array().unwrap().last().unwrap()["name"], "lm_head");

    let refused = lutlab(&["eval", "--packed", packed_s, "--data", data]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && message.contains("--model"), "{message}");

    let from_file = lutlab_json(&[&["eval", "--packed", packed_s, "--model", model_s][..], &eval[..]].concat());
    let export = lutlab(&["export", "--dequantized", "--packed", packed_s, "--out", exported_s, "--tokenizer-from", model_s]);
    assert!(export.status.success(), "export: {}", String::from_utf8_lossy(&export.stderr));
    let dense = lutlab_json(&[&["eval", "--model", exported_s][..], &eval[..]].concat());

    let ppl = |v: &Value| v["perplexity"].as_f64().unwrap();
    let (during, packed_ppl, dense_ppl) = (ppl(&quantized["eval"]), ppl(&from_file), ppl(&dense));
    assert_eq!(during, packed_ppl, "{model}: the file evaluates as the quantize run did");
    let rel = (packed_ppl / dense_ppl - 1.0).abs();
    eprintln!("{model}: packed {packed_ppl}, dequantized export {dense_ppl} (relative {rel:e})");
    assert!(rel < 1e-4, "{model}: packed {packed_ppl} vs dequantized export {dense_ppl}: relative {rel:e}");

    // The export is in the checkpoint's own names and layout.
    let bytes = std::fs::read(exported.join("model.safetensors")).unwrap();
    let st = parse_safetensors("model.safetensors", &bytes).unwrap();
    assert_eq!(read_f32(&st, head_weight).unwrap().shape, layout.to_vec());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn llama_quantizes_packs_exports_and_scores_the_same() {
    round_trip("llama-tiny-wikitext", "lm_head.weight", [4096, 192]);
}

#[test]
fn opt_quantizes_packs_exports_and_scores_the_same() {
    round_trip("opt-tiny-wikitext", "model.decoder.embed_tokens.weight", [50257, 96]);
}
