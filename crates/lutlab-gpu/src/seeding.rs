//! The Lloyd inputs of GPU k-means, in chunks of tables: the initial tables (k-means++ on the
//! host, from the CPU reference's streams) and the points in f32, so that natively the seeding of
//! chunk `i + 1` runs on the cores while the GPU runs Lloyd on chunk `i`. On the bit slider's 768×3072 layer the seeding of 3,072 tables × 10
//! restarts took longer than their Lloyd on the GPU; done in one piece it was all on the critical
//! path. Every (table, restart) draws from its own stream, so chunking changes no result.

use crate::init::{self, Points};
use crate::kmeans::{parallel_map, threads};
use lutlab_core::quant::KmeansInit;
use lutlab_model::{ModelError, Result};
use std::sync::Arc;

/// What every run is seeded with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub k: usize,
    pub init: KmeansInit,
    pub seed: u64,
    pub restarts: usize,
}

/// Runs (tables × restarts) below which a batch stays one chunk: seeding it is too short to be
/// worth another Lloyd call.
const MIN_RUNS_PER_CHUNK: usize = 4096;
/// Most chunks per batch: each is a Lloyd call with its own transfers and state read-backs.
const MAX_CHUNKS: usize = 4;

/// `tables` split into consecutive chunks for the pipeline. One chunk in the browser (the
/// seeding has no other thread to run on) and on CPU adapters (the "GPU" runs on the same cores:
/// overlapping only adds Lloyd calls; lavapipe, 768×3072 at 4 bits: 3.2 s in one chunk, 4.8 s in
/// four). `LUTLAB_KMEANS_CHUNKS=n` natively forces `n` (tuning).
pub(crate) fn chunks(tables: Vec<usize>, restarts: usize, cpu_adapter: bool) -> Vec<Vec<usize>> {
    let runs = tables.len() * restarts;
    let mut n = (runs / MIN_RUNS_PER_CHUNK).clamp(1, MAX_CHUNKS);
    if threads() == 1 || cpu_adapter {
        n = 1;
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(forced) = std::env::var("LUTLAB_KMEANS_CHUNKS").ok().and_then(|v| v.parse::<usize>().ok()) {
        n = forced.max(1);
    }
    let n = n.min(tables.len()).max(1);
    let size = tables.len().div_ceil(n).max(1);
    tables.chunks(size).map(<[usize]>::to_vec).collect()
}

/// One chunk's Lloyd input: its tables' points in f32, one segment each, and the initial tables
/// of its runs (`restarts` per table, table after table, `k` each).
pub(crate) struct Chunk {
    pub values: Vec<f32>,
    pub weights: Vec<f32>,
    pub offsets: Vec<usize>,
    pub initial: Vec<f32>,
}

fn seed_chunk(points: &[Points], chunk: &[usize], plan: Plan) -> Chunk {
    let drawn = parallel_map(chunk.len() * plan.restarts, |j| {
        let (t, r) = (chunk[j / plan.restarts], j % plan.restarts);
        init::initial_centroids(&points[t], plan.k, plan.init, plan.seed, t, r)
    });
    let initial = drawn.iter().flatten().map(|&v| v as f32).collect();
    // The f32 points too, off the caller's thread (it is waiting for the GPU).
    let n: usize = chunk.iter().map(|&t| points[t].len()).sum();
    let (mut values, mut weights, mut offsets) = (Vec::with_capacity(n), Vec::with_capacity(n), vec![0]);
    for &t in chunk {
        values.extend(points[t].x.iter().map(|&v| v as f32));
        weights.extend(points[t].w.iter().map(|&v| v as f32));
        offsets.push(values.len());
    }
    Chunk { values, weights, offsets, initial }
}

/// The chunks' Lloyd inputs, in order: from a background thread natively (it runs ahead of the
/// caller), computed on demand in the browser.
pub(crate) struct Seeds {
    #[cfg(not(target_arch = "wasm32"))]
    rx: std::sync::mpsc::Receiver<(Chunk, f64)>,
    #[cfg(target_arch = "wasm32")]
    pending: std::vec::IntoIter<Vec<usize>>,
    #[cfg(target_arch = "wasm32")]
    points: Arc<Vec<Points>>,
    #[cfg(target_arch = "wasm32")]
    plan: Plan,
}

impl Seeds {
    pub fn start(points: Arc<Vec<Points>>, chunks: Vec<Vec<usize>>, plan: Plan) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let (tx, rx) = std::sync::mpsc::channel();
            // Stops early when the receiver is gone (the caller failed or was dropped).
            std::thread::spawn(move || {
                for chunk in &chunks {
                    let t0 = std::time::Instant::now();
                    let seeds = seed_chunk(&points, chunk, plan);
                    if tx.send((seeds, t0.elapsed().as_secs_f64())).is_err() {
                        break;
                    }
                }
            });
            Self { rx }
        }
        #[cfg(target_arch = "wasm32")]
        {
            Self { pending: chunks.into_iter(), points, plan }
        }
    }

    /// The next chunk (natively blocks until the background thread has it).
    pub fn next(&mut self) -> Result<Chunk> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let (seeds, seconds) =
                self.rx.recv().map_err(|_| ModelError::Gpu("the k-means++ seeding thread stopped".into()))?;
            crate::profile::add("  k-means++ seeding (background, overlapped)", seconds);
            Ok(seeds)
        }
        #[cfg(target_arch = "wasm32")]
        {
            let chunk = self.pending.next().ok_or_else(|| ModelError::Gpu("no k-means++ chunk left".into()))?;
            Ok(seed_chunk(&self.points, &chunk, self.plan))
        }
    }
}
