//! Greedy weighted k-means++ (scikit-learn's `_kmeans_plusplus` with sample weights, which
//! SqueezeLLM's `nuq.py` gets through `KMeans(...).fit(X, sample_weight=...)`): the first centre
//! is drawn with probability ∝ weight; each next one is the best of `2 + ⌊ln k⌋` candidates drawn
//! with probability ∝ `w · D²` (`D` = distance to the nearest centre so far), "best" meaning the
//! lowest resulting potential `Σ w · D²`.
//!
//! Why this is not `O(k · trials · n)`: in one dimension a new centre only lowers `D²` for the
//! sorted points between the midpoints to its neighbouring centres, and a draw needs only block
//! sums of `w · D²`. A step then costs `O(n / B + B + trials · range)`, so an 8-bit table of
//! 600k values takes milliseconds per restart instead of seconds. Same distribution as the plain
//! algorithm; the float summation order differs.

use super::data::Points;
use super::rng::SplitMix64;

/// Points per block of the `w · D²` block sums: about `√n`, which balances walking the blocks
/// against walking inside one.
fn block_size(n: usize) -> usize {
    ((n as f64).sqrt() as usize).max(16)
}

/// The centres chosen so far and every point's `D²`.
struct Potential<'a> {
    x: &'a [f64],
    w: &'a [f64],
    d2: Vec<f64>,
    /// Sums of `w · D²` over consecutive blocks of `block` points.
    blocks: Vec<f64>,
    block: usize,
    /// Ascending.
    centres: Vec<f64>,
}

impl<'a> Potential<'a> {
    fn new(points: &'a Points, first: f64) -> Self {
        let (x, w) = (points.x.as_slice(), points.w.as_slice());
        let d2: Vec<f64> = x.iter().map(|&v| (v - first) * (v - first)).collect();
        let block = block_size(x.len());
        let mut p = Self { x, w, d2, blocks: vec![0.0; x.len().div_ceil(block)], block, centres: vec![first] };
        for b in 0..p.blocks.len() {
            p.resum(b);
        }
        p
    }

    fn resum(&mut self, b: usize) {
        let (lo, hi) = (b * self.block, ((b + 1) * self.block).min(self.x.len()));
        self.blocks[b] = (lo..hi).map(|i| self.w[i] * self.d2[i]).sum();
    }

    /// `Σ w · D²`, summed over the blocks in order (what [`Self::draw`] scales by).
    fn total(&self) -> f64 {
        self.blocks.iter().sum()
    }

    /// A point index drawn with probability ∝ `w · D²`; `total` is [`Self::total`] (the trials of
    /// one step share it).
    fn draw(&self, total: f64, rng: &mut SplitMix64) -> usize {
        let mut r = rng.next_f64() * total;
        let last_block = self.blocks.len() - 1;
        for (b, &sum) in self.blocks.iter().enumerate() {
            if r < sum || b == last_block {
                let (lo, hi) = (b * self.block, ((b + 1) * self.block).min(self.x.len()));
                let mut chosen = hi - 1;
                for i in lo..hi {
                    let mass = self.w[i] * self.d2[i];
                    if mass > 0.0 {
                        chosen = i;
                        if r < mass {
                            break;
                        }
                        r -= mass;
                    }
                }
                return chosen;
            }
            r -= sum;
        }
        self.x.len() - 1
    }

    /// The points whose `D²` a centre at `cx` could lower (empty if `cx` already is a centre).
    fn reach(&self, cx: f64) -> std::ops::Range<usize> {
        let pos = self.centres.partition_point(|&c| c < cx);
        let right = self.centres.get(pos).copied();
        if right == Some(cx) {
            return 0..0;
        }
        let lo = match pos.checked_sub(1) {
            Some(l) => {
                let mid = self.centres[l] + (cx - self.centres[l]) * 0.5;
                self.x.partition_point(|&v| v < mid)
            }
            None => 0,
        };
        let hi = match right {
            Some(r) => {
                let mid = cx + (r - cx) * 0.5;
                self.x.partition_point(|&v| v <= mid)
            }
            None => self.x.len(),
        };
        lo..hi
    }

    /// How much the potential falls if a centre is added at `cx`, and the points it reaches.
    /// Summed in four interleaved partial sums: a single chain of dependent additions was most
    /// of the seeding's time (the slider re-seeds 10 restarts of thousands of tables per move).
    fn gain(&self, cx: f64) -> (f64, std::ops::Range<usize>) {
        let range = self.reach(cx);
        let (x, w, d2) = (&self.x[range.clone()], &self.w[range.clone()], &self.d2[range.clone()]);
        let term = |i: usize| {
            let d = x[i] - cx;
            let dd = d * d;
            // `min` without NaN handling (every value is finite), so the loop vectorises.
            w[i] * (d2[i] - if dd < d2[i] { dd } else { d2[i] })
        };
        let mut acc = [0.0f64; 4];
        let whole = x.len() / 4 * 4;
        for i in (0..whole).step_by(4) {
            for (l, a) in acc.iter_mut().enumerate() {
                *a += term(i + l);
            }
        }
        let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for i in whole..x.len() {
            total += term(i);
        }
        (total, range)
    }

    /// Adds a centre at `cx`, whose reach `range` [`Self::gain`] gave.
    fn add(&mut self, cx: f64, range: std::ops::Range<usize>) {
        for i in range.clone() {
            let d = self.x[i] - cx;
            self.d2[i] = self.d2[i].min(d * d);
        }
        if !range.is_empty() {
            for b in range.start / self.block..=(range.end - 1) / self.block {
                self.resum(b);
            }
        }
        let pos = self.centres.partition_point(|&c| c < cx);
        self.centres.insert(pos, cx);
    }
}

/// `k` initial centres (ascending) for `points` (non-empty, positive weights).
pub fn init(points: &Points, k: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let (x, w) = (&points.x, &points.w);
    let trials = 2 + (k as f64).ln().floor() as usize;
    // First centre ∝ weight.
    let mut r = rng.next_f64() * w.iter().sum::<f64>();
    let mut first = x.len() - 1;
    for (i, &wi) in w.iter().enumerate() {
        if r < wi {
            first = i;
            break;
        }
        r -= wi;
    }
    let mut potential = Potential::new(points, x[first]);
    while potential.centres.len() < k {
        // Largest gain = lowest resulting potential; equal gains keep the earlier candidate.
        let mut best: Option<(f64, usize, std::ops::Range<usize>)> = None;
        let total = potential.total();
        for _ in 0..trials {
            let candidate = potential.draw(total, rng);
            let (gain, reach) = potential.gain(x[candidate]);
            if best.as_ref().is_none_or(|(g, _, _)| gain > *g) {
                best = Some((gain, candidate, reach));
            }
        }
        let Some((_, chosen, reach)) = best else { break };
        potential.add(x[chosen], reach);
    }
    potential.centres
}
