//! Uniform quantizers against two independent references written from the formats'
//! specifications, on real weights of the shipped model: scripts/uniform_reference.py (numpy)
//! and scripts/uniform_reference_torch.py (PyTorch on the device; FP8 rounded by PyTorch's own
//! float8 dtypes). Integer codes, scales and zero points bit for bit; minifloat codes, scales and
//! dequantized values exactly. Plus the format tables' headline numbers and every bad-input
//! message.

use lutlab_core::LoadError;
use lutlab_core::quant::uniform::{
    FloatVariant, MiniFloat, NumberFormat, ScaleStats, ScaleType, UniformGranularity, UniformSettings, quantize_uniform,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The numpy reference's fixture.
const NUMPY: &str = "uniform_reference.json";
/// The PyTorch reference's fixture.
const TORCH: &str = "uniform_reference_torch.json";

fn fixture(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

struct Input {
    rows: usize,
    cols: usize,
    weights: Vec<f32>,
}

fn inputs(doc: &Value) -> BTreeMap<String, Input> {
    let mut out = BTreeMap::new();
    for (key, v) in doc["inputs"].as_object().expect("inputs") {
        let bytes = hex_bytes(v["f16_hex"].as_str().expect("f16_hex"));
        let weights: Vec<f32> =
            bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let rows = v["rows"].as_u64().expect("rows") as usize;
        let cols = v["cols"].as_u64().expect("cols") as usize;
        assert_eq!(weights.len(), rows * cols);
        out.insert(key.clone(), Input { rows, cols, weights });
    }
    out
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn settings(case: &Value) -> UniformSettings {
    let s = |k: &str| case[k].as_str().unwrap_or_else(|| panic!("{k}"));
    UniformSettings {
        bits: case["bits"].as_u64().expect("bits") as u32,
        format: s("format").parse().expect("format"),
        symmetric: case["symmetric"].as_bool().expect("symmetric"),
        granularity: s("granularity").parse().expect("granularity"),
        scale_stats: s("scale_stats").parse().expect("scale_stats"),
        scale_type: s("scale_type").parse().expect("scale_type"),
        integer_zero_point: false,
    }
}

fn describe(case: &Value) -> String {
    format!(
        "{} {}-bit {} {} {} {} on {}",
        case["format"].as_str().unwrap_or("?"),
        case["bits"],
        if case["symmetric"].as_bool() == Some(true) { "sym" } else { "asym" },
        case["granularity"].as_str().unwrap_or("?"),
        case["scale_stats"].as_str().unwrap_or("?"),
        case["scale_type"].as_str().unwrap_or("?"),
        case["input"].as_str().unwrap_or("?"),
    )
}

/// Compares every case of one kind in fixture `name` and reports all mismatches at once.
fn check_cases(name: &str, float_formats: bool) -> usize {
    let doc = fixture(name);
    let inputs = inputs(&doc);
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in doc["cases"].as_array().expect("cases") {
        if (case["format"] != "int") != float_formats {
            continue;
        }
        let what = format!("{name}: {}", describe(case));
        let input = &inputs[case["input"].as_str().expect("input")];
        let settings = settings(case);
        let result = match quantize_uniform(&input.weights, input.rows, input.cols, &settings) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        checked += 1;
        let codes = hex_bytes(case["codes_hex"].as_str().expect("codes"));
        let bad_codes = codes.iter().zip(&result.codes).filter(|(a, b)| a != b).count();
        if bad_codes > 0 {
            failures.push(format!("{what}: {bad_codes} of {} codes differ", codes.len()));
        }
        let scales = f32s(&case["scales"]);
        let bad_scales = scales.iter().zip(&result.scales).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        if scales.len() != result.scales.len() || bad_scales > 0 {
            failures.push(format!(
                "{what}: {bad_scales} of {} scales differ (first: reference {:?}, lutlab {:?})",
                scales.len(),
                scales.first(),
                result.scales.first()
            ));
        }
        let zps = f32s(&case["zero_points"]);
        let bad_zps = zps.iter().zip(&result.zero_points).filter(|(a, b)| a != b).count();
        if zps.len() != result.zero_points.len() || bad_zps > 0 {
            failures.push(format!("{what}: {bad_zps} of {} zero points differ", zps.len()));
        }
        let deq = result.dequantize();
        if let Some(hex) = case["values_f32_hex"].as_str() {
            let values: Vec<f32> =
                hex_bytes(hex).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let bad = values.iter().zip(&deq).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            if bad > 0 {
                failures.push(format!("{what}: {bad} of {} dequantized values differ", values.len()));
            }
        }
        if let NumberFormat::Float(format) = settings.format {
            // Every dequantized weight is scale x a representable value of the format.
            let representable: Vec<f32> = format.values().into_iter().flatten().collect();
            for (i, &d) in deq.iter().enumerate() {
                let s = result.scales[result.group_of(i / input.cols, i % input.cols)];
                if !representable.iter().any(|&v| v * s == d) {
                    failures.push(format!("{what}: value {d} at {i} is not scale x a {format} value"));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    checked
}

#[test]
fn integer_codes_scales_and_zero_points_equal_the_reference_bit_for_bit() {
    let n = check_cases(NUMPY, false);
    assert!(n >= 48, "only {n} integer cases");
}

#[test]
fn minifloat_codes_scales_and_values_equal_the_reference_exactly() {
    let n = check_cases(NUMPY, true);
    assert!(n >= 14, "only {n} minifloat cases");
}

#[test]
fn integer_codes_scales_and_zero_points_equal_the_torch_reference_bit_for_bit() {
    let n = check_cases(TORCH, false);
    assert!(n >= 48, "only {n} integer cases");
}

#[test]
fn minifloat_codes_scales_and_values_equal_the_torch_reference_exactly() {
    let n = check_cases(TORCH, true);
    assert!(n >= 14, "only {n} minifloat cases");
    // The FP8 cases were rounded by PyTorch's own float8 dtypes (and its tables checked).
    let doc = fixture(TORCH);
    let checked: Vec<&str> = doc["torch"]["fp8_casts_checked"]
        .as_array()
        .expect("fp8_casts_checked")
        .iter()
        .map(|v| v.as_str().expect("format"))
        .collect();
    for format in ["e4m3", "e5m2", "fnuz_e4m3", "fnuz_e5m2"] {
        assert!(checked.contains(&format), "{format} not rounded by a torch cast: {checked:?}");
    }
}

#[test]
fn both_references_cover_the_same_cases() {
    let key = |c: &Value| {
        ["input", "format", "bits", "symmetric", "granularity", "scale_stats", "scale_type"]
            .iter()
            .map(|k| c[*k].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cases =
        |name: &str| -> Vec<String> { fixture(name)["cases"].as_array().expect("cases").iter().map(key).collect() };
    assert_eq!(cases(NUMPY), cases(TORCH));
    assert_eq!(fixture(NUMPY)["inputs"], fixture(TORCH)["inputs"]);
}

#[test]
fn reference_inputs_are_the_shipped_model_weights() {
    let doc = fixture(NUMPY);
    let path = repo_root().join("models/gpt2-tiny-wikitext/model.safetensors");
    let bytes = std::fs::read(&path).expect("shipped model");
    let checkpoint =
        lutlab_core::Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).expect("ckpt");
    let inputs = inputs(&doc);
    for (key, v) in doc["inputs"].as_object().expect("inputs") {
        let tensor = &checkpoint.read_any(v["tensor"].as_str().expect("tensor")).expect("tensor in model");
        let (r0, c0) = (v["row0"].as_u64().expect("row0") as usize, v["col0"].as_u64().expect("col0") as usize);
        let input = &inputs[key];
        let full_cols = tensor.shape[1];
        for r in 0..input.rows {
            for c in 0..input.cols {
                assert_eq!(tensor.data[(r0 + r) * full_cols + c0 + c], input.weights[r * input.cols + c], "{key}");
            }
        }
    }
}

#[test]
fn format_tables_match_the_specifications() {
    let max = |f: MiniFloat| f.max_value();
    assert_eq!(max(MiniFloat::E4M3), 448.0);
    assert_eq!(max(MiniFloat::E4M3_FNUZ), 240.0);
    assert_eq!(max(MiniFloat::E5M2), 57344.0);
    assert_eq!(max(MiniFloat::E5M2_FNUZ), 57344.0);
    assert_eq!(max(MiniFloat::E2M1), 6.0);
    assert_eq!(max(MiniFloat::E3M2), 28.0);
    assert_eq!(max(MiniFloat::E2M3), 7.5);
    assert_eq!(MiniFloat::E2M1.magnitudes(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
    // Smallest subnormals.
    assert_eq!(MiniFloat::E4M3.min_subnormal(), 2f32.powi(-9));
    assert_eq!(MiniFloat::E4M3_FNUZ.min_subnormal(), 2f32.powi(-10));
    assert_eq!(MiniFloat::E5M2.min_subnormal(), 2f32.powi(-16));
    assert_eq!(MiniFloat::E5M2_FNUZ.min_subnormal(), 2f32.powi(-17));
    assert_eq!(MiniFloat::E3M2.min_subnormal(), 0.0625);
    assert_eq!(MiniFloat::E2M3.min_subnormal(), 0.125);
    // Special values: OCP E4M3 has two NaNs (0x7F, 0xFF) and 0x7E = 448; E5M2 has Inf/NaN at
    // exponent 31 (0x7C = Inf); FNUZ has one NaN at 0x80 and 0x7F finite.
    let e4m3 = MiniFloat::E4M3.values();
    assert_eq!((e4m3[0x7F], e4m3[0xFF], e4m3[0x7E], e4m3[0xFE]), (None, None, Some(448.0), Some(-448.0)));
    assert_eq!(e4m3.iter().filter(|v| v.is_none()).count(), 2);
    let e5m2 = MiniFloat::E5M2.values();
    assert_eq!((e5m2[0x7B], e5m2[0x7C], e5m2[0xFC]), (Some(57344.0), None, None));
    assert_eq!(e5m2.iter().filter(|v| v.is_none()).count(), 8);
    let fnuz = MiniFloat::E4M3_FNUZ.values();
    assert_eq!(
        (fnuz[0x80], fnuz[0x7F], fnuz[0xFF], fnuz[0x08]),
        (None, Some(240.0), Some(-240.0), Some(2f32.powi(-7)))
    );
    assert_eq!(fnuz.iter().filter(|v| v.is_none()).count(), 1);
    assert_eq!(MiniFloat::E5M2_FNUZ.values().iter().filter(|v| v.is_none()).count(), 1);
    // MX FP6/FP4: every code finite, -0 included.
    for f in [MiniFloat::E2M1, MiniFloat::E3M2, MiniFloat::E2M3] {
        assert!(f.values().iter().all(Option::is_some), "{f}");
    }
    // OCP E4M3 1.0 is 0x38, FNUZ 1.0 is 0x40 (bias 7 vs 8).
    assert_eq!(e4m3[0x38], Some(1.0));
    assert_eq!(fnuz[0x40], Some(1.0));
    assert_eq!(MiniFloat::E4M3.bias(), 7);
    assert_eq!(MiniFloat::E4M3_FNUZ.bias(), 8);
    assert_eq!(MiniFloat::E5M2.bias(), 15);
    assert_eq!(MiniFloat::E5M2_FNUZ.bias(), 16);
}

#[test]
fn formats_parse_in_every_spelling() {
    let p = |s: &str| s.parse::<NumberFormat>().unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(p("int"), NumberFormat::Int);
    assert_eq!(p("e4m3"), NumberFormat::Float(MiniFloat::E4M3));
    assert_eq!(p("float_ocp_e4m3"), NumberFormat::Float(MiniFloat::E4M3));
    assert_eq!(p("e4m3fn"), NumberFormat::Float(MiniFloat::E4M3));
    assert_eq!(p("fnuz_e4m3"), NumberFormat::Float(MiniFloat::E4M3_FNUZ));
    assert_eq!(p("float_fnuz_e5m2"), NumberFormat::Float(MiniFloat::E5M2_FNUZ));
    assert_eq!(p("e5m2fnuz"), NumberFormat::Float(MiniFloat::E5M2_FNUZ));
    assert_eq!(p("e2m1"), NumberFormat::Float(MiniFloat::E2M1));
    assert_eq!(
        p("e3m4"),
        NumberFormat::Float(MiniFloat { exponent_bits: 3, mantissa_bits: 4, variant: FloatVariant::Ocp })
    );
    for f in [MiniFloat::E4M3, MiniFloat::E4M3_FNUZ, MiniFloat::E5M2, MiniFloat::E5M2_FNUZ, MiniFloat::E2M1] {
        assert_eq!(p(&f.to_string()), NumberFormat::Float(f));
    }
    assert_eq!("group".parse::<UniformGranularity>().ok(), Some(UniformGranularity::InputGroup(128)));
    assert_eq!("group:64".parse::<UniformGranularity>().ok(), Some(UniformGranularity::InputGroup(64)));
    assert_eq!("channel-group:4".parse::<UniformGranularity>().ok(), Some(UniformGranularity::OutputGroup(4)));
    assert_eq!("percentile:99.9".parse::<ScaleStats>().ok(), Some(ScaleStats::Percentile(99.9)));
    assert_eq!("po2".parse::<ScaleType>().ok(), Some(ScaleType::PowerOfTwo));
}

fn random_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

#[test]
fn a_uniform_result_is_a_lut_with_the_representable_values_as_tables() {
    let (rows, cols) = (64, 12);
    let w = random_weights(rows * cols, 7);
    for (format, bits, symmetric) in
        [(NumberFormat::Int, 3, true), (NumberFormat::Int, 4, false), (NumberFormat::Float(MiniFloat::E2M1), 4, true)]
    {
        for granularity in [UniformGranularity::Tensor, UniformGranularity::Channel, UniformGranularity::OutputGroup(4)]
        {
            let settings = UniformSettings {
                bits,
                format,
                symmetric,
                granularity,
                scale_stats: ScaleStats::Stats,
                scale_type: ScaleType::Float,
                integer_zero_point: false,
            };
            let r = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
            let lut = r.to_lut().expect("LutMatrix");
            lut.validate("uniform").expect("valid");
            assert_eq!(lut.dequantize(), r.dequantize());
            // Tables are scale x (q - zp) (or scale x float value).
            let levels = 1usize << bits;
            for (g, (&s, &z)) in r.scales.iter().zip(&r.zero_points).enumerate() {
                let table = &r.tables[g * levels..(g + 1) * levels];
                match format {
                    NumberFormat::Int => {
                        let qmin = if symmetric { -(1i32 << (bits - 1)) } else { 0 };
                        for (code, &t) in table.iter().enumerate() {
                            assert_eq!(t, ((code as i32 + qmin) as f32 - z) * s);
                        }
                    }
                    NumberFormat::Float(f) => {
                        for (code, &t) in table.iter().enumerate() {
                            assert_eq!(t, f.decode(code as u32).unwrap_or(0.0) * s);
                        }
                    }
                }
            }
            // Round to nearest: no table entry of the weight's group is closer than its own.
            let deq = r.dequantize();
            for (i, (&x, &d)) in w.iter().zip(&deq).enumerate() {
                let g = r.group_of(i / cols, i % cols);
                let table = &r.tables[g * levels..(g + 1) * levels];
                let best = table.iter().map(|&t| (x - t).abs()).fold(f32::INFINITY, f32::min);
                assert!((x - d).abs() <= best * (1.0 + 1e-6) + 1e-12, "{format} {granularity}: {x} -> {d}");
            }
        }
    }
    // Brevitas-style input-row groups: the shared grid with a scale and zero point per (row
    // group, column), which the packed format holds for groups of a multiple of 32 rows.
    let settings = UniformSettings { granularity: UniformGranularity::InputGroup(16), ..UniformSettings::default() };
    let r = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
    assert_eq!(r.scales.len(), rows / 16 * cols);
    let err = r.to_lut().expect_err("groups of 16 rows have no packed form");
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    for asym in [false, true] {
        let settings = UniformSettings { granularity: UniformGranularity::InputGroup(32), symmetric: !asym, ..UniformSettings::default() };
        let r = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
        let lut = r.to_lut().expect("groups of 32 rows are a LUT with input-group scales");
        assert_eq!(lut.input_groups.as_ref().unwrap().zeros.is_some(), asym);
        assert_eq!(lut.dequantize(), r.dequantize(), "the LUT form decodes to the same values, bit for bit");
    }
    // ... except when one group spans every row.
    let settings = UniformSettings { granularity: UniformGranularity::InputGroup(rows), ..UniformSettings::default() };
    let whole = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
    let channel = UniformSettings { granularity: UniformGranularity::Channel, ..UniformSettings::default() };
    assert_eq!(
        whole.to_lut().expect("lut"),
        quantize_uniform(&w, rows, cols, &channel).expect("q").to_lut().expect("lut")
    );
}

#[test]
fn minifloat_rounding_is_nearest_even_and_saturating() {
    // Scale 1 (absmax = max value), so y = w.
    let settings = UniformSettings {
        bits: 4,
        format: NumberFormat::Float(MiniFloat::E2M1),
        symmetric: true,
        granularity: UniformGranularity::Tensor,
        scale_stats: ScaleStats::Stats,
        scale_type: ScaleType::Float,
        integer_zero_point: false,
    };
    let w = [6.0, 0.25, 0.75, 2.5, 3.5, 5.0, -5.0, -0.1, 1.25, -6.0];
    let r = quantize_uniform(&w, 1, w.len(), &settings).expect("quantize");
    assert_eq!(r.scales, vec![1.0]);
    assert_eq!(r.dequantize(), vec![6.0, 0.0, 1.0, 2.0, 4.0, 4.0, -4.0, 0.0, 1.0, -6.0]);
    // Zero is +0 (code 0), never the -0 pattern.
    assert_eq!(r.codes[7], 0);
    // FP8 E4M3 with scale 1 (the median |w| is 448, so 460 is clipped): saturates at 448,
    // ties go to the even mantissa, half the smallest subnormal goes to +0.
    let settings = UniformSettings {
        bits: 8,
        format: NumberFormat::Float(MiniFloat::E4M3),
        scale_stats: ScaleStats::Percentile(50.0),
        ..settings
    };
    let w = [448.0, 460.0, 1.0 + 1.0 / 16.0, 1.0 + 3.0 / 16.0, -2f32.powi(-10), 448.0, -448.0, 448.0];
    let r = quantize_uniform(&w, 1, w.len(), &settings).expect("quantize");
    assert_eq!(r.scales, vec![1.0]);
    assert_eq!(r.dequantize(), vec![448.0, 448.0, 1.0, 1.25, 0.0, 448.0, -448.0, 448.0]);
    assert_eq!(r.codes, vec![0x7E, 0x7E, 0x38, 0x3A, 0x00, 0x7E, 0xFE, 0x7E]);
}

fn setting_error(rows: usize, cols: usize, settings: UniformSettings) -> String {
    let w = vec![0.01f32; rows * cols];
    match quantize_uniform(&w, rows, cols, &settings) {
        Ok(_) => panic!("{settings:?} should be refused"),
        Err(e @ LoadError::InvalidSetting(_)) => e.to_string(),
        Err(e) => panic!("wrong error kind: {e}"),
    }
}

#[test]
fn bad_settings_get_clear_messages() {
    let base = UniformSettings::default();
    let e4m3 = NumberFormat::Float(MiniFloat::E4M3);
    let msg = setting_error(128, 4, UniformSettings { bits: 4, format: e4m3, symmetric: true, ..base });
    assert!(msg.contains("e4m3") && msg.contains("does not fit 4-bit") && msg.contains("e2m1"), "{msg}");
    let msg = setting_error(
        128,
        4,
        UniformSettings { bits: 6, format: NumberFormat::Float(MiniFloat::E2M1), symmetric: true, ..base },
    );
    assert!(msg.contains("e2m1") && msg.contains("e3m2"), "{msg}");
    for bits in [0, 1, 9, 16] {
        let msg = setting_error(128, 4, UniformSettings { bits, ..base });
        assert!(msg.contains("2 to 8 bits"), "{msg}");
    }
    let msg = setting_error(256, 4, UniformSettings { granularity: UniformGranularity::InputGroup(100), ..base });
    assert!(msg.contains("group size 100 does not divide the 256 input rows"), "{msg}");
    let msg = setting_error(256, 4, UniformSettings { granularity: UniformGranularity::InputGroup(0), ..base });
    assert!(msg.contains("at least 1"), "{msg}");
    let msg = setting_error(256, 4, UniformSettings { granularity: UniformGranularity::OutputGroup(3), ..base });
    assert!(msg.contains("group size 3 does not divide the 4 output channels"), "{msg}");
    for p in [0.0, -1.0, 100.5, f64::NAN] {
        let msg = setting_error(128, 4, UniformSettings { scale_stats: ScaleStats::Percentile(p), ..base });
        assert!(msg.contains("outside (0, 100]"), "{p}: {msg}");
    }
    let msg = setting_error(128, 4, UniformSettings { bits: 8, format: e4m3, symmetric: false, ..base });
    assert!(msg.contains("no zero point") && msg.contains("symmetric"), "{msg}");
    let msg = setting_error(0, 4, base);
    assert!(msg.contains("empty"), "{msg}");

    // Shape and value errors.
    let settings = UniformSettings { granularity: UniformGranularity::Channel, ..base };
    let err = quantize_uniform(&[0.0; 10], 4, 4, &settings).expect_err("wrong length");
    assert!(err.to_string().contains("10 weights given for a 4x4 matrix"), "{err}");
    let mut w = vec![0.0f32; 16];
    w[5] = f32::NAN;
    let err = quantize_uniform(&w, 4, 4, &settings).expect_err("NaN");
    assert!(err.to_string().contains("row 1, column 1"), "{err}");

    // Parsing.
    for bad in ["e4m", "float", "int4", "e0m3", "e9m9", "x4m3"] {
        let err = bad.parse::<NumberFormat>().expect_err(bad);
        assert!(matches!(err, LoadError::InvalidSetting(_)), "{bad}: {err}");
    }
    for bad in ["percentile:0", "percentile:101", "percentile:x", "max"] {
        let err = bad.parse::<ScaleStats>().expect_err(bad);
        assert!(matches!(err, LoadError::InvalidSetting(_)), "{bad}: {err}");
    }
    assert!("percentile:0".parse::<ScaleStats>().map_err(|e| e.to_string()).unwrap_err().contains("(0, 100]"));
    assert!("log".parse::<ScaleType>().is_err());
    assert!("group:x".parse::<UniformGranularity>().is_err());
    assert!("rows".parse::<UniformGranularity>().is_err());
}

#[test]
fn degenerate_groups_do_not_break_anything() {
    // An all-zero channel, a constant negative channel, a single huge weight.
    let (rows, cols) = (8, 3);
    let mut w = vec![0.0f32; rows * cols];
    for r in 0..rows {
        w[r * cols + 1] = -0.5;
        w[r * cols + 2] = if r == 3 { 1e30 } else { 1e-3 };
    }
    for stats in [ScaleStats::Stats, ScaleStats::Percentile(50.0), ScaleStats::Mse, ScaleStats::Hqo] {
        for symmetric in [true, false] {
            for scale_type in [ScaleType::Float, ScaleType::PowerOfTwo] {
                let settings = UniformSettings {
                    bits: 3,
                    format: NumberFormat::Int,
                    symmetric,
                    granularity: UniformGranularity::Channel,
                    scale_stats: stats,
                    scale_type,
                    integer_zero_point: false,
                };
                let r = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
                assert!(r.scales.iter().all(|s| s.is_finite() && *s > 0.0), "{stats} {symmetric}: {:?}", r.scales);
                assert!(r.dequantize().iter().all(|v| v.is_finite()));
                // The all-zero channel stays exactly zero.
                assert!((0..rows).all(|r_| r.dequantize()[r_ * cols] == 0.0), "{stats} {symmetric}");
            }
        }
    }
}

#[test]
fn integer_zero_points_are_gptqs_quantizer() {
    // GPTQ's quantizer: scale = (max(w, 0) − min(w, 0)) / maxq, zero = round(−min / scale),
    // q = clamp(round(w / scale) + zero, 0, maxq), value = scale · (q − zero).
    let (rows, cols) = (40, 6);
    let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.3) * (1.0 + (i % cols) as f32)).collect();
    let settings = UniformSettings { bits: 3, symmetric: false, granularity: UniformGranularity::Channel, integer_zero_point: true, ..UniformSettings::default() };
    let r = quantize_uniform(&w, rows, cols, &settings).expect("quantize");
    assert!(r.zero_points.iter().all(|z| z.fract() == 0.0), "{:?}", r.zero_points);
    let deq = r.dequantize();
    for c in 0..cols {
        let column: Vec<f32> = (0..rows).map(|r| w[r * cols + c]).collect();
        let (low, high) = (column.iter().fold(0f32, |m, &v| m.min(v)), column.iter().fold(0f32, |m, &v| m.max(v)));
        let scale = (high - low) / 7.0;
        let zero = (-low / scale).round_ties_even();
        for (r, &x) in column.iter().enumerate() {
            let q = ((x / scale).round_ties_even() + zero).clamp(0.0, 7.0);
            let want = scale * (q - zero);
            assert!((deq[r * cols + c] - want).abs() <= 1e-6 * scale, "column {c} row {r}: {} vs {want}", deq[r * cols + c]);
        }
    }
}
