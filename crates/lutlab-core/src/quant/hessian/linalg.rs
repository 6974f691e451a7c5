//! The dense f64 linear algebra the Hessian methods need: the Cholesky factor, GPTQ's upper
//! factor of the inverse and QuIP's unit-upper LDL form (both from one Cholesky factor of the
//! reversed matrix), products and the symmetric eigendecomposition. Matrices are square,
//! row-major `Vec<f64>`; the work is done by `faer` (blocked and SIMD, on every core natively,
//! one thread in the browser), and every routine is checked against its definition in the
//! tests below.

use crate::error::{LoadError, Result};
use faer::{linalg::matmul::matmul, Accum, Mat, MatRef, Par, Side};

/// How many threads faer's kernels use: every core natively, the one thread in the browser.
pub(super) fn parallelism() -> Par {
    #[cfg(not(target_arch = "wasm32"))]
    {
        Par::rayon(0)
    }
    #[cfg(target_arch = "wasm32")]
    {
        Par::Seq
    }
}

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

    /// `selfᵀ`, through the one tiled copy ([`Self::from_faer`] of the transposed view).
    pub fn transpose(&self) -> Self {
        Self::from_faer(self.view().transpose())
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

    /// `self · other`.
    pub fn matmul(&self, other: &Self) -> Self {
        let mut out = Mat::<f64>::zeros(self.n, self.n);
        matmul(out.as_mut(), Accum::Replace, self.view(), other.view(), 1.0, parallelism());
        Self::from_faer(out.as_ref())
    }

    /// A faer view of the row-major data.
    pub(super) fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.data, self.n, self.n)
    }

    /// A row-major copy of faer's (column-major) result, in tiles so reads and writes both stay
    /// in cache (element by element, the copy of a 3072-wide factor took half as long as the
    /// factorization), rows split over the cores.
    pub(super) fn from_faer(m: MatRef<'_, f64>) -> Self {
        const TILE: usize = 64;
        let n = m.nrows();
        let mut data = vec![0.0; n * n];
        crate::parallel::for_row_chunks(&mut data, n, |first, rows| {
            let count = rows.len() / n.max(1);
            for i0 in (0..count).step_by(TILE) {
                for j0 in (0..n).step_by(TILE) {
                    for j in j0..(j0 + TILE).min(n) {
                        for i in i0..(i0 + TILE).min(count) {
                            rows[i * n + j] = m[(first + i, j)];
                        }
                    }
                }
            }
        });
        Self { n, data }
    }
}

/// The lower Cholesky factor `L` (`A = L Lᵀ`) of a symmetric positive definite `a`; `None` when a
/// pivot is not positive (not positive definite in f64).
pub fn cholesky_lower(a: &Square) -> Option<Square> {
    lower_factor(a.view()).map(|l| Square::from_faer(l.as_ref()))
}

/// faer's lower Cholesky factor of `a`, `None` unless every pivot is positive and finite (faer
/// stops at a non-positive pivot; a NaN one passes its test, so check here).
fn lower_factor(a: MatRef<'_, f64>) -> Option<Mat<f64>> {
    let l = a.llt(Side::Lower).ok()?.L().to_owned();
    (0..l.nrows()).all(|i| l[(i, i)] > 0.0 && l[(i, i)].is_finite()).then_some(l)
}

/// `L⁻¹` of a lower triangular `l` with a non-zero diagonal.
pub fn lower_inverse(l: &Square) -> Square {
    Square::from_faer(lower_inverse_of(l.view()).as_ref())
}

fn lower_inverse_of(l: MatRef<'_, f64>) -> Mat<f64> {
    let mut inverse = Mat::<f64>::zeros(l.nrows(), l.ncols());
    faer::linalg::triangular_inverse::invert_lower_triangular(inverse.as_mut(), l, parallelism());
    inverse
}

/// The lower Cholesky factor `L'` of `a` with its rows and columns reversed (`J A J = L' L'ᵀ`,
/// `J` the reversal, taken as a view: nothing is copied), which both GPTQ's and LDLQ's factors
/// come from.
fn reversed_cholesky(a: &Square) -> Option<Mat<f64>> {
    lower_factor(a.view().reverse_rows_and_cols())
}

/// GPTQ's `U = cholesky(A⁻¹, upper=True)` (`A⁻¹ = Uᵀ U`) without forming `A⁻¹`: with
/// `J A J = L' L'ᵀ`, `A = R Rᵀ` for the upper `R = J L' J`, so `A⁻¹ = R⁻ᵀ R⁻¹` and
/// `U = R⁻¹ = J L'⁻¹ J` (upper, positive diagonal: the unique factor).
pub fn inverse_cholesky_upper(a: &Square) -> Option<Square> {
    let inverse = lower_inverse_of(reversed_cholesky(a)?.as_ref());
    Some(Square::from_faer(inverse.as_ref().reverse_rows_and_cols()))
}

/// QuIP's LDL form `A = (Ú + I) D (Ú + I)ᵀ` with `Ú` strictly upper triangular and `D` diagonal:
/// the usual lower LDL of `A` with its rows and columns reversed. Returns `(Ú, D)`.
pub fn ldl_upper(a: &Square) -> Option<(Square, Vec<f64>)> {
    // R = J L' J is upper with A = R Rᵀ; Ú + I = R with each column divided by its pivot, and
    // D = the pivots squared.
    let mut unit_upper = Square::from_faer(reversed_cholesky(a)?.as_ref().reverse_rows_and_cols());
    let pivots = unit_upper.diagonal();
    for row in unit_upper.data.chunks_exact_mut(a.n) {
        row.iter_mut().zip(&pivots).for_each(|(v, p)| *v /= p);
    }
    (0..a.n).for_each(|i| unit_upper.data[i * a.n + i] = 0.0);
    Some((unit_upper, pivots.iter().map(|p| p * p).collect()))
}

/// Eigenvalues (ascending) and eigenvectors (row `k` of the returned matrix belongs to eigenvalue
/// `k`) of a symmetric matrix (faer's divide-and-conquer solver). `None` if it does not converge.
pub fn symmetric_eigen(a: &Square) -> Option<(Vec<f64>, Square)> {
    let eigen = a.view().self_adjoint_eigen(Side::Lower).ok()?;
    let values: Vec<f64> = (0..a.n).map(|k| eigen.S()[k]).collect();
    // Columns of U are the eigenvectors; a row-major copy of Uᵀ has them as rows.
    Some((values, Square::from_faer(eigen.U().transpose())))
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
