//! QuIP's `ldlbal_admm`: rounding with a feedback matrix chosen for a better worst-case bound
//! than LDLQ's. LDLQ feeds errors back through the unit-triangular `Ú` of `H = (Ú+I)D(Ú+I)ᵀ`;
//! here the strictly triangular `Z` minimising `tr((Z+I) H (Z+I)ᵀ)` **with every column of `Z`
//! of norm at most 1** (bounding how far any weight is pushed) is found by ADMM, the rounding
//! solves `ŵ = Q(ŵ − (ŵ − w) (Z+I)⁻¹)` by fixed-point iteration, and "triangle-greedy" passes
//! follow. Inputs are processed in order of increasing `H_kk` and `H` is normalised by its
//! largest diagonal entry, as QuIP does. Written from the method's description (Chee et al.
//! 2023, appendix, and the algorithm's public outline): lutlab works in values on any table grid
//! where QuIP works in integer grid units, which is the same for a uniform grid per channel.

use super::linalg::{cholesky_lower, lower_inverse, Square};
use super::rounding::{proxy_loss, Rounded, SortedTable};
use crate::error::{LoadError, Result};
use crate::parallel::map_ranges;

/// ADMM's penalty and iterations (QuIP's `rho = 0.1`, 100 iterations).
const RHO: f64 = 0.1;
const ITERATIONS: usize = 100;

/// Rounds `[rows, cols]` (`[in, out]`) weights onto per-channel `tables` (`levels` entries each,
/// channel `c` using table `c / channels_per_table`) by ldlbal-admm with `greedy_passes`
/// triangle-greedy passes; `percdamp` damps `H` first (dead inputs get `H_kk = 1` and zero weights).
pub fn round_admm(
    weights: &[f32],
    rows: usize,
    cols: usize,
    h: &Square,
    levels: usize,
    tables: &[f32],
    channels_per_table: usize,
    percdamp: f64,
    greedy_passes: usize,
) -> Result<Rounded> {
    let n = rows;
    let mut w: Vec<f64> = weights.iter().map(|&v| f64::from(v)).collect();
    let mut base = h.clone();
    for k in 0..n {
        if base.at(k, k) == 0.0 {
            base.data[k * n + k] = 1.0;
            w[k * cols..(k + 1) * cols].iter_mut().for_each(|v| *v = 0.0);
        }
    }
    let lambda = percdamp * base.diagonal().iter().sum::<f64>() / n as f64;
    (0..n).for_each(|k| base.data[k * n + k] += lambda);
    let diagonal = base.diagonal();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| diagonal[a].total_cmp(&diagonal[b]));
    let mut hp = base.permuted(&order);
    let largest = hp.diagonal().iter().fold(0f64, |m, &v| m.max(v));
    hp.data.iter_mut().for_each(|v| *v /= largest);
    let z = feedback_admm(&hp)?;
    let inverse = unit_lower_inverse(&z);
    // Ĥ = H diag(H)⁻¹ split into its strictly upper and strictly lower parts.
    let (mut upper, mut lower) = (Square::zeros(n), Square::zeros(n));
    for i in 0..n {
        for j in 0..n {
            let v = hp.at(i, j) / hp.at(j, j);
            if i < j {
                upper.data[i * n + j] = v;
            } else if j < i {
                lower.data[i * n + j] = v;
            }
        }
    }
    let feedback = Feedback { g: &inverse, upper: &upper, lower: &lower };
    let sorted: Vec<SortedTable> = tables.chunks(levels).map(SortedTable::new).collect();

    // Each output channel rounds on its own: rows of QuIP's `[out, in]` matrix are independent.
    let parts = map_ranges(cols, |range| {
        range
            .map(|c| {
                let table = &sorted[c / channels_per_table];
                let target: Vec<f64> = order.iter().map(|&r| w[r * cols + c]).collect();
                feedback.round_channel(&target, table, greedy_passes)
            })
            .collect::<Vec<_>>()
    });
    let mut codes = vec![0u8; rows * cols];
    let mut values = vec![0f32; rows * cols];
    for (c, (channel_codes, channel_values)) in parts.into_iter().flatten().enumerate() {
        for (k, &r) in order.iter().enumerate() {
            codes[r * cols + c] = channel_codes[k];
            values[r * cols + c] = channel_values[k] as f32;
        }
    }
    let proxy_loss = proxy_loss(weights, &values, rows, cols, h);
    Ok(Rounded { codes, values, proxy_loss, groups: None })
}

/// ADMM for `min tr((Z+I) H (Z+I)ᵀ)` over strictly lower `Z` with column norms ≤ 1: the `X`
/// step is the masked least-squares update through `L = chol(2H + ρI)`, the `Z` step the
/// projection of `X + U` onto the column-norm ball, `U` the scaled dual.
fn feedback_admm(h: &Square) -> Result<Square> {
    let n = h.n;
    let mut shifted = h.clone();
    shifted.data.iter_mut().for_each(|v| *v *= 2.0);
    (0..n).for_each(|i| shifted.data[i * n + i] += RHO);
    let l = cholesky_lower(&shifted).ok_or_else(|| LoadError::InvalidSetting("ldlbal-admm: 2H + ρI does not factor".into()))?;
    let l_inv = lower_inverse(&l);
    let l_inv_t = l_inv.transpose();
    let strictly_lower = |i: usize, j: usize| j < i;
    let (mut z, mut u) = (Square::zeros(n), Square::zeros(n));
    for _ in 0..ITERATIONS {
        // X = (((ρZ − ρU − 2 M⊙H) L⁻ᵀ) ⊙ M) L⁻¹
        let mut a = Square::zeros(n);
        for i in 0..n {
            for j in 0..n {
                let mh = if strictly_lower(i, j) { h.at(i, j) } else { 0.0 };
                a.data[i * n + j] = RHO * z.at(i, j) - RHO * u.at(i, j) - 2.0 * mh;
            }
        }
        let mut b = a.matmul(&l_inv_t);
        for i in 0..n {
            for j in 0..n {
                if !strictly_lower(i, j) {
                    b.data[i * n + j] = 0.0;
                }
            }
        }
        let x = b.matmul(&l_inv);
        // Z = (X + U) with each column scaled back into the unit ball; U += X − Z.
        let mut v = x.clone();
        v.data.iter_mut().zip(&u.data).for_each(|(a, b)| *a += b);
        let scale: Vec<f64> = (0..n).map(|j| 1.0 / (0..n).map(|i| v.at(i, j).powi(2)).sum::<f64>().sqrt().max(1.0)).collect();
        for i in 0..n {
            for j in 0..n {
                z.data[i * n + j] = v.at(i, j) * scale[j];
            }
        }
        for k in 0..n * n {
            u.data[k] += x.data[k] - z.data[k];
        }
    }
    Ok(z)
}

/// `(Z + I)⁻¹` for strictly lower `Z`.
fn unit_lower_inverse(z: &Square) -> Square {
    let mut unit = z.clone();
    (0..z.n).for_each(|i| unit.data[i * z.n + i] = 1.0);
    lower_inverse(&unit)
}

/// The matrices every channel's rounding multiplies by.
struct Feedback<'a> {
    /// `G = (Z + I)⁻¹`.
    g: &'a Square,
    /// `Ĥ = H diag(H)⁻¹`, strictly upper and strictly lower parts.
    upper: &'a Square,
    lower: &'a Square,
}

impl Feedback<'_> {
    /// One output channel (`target`: its weights in processing order): the fixed point of
    /// `ŵ = Q(ŵ − (ŵ − w) G)` from `Q(w)`, then triangle-greedy passes:
    /// `ŵ = Q(w + (w − ŵ₀) Ĥ_upper + (w − ŵ) Ĥ_lower)` (`ŵ₀`: at the pass's start) iterated to a
    /// fixed point; passes stop when one changes nothing.
    fn round_channel(&self, target: &[f64], table: &SortedTable, greedy_passes: usize) -> (Vec<u8>, Vec<f64>) {
        let n = target.len();
        let quantize = |x: &[f64]| -> (Vec<u8>, Vec<f64>) { x.iter().map(|&v| table.nearest(v)).unzip() };
        let (mut codes, mut values) = quantize(target);
        for _ in 0..n {
            let delta: Vec<f64> = values.iter().zip(target).map(|(a, b)| a - b).collect();
            let step = row_times(&delta, self.g);
            let next: Vec<f64> = values.iter().zip(&step).map(|(v, s)| v - s).collect();
            let (next_codes, next_values) = quantize(&next);
            if next_values == values {
                break;
            }
            (codes, values) = (next_codes, next_values);
        }
        for _ in 0..greedy_passes {
            let residual: Vec<f64> = target.iter().zip(&values).map(|(w, v)| w - v).collect();
            let pass_target: Vec<f64> = target.iter().zip(row_times(&residual, self.upper)).map(|(w, u)| w + u).collect();
            let mut steps = 0;
            for _ in 0..n {
                steps += 1;
                let residual: Vec<f64> = target.iter().zip(&values).map(|(w, v)| w - v).collect();
                let next: Vec<f64> = pass_target.iter().zip(row_times(&residual, self.lower)).map(|(t, l)| t + l).collect();
                let (next_codes, next_values) = quantize(&next);
                if next_values == values {
                    break;
                }
                (codes, values) = (next_codes, next_values);
            }
            if steps == 1 {
                break;
            }
        }
        (codes, values)
    }
}

/// `δ M` for a row vector `δ`.
fn row_times(delta: &[f64], m: &Square) -> Vec<f64> {
    let mut out = vec![0.0; m.n];
    for (i, &d) in delta.iter().enumerate() {
        if d != 0.0 {
            out.iter_mut().zip(m.row(i)).for_each(|(o, &v)| *o += d * v);
        }
    }
    out
}
