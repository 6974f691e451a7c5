//! The whole-model path with k-means on the GPU (`quantize_model_gpu`, what `lutlab quantize
//! --gpu` and the page run) against the CPU path (`quantize_model`) on the shipped model: the
//! same layers, the same dense-and-sparse outliers (chosen on the host, identically), and
//! per-layer errors within 1% (the two Lloyd runs may settle in different fixed points after an
//! exact tie, see kmeans_gpu.rs; measured agreement is far tighter).

use lutlab_core::quant::{quantize_model, QuantizeRequest};
use lutlab_core::{ModelFiles, NoProgress};
use lutlab_gpu::quantize_model_gpu;
use std::path::PathBuf;

#[test]
fn gpu_kmeans_model_matches_the_cpu_path() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/gpt2-tiny-wikitext");
    let weights = ModelFiles::read_dir(&dir).and_then(|f| f.load()).unwrap().weights;
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter (lavapipe in CI)");
    let request = QuantizeRequest { bits: 2, granularity: "channel".into(), outlier_percent: Some(0.45), ..QuantizeRequest::default() };
    let method = request.method(&weights, false).unwrap();
    let cpu = quantize_model(&weights, &method, Some(0..1), Default::default(), &mut NoProgress).unwrap();
    let on_gpu = pollster::block_on(quantize_model_gpu(&gpu, &weights, &method, Some(0..1), Default::default(), &mut NoProgress)).unwrap();
    assert_eq!(cpu.layers.len(), 4);
    let mut worst = 0f64;
    for (c, g) in cpu.layers.iter().zip(&on_gpu.layers) {
        assert_eq!(c.name, g.name);
        assert_eq!(c.outliers, g.outliers, "{}: the same outliers", c.name);
        let (cl, gl) = (c.lut.as_ref().unwrap(), g.lut.as_ref().unwrap());
        assert_eq!(cl.outliers.row_ptr, gl.outliers.row_ptr, "{}: outlier positions", c.name);
        assert_eq!(cl.outliers.col_idx, gl.outliers.col_idx, "{}: outlier positions", c.name);
        let rel = (g.mse / c.mse - 1.0).abs();
        worst = worst.max(rel);
        assert!(rel < 1e-2, "{}: GPU mse {} vs CPU {}", c.name, g.mse, c.mse);
    }
    eprintln!("worst relative mse difference GPU vs CPU: {worst:e}");
}

/// GPTQ's whole-model path with the rounding awaited on the GPU (`quantize_layer_gpu` →
/// `GpuRounder::round_async`, what the page's "on the GPU" runs) against the CPU reference, on
/// block 0 of the shipped model with a Hessian per input (Σ x xᵀ of 400 pseudo-random inputs with
/// correlated features, so the feedback matters): per-layer proxy losses within 1e-3 of the
/// CPU's (f32 against f64, the bound of tests/hessian_rounding_gpu.rs), and not bit-equal (had
/// the GPU declined, the CPU would have rounded and the losses would be identical).
#[test]
fn gptq_rounded_on_the_gpu_matches_the_cpu_path() {
    use lutlab_core::quant::hessian::Square;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/gpt2-tiny-wikitext");
    let weights = ModelFiles::read_dir(&dir).and_then(|f| f.load()).unwrap().weights;
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter (lavapipe in CI)");
    let request = QuantizeRequest { method: "gptq".into(), bits: 3, granularity: "channel".into(), ..QuantizeRequest::default() };
    let method = request.method(&weights, false).unwrap();
    let hessian = |n: usize| {
        let mut state = n as u64 * 0x9E37_79B9_7F4A_7C15 | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut h = vec![0.0; n * n];
        for _ in 0..400 {
            let shared = next();
            let x: Vec<f64> = (0..n).map(|_| next() + 0.5 * shared).collect();
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += x[i] * x[j] / 400.0;
                }
            }
        }
        Square { n, data: h }
    };
    let sizes: std::collections::BTreeMap<usize, Square> = [weights.config.n_embd, 4 * weights.config.n_embd].into_iter().map(|n| (n, hessian(n))).collect();
    let lookup = |name: &str| weights.linears().find(|(n, _)| n == name).and_then(|(_, l)| sizes.get(&l.in_features()));
    let calibration = lutlab_core::quant::Calibration { hessians: Some(&lookup), ..Default::default() };
    let cpu = quantize_model(&weights, &method, Some(0..1), calibration, &mut NoProgress).unwrap();
    let on_gpu = pollster::block_on(quantize_model_gpu(&gpu, &weights, &method, Some(0..1), calibration, &mut NoProgress)).unwrap();
    assert_eq!(cpu.layers.len(), 4);
    let (mut worst, mut differ) = (0f64, 0);
    for (c, g) in cpu.layers.iter().zip(&on_gpu.layers) {
        let (cp, gp) = (c.proxy_loss.unwrap(), g.proxy_loss.unwrap());
        let rel = (gp - cp).abs() / cp;
        worst = worst.max(rel);
        differ += usize::from(gp != cp);
        assert!(rel < 1e-3, "{}: GPU proxy loss {gp} vs CPU {cp}", c.name);
        assert!(g.lut.is_some(), "{}: packs", g.name);
    }
    assert!(differ > 0, "the GPU rounded (its proxy losses are its own)");
    eprintln!("GPTQ 3-bit per channel, block 0: worst relative proxy-loss difference GPU vs CPU {worst:e}, {differ} of 4 not bit-equal");
}
