//! The bit slider's k-means (`quantize_kmeans_gpu_report` on the synthetic 768×3072 layer of
//! `lutlab bench requantize`, Fisher-weighted, per channel, 10 restarts), timed per phase with
//! `LUTLAB_PROFILE=1`; `--max-iter 1` keeps a software adapter's Lloyd short so the host phases
//! can be measured on any machine.
//!
//! ```sh
//! LUTLAB_PROFILE=1 cargo run --release -p lutlab-gpu --example requantize_profile -- \
//!     [--bits 4] [--max-iter 100] [--iters 3] [--shape 768x3072] [--seed-only]
//! ```
//!
//! `--seed-only`: no GPU; the k-means++ seeding of every table and restart on one thread, timed
//! (a steadier figure than the multi-threaded phase on a busy machine).

use lutlab_core::quant::{Granularity, KmeansInit, KmeansSettings};
use lutlab_gpu::init;
use lutlab_gpu::quantize_kmeans_gpu_report;
use lutlab_gpu::requantize_bench::synthetic_layer;
use std::time::Instant;

fn main() {
    let (mut bits, mut max_iter, mut iters, mut rows, mut cols) = (4u32, 100usize, 3usize, 768usize, 3072usize);
    let mut seed_only = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--seed-only" {
            seed_only = true;
            continue;
        }
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--bits" => bits = value.parse().expect("--bits N"),
            "--max-iter" => max_iter = value.parse().expect("--max-iter N"),
            "--iters" => iters = value.parse().expect("--iters N"),
            "--shape" => {
                let (r, c) = value.split_once('x').expect("--shape RxC");
                (rows, cols) = (r.parse().expect("rows"), c.parse().expect("cols"));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if seed_only {
        return seed_bench(rows, cols, bits, iters);
    }
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter");
    eprintln!("device: {}", gpu.describe());
    let (linear, fisher) = synthetic_layer(rows, cols, 7);
    let s = KmeansSettings { bits, granularity: Granularity::Channel, max_iter, ..KmeansSettings::default() };
    let run = || {
        pollster::block_on(quantize_kmeans_gpu_report(&gpu, &linear.weight.data, rows, cols, Some(&fisher), None, &s))
            .expect("k-means")
    };
    let warm = run();
    lutlab_gpu::profile::report("warm-up");
    for i in 0..iters {
        let t0 = Instant::now();
        let out = run();
        eprintln!("run {i}: {:.1} ms, objective {:.6e}", t0.elapsed().as_secs_f64() * 1e3, out.objective);
        assert_eq!(out.matrix.codes, warm.matrix.codes, "deterministic");
        lutlab_gpu::profile::report(&format!("run {i}"));
    }
}

/// k-means++ of every channel of the synthetic layer, 10 restarts, on one thread.
fn seed_bench(rows: usize, cols: usize, bits: u32, iters: usize) {
    let (linear, fisher) = synthetic_layer(rows, cols, 7);
    let points: Vec<init::Points> = (0..cols)
        .map(|c| {
            let v: Vec<f32> = (0..rows).map(|r| linear.weight.data[r * cols + c]).collect();
            let w: Vec<f64> = (0..rows).map(|r| f64::from(fisher[r * cols + c])).collect();
            init::points_parallel(&v, &w, 1)
        })
        .collect();
    let k = 1usize << bits;
    for i in 0..iters.max(1) {
        let t0 = Instant::now();
        let mut check = 0u64;
        for (t, p) in points.iter().enumerate() {
            for r in 0..10 {
                for c in init::initial_centroids(p, k, KmeansInit::PlusPlus, 0, t, r) {
                    check = (check.rotate_left(17) ^ c.to_bits()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                }
            }
        }
        let s = t0.elapsed().as_secs_f64();
        eprintln!("seed run {i}: {:.1} ms for {} restarts ({:.2} µs each), bits hash {check:016x}", s * 1e3, cols * 10, s * 1e6 / (cols * 10) as f64);
    }
}
