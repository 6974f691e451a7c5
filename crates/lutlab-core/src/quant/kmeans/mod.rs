//! Fisher-weighted k-means look-up-table quantization (seeds 000 and 001), on the CPU.
//!
//! Each table (the whole matrix, one output channel, or a group of output channels) gets
//! `2^bits` entries fitted by weighted 1-D k-means, minimising `Σ w_i (x_i - table[code_i])²`
//! where `w_i` is the sample weight (the Fisher diagonal, or 1). Two solvers:
//! - Lloyd ([`lloyd_1d`], [`quantize_kmeans`]): weighted Lloyd from k-means++ (best of a few
//!   seeded restarts) or quantiles, the algorithm the GPU runs;
//! - the exact optimum by dynamic programming ([`optimal_1d`], [`quantize_optimal`]), the
//!   yardstick for both.
//!
//! Documented exact results and fallbacks (shared by both solvers, applied per table):
//! - *fewer distinct values than entries* (a constant tensor, say): every distinct value is its
//!   own entry, exactly, and the remaining entries repeat the largest value so the table stays
//!   ascending; the objective is 0. A table with no weighted values at all is all zeros.
//! - *all-zero sample weights*: every point weighs 1 (uniform k-means), as SqueezeLLM's `nuq.py`
//!   does; points with weight 0 among positive ones are ignored by the fit and simply coded to
//!   their nearest entry.
//! - *excluded points* (dense-and-sparse outliers, see [`super::outliers`]) weigh 0 and are coded
//!   to the entry nearest their value, which keeps their sparse corrections small.
//! - NaN/Inf weights, NaN/Inf/negative sample weights: [`LoadError`] naming the first position.
//!
//! Tables are fitted in f64 and stored as f32; codes are then re-assigned to the nearest stored
//! entry and the reported objective is computed with the stored f32 entries, so it is exactly the
//! weighted error of [`LutMatrix::dequantize`] (up to summation order).

pub(crate) mod data;
mod lloyd;
mod optimal;
mod plusplus;
pub mod rng;

pub use data::{assign, effective_weights, objective, Points};
pub use lloyd::{initial_centroids, place_on_worst, KmeansInit, LloydSettings};
pub use optimal::MAX_BACKTRACK_CELLS;

use crate::error::{LoadError, Result};
use crate::quant::lut::{Granularity, LutMatrix, SparseOutliers};

/// Settings of a Lloyd k-means quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmeansSettings {
    /// 1 to 8: tables of `2^bits` entries, one u8 code per weight.
    pub bits: u32,
    pub granularity: Granularity,
    pub init: KmeansInit,
    /// Cap on Lloyd updates per run (it usually stops earlier, at a fixed point).
    pub max_iter: usize,
    /// Seed of k-means++; each table and restart draws from its own stream.
    pub seed: u64,
    /// k-means++ runs per table, best kept (see [`LloydSettings::restarts`]).
    pub restarts: usize,
    /// 1: scalar tables; 2 or 4: vector tables over that many consecutive input rows
    /// (`quant::vector`), `bits` per weight.
    pub vector_dim: usize,
}

impl Default for KmeansSettings {
    fn default() -> Self {
        let l = LloydSettings::default();
        Self {
            bits: 4,
            granularity: Granularity::Tensor,
            init: l.init,
            max_iter: l.max_iter,
            seed: l.seed,
            restarts: l.restarts,
            vector_dim: 1,
        }
    }
}

impl KmeansSettings {
    pub fn lloyd(&self) -> LloydSettings {
        LloydSettings { init: self.init, max_iter: self.max_iter, seed: self.seed, restarts: self.restarts }
    }

    /// The vector-table settings these stand for (`vector_dim` 2 or 4), checked.
    pub fn vector_settings(&self) -> Result<crate::quant::vector::VectorSettings> {
        let v = crate::quant::vector::VectorSettings {
            dim: self.vector_dim,
            bits: self.bits,
            granularity: self.granularity,
            max_iter: self.max_iter,
            seed: self.seed,
            restarts: self.restarts,
        };
        v.entries()?;
        Ok(v)
    }
}

/// Table entries for `bits`, or a clear error outside 1..=8.
pub fn levels(bits: u32) -> Result<usize> {
    if (1..=8).contains(&bits) {
        Ok(1 << bits)
    } else {
        Err(LoadError::InvalidSetting(format!("bits must be 1 to 8 (tables of 2 to 256 entries), got {bits}")))
    }
}

/// One 1-D clustering: the stored table (ascending), a code per input value, and its objective.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    pub centroids: Vec<f32>,
    pub codes: Vec<u8>,
    /// `Σ w_i (x_i - centroids[code_i])²` in f64, with the effective weights (see module docs).
    pub objective: f64,
    /// Lloyd updates of the kept run (0 for the exact solver and the few-distinct-values case).
    pub iterations: usize,
    /// Lloyd reached a fixed point before `max_iter` (always true for the exact solver).
    pub converged: bool,
    /// Distinct values with positive weight that the fit saw.
    pub distinct: usize,
}

/// Which 1-D solver fits a table.
#[derive(Clone, Copy, Debug)]
enum Solver {
    Lloyd(LloydSettings),
    Optimal,
}

impl Solver {
    /// Fits `k` centroids to `points` (more distinct values than `k`); `table` picks the streams.
    fn fit(self, points: &Points, k: usize, table: usize) -> Result<lloyd::Fit> {
        Ok(match self {
            Solver::Lloyd(settings) => lloyd::fit_best(points, k, settings, table),
            Solver::Optimal => lloyd::Fit { centroids: optimal::fit(points, k)?, iterations: 0, converged: true },
        })
    }
}

/// Fits `k` entries to `values` with effective weights `weights` (`fit` runs only when there are
/// more distinct weighted values than entries), stores them as f32 and codes every value.
fn cluster(
    values: &[f32],
    weights: &[f64],
    k: usize,
    fit: impl FnOnce(&Points) -> Result<lloyd::Fit>,
) -> Result<Clustering> {
    let points = Points::new(values, weights);
    let lloyd::Fit { centroids: fitted, iterations, converged } = if points.len() <= k {
        let pad = points.x.last().copied().unwrap_or(0.0);
        let mut c = points.x.clone();
        c.resize(k, pad);
        lloyd::Fit { centroids: c, iterations: 0, converged: true }
    } else {
        fit(&points)?
    };
    let centroids: Vec<f32> = fitted.iter().map(|&c| c as f32).collect();
    let stored: Vec<f64> = centroids.iter().map(|&c| f64::from(c)).collect();
    let codes = data::assign(values, &stored);
    let objective = data::objective(values, weights, &stored, &codes);
    Ok(Clustering { centroids, codes, objective, iterations, converged, distinct: points.len() })
}

fn check_k(k: usize) -> Result<()> {
    if (1..=256).contains(&k) {
        Ok(())
    } else {
        Err(LoadError::InvalidSetting(format!("k-means needs 1 to 256 clusters (u8 codes), got {k}")))
    }
}

/// Weighted Lloyd k-means of one vector into `k` clusters (`sample_weights` None = uniform),
/// with the random streams of table 0.
pub fn lloyd_1d(
    values: &[f32],
    sample_weights: Option<&[f32]>,
    k: usize,
    settings: LloydSettings,
) -> Result<Clustering> {
    check_k(k)?;
    data::check_inputs(values, sample_weights)?;
    let w = data::effective_weights(sample_weights, None, values.len());
    cluster(values, &w, k, |p| Solver::Lloyd(settings).fit(p, k, 0))
}

/// The exact optimal weighted k-means of one vector into `k` clusters.
pub fn optimal_1d(values: &[f32], sample_weights: Option<&[f32]>, k: usize) -> Result<Clustering> {
    check_k(k)?;
    data::check_inputs(values, sample_weights)?;
    let w = data::effective_weights(sample_weights, None, values.len());
    cluster(values, &w, k, |p| Solver::Optimal.fit(p, k, 0))
}

/// Weighted Lloyd from a given table (`initial`, any order; its length is `k`). For comparing
/// implementations from one starting point: k-means++ draws depend on float summation order.
pub fn lloyd_1d_from(
    values: &[f32],
    sample_weights: Option<&[f32]>,
    initial: &[f32],
    max_iter: usize,
) -> Result<Clustering> {
    let k = initial.len();
    check_k(k)?;
    data::check_inputs(values, sample_weights)?;
    crate::checkpoint::check_finite("initial centroids", initial)?;
    let w = data::effective_weights(sample_weights, None, values.len());
    let mut c: Vec<f64> = initial.iter().map(|&v| f64::from(v)).collect();
    c.sort_by(f64::total_cmp);
    cluster(values, &w, k, |p| Ok(lloyd::fit_from(p, c, max_iter)))
}

/// How one table's fit went.
#[derive(Clone, Debug, PartialEq)]
pub struct TableReport {
    pub objective: f64,
    pub iterations: usize,
    pub converged: bool,
    pub distinct: usize,
}

/// A quantized matrix with its objective (sum over tables) and per-table reports.
#[derive(Clone, Debug, PartialEq)]
pub struct KmeansOutput {
    pub matrix: LutMatrix,
    pub objective: f64,
    pub tables: Vec<TableReport>,
}

/// Lloyd k-means LUT quantization of an `[rows, cols]` (Conv1D `[in, out]`) matrix.
pub fn quantize_kmeans(
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    settings: KmeansSettings,
) -> Result<LutMatrix> {
    quantize_kmeans_report(weights, rows, cols, sample_weights, None, settings).map(|out| out.matrix)
}

/// [`quantize_kmeans`] with the objective and per-table reports, and optionally positions to
/// leave out of the fit (`excluded[i]`: weight 0, see the module docs).
pub fn quantize_kmeans_report(
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    excluded: Option<&[bool]>,
    settings: KmeansSettings,
) -> Result<KmeansOutput> {
    let solver = Solver::Lloyd(settings.lloyd());
    quantize_tables(
        Matrix { weights, rows, cols, sample_weights, excluded },
        settings.bits,
        settings.granularity,
        solver,
    )
}

/// LUT quantization with the exact optimal table per granularity slice (the reference; also a
/// quantizer in its own right, at `O(k n log n)` time and `4 k n` bytes per table).
pub fn quantize_optimal(
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    excluded: Option<&[bool]>,
    bits: u32,
    granularity: Granularity,
) -> Result<KmeansOutput> {
    quantize_tables(Matrix { weights, rows, cols, sample_weights, excluded }, bits, granularity, Solver::Optimal)
}

/// The inputs of a matrix quantization, checked together.
struct Matrix<'a> {
    weights: &'a [f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&'a [f32]>,
    excluded: Option<&'a [bool]>,
}

impl Matrix<'_> {
    fn check(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(LoadError::InvalidSetting(format!(
                "cannot quantize an empty {}x{} matrix",
                self.rows, self.cols
            )));
        }
        if self.rows.checked_mul(self.cols) != Some(self.weights.len()) {
            return Err(LoadError::WrongShape {
                name: "weights".into(),
                expected: vec![self.rows, self.cols],
                found: vec![self.weights.len()],
            });
        }
        if let Some(e) = self.excluded.filter(|e| e.len() != self.weights.len()) {
            return Err(LoadError::InvalidSetting(format!(
                "outlier mask has {} entries for {} weights",
                e.len(),
                self.weights.len()
            )));
        }
        data::check_inputs(self.weights, self.sample_weights)
    }
}

fn quantize_tables(m: Matrix<'_>, bits: u32, granularity: Granularity, solver: Solver) -> Result<KmeansOutput> {
    let k = levels(bits)?;
    m.check()?;
    let per_table = granularity.channels_per_table(m.cols)?;
    let n_tables = m.cols / per_table;
    let mut tables = Vec::with_capacity(n_tables * k);
    let mut codes = vec![0u8; m.weights.len()];
    let mut reports = Vec::with_capacity(n_tables);
    for t in 0..n_tables {
        // Flat indices of this table's weights: all rows of its output columns.
        let columns = t * per_table..(t + 1) * per_table;
        let idx: Vec<usize> = (0..m.rows).flat_map(|r| columns.clone().map(move |c| r * m.cols + c)).collect();
        let values: Vec<f32> = idx.iter().map(|&i| m.weights[i]).collect();
        let sample: Option<Vec<f32>> = m.sample_weights.map(|s| idx.iter().map(|&i| s[i]).collect());
        let excluded: Option<Vec<bool>> = m.excluded.map(|e| idx.iter().map(|&i| e[i]).collect());
        let w = data::effective_weights(sample.as_deref(), excluded.as_deref(), idx.len());
        let fit = cluster(&values, &w, k, |p| solver.fit(p, k, t))?;
        for (&i, &code) in idx.iter().zip(&fit.codes) {
            codes[i] = code;
        }
        tables.extend_from_slice(&fit.centroids);
        reports.push(TableReport {
            objective: fit.objective,
            iterations: fit.iterations,
            converged: fit.converged,
            distinct: fit.distinct,
        });
    }
    let matrix = LutMatrix {
        rows: m.rows,
        cols: m.cols,
        bits,
        granularity,
        tables,
        codes,
        input_groups: None,
        outliers: SparseOutliers::none(m.rows),
    };
    Ok(KmeansOutput { objective: reports.iter().map(|r| r.objective).sum(), matrix, tables: reports })
}

/// `Σ w_i (original_i - approx_i)²` in f64 (`sample_weights` None = 1): the error a quantizer's
/// objective promises, measured on the dequantized matrix.
pub fn weighted_sq_error(original: &[f32], approx: &[f32], sample_weights: Option<&[f32]>) -> f64 {
    original
        .iter()
        .zip(approx)
        .enumerate()
        .map(|(i, (&a, &b))| {
            let d = f64::from(a) - f64::from(b);
            sample_weights.map_or(1.0, |s| f64::from(s[i])) * d * d
        })
        .sum()
}
