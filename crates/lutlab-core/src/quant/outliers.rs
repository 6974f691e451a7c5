//! SqueezeLLM's dense-and-sparse decomposition (seed 001): a few weights are kept exactly in a
//! sparse matrix and k-means fits the dense rest.
//!
//! Two kinds of sparse weights, per weight matrix, as SqueezeLLM's `generate_outlier_config.py`
//! and `squeezellm/outliers.py` define them:
//! - *outliers by range*: with `q1`, `q3` the matrix's 25% and 75% quantiles (numpy's linear
//!   interpolation) and `iqr = q3 - q1`, the threshold is
//!   `T = max(|q1 - range·iqr|, |q3 + range·iqr|)`, and a weight is an outlier when `|w| > T`.
//!   (The config script counts with strict `<`/`>`, the removal uses `>=`/`<=`; we use strict,
//!   so the reported percentage is what is removed and a constant matrix has no outliers.) A larger
//!   `range` gives fewer outliers; [`range_for_outlier_percent`] finds the `range` that gives a
//!   target percentage, as SqueezeLLM's users tune it by hand (1.5 to 2 for 0.45%).
//! - *sensitive weights*: the top `sensitivity` percent of the matrix's weights by Fisher value,
//!   `⌊numel · sensitivity / 100⌋` of them, chosen first. SqueezeLLM keeps `g > topk(g, count)[-1]`,
//!   which drops the last of the `count` (and errors on 0); we keep exactly `count`, ties broken by
//!   the lower flat index.
//!
//! The dense part: SqueezeLLM zeroes the sparse positions and masks their sample weight
//! (`sample_weight * (w != 0)`), so they take no part in k-means. Here they get sample weight 0
//! (passed as `excluded` to the k-means), which is the same fit without touching the weights; each
//! is coded to the entry nearest its true value and the sparse matrix holds the correction
//! `w - table[code]`, so dense + sparse gives the weight back to f32 rounding.

use crate::error::{LoadError, Result};
use crate::quant::kmeans::{self, KmeansOutput, KmeansSettings};
use crate::quant::lut::{LutMatrix, SparseOutliers};

/// Which weights go to the sparse matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutlierSettings {
    /// SqueezeLLM's `--range` factor; `None`: no outliers by range.
    pub range: Option<f64>,
    /// Percent of weights kept for their Fisher value (the paper: 0.05); 0: none.
    pub sensitivity: f64,
}

/// The sparse positions of one matrix and why they were chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierSelection {
    pub mask: Vec<bool>,
    /// The range threshold `T`, when a range was given.
    pub threshold: Option<f64>,
    pub by_sensitivity: usize,
    /// Outliers by range that were not already sensitive.
    pub by_range: usize,
}

impl OutlierSelection {
    pub fn count(&self) -> usize {
        self.by_sensitivity + self.by_range
    }

    /// Sparse weights as a percentage of all weights (what SqueezeLLM reports).
    pub fn percent(&self) -> f64 {
        percent(self.count(), self.mask.len())
    }
}

fn percent(count: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { 100.0 * count as f64 / total as f64 }
}

/// numpy's default (`linear`) quantile of ascending `sorted` values, `q` in [0, 1].
fn quantile(sorted: &[f32], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    a + (pos - lo as f64) * (b - a)
}

fn check_range(range: f64) -> Result<()> {
    if range.is_finite() && range >= 0.0 {
        Ok(())
    } else {
        Err(LoadError::InvalidSetting(format!("outlier range must be a finite number ≥ 0, got {range}")))
    }
}

/// The quartiles `(q1, q3)` of a non-empty matrix.
fn quartiles(weights: &[f32]) -> (f64, f64) {
    let mut sorted = weights.to_vec();
    sorted.sort_by(f32::total_cmp);
    (quantile(&sorted, 0.25), quantile(&sorted, 0.75))
}

fn threshold_from(q1: f64, q3: f64, range: f64) -> f64 {
    let iqr = q3 - q1;
    (q1 - range * iqr).abs().max((q3 + range * iqr).abs())
}

/// SqueezeLLM's per-matrix threshold `T` for a `range` factor (see the module docs).
pub fn range_threshold(weights: &[f32], range: f64) -> Result<f64> {
    check_range(range)?;
    crate::checkpoint::check_finite("weights", weights)?;
    if weights.is_empty() {
        return Err(LoadError::InvalidSetting("cannot compute outlier thresholds of an empty matrix".into()));
    }
    let (q1, q3) = quartiles(weights);
    Ok(threshold_from(q1, q3, range))
}

/// Picks the sparse positions of one matrix. `fisher` is required when `sensitivity > 0`.
pub fn select_outliers(weights: &[f32], fisher: Option<&[f32]>, settings: OutlierSettings) -> Result<OutlierSelection> {
    let n = weights.len();
    if !(settings.sensitivity.is_finite() && (0.0..=100.0).contains(&settings.sensitivity)) {
        return Err(LoadError::InvalidSetting(format!(
            "sensitivity is a percentage of weights, 0 to 100; got {}",
            settings.sensitivity
        )));
    }
    kmeans::data::check_inputs(weights, fisher)?;
    let mut mask = vec![false; n];
    let mut by_sensitivity = 0;
    if settings.sensitivity > 0.0 {
        let fisher = fisher.ok_or_else(|| {
            LoadError::InvalidSetting("sensitive-weight extraction needs Fisher values (a gradients file)".into())
        })?;
        let count = ((n as f64) * settings.sensitivity / 100.0).floor() as usize;
        if count > 0 {
            // Largest Fisher first, then lower index: a total order, so the selection is unique.
            let mut order: Vec<usize> = (0..n).collect();
            order.select_nth_unstable_by(count - 1, |&a, &b| fisher[b].total_cmp(&fisher[a]).then(a.cmp(&b)));
            for &i in &order[..count] {
                mask[i] = true;
            }
            by_sensitivity = count;
        }
    }
    let mut threshold = None;
    let mut by_range = 0;
    if let Some(range) = settings.range {
        let t = range_threshold(weights, range)?;
        for (m, &w) in mask.iter_mut().zip(weights) {
            if !*m && f64::from(w).abs() > t {
                *m = true;
                by_range += 1;
            }
        }
        threshold = Some(t);
    }
    Ok(OutlierSelection { mask, threshold, by_sensitivity, by_range })
}

/// The `range` for which the outliers by range of all `matrices` together make `target_percent`
/// of their weights (as close as the discrete counts allow, from above), by bisection: the
/// percentage falls as `range` grows.
pub fn range_for_outlier_percent(matrices: &[&[f32]], target_percent: f64) -> Result<f64> {
    if !(target_percent.is_finite() && target_percent > 0.0 && target_percent < 100.0) {
        return Err(LoadError::InvalidSetting(format!(
            "target outlier percentage must be in (0, 100), got {target_percent}"
        )));
    }
    // Sort each matrix once; the count for a range is then two binary searches per matrix.
    let mut sorted: Vec<(Vec<f32>, f64, f64)> = Vec::with_capacity(matrices.len());
    for m in matrices {
        crate::checkpoint::check_finite("weights", m)?;
        if m.is_empty() {
            continue;
        }
        let mut s = m.to_vec();
        s.sort_by(f32::total_cmp);
        let (q1, q3) = (quantile(&s, 0.25), quantile(&s, 0.75));
        sorted.push((s, q1, q3));
    }
    let total: usize = sorted.iter().map(|(s, ..)| s.len()).sum();
    let pct = |range: f64| {
        let count: usize = sorted
            .iter()
            .map(|(s, q1, q3)| {
                let t = threshold_from(*q1, *q3, range);
                let below = s.partition_point(|&w| f64::from(w) < -t);
                let above = s.len() - s.partition_point(|&w| f64::from(w) <= t);
                below + above
            })
            .sum();
        percent(count, total)
    };
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while pct(hi) > target_percent && hi < 1e6 {
        hi *= 2.0;
    }
    // Invariant: pct(lo) > target (or lo = 0), pct(hi) <= target.
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if pct(mid) > target_percent {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// The sparse corrections `w - table[code]` at the `mask` positions of a dense LUT matrix.
pub fn sparse_corrections(weights: &[f32], dense: &LutMatrix, mask: &[bool]) -> Result<SparseOutliers> {
    let n = dense.rows * dense.cols;
    if weights.len() != n || mask.len() != n || dense.codes.len() != n {
        return Err(LoadError::InvalidSetting(format!(
            "outlier mask ({}) and weights ({}) must match the {}x{} matrix",
            mask.len(),
            weights.len(),
            dense.rows,
            dense.cols
        )));
    }
    dense.validate("dense part")?;
    let too_big = || LoadError::InvalidSetting("the sparse matrix has more than 2^32 entries".into());
    let levels = dense.levels();
    let mut sparse =
        SparseOutliers { row_ptr: Vec::with_capacity(dense.rows + 1), col_idx: Vec::new(), values: Vec::new() };
    sparse.row_ptr.push(0);
    for r in 0..dense.rows {
        for c in 0..dense.cols {
            let i = r * dense.cols + c;
            if mask[i] {
                let entry = dense.tables[dense.table_of(c) * levels + usize::from(dense.codes[i])];
                sparse.col_idx.push(u32::try_from(c).map_err(|_| too_big())?);
                sparse.values.push((f64::from(weights[i]) - f64::from(entry)) as f32);
            }
        }
        sparse.row_ptr.push(u32::try_from(sparse.values.len()).map_err(|_| too_big())?);
    }
    Ok(sparse)
}

/// Dense-and-sparse quantization: select outliers, fit k-means on the rest, attach the CSR.
pub struct DenseAndSparse {
    /// The k-means output; `matrix.outliers` holds the sparse corrections and `objective` is
    /// over the dense (non-sparse) weights.
    pub output: KmeansOutput,
    pub selection: OutlierSelection,
}

/// [`kmeans::quantize_kmeans_report`] with SqueezeLLM's dense-and-sparse split; `sample_weights`
/// are the Fisher values (also used for the sensitive weights).
pub fn quantize_dense_and_sparse(
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    kmeans: KmeansSettings,
    outliers: OutlierSettings,
) -> Result<DenseAndSparse> {
    let selection = select_outliers(weights, sample_weights, outliers)?;
    let mut output =
        kmeans::quantize_kmeans_report(weights, rows, cols, sample_weights, Some(&selection.mask), kmeans)?;
    output.matrix.outliers = sparse_corrections(weights, &output.matrix, &selection.mask)?;
    Ok(DenseAndSparse { output, selection })
}
