//! Input (activation) quantization, issue 19 item 1: the CPU reference
//! (`lutlab_core::quant::inputs`) against an independent numpy implementation
//! (`scripts/input_quant_reference.py`), the GPU path (`lutlab_model::input_quant`) against the
//! CPU reference on raw inputs and through whole models of every family, and static calibration
//! on the GPU against the CPU's.

use burn::tensor::{Tensor, TensorData};
use lutlab_core::quant::head::HEAD;
use lutlab_core::quant::inputs::{fake_quantize, InputCalibration, InputGranularity, InputMultipliers, InputParams, InputQuantSettings, InputQuantization, InputScaling};
use lutlab_core::quant::{ScaleStats, ScaleType};
use lutlab_core::{reference, ModelWeights, NoProgress};
use lutlab_model::burn;
use lutlab_model::{calibrate_inputs, calibrate_inputs_windows, ActivationSettings, Decoder, InputQuantizer, Windows};
use lutlab_tests::*;
use std::collections::BTreeMap;

fn settings_of(case: &serde_json::Value) -> InputQuantSettings {
    let s = |k: &str| case[k].as_str().unwrap().to_string();
    let scaling: InputScaling = s("scaling").parse().unwrap();
    InputQuantSettings {
        bits: case["bits"].as_u64().unwrap() as u32,
        format: s("format").parse().unwrap(),
        symmetric: case["symmetric"].as_bool().unwrap(),
        granularity: InputGranularity::parse(&s("granularity"), case["group_size"].as_u64().unwrap() as usize).unwrap(),
        scale_stats: s("method").parse().unwrap(),
        scale_type: s("scale_type").parse().unwrap(),
        scaling,
        integer_zero_point: case["integer_zero_point"].as_bool().unwrap(),
        quantize_head: false,
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn the_cpu_reference_matches_numpy_exactly() {
    let fixture = fixture_json("input_quant_reference.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let settings = settings_of(case);
        settings.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let n_in = case["n_in"].as_u64().unwrap() as usize;
        let fixed = match settings.scaling {
            InputScaling::Static => {
                let mut calibration = InputCalibration::default();
                for w in case["windows"].as_array().unwrap() {
                    calibration.add_window(&settings, "layer", &floats(w), None).unwrap();
                }
                let p = calibration.finish(&settings)["layer"];
                let want = floats(&case["params"]);
                assert_eq!((p.scale, p.zero_point), (want[0], want[1]), "{name}: calibrated parameters");
                Some(p)
            }
            InputScaling::NoScale => Some(InputParams { scale: 1.0, zero_point: 0.0 }),
            InputScaling::Dynamic => None,
        };
        let mut x = floats(&case["x"]);
        let original = x.clone();
        fake_quantize(&mut x, n_in, &settings, fixed).unwrap();
        let want = floats(&case["out"]);
        for (i, (g, w)) in x.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}: value {i} ({}) → {g}, numpy {w}", original[i]);
        }
        assert_ne!(x, original, "{name}: quantization changed nothing");
    }
}

/// GPU against CPU on the same inputs: an element may differ (the GPU's division is within 2.5
/// ulp, so a value on a rounding boundary can land one step away); measured on lavapipe: none
/// (0 of 24,576 per setting). The bound allows 1 in 1,000 and nothing else.
const MAX_FLIPPED: f64 = 1e-3;

#[test]
fn gpu_fake_quantization_matches_the_cpu_reference() {
    let device = gpu();
    let (b, t, c) = (2usize, 48usize, 128usize);
    // Channels of very different ranges plus outliers: what transformers' activations look like.
    let x: Vec<f32> = (0..b * t * c)
        .map(|i| {
            let (ch, k) = (i % c, i as f32);
            let base = (k * 0.618_034).fract() * 2.0 - 1.0;
            base * (1.0 + (ch % 7) as f32) * if ch == 3 { 30.0 } else { 1.0 }
        })
        .collect();
    let dynamic = InputQuantSettings { scaling: InputScaling::Dynamic, ..Default::default() };
    let cases = [
        ("int8 asym per-row", dynamic.clone_with(|s| s.granularity = InputGranularity::Row), None),
        ("int8 sym per-tensor po2", dynamic.clone_with(|s| { s.symmetric = true; s.scale_type = ScaleType::PowerOfTwo }), None),
        ("int4 asym groups of 32 integer zp", dynamic.clone_with(|s| { s.bits = 4; s.granularity = InputGranularity::Group(32); s.integer_zero_point = true }), None),
        ("int6 asym per-row mse", dynamic.clone_with(|s| { s.bits = 6; s.granularity = InputGranularity::Row; s.scale_stats = ScaleStats::Mse }), None),
        ("e4m3 per-row", dynamic.clone_with(|s| { s.format = "e4m3".parse().unwrap(); s.symmetric = true; s.granularity = InputGranularity::Row }), None),
        ("e2m1 groups of 16 mse po2", dynamic.clone_with(|s| { s.bits = 4; s.format = "e2m1".parse().unwrap(); s.symmetric = true; s.granularity = InputGranularity::Group(16); s.scale_stats = ScaleStats::Mse; s.scale_type = ScaleType::PowerOfTwo }), None),
        ("fnuz e5m2 no scale", dynamic.clone_with(|s| { s.format = "fnuz_e5m2".parse().unwrap(); s.symmetric = true; s.scaling = InputScaling::NoScale }), Some(InputParams { scale: 1.0, zero_point: 0.0 })),
        ("int8 asym static", dynamic.clone_with(|s| s.scaling = InputScaling::Static), Some(InputParams { scale: 0.11, zero_point: 131.5 })),
    ];
    for (name, settings, fixed) in cases {
        let mut want = Vec::new();
        for sequence in x.chunks(t * c) {
            let mut s = sequence.to_vec();
            fake_quantize(&mut s, c, &settings, fixed).unwrap();
            want.extend(s);
        }
        let quantizer = InputQuantizer::new(settings, fixed).unwrap();
        let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [b, t, c]), &device);
        let got: Vec<f32> = quantizer.forward(input).into_data().try_to_vec::<f32>().unwrap();
        let flipped = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        let rate = flipped as f64 / want.len() as f64;
        println!("{name}: {flipped} of {} values differ from the CPU reference", want.len());
        assert!(rate <= MAX_FLIPPED, "{name}: {flipped} of {} values differ", want.len());
        assert_ne!(got, x, "{name}: quantization changed nothing");
    }
}

trait CloneWith {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self;
}

impl CloneWith for InputQuantSettings {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self {
        let mut s = *self;
        f(&mut s);
        s
    }
}

fn families() -> Vec<(&'static str, ModelWeights)> {
    vec![
        ("gpt2", shipped_model().weights),
        ("opt", load_weights(&repo("models/opt-tiny-wikitext"))),
        ("llama", load_weights(&repo("models/llama-tiny-wikitext"))),
    ]
}

fn tokens(weights: &ModelWeights, n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) % weights.config.vocab_size as u32).collect()
}

/// Logits through input-quantized models, GPU against CPU: `max |Δ| / max |logit|`. Measured on
/// lavapipe: 0 for both settings in every family (the grids absorb the GPU's float noise). The
/// settings are chosen for that: with float asymmetric scales, rounding is so discontinuous that
/// nudging GPT-2's or Llama's embeddings by 1e-7 on the CPU alone moves logits by up to 2e-2 of
/// the largest, so there the rules are checked value by value on real activations (below).
const LOGITS_REL: f32 = 1e-4;

#[test]
fn input_quantized_models_match_the_cpu_reference_in_every_family() {
    let device = gpu();
    for (family, weights) in families() {
        let seqlen = 24.min(weights.config.n_positions);
        let windows: Vec<Vec<u32>> = (0..3).map(|s| tokens(&weights, seqlen, s)).collect();
        let window_refs: Vec<&[u32]> = windows.iter().map(|w| w.as_slice()).collect();

        let dynamic = InputQuantSettings {
            scaling: InputScaling::Dynamic,
            granularity: InputGranularity::Row,
            quantize_head: true,
            symmetric: true,
            scale_type: ScaleType::PowerOfTwo,
            ..Default::default()
        };
        let static_settings = InputQuantSettings { quantize_head: true, ..Default::default() };
        // Static scales: the GPU calibration against the CPU's, then both run with the CPU's.
        let none = InputMultipliers::new();
        let multipliers = layer_multipliers(&weights);
        let model = Decoder::new(&weights, &device);
        let text: Vec<u32> = windows.concat();
        let starts: Vec<usize> = (0..windows.len()).map(|w| w * seqlen).collect();
        let windows_of = Windows { tokens: &text, starts: &starts, seqlen, batch: 2 };
        let calibrate = |settings: &InputQuantSettings, m: &InputMultipliers| {
            let cpu = reference::calibrate_inputs(&weights, &window_refs, settings, m).unwrap();
            let gpu = pollster::block_on(calibrate_inputs_windows(&model, windows_of, settings, m, &mut NoProgress)).unwrap();
            compare_params(family, &cpu, &gpu);
            cpu
        };
        let cpu_params = calibrate(&static_settings, &none);
        assert!(cpu_params.contains_key(HEAD), "{family}: the head's input is calibrated");
        // Layerwise smoothing's multipliers: each layer's calibration sees its own scaled input.
        // (Symmetric po2 scales: with float asymmetric ones the scaled inputs land on rounding
        // boundaries where the GPU's division tips them, see LOGITS_REL.)
        let sym_po2 = InputQuantSettings { symmetric: true, scale_type: ScaleType::PowerOfTwo, ..static_settings };
        let plain_params = calibrate(&sym_po2, &none);
        let scaled_params = calibrate(&sym_po2, &multipliers);
        let first = &weights.config.linear_names()[0].0;
        assert_ne!(scaled_params[first], plain_params[first], "{family}: multipliers change what {first} calibrates on");

        for (what, q) in [
            ("int8 sym dynamic per-row po2", InputQuantization::new(dynamic, BTreeMap::new())),
            ("int8 asym static per-tensor", InputQuantization::new(static_settings, cpu_params.clone())),
            (
                "int8 sym dynamic per-row po2, layer multipliers",
                InputQuantization { multipliers: multipliers.clone(), ..InputQuantization::new(dynamic, BTreeMap::new()) },
            ),
            (
                "int8 sym static per-tensor po2, layer multipliers",
                InputQuantization { settings: sym_po2, statics: scaled_params.clone(), multipliers: multipliers.clone() },
            ),
        ] {
            let mut model = Decoder::new(&weights, &device);
            model.quantize_inputs(q.clone()).unwrap();
            let float_logits = reference::forward(&weights, &windows[0]).unwrap();
            let want = reference::forward_with_inputs(&weights, &windows[0], Some(&q)).unwrap();
            let got: Vec<f32> = model.forward(model.tokens(&[&windows[0]])).unwrap().into_data().try_to_vec::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            let moved = float_logits.iter().zip(&want).fold(0f32, |m, (f, w)| m.max((f - w).abs()));
            println!("{family} {what}: GPU vs CPU {:.2e} of the largest logit; quantization moved logits by {:.2e}", diff / scale, moved / scale);
            assert!(diff / scale <= LOGITS_REL, "{family} {what}: GPU logits differ by {diff} (largest logit {scale})");
            assert!(moved > 10.0 * diff, "{family} {what}: quantizing inputs moved logits by only {moved}, not clearly more than the GPU/CPU difference {diff}");
        }
    }
}

/// A positive multiplier per input channel of every linear, spread over [1/4, 4] (what layerwise
/// smoothing's `1/s` looks like), different for every layer.
fn layer_multipliers(weights: &ModelWeights) -> InputMultipliers {
    let spread = |layer: usize, j: usize| ((j * 7919 + layer * 104_729) % 1000) as f32 / 999.0;
    weights
        .config
        .linear_names()
        .into_iter()
        .enumerate()
        .map(|(l, (name, spec))| (name, (0..spec.n_in).map(|j| 4f32.powf(2.0 * spread(l, j) - 1.0)).collect()))
        .collect()
}

fn compare_params(family: &str, cpu: &BTreeMap<String, InputParams>, gpu: &BTreeMap<String, InputParams>) {
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>(), "{family}: calibrated layers");
    for (name, c) in cpu {
        let g = gpu[name];
        let rel = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-6);
        // The 99.999th percentile of a window is its extreme: GPU and CPU activations agree to ~1e-6.
        assert!(rel(g.scale, c.scale) <= 1e-4, "{family} {name}: scale {} vs CPU {}", g.scale, c.scale);
        assert!((g.zero_point - c.zero_point).abs() <= 1e-2, "{family} {name}: zero point {} vs CPU {}", g.zero_point, c.zero_point);
    }
}

#[test]
fn bad_input_quantization_settings_are_refused_by_name() {
    let weights = shipped_model().weights;
    let mut model = Decoder::new(&weights, &gpu());
    let groups = InputQuantSettings { scaling: InputScaling::Dynamic, granularity: InputGranularity::Group(48), ..Default::default() };
    let q = InputQuantization::new(groups, BTreeMap::new());
    let err = model.quantize_inputs(q).unwrap_err().to_string();
    assert!(err.contains("does not divide") || err.contains("--input-group-size"), "{err}");
    // Static scales without a calibration name the first layer missing one.
    let q = InputQuantization::new(InputQuantSettings::default(), BTreeMap::new());
    let err = model.quantize_inputs(q).unwrap_err().to_string();
    assert!(err.contains("no calibrated scale for `h.0.attn.c_attn`"), "{err}");
    // Calibration text shorter than a window.
    let act = ActivationSettings { nsamples: 2, seqlen: 64, seed: 0, batch: 1 };
    let err = pollster::block_on(calibrate_inputs(&model, &[1, 2, 3], act, &InputQuantSettings::default(), &InputMultipliers::new(), &mut NoProgress)).unwrap_err().to_string();
    assert!(err.contains("calibration text") || err.contains("tokens"), "{err}");
}

/// Every linear input of the first two blocks of every family, as the GPU computes them.
struct Collect(Vec<Tensor<3>>);

impl lutlab_model::BlockVisitor for Collect {
    fn inputs(&mut self, index: usize, inputs: Vec<Tensor<3>>) -> lutlab_model::Result<()> {
        if index < 2 {
            self.0.extend(inputs);
        }
        Ok(())
    }
}

#[test]
fn gpu_fake_quantization_of_real_activations_matches_the_cpu_reference() {
    let device = gpu();
    let dynamic = InputQuantSettings { scaling: InputScaling::Dynamic, granularity: InputGranularity::Row, symmetric: true, ..Default::default() };
    let settings = [
        ("int8 sym per-row", dynamic),
        ("int8 sym per-row po2", InputQuantSettings { scale_type: ScaleType::PowerOfTwo, ..dynamic }),
        ("int8 asym per-row", InputQuantSettings { symmetric: false, ..dynamic }),
        ("e4m3 per-row po2", InputQuantSettings { format: "e4m3".parse().unwrap(), scale_type: ScaleType::PowerOfTwo, ..dynamic }),
        ("e4m3 per-row", InputQuantSettings { format: "e4m3".parse().unwrap(), ..dynamic }),
    ];
    for (family, weights) in families() {
        let model = Decoder::new(&weights, &device);
        let window = tokens(&weights, 24.min(weights.config.n_positions), 0);
        let mut states = [(model.context(window.len()), model.embed(model.tokens(&[&window])))];
        let mut seen = Collect(Vec::new());
        model.run_blocks(&mut states, Some(&mut seen)).unwrap();
        for (name, s) in settings {
            let (mut flipped, mut total) = (0, 0);
            for input in &seen.0 {
                let [_, t, c] = input.dims();
                let x: Vec<f32> = input.clone().into_data().try_to_vec::<f32>().unwrap();
                let mut want = x.clone();
                fake_quantize(&mut want, c, &s, None).unwrap();
                let got: Vec<f32> = InputQuantizer::new(s, None).unwrap().forward(input.clone()).into_data().try_to_vec::<f32>().unwrap();
                flipped += got.iter().zip(&want).filter(|(g, w)| g != w).count();
                total += t * c;
            }
            println!("{family} {name}: {flipped} of {total} real activations differ from the CPU reference");
            assert!(flipped as f64 <= MAX_FLIPPED * total as f64, "{family} {name}: {flipped} of {total} differ");
        }
    }
}
