//! The packed model file (`docs/FORMAT.md`): round trips of the shipped model quantized, the
//! dense model it stands for, every kind of broken file refused by name, and a bounded fuzz.

use lutlab_core::checkpoint::{Checkpoint, HostTensor, TensorData, write_tensors};
use lutlab_core::dense_dtype::DenseDtype;
use lutlab_core::packed_file::{
    FORMAT_NAME, FORMAT_VERSION_COLUMN_PARTS, FORMAT_VERSION_DENSE_16, FORMAT_VERSION_INPUT_GROUPS, FORMAT_VERSION_VECTORS, FORMAT_VERSION_WITHOUT_HEAD, PackedMeta, PackedModel, TableDtype,
};
use lutlab_core::packed_size::PackedSizes;
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::model::quantize_layer;
use lutlab_core::quant::outliers::range_for_outlier_percent;
use lutlab_core::quant::{Granularity, KmeansSettings, Method, OutlierSettings, QuantizeRequest, QuantizedModel, quantize_model};
use lutlab_core::{ModelConfig, ModelWeights, LoadError, NoProgress};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

// ---- models ----

fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn shipped_weights() -> ModelWeights {
    let dir = "models/gpt2-tiny-wikitext";
    let config_json = std::fs::read(repo_path(&format!("{dir}/config.json"))).expect("shipped config");
    let config = ModelConfig::from_json(&config_json, "config.json").expect("config");
    let bytes = std::fs::read(repo_path(&format!("{dir}/model.safetensors"))).expect("shipped model");
    let checkpoint = Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).expect("checkpoint");
    ModelWeights::from_checkpoint(&config, checkpoint).expect("weights")
}

/// Block 0 by k-means 3-bit per channel; `h.1.mlp.c_fc` by 4-bit tensor k-means with 0.5 %
/// outliers; `h.2.attn.c_proj` by RTN with groups of 16 input rows, which have no packed form
/// (packed groups are multiples of 32 rows), so it stays dense.
fn quantize(weights: &ModelWeights) -> QuantizedModel {
    let request = QuantizeRequest { method: "kmeans".into(), bits: 3, granularity: "channel".into(), ..Default::default() };
    let method = request.method(weights, false).expect("method");
    let mut q = quantize_model(weights, &method, Some(0..1), Default::default(), &mut NoProgress).expect("quantize block 0");
    let c_fc = &weights.blocks[1].linears[2];
    let range = range_for_outlier_percent(&[c_fc.weight.data.as_slice()], 0.5).expect("range");
    let sparse = Method::Kmeans {
        settings: KmeansSettings { bits: 4, granularity: Granularity::Tensor, ..KmeansSettings::default() },
        outliers: Some(OutlierSettings { range: Some(range), sensitivity: 0.0 }),
        scaling: false,
    };
    let n_embd = weights.config.n_embd;
    q.layers.push(quantize_layer("h.1.mlp.c_fc", c_fc, &sparse, Default::default(), n_embd).expect("dense-and-sparse"));
    let rtn = QuantizeRequest { method: "rtn".into(), bits: 4, granularity: "group:16".into(), ..Default::default() };
    let rtn = rtn.method(weights, false).expect("rtn");
    q.layers.push(quantize_layer("h.2.attn.c_proj", &weights.blocks[2].linears[1], &rtn, Default::default(), n_embd).expect("rtn"));
    q
}

fn meta() -> PackedMeta {
    PackedMeta {
        base_model: "models/gpt2-tiny-wikitext".into(),
        method: "kmeans 3-bit channel".into(),
        settings: r#"{"method":"kmeans","bits":3,"granularity":"channel"}"#.into(),
        allocation: String::new(),
    }
}

struct Shipped {
    weights: ModelWeights,
    quantized: QuantizedModel,
}

fn shipped() -> &'static Shipped {
    static SHIPPED: OnceLock<Shipped> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let weights = shipped_weights();
        let quantized = quantize(&weights);
        Shipped { weights, quantized }
    })
}

/// Every tensor of a model by canonical name.
fn tensors_of(w: &ModelWeights) -> Vec<(String, HostTensor)> {
    w.to_checkpoint_tensors()
}

/// A small random GPT-2 (2 blocks, n_embd 40, so 40-row matrices end in padding rows): block 0
/// packed at 3 bits per channel, block 1's `mlp.c_fc` at 4 bits with outliers and its
/// `attn.c_proj` at 2 bits per group of 8 channels, `h.0.mlp.c_proj` with scales and an input
/// shift; the rest dense.
fn small_packed(table_dtype: TableDtype) -> PackedModel {
    let mut config = ModelConfig::gpt2(2, 2, 40, 16, 24);
    config.n_inner = 64;
    let mut rng = SplitMix64::new(1);
    let shapes = {
        let c = 40;
        let mut s = vec![
            ("wte.weight".to_string(), vec![24, c]),
            ("wpe.weight".to_string(), vec![16, c]),
            ("ln_f.weight".to_string(), vec![c]),
            ("ln_f.bias".to_string(), vec![c]),
        ];
        for i in 0..2 {
            for ln in ["ln_1", "ln_2"] {
                s.push((format!("h.{i}.{ln}.weight"), vec![c]));
                s.push((format!("h.{i}.{ln}.bias"), vec![c]));
            }
            for (name, r, k) in [("attn.c_attn", c, 3 * c), ("attn.c_proj", c, c), ("mlp.c_fc", c, 64), ("mlp.c_proj", 64, c)] {
                s.push((format!("h.{i}.{name}.weight"), vec![r, k]));
                s.push((format!("h.{i}.{name}.bias"), vec![k]));
            }
        }
        s
    };
    let tensors = shapes.into_iter().map(|(name, shape)| {
        let n = shape.iter().product();
        (name, HostTensor::new(shape, (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()))
    });
    let weights = ModelWeights::from_checkpoint(&config, Checkpoint::from_tensors(tensors)).expect("small weights");
    let kmeans = |bits, granularity| KmeansSettings { bits, granularity, ..KmeansSettings::default() };
    let block0 = Method::Kmeans { settings: kmeans(3, Granularity::Channel), outliers: None, scaling: false };
    let mut q = quantize_model(&weights, &block0, Some(0..1), Default::default(), &mut NoProgress).expect("quantize");
    let b1 = &weights.blocks[1];
    let range = range_for_outlier_percent(&[b1.linears[2].weight.data.as_slice()], 2.0).expect("range");
    let sparse = Method::Kmeans {
        settings: kmeans(4, Granularity::Tensor),
        outliers: Some(OutlierSettings { range: Some(range), sensitivity: 0.0 }),
        scaling: false,
    };
    q.layers.push(quantize_layer("h.1.mlp.c_fc", &b1.linears[2], &sparse, Default::default(), 40).expect("sparse"));
    let grouped = Method::Kmeans { settings: kmeans(2, Granularity::Group(8)), outliers: None, scaling: false };
    q.layers.push(quantize_layer("h.1.attn.c_proj", &b1.linears[1], &grouped, Default::default(), 40).expect("grouped"));
    let mut packed = PackedModel::from_quantized(&weights, &q, meta(), table_dtype).expect("pack");
    assert!(!packed.layers["h.1.mlp.c_fc"].sparse.is_empty(), "the small model should have outliers");
    let layer = packed.layers.get_mut("h.0.mlp.c_proj").expect("layer");
    layer.scales = Some((0..layer.cols).map(|_| 0.5 + rng.next_f64() as f32).collect());
    layer.input_shift = Some((0..layer.rows).map(|_| rng.next_f64() as f32 - 0.5).collect());
    packed
}

// ---- round trips ----

#[test]
fn shipped_model_round_trips_exactly_with_f32_tables() {
    let s = shipped();
    let packed = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F32).expect("pack");
    // Block 0's four linears and the dense-and-sparse layer are packed; the RTN layer is not.
    let names: Vec<&str> = packed.layers.keys().map(String::as_str).collect();
    assert_eq!(names, ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj", "h.1.mlp.c_fc"]);
    assert!(packed.dense.contains_key("h.2.attn.c_proj.weight") && packed.dense.contains_key("h.0.attn.c_attn.bias"));
    assert!(!packed.dense.contains_key("h.0.attn.c_attn.weight"));
    assert!(!packed.layers["h.1.mlp.c_fc"].sparse.is_empty());
    assert_eq!(packed.layers["h.0.mlp.c_fc"].channels_per_table, 1);
    for layer in &s.quantized.layers {
        if let Some(lut) = &layer.lut {
            assert_eq!(&packed.layers[&layer.name].to_lut(), lut, "{}", layer.name);
        }
    }
    let bytes = packed.to_safetensors(TableDtype::F32).expect("write");
    let back = PackedModel::from_safetensors("packed.safetensors", &bytes).expect("read");
    assert_eq!(back, packed);
    assert_eq!(back.meta, meta());
    // Compression figures: 3-bit codes with per-channel tables against f16.
    let ratio = packed.f16_bytes_of_packed_layers() as f64 / packed.packed_bytes() as f64;
    assert!(ratio > 2.0 && ratio < 16.0 / 3.0, "ratio {ratio}");
}

#[test]
fn f16_tables_round_trip_as_rounded_and_keep_the_outliers() {
    let s = shipped();
    let exact = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F32).expect("pack f32");
    let packed = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F16).expect("pack f16");
    for (name, layer) in &packed.layers {
        let rounded: Vec<f32> = exact.layers[name].tables.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(layer.tables, rounded, "{name}");
    }
    // A weight kept in the sparse part keeps its value: its correction is taken against the
    // rounded table entry.
    let (w16, w32) = (packed.layers["h.1.mlp.c_fc"].effective_weights(), exact.layers["h.1.mlp.c_fc"].effective_weights());
    let sparse = &packed.layers["h.1.mlp.c_fc"].sparse;
    let cols = packed.layers["h.1.mlp.c_fc"].cols;
    for c in 0..cols {
        for i in sparse.col_ptr[c] as usize..sparse.col_ptr[c + 1] as usize {
            let at = sparse.row_idx[i] as usize * cols + c;
            assert!((w16[at] - w32[at]).abs() <= 1e-6 * w32[at].abs().max(1.0), "outlier at {at}: {} vs {}", w16[at], w32[at]);
        }
    }
    let bytes = packed.to_safetensors(TableDtype::F16).expect("write");
    let back = PackedModel::from_safetensors("packed.safetensors", &bytes).expect("read");
    assert_eq!(back, packed);
    let bytes32 = exact.to_safetensors(TableDtype::F32).expect("write f32");
    assert!(bytes.len() < bytes32.len());
    // Writing f32 tables as f16 would round silently: refused.
    let err = exact.to_safetensors(TableDtype::F16).unwrap_err().to_string();
    assert!(err.contains("not exactly an f16"), "{err}");
    assert_eq!("f16".parse::<TableDtype>().unwrap(), TableDtype::F16);
    assert!("bf16".parse::<TableDtype>().is_err());
}

#[test]
fn dequantized_weights_equal_the_quantized_model_applied() {
    let s = shipped();
    let packed = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F32).expect("pack");
    let dense = packed.dequantized_weights().expect("dequantize");
    let applied = s.quantized.apply(&s.weights);
    // The RTN layer is not packed: the packed model keeps its original weights there.
    for ((name, got), (_, want)) in tensors_of(&dense).into_iter().zip(tensors_of(&applied)) {
        if name == "h.2.attn.c_proj.weight" {
            assert_eq!(got, s.weights.blocks[2].linears[1].weight, "{name}");
        } else {
            assert_eq!(got, want, "{name}");
        }
    }
}

#[test]
fn scales_and_input_shift_round_trip_and_fold_into_the_dense_model() {
    let packed = small_packed(TableDtype::F32);
    let bytes = packed.to_safetensors(TableDtype::F32).expect("write");
    let back = PackedModel::from_safetensors("small.safetensors", &bytes).expect("read");
    assert_eq!(back, packed);
    let dense = back.dequantized_weights().expect("dequantize");
    let all: HashMap<String, HostTensor> = tensors_of(&dense).into_iter().collect();
    let mut rng = SplitMix64::new(99);
    for (name, layer) in &packed.layers {
        let bias = &packed.dense[&format!("{name}.bias")].data;
        let m = 3;
        let x: Vec<f32> = (0..m * layer.rows).map(|_| 2.0 * rng.next_f64() as f32 - 1.0).collect();
        let reference = layer.reference_matmul(&x, m, Some(bias));
        let w = &all[&format!("{name}.weight")].data;
        let b = &all[&format!("{name}.bias")].data;
        for t in 0..m {
            for c in 0..layer.cols {
                let y: f64 = (0..layer.rows).map(|r| f64::from(x[t * layer.rows + r]) * f64::from(w[r * layer.cols + c])).sum::<f64>()
                    + f64::from(b[c]);
                let want = f64::from(reference[t * layer.cols + c]);
                assert!((y - want).abs() < 1e-5, "{name} [{t}, {c}]: {y} vs {want}");
            }
        }
    }
    assert!(packed.layers["h.0.mlp.c_proj"].input_shift.is_some());
}

/// The shipped model with `h.2.attn.c_proj` and `h.3.mlp.c_fc` by RTN with a scale per group of
/// input rows (GPTQ's layout: 4-bit asymmetric groups of 64, 3-bit symmetric groups of 32).
fn input_group_model(table_dtype: TableDtype) -> (QuantizedModel, PackedModel) {
    let s = shipped();
    let mut q = QuantizedModel { layers: Vec::new() };
    for (name, linear, bits, granularity, symmetric) in
        [("h.2.attn.c_proj", &s.weights.blocks[2].linears[1], 4, "group:64", false), ("h.3.mlp.c_fc", &s.weights.blocks[3].linears[2], 3, "group:32", true)]
    {
        let request = QuantizeRequest { method: "rtn".into(), bits, granularity: granularity.into(), asym: !symmetric, ..Default::default() };
        let method = request.method(&s.weights, false).expect("rtn");
        q.layers.push(quantize_layer(name, linear, &method, Default::default(), s.weights.config.n_embd).expect("rtn"));
    }
    let packed = PackedModel::from_quantized(&s.weights, &q, meta(), table_dtype).expect("pack");
    (q, packed)
}

/// `model` is version 4 (the shipped model's dense tensors are f16), and version 3 once every
/// dense tensor needs f32: its layers alone need version 3.
fn assert_version_3_unless_dense_is_16_bit(model: &PackedModel) {
    assert_eq!(model.format_version(), FORMAT_VERSION_DENSE_16);
    let mut f32_dense = model.clone();
    // 1/3 is exact in neither f16 nor bf16.
    f32_dense.dense.values_mut().for_each(|t| t.data[0] = 1.0 / 3.0);
    assert_eq!(f32_dense.format_version(), FORMAT_VERSION_INPUT_GROUPS);
    let (header, _) = split(&f32_dense.to_safetensors(TableDtype::F32).expect("write"));
    assert_eq!(header["__metadata__"]["format_version"], "3");
}

#[test]
fn input_group_scales_pack_as_version_3_and_round_trip() {
    let (q, exact) = input_group_model(TableDtype::F32);
    for layer in &q.layers {
        let packed = &exact.layers[&layer.name];
        assert_eq!(packed.effective_weights(), layer.dequantized, "{}: the packed form decodes to the RTN values", layer.name);
    }
    let groups = |m: &PackedModel, name: &str| m.layers[name].input_groups.clone().expect("groups");
    assert_eq!(groups(&exact, "h.2.attn.c_proj").size, 64);
    assert!(groups(&exact, "h.3.mlp.c_fc").zeros.is_none(), "symmetric: no zero points stored");
    assert_version_3_unless_dense_is_16_bit(&exact);
    for dtype in [TableDtype::F32, TableDtype::F16] {
        let (_, packed) = input_group_model(dtype);
        let bytes = packed.to_safetensors(dtype).expect("write");
        let (header, _) = split(&bytes);
        assert_eq!(header["__metadata__"]["format_version"], "4", "the shipped model's dense tensors are f16");
        let layers: Value = serde_json::from_str(header["__metadata__"]["layers"].as_str().unwrap()).unwrap();
        assert_eq!(layers["h.2.attn.c_proj"]["group_size"], 64);
        assert!(layers["h.0.attn.c_attn"].is_null() || layers["h.0.attn.c_attn"].get("group_size").is_none());
        let c = s_n_embd();
        assert_eq!(header["h.2.attn.c_proj.group_scales"]["shape"], serde_json::json!([c / 64, c]));
        assert_eq!(header["h.2.attn.c_proj.group_scales"]["dtype"], if dtype == TableDtype::F16 { "F16" } else { "F32" });
        assert!(header.get("h.3.mlp.c_fc.group_zeros").is_none());
        let back = PackedModel::from_safetensors("groups.safetensors", &bytes).expect("read");
        assert_eq!(back, packed, "{dtype}");
        if dtype == TableDtype::F16 {
            // Scales and zeros rounded to f16 (relative error ≤ 2⁻¹¹ each) move a weight by at
            // most ~2⁻¹⁰ of its group's range: bounded here by 2⁻⁹ of the layer's largest weight.
            for (name, layer) in &packed.layers {
                let (w16, w32) = (layer.effective_weights(), exact.layers[name].effective_weights());
                let largest = w32.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = w16.iter().zip(&w32).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= largest / 512.0, "{name}: a weight moved by {worst} (largest weight {largest})");
            }
        }
    }
    // A version-2 reader's promise: group scales need version 3, and stray group tensors are named.
    let (_, packed) = input_group_model(TableDtype::F32);
    let bytes = packed.to_safetensors(TableDtype::F32).unwrap();
    let err = error_of(&set_metadata(&bytes, "format_version", "2"));
    assert!(err.contains("group_size") && err.contains("format version 3"), "{err}");
    let err = error_of(&rewrite(&bytes, |tensors| tensors.retain(|t| t.0 != "h.2.attn.c_proj.group_scales")));
    assert!(err.contains("h.2.attn.c_proj.group_scales") && err.contains("missing"), "{err}");
}

/// Vector tables (issue 20): `h.0.mlp.c_fc` by 2-bit tables over vectors of 2 rows per channel,
/// `h.1.attn.c_proj` by 1-bit tables over vectors of 4 rows per tensor.
fn vector_model(table_dtype: TableDtype) -> (QuantizedModel, PackedModel) {
    let s = shipped();
    let mut q = QuantizedModel { layers: Vec::new() };
    for (name, linear, bits, dim, granularity) in
        [("h.0.mlp.c_fc", &s.weights.blocks[0].linears[2], 2, 2, "channel"), ("h.1.attn.c_proj", &s.weights.blocks[1].linears[1], 1, 4, "tensor")]
    {
        let request = QuantizeRequest { bits, granularity: granularity.into(), vector_dim: Some(dim), restarts: Some(1), ..Default::default() };
        let method = request.method(&s.weights, false).expect("vectors");
        q.layers.push(quantize_layer(name, linear, &method, Default::default(), s.weights.config.n_embd).expect("vectors"));
    }
    let packed = PackedModel::from_quantized(&s.weights, &q, meta(), table_dtype).expect("pack");
    (q, packed)
}

#[test]
fn vector_tables_pack_as_version_5_and_round_trip() {
    let (q, exact) = vector_model(TableDtype::F32);
    for layer in &q.layers {
        assert_eq!(exact.layers[&layer.name].effective_weights(), layer.dequantized, "{}: the packed form decodes to the fitted vectors", layer.name);
    }
    assert_eq!(exact.format_version(), FORMAT_VERSION_VECTORS);
    for dtype in [TableDtype::F32, TableDtype::F16] {
        let (_, packed) = vector_model(dtype);
        let bytes = packed.to_safetensors(dtype).expect("write");
        let (header, _) = split(&bytes);
        assert_eq!(header["__metadata__"]["format_version"], "5");
        let layers: Value = serde_json::from_str(header["__metadata__"]["layers"].as_str().unwrap()).unwrap();
        assert_eq!(layers["h.0.mlp.c_fc"]["vector_dim"], 2);
        assert_eq!(layers["h.1.attn.c_proj"]["bits"], 1);
        let c = s_n_embd();
        // 16 entries of 2 values per output channel; 2-bit codes of vectors of 2: 4-bit codes,
        // blocks of 32 codes (64 rows).
        assert_eq!(header["h.0.mlp.c_fc.lut"]["shape"], serde_json::json!([4 * c, 16, 2]));
        assert_eq!(header["h.0.mlp.c_fc.qweight"]["shape"], serde_json::json!([(c / 2).div_ceil(32) * 4, 4 * c]));
        let back = PackedModel::from_safetensors("vectors.safetensors", &bytes).expect("read");
        assert_eq!(back, packed, "{dtype}");
    }
    // An older reader's promise, and a vector layer that lies about its layout.
    let bytes = exact.to_safetensors(TableDtype::F32).unwrap();
    let err = error_of(&set_metadata(&bytes, "format_version", "4"));
    assert!(err.contains("vector_dim") && err.contains("format version 5"), "{err}");
    let layers = split(&bytes).0["__metadata__"]["layers"].as_str().unwrap().to_string();
    for (from, to, says) in [
        ("\"vector_dim\":2", "\"vector_dim\":3", "vector_dim 3; lutlab supports 1 (scalar tables), 2 and 4"),
        ("\"vector_dim\":4", "\"vector_dim\":2", "`h.1.attn.c_proj.lut` has shape [1, 16, 4], expected [1, 4, 2]"),
        ("\"vector_dim\":2", "\"vector_dim\":1", "vector_dim 1 is written as no vector_dim"),
    ] {
        let err = error_of(&set_metadata(&bytes, "layers", &layers.replacen(from, to, 1)));
        assert!(err.contains(says), "{from} -> {to}: {err}");
    }
}

/// Blocks 0 and 1 of the shipped model with every block of 64 output channels at 2 or 4 bits
/// (`--allocate-per channels:64` under 5 bits per weight, tables and outliers counted), k-means per channel with 0.5 %
/// outliers: layers made of column parts.
fn split_model(table_dtype: TableDtype) -> (QuantizedModel, PackedModel) {
    use lutlab_core::quant::allocate::Budget;
    use lutlab_core::quant::mixed::{candidates, AllocationUnit};
    let s = shipped();
    let request = QuantizeRequest { bits: 2, granularity: "channel".into(), restarts: Some(1), outlier_percent: Some(0.5), ..Default::default() };
    let method = request.method(&s.weights, false).expect("method");
    let mut quantize_at = |m: &Method| quantize_model(&s.weights, m, Some(0..2), Default::default(), &mut NoProgress);
    let found = candidates(&s.weights, &method, &[2, 4], None, table_dtype, AllocationUnit::Channels(64), &mut quantize_at).expect("candidates");
    let allocation = found.allocate(found.layer_budget(Budget::BitsPerWeight(5.0), None).unwrap()).expect("allocate");
    let q = found.chosen(&allocation);
    let packed = PackedModel::from_quantized(&s.weights, &q, meta(), table_dtype).expect("pack");
    (q, packed)
}

#[test]
fn column_parts_pack_as_version_6_and_round_trip() {
    let (q, exact) = split_model(TableDtype::F32);
    let mixed: Vec<&str> = exact.layers.iter().filter(|(_, l)| l.is_split()).map(|(n, _)| n.as_str()).collect();
    assert!(!mixed.is_empty(), "some layer mixes widths");
    for layer in &q.layers {
        assert_eq!(exact.layers[&layer.name].effective_weights(), layer.dequantized, "{}: the parts decode to the chosen columns", layer.name);
    }
    assert_eq!(exact.format_version(), FORMAT_VERSION_COLUMN_PARTS);
    // The allocation counted each block of 64 columns on its own: joined parts take no more.
    let layer_bytes: usize = exact.packed_bytes();
    assert!(layer_bytes as f64 * 8.0 <= 5.0 * q.layers.iter().map(|l| l.dequantized.len()).sum::<usize>() as f64);
    for dtype in [TableDtype::F32, TableDtype::F16] {
        let (_, packed) = split_model(dtype);
        let bytes = packed.to_safetensors(dtype).expect("write");
        let (header, _) = split(&bytes);
        assert_eq!(header["__metadata__"]["format_version"], "6");
        let layers: Value = serde_json::from_str(header["__metadata__"]["layers"].as_str().unwrap()).unwrap();
        let parts = layers[mixed[0]]["parts"].as_array().expect("column parts");
        assert!(parts.len() >= 2 && parts.windows(2).all(|p| p[0]["bits"] != p[1]["bits"]), "{parts:?}: neighbours of one width are joined");
        assert!(header.get(&format!("{}.part0.qweight", mixed[0])).is_some() && header.get(&format!("{}.qweight", mixed[0])).is_none());
        let back = PackedModel::from_safetensors("parts.safetensors", &bytes).expect("read");
        assert_eq!(back, packed, "{dtype}");
    }
    // An older reader's promise, a part the metadata does not list, parts that do not add up.
    let bytes = exact.to_safetensors(TableDtype::F32).unwrap();
    let err = error_of(&set_metadata(&bytes, "format_version", "5"));
    assert!(err.contains("column parts") && err.contains("format version 6"), "{err}");
    let layers = split(&bytes).0["__metadata__"]["layers"].as_str().unwrap().to_string();
    let mut entries: serde_json::Map<String, Value> = serde_json::from_str(&layers).unwrap();
    let parts = entries[mixed[0]]["parts"].as_array().unwrap().clone();
    entries[mixed[0]]["parts"] = Value::Array(parts[..parts.len() - 1].to_vec());
    let err = error_of(&set_metadata(&bytes, "layers", &Value::Object(entries.clone()).to_string()));
    assert!(err.contains(&format!("{}.part{}", mixed[0], parts.len() - 1)) && err.contains("does not match"), "{err}");
    entries[mixed[0]]["parts"] = Value::Array(Vec::new());
    let err = error_of(&set_metadata(&bytes, "layers", &Value::Object(entries).to_string()));
    assert!(err.contains("does not match") || err.contains("non-empty list"), "{err}");
}

/// `h.1.attn.c_proj` of the shipped model by LDLQ-RG after QuIP's incoherence processing
/// (2-bit qfn b, rescaled and rotated), with the Hessian of random correlated inputs.
fn incoherent_model(table_dtype: TableDtype) -> (QuantizedModel, PackedModel) {
    use lutlab_core::quant::hessian::Square;
    let s = shipped();
    let linear = &s.weights.blocks[1].linears[1];
    let n = linear.in_features();
    let mut rng = SplitMix64::new(12);
    let x: Vec<f64> = (0..n * 300).map(|_| rng.next_f64() - 0.5).collect();
    let mut h = Square::zeros(n);
    for i in 0..n {
        for j in 0..n {
            h.data[i * n + j] = (0..300).map(|t| (x[i * 300 + t] + 0.3 * x[t]) * (x[j * 300 + t] + 0.3 * x[t])).sum::<f64>() / 150.0;
        }
    }
    let request = QuantizeRequest { method: "ldlq-rg".into(), bits: 2, granularity: "channel".into(), incoherence: true, ..Default::default() };
    let method = request.method(&s.weights, false).expect("method");
    let lookup = |_: &str| Some(&h);
    let calibration = lutlab_core::quant::Calibration { hessians: Some(&lookup), ..Default::default() };
    let layer = quantize_layer("h.1.attn.c_proj", linear, &method, calibration, s.weights.config.n_embd).expect("ldlq-rg");
    let q = QuantizedModel { layers: vec![layer] };
    let packed = PackedModel::from_quantized(&s.weights, &q, meta(), table_dtype).expect("pack");
    (q, packed)
}

#[test]
fn incoherence_processing_packs_as_version_3_and_round_trips() {
    let (q, exact) = incoherent_model(TableDtype::F32);
    let layer = &exact.layers["h.1.attn.c_proj"];
    let t = layer.incoherence.as_ref().expect("incoherence stored");
    assert!(t.input_scale.is_some() && t.input.is_some() && t.output.is_some());
    assert_eq!(layer.effective_weights(), q.layers[0].dequantized, "the packed layer decodes to the quantizer's result");
    assert_version_3_unless_dense_is_16_bit(&exact);
    // The plain weights are what the export writes: the original layer's weight, quantized.
    let dense = exact.dequantized_weights().expect("dequantize");
    assert_eq!(dense.blocks[1].linears[1].weight.data, q.layers[0].dequantized);
    assert_eq!(dense.blocks[1].linears[1].bias, shipped().weights.blocks[1].linears[1].bias, "the bias is untouched");
    for dtype in [TableDtype::F32, TableDtype::F16] {
        let (_, packed) = incoherent_model(dtype);
        let bytes = packed.to_safetensors(dtype).expect("write");
        let (header, _) = split(&bytes);
        assert_eq!(header["__metadata__"]["format_version"], "4", "the shipped model's dense tensors are f16");
        let layers: Value = serde_json::from_str(header["__metadata__"]["layers"].as_str().unwrap()).unwrap();
        assert_eq!(layers["h.1.attn.c_proj"]["incoherence"], true);
        assert_eq!(header["h.1.attn.c_proj.rotation_in_a"]["shape"], serde_json::json!([16, 16]));
        assert_eq!(header["h.1.attn.c_proj.rotation_out_perm"]["dtype"], "U32");
        let back = PackedModel::from_safetensors("incoherent.safetensors", &bytes).expect("read");
        assert_eq!(back, packed, "{dtype}");
    }
    let bytes = exact.to_safetensors(TableDtype::F32).unwrap();
    let err = error_of(&set_metadata(&bytes, "format_version", "2"));
    assert!(err.contains("incoherence") && err.contains("format version 3"), "{err}");
    let err = error_of(&rewrite(&bytes, |tensors| tensors.retain(|t| t.0 != "h.1.attn.c_proj.rotation_in_b")));
    assert!(err.contains("rotation_in_a, rotation_in_b and rotation_in_perm together"), "{err}");
    let err = error_of(&rewrite(&bytes, |tensors| {
        let perm = tensors.iter_mut().find(|t| t.0 == "h.1.attn.c_proj.rotation_out_perm").unwrap();
        perm.3.copy_within(4..8, 0); // entry 0 repeats entry 1
    }));
    assert!(err.contains("not a permutation"), "{err}");
}

fn s_n_embd() -> usize {
    shipped().weights.config.n_embd
}

#[test]
fn files_written_by_earlier_versions_still_load() {
    // `tests/fixtures/packed_v1_small.safetensors` was written by lutlab at commit 0a1eee2 (before
    // format version 3) from `small_packed(TableDtype::F16)`: the same model must come back.
    let bytes = std::fs::read(repo_path("tests/fixtures/packed_v1_small.safetensors")).expect("fixture");
    let (header, _) = split(&bytes);
    assert_eq!(header["__metadata__"]["format_version"], "1");
    let model = PackedModel::from_safetensors("packed_v1_small.safetensors", &bytes).expect("a version-1 file loads");
    assert_eq!(model, small_packed(TableDtype::F16));
    assert!(model.layers.values().all(|l| l.input_groups.is_none()));
}

// ---- dense tensors in their smallest exact dtype (format version 4) ----

/// `small_packed` with `wte` exact in f16, `wpe` exact in bf16 only (values beyond f16's range)
/// and everything else as drawn (f32).
fn small_packed_mixed_dense() -> PackedModel {
    let mut model = small_packed(TableDtype::F16);
    let wte = model.dense.get_mut("wte.weight").unwrap();
    wte.data.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    let wpe = model.dense.get_mut("wpe.weight").unwrap();
    wpe.data.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v * 1e6).to_f32());
    model
}

#[test]
fn dense_tensors_are_stored_in_the_smallest_exact_dtype_and_read_back_bit_for_bit() {
    let model = small_packed_mixed_dense();
    let bytes = model.to_safetensors(TableDtype::F16).expect("write");
    let (header, _) = split(&bytes);
    assert_eq!(header["wte.weight"]["dtype"], "F16");
    assert_eq!(header["wpe.weight"]["dtype"], "BF16");
    for name in ["ln_f.weight", "h.0.ln_1.bias", "h.1.attn.c_attn.weight", "h.0.mlp.c_fc.bias"] {
        assert_eq!(header[name]["dtype"], "F32", "{name}: random values need f32");
    }
    assert_eq!(header["__metadata__"]["format_version"], FORMAT_VERSION_DENSE_16.to_string());
    assert_eq!(model.format_version(), FORMAT_VERSION_DENSE_16);
    assert_eq!(model.dense_dtypes()["wpe.weight"], DenseDtype::BF16);
    let back = PackedModel::from_safetensors("mixed.safetensors", &bytes).expect("read");
    // `PartialEq` on f32 would let -0.0 equal 0.0: compare the bits.
    for (name, t) in &model.dense {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.dense[name].data), bits(&t.data), "{name}");
    }
    assert_eq!(back, model);
    // Half the bytes for the two 16-bit tensors, everything else as before.
    let all_f32 = small_packed(TableDtype::F16).to_safetensors(TableDtype::F16).expect("write f32 dense");
    let saved = 2 * (model.dense["wte.weight"].data.len() + model.dense["wpe.weight"].data.len());
    assert_eq!(split(&all_f32).1.len() - split(&bytes).1.len(), saved);
    assert_eq!(model.dense_bytes() + saved, small_packed(TableDtype::F16).dense_bytes());
}

#[test]
fn version_4_is_written_only_for_16_bit_dense_tensors() {
    // All dense tensors random f32: version 1, F32 everywhere, as older lutlabs wrote it.
    let (header, _) = split(small_file());
    assert_eq!(header["__metadata__"]["format_version"], "1");
    assert_eq!(header["wte.weight"]["dtype"], "F32");
    // The shipped model is f16: every dense tensor is stored F16, and the file is version 4.
    let s = shipped();
    let packed = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F16).expect("pack");
    let bytes = packed.to_safetensors(TableDtype::F16).expect("write");
    let (header, _) = split(&bytes);
    assert_eq!(header["__metadata__"]["format_version"], "4");
    for name in packed.dense.keys() {
        assert_eq!(header[name.as_str()]["dtype"], "F16", "{name}");
    }
    assert_eq!(PackedModel::from_safetensors("shipped.safetensors", &bytes).expect("read"), packed);
}

#[test]
fn sizes_add_up_to_the_file_and_explain_the_bits_per_weight() {
    let s = shipped();
    let packed = PackedModel::from_quantized(&s.weights, &s.quantized, meta(), TableDtype::F16).expect("pack");
    let bytes = packed.to_safetensors(TableDtype::F16).expect("write");
    let sizes = PackedSizes::of(&packed, bytes.len(), Some(14_500_000));
    assert_eq!(sizes.code_bytes + sizes.table_bytes + sizes.outlier_bytes + sizes.group_bytes + sizes.other_bytes, sizes.layer_bytes);
    assert_eq!(sizes.layer_bytes, packed.packed_bytes());
    let (header, data) = split(&bytes);
    assert_eq!(data.len(), sizes.dense_bytes + sizes.layer_bytes, "the data section is the dense and packed tensors");
    assert_eq!(bytes.len(), 8 + serde_json::to_vec(&header).unwrap().len().next_multiple_of(8) + data.len());
    assert!((sizes.bits_per_weight - 16.0 * packed.packed_bytes() as f64 / packed.f16_bytes_of_packed_layers() as f64).abs() < 1e-12);
    // Block 0 at 3 bits per channel (128 and 512 inputs) and one 4-bit tensor-wide layer with outliers.
    let text = &sizes.explanation;
    assert!(text.starts_with(&format!("{:.2} bits per weight: ", sizes.bits_per_weight)), "{text}");
    assert!(text.contains("for the 3–4-bit codes") && text.contains("for the tables (8–16 f16 entries per table of"), "{text}");
    assert!(text.contains("outliers (") && text.contains("% of the weights"), "{text}");
    assert!(sizes.file_line().contains(" MB original checkpoint ("), "{}", sizes.file_line());
}

#[test]
fn a_dense_dtype_that_lies_is_refused_by_name() {
    let bytes = small_packed_mixed_dense().to_safetensors(TableDtype::F16).expect("write");
    // F16 data declared F32: the bytes do not cover the shape.
    let err = error_of(&edit_header(&bytes, |h| h["wte.weight"]["dtype"] = "F32".into()));
    assert!(err.contains("tensor `wte.weight` is declared F32 [24,40], which is 3840 bytes, but its data holds 1920 bytes"), "{err}");
    // A dtype a dense tensor never has.
    let err = error_of(&edit_header(&bytes, |h| h["wte.weight"]["dtype"] = "I16".into()));
    assert!(err.contains("`wte.weight` has dtype I16, expected F32, F16 or BF16"), "{err}");
    // A shape with the right count but not the model's.
    let err = error_of(&edit_header(&bytes, |h| h["wte.weight"]["shape"] = serde_json::json!([40, 24])));
    assert!(err.contains("`wte.weight` has shape [40, 24], expected [24, 40]"), "{err}");
    // A 16-bit dense tensor in a file that claims an older version.
    let err = error_of(&set_metadata(&bytes, "format_version", "3"));
    assert!(err.contains("dense tensor `wpe.weight` has dtype BF16, which needs format version 4; the file says 3")
        || err.contains("dense tensor `wte.weight` has dtype F16, which needs format version 4; the file says 3"), "{err}");
}

// ---- broken files ----

/// The JSON header and the data section of a safetensors file.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut header, data) = split(bytes);
    edit(&mut header);
    join(&header, &data)
}

fn set_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    edit_header(bytes, |h| h["__metadata__"][key] = Value::String(value.into()))
}

/// A tensor as stored: name, dtype (`F32`, `F16`, `BF16` or `U32`), shape, little-endian bytes.
type RawTensor = (String, String, Vec<usize>, Vec<u8>);

enum Values {
    F32(Vec<f32>),
    F16(Vec<f32>),
    BF16(Vec<f32>),
    U32(Vec<u32>),
}

/// Rewrites the file's tensors through `edit`, keeping the metadata.
fn rewrite(bytes: &[u8], edit: impl FnOnce(&mut Vec<RawTensor>)) -> Vec<u8> {
    let (header, data) = split(bytes);
    let mut tensors: Vec<RawTensor> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let offsets: Vec<usize> = serde_json::from_value(v["data_offsets"].clone()).unwrap();
            let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).unwrap();
            (k.clone(), v["dtype"].as_str().unwrap().to_string(), shape, data[offsets[0]..offsets[1]].to_vec())
        })
        .collect();
    edit(&mut tensors);
    let metadata: HashMap<String, String> = serde_json::from_value(header["__metadata__"].clone()).unwrap();
    let words = |raw: &[u8]| -> Vec<[u8; 4]> { raw.chunks_exact(4).map(|b| b.try_into().unwrap()).collect() };
    let values: Vec<(String, Vec<usize>, Values)> = tensors
        .into_iter()
        .map(|(name, dtype, shape, raw)| {
            let values = match dtype.as_str() {
                "F32" => Values::F32(words(&raw).into_iter().map(f32::from_le_bytes).collect()),
                "F16" => Values::F16(raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
                "BF16" => Values::BF16(raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()),
                "U32" => Values::U32(words(&raw).into_iter().map(u32::from_le_bytes).collect()),
                other => panic!("rewrite does not write {other}"),
            };
            (name, shape, values)
        })
        .collect();
    let refs: Vec<(&str, &[usize], TensorData<'_>)> = values
        .iter()
        .map(|(name, shape, values)| {
            let data = match values {
                Values::F32(v) => TensorData::F32(v),
                Values::F16(v) => TensorData::F16(v),
                Values::BF16(v) => TensorData::BF16(v),
                Values::U32(v) => TensorData::U32(v),
            };
            (name.as_str(), shape.as_slice(), data)
        })
        .collect();
    write_tensors(&refs, Some(metadata)).unwrap()
}

/// Overwrites bytes of tensor `name`'s data at byte `at`.
fn poke(bytes: &[u8], name: &str, at: usize, value: &[u8]) -> Vec<u8> {
    let (header, mut data) = split(bytes);
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + at;
    data[start..start + value.len()].copy_from_slice(value);
    join(&header, &data)
}

fn small_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| small_packed(TableDtype::F32).to_safetensors(TableDtype::F32).expect("write"))
}

fn error_of(bytes: &[u8]) -> String {
    match PackedModel::from_safetensors("bad.safetensors", bytes) {
        Ok(_) => panic!("the file should have been refused"),
        Err(e) => {
            let text = e.to_string();
            if std::env::var_os("LUTLAB_PRINT_ERRORS").is_some() {
                eprintln!("{text}");
            }
            assert!(text.contains("bad.safetensors"), "the error names the file: {text}");
            text
        }
    }
}

#[test]
fn the_valid_small_file_loads() {
    let model = PackedModel::from_safetensors("small.safetensors", small_file()).expect("valid");
    assert_eq!(model, small_packed(TableDtype::F32));
    let (header, _) = split(small_file());
    let meta = &header["__metadata__"];
    assert_eq!(meta["format"], FORMAT_NAME);
    // No packed head: version 1, which older lutlabs read.
    assert_eq!(meta["format_version"], FORMAT_VERSION_WITHOUT_HEAD.to_string());
    let layers: Value = serde_json::from_str(meta["layers"].as_str().unwrap()).unwrap();
    assert_eq!(layers["h.1.attn.c_proj"], serde_json::json!({"rows": 40, "cols": 40, "bits": 2, "channels_per_table": 8}));
    let config: Value = serde_json::from_str(meta["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    // Layers without outliers store no sparse tensors.
    assert!(header.get("h.0.attn.c_attn.sparse_values").is_none());
    assert_eq!(header["h.1.mlp.c_fc.sparse_row_idx"]["dtype"], "U32");
    assert_eq!(header["h.0.attn.c_attn.qweight"]["shape"], serde_json::json!([6, 120]));
}

#[test]
fn a_file_of_another_format_is_named() {
    let err = error_of(&set_metadata(small_file(), "format", "lutlab-fisher"));
    assert!(err.contains("`lutlab-fisher`") && err.contains("not a lutlab packed model file"), "{err}");
    let err = error_of(&edit_header(small_file(), |h| {
        h.as_object_mut().unwrap().remove("__metadata__");
    }));
    assert!(err.contains("no `__metadata__`"), "{err}");
}

#[test]
fn a_newer_version_is_refused_with_its_number() {
    let err = error_of(&set_metadata(small_file(), "format_version", "7"));
    assert!(err.contains("format version 7 is not supported") && err.contains("versions 1 to 6"), "{err}");
    let err = error_of(&set_metadata(small_file(), "format_version", "one"));
    assert!(err.contains("`one`"), "{err}");
}

#[test]
fn a_truncated_file_is_reported() {
    let bytes = small_file();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = PackedModel::from_safetensors("bad.safetensors", &bytes[..cut]).unwrap_err();
        assert!(matches!(err, LoadError::BadSafetensors { .. }), "cut {cut}: {err}");
    }
    let err = error_of(&bytes[..bytes.len() - 1]);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_missing_table_is_named() {
    let err = error_of(&rewrite(small_file(), |t| t.retain(|(n, ..)| n != "h.0.attn.c_proj.lut")));
    assert!(err.contains("`h.0.attn.c_proj.lut` is missing"), "{err}");
    let err = error_of(&rewrite(small_file(), |t| t.retain(|(n, ..)| n != "h.1.mlp.c_fc.sparse_values")));
    assert!(err.contains("`h.1.mlp.c_fc.sparse_values` is missing"), "{err}");
}

#[test]
fn a_wrong_dtype_is_named() {
    let err = error_of(&edit_header(small_file(), |h| h["h.0.mlp.c_fc.qweight"]["dtype"] = "F32".into()));
    assert!(err.contains("`h.0.mlp.c_fc.qweight` has dtype F32, expected U32"), "{err}");
    let err = error_of(&edit_header(small_file(), |h| h["h.0.mlp.c_fc.lut"]["dtype"] = "I32".into()));
    assert!(err.contains("`h.0.mlp.c_fc.lut` has dtype I32, expected F16 or F32"), "{err}");
    let err = error_of(&edit_header(small_file(), |h| h["wte.weight"]["dtype"] = "I32".into()));
    assert!(err.contains("`wte.weight` has dtype I32, expected F32"), "{err}");
}

#[test]
fn a_shape_that_disagrees_with_the_metadata_is_named() {
    // Same bytes, transposed shape: [6, 64] → [64, 6].
    let err = error_of(&edit_header(small_file(), |h| h["h.0.mlp.c_fc.qweight"]["shape"] = serde_json::json!([64, 6])));
    assert!(err.contains("`h.0.mlp.c_fc.qweight` has shape [64, 6], expected [6, 64]") && err.contains("bits 3"), "{err}");
    // Metadata that disagrees with the config.
    let layers = r#"{"h.0.attn.c_attn":{"rows":40,"cols":64,"bits":3,"channels_per_table":1}}"#;
    let err = error_of(&set_metadata(small_file(), "layers", layers));
    assert!(err.contains("`h.0.attn.c_attn` is 40x64, the config's is 40x120"), "{err}");
    let layers = r#"{"h.0.attn.c_attn":{"rows":40,"cols":120,"bits":3,"channels_per_table":1,"zero":0}}"#;
    let err = error_of(&set_metadata(small_file(), "layers", layers));
    assert!(err.contains("metadata `layers`") && err.contains("zero"), "{err}");
}

#[test]
fn a_sparse_row_index_out_of_range_is_named() {
    let err = error_of(&poke(small_file(), "h.1.mlp.c_fc.sparse_row_idx", 0, &999u32.to_le_bytes()));
    assert!(err.contains("h.1.mlp.c_fc") && err.contains("sparse row index 999 is outside the 40 input rows"), "{err}");
    let err = error_of(&poke(small_file(), "h.1.mlp.c_fc.sparse_col_ptr", 4, &u32::MAX.to_le_bytes()));
    assert!(err.contains("compressed-sparse-column"), "{err}");
}

#[test]
fn an_unknown_tensor_is_named() {
    let extra = |name: &str| {
        let name = name.to_string();
        rewrite(small_file(), move |t| t.push((name, "F32".into(), vec![2], vec![0; 8])))
    };
    let err = error_of(&extra("lm_head.bias"));
    assert!(err.contains("`lm_head.bias`") && err.contains("unknown"), "{err}");
    let err = error_of(&extra("h.1.attn.c_attn.scales"));
    assert!(err.contains("`h.1.attn.c_attn.scales`") && err.contains("does not list"), "{err}");
    let err = error_of(&extra("h.9.ln_1.weight"));
    assert!(err.contains("`h.9.ln_1.weight`") && err.contains("unknown"), "{err}");
}

#[test]
fn a_non_finite_table_entry_is_named() {
    let err = error_of(&poke(small_file(), "h.0.attn.c_proj.lut", 2 * 4, &f32::NAN.to_le_bytes()));
    assert!(err.contains("`h.0.attn.c_proj`") && err.contains("table entry 2 is not finite"), "{err}");
    let err = error_of(&poke(small_file(), "wpe.weight", 12, &f32::INFINITY.to_le_bytes()));
    assert!(err.contains("`wpe.weight`") && err.contains("first at flat index 3"), "{err}");
}

#[test]
fn a_missing_dense_tensor_is_named() {
    let err = error_of(&rewrite(small_file(), |t| t.retain(|(n, ..)| n != "ln_f.weight")));
    assert!(err.contains("`ln_f.weight` is missing"), "{err}");
    let err = error_of(&rewrite(small_file(), |t| t.retain(|(n, ..)| n != "h.0.attn.c_attn.bias")));
    assert!(err.contains("`h.0.attn.c_attn.bias` is missing"), "{err}");
    // A weight both packed and dense.
    let err = error_of(&rewrite(small_file(), |t| {
        t.push(("h.0.attn.c_attn.weight".into(), "F32".into(), vec![40, 120], vec![0; 40 * 120 * 4]))
    }));
    assert!(err.contains("both dense and packed"), "{err}");
}

#[test]
fn non_zero_padding_codes_are_named() {
    // h.0.attn.c_attn: 40 rows at 3 bits, 2 blocks of 3 words; the last word of block 1 holds
    // rows 53..63 (and part of 52), all padding. Word 5 of column 0 is qweight[5 * 120].
    let err = error_of(&poke(small_file(), "h.0.attn.c_attn.qweight", 5 * 120 * 4, &(1u32 << 31).to_le_bytes()));
    assert!(err.contains("`h.0.attn.c_attn`") && err.contains("padding row 63 holds non-zero codes"), "{err}");
}

#[test]
fn a_bad_config_or_settings_is_named() {
    let err = error_of(&set_metadata(small_file(), "config", r#"{"model_type":"bert","n_layer":2,"n_head":2,"n_embd":40}"#));
    assert!(err.contains("bert") && err.contains("metadata `config`"), "{err}");
    // Another family's config: the GPT-2 tensors are not its tensors.
    let llama = r#"{"model_type":"llama","num_hidden_layers":2,"num_attention_heads":2,"hidden_size":40,"intermediate_size":64,"max_position_embeddings":16,"vocab_size":24}"#;
    let err = error_of(&set_metadata(small_file(), "config", llama));
    assert!(err.contains("unknown") || err.contains("not a linear layer"), "{err}");
    let err = error_of(&set_metadata(small_file(), "config", r#"{"n_layer":2,"n_head":2,"n_embd":99999999999}"#));
    assert!(err.contains("n_embd") && err.contains("99999999999"), "{err}");
    let err = error_of(&set_metadata(small_file(), "config", r#"{"n_layer":1000000,"n_head":2,"n_embd":40}"#));
    assert!(err.contains("1000000 blocks"), "{err}");
    let err = error_of(&set_metadata(small_file(), "settings", "not json"));
    assert!(err.contains("settings metadata is not JSON"), "{err}");
}

// ---- fuzz ----

/// Mutates `valid` in one of several ways (byte flips in the header or data, truncation, header
/// JSON edits of shapes, offsets, dtypes and metadata numbers, duplicated ranges, special values
/// in the data); returns the mutated bytes and the kind of mutation.
fn mutate(valid: &[u8], rng: &mut SplitMix64) -> (Vec<u8>, &'static str) {
    let mut pick = |n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let mut bytes = valid.to_vec();
    match pick(8) {
        0 => {
            for _ in 0..1 + pick(4) {
                let at = pick(bytes.len());
                bytes[at] ^= 1 + pick(255) as u8;
            }
            (bytes, "flip anywhere")
        }
        1 => {
            for _ in 0..1 + pick(3) {
                let at = pick(header_len + 8);
                bytes[at] ^= 1 + pick(255) as u8;
            }
            (bytes, "flip in header")
        }
        2 => {
            bytes.truncate(pick(bytes.len()));
            (bytes, "truncate")
        }
        3 | 4 => {
            let (mut header, data) = split(valid);
            let names: Vec<String> = header.as_object().unwrap().keys().cloned().collect();
            let name = names[pick(names.len())].clone();
            let numbers = [0u64, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 96, 97, 255, 256, 65535, u32::MAX as u64, u64::MAX / 3, u64::MAX];
            let number = numbers[pick(numbers.len())];
            if name == "__metadata__" {
                let keys = ["layers", "config", "format_version", "settings", "format"];
                let key = keys[pick(keys.len())];
                let text = header["__metadata__"][key].as_str().unwrap_or("").to_string();
                // Replace one run of digits by another number, or cut the text.
                let digits: Vec<usize> = text.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
                let edited = if digits.is_empty() || pick(4) == 0 {
                    text[..text.len() - pick(text.len() + 1).min(text.len())].to_string()
                } else {
                    let start = digits[pick(digits.len())];
                    let end = text[start..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |e| start + e);
                    format!("{}{number}{}", &text[..start], &text[end..])
                };
                header["__metadata__"][key] = Value::String(edited);
            } else {
                let entry = &mut header[&name];
                match pick(4) {
                    0 => {
                        let dims = entry["shape"].as_array().map_or(0, Vec::len);
                        if dims > 0 {
                            entry["shape"][pick(dims)] = number.into();
                        } else {
                            entry["shape"] = serde_json::json!([number]);
                        }
                    }
                    1 => {
                        let shape: Vec<u64> = entry["shape"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
                        entry["shape"] = shape.into_iter().rev().collect::<Vec<_>>().into();
                    }
                    2 => entry["data_offsets"][pick(2)] = number.into(),
                    _ => {
                        let dtypes = ["F32", "F16", "BF16", "U32", "I32", "U8", "F64", "BOOL"];
                        entry["dtype"] = dtypes[pick(dtypes.len())].into();
                    }
                }
            }
            (join(&header, &data), "header JSON edit")
        }
        5 => {
            let start = pick(bytes.len());
            let len = 1 + pick(64.min(bytes.len() - start));
            let copy = bytes[start..start + len].to_vec();
            let at = pick(bytes.len() + 1);
            bytes.splice(at..at, copy);
            (bytes, "duplicate bytes")
        }
        6 => {
            // Special values at aligned places inside one tensor: codes, indices, floats.
            let (header, _) = split(valid);
            let tensors: Vec<(usize, usize)> = header
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(_, v)| (v["data_offsets"][0].as_u64().unwrap() as usize, v["data_offsets"][1].as_u64().unwrap() as usize))
                .filter(|(a, b)| b - a >= 4)
                .collect();
            let values = [0u32, 1, 32, 63, 64, 0xFFFF_FFFF, 0x7FC0_0000, 0x7F80_0000, 0x4B80_0000, 1 << 31];
            for _ in 0..1 + pick(3) {
                let (start, end) = tensors[pick(tensors.len())];
                let at = 8 + header_len + start + 4 * pick((end - start) / 4);
                bytes[at..at + 4].copy_from_slice(&values[pick(values.len())].to_le_bytes());
            }
            (bytes, "special values in a tensor")
        }
        _ => {
            let new_len = [0u64, 1, header_len as u64 - 1, header_len as u64 + 1, valid.len() as u64, u64::MAX][pick(6)];
            bytes[..8].copy_from_slice(&new_len.to_le_bytes());
            (bytes, "header length")
        }
    }
}

#[test]
fn fuzzed_files_give_errors_never_panics() {
    let valid = small_file();
    // LUTLAB_FUZZ_CASES runs more (or fewer) cases by hand.
    let cases: u64 = std::env::var("LUTLAB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let (mut ok, mut deep) = (0, 0);
    let mut by_kind: std::collections::BTreeMap<&str, [u32; 3]> = Default::default();
    for seed in 0..cases {
        let mut rng = SplitMix64::new(seed);
        let (bytes, kind) = mutate(valid, &mut rng);
        let result = std::panic::catch_unwind(|| PackedModel::from_safetensors("fuzz.safetensors", &bytes));
        match result {
            Err(_) => panic!("from_safetensors panicked on fuzz seed {seed} ({kind})"),
            Ok(Ok(_)) => { ok += 1; by_kind.entry(kind).or_default()[0] += 1 }
            // Refused past the safetensors structure: the format's own checks ran.
            Ok(Err(LoadError::BadSafetensors { .. })) => by_kind.entry(kind).or_default()[1] += 1,
            Ok(Err(_)) => { deep += 1; by_kind.entry(kind).or_default()[2] += 1 }
        }
    }
    // Most mutations must be caught; many of them by the format's checks, not only the container's.
    // (Accepted mutations are harmless ones: a float that stays finite, a digit of the settings.)
    // [accepted, refused by the container, refused by the format] by kind of mutation:
    assert!(ok < cases / 4, "{ok} of {cases} mutated files were accepted: {by_kind:?}");
    assert!(deep > cases / 8, "only {deep} of {cases} mutated files reached the format's own checks: {by_kind:?}");
}
