//! Exact optimal weighted 1-D k-means by dynamic programming, the reference every heuristic is
//! measured against (seed 000 uses the `kmeans1d` package for the same optimum).
//!
//! Over the `n` sorted distinct values, `D[m][j]` is the least cost of putting the first `j`
//! values into `m` clusters: `D[m][j] = min_i D[m-1][i] + cost(i, j)`, where `cost(i, j)` is the
//! weighted squared error of values `i..j` around their weighted mean, read in O(1) from prefix
//! sums. 1-D k-means cost satisfies the quadrangle inequality, so the leftmost optimal split
//! `i*(j)` never decreases with `j`; divide and conquer over `j` then needs `O(n log n)` cost
//! evaluations per layer, `O(k n log n)` in all (SMAWK would save the log; not needed here:
//! 768×768 distinct values at k = 16 take well under a second).

use super::data::Points;
use crate::error::{LoadError, Result};

/// Split points kept for the backtrack: `(k - 1) (n + 1)` u32, capped at 1 GiB so a huge 8-bit
/// reference run fails with a message instead of exhausting memory.
pub const MAX_BACKTRACK_CELLS: usize = 1 << 28;

/// Prefix sums of `w`, `w·d`, `w·d²` with `d = x - mean`: centring keeps `Q - S²/W` from
/// cancelling catastrophically when all values sit far from zero.
struct Prefix {
    w: Vec<f64>,
    s: Vec<f64>,
    q: Vec<f64>,
}

impl Prefix {
    fn new(points: &Points) -> Self {
        let total: f64 = points.w.iter().sum();
        let mean = points.x.iter().zip(&points.w).map(|(x, w)| x * w).sum::<f64>() / total;
        let n = points.len();
        let (mut w, mut s, mut q) = (vec![0.0; n + 1], vec![0.0; n + 1], vec![0.0; n + 1]);
        for i in 0..n {
            let d = points.x[i] - mean;
            w[i + 1] = w[i] + points.w[i];
            s[i + 1] = s[i] + points.w[i] * d;
            q[i + 1] = q[i] + points.w[i] * d * d;
        }
        Self { w, s, q }
    }

    /// Weighted squared error of values `i..j` (`i < j`) around their mean.
    fn cost(&self, i: usize, j: usize) -> f64 {
        let w = self.w[j] - self.w[i];
        let s = self.s[j] - self.s[i];
        let q = self.q[j] - self.q[i];
        (q - s * s / w).max(0.0)
    }
}

/// The optimal centroids (ascending) for `points` with more distinct values than `k`.
pub fn fit(points: &Points, k: usize) -> Result<Vec<f64>> {
    let n = points.len();
    let cells = (k - 1).checked_mul(n + 1).filter(|&c| c <= MAX_BACKTRACK_CELLS).ok_or_else(|| {
        LoadError::InvalidSetting(format!(
            "the exact k-means reference for {n} distinct values and {k} clusters needs more than 1 GiB; \
             use Lloyd k-means, fewer bits or a finer granularity"
        ))
    })?;
    let prefix = Prefix::new(points);
    let mut prev: Vec<f64> = (0..=n).map(|j| if j == 0 { 0.0 } else { prefix.cost(0, j) }).collect();
    let mut cur = vec![f64::INFINITY; n + 1];
    let mut back = vec![0u32; cells];
    for m in 2..=k {
        // With m of k clusters placed, at least k - m values must remain for the others.
        let (jlo, jhi) = (m, n - (k - m));
        let row = &mut back[(m - 2) * (n + 1)..(m - 1) * (n + 1)];
        let mut layer = Layer { prefix: &prefix, prev: &prev, cur: &mut cur, back: row };
        layer.solve(jlo, jhi, m - 1, jhi - 1);
        std::mem::swap(&mut prev, &mut cur);
    }
    // Walk the split points back from (k, n) to recover each cluster's run.
    let mut ends = vec![n; k];
    let mut j = n;
    for m in (2..=k).rev() {
        ends[m - 1] = j;
        j = back[(m - 2) * (n + 1) + j] as usize;
    }
    ends[0] = j;
    let mut start = 0;
    Ok(ends
        .iter()
        .map(|&end| {
            let c = points.mean(start, end);
            start = end;
            c
        })
        .collect())
}

/// One DP layer: `cur[j] = min_{i in ilo..=ihi, i < j} prev[i] + cost(i, j)`.
struct Layer<'a> {
    prefix: &'a Prefix,
    prev: &'a [f64],
    cur: &'a mut [f64],
    back: &'a mut [u32],
}

impl Layer<'_> {
    /// Divide and conquer: solve the middle `j`, then each half within its side of the split.
    /// Recursion depth is `log2 n`.
    fn solve(&mut self, jlo: usize, jhi: usize, ilo: usize, ihi: usize) {
        if jlo > jhi {
            return;
        }
        let mid = jlo + (jhi - jlo) / 2;
        let (mut best, mut arg) = (f64::INFINITY, ilo);
        for i in ilo..=ihi.min(mid - 1) {
            let v = self.prev[i] + self.prefix.cost(i, mid);
            // Strict: keeps the leftmost optimum, whose monotonicity the recursion relies on.
            if v < best {
                best = v;
                arg = i;
            }
        }
        self.cur[mid] = best;
        self.back[mid] = arg as u32;
        if mid > jlo {
            self.solve(jlo, mid - 1, ilo, arg);
        }
        self.solve(mid + 1, jhi, arg, ihi);
    }
}
