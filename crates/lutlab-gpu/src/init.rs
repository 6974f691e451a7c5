//! The host side of GPU k-means: a table's points and its initial centroids come from the CPU
//! reference (`lutlab_core::quant::kmeans`), so GPU and CPU Lloyd start from the same tables; this
//! module adds a multi-threaded build of the points and the re-seeding of empty clusters, which
//! stays on the host.

pub use lutlab_core::quant::kmeans::{effective_weights, initial_centroids, Points};
use lutlab_core::quant::kmeans::place_on_worst;

/// The CPU reference's `Points::new`, sorting on up to `threads` threads natively (a stable sort
/// has one result, so the points, summed weights included, are the same bits).
pub fn points_parallel(values: &[f32], weights: &[f64], threads: usize) -> Points {
    let mut pairs: Vec<(f32, f64)> =
        values.iter().zip(weights).filter(|(_, w)| **w > 0.0).map(|(v, w)| (*v, *w)).collect();
    stable_sort(&mut pairs, threads);
    Points::from_sorted_pairs(pairs)
}

/// Sorts `(value, weight)` pairs by value in total order, stably: equal values keep their order.
/// With several threads: chunks sorted in parallel, then merged pairwise (left first on ties).
fn stable_sort(pairs: &mut Vec<(f32, f64)>, threads: usize) {
    let less = |a: &(f32, f64), b: &(f32, f64)| a.0.total_cmp(&b.0) == std::cmp::Ordering::Less;
    #[cfg(not(target_arch = "wasm32"))]
    if threads > 1 && pairs.len() >= 1 << 16 {
        let len = pairs.len();
        let mut width = len.div_ceil(threads);
        std::thread::scope(|s| {
            for chunk in pairs.chunks_mut(width) {
                s.spawn(move || chunk.sort_by(|a, b| a.0.total_cmp(&b.0)));
            }
        });
        let mut src = std::mem::take(pairs);
        let mut dst = src.clone();
        while width < len {
            std::thread::scope(|s| {
                for (out, input) in dst.chunks_mut(2 * width).zip(src.chunks(2 * width)) {
                    s.spawn(move || {
                        let (a, b) = input.split_at(width.min(input.len()));
                        let (mut i, mut j) = (0, 0);
                        for slot in out.iter_mut() {
                            // Right only when strictly smaller: stability.
                            if j < b.len() && (i == a.len() || less(&b[j], &a[i])) {
                                *slot = b[j];
                                j += 1;
                            } else {
                                *slot = a[i];
                                i += 1;
                            }
                        }
                    });
                }
            });
            std::mem::swap(&mut src, &mut dst);
            width *= 2;
        }
        *pairs = src;
        return;
    }
    let _ = (threads, less);
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
}


/// Moves the centroids of empty clusters onto the worst-served points, as lutlab-core's Lloyd
/// does after an update: `points` with `cluster[i]` the cluster of point `i` under the assignment
/// that produced the update, `c` the updated centroids. Each empty cluster (ascending index) takes
/// the point of largest `w (x - c)²` (ties: the lower value) whose value is not already a
/// centroid of a non-empty cluster or re-seeded; then `c` is sorted ascending. Returns how many
/// centroids moved.
pub fn reseed(points: &Points, cluster: &[usize], c: &mut [f64]) -> usize {
    let k = c.len();
    let mut occupied_flags = vec![false; k];
    for &j in cluster {
        occupied_flags[j] = true;
    }
    let empty: Vec<usize> = (0..k).filter(|&j| !occupied_flags[j]).collect();
    if empty.is_empty() {
        return 0;
    }
    // Same order as the CPU reference: clusters ascending, points ascending inside each (the
    // clusters of sorted points are contiguous runs), so the index tie-break is the value order.
    let errors: Vec<(f64, usize)> = (0..points.len())
        .map(|i| {
            let d = points.x[i] - c[cluster[i]];
            (points.w[i] * d * d, i)
        })
        .collect();
    let mut occupied: Vec<f64> = (0..k).filter(|&j| occupied_flags[j]).map(|j| c[j]).collect();
    occupied.sort_by(f64::total_cmp);
    let moved = place_on_worst(points, c, errors, &occupied, &empty);
    c.sort_by(f64::total_cmp);
    moved
}
