//! Scale (and zero-point) estimation for one group of weights.
//!
//! Every method ends in the same quantizer: `code = clamp(round_half_even(w / scale + zp))`
//! for integers, `code = round_to_nearest_even(w / scale)` for minifloats. All arithmetic on
//! weights, scales and zero points is f32 in a fixed order (so an independent reference can
//! match it bit for bit); losses and HQO updates accumulate in f64, sequentially in the
//! group's row-major order.
//!
//! - `stats`: symmetric `scale = absmax / D`; asymmetric over `[min(w, 0), max(w, 0)]`,
//!   `scale = (high - low) / (2^b - 1)`, `zp = -low / scale` (a float zero point, as Brevitas'
//!   LLM example without `--quantize-weight-zero-point`). `D` is `2^(b-1)` for signed ints
//!   (Brevitas' full-range int scaling: the positive end clips by one step) and the largest
//!   finite value for minifloats. `percentile:P` replaces absmax by the k-th smallest `|w|`,
//!   `k = floor(P/100 * n + 0.5)` (Brevitas' `AbsPercentile`), and for asymmetric grids max by
//!   the k-th smallest `w` and min by the `ceil((100 - P)/100 * n)`-th smallest.
//! - `mse`: the clipping range `alpha * [low, high]` for `alpha = k/100`, `k = 100..1`, that
//!   minimises the group's squared error (first minimum from `alpha = 1` down).
//! - `hqo`: half-quadratic optimisation (HQQ; Brevitas' `HalfQuadraticOptimizer*`). Symmetric:
//!   the scale, from absmax, by `scale = lower_median((w - W_e) / q)` over `w - W_e != 0, q != 0`
//!   with `W_e = shrink_lp(w - deq, beta, 0.7)`, `beta = 1e5 * 1.01^i`. Asymmetric: the zero
//!   point with the min-max scale, by `zp = mean(q - (w - W_e) / scale)` with
//!   `W_e = shrink_lp(w - deq, beta, 0.5)`, `beta = 1.01^i`. Both stop (keeping the best) when
//!   the group's mean absolute error stops falling, after at most 1000 steps.
//! - `po2` scales are rounded *up* to a power of two (Brevitas' fixed-point `CeilSte`), after
//!   each of the above produced a float scale; zero points follow the rounded scale.
//!
//! A degenerate scale (all-zero group, or an overflow: not a normal positive f32) becomes 1.

use super::format::Grid;
use crate::error::{LoadError, Result};
use std::fmt;
use std::str::FromStr;

/// How a group's scale (and zero point) is chosen; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleStats {
    /// Absmax (symmetric) or min-max (asymmetric).
    Stats,
    /// Like `Stats` with the extremes replaced by this percentile, in (0, 100].
    Percentile(f64),
    /// The clipping range that minimises the squared error.
    Mse,
    /// Half-quadratic optimisation of the scale (symmetric) or zero point (asymmetric).
    Hqo,
}

impl ScaleStats {
    pub fn check(self) -> Result<()> {
        match self {
            ScaleStats::Percentile(p) if !(p > 0.0 && p <= 100.0) => Err(LoadError::InvalidSetting(format!(
                "percentile {p} is outside (0, 100]: give the share of weights (in percent) the range must cover"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ScaleStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleStats::Stats => f.write_str("stats"),
            ScaleStats::Percentile(p) => write!(f, "percentile:{p}"),
            ScaleStats::Mse => f.write_str("mse"),
            ScaleStats::Hqo => f.write_str("hqo"),
        }
    }
}

impl FromStr for ScaleStats {
    type Err = LoadError;
    /// `stats` (or `absmax`, `minmax`), `percentile:P`, `mse`, `hqo`.
    fn from_str(s: &str) -> Result<Self> {
        let stats = match s.trim() {
            "stats" | "absmax" | "minmax" => ScaleStats::Stats,
            "mse" => ScaleStats::Mse,
            "hqo" => ScaleStats::Hqo,
            other => {
                let p = other.strip_prefix("percentile:").and_then(|p| p.parse::<f64>().ok()).ok_or_else(|| {
                    LoadError::InvalidSetting(format!("scale statistics `{s}`: use stats, percentile:P, mse or hqo"))
                })?;
                ScaleStats::Percentile(p)
            }
        };
        stats.check()?;
        Ok(stats)
    }
}

/// Whether scales are any float or a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleType {
    Float,
    PowerOfTwo,
}

impl fmt::Display for ScaleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScaleType::Float => "float",
            ScaleType::PowerOfTwo => "po2",
        })
    }
}

impl FromStr for ScaleType {
    type Err = LoadError;
    /// `float` (or `float_scale`), `po2` (or `po2_scale`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "float" | "float_scale" => Ok(ScaleType::Float),
            "po2" | "po2_scale" | "pow2" => Ok(ScaleType::PowerOfTwo),
            _ => Err(LoadError::InvalidSetting(format!("scale type `{s}`: use float or po2"))),
        }
    }
}

/// One group's quantization parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GroupParams {
    pub scale: f32,
    pub zero_point: f32,
}

/// The smallest power of two `>= s` (`s` a normal positive f32), capped at `2^127`.
pub fn po2_ceil(s: f32) -> f32 {
    let bits = s.to_bits();
    let exp = (bits >> 23) & 0xff;
    if bits & 0x7f_ffff == 0 || exp >= 254 {
        f32::from_bits(bits & 0x7f80_0000)
    } else {
        f32::from_bits((exp + 1) << 23)
    }
}

fn sane(s: f32) -> f32 {
    if s.is_normal() && s > 0.0 { s } else { 1.0 }
}

fn restrict(s: f32, scale_type: ScaleType) -> f32 {
    let s = sane(s);
    match scale_type {
        ScaleType::Float => s,
        ScaleType::PowerOfTwo => po2_ceil(s),
    }
}

/// `-0` becomes `+0` so zero points compare and print plainly.
fn plain(x: f32) -> f32 {
    if x == 0.0 { 0.0 } else { x }
}

/// Scale and zero point for the clipping range `[low, high]` (`low <= 0 <= high`; symmetric
/// grids use `high` as absmax).
fn params_from_range(low: f32, high: f32, grid: &Grid, symmetric: bool, scale_type: ScaleType) -> GroupParams {
    if symmetric {
        GroupParams { scale: restrict(high / grid.divisor(), scale_type), zero_point: 0.0 }
    } else {
        let scale = restrict((high - low) / grid.divisor(), scale_type);
        GroupParams { scale, zero_point: plain(-low / scale) }
    }
}

/// The k-th smallest (1-based, clamped to `1..=n`) of `values`.
fn kth_smallest(mut values: Vec<f32>, k: usize) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = k.clamp(1, values.len());
    let (_, kth, _) = values.select_nth_unstable_by(k - 1, f32::total_cmp);
    *kth
}

/// `[low, high]` from absmax / min-max, or from percentiles.
fn range(values: &[f32], symmetric: bool, percentile: Option<f64>) -> (f32, f32) {
    let n = values.len();
    match (symmetric, percentile) {
        (true, None) => (0.0, values.iter().fold(0.0f32, |m, v| m.max(v.abs()))),
        (false, None) => {
            let low = values.iter().fold(0.0f32, |m, &v| m.min(v));
            let high = values.iter().fold(0.0f32, |m, &v| m.max(v));
            (low, high)
        }
        (true, Some(p)) => {
            let k = (0.01 * p * n as f64 + 0.5).floor() as usize;
            (0.0, kth_smallest(values.iter().map(|v| v.abs()).collect(), k))
        }
        (false, Some(p)) => {
            let k_high = (0.01 * p * n as f64 + 0.5).floor() as usize;
            let k_low = (0.01 * (100.0 - p) * n as f64).ceil() as usize;
            let high = kth_smallest(values.to_vec(), k_high).max(0.0);
            let low = kth_smallest(values.to_vec(), k_low).min(0.0);
            (low, high)
        }
    }
}

fn squared_error(values: &[f32], grid: &Grid, p: GroupParams) -> f64 {
    values.iter().fold(0.0f64, |acc, &w| {
        let d =
            f64::from(w) - f64::from(grid.table_value(grid.encode(w, p.scale, p.zero_point), p.scale, p.zero_point));
        acc + d * d
    })
}

/// Dequantizes `values` into `deq` (and their grid levels into `levels`) and returns the mean
/// absolute error.
fn dequantize_group(values: &[f32], grid: &Grid, p: GroupParams, deq: &mut Vec<f32>, levels: &mut Vec<f32>) -> f64 {
    deq.clear();
    levels.clear();
    let mut sum = 0.0f64;
    for &w in values {
        let code = grid.encode(w, p.scale, p.zero_point);
        let d = grid.table_value(code, p.scale, p.zero_point);
        sum += (f64::from(w) - f64::from(d)).abs();
        deq.push(d);
        levels.push(grid.level(code));
    }
    sum / values.len().max(1) as f64
}

/// HQQ's generalised soft-thresholding: `sign(e) * max(|e| - |e|^(p-1) / beta, 0)`.
fn shrink_lp(e: f64, beta: f64, lp_norm: f64) -> f64 {
    let a = e.abs();
    let t = (1.0 / beta) * a.powf(lp_norm - 1.0);
    if a > t { (a - t).copysign(e) } else { 0.0 }
}

const HQO_ITERS: usize = 1000;
const HQO_KAPPA: f64 = 1.01;
const MSE_STEPS: u32 = 100;

/// Symmetric HQO: optimise the scale (zero point 0), from `init`.
fn hqo_scale(values: &[f32], grid: &Grid, init: GroupParams, scale_type: ScaleType) -> GroupParams {
    let (mut beta, lp_norm) = (1e5f64, 0.7f64);
    let mut candidate = init;
    let mut best = init;
    let mut best_loss = f64::INFINITY;
    let mut ratios = Vec::with_capacity(values.len());
    let (mut deq, mut levels) = (Vec::with_capacity(values.len()), Vec::with_capacity(values.len()));
    for _ in 0..HQO_ITERS {
        let loss = dequantize_group(values, grid, candidate, &mut deq, &mut levels);
        if loss >= best_loss {
            break;
        }
        best_loss = loss;
        best = candidate;
        ratios.clear();
        for ((&w, &d), &level) in values.iter().zip(&deq).zip(&levels) {
            let we = shrink_lp(f64::from(w) - f64::from(d), beta, lp_norm);
            let num = f64::from(w) - we;
            let den = f64::from(level);
            if num != 0.0 && den != 0.0 {
                ratios.push(num / den);
            }
        }
        if ratios.is_empty() {
            break;
        }
        // Lower median, as torch.nanmedian.
        let mid = (ratios.len() - 1) / 2;
        let (_, median, _) = ratios.select_nth_unstable_by(mid, f64::total_cmp);
        let scale = *median as f32;
        if !(scale.is_normal() && scale > 0.0) {
            break;
        }
        candidate = GroupParams { scale: restrict(scale, scale_type), zero_point: 0.0 };
        beta *= HQO_KAPPA;
    }
    best
}

/// Asymmetric HQO: optimise the zero point with the scale of `init`.
fn hqo_zero_point(values: &[f32], grid: &Grid, init: GroupParams) -> GroupParams {
    let (mut beta, lp_norm) = (1.0f64, 0.5f64);
    let scale = init.scale;
    let mut candidate = init;
    let mut best = init;
    let mut best_loss = f64::INFINITY;
    let (mut deq, mut levels) = (Vec::with_capacity(values.len()), Vec::with_capacity(values.len()));
    for _ in 0..HQO_ITERS {
        let loss = dequantize_group(values, grid, candidate, &mut deq, &mut levels);
        if loss >= best_loss {
            break;
        }
        best_loss = loss;
        best = candidate;
        let mut sum = 0.0f64;
        for ((&w, &d), &level) in values.iter().zip(&deq).zip(&levels) {
            let we = shrink_lp(f64::from(w) - f64::from(d), beta, lp_norm);
            sum += f64::from(level) - (f64::from(w) - we) / f64::from(scale);
        }
        let zp = (sum / values.len().max(1) as f64) as f32;
        if !zp.is_finite() {
            break;
        }
        candidate = GroupParams { scale, zero_point: plain(zp) };
        beta *= HQO_KAPPA;
    }
    best
}

/// The scale and zero point of one group (`values` in row-major order).
pub(crate) fn estimate(
    values: &[f32],
    grid: &Grid,
    symmetric: bool,
    stats: ScaleStats,
    scale_type: ScaleType,
) -> GroupParams {
    match stats {
        ScaleStats::Stats => {
            let (low, high) = range(values, symmetric, None);
            params_from_range(low, high, grid, symmetric, scale_type)
        }
        ScaleStats::Percentile(p) => {
            let (low, high) = range(values, symmetric, Some(p));
            params_from_range(low, high, grid, symmetric, scale_type)
        }
        ScaleStats::Mse => {
            let (low, high) = range(values, symmetric, None);
            let mut best = params_from_range(low, high, grid, symmetric, scale_type);
            let mut best_loss = f64::INFINITY;
            for k in (1..=MSE_STEPS).rev() {
                let alpha = k as f32 / MSE_STEPS as f32;
                let p = params_from_range(alpha * low, alpha * high, grid, symmetric, scale_type);
                let loss = squared_error(values, grid, p);
                if loss < best_loss {
                    best_loss = loss;
                    best = p;
                }
            }
            best
        }
        ScaleStats::Hqo => {
            let (low, high) = range(values, symmetric, None);
            let init = params_from_range(low, high, grid, symmetric, scale_type);
            if symmetric || grid.is_float() {
                hqo_scale(values, grid, init, scale_type)
            } else {
                hqo_zero_point(values, grid, init)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn po2_rounds_up() {
        assert_eq!(po2_ceil(1.0), 1.0);
        assert_eq!(po2_ceil(0.75), 1.0);
        assert_eq!(po2_ceil(0.5), 0.5);
        assert_eq!(po2_ceil(3.0e-3), 1.0 / 256.0);
        assert_eq!(po2_ceil(5.0), 8.0);
    }

    #[test]
    fn shrink_soft_thresholds() {
        assert_eq!(shrink_lp(0.0, 1.0, 0.5), 0.0);
        assert_eq!(shrink_lp(1e-3, 1.0, 0.5), 0.0);
        let s = shrink_lp(-4.0, 1.0, 0.5);
        assert_eq!(s, -3.5);
    }
}
