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
