//! The benchmark's kernels (copy, dense f32/f16 GEMV, LUT GEMV raw and as the model launches it) on small odd shapes: each run
//! compares its output with the CPU (dense: f64 sums of the same f32/f16 weights; LUT:
//! `PackedLinear::reference_matmul`, tolerance 1e-4 · max|y| · √rows) and fails on a mismatch.
//! The timings are not asserted (timed tests are not tests); this is the benchmark's smoke test.

use lutlab_gpu::bench::bench_kernels;

#[test]
fn benchmark_kernels_agree_with_the_cpu() {
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter (lavapipe in CI)");
    let timings = pollster::block_on(bench_kernels(&gpu, &[(77, 130), (768, 96)], &[1, 3, 4, 8], 1 << 20, 2)).unwrap();
    let kernels: Vec<&str> = timings.iter().map(|t| t.kernel.as_str()).collect();
    // The copy and the dispatch floor, then per shape: dense f32 and f16, and per bit width the
    // raw and the model GEMV.
    assert_eq!(kernels.len(), 2 + 2 * (2 + 2 * 4));
    assert_eq!(&kernels[..2], &["copy", lutlab_gpu::bench::DISPATCH_FLOOR]);
    assert!(kernels.contains(&"lut gemv 3-bit") && kernels.contains(&"lut gemv 3-bit model") && kernels.contains(&"dense f16 gemv"));
    assert!(timings.iter().all(|t| t.micros > 0.0 && t.bytes > 0));
}
