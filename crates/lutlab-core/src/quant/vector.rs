//! Vector look-up tables (issue 20, `--vector-dim d`): the weights of one output channel are
//! cut into vectors of `d` consecutive input rows, and each vector is coded by one entry of a
//! codebook of `2^(bits·d)` vectors, so a code costs `bits·d` bits, `bits` per weight, as a
//! scalar table of `2^bits` entries would. A codebook serves a whole matrix or a group of output
//! channels (the scalar tables' granularities). Vectors beat scalars at the same rate because
//! their cells need not be the Cartesian product of 1-D intervals (the 2-D picture: the codebook
//! follows where the weight pairs actually lie), which is what coremltools' `cluster_dim` and the
//! first stage of AQLM and QuIP#'s lattice codebooks exploit.
//!
//! The fit is weighted k-means in `d` dimensions with a weight per *element* (the Fisher
//! diagonal of each weight, as the scalar tables use): the distance of a vector `x` with
//! weights `f` to an entry `c` is `Σ_i f_i (x_i − c_i)²`, each entry's coordinate `i` is the
//! `f_i`-weighted mean of its vectors' coordinates `i`, and the objective is the Fisher-weighted
//! squared error of the dequantized weights. Started from weighted k-means++ (first entry ∝ a
//! vector's total weight, each next the best of `2 + ⌊ln k⌋` candidates drawn ∝ its weighted
//! distance, as scikit-learn's `_kmeans_plusplus`), best of `restarts` runs; an entry left empty
//! moves to the vector with the largest remaining error. With a weight per vector (every
//! element of a vector weighted alike) this is exactly scikit-learn's `KMeans(sample_weight=…)`,
//! the independent reference (`scripts/vector_kmeans_reference.py`).

use crate::error::{LoadError, Result};
use crate::quant::kmeans::rng::SplitMix64;
use crate::quant::lut::Granularity;

/// What a vector quantization fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorSettings {
    /// Weights per vector: 2 or 4 (consecutive input rows of one output channel).
    pub dim: usize,
    /// Bits per weight: a codebook has `2^(bits·dim)` entries.
    pub bits: u32,
    pub granularity: Granularity,
    pub max_iter: usize,
    pub seed: u64,
    pub restarts: usize,
}

impl VectorSettings {
    /// Codebook entries, or a clear error where the codes would pass 16 bits or `dim` is not 2 or 4.
    pub fn entries(&self) -> Result<usize> {
        if !matches!(self.dim, 2 | 4) {
            return Err(LoadError::InvalidSetting(format!("vector dimension {}: use 2 or 4", self.dim)));
        }
        let code_bits = self.bits as usize * self.dim;
        if self.bits == 0 || code_bits > 12 {
            return Err(LoadError::InvalidSetting(format!(
                "{} bits per weight in vectors of {}: codes of {code_bits} bits; vector codebooks hold at most 2^12 entries (bits · dim ≤ 12)",
                self.bits, self.dim
            )));
        }
        Ok(1 << code_bits)
    }
}

/// A matrix coded by vector look-up tables.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorLut {
    pub rows: usize,
    pub cols: usize,
    pub dim: usize,
    /// Output channels per codebook (consecutive).
    pub channels_per_table: usize,
    /// `[tables][entries][dim]`, row-major.
    pub codebooks: Vec<f32>,
    pub entries: usize,
    /// One code per vector: vector `v` of column `c` (rows `v·dim..(v+1)·dim`) at `[v · cols + c]`.
    pub codes: Vec<u16>,
}

impl VectorLut {
    /// The `[rows, cols]` weights the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let (d, cols) = (self.dim, self.cols);
        let mut w = vec![0f32; self.rows * cols];
        for v in 0..self.rows / d {
            for c in 0..cols {
                let table = c / self.channels_per_table;
                let entry = &self.codebooks[(table * self.entries + self.codes[v * cols + c] as usize) * d..][..d];
                for (i, &value) in entry.iter().enumerate() {
                    w[(v * d + i) * cols + c] = value;
                }
            }
        }
        w
    }

    /// Bits to store: the codes and every codebook entry as f16.
    pub fn storage_bits(&self) -> u64 {
        let code_bits = (self.entries.trailing_zeros() as u64) * self.codes.len() as u64;
        code_bits + 16 * self.codebooks.len() as u64
    }
}

/// One weighted k-means problem: `n` points of `dim` coordinates with a weight per coordinate.
pub struct VectorPoints {
    pub dim: usize,
    /// `[n][dim]`.
    pub x: Vec<f64>,
    /// `[n][dim]`, non-negative.
    pub w: Vec<f64>,
}

impl VectorPoints {
    pub fn len(&self) -> usize {
        self.x.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    fn point(&self, p: usize) -> (&[f64], &[f64]) {
        (&self.x[p * self.dim..][..self.dim], &self.w[p * self.dim..][..self.dim])
    }

    /// `Σ_i w_i (x_i − c_i)²` of point `p` to centre `c`.
    fn distance(&self, p: usize, c: &[f64]) -> f64 {
        let (x, w) = self.point(p);
        x.iter().zip(w).zip(c).map(|((x, w), c)| w * (x - c) * (x - c)).sum()
    }

    /// The nearest of `centres` (`[k][dim]`) to point `p`, and its distance (first on ties).
    fn nearest(&self, p: usize, centres: &[f64]) -> (usize, f64) {
        centres.chunks_exact(self.dim).enumerate().fold((0, f64::INFINITY), |best, (k, c)| {
            let d = self.distance(p, c);
            if d < best.1 { (k, d) } else { best }
        })
    }
}

/// A fitted codebook: `[k][dim]` centres, each point's code, and the objective.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorFit {
    pub centres: Vec<f64>,
    pub codes: Vec<u16>,
    pub objective: f64,
    pub iterations: usize,
}

/// Weighted k-means of `points` into `k` centres: the best of `restarts` k-means++ starts, each
/// refined by Lloyd for at most `max_iter` updates; `stream` numbers the problem (its own seeds).
pub fn fit(points: &VectorPoints, k: usize, settings: &VectorSettings, stream: usize) -> VectorFit {
    starts(points, k, settings, stream)
        .into_iter()
        .map(|centres| {
            let mut lloyd = Lloyd::new(centres, points.len(), settings.max_iter);
            loop {
                let assigned: Vec<(usize, f64)> = (0..points.len()).map(|p| points.nearest(p, &lloyd.centres)).collect();
                if let Some(fit) = lloyd.advance(points, &assigned) {
                    return fit;
                }
            }
        })
        .min_by(|a, b| a.objective.total_cmp(&b.objective))
        .unwrap_or(VectorFit { centres: vec![0.0; k * points.dim], codes: Vec::new(), objective: 0.0, iterations: 0 })
}

/// The initial centres (`[k][dim]`) of each of the `restarts` runs of problem `stream`: weighted
/// k-means++ from the run's own seed. The GPU fit (`lutlab_gpu::vector_kmeans`) starts from these
/// too, so the two differ only in how the assignments are computed.
pub fn starts(points: &VectorPoints, k: usize, settings: &VectorSettings, stream: usize) -> Vec<Vec<f64>> {
    (0..settings.restarts.max(1))
        .map(|run| plus_plus(points, k, &mut SplitMix64::for_run(settings.seed, stream, run)))
        .collect()
}

/// Greedy weighted k-means++: the first centre drawn ∝ a point's total weight, each next the best
/// (lowest resulting potential) of `2 + ⌊ln k⌋` candidates drawn ∝ the point's current distance.
fn plus_plus(points: &VectorPoints, k: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let (n, dim) = (points.len(), points.dim);
    let mut centres = Vec::with_capacity(k * dim);
    if n == 0 {
        return vec![0.0; k * dim];
    }
    let mass: Vec<f64> = (0..n).map(|p| points.point(p).1.iter().sum()).collect();
    let first = draw(&mass, rng).unwrap_or(0);
    centres.extend_from_slice(points.point(first).0);
    let mut d2: Vec<f64> = (0..n).map(|p| points.distance(p, points.point(first).0)).collect();
    let trials = 2 + (k as f64).ln() as usize;
    while centres.len() < k * dim {
        // No distance left (fewer distinct points than entries): copies of the last centre.
        if d2.iter().sum::<f64>() <= 0.0 {
            let last = centres[centres.len() - dim..].to_vec();
            centres.extend_from_slice(&last);
            continue;
        }
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let Some(candidate) = draw(&d2, rng) else { break };
            let c = points.point(candidate).0;
            let updated: Vec<f64> = d2.iter().enumerate().map(|(p, &d)| d.min(points.distance(p, c))).collect();
            let potential: f64 = updated.iter().sum();
            if best.as_ref().is_none_or(|(b, _, _)| potential < *b) {
                best = Some((potential, candidate, updated));
            }
        }
        let Some((_, chosen, updated)) = best else { break };
        centres.extend_from_slice(points.point(chosen).0);
        d2 = updated;
    }
    centres
}

/// An index drawn with probability ∝ `weights`, or `None` when they sum to 0.
fn draw(weights: &[f64], rng: &mut SplitMix64) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = rng.next_f64() * total;
    let mut acc = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        acc += w;
        if acc > target && w > 0.0 {
            return Some(i);
        }
    }
    weights.iter().rposition(|&w| w > 0.0)
}

/// Lloyd's iteration between two assignments: the caller assigns every point to its nearest
/// centre (the O(n·k·d) part: [`fit`] on the CPU, `lutlab_gpu::vector_kmeans` on the GPU) and
/// [`Lloyd::advance`] does the rest exactly as the reference does: stop when the codes stop
/// changing or after `max_iter` updates, else move each centre to the per-coordinate weighted mean
/// of its points (an empty one to the point with the largest error), in f64.
pub struct Lloyd {
    /// `[k][dim]`: where the next assignment measures from.
    pub centres: Vec<f64>,
    codes: Vec<u16>,
    iterations: usize,
    max_iter: usize,
}

impl Lloyd {
    pub fn new(centres: Vec<f64>, points: usize, max_iter: usize) -> Self {
        Lloyd { centres, codes: vec![u16::MAX; points], iterations: 0, max_iter }
    }

    /// Takes `assigned` (per point: the nearest of `self.centres` and its distance) and returns
    /// the fit when Lloyd has ended, or moves the centres for the next assignment.
    pub fn advance(&mut self, points: &VectorPoints, assigned: &[(usize, f64)]) -> Option<VectorFit> {
        let (n, dim) = (points.len(), points.dim);
        let k = self.centres.len() / dim;
        let changed = assigned.iter().zip(&self.codes).any(|(a, &c)| a.0 != c as usize);
        for (code, a) in self.codes.iter_mut().zip(assigned) {
            *code = a.0 as u16;
        }
        if !changed || self.iterations == self.max_iter {
            let objective = assigned.iter().map(|a| a.1).sum();
            let (centres, codes) = (std::mem::take(&mut self.centres), std::mem::take(&mut self.codes));
            return Some(VectorFit { centres, codes, objective, iterations: self.iterations });
        }
        self.iterations += 1;
        let mut sums = vec![0f64; k * dim];
        let mut weights = vec![0f64; k * dim];
        for (p, &code) in self.codes.iter().enumerate() {
            let (x, w) = points.point(p);
            for i in 0..dim {
                sums[code as usize * dim + i] += w[i] * x[i];
                weights[code as usize * dim + i] += w[i];
            }
        }
        let mut by_error: Vec<usize> = (0..n).collect();
        by_error.sort_by(|&a, &b| assigned[b].1.total_cmp(&assigned[a].1));
        let mut next_worst = by_error.into_iter().filter(|&p| assigned[p].1 > 0.0);
        let centres = &mut self.centres;
        for c in 0..k {
            let mass: f64 = weights[c * dim..][..dim].iter().sum();
            if mass > 0.0 {
                for i in 0..dim {
                    let w = weights[c * dim + i];
                    // A coordinate no point weighs keeps its place.
                    if w > 0.0 {
                        centres[c * dim + i] = sums[c * dim + i] / w;
                    }
                }
            } else if let Some(p) = next_worst.next() {
                centres[c * dim..][..dim].copy_from_slice(points.point(p).0);
            }
        }
        None
    }
}

/// Quantizes a row-major `[rows, cols]` matrix with vector tables: per codebook (the whole matrix
/// or a group of output channels), the vectors of `dim` consecutive rows of its channels, with
/// `sample_weights` (the Fisher diagonal, same shape) weighting each element (all 1 without; all
/// 0 counts as all 1, as the scalar tables do). Returns the codes and the weighted objective.
pub fn quantize_vectors(weights: &[f32], rows: usize, cols: usize, sample_weights: Option<&[f32]>, settings: &VectorSettings) -> Result<(VectorLut, f64)> {
    let problems = VectorProblems::new(weights, rows, cols, sample_weights, settings)?;
    let fits = problems.tables.iter().enumerate().map(|(t, points)| fit(points, problems.entries, settings, t).centres).collect();
    Ok(problems.finish(fits))
}

/// A matrix cut into its codebooks' k-means problems (one per table), and the way back from
/// their fitted centres to a [`VectorLut`]: what the CPU and the GPU fits share.
pub struct VectorProblems {
    pub rows: usize,
    pub cols: usize,
    pub dim: usize,
    pub entries: usize,
    pub channels_per_table: usize,
    /// Table `t`'s points: vector `v` of its channel `c` at `v · channels_per_table + c`.
    pub tables: Vec<VectorPoints>,
}

impl VectorProblems {
    /// Clear errors for impossible settings, rows that `dim` does not divide, non-finite values.
    pub fn new(weights: &[f32], rows: usize, cols: usize, sample_weights: Option<&[f32]>, settings: &VectorSettings) -> Result<Self> {
        let entries = settings.entries()?;
        let dim = settings.dim;
        if !rows.is_multiple_of(dim) {
            return Err(LoadError::InvalidSetting(format!("vectors of {dim} input rows do not divide the layer's {rows} rows")));
        }
        crate::quant::kmeans::data::check_inputs(weights, sample_weights)?;
        let channels_per_table = settings.granularity.channels_per_table(cols)?;
        let tables = (0..cols / channels_per_table)
            .map(|table| {
                let channels = table * channels_per_table..(table + 1) * channels_per_table;
                let (mut x, mut w) = (Vec::new(), Vec::new());
                for v in 0..rows / dim {
                    for c in channels.clone() {
                        for i in 0..dim {
                            let at = (v * dim + i) * cols + c;
                            x.push(f64::from(weights[at]));
                            w.push(sample_weights.map_or(1.0, |s| f64::from(s[at])));
                        }
                    }
                }
                if w.iter().all(|&v| v == 0.0) {
                    w.fill(1.0);
                }
                VectorPoints { dim, x, w }
            })
            .collect();
        Ok(VectorProblems { rows, cols, dim, entries, channels_per_table, tables })
    }

    /// The codes and weighted objective of each table's fitted `centres` (`[entries][dim]`),
    /// stored as f32: every vector re-assigned to the stored entries, the objective measured
    /// with them.
    pub fn finish(self, centres: Vec<Vec<f64>>) -> (VectorLut, f64) {
        let VectorProblems { rows, cols, dim, entries, channels_per_table, tables } = self;
        let mut codebooks = Vec::with_capacity(tables.len() * entries * dim);
        let mut codes = vec![0u16; rows / dim * cols];
        let mut objective = 0.0;
        for (table, (points, fitted)) in tables.iter().zip(centres).enumerate() {
            let stored: Vec<f64> = fitted.iter().map(|&c| f64::from(c as f32)).collect();
            let channels = table * channels_per_table..(table + 1) * channels_per_table;
            for (p, (v, c)) in (0..rows / dim).flat_map(|v| channels.clone().map(move |c| (v, c))).enumerate() {
                let (code, d) = points.nearest(p, &stored);
                codes[v * cols + c] = code as u16;
                objective += d;
            }
            codebooks.extend(stored.iter().map(|&c| c as f32));
        }
        (VectorLut { rows, cols, dim, channels_per_table, codebooks, entries, codes }, objective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dim: usize, bits: u32) -> VectorSettings {
        VectorSettings { dim, bits, granularity: Granularity::Tensor, max_iter: 100, seed: 1, restarts: 3 }
    }

    #[test]
    fn as_many_distinct_vectors_as_entries_are_coded_exactly() {
        // 4 distinct pairs, 2-D codebook of 4 entries (1 bit per weight): zero error.
        let pairs = [(0.0f32, 1.0f32), (2.0, -1.0), (5.0, 5.0), (-3.0, 0.5)];
        let cols = 8;
        let mut w = vec![0f32; 2 * cols];
        for c in 0..cols {
            let (a, b) = pairs[c % 4];
            w[c] = a;
            w[cols + c] = b;
        }
        let (lut, objective) = quantize_vectors(&w, 2, cols, None, &settings(2, 1)).unwrap();
        assert_eq!(objective, 0.0);
        assert_eq!(lut.dequantize(), w);
        assert_eq!(lut.storage_bits(), 2 * 8 + 16 * 8);
    }

    #[test]
    fn weights_pull_entries_toward_what_matters() {
        // Two points, one entry: the centre is the per-coordinate weighted mean.
        let points = VectorPoints { dim: 2, x: vec![0.0, 0.0, 4.0, 8.0], w: vec![3.0, 1.0, 1.0, 3.0] };
        let f = fit(&points, 1, &settings(2, 1), 0);
        assert_eq!(f.centres, vec![1.0, 6.0]);
        assert!((f.objective - (3.0 + 1.0 * 36.0 + 9.0 + 3.0 * 4.0)).abs() < 1e-12);
    }

    #[test]
    fn impossible_settings_are_refused_by_name() {
        assert!(settings(3, 2).entries().unwrap_err().to_string().contains("use 2 or 4"));
        assert!(settings(4, 4).entries().unwrap_err().to_string().contains("2^12"));
        let e = quantize_vectors(&[0.0; 6], 3, 2, None, &settings(2, 2)).unwrap_err().to_string();
        assert!(e.contains("do not divide"), "{e}");
    }
}
