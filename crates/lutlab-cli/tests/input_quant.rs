//! `lutlab eval --input-bit-width ...` end to end through the binary: static scales calibrated,
//! saved and read back to the same perplexity, dynamic per-token scales, fewer bits costing more,
//! a packed model evaluated with quantized inputs, and contradictory settings refused by name.

mod common;

use common::{lutlab, lutlab_json, repo};
use serde_json::Value;

struct Work {
    dir: std::path::PathBuf,
    data: String,
}

fn work(name: &str) -> Work {
    let dir = std::env::temp_dir().join(format!("lutlab-inputs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/test.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..6000]).unwrap();
    Work { data: data.to_str().unwrap().to_string(), dir }
}

fn eval(w: &Work, flags: &[&str]) -> Value {
    let base = ["eval", "--data", &w.data, "--max-length", "128", "--stride", "64", "--act-calibration-samples", "4", "--json"];
    lutlab_json(&[&base[..], flags].concat())
}

fn ppl(v: &Value) -> f64 {
    v["perplexity"].as_f64().unwrap()
}

#[test]
fn static_scales_round_trip_and_fewer_bits_cost_more() {
    let w = work("static");
    let scales = w.dir.join("scales.json");
    let scales = scales.to_str().unwrap();
    let float = eval(&w, &[]);
    assert!(float["inputs"].is_null());
    let a8 = eval(&w, &["--input-bit-width", "8", "--save-input-scales", scales]);
    assert_eq!(a8["inputs"], "A8 int asym static per-tensor");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(scales).unwrap()).unwrap();
    assert_eq!(saved["layers"].as_object().unwrap().len(), 16, "every linear of the 4 blocks: {saved}");
    let read = eval(&w, &["--input-bit-width", "8", "--input-scales", scales]);
    assert_eq!(ppl(&read), ppl(&a8), "scales read back give the same model");
    // 8-bit inputs barely move perplexity; 4-bit dynamic per-token ones cost more, per-tensor more still.
    assert!((ppl(&a8) / ppl(&float) - 1.0).abs() < 0.01, "A8 {} vs float {}", ppl(&a8), ppl(&float));
    let dynamic = ["--input-scale-type", "dynamic", "--input-quant-granularity", "per_row"];
    let a4_rows = eval(&w, &[&["--input-bit-width", "4"][..], &dynamic[..]].concat());
    assert_eq!(a4_rows["inputs"], "A4 int asym dynamic per-row");
    assert!(ppl(&a4_rows) > ppl(&a8) * 1.01, "A4 per-row {} vs A8 {}", ppl(&a4_rows), ppl(&a8));
    let a4_tensor = eval(&w, &["--input-bit-width", "4", "--input-scale-type", "dynamic"]);
    assert!(ppl(&a4_tensor) > ppl(&a4_rows), "A4 per-tensor {} vs per-row {}", ppl(&a4_tensor), ppl(&a4_rows));
    std::fs::remove_dir_all(&w.dir).ok();
}

#[test]
fn a_packed_model_evaluates_with_quantized_inputs_of_every_format() {
    let w = work("packed");
    let packed = w.dir.join("w4.safetensors");
    let packed = packed.to_str().unwrap();
    let quantize = ["quantize", "--method", "rtn", "--bits", "4", "--granularity", "channel", "--packed", packed, "--eval", "--data", &w.data, "--max-length", "128", "--stride", "64", "--json"];
    let w4a16 = lutlab_json(&quantize);
    let w4a8 = lutlab_json(&[&quantize[..], &["--input-bit-width", "8", "--input-quant-format", "e4m3", "--input-quant-type", "sym", "--input-scale-type", "dynamic", "--input-quant-granularity", "per_group", "--input-group-size", "32", "--input-scale-precision", "po2_scale"]].concat());
    assert_eq!(w4a8["eval"]["inputs"], "A8 e4m3 sym dynamic per-group-32");
    let (a16, a8) = (w4a16["eval"]["perplexity"].as_f64().unwrap(), w4a8["eval"]["perplexity"].as_f64().unwrap());
    assert!(a8 != a16 && (a8 / a16 - 1.0).abs() < 0.05, "W4A8 {a8} vs W4A16 {a16}");
    let packed_eval = eval(&w, &["--packed", packed, "--input-bit-width", "8", "--input-quant-format", "e4m3", "--input-quant-type", "sym", "--input-scale-type", "dynamic", "--input-quant-granularity", "per_group", "--input-group-size", "32", "--input-scale-precision", "po2_scale"]);
    assert_eq!(ppl(&packed_eval), a8, "eval --packed with the same inputs gives quantize's figure");
    std::fs::remove_dir_all(&w.dir).ok();
}

#[test]
fn contradictory_input_settings_are_refused_by_name() {
    let w = work("bad");
    let llama_scales = w.dir.join("llama.json");
    let llama = repo("models/llama-tiny-wikitext");
    lutlab_json(&["eval", "--model", llama.to_str().unwrap(), "--data", &w.data, "--max-length", "64", "--act-calibration-samples", "2", "--input-bit-width", "8", "--save-input-scales", llama_scales.to_str().unwrap(), "--json"]);
    let tiny = w.dir.join("tiny.txt");
    std::fs::write(&tiny, "A calibration text shorter than one window.").unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--input-bit-width", "8", "--input-scale-type", "dynamic", "--input-scales", llama_scales.to_str().unwrap()], "--input-scales is for static input scales"),
        (&["--input-bit-width", "8", "--input-scales", llama_scales.to_str().unwrap()], "calibrated on another model"),
        (&["--input-bit-width", "6", "--input-quant-format", "e4m3", "--input-quant-type", "sym"], "e4m3 takes 8 bits"),
        (&["--input-bit-width", "8", "--input-scale-type", "dynamic", "--input-quant-granularity", "per_group", "--input-group-size", "48"], "--input-group-size 48 does not divide"),
        (&["--input-bit-width", "8", "--input-quant-granularity", "per_row"], "static input scales are per tensor"),
        (&["--input-bit-width", "8", "--input-scale-type", "dynamic", "--input-param-method", "percentile:99"], "a percentile is for static scales"),
        (&["--quantize-last-layer"], "need --input-bit-width"),
        (&["--input-bit-width", "8", "--act-calibration-data", tiny.to_str().unwrap()], "calibration text"),
    ];
    for (flags, expected) in cases {
        let out = lutlab(&[&["eval", "--data", &w.data][..], flags].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{flags:?}: expected `{expected}` in: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
    std::fs::remove_dir_all(&w.dir).ok();
}
