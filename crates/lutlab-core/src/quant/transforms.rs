//! Seed 000's *scaling* and *centering*: the two exact re-parametrisations of a linear layer that
//! `smpanaro/apple-silicon-4bit-quant` applies before whole-tensor k-means (`docs/SEED000.md` is
//! the specification, with the reference's files and lines).
//!
//! Layout: GPT-2 Conv1D `[in, out]` row-major, so an *output channel* is a column (the
//! reference's `nn.Linear` row after its transpose). In the packed format's terms
//! ([`crate::quant::PackedLinear`]) a transformed layer computes
//!
//! ```text
//! y = s ⊙ ((x − μ) · Ŵ) + b'        Ŵ ≈ W ⊘ s (quantized column-wise-scaled weight)
//! b' = b + μ · W                     (W: the original, unscaled, unquantized weight)
//! ```
//!
//! which is exactly `x · W + b` before quantization, and after it `x · (s ⊙ Ŵ) + b + μ · (W − s ⊙ Ŵ)`:
//! centering corrects the quantization error on the mean input. The reference keeps the bias
//! inside the scale (`(x − μ) · Ŵ + b'/s`, then `· s`); lutlab keeps it outside, so the stored
//! bias is `b'` itself, not divided.
//!
//! - *scaling* ([`channel_scales`], [`apply_scales`]): `s_c = ± std(W[:, c])` (unbiased, `n − 1`),
//!   the sign chosen from the column's own weighted 1-D k-means (`2^bits` clusters, the exact
//!   optimum as the reference's `kmeans1d`): `−` when the most negative centroid is larger in
//!   magnitude than the most positive one, so the heavier tail always ends up positive. The
//!   Fisher weights of the later whole-tensor k-means are **not** rescaled by the reference.
//! - *centering* ([`fold_input_shift`]): `μ` is the mean input activation of the layer over the
//!   calibration positions (computed elsewhere: `lutlab_model::activations`, or
//!   [`crate::reference::linear_input_means`] on the CPU).
//!
//! [`prepare_linear`] does both in the reference's order and returns what `PackedLinear` needs.

use crate::error::{LoadError, Result};
use crate::quant::kmeans::{self, data::check_inputs, optimal_1d};

/// One scale per output column of the `[rows, cols]` weight, seed 000's definition:
/// `s_c = sign_c · std(W[:, c])`, `std` unbiased (Bessel, as `torch.Tensor.std`), and `sign_c` from
/// the exact weighted 1-D k-means of the column into `2^bits` clusters with the column's
/// `sample_weights` (the Fisher diagonal, or 1 when `None`): `−1` when `|c_min| > c_max` of the
/// centroids, else `+1`.
///
/// Rules where the reference is undefined (it divides by zero or fits NaN centroids):
/// - a column whose std is 0 or undefined (constant, or `rows < 2`) gets scale `1` (left as is);
/// - a column whose sample weights are all 0 gets sign `+1` (the reference's centroids are all NaN
///   there and its comparison is false); zero weights beside positive ones are left out of the fit
///   (lutlab's k-means rule; the reference's `kmeans1d` has no defined result for them).
///
/// Fails on NaN/Inf weights, NaN/Inf/negative sample weights, wrong lengths and bad `bits`.
pub fn channel_scales(
    weight: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    bits: u32,
) -> Result<Vec<f32>> {
    check_shape("weight", weight.len(), rows, cols)?;
    check_inputs(weight, sample_weights)?;
    let k = kmeans::levels(bits)?;
    let stds = column_stds(weight, rows, cols);
    let signs = channel_signs(weight, rows, cols, sample_weights, k)?;
    Ok(stds
        .iter()
        .zip(&signs)
        .map(|(&std, &sign)| {
            // The reference stores the std as f32 and multiplies by the sign (exact).
            let std = std as f32;
            if std > 0.0 && std.is_finite() { sign * std } else { 1.0 }
        })
        .collect())
}

/// Unbiased standard deviation of each column (f64, two passes); NaN for `rows < 2`.
pub fn column_stds(weight: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut mean = vec![0f64; cols];
    for row in weight.chunks_exact(cols) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut ss = vec![0f64; cols];
    for row in weight.chunks_exact(cols) {
        for ((s, &v), m) in ss.iter_mut().zip(row).zip(&mean) {
            let d = f64::from(v) - m;
            *s += d * d;
        }
    }
    ss.iter().map(|s| if rows < 2 { f64::NAN } else { (s / (rows - 1) as f64).sqrt() }).collect()
}

/// `±1` per column from the column's optimal weighted k-means into `k` clusters (see
/// [`channel_scales`]). Columns run in parallel on native targets.
pub fn channel_signs(
    weight: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    k: usize,
) -> Result<Vec<f32>> {
    check_shape("weight", weight.len(), rows, cols)?;
    check_inputs(weight, sample_weights)?;
    let work = |range: std::ops::Range<usize>| -> Result<Vec<f32>> {
        let (mut values, mut sw) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        range
            .map(|c| {
                values.clear();
                values.extend((0..rows).map(|r| weight[r * cols + c]));
                if let Some(s) = sample_weights {
                    sw.clear();
                    sw.extend((0..rows).map(|r| s[r * cols + c]));
                    if sw.iter().all(|&w| w == 0.0) {
                        return Ok(1.0);
                    }
                }
                let fit = optimal_1d(&values, sample_weights.map(|_| sw.as_slice()), k)
                    .map_err(|e| LoadError::InvalidSetting(format!("channel scale of column {c}: {e}")))?;
                let (lo, hi) = (fit.centroids[0], fit.centroids[fit.centroids.len() - 1]);
                Ok(if lo.abs() > hi { -1.0 } else { 1.0 })
            })
            .collect()
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(cols);
        if threads > 1 && rows * cols >= 1 << 14 {
            let chunk = cols.div_ceil(threads);
            return std::thread::scope(|scope| {
                let handles: Vec<_> = (0..cols)
                    .step_by(chunk)
                    .map(|start| scope.spawn(move || work(start..(start + chunk).min(cols))))
                    .collect();
                let mut signs = Vec::with_capacity(cols);
                for handle in handles {
                    let part = handle
                        .join()
                        .map_err(|_| LoadError::InvalidSetting("a channel-scale thread failed".into()))??;
                    signs.extend(part);
                }
                Ok(signs)
            });
        }
    }
    work(0..cols)
}

/// Divides column `c` of the row-major `[.., cols]` weight by `scales[c]` in f32, as the
/// reference's `weight.div_(output_scale)`: the matrix that then gets quantized. The bias is not
/// touched: lutlab applies it after the scale (see the module docs). Fisher weights go to the
/// k-means unchanged, as in the reference (it does not rescale them by `s²`).
pub fn apply_scales(weight: &mut [f32], cols: usize, scales: &[f32]) {
    // A caller's bug, never user input: scales come from `channel_scales` of the same matrix.
    assert_eq!(scales.len(), cols, "one scale per output column");
    for row in weight.chunks_exact_mut(cols) {
        row.iter_mut().zip(scales).for_each(|(w, s)| *w /= s);
    }
}

/// Multiplies column `c` by `scales[c]`: the inverse of [`apply_scales`] (up to f32 rounding).
pub fn unapply_scales(weight: &mut [f32], cols: usize, scales: &[f32]) {
    // As in `apply_scales`: the scales were made for this matrix.
    assert_eq!(scales.len(), cols, "one scale per output column");
    for row in weight.chunks_exact_mut(cols) {
        row.iter_mut().zip(scales).for_each(|(w, s)| *w *= s);
    }
}

/// Centering's bias compensation: `bias[c] += Σ_r mean[r] · W[r][c]` (f64 accumulation, one
/// rounding), with `W` the **original** `[rows, cols]` weight (before scaling and quantization) and
/// `mean` the layer's mean input (`rows` values), which becomes `PackedLinear::input_shift`. Then
/// `(x − mean) · W + bias' = x · W + bias` exactly in real arithmetic.
pub fn fold_input_shift(weight: &[f32], bias: &mut [f32], cols: usize, mean: &[f32]) -> Result<()> {
    let rows = mean.len();
    check_shape("weight", weight.len(), rows, cols)?;
    if bias.len() != cols {
        return Err(LoadError::InvalidSetting(format!("{} bias values for {cols} output columns", bias.len())));
    }
    crate::checkpoint::check_finite("input means", mean)?;
    let mut acc: Vec<f64> = bias.iter().map(|&b| f64::from(b)).collect();
    for (row, &mu) in weight.chunks_exact(cols).zip(mean) {
        let mu = f64::from(mu);
        acc.iter_mut().zip(row).for_each(|(a, &w)| *a += mu * f64::from(w));
    }
    bias.iter_mut().zip(&acc).for_each(|(b, &a)| *b = a as f32);
    Ok(())
}

/// A linear layer after seed 000's transforms, before quantization: quantize `weight` (with the
/// layer's Fisher weights, unchanged), then store `scales`, `input_shift` and `bias` beside the
/// codes (`PackedLinear::{scales, input_shift}`, the dense `{name}.bias`).
#[derive(Clone, Debug, PartialEq)]
pub struct TransformedLinear {
    /// `W ⊘ s` (or `W` without scaling), `[rows, cols]`: what k-means quantizes.
    pub weight: Vec<f32>,
    /// `b + μ · W` with centering, else `b`: the bias to store, applied after the scale.
    pub bias: Vec<f32>,
    pub scales: Option<Vec<f32>>,
    pub input_shift: Option<Vec<f32>>,
}

/// Seed 000's order: centering first (bias compensation from the original weight), then
/// scaling (scales from the original weight, which centering does not change). `input_mean`:
/// the layer's mean input (`None`: no centering); `scaling_bits`: `Some(bits)` to scale with
/// signs from `2^bits`-cluster k-means (`None`: no scaling); `sample_weights`: the layer's Fisher
/// diagonal (`None`: uniform), used for the signs only here.
pub fn prepare_linear(
    weight: &[f32],
    bias: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    input_mean: Option<&[f32]>,
    scaling_bits: Option<u32>,
) -> Result<TransformedLinear> {
    check_shape("weight", weight.len(), rows, cols)?;
    let mut out_bias = bias.to_vec();
    if let Some(mean) = input_mean {
        if mean.len() != rows {
            return Err(LoadError::InvalidSetting(format!("{} input means for {rows} input rows", mean.len())));
        }
        fold_input_shift(weight, &mut out_bias, cols, mean)?;
    } else if bias.len() != cols {
        return Err(LoadError::InvalidSetting(format!("{} bias values for {cols} output columns", bias.len())));
    }
    let mut out_weight = weight.to_vec();
    let scales = match scaling_bits {
        Some(bits) => {
            let s = channel_scales(weight, rows, cols, sample_weights, bits)?;
            apply_scales(&mut out_weight, cols, &s);
            Some(s)
        }
        None => None,
    };
    Ok(TransformedLinear { weight: out_weight, bias: out_bias, scales, input_shift: input_mean.map(<[f32]>::to_vec) })
}

fn check_shape(what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(len) {
        return Err(LoadError::InvalidSetting(format!("{what} has {len} values, not a {rows}x{cols} matrix")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::kmeans::rng::SplitMix64;
    use crate::quant::{Granularity, PackedLinear, quantize_optimal};

    fn random(rng: &mut SplitMix64, n: usize, spread: f64, offset: f64) -> Vec<f32> {
        (0..n).map(|_| ((rng.next_f64() - 0.5) * spread + offset) as f32).collect()
    }

    /// y = x · W + b in f64, `x: [m, rows]`.
    fn matmul(x: &[f32], w: &[f32], b: &[f32], rows: usize, cols: usize) -> Vec<f64> {
        x.chunks_exact(rows)
            .flat_map(|xr| {
                (0..cols).map(move |c| {
                    f64::from(b[c]) + (0..rows).map(|r| f64::from(xr[r]) * f64::from(w[r * cols + c])).sum::<f64>()
                })
            })
            .collect()
    }

    #[test]
    fn scales_times_scaled_weights_reproduce_the_original() {
        let mut rng = SplitMix64::new(1);
        let (rows, cols) = (37, 11);
        let w = random(&mut rng, rows * cols, 0.2, 0.01);
        let s = channel_scales(&w, rows, cols, None, 4).unwrap();
        let mut scaled = w.clone();
        apply_scales(&mut scaled, cols, &s);
        // Every scaled column has unit (unbiased) std.
        for std in column_stds(&scaled, rows, cols) {
            assert!((std - 1.0).abs() < 1e-5, "std {std}");
        }
        let mut back = scaled.clone();
        unapply_scales(&mut back, cols, &s);
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * a.abs(), "{a} vs {b}");
        }
    }

    #[test]
    fn std_is_unbiased_and_sign_follows_the_heavier_tail() {
        // Column 0: one large positive outlier → +; column 1: its mirror → −.
        let col0 = [0.0f32, 0.1, -0.1, 0.05, -0.05, 2.0];
        let (rows, cols) = (col0.len(), 2);
        let w: Vec<f32> = col0.iter().flat_map(|&v| [v, -v]).collect();
        let s = channel_scales(&w, rows, cols, None, 2).unwrap();
        let mean = col0.iter().map(|&v| f64::from(v)).sum::<f64>() / 6.0;
        let var = col0.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / 5.0;
        assert_eq!(s[0], var.sqrt() as f32);
        assert_eq!(s[1], -(var.sqrt() as f32));
    }

    #[test]
    fn weights_change_the_sign_when_they_move_the_extreme_centroids() {
        // k = 2 on {−0.7, −0.4, 0.5, 2.0}. Uniform: the optimum is {−0.7, −0.4, 0.5} | {2.0}
        // (centroids −0.2, 2.0) → +. With 2.0 nearly weightless it is {−0.7, −0.4} | {0.5, 2.0}
        // (centroids −0.55, ≈0.5015) → −.
        let values = [-0.7f32, -0.4, 0.5, 2.0];
        let uniform = optimal_1d(&values, None, 2).unwrap().centroids;
        assert!((uniform[0] + 0.2).abs() < 1e-6 && uniform[1] == 2.0, "{uniform:?}");
        assert_eq!(channel_signs(&values, 4, 1, None, 2).unwrap(), vec![1.0]);
        let sw = [1.0f32, 1.0, 1.0, 0.001];
        let fit = optimal_1d(&values, Some(&sw), 2).unwrap();
        assert!((fit.centroids[0] + 0.55).abs() < 1e-6 && (fit.centroids[1] - 0.5015).abs() < 1e-3, "{:?}", fit.centroids);
        assert_eq!(channel_signs(&values, 4, 1, Some(&sw), 2).unwrap(), vec![-1.0]);
    }

    #[test]
    fn degenerate_columns_have_a_clear_rule() {
        // Column 0 constant (std 0) → 1; column 1 normal; column 2 all-zero Fisher → sign +.
        let rows = 5;
        let w: Vec<f32> = (0..rows).flat_map(|r| [-0.3, r as f32 * 0.1, -(r as f32) * (r as f32)]).collect();
        let mut sw = vec![1.0f32; rows * 3];
        (0..rows).for_each(|r| sw[r * 3 + 2] = 0.0);
        let s = channel_scales(&w, rows, 3, Some(&sw), 4).unwrap();
        assert_eq!(s[0], 1.0);
        assert!(s[1] > 0.0);
        assert!(s[2] > 0.0, "all-zero sample weights: sign +, as the reference's NaN centroids give");
        // Uniformly the same column is dominated by its negative tail.
        assert!(channel_scales(&w, rows, 3, None, 4).unwrap()[2] < 0.0);
        // One input row: std undefined → 1.
        assert_eq!(channel_scales(&[0.5, -2.0], 1, 2, None, 4).unwrap(), vec![1.0, 1.0]);
        // NaN weights and negative sample weights are errors.
        let mut bad = w.clone();
        bad[4] = f32::NAN;
        assert!(channel_scales(&bad, rows, 3, None, 4).is_err());
        sw[0] = -1.0;
        assert!(channel_scales(&w, rows, 3, Some(&sw), 4).is_err());
        assert!(channel_scales(&w, rows, 4, None, 4).is_err(), "shape");
        assert!(channel_scales(&w, rows, 3, None, 9).is_err(), "bits");
    }

    #[test]
    fn folding_the_shift_keeps_the_layer_exact() {
        let mut rng = SplitMix64::new(2);
        let (rows, cols, m) = (24, 9, 5);
        let w = random(&mut rng, rows * cols, 0.4, 0.0);
        let b = random(&mut rng, cols, 1.0, 0.0);
        let mu = random(&mut rng, rows, 2.0, 3.0);
        let x = random(&mut rng, m * rows, 4.0, 3.0);
        let mut b2 = b.clone();
        fold_input_shift(&w, &mut b2, cols, &mu).unwrap();
        let centred: Vec<f32> = x.chunks_exact(rows).flat_map(|xr| xr.iter().zip(&mu).map(|(a, u)| a - u)).collect();
        let want = matmul(&x, &w, &b, rows, cols);
        let got = matmul(&centred, &w, &b2, rows, cols);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
        assert!(fold_input_shift(&w, &mut b2, cols, &mu[1..]).is_err());
    }

    /// The whole seed-000 layer through `PackedLinear::reference_matmul` (lutlab's kernels'
    /// reference, bias after the scale) equals the reference's forward
    /// `(((x − μ) · Ŵ) + b'/s) · s`, and without quantization error both are `x · W + b`.
    #[test]
    fn packed_fields_reproduce_the_reference_forward() {
        let mut rng = SplitMix64::new(3);
        let (rows, cols, m) = (64, 12, 4);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((rng.next_f64() - 0.5) * (0.05 + (i % cols) as f64 * 0.03)) as f32).collect();
        let b = random(&mut rng, cols, 0.5, 0.0);
        let mu = random(&mut rng, rows, 1.0, 0.5);
        let fisher: Vec<f32> = (0..rows * cols).map(|_| rng.next_f64() as f32).collect();
        let x = random(&mut rng, m * rows, 2.0, 0.5);
        let t = prepare_linear(&w, &b, rows, cols, Some(&fisher), Some(&mu), Some(4)).unwrap();
        let scales = t.scales.clone().unwrap();

        // Unquantized: the transformed layer is the original one.
        let mut packed_w = t.weight.clone();
        unapply_scales(&mut packed_w, cols, &scales);
        let centred: Vec<f32> = x.chunks_exact(rows).flat_map(|xr| xr.iter().zip(&mu).map(|(a, u)| a - u)).collect();
        let exact = matmul(&x, &w, &b, rows, cols);
        for (g, e) in matmul(&centred, &packed_w, &t.bias, rows, cols).iter().zip(&exact) {
            assert!((g - e).abs() < 1e-5 * (1.0 + e.abs()));
        }

        // Quantized: 8 bits whole tensor, Fisher-weighted (unchanged weights), then packed.
        let lut = quantize_optimal(&t.weight, rows, cols, Some(&fisher), None, 8, Granularity::Tensor).unwrap().matrix;
        let w_hat = lut.dequantize();
        let mut packed = PackedLinear::from_lut(&lut).unwrap();
        packed.scales = t.scales.clone();
        packed.input_shift = t.input_shift.clone();
        packed.validate("test").unwrap();
        let y = packed.reference_matmul(&x, m, Some(&t.bias));
        // The reference's forward: bias divided by s inside, output times s.
        let inner_bias: Vec<f32> = t.bias.iter().zip(&scales).map(|(b, s)| b / s).collect();
        let reference: Vec<f64> = matmul(&centred, &w_hat, &inner_bias, rows, cols)
            .iter()
            .enumerate()
            .map(|(i, v)| v * f64::from(scales[i % cols]))
            .collect();
        for (g, r) in y.iter().zip(&reference) {
            assert!((f64::from(*g) - r).abs() < 1e-5 * (1.0 + r.abs()), "{g} vs {r}");
        }
        // And at 8 bits the quantized layer is close to the original.
        let err: f64 = y.iter().zip(&exact).map(|(g, e)| (f64::from(*g) - e).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = exact.iter().map(|e| e * e).sum::<f64>().sqrt();
        assert!(err / norm < 0.02, "relative error {}", err / norm);
    }

    #[test]
    fn without_transforms_prepare_is_the_identity() {
        let w = [0.5f32, -1.0, 0.25, 2.0];
        let t = prepare_linear(&w, &[0.1, 0.2], 2, 2, None, None, None).unwrap();
        assert_eq!(t, TransformedLinear { weight: w.to_vec(), bias: vec![0.1, 0.2], scales: None, input_shift: None });
        assert!(prepare_linear(&w, &[0.1], 2, 2, None, None, None).is_err());
        assert!(prepare_linear(&w, &[0.1, 0.2], 2, 2, None, Some(&[1.0]), None).is_err());
    }
}
