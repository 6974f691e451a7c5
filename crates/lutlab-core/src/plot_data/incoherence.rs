//! The numbers behind the page's picture of QuIP's incoherence processing on one layer: its
//! Hessian's spectrum and diagonal, and its weights, before and after (rescale and the layer's
//! random rotations, exactly as `quantize --incoherence` processes it).
//!
//! Both sides are normalised so their shapes compare: eigenvalues and the diagonal by their mean
//! (`tr(H)/n`), weights by their RMS. A rotation leaves the eigenvalues as they are (only the
//! rescaling and QuIP's `+10⁻² I` move them); what it changes is how they sit on the inputs:
//! eigenvectors and weights are spread over every coordinate (a lone outlier input or weight
//! disappears; a spectrum dominated by one direction then shows on every diagonal entry).

use super::Histogram;
use crate::error::{LoadError, Result};
use crate::quant::hessian::{summarize, Square};
use crate::quant::incoherence::{incoherence_mu, layer_rotations, preprocess};
use serde::Serialize;

/// Bins of the weight histograms.
const BINS: usize = 100;

/// One side (before or after) of the picture.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// Eigenvalues of `H` over their mean, largest first.
    pub eigenvalues: Vec<f64>,
    /// `H`'s diagonal over its mean, largest first.
    pub diagonal: Vec<f64>,
    /// Incoherence of `H`'s eigenvectors, `max|Q_ij|·√n`.
    pub mu_h: f64,
    /// Incoherence of the weights, `max|W_ij|·√(mn)/‖W‖_F`.
    pub mu_w: f64,
    /// Weights over their RMS: counts on [`IncoherencePicture::edges`] (the full range of both
    /// sides, so no weight is left out).
    pub weights: Vec<u32>,
    /// The largest `|w| / RMS`.
    pub peak: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IncoherencePicture {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub edges: Vec<f64>,
    pub before: Side,
    pub after: Side,
}

/// The picture of `[rows, cols]` (`[in, out]`) `weights` with Hessian `h`, processed with the
/// rotations `quantize --incoherence --seed seed` gives layer `name`.
pub fn incoherence_picture(name: &str, weights: &[f32], rows: usize, cols: usize, h: &Square, seed: u64) -> Result<IncoherencePicture> {
    let processed = preprocess(weights, rows, cols, h, true, Some(layer_rotations(name, rows, cols, seed)))?;
    let normalised = |w: &[f32]| -> Vec<f32> {
        let rms = (w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        w.iter().map(|&v| if rms > 0.0 { (f64::from(v) / rms) as f32 } else { 0.0 }).collect()
    };
    let (w_before, w_after) = (normalised(weights), normalised(&processed.weights));
    let (lo, hi) = w_before.iter().chain(&w_after).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(f64::from(v)), hi.max(f64::from(v))));
    if !(lo < hi) {
        return Err(LoadError::InvalidSetting(format!("{name}: every weight is the same, nothing to picture")));
    }
    let side = |hessian: &Square, w: &[f32], raw: &[f32]| -> Result<Side> {
        let summary = summarize(hessian, 0.01)?;
        let mean = hessian.diagonal().iter().sum::<f64>() / rows as f64;
        let scaled = |mut v: Vec<f64>| {
            v.iter_mut().for_each(|x| *x /= mean);
            v.sort_by(|a, b| b.total_cmp(a));
            v
        };
        Ok(Side {
            eigenvalues: scaled(summary.eigenvalues),
            diagonal: scaled(hessian.diagonal()),
            mu_h: summary.mu,
            mu_w: incoherence_mu(raw, rows, cols),
            weights: Histogram::new(w, None, lo, hi, BINS)?.counts,
            peak: w.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())),
        })
    };
    let before = side(h, &w_before, weights)?;
    let after = side(&processed.hessian, &w_after, &processed.weights)?;
    let edges = Histogram { lo, hi, counts: vec![0; BINS], below: 0, above: 0, fisher_mean: None }.edges();
    Ok(IncoherencePicture { name: name.to_string(), rows, cols, edges, before, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer with one outlier weight and a Hessian dominated by one input: the processing must
    /// spread both, and keep every weight in the histograms.
    #[test]
    fn processing_spreads_an_outlier_and_a_dominant_input() {
        let (rows, cols) = (24, 12);
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut weights: Vec<f32> = (0..rows * cols).map(|_| next() as f32).collect();
        weights[5 * cols + 3] = 20.0;
        let x: Vec<f64> = (0..4 * rows * rows).map(|_| next()).collect();
        let mut h = Square::zeros(rows);
        for sample in x.chunks_exact(rows) {
            for i in 0..rows {
                for j in 0..rows {
                    h.data[i * rows + j] += sample[i] * sample[j];
                }
            }
        }
        h.data[2 * rows + 2] *= 50.0;
        let picture = incoherence_picture("h.0.mlp.c_fc", &weights, rows, cols, &h, 0).unwrap();
        let (before, after) = (&picture.before, &picture.after);
        assert!(after.mu_w < 0.5 * before.mu_w, "weights spread out: μ_W {} → {}", before.mu_w, after.mu_w);
        assert!(after.peak < 0.5 * before.peak, "the outlier is gone: {} → {}", before.peak, after.peak);
        assert!(after.diagonal[0] < 0.5 * before.diagonal[0], "the diagonal flattens: {} → {}", before.diagonal[0], after.diagonal[0]);
        for side in [before, after] {
            assert_eq!(side.weights.iter().sum::<u32>() as usize, rows * cols, "every weight is in the histogram");
            assert_eq!(side.eigenvalues.len(), rows);
            assert!(side.eigenvalues.windows(2).all(|w| w[0] >= w[1]), "largest first");
            // Normalised by the mean: the eigenvalues of H/mean sum to n, as its diagonal does.
            assert!((side.eigenvalues.iter().sum::<f64>() - rows as f64).abs() < 1e-8 * rows as f64);
        }
        assert_eq!(picture.edges.len(), BINS + 1);
    }
}
