//! Quantizing the tied token embedding / LM head (`QuantizeRequest::embeddings`, off by default):
//! the head goes through the same quantizers as the blocks' linears, the packed file stores it
//! (format version 2) and reads it back, the dense model it stands for has it as `wte`, the bits
//! per weight count it, and impossible settings are refused naming it.

use lutlab_core::checkpoint::{Checkpoint, HostTensor};
use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::head::{transpose, HEAD};
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::{quantize_model, Calibration, InputMeans, QuantizeRequest, QuantizedModel};
use lutlab_core::{ModelConfig, ModelWeights, NoProgress};
use serde_json::Value;

const VOCAB: usize = 50;
const C: usize = 40;

/// A random GPT-2 with 2 blocks, n_embd 40 (so the head's 40 rows end in padding) and a vocabulary
/// of 50 tokens (which no group of 8 divides).
fn weights() -> ModelWeights {
    let mut config = ModelConfig::gpt2(2, 2, C, 16, VOCAB);
    config.n_inner = 64;
    let mut rng = SplitMix64::new(4);
    let mut shapes = vec![
        ("wte.weight".to_string(), vec![VOCAB, C]),
        ("wpe.weight".to_string(), vec![16, C]),
        ("ln_f.weight".to_string(), vec![C]),
        ("ln_f.bias".to_string(), vec![C]),
    ];
    for i in 0..2 {
        for ln in ["ln_1", "ln_2"] {
            shapes.push((format!("h.{i}.{ln}.weight"), vec![C]));
            shapes.push((format!("h.{i}.{ln}.bias"), vec![C]));
        }
        for (name, r, k) in [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, 64), ("mlp.c_proj", 64, C)] {
            shapes.push((format!("h.{i}.{name}.weight"), vec![r, k]));
            shapes.push((format!("h.{i}.{name}.bias"), vec![k]));
        }
    }
    let tensors = shapes.into_iter().map(|(name, shape)| {
        let n = shape.iter().product();
        (name, HostTensor::new(shape, (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 0.2).collect()))
    });
    ModelWeights::from_checkpoint(&config, Checkpoint::from_tensors(tensors)).expect("random GPT-2")
}

fn request(method: &str, bits: u32, granularity: &str, embeddings: bool) -> QuantizeRequest {
    QuantizeRequest { method: method.into(), bits, granularity: granularity.into(), embeddings, ..QuantizeRequest::default() }
}

fn quantize(weights: &ModelWeights, request: &QuantizeRequest) -> lutlab_core::Result<QuantizedModel> {
    let method = request.method(weights, false)?;
    quantize_model(weights, &method, request.selection(None), Calibration::default(), &mut NoProgress)
}

fn packed(weights: &ModelWeights, quantized: &QuantizedModel, dtype: TableDtype) -> PackedModel {
    PackedModel::from_quantized(weights, quantized, PackedMeta::default(), dtype).expect("packs")
}

/// The safetensors header of a file as JSON.
fn header(bytes: &[u8]) -> Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// The file with one metadata value replaced (header re-padded; data unchanged).
fn with_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h = header(bytes);
    h["__metadata__"][key] = Value::String(value.into());
    let mut text = serde_json::to_vec(&h).unwrap();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn embeddings_stay_full_precision_by_default() {
    assert!(!QuantizeRequest::default().embeddings);
    // Settings written before the switch existed still parse, as off.
    let old: QuantizeRequest = serde_json::from_str(r#"{"method":"kmeans","bits":3,"granularity":"channel"}"#).unwrap();
    assert!(!old.embeddings);
    let w = weights();
    let q = quantize(&w, &request("kmeans", 3, "channel", false)).unwrap();
    assert!(q.layers.iter().all(|l| l.name != HEAD));
    let p = packed(&w, &q, TableDtype::F32);
    assert_eq!(p.dense["wte.weight"], w.wte);
    assert_eq!(p.format_version(), 1);
    assert_eq!(header(&p.to_safetensors(TableDtype::F32).unwrap())["__metadata__"]["format_version"], "1");
}

#[test]
fn the_head_is_quantized_as_the_vocab_wide_linear_and_round_trips_through_the_file() {
    let w = weights();
    let q = quantize(&w, &request("kmeans", 3, "channel", true)).unwrap();
    let head = q.layers.iter().find(|l| l.name == HEAD).expect("the head is quantized");
    let lut = head.lut.as_ref().expect("a LUT");
    assert_eq!((lut.rows, lut.cols), (C, VOCAB));
    // Per channel = a table per token; each token's row has ≤ 8 distinct values.
    let wte = transpose(&head.dequantized, C, VOCAB);
    for row in wte.chunks_exact(C) {
        let mut distinct: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() <= 8, "{} distinct values in one token's row", distinct.len());
    }
    for dtype in [TableDtype::F32, TableDtype::F16] {
        let p = packed(&w, &q, dtype);
        assert!(!p.dense.contains_key("wte.weight"), "the tied matrix is stored once, packed");
        let bytes = p.to_safetensors(dtype).unwrap();
        let h = header(&bytes);
        assert_eq!(h["__metadata__"]["format_version"], "2");
        assert_eq!(h["lm_head.qweight"]["shape"], serde_json::json!([3 * 2, VOCAB]));
        let layers: Value = serde_json::from_str(h["__metadata__"]["layers"].as_str().unwrap()).unwrap();
        assert_eq!(layers[HEAD], serde_json::json!({"rows": C, "cols": VOCAB, "bits": 3, "channels_per_table": 1}));
        let back = PackedModel::from_safetensors("head.safetensors", &bytes).expect("reads back");
        assert_eq!(back, p, "{dtype}");
    }
}

#[test]
fn the_dense_model_has_the_dequantized_head_as_wte() {
    let w = weights();
    let q = quantize(&w, &request("kmeans", 2, "tensor", true)).unwrap();
    let applied = q.apply(&w);
    let head = &q.layers.iter().find(|l| l.name == HEAD).unwrap().dequantized;
    assert_eq!(applied.wte.data, transpose(head, C, VOCAB));
    assert_ne!(applied.wte.data, w.wte.data);
    // The file's dense form (f32 tables: nothing rounded) is the same model.
    let dense = packed(&w, &q, TableDtype::F32).dequantized_weights().unwrap();
    assert_eq!(dense.wte, applied.wte);
    assert_eq!(dense.blocks[1].linears[2].weight, applied.blocks[1].linears[2].weight);
    // 2 bits per tensor: the whole embedding takes 4 values.
    let mut distinct: Vec<u32> = dense.wte.data.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() <= 4);
}

#[test]
fn bits_per_weight_and_bytes_count_the_embedding() {
    let w = weights();
    let without = quantize(&w, &request("kmeans", 4, "channel", false)).unwrap();
    let with = quantize(&w, &request("kmeans", 4, "channel", true)).unwrap();
    assert_eq!(with.layers.len(), without.layers.len() + 1);
    let head = with.layers.last().unwrap();
    // 4-bit codes and a 16-entry f16 table per token (40 weights).
    let expected_head = 4.0 + 16.0 * 16.0 / C as f64;
    assert!((head.bits_per_weight - expected_head).abs() < 1e-12, "{}", head.bits_per_weight);
    let n_blocks: f64 = without.layers.iter().map(|l| l.dequantized.len() as f64).sum();
    let n_head = (C * VOCAB) as f64;
    let expected = (without.bits_per_weight() * n_blocks + expected_head * n_head) / (n_blocks + n_head);
    assert!((with.bits_per_weight() - expected).abs() < 1e-12, "{} vs {expected}", with.bits_per_weight());
    // The packed head's bytes: 4 bits × 2 blocks of 32 rows per token as u32 words, f16 tables.
    let (p_with, p_without) = (packed(&w, &with, TableDtype::F16), packed(&w, &without, TableDtype::F16));
    assert_eq!(p_with.packed_bytes() - p_without.packed_bytes(), 4 * (4 * 2 * VOCAB) + 2 * (16 * VOCAB));
    assert_eq!(p_with.f16_bytes_of_packed_layers() - p_without.f16_bytes_of_packed_layers(), 2 * C * VOCAB);
}

#[test]
fn uniform_grids_quantize_the_head_too() {
    let w = weights();
    let q = quantize(&w, &request("rtn", 4, "channel", true)).unwrap();
    let head = q.layers.iter().find(|l| l.name == HEAD).unwrap();
    assert!(head.lut.is_some() && head.mse > 0.0);
    let p = packed(&w, &q, TableDtype::F16);
    assert!(p.layers.contains_key(HEAD));
}

#[test]
fn impossible_settings_are_refused_naming_the_head() {
    let w = weights();
    // 50 tokens are 50 output channels: groups of 8 do not divide them.
    let err = quantize(&w, &request("kmeans", 3, "group:8", true)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("lm_head") && err.contains("token") && err.contains("does not divide the 50"), "{err}");
    // The same settings without the embeddings are fine for these blocks.
    assert!(quantize(&w, &request("kmeans", 3, "group:8", false)).is_ok());
}

#[test]
fn the_head_takes_no_fisher_weights_sensitive_weights_or_centering() {
    let w = weights();
    let fisher: Vec<(String, Vec<f32>)> = w.linears().map(|(n, l)| (format!("{n}.weight"), vec![1.0; l.weight.numel()])).collect();
    let lookup = |name: &str| fisher.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice());
    let means: InputMeans = w.linears().map(|(n, l)| (n, vec![0.01; l.in_features()])).collect();
    let req = QuantizeRequest { sensitive: 0.5, centering: true, scaling: true, ..request("kmeans", 3, "tensor", true) };
    let method = req.method(&w, true).unwrap();
    let calibration = Calibration { fisher: Some(&lookup), input_means: Some(&means), ..Default::default() };
    let q = match quantize_model(&w, &method, req.selection(None), calibration, &mut NoProgress) {
        Ok(q) => q,
        Err(e) => panic!("the head needs neither Fisher values nor mean inputs: {e}"),
    };
    let head = q.layers.iter().find(|l| l.name == HEAD).unwrap();
    assert_eq!(head.outliers, 0, "no sensitive weights without the head's Fisher values");
    let t = head.transform.as_ref().expect("scaling applies");
    assert!(t.scales.is_some() && t.input_shift.is_none(), "scaled per token, never centered");
    // Packed, the head keeps its scales and has no bias; the dense form agrees with `apply`.
    let p = packed(&w, &q, TableDtype::F32);
    assert!(p.layers[HEAD].scales.is_some() && !p.dense.contains_key("lm_head.bias"));
    let dense = p.dequantized_weights().unwrap();
    for (a, b) in dense.wte.data.iter().zip(&q.apply(&w).wte.data) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn files_that_misuse_the_head_are_refused_by_name() {
    let w = weights();
    let q = quantize(&w, &request("kmeans", 3, "channel", true)).unwrap();
    let p = packed(&w, &q, TableDtype::F32);
    let bytes = p.to_safetensors(TableDtype::F32).unwrap();
    let err = PackedModel::from_safetensors("old.safetensors", &with_metadata(&bytes, "format_version", "1")).unwrap_err().to_string();
    assert!(err.contains("lm_head") && err.contains("format version 2"), "{err}");
    let err = PackedModel::from_safetensors("new.safetensors", &with_metadata(&bytes, "format_version", "7")).unwrap_err().to_string();
    assert!(err.contains("format version 7 is not supported"), "{err}");
    let mut shifted = p.clone();
    shifted.layers.get_mut(HEAD).unwrap().input_shift = Some(vec![0.0; C]);
    let err = shifted.validate("shifted").unwrap_err().to_string();
    assert!(err.contains("input shift") && err.contains("no bias"), "{err}");
    let mut both = p.clone();
    both.dense.insert("wte.weight".into(), w.wte.clone());
    let err = both.validate("both").unwrap_err().to_string();
    assert!(err.contains("`wte.weight` is stored both dense and packed"), "{err}");
    let mut neither = p;
    neither.layers.remove(HEAD);
    let err = neither.validate("neither").unwrap_err().to_string();
    assert!(err.contains("`wte.weight` is missing"), "{err}");
}

#[test]
fn a_version_2_file_written_before_version_3_still_loads() {
    // `tests/fixtures/packed_v2_head.safetensors` was written by lutlab at commit 0a1eee2 (before
    // format version 3): this file's model, 3-bit per channel with the head packed, f16 tables.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/packed_v2_head.safetensors");
    let bytes = std::fs::read(path).expect("fixture");
    assert_eq!(header(&bytes)["__metadata__"]["format_version"], "2");
    let back = PackedModel::from_safetensors("packed_v2_head.safetensors", &bytes).expect("a version-2 file loads");
    let w = weights();
    let q = quantize(&w, &request("kmeans", 3, "channel", true)).unwrap();
    assert_eq!(back, packed(&w, &q, TableDtype::F16));
}
