//! The data every 1-D solver works on: checked inputs, effective sample weights, and the
//! distinct values sorted with their summed weights.
//!
//! Why merge: in one dimension a cluster of sorted values is a contiguous run, and equal values
//! always share a cluster, so `(value, summed weight)` pairs lose nothing. f16 checkpoints have at
//! most 65,536 distinct values per table, which makes both Lloyd and the exact DP much cheaper.

use crate::error::{LoadError, Result};

/// Fails on NaN/Inf weights and on NaN, infinite or negative sample weights, naming the flat index.
pub fn check_inputs(weights: &[f32], sample_weights: Option<&[f32]>) -> Result<()> {
    crate::checkpoint::check_finite("weights", weights)?;
    if let Some(sample) = sample_weights {
        if sample.len() != weights.len() {
            return Err(LoadError::InvalidSetting(format!(
                "{} sample weights for {} weights",
                sample.len(),
                weights.len()
            )));
        }
        crate::checkpoint::check_finite("sample weights", sample)?;
        if let Some((i, v)) = sample.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return Err(LoadError::InvalidSetting(format!(
                "sample weights must be non-negative (Fisher values are squares); found {v} at flat index {i}"
            )));
        }
    }
    Ok(())
}

/// The weight each point gets in the fit. Excluded points (dense-and-sparse outliers) get 0, so
/// they neither move centroids nor count in the objective. If every remaining point has weight 0
/// (an all-zero Fisher slice), all remaining points get weight 1: the uniform fallback that
/// SqueezeLLM's `nuq.py` applies per table (`if np.sum(sample_weight) == 0: ones`).
pub fn effective_weights(sample: Option<&[f32]>, excluded: Option<&[bool]>, n: usize) -> Vec<f64> {
    let included = |i: usize| excluded.is_none_or(|e| !e[i]);
    let mut w: Vec<f64> =
        (0..n).map(|i| if included(i) { sample.map_or(1.0, |s| f64::from(s[i])) } else { 0.0 }).collect();
    if w.iter().all(|&x| x == 0.0) {
        for (i, x) in w.iter_mut().enumerate() {
            *x = if included(i) { 1.0 } else { 0.0 };
        }
    }
    w
}

/// Distinct values of the points with positive weight, ascending, with summed weights.
#[derive(Clone, Debug, Default)]
pub struct Points {
    pub x: Vec<f64>,
    pub w: Vec<f64>,
}

impl Points {
    pub fn new(values: &[f32], weights: &[f64]) -> Self {
        let mut pairs: Vec<(f32, f64)> =
            values.iter().zip(weights).filter(|(_, w)| **w > 0.0).map(|(v, w)| (*v, *w)).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self::from_sorted_pairs(pairs)
    }

    /// Merges `(value, weight)` pairs already sorted stably by value (a parallel sort may do that
    /// part), summing the weights of equal values in order.
    pub fn from_sorted_pairs(pairs: Vec<(f32, f64)>) -> Self {
        let mut points = Self::default();
        for (v, w) in pairs {
            // `==` (not total order) so -0.0 and 0.0 merge.
            match points.x.last() {
                Some(&last) if last == f64::from(v) => {
                    if let Some(lw) = points.w.last_mut() {
                        *lw += w;
                    }
                }
                _ => {
                    points.x.push(f64::from(v));
                    points.w.push(w);
                }
            }
        }
        points
    }

    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Weighted mean of points `lo..hi` (non-empty), summed directly: prefix sums would lose a
    /// light cluster's digits next to a heavy total when Fisher weights span many decades.
    pub fn mean(&self, lo: usize, hi: usize) -> f64 {
        let (mut sw, mut swx) = (0.0, 0.0);
        for i in lo..hi {
            sw += self.w[i];
            swx += self.w[i] * self.x[i];
        }
        swx / sw
    }

    /// Cluster ends for sorted `centroids` under the nearest-centroid rule (see [`assign`]):
    /// cluster `j` holds points `ends[j-1]..ends[j]`. Of equal centroids only the first gets points.
    pub fn cluster_ends(&self, centroids: &[f64]) -> Vec<usize> {
        let k = centroids.len();
        let mut ends = vec![self.len(); k];
        // `above`: the smallest centroid greater than `centroids[j]` (sorted input: walk down).
        let mut above: Option<f64> = None;
        for j in (0..k).rev() {
            if j + 1 < k && centroids[j + 1] != centroids[j] {
                above = Some(centroids[j + 1]);
            }
            if let Some(next) = above {
                let mid = midpoint(centroids[j], next);
                ends[j] = self.x.partition_point(|&v| v <= mid);
            }
        }
        ends
    }
}

impl Points {
    /// Objective of sorted `centroids` with every point at its nearest one.
    pub fn objective(&self, centroids: &[f64]) -> f64 {
        let mut total = 0.0;
        let mut start = 0;
        for (j, end) in self.cluster_ends(centroids).into_iter().enumerate() {
            for i in start..end {
                let d = self.x[i] - centroids[j];
                total += self.w[i] * d * d;
            }
            start = end;
        }
        total
    }
}

fn midpoint(a: f64, b: f64) -> f64 {
    a + (b - a) * 0.5
}

/// Code of each value: the nearest entry of the ascending `table`; a value exactly halfway
/// between two entries goes to the lower one, and of equal entries the first is used. (With f32
/// tables the midpoint is exact in f64, so this is exactly "nearest, ties to the lower index".)
pub fn assign(values: &[f32], table: &[f64]) -> Vec<u8> {
    // Boundaries between consecutive *distinct* entries, and the first index of each entry.
    let mut firsts: Vec<usize> = Vec::with_capacity(table.len());
    let mut mids: Vec<f64> = Vec::with_capacity(table.len());
    for j in 0..table.len() {
        if j == 0 || table[j] != table[j - 1] {
            if let Some(&prev) = firsts.last() {
                mids.push(midpoint(table[prev], table[j]));
            }
            firsts.push(j);
        }
    }
    values
        .iter()
        .map(|&v| {
            let slot = mids.partition_point(|&m| f64::from(v) > m);
            firsts.get(slot).map_or(0, |&j| j as u8)
        })
        .collect()
}

/// Sum of `w_i (x_i - table[code_i])^2` in f64.
pub fn objective(values: &[f32], weights: &[f64], table: &[f64], codes: &[u8]) -> f64 {
    values
        .iter()
        .zip(weights)
        .zip(codes)
        .map(|((&v, &w), &c)| {
            let d = f64::from(v) - table[usize::from(c)];
            w * d * d
        })
        .sum()
}
