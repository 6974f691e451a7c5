//! The numbers behind the page's channel view: one output channel of a layer, before and after
//! quantization, with the values its codes can stand for. A per-channel table spans only its own
//! channel, so a layer-wide histogram hides what it did; one channel shows its weights collapse
//! onto the table.
//!
//! Weights are `[in, out]` whatever the checkpoint's layout (loading transposes HF `Linear`'s
//! `[out, in]`; GPT-2's `Conv1D` is already `[in, out]`), so output channel `c` is column `c`.

use crate::error::{LoadError, Result};
use crate::quant::QuantizedLayer;
use crate::weights::LinearWeights;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ChannelPicture {
    /// The output channel shown (clamped into the layer).
    pub channel: usize,
    /// Its original weights, one per input row.
    pub before: Vec<f32>,
    /// The same weights as the quantization left them (outliers included).
    pub after: Option<Vec<f32>>,
    /// The values its codes can stand for, in the weights' units (the k-means centroids, or the
    /// uniform grid through the channel's scale and zero point; seed 000's scale applied); of
    /// the first input group when the channel has several (`groups`).
    pub table: Option<Vec<f32>>,
    /// Tables (input groups) of this channel: 1, or one per group of input rows.
    pub groups: usize,
    /// Input rows whose weight is kept exactly (sparse outliers) in this channel.
    pub outlier_rows: Vec<u32>,
    /// `Σ F (w − q)²` over the channel when `weighted` (Fisher known), else `Σ (w − q)²`: the
    /// error heatmap's measure, for one channel.
    pub error: Option<f64>,
    pub weighted: bool,
    /// Why a part is missing, in words for the page.
    pub notes: Vec<String>,
}

/// Column `channel` of a row-major `rows × cols` matrix.
pub fn column(values: &[f32], cols: usize, channel: usize) -> Vec<f32> {
    values.iter().skip(channel).step_by(cols.max(1)).copied().collect()
}

impl ChannelPicture {
    /// Output channel `channel` of `linear` (clamped to the last), with `fisher` (the layer's,
    /// `[in, out]`) weighing the error and `quantized` the after-state.
    pub fn new(linear: &LinearWeights, channel: usize, fisher: Option<&[f32]>, quantized: Option<&QuantizedLayer>) -> Result<Self> {
        let (rows, cols) = (linear.in_features(), linear.out_features());
        let original = &linear.weight.data;
        if rows == 0 || cols == 0 || original.len() != rows * cols {
            return Err(LoadError::InvalidSetting(format!("channel view: {} weights for a {rows}×{cols} layer", original.len())));
        }
        if fisher.is_some_and(|f| f.len() != original.len()) {
            return Err(LoadError::InvalidSetting(format!("channel view: {} Fisher values for {} weights", fisher.map_or(0, <[f32]>::len), original.len())));
        }
        let channel = channel.min(cols - 1);
        let before = column(original, cols, channel);
        let mut picture = Self { channel, before, after: None, table: None, groups: 1, outlier_rows: Vec::new(), error: None, weighted: fisher.is_some(), notes: Vec::new() };
        let Some(q) = quantized else {
            return Ok(picture);
        };
        if q.dequantized.len() != original.len() {
            return Err(LoadError::InvalidSetting(format!("channel view: {} quantized weights for {} original", q.dequantized.len(), original.len())));
        }
        let after = column(&q.dequantized, cols, channel);
        let fisher_column = fisher.map(|f| column(f, cols, channel));
        picture.error = Some(crate::plot_data::weighted_squared_error(&picture.before, &after, fisher_column.as_deref())?);
        picture.after = Some(after);
        let rotated = q.transform.as_ref().is_some_and(|t| t.incoherence.is_some());
        match &q.lut {
            Some(_) if rotated => picture.notes.push(
                "incoherence processing: the codes are of the rotated weights, so their table is not drawn over the original ones".into(),
            ),
            Some(lut) => {
                let scale = q.transform.as_ref().and_then(|t| t.scales.as_ref()).map_or(1.0, |s| s[channel]);
                picture.table = Some(lut.channel_values(channel, 0).iter().map(|v| v * scale).collect());
                if let Some(groups) = &lut.input_groups {
                    picture.groups = rows.div_ceil(groups.size);
                    if picture.groups > 1 {
                        picture.notes.push(format!(
                            "{} scales in this channel (groups of {} input rows): the rules are the first group's values",
                            picture.groups, groups.size
                        ));
                    }
                }
                let o = &lut.outliers;
                for r in 0..o.row_ptr.len().saturating_sub(1) {
                    let here = &o.col_idx[o.row_ptr[r] as usize..o.row_ptr[r + 1] as usize];
                    if here.contains(&(channel as u32)) {
                        picture.outlier_rows.push(r as u32);
                    }
                }
            }
            None => picture.notes.push("this quantization has no tables (its scales run over input rows): no table to draw".into()),
        }
        Ok(picture)
    }
}

#[cfg(test)]
mod tests {
    use super::column;

    #[test]
    fn columns_of_a_row_major_matrix() {
        // 2 × 3: [[0, 1, 2], [3, 4, 5]]
        let m = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(column(&m, 3, 0), vec![0.0, 3.0]);
        assert_eq!(column(&m, 3, 2), vec![2.0, 5.0]);
    }
}
