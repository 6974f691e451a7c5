//! Benchmark: GPU k-means (`lutlab_gpu::quantize_kmeans_gpu_report`) against the CPU reference
//! (`lutlab_core::quant::kmeans::quantize_kmeans_report`), same settings and same initial tables,
//! on the shipped model's linear weights and on a random `size × size` matrix; 4 bits, whole
//! tensor and per channel. One JSON object per line on stdout.
//!
//! ```sh
//! cargo run --release -p lutlab-gpu --example bench_kmeans -- [--size 4096] [--bits 4] [--restarts 10]
//!     [--repeat 3] [--skip-shipped] [--skip-random] [--skip-cpu] [--skip-gpu] [--host-only]
//! ```
//!
//! On the device machine (no Rust there), as `scripts/bench_device.sh` does for `lutlab`: build
//! here, `strip -o .carry/bench_kmeans $CARGO_TARGET_DIR/release/examples/bench_kmeans && xz -f
//! .carry/bench_kmeans`, carry `.carry` and `.gl`, and there, from the repository root, after the
//! Vulkan loader set-up of that script: `xz -d -k -f .carry/bench_kmeans.xz && chmod +x
//! .carry/bench_kmeans && .carry/bench_kmeans > $OUT/kmeans.jsonl`. The 4096 × 4096 whole-tensor
//! line takes the CPU reference about 18 s (2-core development machine).
//!
//! Per line: `cpu_s` (the CPU reference, one thread), `gpu_s` (GPU end to end: host-side points and
//! k-means++ on all cores, the Lloyd iterations on the GPU, coding, transfers; best of
//! `--repeat`), and its parts measured apart: `host_init_s` (points and initial tables, as the
//! GPU path prepares them) and `lloyd_s` (`lloyd_gpu` alone over those points, every table and
//! restart at once). Objectives of both, their relative difference, and the largest difference
//! between the tables relative to each table's scale.

use lutlab_core::ModelFiles;
use lutlab_core::quant::Granularity;
use lutlab_core::quant::kmeans::{self, KmeansOutput, KmeansSettings};
use lutlab_gpu::init::{self, Points};
use lutlab_gpu::{KmeansBatch, lloyd_gpu, quantize_kmeans_gpu_report};
use lutlab_model::Gpu;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    size: usize,
    bits: u32,
    restarts: usize,
    repeat: usize,
    shipped: bool,
    random: bool,
    cpu: bool,
    gpu: bool,
    /// Only the GPU path's host preparation (to size it on a machine without a real GPU).
    host_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        size: 4096,
        bits: 4,
        restarts: 10,
        repeat: 3,
        shipped: true,
        random: true,
        cpu: true,
        gpu: true,
        host_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match flag.as_str() {
            "--size" => a.size = value("--size"),
            "--bits" => a.bits = value("--bits") as u32,
            "--restarts" => a.restarts = value("--restarts"),
            "--repeat" => a.repeat = value("--repeat").max(1),
            "--skip-shipped" => a.shipped = false,
            "--skip-random" => a.random = false,
            "--skip-cpu" => a.cpu = false,
            "--skip-gpu" => a.gpu = false,
            "--host-only" => a.host_only = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// GPT-2-like weights: roughly normal, standard deviation about 0.02 (xorshift64*, seeded).
fn random_matrix(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(|_| (((0..4).map(|_| next()).sum::<f64>() - 2.0) * 0.035) as f32).collect()
}

/// A table's points and its initial tables (one per restart; none when it is exact).
type Prepared = (Points, Vec<Vec<f32>>);

/// The GPU path's host preparation, timed apart: each table's points and initial tables.
fn host_init(w: &[f32], rows: usize, cols: usize, s: &KmeansSettings) -> (f64, Vec<Prepared>) {
    let t0 = Instant::now();
    let k = 1usize << s.bits;
    let per = s.granularity.channels_per_table(cols).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let n_tables = cols / per;
    let inner = (threads / n_tables).max(1);
    let tables = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|th| {
                scope.spawn(move || {
                    (th..n_tables)
                        .step_by(threads)
                        .map(|t| {
                            let values: Vec<f32> = (0..rows)
                                .flat_map(|r| (t * per..(t + 1) * per).map(move |c| w[r * cols + c]))
                                .collect();
                            let points = init::points_parallel(&values, &vec![1.0; values.len()], inner);
                            let runs = if points.len() > k {
                                (0..s.restarts.max(1))
                                    .map(|r| {
                                        init::initial_centroids(&points, k, s.init, s.seed, t, r)
                                            .iter()
                                            .map(|&v| v as f32)
                                            .collect()
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            (t, (points, runs))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    });
    (t0.elapsed().as_secs_f64(), tables)
}

/// `lloyd_gpu` alone over the prepared points: every table and restart in one batch.
fn lloyd_only(gpu: &Gpu, tables: &[Prepared], s: &KmeansSettings) -> f64 {
    let k = 1usize << s.bits;
    let (mut values, mut weights, mut offsets, mut runs, mut initial) =
        (Vec::new(), Vec::new(), vec![0], Vec::new(), Vec::new());
    for (points, inits) in tables.iter().filter(|(_, i)| !i.is_empty()) {
        values.extend(points.x.iter().map(|&v| v as f32));
        weights.extend(points.w.iter().map(|&v| v as f32));
        offsets.push(values.len());
        for run in inits {
            runs.push(offsets.len() - 2);
            initial.extend_from_slice(run);
        }
    }
    if runs.is_empty() {
        return 0.0;
    }
    let batch = KmeansBatch {
        values: &values,
        weights: Some(&weights),
        offsets: &offsets,
        k,
        run_segments: Some(&runs),
        initial: &initial,
        max_iter: s.max_iter,
        codes: false,
    };
    let t0 = Instant::now();
    pollster::block_on(lloyd_gpu(gpu, batch)).unwrap();
    t0.elapsed().as_secs_f64()
}

/// Largest |Δ entry| / max|entry| over the tables of two quantizations.
fn table_diff(a: &KmeansOutput, b: &KmeansOutput) -> f64 {
    let levels = a.matrix.levels();
    a.matrix
        .tables
        .chunks(levels)
        .zip(b.matrix.tables.chunks(levels))
        .map(|(x, y)| {
            let scale = y.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())).max(1e-30);
            x.iter().zip(y).map(|(&p, &q)| (f64::from(p) - f64::from(q)).abs() / scale).fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

#[allow(clippy::too_many_arguments)]
fn bench(gpu: &Gpu, a: &Args, case: &str, name: &str, w: &[f32], rows: usize, cols: usize, granularity: Granularity) {
    let s = KmeansSettings { bits: a.bits, granularity, restarts: a.restarts, ..KmeansSettings::default() };
    let timed = |f: &dyn Fn() -> KmeansOutput| {
        let t0 = Instant::now();
        let out = f();
        (t0.elapsed().as_secs_f64(), out)
    };
    // GPU: best of `repeat` end-to-end runs, then its parts apart.
    let (mut gpu_s, mut g, mut host_init_s, mut lloyd_s) = (None, None, None, None);
    if a.host_only {
        host_init_s = Some(host_init(w, rows, cols, &s).0);
    } else if a.gpu {
        for _ in 0..a.repeat {
            let (t, out) =
                timed(&|| pollster::block_on(quantize_kmeans_gpu_report(gpu, w, rows, cols, None, None, &s)).unwrap());
            gpu_s = Some(gpu_s.map_or(t, |b: f64| b.min(t)));
            g = Some(out);
        }
        let (t, tables) = host_init(w, rows, cols, &s);
        host_init_s = Some(t);
        lloyd_s = Some(lloyd_only(gpu, &tables, &s));
    }
    let (cpu_s, c) = if a.cpu && !a.host_only {
        let (t, out) = timed(&|| kmeans::quantize_kmeans_report(w, rows, cols, None, None, s).unwrap());
        (Some(t), Some(out))
    } else {
        (None, None)
    };
    let both = g.as_ref().zip(c.as_ref());
    let line = json!({
        "case": case,
        "tensor": name,
        "rows": rows,
        "cols": cols,
        "granularity": format!("{granularity:?}").to_lowercase(),
        "bits": a.bits,
        "restarts": a.restarts,
        "tables": granularity.tables(cols).ok(),
        "device": gpu.describe(),
        "cpu_s": cpu_s,
        "gpu_s": gpu_s,
        "speedup": cpu_s.zip(gpu_s).map(|(c, g)| c / g),
        "host_init_s": host_init_s,
        "lloyd_s": lloyd_s,
        "gpu_objective": g.as_ref().map(|g| g.objective),
        "cpu_objective": c.as_ref().map(|c| c.objective),
        "objective_rel_diff": both.map(|(g, c)| (g.objective - c.objective) / c.objective),
        "max_table_diff": both.map(|(g, c)| table_diff(g, c)),
        "gpu_iterations_max": g.as_ref().and_then(|g| g.tables.iter().map(|t| t.iterations).max()),
        "gpu_converged": g.as_ref().map(|g| g.tables.iter().filter(|t| t.converged).count()),
    });
    println!("{line}");
}

fn main() {
    let a = args();
    let gpu = pollster::block_on(lutlab_model::open_gpu()).expect("a wgpu adapter");
    // Warm-up: pipelines compiled, buffers of the allocator touched.
    let warm = random_matrix(64 * 64, 1);
    let s = KmeansSettings { bits: a.bits, restarts: 1, ..KmeansSettings::default() };
    pollster::block_on(quantize_kmeans_gpu_report(&gpu, &warm, 64, 64, None, None, &s)).unwrap();

    if a.shipped {
        // From the repository root when run there (a binary carried to the device), else the
        // repository it was built from.
        let here = PathBuf::from("models/gpt2-tiny-wikitext");
        let dir = if here.is_dir() {
            here
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/gpt2-tiny-wikitext")
        };
        let model = ModelFiles::read_dir(&dir).and_then(|f| f.load()).expect("shipped model loads");
        for (name, l) in model.weights.linears() {
            let (rows, cols) = (l.weight.shape[0], l.weight.shape[1]);
            for g in [Granularity::Tensor, Granularity::Channel] {
                bench(&gpu, &a, "shipped", &name, &l.weight.data, rows, cols, g);
            }
        }
    }
    if a.random {
        let n = a.size;
        let w = random_matrix(n * n, 42);
        for g in [Granularity::Channel, Granularity::Tensor] {
            bench(&gpu, &a, "random", &format!("random{n}x{n}"), &w, n, n, g);
        }
    }
}
