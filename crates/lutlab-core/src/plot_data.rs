//! Numbers behind the page's pictures, computed where the weights are (Rust) so the page only
//! draws: weight histograms with the Fisher weight per bin, Fisher-weighted quantization error,
//! and where a layer sits in the model (block × matrix) for heatmaps.

use crate::error::{LoadError, Result};

pub mod channel;
pub mod incoherence;
pub mod vectors;

/// Counts of values in `bins` equal bins over `[lo, hi)` (the last bin includes `hi`); values
/// outside fall into `below` / `above` so nothing is silently dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u32>,
    pub below: u32,
    pub above: u32,
    /// Mean Fisher value of the weights in each bin (0 for an empty bin), when Fisher is known.
    pub fisher_mean: Option<Vec<f64>>,
}

impl Histogram {
    /// Histogram of `values` over `[lo, hi]`; `fisher` (same length) gives each bin's mean
    /// sensitivity. Errors on a bad range, no bins, or a Fisher slice of another length.
    pub fn new(values: &[f32], fisher: Option<&[f32]>, lo: f64, hi: f64, bins: usize) -> Result<Self> {
        if bins == 0 || lo >= hi || !lo.is_finite() || !hi.is_finite() {
            return Err(LoadError::InvalidSetting(format!("histogram: {bins} bins over [{lo}, {hi}]")));
        }
        if let Some(f) = fisher.filter(|f| f.len() != values.len()) {
            return Err(LoadError::InvalidSetting(format!("histogram: {} Fisher values for {} weights", f.len(), values.len())));
        }
        let mut counts = vec![0u32; bins];
        let mut fisher_sum = fisher.map(|_| vec![0f64; bins]);
        let (mut below, mut above) = (0, 0);
        let width = (hi - lo) / bins as f64;
        for (i, &v) in values.iter().enumerate() {
            let v = f64::from(v);
            if v < lo {
                below += 1;
                continue;
            }
            if v > hi {
                above += 1;
                continue;
            }
            let bin = (((v - lo) / width) as usize).min(bins - 1);
            counts[bin] += 1;
            if let (Some(sum), Some(f)) = (fisher_sum.as_mut(), fisher) {
                sum[bin] += f64::from(f[i]);
            }
        }
        let fisher_mean = fisher_sum.map(|sum| sum.iter().zip(&counts).map(|(s, &n)| if n > 0 { s / f64::from(n) } else { 0.0 }).collect());
        Ok(Self { lo, hi, counts, below, above, fisher_mean })
    }

    /// Left edge of every bin, then `hi`: `bins + 1` numbers.
    pub fn edges(&self) -> Vec<f64> {
        let width = (self.hi - self.lo) / self.counts.len() as f64;
        (0..=self.counts.len()).map(|i| self.lo + width * i as f64).collect()
    }
}

/// The range that holds all but `tail` of the values at each end (by sorted position), so a few
/// extreme weights do not squeeze the bulk into one bin; widened slightly when all values are
/// equal. Errors on no values or non-finite ones.
pub fn central_range(values: &[f32], tail: f64) -> Result<(f64, f64)> {
    if values.is_empty() {
        return Err(LoadError::InvalidSetting("histogram of no weights".into()));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(LoadError::InvalidSetting("histogram: the weights are not all finite".into()));
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let last = sorted.len() - 1;
    let cut = ((last as f64) * tail.clamp(0.0, 0.5)).floor() as usize;
    let (lo, hi) = (f64::from(sorted[cut]), f64::from(sorted[last - cut]));
    Ok(if lo < hi { (lo, hi) } else { (lo - 0.5, hi + 0.5) })
}

/// What quantizing costs the loss, to second order: `Σ F_i (w_i − q_i)²` with the Fisher
/// diagonal `F` (SqueezeLLM's objective), or the plain sum of squared errors without Fisher.
pub fn weighted_squared_error(original: &[f32], quantized: &[f32], fisher: Option<&[f32]>) -> Result<f64> {
    if original.len() != quantized.len() || fisher.is_some_and(|f| f.len() != original.len()) {
        return Err(LoadError::InvalidSetting(format!(
            "error of {} weights against {} quantized ({} Fisher values)",
            original.len(),
            quantized.len(),
            fisher.map_or(0, <[f32]>::len)
        )));
    }
    let squared = original.iter().zip(quantized).map(|(a, b)| f64::from(a - b).powi(2));
    Ok(match fisher {
        Some(f) => squared.zip(f).map(|(e, &f)| e * f64::from(f)).sum(),
        None => squared.sum(),
    })
}

/// Mean of `values` in f64 (0 for none).
pub fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64
}

/// `h.3.mlp.c_fc` (or `h.3.mlp.c_fc.weight`) → `(3, "mlp.c_fc")`, and likewise
/// `model.layers.3.mlp.up_proj` → `(3, "mlp.up_proj")` (any family's block prefix): the block and
/// the matrix, the two axes of a heatmap over the model.
pub fn block_and_matrix(name: &str) -> Option<(usize, &str)> {
    let rest = ["h.", "model.layers.", "model.decoder.layers."].iter().find_map(|p| name.strip_prefix(p))?;
    let (block, matrix) = rest.split_once('.')?;
    Some((block.parse().ok()?, matrix.strip_suffix(".weight").unwrap_or(matrix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_and_fisher_means_per_bin() {
        let values = [0.0, 0.1, 0.9, 1.0, 0.5, -1.0, 2.0];
        let fisher = [1.0, 3.0, 2.0, 4.0, 10.0, 100.0, 100.0];
        let h = Histogram::new(&values, Some(&fisher), 0.0, 1.0, 2).unwrap();
        // [0, 0.5): 0.0, 0.1 · [0.5, 1]: 0.9, 1.0 (the top edge), 0.5
        assert_eq!(h.counts, vec![2, 3]);
        assert_eq!((h.below, h.above), (1, 1));
        assert_eq!(h.fisher_mean, Some(vec![2.0, 16.0 / 3.0]));
        assert_eq!(h.edges(), vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn histogram_rejects_bad_input() {
        assert!(Histogram::new(&[1.0], None, 1.0, 1.0, 4).is_err());
        assert!(Histogram::new(&[1.0], None, 0.0, 1.0, 0).is_err());
        assert!(Histogram::new(&[1.0, 2.0], Some(&[1.0]), 0.0, 1.0, 4).is_err());
        assert_eq!(Histogram::new(&[0.25], None, 0.0, 1.0, 4).unwrap().fisher_mean, None);
    }

    #[test]
    fn central_range_drops_the_tails() {
        let mut values: Vec<f32> = (0..1001).map(|i| i as f32 / 1000.0).collect();
        values.push(1e6);
        let (lo, hi) = central_range(&values, 0.001).unwrap();
        assert!((lo - 0.001).abs() < 1e-6, "{lo}");
        assert!((hi - 1.0).abs() < 1e-6, "{hi}");
        assert_eq!(central_range(&[2.0, 2.0], 0.01).unwrap(), (1.5, 2.5));
        assert!(central_range(&[], 0.01).is_err());
        assert!(central_range(&[f32::NAN], 0.01).is_err());
    }

    #[test]
    fn weighted_error_weighs_by_fisher() {
        let w = [1.0, 2.0, 3.0];
        let q = [1.5, 2.0, 1.0];
        assert_eq!(weighted_squared_error(&w, &q, None).unwrap(), 0.25 + 4.0);
        assert_eq!(weighted_squared_error(&w, &q, Some(&[4.0, 9.0, 0.5])).unwrap(), 1.0 + 2.0);
        assert!(weighted_squared_error(&w, &q[..2], None).is_err());
        assert!(weighted_squared_error(&w, &q, Some(&[1.0])).is_err());
    }

    #[test]
    fn names_split_into_block_and_matrix() {
        assert_eq!(block_and_matrix("h.3.mlp.c_fc"), Some((3, "mlp.c_fc")));
        assert_eq!(block_and_matrix("h.11.attn.c_attn.weight"), Some((11, "attn.c_attn")));
        assert_eq!(block_and_matrix("wte"), None);
        assert_eq!(block_and_matrix("h.x.attn"), None);
        assert_eq!(block_and_matrix("model.layers.2.self_attn.q_proj.weight"), Some((2, "self_attn.q_proj")));
        assert_eq!(block_and_matrix("model.decoder.layers.0.fc1"), Some((0, "fc1")));
        assert_eq!(mean(&[1.0, 2.0]), 1.5);
        assert_eq!(mean(&[]), 0.0);
    }
}
