//! Rounding a weight matrix with a Hessian: GPTQ, QuIP's LDLQ, greedy coordinate passes, and
//! plain nearest rounding, all onto the same grids (look-up tables per output channel, or uniform
//! scales re-fitted per group of input rows).
//!
//! The weights are `[in, out]`; the Hessian `H` is `[in, in]` over the input features. Input
//! feature `k` (a *row* here, GPTQ's column) is rounded in turn, and its error is fed forward into
//! the rows not yet rounded. GPTQ and LDLQ are one loop with different feedback:
//!
//! - GPTQ: `U` = upper Cholesky factor of `H⁻¹`; row `j > k` gets `−U[k,j]/U[k,k] · e_k`, with
//!   `e_k` = (row `k` as updated) − (its rounding).
//! - LDLQ: `H = (Ú + I) D (Ú + I)ᵀ`; row `j > k` gets `Ú[k,j] · e_k`, with `e_k` = (row `k` as
//!   given) − (its rounding).
//!
//! QuIP (Theorem 6) shows the two give the same result; `tests/hessian_methods.rs` checks it. Updates
//! inside a block of `blocksize` rows are applied at once, the rest lazily per block (GPTQ's
//! "lazy batch updates"), which changes nothing but the order of additions. Output channels are
//! independent given `H`, so they are split over the CPU's cores.

use super::linalg::{cholesky_lower, inverse_cholesky_upper, ldl_upper, parallelism, Square};
use faer::{linalg::matmul::matmul, Accum, Mat, MatMut, MatRef, Par};
use crate::error::{LoadError, Result};
use crate::parallel::map_ranges;
use crate::profile;
use crate::quant::uniform::{quantize_uniform, UniformGranularity, UniformResult, UniformSettings};

/// Which error feedback rounds the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// None: round-to-nearest (the starting point of the greedy passes).
    Nearest,
    Gptq,
    Ldlq,
    /// QuIP's `ldlbal_admm` (`quant::hessian::admm`): its own feedback matrix, order and passes.
    LdlbalAdmm,
}

/// How one matrix is rounded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundingSettings {
    pub feedback: Feedback,
    /// Round the input features in order of decreasing `H[k,k]` (GPTQ's `--act-order`, the "R"
    /// of QuIP's LDLQ-RG).
    pub act_order: bool,
    /// Greedy coordinate-descent passes over the proxy loss after the first rounding (the "G"
    /// of LDLQ-RG; QuIP's `--npasses`).
    pub greedy_passes: usize,
    /// Rows updated together (GPTQ's `--blocksize`, 128).
    pub blocksize: usize,
    /// Damping added to the diagonal as a fraction of its mean (GPTQ's `--percdamp`, 0.01).
    pub percdamp: f64,
}

impl Default for RoundingSettings {
    fn default() -> Self {
        Self { feedback: Feedback::Gptq, act_order: false, greedy_passes: 0, blocksize: 128, percdamp: 0.01 }
    }
}

/// Where each weight may land.
#[derive(Clone, Debug)]
pub enum Grid {
    /// Tables fitted beforehand (k-means, or a uniform grid per tensor/channel/output group):
    /// `tables[t * levels..]` in code order; output channel `c` uses table `c / channels_per_table`.
    Tables { levels: usize, tables: Vec<f32>, channels_per_table: usize },
    /// A uniform grid per output channel and group of `size` input rows (GPTQ's `--groupsize`),
    /// fitted with `settings` (granularity ignored) when the group's first row is reached, on the
    /// weights as updated so far; or, `static_groups`, on the original weights before rounding.
    InputGroups { size: usize, settings: UniformSettings, static_groups: bool },
}

/// A rounded matrix.
#[derive(Clone, Debug)]
pub struct Rounded {
    /// `[in, out]` codes into the grid's tables (for input groups, into the tables fitted as
    /// the rounding went; `values` holds what they decode to).
    pub codes: Vec<u8>,
    /// `[in, out]`: the value each weight now has (its table entry, or kept exactly).
    pub values: Vec<f32>,
    /// `tr(ΔW H ΔWᵀ)` with the given (undamped) `H`, summed over output channels.
    pub proxy_loss: f64,
    /// For input groups: the scale and zero point each group's grid was fitted with.
    pub groups: Option<FittedGroups>,
}

/// The uniform grid of every input group: `[rows / size, cols]` row-major, as
/// `UniformResult`'s per-group scales and zero points (`table = (grid[code] − zp) · scale`).
#[derive(Clone, Debug, PartialEq)]
pub struct FittedGroups {
    pub scales: Vec<f32>,
    pub zero_points: Vec<f32>,
}

/// Rounding with a Hessian somewhere other than this CPU (the GPU rounder of `lutlab-model`).
/// `None`: this case is not handled there (the caller then runs [`round_with_hessian`]).
pub trait HessianRounder: Sync {
    #[allow(clippy::too_many_arguments)]
    fn round(&self, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, exact: Option<&[bool]>, settings: &RoundingSettings) -> Option<Result<Rounded>>;
}

/// Rounds `weights` (`[rows, cols]` = `[in, out]`) onto `grid`, feeding errors back through `h`
/// (`[rows, rows]`, as accumulated: `(2/N) Σ x xᵀ`). `exact` marks weights kept as they are
/// (dense-and-sparse outliers; with feedback, at their updated value).
pub fn round_with_hessian(
    weights: &[f32],
    rows: usize,
    cols: usize,
    h: &Square,
    grid: &Grid,
    exact: Option<&[bool]>,
    settings: &RoundingSettings,
) -> Result<Rounded> {
    check_inputs(weights, rows, cols, h, grid, exact, settings)?;
    if settings.feedback == Feedback::LdlbalAdmm {
        let Grid::Tables { levels, tables, channels_per_table } = grid else {
            return Err(LoadError::InvalidSetting("ldlbal-admm rounds onto fixed tables: use per-channel or per-tensor grids, not input groups".into()));
        };
        if exact.is_some() {
            return Err(LoadError::InvalidSetting("ldlbal-admm does not keep dense-and-sparse outliers".into()));
        }
        return super::admm::round_admm(weights, rows, cols, h, *levels, tables, *channels_per_table, settings.percdamp, settings.greedy_passes);
    }
    let mut w: Vec<f64> = weights.iter().map(|&v| f64::from(v)).collect();
    zero_dead_inputs(h, &mut w, cols);
    let phase = profile::start();
    // Layers reading one input (q, k, v) share its factor (`shared`).
    let settings_key = vec![settings.percdamp.to_bits(), u64::from(settings.act_order), settings.feedback as u64];
    let prepared = super::shared::factor_of(h, settings_key, || prepare(h, settings))?;
    let Prepared { order, hp, coefficients } = &*prepared;
    profile::stop("host: damping and factor", phase);
    let static_fit = match grid {
        Grid::InputGroups { size, settings: uniform, static_groups: true } => Some(fit_uniform(weights, rows, cols, uniform, UniformGranularity::InputGroup(*size))?),
        _ => None,
    };
    let sorted = match grid {
        Grid::Tables { levels, tables, .. } => tables.chunks(*levels).map(SortedTable::new).collect(),
        _ => Vec::new(),
    };
    let static_tables = static_fit.as_ref().map(|fit| fit.tables.as_slice());
    let job = Job { w: &w, rows, cols, order, hp, coefficients: coefficients.as_ref(), grid, sorted: &sorted, static_tables, exact, settings };
    let phase = profile::start();
    let parts = map_ranges(cols, |range| job.run(range));
    profile::stop("host: row loop", phase);
    let phase = profile::start();

    let mut codes = vec![0u8; rows * cols];
    let mut values = vec![0f32; rows * cols];
    let mut groups = match (grid, static_fit) {
        (Grid::InputGroups { .. }, Some(fit)) => Some(FittedGroups { scales: fit.scales, zero_points: fit.zero_points }),
        (Grid::InputGroups { size, .. }, None) => Some(FittedGroups { scales: vec![0.0; rows / size * cols], zero_points: vec![0.0; rows / size * cols] }),
        _ => None,
    };
    for part in parts {
        let part = part?;
        let m = part.cols.len();
        for (k, &row) in order.iter().enumerate() {
            for (c, col) in part.cols.clone().enumerate() {
                codes[row * cols + col] = part.codes[k * m + c];
                values[row * cols + col] = part.values[k * m + c] as f32;
            }
        }
        if let Some(all) = &mut groups {
            for (g, (scales, zero_points)) in part.fitted_groups.iter().enumerate() {
                let at = g * cols + part.cols.start;
                all.scales[at..at + m].copy_from_slice(scales);
                all.zero_points[at..at + m].copy_from_slice(zero_points);
            }
        }
    }
    let proxy_loss = proxy_loss(weights, &values, rows, cols, h);
    profile::stop("host: gather and proxy loss", phase);
    Ok(Rounded { codes, values, proxy_loss, groups })
}

/// `tr(ΔW H ΔWᵀ)` of a whole `[rows, cols]` matrix (all output channels), for reports:
/// `Σ Δ ⊙ (H Δ)`.
pub fn proxy_loss(original: &[f32], rounded: &[f32], rows: usize, cols: usize, h: &Square) -> f64 {
    let delta: Vec<f64> = rounded.iter().zip(original).map(|(&q, &w)| f64::from(q) - f64::from(w)).collect();
    let mut hd = Mat::<f64>::zeros(rows, cols);
    matmul(hd.as_mut(), Accum::Replace, h.view(), MatRef::from_row_major_slice(&delta, rows, cols), 1.0, parallelism());
    (0..rows).map(|i| (0..cols).map(|c| delta[i * cols + c] * hd[(i, c)]).sum::<f64>()).sum()
}

fn check_inputs(
    weights: &[f32],
    rows: usize,
    cols: usize,
    h: &Square,
    grid: &Grid,
    exact: Option<&[bool]>,
    settings: &RoundingSettings,
) -> Result<()> {
    let bad = |reason: String| Err(LoadError::InvalidSetting(reason));
    if weights.len() != rows * cols || rows == 0 || cols == 0 {
        return bad(format!("{} weights given for a {rows}x{cols} matrix", weights.len()));
    }
    if h.n != rows {
        return bad(format!("the Hessian is {0}x{0} but the layer has {rows} inputs", h.n));
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        return bad(format!("weight {i} (input {}, output {}) is {}", i / cols, i % cols, weights[i]));
    }
    if let Some(i) = h.data.iter().position(|v| !v.is_finite()) {
        return bad(format!("the Hessian has a non-finite entry at ({}, {}): were the activations finite?", i / rows, i % rows));
    }
    if let Some(i) = h.diagonal().iter().position(|&d| d < 0.0) {
        return bad(format!("the Hessian's diagonal is negative at input {i}: not a Hessian of squared errors"));
    }
    if exact.is_some_and(|e| e.len() != rows * cols) {
        return bad("the exact-weight mask does not match the matrix".into());
    }
    if settings.blocksize == 0 {
        return bad("blocksize must be at least 1".into());
    }
    if !(settings.percdamp >= 0.0 && settings.percdamp.is_finite()) {
        return bad(format!("percdamp {} must be a non-negative number", settings.percdamp));
    }
    match grid {
        Grid::Tables { levels, tables, channels_per_table } => {
            if *levels == 0 || *channels_per_table == 0 || !cols.is_multiple_of(*channels_per_table) || tables.len() != cols / channels_per_table * levels {
                return bad(format!("{} table entries do not fit {cols} channels at {levels} levels", tables.len()));
            }
            if tables.iter().any(|v| !v.is_finite()) {
                return bad("a table entry is not finite".into());
            }
        }
        Grid::InputGroups { size, settings: uniform, static_groups } => {
            UniformGranularity::InputGroup(*size).groups(rows, cols)?;
            UniformSettings { granularity: UniformGranularity::Channel, ..*uniform }.validate(*size, cols)?;
            if settings.act_order && !static_groups {
                return bad(
                    "act-order with input groups needs static groups (--static-groups): groups fitted as rows are reached \
                     would then mix rows from all over the matrix, which a packed group cannot store"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// GPTQ's dead inputs (a zero diagonal: the input never fired) contribute nothing: their weights
/// are zeroed (and [`prepare`] sets their diagonal to 1).
fn zero_dead_inputs(h: &Square, w: &mut [f64], cols: usize) {
    for k in 0..h.n {
        if h.at(k, k) == 0.0 {
            w[k * cols..(k + 1) * cols].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// What the rounding loop needs from `h`, which depends on nothing else (so the layers reading
/// one input share it): the processing order (by decreasing `H[k,k]` with act-order), `H + λI` in
/// that order, and the feedback coefficients (see [`feedback_coefficients`]).
struct Prepared {
    order: Vec<usize>,
    hp: Square,
    coefficients: Option<Square>,
}

/// [`Prepared`] for `h`: λ = `percdamp` · mean diagonal, after dead inputs get `H[k,k] = 1`. If
/// the damped Hessian does not factor, λ is raised tenfold once; then the layer is refused.
fn prepare(h: &Square, settings: &RoundingSettings) -> Result<Prepared> {
    let n = h.n;
    // One working copy, damped in place (a 3072-wide Hessian is 75 MB: copies cost as much as
    // the factor's arithmetic).
    let mut damped = h.clone();
    for k in 0..n {
        if damped.data[k * n + k] == 0.0 {
            damped.data[k * n + k] = 1.0;
        }
    }
    let mean = damped.diagonal().iter().sum::<f64>() / n as f64;
    let percdamp = settings.percdamp;
    let mut added = 0.0;
    for factor in [1.0, 10.0] {
        let lambda = factor * percdamp * mean;
        (0..n).for_each(|k| damped.data[k * n + k] += lambda - added);
        added = lambda;
        let mut order: Vec<usize> = (0..n).collect();
        if settings.act_order {
            let diagonal = damped.diagonal();
            order.sort_by(|&a, &b| diagonal[b].total_cmp(&diagonal[a]));
        }
        let hp = if settings.act_order { damped.permuted(&order) } else { std::mem::replace(&mut damped, Square::zeros(0)) };
        match feedback_coefficients(&hp, settings.feedback) {
            Some(coefficients) => return Ok(Prepared { order, hp, coefficients }),
            // Not positive definite: damp more (from the unpermuted matrix).
            None if !settings.act_order => damped = hp,
            None => {}
        }
    }
    Err(LoadError::InvalidSetting(format!(
        "the Hessian is not positive definite even with damping {} (10 × percdamp {percdamp}): raise --percdamp or calibrate on more text",
        10.0 * percdamp
    )))
}

/// The strictly upper `[n, n]` matrix `A` with row `j > k` getting `A[k,j] · e_k` (`Some(None)`
/// for no feedback), or `None` when `hp` does not factor (is not positive definite).
fn feedback_coefficients(hp: &Square, feedback: Feedback) -> Option<Option<Square>> {
    let n = hp.n;
    match feedback {
        // No factor is used, but the Hessian must still be one the passes can trust.
        Feedback::Nearest | Feedback::LdlbalAdmm => cholesky_lower(hp).map(|_| None),
        Feedback::Gptq => {
            // A[k, j] = −U[k, j] / U[k, k], row by row in place (U is upper: the rest is zero).
            let mut a = inverse_cholesky_upper(hp)?;
            for (k, row) in a.data.chunks_exact_mut(n).enumerate() {
                let pivot = row[k];
                row[k] = 0.0;
                row[k + 1..].iter_mut().for_each(|v| *v = -*v / pivot);
            }
            Some(Some(a))
        }
        Feedback::Ldlq => ldl_upper(hp).map(|(unit_upper, _)| Some(unit_upper)),
    }
}

/// Uniform tables for `[rows, cols]` values at `granularity`, in code order (the grid of input
/// groups, here and in the GPU rounder).
pub fn fit_uniform(values: &[f32], rows: usize, cols: usize, settings: &UniformSettings, granularity: UniformGranularity) -> Result<UniformResult> {
    let settings = UniformSettings { granularity, ..*settings };
    quantize_uniform(values, rows, cols, &settings)
}

/// One table's entries sorted, with their codes and the midpoints between neighbours, for
/// nearest-entry search.
pub(super) struct SortedTable {
    values: Vec<f64>,
    codes: Vec<u8>,
    midpoints: Vec<f64>,
}

impl SortedTable {
    pub(super) fn new(table: &[f32]) -> Self {
        let mut entries: Vec<(f64, u8)> = table.iter().enumerate().map(|(code, &v)| (f64::from(v), code as u8)).collect();
        entries.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let values: Vec<f64> = entries.iter().map(|e| e.0).collect();
        let midpoints = values.windows(2).map(|p| 0.5 * (p[0] + p[1])).collect();
        Self { codes: entries.iter().map(|e| e.1).collect(), values, midpoints }
    }

    /// The nearest entry's code and value; a tie goes to the smaller value.
    pub(super) fn nearest(&self, x: f64) -> (u8, f64) {
        let i = self.midpoints.partition_point(|&m| m < x);
        (self.codes[i], self.values[i])
    }
}

/// Everything the per-channel-range workers share.
struct Job<'a> {
    /// `[rows, cols]` weights in original row order (dead inputs zeroed).
    w: &'a [f64],
    rows: usize,
    cols: usize,
    /// Processing position → original row.
    order: &'a [usize],
    /// The damped Hessian in processing order.
    hp: &'a Square,
    coefficients: Option<&'a Square>,
    grid: &'a Grid,
    sorted: &'a [SortedTable],
    /// Static input groups: `[groups, cols, levels]`.
    static_tables: Option<&'a [f32]>,
    exact: Option<&'a [bool]>,
    settings: &'a RoundingSettings,
}

/// One worker's output channels, rows in processing order.
struct Part {
    cols: std::ops::Range<usize>,
    codes: Vec<u8>,
    values: Vec<f64>,
    /// Dynamic input groups: each group's scales and zero points for these channels.
    fitted_groups: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Job<'_> {
    fn run(&self, range: std::ops::Range<usize>) -> Result<Part> {
        let (n, m) = (self.rows, range.len());
        // Rows in processing order, this worker's channels only.
        let original: Vec<f64> = self.order.iter().flat_map(|&r| self.w[r * self.cols + range.start..r * self.cols + range.end].iter().copied()).collect();
        let exact = |k: usize, c: usize| self.exact.is_some_and(|e| e[self.order[k] * self.cols + range.start + c]);
        let mut tables = ChannelTables::new(self, range.clone());
        let mut work = original.clone();
        let mut codes = vec![0u8; n * m];
        let mut values = vec![0f64; n * m];
        let blocksize = self.settings.blocksize;
        let mut errors = vec![0f64; blocksize * m];
        // A dynamic input group is fitted on rows that have every earlier error applied, so a
        // batch of rows ends where such a group starts. (GPTQ's own code fits groups inside a
        // batch on rows still missing that batch's updates; with the usual group = batch = 128
        // the two agree.)
        let group_start = match self.grid {
            Grid::InputGroups { size, static_groups: false, .. } => *size,
            _ => n,
        };
        let mut b0 = 0;
        while b0 < n {
            let b1 = (b0 + blocksize).min(n).min((b0 / group_start + 1) * group_start);
            for k in b0..b1 {
                tables.enter_row(k, &work, n)?;
                for c in 0..m {
                    let target = work[k * m + c];
                    let (code, mut value) = tables.get(k, c).nearest(target);
                    if exact(k, c) {
                        value = target;
                    }
                    codes[k * m + c] = code;
                    values[k * m + c] = value;
                    let reference = if self.settings.feedback == Feedback::Ldlq { original[k * m + c] } else { target };
                    errors[(k - b0) * m + c] = reference - value;
                }
                if let Some(a) = self.coefficients {
                    let e = &errors[(k - b0) * m..(k - b0 + 1) * m];
                    for j in k + 1..b1 {
                        axpy(&mut work[j * m..(j + 1) * m], a.at(k, j), e);
                    }
                }
            }
            if let Some(a) = self.coefficients
                && b1 < n
            {
                // The lazy batch update, one product: rows b1.. += A[b0..b1, b1..]ᵀ · errors.
                // One thread: the workers already use every core.
                let later = MatMut::from_row_major_slice_mut(&mut work[b1 * m..], n - b1, m);
                let block = MatRef::from_row_major_slice_with_stride(&a.data[b0 * n + b1..], b1 - b0, n - b1, n);
                let errors = MatRef::from_row_major_slice(&errors[..(b1 - b0) * m], b1 - b0, m);
                matmul(later, Accum::Add, block.transpose(), errors, 1.0, Par::Seq);
            }
            b0 = b1;
        }
        for _ in 0..self.settings.greedy_passes {
            self.greedy_pass(&original, &mut codes, &mut values, &tables, m, &exact);
        }
        Ok(Part { cols: range, codes, values, fitted_groups: tables.fitted })
    }

    /// One coordinate-descent pass over the proxy loss `Σ_c Δ_cᵀ H Δ_c`: each weight in turn
    /// moves to the grid value nearest its best value given all others, `w − (HΔ)_k,excl / H_kk`.
    fn greedy_pass(&self, original: &[f64], codes: &mut [u8], values: &mut [f64], tables: &ChannelTables, m: usize, exact: &dyn Fn(usize, usize) -> bool) {
        let n = self.rows;
        let h = self.hp;
        let delta: Vec<f64> = values.iter().zip(original).map(|(q, w)| q - w).collect();
        // R = H · Δ, kept current as weights move.
        let mut r = vec![0f64; n * m];
        let delta_view = MatRef::from_row_major_slice(&delta, n, m);
        matmul(MatMut::from_row_major_slice_mut(&mut r, n, m), Accum::Replace, h.view(), delta_view, 1.0, Par::Seq);
        let mut change = vec![0f64; m];
        for k in 0..n {
            let hkk = h.at(k, k);
            for c in 0..m {
                change[c] = 0.0;
                if exact(k, c) {
                    continue;
                }
                let d = values[k * m + c] - original[k * m + c];
                let best = original[k * m + c] - (r[k * m + c] - hkk * d) / hkk;
                let (code, value) = tables.get(k, c).nearest(best);
                change[c] = value - values[k * m + c];
                codes[k * m + c] = code;
                values[k * m + c] = value;
            }
            if change.iter().any(|&d| d != 0.0) {
                for j in 0..n {
                    axpy(&mut r[j * m..(j + 1) * m], h.at(j, k), &change);
                }
            }
        }
    }
}

/// The tables a worker's channels round to at each row: shared fixed tables, or per input group
/// (fitted by the worker when a dynamic group starts).
struct ChannelTables<'a> {
    job: &'a Job<'a>,
    cols: std::ops::Range<usize>,
    /// Input groups: every group's sorted tables, `[group][channel]`.
    groups: Vec<Vec<SortedTable>>,
    /// Dynamic input groups: the scales and zero points of each group fitted so far.
    fitted: Vec<(Vec<f32>, Vec<f32>)>,
}

impl<'a> ChannelTables<'a> {
    fn new(job: &'a Job<'a>, cols: std::ops::Range<usize>) -> Self {
        let mut tables = Self { job, cols: cols.clone(), groups: Vec::new(), fitted: Vec::new() };
        if let (Grid::InputGroups { size, settings, .. }, Some(all)) = (job.grid, job.static_tables) {
            let levels = settings.levels();
            for g in 0..job.rows / size {
                let start = (g * job.cols + cols.start) * levels;
                let group = &all[start..start + cols.len() * levels];
                tables.groups.push(group.chunks(levels).map(SortedTable::new).collect());
            }
        }
        tables
    }

    /// Before rounding processing row `k`: a dynamic input group starting there is fitted on the
    /// rows as updated (`work`, processing order = original order for dynamic groups).
    fn enter_row(&mut self, k: usize, work: &[f64], n: usize) -> Result<()> {
        let Grid::InputGroups { size, settings, static_groups: false } = self.job.grid else { return Ok(()) };
        if !k.is_multiple_of(*size) {
            return Ok(());
        }
        let m = self.cols.len();
        let rows = (*size).min(n - k);
        let slice: Vec<f32> = work[k * m..(k + rows) * m].iter().map(|&v| v as f32).collect();
        let group = fit_uniform(&slice, rows, m, settings, UniformGranularity::Channel)?;
        self.groups.push(group.tables.chunks(settings.levels()).map(SortedTable::new).collect());
        self.fitted.push((group.scales, group.zero_points));
        Ok(())
    }

    fn get(&self, k: usize, c: usize) -> &SortedTable {
        match self.job.grid {
            Grid::Tables { channels_per_table, .. } => &self.job.sorted[(self.cols.start + c) / channels_per_table],
            Grid::InputGroups { size, .. } => &self.groups[self.job.order[k] / size][c],
        }
    }
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    if a != 0.0 {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
    }
}
