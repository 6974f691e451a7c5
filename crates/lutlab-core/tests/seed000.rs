//! Seed 000's channel scales (`lutlab_core::quant::transforms`) against the independent numpy
//! reference `scripts/seed000_reference.py` on real tensors of the shipped model, two of them
//! weighted by the PyTorch Fisher diagonal of `tests/fixtures/fisher_reference.safetensors`.
//! The reference's sign rule uses the exact weighted 1-D k-means; lutlab uses its exact DP
//! (`kmeans::optimal_1d`), the script its own O(k n²) DP.

use lutlab_core::ModelFiles;
use lutlab_core::quant::transforms::{apply_scales, channel_scales, column_stds};
use std::path::PathBuf;

fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// Scales agree to 1 f32 ulp (std summed in f64 on both sides, rounded once to f32); signs exactly
/// (the fixture's smallest relative gap between `|c_min|` and `c_max` is ≈ 5e-4).
const SCALE_REL: f32 = 2.0 * f32::EPSILON;

fn fisher_tensor(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(repo_path("tests/fixtures/fisher_reference.safetensors")).expect("Fisher fixture");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("Fisher fixture parses");
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn channel_scales_match_the_numpy_reference_on_the_shipped_model() {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/seed000_scales.json")).expect("seed000 fixture");
    let fx: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let model = ModelFiles::read_dir(&repo_path("models/gpt2-tiny-wikitext")).and_then(|f| f.load()).expect("shipped model");
    let weights: std::collections::BTreeMap<String, &lutlab_core::weights::LinearWeights> = model.weights.linears().collect();
    let layers = fx["layers"].as_array().expect("layers");
    assert!(layers.len() >= 3);
    for layer in layers {
        let name = layer["name"].as_str().unwrap();
        let (rows, cols) = (layer["rows"].as_u64().unwrap() as usize, layer["cols"].as_u64().unwrap() as usize);
        let bits = layer["bits"].as_u64().unwrap() as u32;
        let w = &weights[name].weight;
        assert_eq!(w.shape, vec![rows, cols], "{name}");
        let fisher = layer["fisher"].as_str().map(|spec| fisher_tensor(spec.rsplit(':').next().unwrap()));
        let want: Vec<f32> = layer["scales"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = channel_scales(&w.data, rows, cols, fisher.as_deref(), bits).unwrap();
        assert_eq!(got.len(), cols);
        let mut worst = 0f32;
        for (c, (g, e)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.signum(), e.signum(), "{name} column {c}: sign {g} vs reference {e}");
            let rel = (g - e).abs() / e.abs();
            worst = worst.max(rel);
            assert!(rel <= SCALE_REL, "{name} column {c}: {g} vs reference {e}");
        }
        let negative = got.iter().filter(|s| **s < 0.0).count();
        eprintln!("{name}: {negative}/{cols} negative scales, worst relative difference {worst:e}");
        assert!(negative > 0 && negative < cols, "{name}: both signs occur on real weights");

        // After scaling every column has std 1 and its heavier tail on the positive side.
        let mut scaled = w.data.clone();
        apply_scales(&mut scaled, cols, &got);
        for (c, std) in column_stds(&scaled, rows, cols).iter().enumerate() {
            assert!((std - 1.0).abs() < 1e-5, "{name} column {c}: std {std}");
        }
    }
}

#[test]
fn fisher_weights_decide_some_signs() {
    // On h.0.attn.c_attn the weighted and the uniform sign rules disagree on some columns, so
    // the fixture's weighted case really tests the weighting.
    let model = ModelFiles::read_dir(&repo_path("models/gpt2-tiny-wikitext")).and_then(|f| f.load()).expect("shipped model");
    let w = &model.weights.blocks[0].linears[0].weight;
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let fisher = fisher_tensor("transformer.h.0.attn.c_attn.weight");
    let weighted = channel_scales(&w.data, rows, cols, Some(&fisher), 4).unwrap();
    let uniform = channel_scales(&w.data, rows, cols, None, 4).unwrap();
    let differ = weighted.iter().zip(&uniform).filter(|(a, b)| a.signum() != b.signum()).count();
    eprintln!("h.0.attn.c_attn: {differ}/{cols} signs change with Fisher weighting");
    assert!(differ > 0);
    for (a, b) in weighted.iter().zip(&uniform) {
        assert_eq!(a.abs(), b.abs(), "the magnitude is the unweighted std either way");
    }
}

#[test]
fn gpt2_sized_layers_take_seconds() {
    // GPT-2 small's c_fc [768, 3072] and mlp.c_proj [3072, 768], Fisher-like weights: one exact
    // 16-cluster k-means per column (columns in parallel on native targets).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for (rows, cols) in [(768, 3072), (3072, 768)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| ((0..4).map(|_| next()).sum::<f64>() - 2.0) as f32 * 0.1).collect();
        let f: Vec<f32> = (0..rows * cols).map(|_| (-(next() + 1e-12).ln()).powi(3) as f32).collect();
        let start = std::time::Instant::now();
        let s = channel_scales(&w, rows, cols, Some(&f), 4).unwrap();
        let secs = start.elapsed().as_secs_f64();
        eprintln!("[{rows}, {cols}]: {secs:.2} s for {cols} channel scales");
        assert_eq!(s.len(), cols);
        assert!(secs < 120.0);
    }
}
