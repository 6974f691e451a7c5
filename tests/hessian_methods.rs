//! The Hessian rounding methods against an independent numpy port written from the GPTQ and
//! QuIP papers (`scripts/hessian_reference.py` → `tests/fixtures/hessian_reference.json`), QuIP's
//! GPTQ ≡ LDLQ equivalence on random layers, and a finite-grid counterexample.

use lutlab_core::quant::hessian::{proxy_loss, round_with_hessian, Feedback, Grid, RoundingSettings, Square};
use lutlab_core::quant::uniform::{NumberFormat, ScaleStats, ScaleType, UniformGranularity, UniformSettings};
use lutlab_tests::fixture_json;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

fn asym_int(bits: u32) -> UniformSettings {
    UniformSettings {
        bits,
        format: NumberFormat::Int,
        symmetric: false,
        granularity: UniformGranularity::Channel,
        scale_stats: ScaleStats::Stats,
        scale_type: ScaleType::Float,
        integer_zero_point: false,
    }
}

fn grid_of(desc: &Value) -> Grid {
    match desc["kind"].as_str().unwrap() {
        "tables" => Grid::Tables {
            levels: desc["levels"].as_u64().unwrap() as usize,
            channels_per_table: desc["channels_per_table"].as_u64().unwrap() as usize,
            tables: f32s(&desc["tables"]),
        },
        _ => Grid::InputGroups {
            size: desc["size"].as_u64().unwrap() as usize,
            settings: asym_int(desc["bits"].as_u64().unwrap() as u32),
            static_groups: desc["static"].as_bool().unwrap(),
        },
    }
}

fn settings_of(name: &str, s: &Value) -> RoundingSettings {
    let feedback = if name.starts_with("ldlbal") {
        Feedback::LdlbalAdmm
    } else if name.starts_with("ldlq") {
        Feedback::Ldlq
    } else if name == "greedy" {
        Feedback::Nearest
    } else {
        Feedback::Gptq
    };
    RoundingSettings {
        feedback,
        act_order: s["act_order"].as_bool().unwrap_or(false),
        greedy_passes: s["passes"].as_u64().unwrap_or(0) as usize,
        // Smaller than the layer, so the lazy batch updates are exercised (numpy has none).
        blocksize: 7,
        percdamp: s["percdamp"].as_f64().unwrap(),
    }
}

#[test]
fn every_method_matches_the_numpy_port() {
    let fixture = fixture_json("hessian_reference.json");
    let (rows, cols) = (fixture["n_in"].as_u64().unwrap() as usize, fixture["n_out"].as_u64().unwrap() as usize);
    let weights = f32s(&fixture["weights"]);
    let h = Square { n: rows, data: floats(&fixture["hessian"]) };
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let settings = settings_of(name, &case["settings"]);
        let rounded = round_with_hessian(&weights, rows, cols, &h, &grid_of(&case["grid"]), None, &settings).expect(name);
        let want = f32s(&case["values"]);
        // Both sides compute in f64 and pick table entries, so the values agree exactly unless
        // a target lands within f64 rounding of a midpoint; f32 storage of the tables is the
        // only rounding left.
        let differing = rounded.values.iter().zip(&want).filter(|(a, b)| (*a - *b).abs() > 1e-6).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} weights differ from the numpy port", want.len());
        let proxy_want = case["proxy"].as_f64().unwrap();
        let rel = (rounded.proxy_loss - proxy_want).abs() / proxy_want;
        assert!(rel < 1e-9, "{name}: proxy loss {} vs numpy {proxy_want} (relative {rel:e})", rounded.proxy_loss);
    }
}

#[test]
fn the_finite_grid_counterexample_makes_gptq_worse_than_nearest() {
    let fixture = fixture_json("hessian_reference.json");
    let c = &fixture["counterexample"];
    let weights = f32s(&c["weights"]);
    let h = Square { n: 4, data: floats(&c["hessian"]) };
    let grid = Grid::Tables { levels: 2, channels_per_table: 1, tables: vec![0.0, 1.0] };
    let gptq = RoundingSettings { percdamp: 0.0, ..RoundingSettings::default() };
    let nearest = RoundingSettings { feedback: Feedback::Nearest, ..gptq };
    let g = round_with_hessian(&weights, 4, 1, &h, &grid, None, &gptq).unwrap();
    let n = round_with_hessian(&weights, 4, 1, &h, &grid, None, &nearest).unwrap();
    assert_eq!(g.values, f32s(&c["gptq_values"]));
    let (want_g, want_n) = (c["gptq_proxy"].as_f64().unwrap(), c["nearest_proxy"].as_f64().unwrap());
    assert!((g.proxy_loss - want_g).abs() < 1e-6 * want_g && (n.proxy_loss - want_n).abs() < 1e-6 * want_n);
    assert!(g.proxy_loss > 5.0 * n.proxy_loss, "GPTQ {} vs nearest {}", g.proxy_loss, n.proxy_loss);
}

fn random_layer(rows: usize, cols: usize, tokens: usize, seed: u64) -> (Vec<f32>, Square) {
    lutlab_tests::random_layer_with_hessian(rows, cols, tokens, seed, None)
}

#[test]
fn gptq_and_ldlq_give_the_same_codes_on_random_layers() {
    for (seed, act_order) in [(1, false), (2, true), (3, false)] {
        let (rows, cols) = (160, 48);
        let (weights, h) = random_layer(rows, cols, 400, seed);
        let uniform = lutlab_core::quant::quantize_uniform(&weights, rows, cols, &asym_int(3)).unwrap();
        let grid = Grid::Tables { levels: 8, channels_per_table: 1, tables: uniform.tables.clone() };
        let gptq = RoundingSettings { act_order, blocksize: 32, ..RoundingSettings::default() };
        let ldlq = RoundingSettings { feedback: Feedback::Ldlq, ..gptq };
        let a = round_with_hessian(&weights, rows, cols, &h, &grid, None, &gptq).unwrap();
        let b = round_with_hessian(&weights, rows, cols, &h, &grid, None, &ldlq).unwrap();
        // QuIP's Theorem 6 makes them equal in exact arithmetic; in f64 the two factorizations
        // differ by ~1e-13 relative, so a target within that of a midpoint could flip: allow one
        // code in 10⁴ (none flipped when this was written).
        let differing = a.codes.iter().zip(&b.codes).filter(|(x, y)| x != y).count();
        assert!(differing * 10_000 <= a.codes.len(), "seed {seed}: {differing} codes differ");
        assert!((a.proxy_loss - b.proxy_loss).abs() <= 1e-6 * a.proxy_loss);
        // And both beat round-to-nearest on the loss they minimise.
        let nearest = proxy_loss(&weights, &uniform.dequantize(), rows, cols, &h);
        assert!(a.proxy_loss < 0.8 * nearest, "GPTQ {} vs nearest {nearest}", a.proxy_loss);
    }
}

#[test]
fn bad_hessians_and_settings_are_named() {
    let (weights, mut h) = random_layer(8, 4, 20, 9);
    let grid = Grid::Tables { levels: 2, channels_per_table: 4, tables: vec![-0.1, 0.1] };
    let s = RoundingSettings::default();
    let small = Square::zeros(4);
    let err = round_with_hessian(&weights, 8, 4, &small, &grid, None, &s).unwrap_err().to_string();
    assert!(err.contains("4x4") && err.contains("8 inputs"), "{err}");
    h.data[3] = f64::NAN;
    let err = round_with_hessian(&weights, 8, 4, &h, &grid, None, &s).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
    let mut indefinite = Square::identity(8);
    indefinite.data[1] = 5.0;
    indefinite.data[8] = 5.0;
    let err = round_with_hessian(&weights, 8, 4, &indefinite, &grid, None, &RoundingSettings { percdamp: 0.0, ..s }).unwrap_err().to_string();
    assert!(err.contains("not positive definite"), "{err}");
    let groups = Grid::InputGroups { size: 4, settings: asym_int(2), static_groups: false };
    let err = round_with_hessian(&weights, 8, 4, &Square::identity(8), &groups, None, &RoundingSettings { act_order: true, ..s }).unwrap_err().to_string();
    assert!(err.contains("static groups"), "{err}");
}

#[test]
fn gptq_with_input_groups_packs_to_exactly_the_values_it_rounded_to() {
    // GPTQ's groupsize 32 on a 96-input layer: 3 groups per output channel, fitted as reached
    // (dynamic) or beforehand (static, with act-order), symmetric and asymmetric grids. The
    // packed form (shared grid, a scale and zero point per group) must decode to exactly the
    // values the rounding chose, so evaluating the packed file is evaluating GPTQ's result.
    use lutlab_core::checkpoint::HostTensor;
    use lutlab_core::quant::model::quantize_layer;
    use lutlab_core::quant::{Calibration, HessianGrid, Method, PackedLinear};
    use lutlab_core::weights::LinearWeights;
    let (rows, cols) = (96, 20);
    let (weights, h) = random_layer(rows, cols, 300, 11);
    let linear = LinearWeights { weight: HostTensor::new(vec![rows, cols], weights), bias: HostTensor::new(vec![cols], vec![0.0; cols]) };
    let lookup = |_: &str| Some(&h);
    let calibration = Calibration { hessians: Some(&lookup), ..Calibration::default() };
    for (symmetric, static_groups, act_order) in [(false, false, false), (true, false, false), (false, true, true)] {
        let settings = UniformSettings { symmetric, granularity: UniformGranularity::InputGroup(32), ..asym_int(3) };
        let method = Method::Hessian {
            rounding: RoundingSettings { act_order, blocksize: 16, ..RoundingSettings::default() },
            grid: HessianGrid::Uniform { settings, static_groups },
            incoherence: None,
        };
        let layer = quantize_layer("h.0.mlp.c_fc", &linear, &method, calibration, 32).unwrap();
        let lut = layer.lut.as_ref().expect("groups of 32 rows pack");
        let groups = lut.input_groups.as_ref().expect("input-group scales");
        assert_eq!((groups.size, groups.scales.len()), (32, 3 * cols));
        assert_eq!(groups.zeros.is_none(), symmetric, "zero points are stored only for asymmetric grids");
        assert_eq!(lut.dequantize(), layer.dequantized, "symmetric {symmetric}, static {static_groups}");
        assert_eq!(PackedLinear::from_lut(lut).unwrap().effective_weights(), layer.dequantized);
    }
    // Groups that are not a multiple of 32 rows still quantize, but have no packed form.
    let settings = UniformSettings { granularity: UniformGranularity::InputGroup(16), ..asym_int(3) };
    let method = Method::Hessian { rounding: RoundingSettings::default(), grid: HessianGrid::Uniform { settings, static_groups: false }, incoherence: None };
    assert!(quantize_layer("h.0.mlp.c_fc", &linear, &method, calibration, 32).unwrap().lut.is_none());
}

#[test]
fn incoherence_processing_matches_the_numpy_port() {
    // QuIP's rescale + projection + LDLQ-RG on the qfn b grid + undo, against the numpy port,
    // which builds the Kronecker transforms densely (np.kron) from the same factors.
    use lutlab_core::quant::incoherence::{preprocess, RmsGrid, Rotation};
    let fixture = fixture_json("hessian_reference.json");
    let (rows, cols) = (fixture["n_in"].as_u64().unwrap() as usize, fixture["n_out"].as_u64().unwrap() as usize);
    let weights = f32s(&fixture["weights"]);
    let h = Square { n: rows, data: floats(&fixture["hessian"]) };
    let case = &fixture["incoherence"];
    let rotation = |r: &Value| Rotation {
        a: r["a"].as_u64().unwrap() as usize,
        b: r["b"].as_u64().unwrap() as usize,
        factor_a: f32s(&r["factor_a"]),
        factor_b: f32s(&r["factor_b"]),
        perm: r["perm"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect(),
    };
    let rotations = (rotation(&case["rotations"]["in"]), rotation(&case["rotations"]["out"]));
    let p = preprocess(&weights, rows, cols, &h, true, Some(rotations)).unwrap();
    // The processed weights: the same up to the f32 rounding both sides apply last.
    let rotated = f32s(&case["rotated_weights"]);
    let worst = p.weights.iter().zip(&rotated).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-6, "processed weights differ by {worst}");
    let input_scale = p.incoherence.input_scale.as_ref().unwrap();
    assert!(input_scale.iter().zip(f32s(&case["input_scale"])).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs()));
    let grid = Grid::Tables { levels: 4, channels_per_table: 1, tables: RmsGrid::new(&p.weights, rows, cols, 2, true).tables() };
    let ldlq_rg = RoundingSettings { feedback: Feedback::Ldlq, act_order: true, greedy_passes: 1, blocksize: 7, percdamp: 0.01 };
    let r = round_with_hessian(&p.weights, rows, cols, &p.hessian, &grid, None, &ldlq_rg).unwrap();
    let want = f32s(&case["rotated_values"]);
    let differing = r.values.iter().zip(&want).filter(|(a, b)| (*a - *b).abs() > 1e-6).count();
    assert_eq!(differing, 0, "{differing} rotated codes differ from the numpy port");
    // Undone: the layer's weights, and its proxy loss against the original W and H.
    let values = p.incoherence.effective_weights(&r.values, rows, cols);
    let want = f32s(&case["values"]);
    let worst = values.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "undone weights differ by {worst}");
    let loss = proxy_loss(&weights, &values, rows, cols, &h);
    let want_loss = case["proxy"].as_f64().unwrap();
    assert!((loss - want_loss).abs() < 1e-5 * want_loss, "proxy loss {loss} vs numpy {want_loss}");
}
