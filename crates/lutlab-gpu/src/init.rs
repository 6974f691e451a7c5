//! The host side of GPU k-means: a table's points and its initial centroids, bit for bit those of
//! the CPU reference (`lutlab_core::quant::kmeans`), whose helpers are private to that crate.
//!
//! Ported, not re-designed: [`Points`] (distinct values with positive weight, ascending, weights
//! summed in f64 in input order), [`SplitMix64::for_run`] (the stream of table `t`, restart `r`),
//! greedy weighted k-means++ ([`plusplus`]) and weighted quantiles ([`quantiles`]). The test
//! `init_matches_cpu_reference` checks the port against the CPU quantizer, so a change on either
//! side fails loudly. Were lutlab-core to export its initialiser, this module would shrink to the
//! re-seeding of empty clusters ([`reseed`]), which must stay on the host anyway.

use lutlab_core::quant::KmeansInit;

/// Distinct values of the points with positive weight, ascending, with summed weights
/// (lutlab-core's `Points::new`: a stable sort, so equal values sum in input order).
#[derive(Clone, Debug, Default)]
pub struct Points {
    pub x: Vec<f64>,
    pub w: Vec<f64>,
}

impl Points {
    pub fn new(values: &[f32], weights: &[f64]) -> Self {
        Self::new_parallel(values, weights, 1)
    }

    /// [`Points::new`], sorting on up to `threads` threads natively (a stable sort has one result,
    /// so the points, summed weights included, are the same bits).
    pub fn new_parallel(values: &[f32], weights: &[f64], threads: usize) -> Self {
        let mut pairs: Vec<(f32, f64)> =
            values.iter().zip(weights).filter(|(_, w)| **w > 0.0).map(|(v, w)| (*v, *w)).collect();
        stable_sort(&mut pairs, threads);
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

/// The weight each point gets in the fit (lutlab-core's `effective_weights`): the sample weight
/// or 1, 0 when excluded; if every included point weighs 0, every included point weighs 1.
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

/// SplitMix64 with lutlab-core's per-(seed, table, restart) streams.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    pub fn for_run(seed: u64, table: usize, run: usize) -> Self {
        let mut a = Self(seed);
        let mut b = Self(a.next_u64() ^ table as u64);
        let mut c = Self(b.next_u64() ^ run as u64);
        Self(c.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Initial centroids (ascending) of restart `run` of table `table`, as the CPU reference draws
/// them; `points` has more than `k` entries.
pub fn initial_centroids(points: &Points, k: usize, init: KmeansInit, seed: u64, table: usize, run: usize) -> Vec<f64> {
    match init {
        KmeansInit::PlusPlus => plusplus(points, k, &mut SplitMix64::for_run(seed, table, run)),
        KmeansInit::Quantile => quantiles(points, k),
    }
}

/// Weighted quantiles (lutlab-core's `quantiles`).
pub fn quantiles(points: &Points, k: usize) -> Vec<f64> {
    let total: f64 = points.w.iter().sum();
    let n = points.len();
    let mut c = Vec::with_capacity(k);
    let (mut i, mut below) = (0, 0.0);
    for j in 0..k {
        let target = (j as f64 + 0.5) / k as f64 * total;
        while i + 1 < n && below + points.w[i] < target {
            below += points.w[i];
            i += 1;
        }
        c.push(points.x[i]);
    }
    c
}

fn block_size(n: usize) -> usize {
    ((n as f64).sqrt() as usize).max(16)
}

/// Centres chosen so far and every point's `D²` (lutlab-core's `plusplus::Potential`).
struct Potential<'a> {
    x: &'a [f64],
    w: &'a [f64],
    d2: Vec<f64>,
    blocks: Vec<f64>,
    block: usize,
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

    fn draw(&self, rng: &mut SplitMix64) -> usize {
        let total: f64 = self.blocks.iter().sum();
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

    fn gain(&self, cx: f64) -> f64 {
        self.reach(cx)
            .map(|i| {
                let d = self.x[i] - cx;
                self.w[i] * (self.d2[i] - self.d2[i].min(d * d))
            })
            .sum()
    }

    fn add(&mut self, cx: f64) {
        let range = self.reach(cx);
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

/// Greedy weighted k-means++ (lutlab-core's `plusplus::init`).
pub fn plusplus(points: &Points, k: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let (x, w) = (&points.x, &points.w);
    let trials = 2 + (k as f64).ln().floor() as usize;
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
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..trials {
            let candidate = potential.draw(rng);
            let gain = potential.gain(x[candidate]);
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, candidate));
            }
        }
        let Some((_, chosen)) = best else { break };
        potential.add(x[chosen]);
    }
    potential.centres
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
    let mut errors: Vec<(f64, usize)> = (0..points.len())
        .map(|i| {
            let d = points.x[i] - c[cluster[i]];
            (points.w[i] * d * d, i)
        })
        .collect();
    let mut occupied: Vec<f64> = (0..k).filter(|&j| occupied_flags[j]).map(|j| c[j]).collect();
    occupied.sort_by(f64::total_cmp);
    errors.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut slots = empty.iter();
    let mut placed: Vec<f64> = Vec::with_capacity(empty.len());
    let mut moved = 0;
    for (_, i) in errors {
        let x = points.x[i];
        if occupied.binary_search_by(|c| c.total_cmp(&x)).is_ok() || placed.contains(&x) {
            continue;
        }
        let Some(&slot) = slots.next() else { break };
        c[slot] = x;
        placed.push(x);
        moved += 1;
    }
    c.sort_by(f64::total_cmp);
    moved
}
