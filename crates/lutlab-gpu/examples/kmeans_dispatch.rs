//! Times `lloyd_gpu` on the bit slider's layer (768×3072 per channel, Fisher-weighted, 4 bits,
//! 10 k-means++ restarts: 30,720 runs of 768 points) for a few `max_iter`, so the cost of one
//! Lloyd iteration (an assign and an update dispatch) on an adapter is the difference of two
//! lines: made to find why software adapters (lavapipe, SwiftShader) were slow.
//!
//! ```sh
//! cargo run --release -p lutlab-gpu --example kmeans_dispatch -- [--bits 4] [--restarts 10] [--iters 1,3]
//! ```

use lutlab_core::quant::KmeansInit;
use lutlab_gpu::requantize_bench::synthetic_layer;
use lutlab_gpu::{KmeansBatch, init, lloyd_gpu};
use std::time::Instant;

fn main() {
    let (mut bits, mut restarts, mut iters) = (4u32, 10usize, vec![1usize, 3]);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--bits" => bits = value.parse().expect("--bits N"),
            "--restarts" => restarts = value.parse().expect("--restarts N"),
            "--iters" => iters = value.split(',').map(|v| v.parse().expect("--iters N,M")).collect(),
            other => panic!("unknown argument {other}"),
        }
    }
    let (rows, cols) = (768, 3072);
    let k = 1usize << bits;
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter");
    eprintln!("device: {}", gpu.describe());
    let (linear, fisher) = synthetic_layer(rows, cols, 7);
    let (mut values, mut weights, mut offsets, mut segments, mut initial) =
        (Vec::new(), Vec::new(), vec![0], Vec::new(), Vec::new());
    for c in 0..cols {
        let v: Vec<f32> = (0..rows).map(|r| linear.weight.data[r * cols + c]).collect();
        let w: Vec<f64> = (0..rows).map(|r| f64::from(fisher[r * cols + c])).collect();
        let p = init::points_parallel(&v, &w, 1);
        for r in 0..restarts {
            segments.push(c);
            initial.extend(init::initial_centroids(&p, k, KmeansInit::PlusPlus, 0, c, r).iter().map(|&v| v as f32));
        }
        values.extend(p.x.iter().map(|&v| v as f32));
        weights.extend(p.w.iter().map(|&v| v as f32));
        offsets.push(values.len());
    }
    for &max_iter in &iters {
        let batch = KmeansBatch {
            values: &values,
            weights: Some(&weights),
            offsets: &offsets,
            k,
            run_segments: Some(&segments),
            initial: &initial,
            max_iter,
            codes: false,
        };
        let t0 = Instant::now();
        let out = pollster::block_on(lloyd_gpu(&gpu, batch)).expect("lloyd_gpu");
        let objective: f64 = out.objective.iter().sum();
        eprintln!(
            "max_iter {max_iter}: {:.3} s, {} runs, {} checks, objective {objective:.6e}",
            t0.elapsed().as_secs_f64(),
            segments.len(),
            out.checks
        );
    }
}
