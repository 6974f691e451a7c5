//! Per-layer statistics of a Hessian, as QuIP's `compute_Hsummary` reports them: how much
//! second-order rounding can gain (the LDL trace ratio), the spectrum (ranks, condition) and the
//! incoherence of its eigenvectors. `lutlab hessian --summary` prints them with the incoherence
//! of the layer's weights, before and (with `--incoherence`) after QuIP's processing.

use super::linalg::{ldl_upper, symmetric_eigen, Square};
use crate::error::{LoadError, Result};

/// What [`summarize`] measures of one Hessian.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HessianSummary {
    pub inputs: usize,
    /// `tr(D) / tr(H)` of QuIP's `H = (Ú + I) D (Ú + I)ᵀ`, on `H` damped as the rounding damps it:
    /// LDLQ's proxy loss is bounded by a multiple of `tr(D)` where nearest rounding's is of
    /// `tr(H)`, so a small ratio means error feedback has much to gain (1: nothing).
    pub trace_ratio: f64,
    /// Eigenvalues above `n · ε · λ_max` (the numerical rank).
    pub rank: usize,
    /// Eigenvalues above `10⁻² · λ_max`.
    pub rank_1e2: usize,
    /// `λ_max / λ_min` (infinite when `λ_min ≤ 0`).
    pub condition: f64,
    /// Incoherence of the eigenvectors: `max |Q_ij| · √n` (1: spread over every input; `√n`: an
    /// eigenvector on one input).
    pub mu: f64,
    /// Ascending.
    pub eigenvalues: Vec<f64>,
}

/// The statistics of `h`, damped by `percdamp` of its mean diagonal for the trace ratio (dead
/// inputs, `H_ii = 0`, set to 1 first, as GPTQ does).
pub fn summarize(h: &Square, percdamp: f64) -> Result<HessianSummary> {
    let n = h.n;
    if n == 0 || h.data.len() != n * n || h.data.iter().any(|v| !v.is_finite()) {
        return Err(LoadError::InvalidSetting(format!("a {n}x{n} Hessian with {} finite values is not one to summarize", h.data.len())));
    }
    let (eigenvalues, vectors) = symmetric_eigen(h).ok_or_else(|| LoadError::InvalidSetting("the eigenvalue iteration did not converge".into()))?;
    let largest = eigenvalues.last().copied().unwrap_or(0.0);
    let smallest = eigenvalues[0];
    let above = |threshold: f64| eigenvalues.iter().filter(|&&l| l > threshold).count();
    let mu = vectors.data.iter().fold(0f64, |m, v| m.max(v.abs())) * (n as f64).sqrt();
    let mut damped = h.clone();
    for i in 0..n {
        if damped.at(i, i) == 0.0 {
            damped.data[i * n + i] = 1.0;
        }
    }
    let lambda = percdamp * damped.diagonal().iter().sum::<f64>() / n as f64;
    (0..n).for_each(|i| damped.data[i * n + i] += lambda);
    let (_, d) = ldl_upper(&damped).ok_or_else(|| LoadError::InvalidSetting("the damped Hessian is not positive definite".into()))?;
    let trace_ratio = d.iter().sum::<f64>() / damped.diagonal().iter().sum::<f64>();
    Ok(HessianSummary {
        inputs: n,
        trace_ratio,
        rank: above(n as f64 * f64::EPSILON * largest),
        rank_1e2: above(1e-2 * largest),
        condition: if smallest > 0.0 { largest / smallest } else { f64::INFINITY },
        mu,
        eigenvalues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagonal_hessian_has_nothing_to_gain_and_coherent_eigenvectors() {
        let h = Square { n: 4, data: vec![4.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0] };
        let s = summarize(&h, 0.01).unwrap();
        assert_eq!((s.rank, s.rank_1e2), (3, 2));
        assert!(s.condition.is_infinite(), "a dead input: λ_min = 0");
        assert!((s.mu - 2.0).abs() < 1e-12, "eigenvectors on single inputs: μ = √n");
        assert!((s.trace_ratio - 1.0).abs() < 1e-12, "diagonal: D = H");
    }

    #[test]
    fn correlated_inputs_give_a_small_trace_ratio() {
        // All-ones plus a little identity: one strong direction spread over every input.
        let n = 16;
        let mut h = Square { n, data: vec![1.0; n * n] };
        (0..n).for_each(|i| h.data[i * n + i] += 0.01);
        let s = summarize(&h, 0.0).unwrap();
        assert!(s.trace_ratio < 0.1, "{}", s.trace_ratio);
        assert_eq!(s.rank_1e2, 1);
        assert!((s.condition - (n as f64 + 0.01) / 0.01).abs() < 1e-6 * s.condition);
    }
}
