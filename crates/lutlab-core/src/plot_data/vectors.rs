//! The picture that explains vector look-up tables (issue 20): one table's weight pairs as
//! points in the plane, its codebook's entries with their cells (the page draws the Voronoi
//! cells of the entries), and beside them the grid a scalar table of the same bits per weight
//! would put on the same points: every cell of a scalar table is a rectangle of a `2^b × 2^b`
//! product grid, while the vector codebook puts its `2^(2b)` entries where the pairs lie.
//! For vectors of 4 the pairs are each vector's first two coordinates (a projection).

use crate::quant::vector::VectorLut;
use serde::Serialize;

/// Points drawn at most: enough to show the cloud's shape, few enough for an SVG.
pub const MAX_POINTS: usize = 2500;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VectorPicture {
    /// Weights per vector (2 or 4).
    pub dim: usize,
    /// The table drawn (the one of the chosen output channel) and how many channels share it.
    pub table: usize,
    pub channels_per_table: usize,
    /// Sampled vectors' first two coordinates, `[x0, y0, x1, y1, …]`, and each one's code.
    pub points: Vec<f32>,
    pub codes: Vec<u16>,
    /// The codebook entries' first two coordinates, `[x0, y0, …]`.
    pub entries: Vec<f32>,
    /// A scalar table of `2^bits` values fitted (plain 1-D k-means) to the sampled coordinates.
    pub scalar_levels: Vec<f32>,
    /// Mean squared error per weight on the sampled vectors: their codebook entries, and the
    /// scalar table's nearest values.
    pub vector_mse: f64,
    pub scalar_mse: f64,
}

impl VectorPicture {
    /// The picture of the table serving output channel `channel` of `lut`, with `original` the
    /// layer's `[rows, cols]` weights before quantization.
    pub fn new(original: &[f32], lut: &VectorLut, channel: usize) -> Self {
        let (d, cols) = (lut.dim, lut.cols);
        let channel = channel.min(cols - 1);
        let table = channel / lut.channels_per_table;
        let channels = table * lut.channels_per_table..(table + 1) * lut.channels_per_table;
        let vectors = lut.rows / d;
        let total = vectors * channels.len();
        let step = total.div_ceil(MAX_POINTS).max(1);
        let (mut points, mut codes) = (Vec::new(), Vec::new());
        let (mut values, mut vector_error) = (Vec::new(), 0.0);
        let codebook = &lut.codebooks[table * lut.entries * d..(table + 1) * lut.entries * d];
        for i in (0..total).step_by(step) {
            let (v, c) = (i / channels.len(), channels.start + i % channels.len());
            let code = lut.codes[v * cols + c];
            let entry = &codebook[usize::from(code) * d..][..d];
            for (k, &e) in entry.iter().enumerate() {
                let w = original[(v * d + k) * cols + c];
                values.push(w);
                vector_error += f64::from(w - e).powi(2);
            }
            points.extend([original[v * d * cols + c], original[(v * d + 1) * cols + c]]);
            codes.push(code);
        }
        let entries = codebook.chunks_exact(d).flat_map(|e| [e[0], e[1]]).collect();
        let bits = lut.entries.trailing_zeros() as usize / d;
        let scalar_levels = lloyd_1d(&values, 1 << bits);
        let scalar_error: f64 = values.iter().map(|&w| f64::from(w - nearest(&scalar_levels, w)).powi(2)).sum();
        let n = values.len().max(1) as f64;
        Self {
            dim: d,
            table,
            channels_per_table: lut.channels_per_table,
            points,
            codes,
            entries,
            scalar_levels,
            vector_mse: vector_error / n,
            scalar_mse: scalar_error / n,
        }
    }
}

fn nearest(levels: &[f32], w: f32) -> f32 {
    levels.iter().copied().fold(f32::NAN, |best, l| if best.is_nan() || (w - l).abs() < (w - best).abs() { l } else { best })
}

/// Plain 1-D k-means of `values` into `k` levels (sorted), started at evenly spaced quantiles;
/// 50 Lloyd steps are plenty for a few thousand values. A level left empty keeps its place.
fn lloyd_1d(values: &[f32], k: usize) -> Vec<f32> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    if sorted.is_empty() {
        return vec![0.0; k];
    }
    let mut levels: Vec<f32> = (0..k).map(|i| sorted[((2 * i + 1) * sorted.len()) / (2 * k)]).collect();
    for _ in 0..50 {
        let (mut sum, mut count) = (vec![0f64; k], vec![0usize; k]);
        for &w in &sorted {
            let j = levels.iter().enumerate().fold(0, |best, (j, &l)| if (w - l).abs() < (w - levels[best]).abs() { j } else { best });
            sum[j] += f64::from(w);
            count[j] += 1;
        }
        let next: Vec<f32> = (0..k).map(|j| if count[j] > 0 { (sum[j] / count[j] as f64) as f32 } else { levels[j] }).collect();
        if next == levels {
            break;
        }
        levels = next;
    }
    levels.sort_by(f32::total_cmp);
    levels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::vector::{quantize_vectors, VectorSettings};
    use crate::quant::Granularity;

    /// Pairs on the diagonal (w, w + small noise): 16 entries along the diagonal beat the 4 × 4
    /// product grid a 2-bit scalar table gives, which wastes 12 of its 16 cells off the line.
    #[test]
    fn correlated_pairs_are_coded_better_by_vectors_than_by_a_scalar_grid() {
        let (rows, cols) = (512, 4);
        let mut w = vec![0f32; rows * cols];
        for v in 0..rows / 2 {
            for c in 0..cols {
                let x = ((v * 7 + c * 13) % 101) as f32 / 50.0 - 1.0;
                w[2 * v * cols + c] = x;
                w[(2 * v + 1) * cols + c] = x + 0.01 * ((v % 3) as f32 - 1.0);
            }
        }
        let settings = VectorSettings { dim: 2, bits: 2, granularity: Granularity::Tensor, max_iter: 100, seed: 1, restarts: 2 };
        let (lut, _) = quantize_vectors(&w, rows, cols, None, &settings).unwrap();
        let p = VectorPicture::new(&w, &lut, 3);
        assert_eq!((p.dim, p.table, p.entries.len(), p.scalar_levels.len()), (2, 0, 32, 4));
        assert_eq!(p.points.len(), 2 * p.codes.len());
        assert!(p.codes.len() == rows / 2 * cols, "all {} vectors fit under the cap", rows / 2 * cols);
        assert!(p.vector_mse < 0.5 * p.scalar_mse, "vectors {} vs scalars {}", p.vector_mse, p.scalar_mse);
    }

    #[test]
    fn large_tables_are_sampled_down_to_the_cap() {
        let (rows, cols) = (400, 64);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37) % 97) as f32 / 97.0 - 0.5).collect();
        let settings = VectorSettings { dim: 4, bits: 1, granularity: Granularity::Tensor, max_iter: 20, seed: 1, restarts: 1 };
        let (lut, _) = quantize_vectors(&w, rows, cols, None, &settings).unwrap();
        let p = VectorPicture::new(&w, &lut, 0);
        assert!(p.codes.len() <= MAX_POINTS && p.codes.len() > MAX_POINTS / 2, "{}", p.codes.len());
        assert_eq!((p.entries.len(), p.scalar_levels.len()), (2 * 16, 2));
    }
}
