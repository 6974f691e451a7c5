//! The tied token embedding and LM head as one more quantizable linear layer (off by default;
//! `QuantizeRequest::embeddings`, `lutlab quantize --quantize-embeddings`).
//!
//! GPT-2's head computes `logits = h · wteᵀ`: a Conv1D linear `[n_embd, vocab]` without bias whose
//! weight is `wte` transposed. (A family with an untied head, such as Llama, packs its own
//! `lm_head.weight` the same way, and the embedding stays as it is.) Quantized as that linear, through the same code as the blocks'
//! linears, each output channel is one token: per-channel tables are per-token tables, the LUT
//! kernels evaluate the logits straight from the codes, and the embedding of token `v` is column
//! `v` of the same matrix, dequantized. One copy, tied, as GPT-2 has it.
//!
//! What differs from a block's linear, and why:
//! - no Fisher weighting and no sensitive weights: `lutlab fisher` measures the blocks' linear
//!   weights only (its head runs without a gradient to `wte`), so the head's sample weights are
//!   uniform; range outliers (dense-and-sparse) apply as elsewhere;
//! - no centering: the head has no bias to fold an input shift into, and the embedding lookup has
//!   no input at all. Seed 000's scaling (a scale per output channel, i.e. per token) applies.

use crate::checkpoint::HostTensor;
use crate::quant::model::Calibration;
use crate::quant::outliers::OutlierSettings;
use crate::weights::{ModelWeights, LinearWeights};

/// The name of the quantized head in reports and in the packed file's `layers`.
pub const HEAD: &str = "lm_head";

pub fn is_head(name: &str) -> bool {
    name == HEAD
}

/// The head as an `[in, out]` linear: its weight (`wte`, or an untied `lm_head`) transposed
/// (`[embed_dim, vocab]`) and a zero bias.
pub fn head_linear(weights: &ModelWeights) -> LinearWeights {
    let (vocab, c) = (weights.config.vocab_size, weights.config.embed_dim);
    LinearWeights {
        weight: HostTensor::new(vec![c, vocab], transpose(&weights.head_weight().data, vocab, c)),
        bias: HostTensor::new(vec![vocab], vec![0.0; vocab]),
    }
}

/// Row-major `[rows, cols]` → `[cols, rows]`.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    // Output row `c` is input column `c`; tiles of 32 input rows keep the reads in cache.
    crate::parallel::for_row_chunks(&mut out, rows, |first, chunk| {
        for r0 in (0..rows).step_by(32) {
            let r1 = (r0 + 32).min(rows);
            for (i, out_row) in chunk.chunks_exact_mut(rows).enumerate() {
                let c = first + i;
                for r in r0..r1 {
                    out_row[r] = data[r * cols + c];
                }
            }
        }
    });
    out
}

/// The calibration the head's k-means gets from the model's: none (see the module docs).
pub fn head_calibration<'a>(name: &str, calibration: Calibration<'a>) -> Calibration<'a> {
    if is_head(name) { Calibration::default() } else { calibration }
}

/// The head's dense-and-sparse settings from the model's: range outliers only (sensitive weights
/// are chosen by Fisher value, which the head has not).
pub fn head_outliers(name: &str, outliers: Option<OutlierSettings>) -> Option<OutlierSettings> {
    if !is_head(name) {
        return outliers;
    }
    outliers.and_then(|o| o.range.map(|range| OutlierSettings { range: Some(range), sensitivity: 0.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let t = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(t, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(transpose(&t, 3, 2), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn the_head_keeps_range_outliers_and_drops_sensitive_ones() {
        let both = Some(OutlierSettings { range: Some(3.0), sensitivity: 0.05 });
        assert_eq!(head_outliers(HEAD, both), Some(OutlierSettings { range: Some(3.0), sensitivity: 0.0 }));
        assert_eq!(head_outliers(HEAD, Some(OutlierSettings { range: None, sensitivity: 0.05 })), None);
        assert_eq!(head_outliers("h.0.mlp.c_fc", both), both);
    }
}
