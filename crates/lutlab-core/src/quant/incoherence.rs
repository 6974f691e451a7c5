//! QuIP's incoherence processing (Chee et al. 2023, seed 004): before a layer is rounded, its
//! weights and Hessian are made "incoherent" (no entry much larger than the rest, eigenvectors
//! spread over every coordinate) by a diagonal rescaling and random orthogonal transforms on both
//! sides; the rounding then works on `W' = V W Uᵀ`, `H' = V H Vᵀ` (lutlab's `[in, out]`
//! orientation), and the layer runs as `y = Uᵀ-rotate(LUT(V-rotate(x ⊙ input_scale)))`.
//!
//! The transforms are Kronecker products of two random orthogonal factors after a random
//! permutation, `T x = (A ⊗ B)(x permuted)` with `A` `a×a`, `B` `b×b`, `a·b = n` (QuIP's
//! construction; [`kronecker_sizes`] picks the factor sizes): applying one
//! costs `O(n (a + b))`, not `O(n²)`, and storing it `a² + b² + n` numbers. A packed layer stores
//! the rotated codes with the factors and permutations (format version 3), so a runtime applies
//! the rotations in the forward pass; `export --dequantized` writes the plain weights they stand
//! for ([`Incoherence::effective_weights`]).
//!
//! QuIP's flags map as: `--pre_rescale` → [`preprocess`]'s `rescale`, `--pre_proj` → its
//! rotations, `--pre_gptqH` (dead inputs, damping) → what every lutlab Hessian method does anyway,
//! `--qfn b` → [`RmsGrid`].

use crate::error::{LoadError, Result};
use crate::quant::hessian::Square;
use crate::quant::kmeans::rng::SplitMix64;

/// A random orthogonal transform of `Rⁿ` as factors: `T x = (A ⊗ B) x_perm` with
/// `x_perm[i] = x[perm[i]]` and `(A ⊗ B) z` = `A Z Bᵀ` for `z` read as the `a×b` row-major matrix
/// `Z` (entry `i·b + j`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rotation {
    pub a: usize,
    pub b: usize,
    /// `[a, a]` row-major.
    pub factor_a: Vec<f32>,
    /// `[b, b]` row-major.
    pub factor_b: Vec<f32>,
    /// A permutation of `0..a·b`.
    pub perm: Vec<u32>,
}

impl Rotation {
    pub fn len(&self) -> usize {
        self.a * self.b
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A random transform of `Rⁿ`: Haar-distributed factors (QR of Gaussian matrices with the
    /// signs fixed so that R has a positive diagonal) of the sizes [`kronecker_sizes`] gives, and
    /// a uniformly random permutation, all from `seed`.
    pub fn random(n: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let (a, b) = kronecker_sizes(n);
        let factor_a = haar_orthogonal(a, &mut rng);
        let factor_b = haar_orthogonal(b, &mut rng);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            perm.swap(i, j);
        }
        Self { a, b, factor_a, factor_b, perm }
    }

    /// `T x`.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        let permuted: Vec<f64> = self.perm.iter().map(|&p| x[p as usize]).collect();
        kronecker(&self.factor_a, self.a, &self.factor_b, self.b, &permuted, false)
    }

    /// `Tᵀ y` (the inverse, up to the f32 rounding of the stored factors).
    pub fn apply_transpose(&self, y: &[f64]) -> Vec<f64> {
        let z = kronecker(&self.factor_a, self.a, &self.factor_b, self.b, y, true);
        let mut x = vec![0.0; z.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            x[p as usize] = z[i];
        }
        x
    }

    /// Checks the sizes, the permutation and the factors' values; `what` names the transform.
    pub fn validate(&self, n: usize, what: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: what.to_string(), reason });
        if self.a.checked_mul(self.b) != Some(n) || n == 0 {
            return bad(format!("factors of {} and {} do not make the {n} dimensions it rotates", self.a, self.b));
        }
        if self.factor_a.len() != self.a * self.a || self.factor_b.len() != self.b * self.b {
            return bad("a factor does not have its square shape".into());
        }
        if self.factor_a.iter().chain(&self.factor_b).any(|v| !v.is_finite()) {
            return bad("a factor holds a non-finite value".into());
        }
        let mut seen = vec![false; n];
        for &p in &self.perm {
            match seen.get_mut(p as usize) {
                Some(s) if !*s => *s = true,
                _ => return bad(format!("the permutation is not a permutation of 0..{n} (entry {p})")),
            }
        }
        if self.perm.len() != n {
            return bad(format!("the permutation has {} entries, expected {n}", self.perm.len()));
        }
        Ok(())
    }
}

/// `(A ⊗ B) z` = `A Z Bᵀ` (or, `transposed`, `(Aᵀ ⊗ Bᵀ) z` = `Aᵀ Z B`) for `z` as `a×b` row-major.
fn kronecker(fa: &[f32], a: usize, fb: &[f32], b: usize, z: &[f64], transposed: bool) -> Vec<f64> {
    let at = |m: &[f32], n: usize, i: usize, j: usize| f64::from(if transposed { m[j * n + i] } else { m[i * n + j] });
    // Z Bᵀ first (rows of Z times B's rows), then A times the result.
    let mut zb = vec![0.0; a * b];
    for i in 0..a {
        for j in 0..b {
            zb[i * b + j] = (0..b).map(|l| z[i * b + l] * at(fb, b, j, l)).sum();
        }
    }
    let mut out = vec![0.0; a * b];
    for i in 0..a {
        for k in 0..a {
            let aik = at(fa, a, i, k);
            if aik != 0.0 {
                out[i * b..(i + 1) * b].iter_mut().zip(&zb[k * b..(k + 1) * b]).for_each(|(o, v)| *o += aik * v);
            }
        }
    }
    out
}

/// The factor sizes `(a, b)`, `a·b = n`, of a Kronecker transform of `Rⁿ`: `b` the largest
/// divisor of `n` not above `√n` (768 → 32 × 24, 4096 → 64 × 64, 11008 → 128 × 86; a prime `n`
/// gets one dense `n × n` factor). QuIP splits `n`'s prime factors alternately instead
/// (`butterfly_factors`: 11008 → 688 × 16); the pair nearest `√n` costs the least to apply.
pub fn kronecker_sizes(n: usize) -> (usize, usize) {
    let n = n.max(1);
    let b = (1..=n).take_while(|d| d * d <= n).filter(|d| n.is_multiple_of(*d)).last().unwrap_or(1);
    (n / b, b)
}

/// A Haar-random `n×n` orthogonal matrix, row-major f32: modified Gram–Schmidt (twice, for
/// orthogonality to f64 rounding) on the columns of a Gaussian matrix, which is its QR with R's
/// diagonal positive.
fn haar_orthogonal(n: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let mut columns: Vec<Vec<f64>> = (0..n).map(|_| (0..n).map(|_| gaussian(rng)).collect()).collect();
    for j in 0..n {
        for _ in 0..2 {
            for k in 0..j {
                let dot: f64 = columns[j].iter().zip(&columns[k]).map(|(x, y)| x * y).sum();
                let (done, rest) = columns.split_at_mut(j);
                rest[0].iter_mut().zip(&done[k]).for_each(|(x, y)| *x -= dot * y);
            }
        }
        let norm = columns[j].iter().map(|x| x * x).sum::<f64>().sqrt();
        columns[j].iter_mut().for_each(|x| *x /= norm);
    }
    (0..n).flat_map(|i| columns.iter().map(move |c| c[i] as f32)).collect()
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u = 1.0 - rng.next_f64(); // (0, 1]
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// What a processed layer stores beside its rotated codes. With `x` an input row, the layer
/// computes `y = Uᵀ-rotate(LUT(V-rotate(x ⊙ input_scale))) + bias`, `V = input`, `U = output`;
/// its plain `[in, out]` weight is `diag(input_scale) · Vᵀ · Q · U` (Q: the LUT's weights).
#[derive(Clone, Debug, PartialEq)]
pub struct Incoherence {
    /// QuIP's rescaling, `1 / s` per input; `None`: none.
    pub input_scale: Option<Vec<f32>>,
    /// `V`, applied to the (scaled) input; `None`: identity.
    pub input: Option<Rotation>,
    /// `U`, whose transpose is applied to the LUT's output; `None`: identity.
    pub output: Option<Rotation>,
}

impl Incoherence {
    /// Checks every part against a `rows × cols` layer; `what` names it.
    pub fn validate(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        if let Some(scale) = &self.input_scale {
            if scale.len() != rows {
                return Err(LoadError::BadConfig { file: what.to_string(), reason: format!("{} input scales, expected {rows}", scale.len()) });
            }
            if let Some(i) = scale.iter().position(|v| !v.is_finite()) {
                return Err(LoadError::BadConfig { file: what.to_string(), reason: format!("input scale {i} is not finite") });
            }
        }
        if let Some(r) = &self.input {
            r.validate(rows, &format!("{what}: input rotation"))?;
        }
        if let Some(r) = &self.output {
            r.validate(cols, &format!("{what}: output rotation"))?;
        }
        Ok(())
    }

    /// The plain `[rows, cols]` weights `diag(input_scale) · Vᵀ · Q · U` of rotated weights `q`.
    pub fn effective_weights(&self, q: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut w: Vec<f64> = q.iter().map(|&v| f64::from(v)).collect();
        if let Some(u) = &self.output {
            // Each row r: (row · U) = (Uᵀ rowᵀ)ᵀ.
            for row in w.chunks_exact_mut(cols) {
                let rotated = u.apply_transpose(row);
                row.copy_from_slice(&rotated);
            }
        }
        if let Some(v) = &self.input {
            map_columns(&mut w, rows, cols, |column| v.apply_transpose(column));
        }
        if let Some(scale) = &self.input_scale {
            for (row, &s) in w.chunks_exact_mut(cols).zip(scale) {
                row.iter_mut().for_each(|x| *x *= f64::from(s));
            }
        }
        w.into_iter().map(|v| v as f32).collect()
    }
}

/// Replaces each column of a row-major `[rows, cols]` matrix by `f(column)`.
fn map_columns(w: &mut [f64], rows: usize, cols: usize, f: impl Fn(&[f64]) -> Vec<f64>) {
    let mut column = vec![0.0; rows];
    for c in 0..cols {
        (0..rows).for_each(|r| column[r] = w[r * cols + c]);
        let mapped = f(&column);
        (0..rows).for_each(|r| w[r * cols + c] = mapped[r]);
    }
}

/// Which of QuIP's preprocessing steps to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncoherenceSettings {
    /// `--pre_rescale`: scale input `i` by `s_i = (H̃_ii / ‖W_i‖²)^¼` (H̃ = H / max|H|).
    pub rescale: bool,
    /// `--pre_proj`: the random orthogonal transforms on both sides.
    pub project: bool,
    /// Seed of the transforms (each layer's are drawn from it and the layer's name).
    pub seed: u64,
}

/// A layer ready for rounding: weights and Hessian in the processed basis, and what undoes it.
#[derive(Clone, Debug)]
pub struct Processed {
    /// `[rows, cols]`.
    pub weights: Vec<f32>,
    pub hessian: Square,
    pub incoherence: Incoherence,
}

/// QuIP's `preproc` on `[rows, cols]` (`[in, out]`) weights and their `rows × rows` Hessian:
/// with `rescale`, `W_i ← s_i W_i` and `H ← H̃ / (s sᵀ)`; with `rotations` `(V, U)`,
/// `H ← H · n / tr(H) + 10⁻² I` (QuIP's normalisation before projecting), `W ← V W Uᵀ`,
/// `H ← V H Vᵀ`. In f64; the rotated weights are rounded to f32 at the end.
pub fn preprocess(weights: &[f32], rows: usize, cols: usize, h: &Square, rescale: bool, rotations: Option<(Rotation, Rotation)>) -> Result<Processed> {
    if weights.len() != rows * cols || h.n != rows {
        return Err(LoadError::InvalidSetting(format!("incoherence: a {rows}x{cols} layer with a {0}x{0} Hessian", h.n)));
    }
    let mut w: Vec<f64> = weights.iter().map(|&v| f64::from(v)).collect();
    let mut h = h.clone();
    let mut input_scale = None;
    if rescale {
        let largest = h.data.iter().fold(0f64, |m, v| m.max(v.abs()));
        if largest > 0.0 {
            h.data.iter_mut().for_each(|v| *v /= largest);
        }
        let s: Vec<f64> = (0..rows)
            .map(|i| {
                let diag_h = h.at(i, i).max(1e-8);
                let norm2 = w[i * cols..(i + 1) * cols].iter().map(|x| x * x).sum::<f64>().max(1e-8);
                (diag_h / norm2).sqrt().sqrt().max(1e-8)
            })
            .collect();
        for (i, row) in w.chunks_exact_mut(cols).enumerate() {
            row.iter_mut().for_each(|x| *x *= s[i]);
        }
        for i in 0..rows {
            for j in 0..rows {
                h.data[i * rows + j] /= s[i] * s[j];
            }
        }
        input_scale = Some(s.iter().map(|&v| (1.0 / v) as f32).collect());
    }
    let (input, output) = match rotations {
        Some((v, u)) => {
            if v.len() != rows || u.len() != cols {
                return Err(LoadError::InvalidSetting(format!("incoherence: rotations of {} and {} for a {rows}x{cols} layer", v.len(), u.len())));
            }
            let trace: f64 = h.diagonal().iter().sum();
            let factor = rows as f64 / (trace + 1e-8);
            h.data.iter_mut().for_each(|x| *x *= factor);
            (0..rows).for_each(|i| h.data[i * rows + i] += 1e-2);
            for row in w.chunks_exact_mut(cols) {
                let rotated = u.apply(row);
                row.copy_from_slice(&rotated);
            }
            map_columns(&mut w, rows, cols, |column| v.apply(column));
            // V H Vᵀ: V on every column, then on every row (H stays symmetric).
            map_columns(&mut h.data, rows, rows, |column| v.apply(column));
            for row in h.data.chunks_exact_mut(rows) {
                let rotated = v.apply(row);
                row.copy_from_slice(&rotated);
            }
            (Some(v), Some(u))
        }
        None => (None, None),
    };
    let weights = w.into_iter().map(|v| v as f32).collect();
    Ok(Processed { weights, hessian: h, incoherence: Incoherence { input_scale, input, output } })
}

/// The transforms of layer `name` for `settings`: `(V, U)` of sizes `rows`, `cols`, each drawn
/// from the seed and the layer's name (reproducible, different per layer).
pub fn layer_rotations(name: &str, rows: usize, cols: usize, seed: u64) -> (Rotation, Rotation) {
    // FNV-1a of the name, so each layer gets its own transforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let base = seed ^ hash;
    (Rotation::random(rows, base), Rotation::random(cols, base.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// QuIP's `qfn b` grid: `2^bits` evenly spaced values over `±s`, `s = 2.4 · rms + 10⁻¹⁶`
/// (incoherent weights are nearly Gaussian, so a multiple of the RMS bounds them better than the
/// max): entry `k` = `s (2k / (2^bits − 1) − 1)`. QuIP's code takes the RMS of the whole matrix
/// (`quantize_weight_vecbal`); `per_channel` takes it per output channel `c` instead. Held as the
/// shared levels `k − (2^bits − 1)/2` and a step `2 s_c / (2^bits − 1)` per channel, so it packs
/// as one f16 scale per channel (input groups spanning every row); the tables are
/// `level × step` in f32, exactly what the packed form decodes to.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsGrid {
    pub levels: Vec<f32>,
    pub steps: Vec<f32>,
}

impl RmsGrid {
    pub fn new(weights: &[f32], rows: usize, cols: usize, bits: u32, per_channel: bool) -> Self {
        let maxq = f64::from((1u32 << bits) - 1);
        let levels = (0..=maxq as usize).map(|k| (k as f64 - maxq / 2.0) as f32).collect();
        let step = |mean_square: f64| ((2.4 * mean_square.sqrt() + 1e-16) * 2.0 / maxq) as f32;
        let steps = if per_channel {
            (0..cols).map(|c| step((0..rows).map(|r| f64::from(weights[r * cols + c]).powi(2)).sum::<f64>() / rows as f64)).collect()
        } else {
            vec![step(weights.iter().map(|&w| f64::from(w).powi(2)).sum::<f64>() / weights.len() as f64); cols]
        };
        Self { levels, steps }
    }

    /// A table per channel, `[cols, 2^bits]`.
    pub fn tables(&self) -> Vec<f32> {
        self.steps.iter().flat_map(|&step| self.levels.iter().map(move |&level| level * step)).collect()
    }
}

/// QuIP's incoherence of a matrix: `μ = max|W_ij| · √(rows · cols) / ‖W‖_F` (1 when every entry
/// has the same magnitude; large when a few dominate).
pub fn incoherence_mu(weights: &[f32], rows: usize, cols: usize) -> f64 {
    let largest = weights.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    let norm = weights.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 { 0.0 } else { largest * ((rows * cols) as f64).sqrt() / norm }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kronecker_sizes_are_the_divisor_pair_nearest_the_square_root() {
        assert_eq!(kronecker_sizes(768), (32, 24));
        assert_eq!(kronecker_sizes(4096), (64, 64));
        assert_eq!(kronecker_sizes(11008), (128, 86));
        assert_eq!(kronecker_sizes(67), (67, 1));
        assert_eq!(kronecker_sizes(1), (1, 1));
    }

    #[test]
    fn a_rotation_is_orthogonal_and_its_transpose_undoes_it() {
        for n in [1, 12, 67, 96] {
            let t = Rotation::random(n, 3);
            t.validate(n, "test").unwrap();
            let mut rng = SplitMix64::new(9);
            let x: Vec<f64> = (0..n).map(|_| rng.next_f64() - 0.5).collect();
            let y = t.apply(&x);
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            // f32 factors: orthogonal to ~1e-7.
            assert!((norm(&y) - norm(&x)).abs() < 1e-6 * norm(&x), "n {n}");
            let back = t.apply_transpose(&y);
            assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6), "n {n}");
        }
    }

    #[test]
    fn the_kronecker_product_matches_its_dense_form() {
        let t = Rotation::random(6, 1);
        let (a, b) = (t.a, t.b);
        for col in 0..6 {
            let mut e = vec![0.0; 6];
            e[col] = 1.0;
            let y = t.apply(&e);
            // Dense (A ⊗ B) P: column `col` is column `k` of A ⊗ B, where perm[k] = col.
            let k = t.perm.iter().position(|&p| p as usize == col).unwrap();
            for (i, &yi) in y.iter().enumerate() {
                let want = f64::from(t.factor_a[(i / b) * a + k / b]) * f64::from(t.factor_b[(i % b) * b + k % b]);
                assert!((yi - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn processing_then_undoing_gives_back_the_weights_and_spreads_an_outlier() {
        let (rows, cols) = (24, 10);
        let mut rng = SplitMix64::new(5);
        let mut w: Vec<f32> = (0..rows * cols).map(|_| (rng.next_f64() - 0.5) as f32 * 0.1).collect();
        w[37] = 3.0; // one outlier
        let x: Vec<f64> = (0..rows * 40).map(|_| rng.next_f64() - 0.5).collect();
        let mut h = Square::zeros(rows);
        for i in 0..rows {
            for j in 0..rows {
                h.data[i * rows + j] = (0..40).map(|t| x[i * 40 + t] * x[j * 40 + t]).sum();
            }
        }
        let p = preprocess(&w, rows, cols, &h, true, Some(layer_rotations("l", rows, cols, 1))).unwrap();
        let back = p.incoherence.effective_weights(&p.weights, rows, cols);
        assert!(back.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-5), "undoing the processing gives W back");
        assert!(incoherence_mu(&p.weights, rows, cols) < 0.5 * incoherence_mu(&w, rows, cols));
        // The processed Hessian is V H̃' Vᵀ: still symmetric positive definite.
        assert!(crate::quant::hessian::linalg::cholesky_lower(&p.hessian).is_some());
    }

    #[test]
    fn the_rms_grid_is_quips_qfn_b() {
        let w = [1.0f32, -1.0, 1.0, -1.0]; // one column, rms 1
        let t = RmsGrid::new(&w, 4, 1, 2, true).tables();
        let want = [-2.4, -0.8, 0.8, 2.4];
        assert!(t.iter().zip(want).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6), "{t:?}");
        // QuIP's code: one RMS for the whole matrix (columns of rms 1 and 3: rms √5).
        let w = [1.0f32, 3.0, -1.0, -3.0];
        let grid = RmsGrid::new(&w, 2, 2, 1, false);
        assert_eq!(grid.steps[0], grid.steps[1]);
        assert!((f64::from(grid.steps[0]) - 2.0 * 2.4 * 5f64.sqrt()).abs() < 1e-5);
    }
}
