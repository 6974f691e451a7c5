//! The dense f64 linear algebra the Hessian methods need: the Cholesky factor, GPTQ's upper
//! factor of the inverse and QuIP's unit-upper LDL form (both from one Cholesky factor of the
//! reversed matrix). Matrices are square, row-major
//! `Vec<f64>`; sizes are a layer's input width (at most ~16k), so plain cache-friendly loops do,
//! and every routine is checked against its definition in the tests below.

use crate::error::{LoadError, Result};

/// A square row-major matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Square {
    pub n: usize,
    pub data: Vec<f64>,
}

impl Square {
    pub fn zeros(n: usize) -> Self {
        Self { n, data: vec![0.0; n * n] }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n);
        (0..n).for_each(|i| m.data[i * n + i] = 1.0);
        m
    }

    /// From f32 values, checking the size.
    pub fn from_f32(n: usize, values: &[f32]) -> Result<Self> {
        if values.len() != n * n {
            return Err(LoadError::InvalidSetting(format!("{} values for a {n}x{n} matrix", values.len())));
        }
        Ok(Self { n, data: values.iter().map(|&v| f64::from(v)).collect() })
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n..(i + 1) * self.n]
    }

    pub fn diagonal(&self) -> Vec<f64> {
        (0..self.n).map(|i| self.at(i, i)).collect()
    }

    pub fn transpose(&self) -> Self {
        let n = self.n;
        let mut t = Self::zeros(n);
        for i in 0..n {
            for j in 0..n {
                t.data[j * n + i] = self.data[i * n + j];
            }
        }
        t
    }

    /// `self[perm[i], perm[j]]` at `(i, j)`.
    pub fn permuted(&self, perm: &[usize]) -> Self {
        let n = self.n;
        let mut p = Self::zeros(n);
        for (i, &pi) in perm.iter().enumerate() {
            for (j, &pj) in perm.iter().enumerate() {
                p.data[i * n + j] = self.data[pi * n + pj];
            }
        }
        p
    }

    /// `self · other`, rows split over the host's cores (zeros of `self` skipped, so triangular
    /// factors cost half).
    pub fn matmul(&self, other: &Self) -> Self {
        let n = self.n;
        let parts = crate::parallel::map_ranges(n, |rows| {
            let mut out = vec![0.0; rows.len() * n];
            for (local, i) in rows.enumerate() {
                let row = &mut out[local * n..(local + 1) * n];
                for k in 0..n {
                    let a = self.data[i * n + k];
                    if a != 0.0 {
                        row.iter_mut().zip(&other.data[k * n..(k + 1) * n]).for_each(|(o, &b)| *o += a * b);
                    }
                }
            }
            out
        });
        Self { n, data: parts.concat() }
    }
}

/// The lower Cholesky factor `L` (`A = L Lᵀ`) of a symmetric positive definite `a`; `None` when a
/// pivot is not positive (not positive definite in f64).
pub fn cholesky_lower(a: &Square) -> Option<Square> {
    let n = a.n;
    let mut l = Square::zeros(n);
    for j in 0..n {
        // Row-oriented: L[j, k] for k < j from the rows already done, then the pivot.
        for k in 0..=j {
            let v = a.data[j * n + k] - dot(&l.data[j * n..j * n + k], &l.data[k * n..k * n + k]);
            if k == j {
                if !(v > 0.0) || !v.is_finite() {
                    return None;
                }
                l.data[j * n + j] = v.sqrt();
            } else {
                l.data[j * n + k] = v / l.data[k * n + k];
            }
        }
    }
    Some(l)
}

/// `x · y` with four running sums, so the compiler can keep several multiply-adds in flight
/// (a single f64 sum is one long dependency chain).
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let tail: f64 = xc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..4 {
            acc[i] += a[i] * b[i];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// `L⁻¹` of a lower triangular `l` with a non-zero diagonal, a row at a time:
/// `row i = (eᵢ − Σ_{k<i} L[i,k] · row k) / L[i,i]`, contiguous row updates throughout.
pub(super) fn lower_inverse(l: &Square) -> Square {
    let n = l.n;
    let mut inv = Square::zeros(n);
    for i in 0..n {
        let (done, rest) = inv.data.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let a = l.data[i * n + k];
            if a != 0.0 {
                // Row k of the inverse is zero beyond column k.
                row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]).for_each(|(r, &v)| *r -= a * v);
            }
        }
        let pivot = l.data[i * n + i];
        row[..=i].iter_mut().for_each(|r| *r /= pivot);
    }
    inv
}

/// The lower Cholesky factor of `a` with its rows and columns reversed (`J A J = L' L'ᵀ`),
/// which both GPTQ's and LDLQ's factors come from.
fn reversed_cholesky(a: &Square) -> Option<Square> {
    let reverse: Vec<usize> = (0..a.n).rev().collect();
    cholesky_lower(&a.permuted(&reverse))
}

/// GPTQ's `U = cholesky(A⁻¹, upper=True)` (`A⁻¹ = Uᵀ U`) without forming `A⁻¹`: with
/// `J A J = L' L'ᵀ`, `A = R Rᵀ` for the upper `R = J L' J`, so `A⁻¹ = R⁻ᵀ R⁻¹` and
/// `U = R⁻¹ = J L'⁻¹ J` (upper, positive diagonal: the unique factor).
pub fn inverse_cholesky_upper(a: &Square) -> Option<Square> {
    let n = a.n;
    let inv = lower_inverse(&reversed_cholesky(a)?);
    let mut u = Square::zeros(n);
    for i in 0..n {
        for j in 0..=i {
            u.data[(n - 1 - i) * n + (n - 1 - j)] = inv.data[i * n + j];
        }
    }
    Some(u)
}

/// QuIP's LDL form `A = (Ú + I) D (Ú + I)ᵀ` with `Ú` strictly upper triangular and `D` diagonal:
/// the usual lower LDL of `A` with its rows and columns reversed. Returns `(Ú, D)`.
pub fn ldl_upper(a: &Square) -> Option<(Square, Vec<f64>)> {
    let n = a.n;
    let l = reversed_cholesky(a)?;
    let mut unit_upper = Square::zeros(n);
    let mut d = vec![0.0; n];
    for i in 0..n {
        let pivot = l.at(i, i);
        d[n - 1 - i] = pivot * pivot;
        for j in 0..i {
            // Reversed lower (i, j) is upper (n-1-i, n-1-j); unit diagonal: divided by column
            // j's pivot.
            unit_upper.data[(n - 1 - i) * n + (n - 1 - j)] = l.at(i, j) / l.at(j, j);
        }
    }
    Some((unit_upper, d))
}

/// Eigenvalues (ascending) and eigenvectors (row `k` of the returned matrix belongs to eigenvalue
/// `k`) of a symmetric matrix: Householder reduction to tridiagonal form, then the implicit QL
/// iteration with Wilkinson-type shifts (the classic pair, as in EISPACK's `tred2`/`tql2`).
/// `O(n³)`, single-threaded: for diagnostics (`lutlab hessian --summary`), not the rounding.
/// `None` if the iteration does not converge (60 sweeps per eigenvalue).
pub fn symmetric_eigen(a: &Square) -> Option<(Vec<f64>, Square)> {
    let n = a.n;
    let (mut d, mut e, q) = tridiagonalize(a);
    // Rows of `z` are the eigenvectors being built: Qᵀ, rotated as QL proceeds.
    let mut z = q.transpose();
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let scale = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * scale {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > 60 {
                return None;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut deflated = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let (upper, lower) = z.data.split_at_mut((i + 1) * n);
                let (zi, zi1) = (&mut upper[i * n..], &mut lower[..n]);
                for (x, y) in zi.iter_mut().zip(zi1.iter_mut()) {
                    let f = *y;
                    *y = s * *x + c * f;
                    *x = c * *x - s * f;
                }
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut vectors = Square::zeros(n);
    for (k, &i) in order.iter().enumerate() {
        vectors.data[k * n..(k + 1) * n].copy_from_slice(&z.data[i * n..(i + 1) * n]);
    }
    Some((values, vectors))
}

/// `A = Q T Qᵀ` with `T` tridiagonal (diagonal `d`, off-diagonal `e[i]` between `i` and `i + 1`,
/// `e[n − 1] = 0`), by Householder reflections on the columns below the diagonal.
fn tridiagonalize(a: &Square) -> (Vec<f64>, Vec<f64>, Square) {
    let n = a.n;
    let mut t = a.data.clone();
    let mut q = Square::identity(n);
    let mut e = vec![0.0; n];
    for k in 0..n.saturating_sub(2) {
        let x: Vec<f64> = (k + 1..n).map(|i| t[i * n + k]).collect();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if x[0] > 0.0 { -norm } else { norm };
        let mut v = x;
        v[0] -= alpha;
        let v2: f64 = v.iter().map(|x| x * x).sum();
        if v2 == 0.0 {
            continue;
        }
        let beta = 2.0 / v2;
        let m = n - k - 1;
        // The trailing block A₂₂ ← H A₂₂ H with H = I − β v vᵀ, as a symmetric rank-2 update.
        let mut p = vec![0.0; m];
        for (i, pi) in p.iter_mut().enumerate() {
            let row = &t[(k + 1 + i) * n + k + 1..(k + 1 + i) * n + n];
            *pi = beta * row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        }
        let kappa = 0.5 * beta * p.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        let w: Vec<f64> = p.iter().zip(&v).map(|(p, v)| p - kappa * v).collect();
        for i in 0..m {
            let row = &mut t[(k + 1 + i) * n + k + 1..(k + 1 + i) * n + n];
            for (j, x) in row.iter_mut().enumerate() {
                *x -= v[i] * w[j] + w[i] * v[j];
            }
        }
        t[(k + 1) * n + k] = alpha;
        t[k * n + k + 1] = alpha;
        for i in k + 2..n {
            t[i * n + k] = 0.0;
            t[k * n + i] = 0.0;
        }
        // Q ← Q H.
        for r in 0..n {
            let row = &mut q.data[r * n + k + 1..r * n + n];
            let s = beta * row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
            row.iter_mut().zip(&v).for_each(|(x, v)| *x -= s * v);
        }
    }
    let d = (0..n).map(|i| t[i * n + i]).collect();
    for i in 0..n.saturating_sub(1) {
        e[i] = t[(i + 1) * n + i];
    }
    (d, e, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random symmetric positive definite matrix `B Bᵀ + n·0.01 I` (xorshift, deterministic).
    pub(crate) fn random_spd(n: usize, seed: u64) -> Square {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
        let mut a = Square::zeros(n);
        for i in 0..n {
            for j in 0..n {
                a.data[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>() + if i == j { 0.01 * n as f64 } else { 0.0 };
            }
        }
        a
    }

    fn max_diff(a: &Square, b: &Square) -> f64 {
        a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn factors_rebuild_the_matrix() {
        let a = random_spd(17, 3);
        let l = cholesky_lower(&a).unwrap();
        assert!(max_diff(&l.matmul(&l.transpose()), &a) < 1e-12);
        // Uᵀ U = A⁻¹, i.e. Uᵀ U A = I, with U upper.
        let u = inverse_cholesky_upper(&a).unwrap();
        assert!((0..17).all(|i| (0..i).all(|j| u.at(i, j) == 0.0) && u.at(i, i) > 0.0));
        assert!(max_diff(&u.transpose().matmul(&u).matmul(&a), &Square::identity(17)) < 1e-10);
        let l_inv = lower_inverse(&l);
        assert!(max_diff(&l_inv.matmul(&l), &Square::identity(17)) < 1e-12);

        let (upper, d) = ldl_upper(&a).unwrap();
        let n = a.n;
        for i in 0..n {
            for j in 0..=i {
                assert_eq!(upper.at(i, j), 0.0, "Ú must be strictly upper ({i}, {j})");
            }
        }
        let mut m = upper.clone();
        (0..n).for_each(|i| m.data[i * n + i] = 1.0);
        let mut md = m.clone();
        for i in 0..n {
            for j in 0..n {
                md.data[i * n + j] *= d[j];
            }
        }
        assert!(max_diff(&md.matmul(&m.transpose()), &a) < 1e-10);
    }

    #[test]
    fn an_indefinite_matrix_has_no_factor() {
        let mut a = Square::identity(3);
        a.data[4] = -1.0;
        assert!(cholesky_lower(&a).is_none());
        assert!(inverse_cholesky_upper(&a).is_none());
    }

    #[test]
    fn the_eigendecomposition_rebuilds_the_matrix() {
        for (n, seed) in [(1, 1), (2, 2), (9, 3), (40, 4)] {
            let mut a = random_spd(n, seed);
            // Indefinite too: shift by the mean diagonal.
            let shift = a.diagonal().iter().sum::<f64>() / n as f64;
            (0..n).for_each(|i| a.data[i * n + i] -= shift);
            let (values, vectors) = symmetric_eigen(&a).unwrap();
            assert!(values.windows(2).all(|w| w[0] <= w[1]), "ascending");
            for (k, &lambda) in values.iter().enumerate() {
                let v = vectors.row(k);
                let norm: f64 = v.iter().map(|x| x * x).sum();
                assert!((norm - 1.0).abs() < 1e-10, "n {n}: eigenvector {k} has norm {norm}");
                for i in 0..n {
                    let av: f64 = (0..n).map(|j| a.at(i, j) * v[j]).sum();
                    assert!((av - lambda * v[i]).abs() < 1e-9 * (1.0 + lambda.abs()), "n {n}: A v ≠ λ v at {k}, {i}");
                }
            }
            let trace: f64 = a.diagonal().iter().sum();
            assert!((values.iter().sum::<f64>() - trace).abs() < 1e-9 * (1.0 + trace.abs()));
        }
        // A known spectrum: diag(3, 1, 2) rotated stays {1, 2, 3}.
        let a = Square { n: 3, data: vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 2.0] };
        let (values, _) = symmetric_eigen(&a).unwrap();
        assert!(values.iter().zip([1.0, 2.0, 3.0]).all(|(a, b)| (a - b).abs() < 1e-12), "{values:?}");
    }
}
