//! The numbers behind the page's pictures (web/plots.js draws them): Fisher sensitivity and
//! quantization error over the model's layers, and for one layer its weight histogram before and
//! after quantization, its table, and where its sparse outliers are. The bit slider lives in
//! `slider.rs` and returns the same [`LayerPicture`].

use crate::lab::{js_error, to_js, Lab, Session};
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::hessian_file::hessian_key;
use lutlab_core::plot_data::channel::ChannelPicture;
use lutlab_core::plot_data::incoherence::incoherence_picture;
use lutlab_core::plot_data::vectors::VectorPicture;
use lutlab_core::plot_data::{block_and_matrix, central_range, mean, weighted_squared_error, Histogram};
use lutlab_core::quant::QuantizedLayer;
use lutlab_core::weights::LinearWeights;
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// Bins of a layer histogram: enough to show a 4-bit table's 16 spikes apart.
const BINS: usize = 120;
/// Share of weights left out at each end of the histogram's range (they are counted aside).
const TAIL: f64 = 0.0005;

#[derive(Serialize)]
struct LayerInfo {
    name: String,
    block: usize,
    matrix: String,
    rows: usize,
    cols: usize,
}

/// One cell of a heatmap over blocks × matrices.
#[derive(Serialize)]
struct Cell {
    name: String,
    block: usize,
    matrix: String,
    value: f64,
}

#[derive(Serialize)]
struct ErrorMap {
    /// `Σ F (w − q)²` per layer when `weighted`, else the plain sum of squared errors.
    cells: Vec<Cell>,
    weighted: bool,
    label: String,
}

/// One layer, before and (when quantized) after.
#[derive(Serialize)]
pub(crate) struct LayerPicture {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Bin edges (`bins + 1`) and counts of the original weights; weights outside the edges
    /// are counted in `below` / `above`.
    pub edges: Vec<f64>,
    pub before: Vec<u32>,
    pub below: u32,
    pub above: u32,
    /// Mean Fisher value per bin, when the session has Fisher information.
    pub fisher_mean: Option<Vec<f64>>,
    /// Counts of the quantized weights in the same bins.
    pub after: Option<Vec<u32>>,
    /// The table used by output channel `channel` (scaled back when seed 000's scaling is on).
    pub centroids: Option<Vec<f32>>,
    pub channel: usize,
    pub tables: usize,
    pub bits: Option<u32>,
    pub mse: Option<f64>,
    /// `Σ F (w − q)²` over the layer, with Fisher.
    pub weighted_error: Option<f64>,
    /// Positions of the weights kept exactly (sparse outliers): input row and output column.
    pub outlier_rows: Vec<u32>,
    pub outlier_cols: Vec<u32>,
    /// Why a part is missing, in words for the page.
    pub notes: Vec<String>,
    /// Output channel `channel` up close: its weights before and after, its table, its error.
    pub channel_view: ChannelPicture,
    /// The widths the quantization's settings allow (the slider's range), when quantized.
    pub widths: Option<Vec<u32>>,
    /// Vector tables: the chosen channel's table as weight pairs, codebook entries and cells.
    pub vectors: Option<VectorPicture>,
}

impl LayerPicture {
    /// The picture of `linear` (named `name`), with `fisher` colouring the histogram and weighing
    /// the error, and `quantized` the after-state; `channel` picks the table to draw.
    pub(crate) fn new(name: &str, linear: &LinearWeights, fisher: Option<&[f32]>, quantized: Option<&QuantizedLayer>, channel: usize) -> Result<Self, JsError> {
        let (rows, cols) = (linear.in_features(), linear.out_features());
        let original = linear.weight.data.as_slice();
        let (lo, hi) = central_range(original, TAIL).map_err(|e| js_error(format!("{name}: {e}")))?;
        let before = Histogram::new(original, fisher, lo, hi, BINS).map_err(|e| js_error(format!("{name}: {e}")))?;
        let mut notes = Vec::new();
        if fisher.is_none() {
            notes.push("no Fisher information yet (step 2): bars are not coloured by sensitivity".to_string());
        }
        let channel = channel.min(cols.saturating_sub(1));
        let channel_view = ChannelPicture::new(linear, channel, fisher, quantized).map_err(|e| js_error(format!("{name}: {e}")))?;
        let mut picture = Self {
            name: name.to_string(),
            rows,
            cols,
            edges: before.edges(),
            before: before.counts,
            below: before.below,
            above: before.above,
            fisher_mean: before.fisher_mean,
            after: None,
            centroids: None,
            channel,
            tables: 0,
            bits: None,
            mse: None,
            weighted_error: None,
            outlier_rows: Vec::new(),
            outlier_cols: Vec::new(),
            notes,
            channel_view,
            widths: None,
            vectors: None,
        };
        let Some(q) = quantized else {
            picture.notes.push("not quantized yet (step 3): only the original weights are shown".to_string());
            return Ok(picture);
        };
        let after = Histogram::new(&q.dequantized, None, lo, hi, BINS).map_err(|e| js_error(format!("{name}: {e}")))?;
        picture.after = Some(after.counts);
        picture.mse = Some(q.mse);
        picture.weighted_error = match fisher {
            Some(f) => Some(weighted_squared_error(original, &q.dequantized, Some(f)).map_err(js_error)?),
            None => None,
        };
        let rotated = q.transform.as_ref().is_some_and(|t| t.incoherence.is_some());
        match &q.lut {
            Some(lut) if rotated => {
                picture.bits = Some(lut.bits);
                picture.notes.push("incoherence processing: the codes are of the rotated weights, so their values are not drawn over the original ones".to_string());
            }
            Some(lut) => {
                let levels = lut.levels();
                let scale = q.transform.as_ref().and_then(|t| t.scales.as_ref()).map_or(1.0, |s| s[channel]);
                picture.centroids = Some(lut.channel_values(channel, 0).iter().map(|v| v * scale).collect());
                picture.tables = match &lut.input_groups {
                    Some(groups) => {
                        let per_channel = lut.rows.div_ceil(groups.size);
                        if per_channel > 1 {
                            picture.notes.push(format!("{per_channel} scales per channel (groups of {} input rows): the values of the first group are drawn", groups.size));
                        }
                        per_channel * lut.cols
                    }
                    None => lut.tables.len() / levels,
                };
                picture.bits = Some(lut.bits);
                let o = &lut.outliers;
                for r in 0..o.row_ptr.len().saturating_sub(1) {
                    for i in o.row_ptr[r] as usize..o.row_ptr[r + 1] as usize {
                        picture.outlier_rows.push(r as u32);
                        picture.outlier_cols.push(o.col_idx[i]);
                    }
                }
            }
            None => match &q.vector {
                Some(vector) => {
                    picture.bits = Some(vector.entries.trailing_zeros() / vector.dim as u32);
                    picture.tables = vector.codebooks.len() / (vector.entries * vector.dim);
                    picture.vectors = Some(VectorPicture::new(original, vector, channel));
                    picture.notes.push(format!("vector tables: a code per {} weights, so the channel's values are not a table of numbers (see the pairs picture)", vector.dim));
                }
                None => picture.notes.push("this quantization has no tables (its scales run over input rows): no centroids to draw".to_string()),
            },
        }
        Ok(picture)
    }
}

/// The session's Fisher values of layer `name`, if any.
pub(crate) fn fisher_of<'a>(fisher: Option<&'a FisherDiagonal>, name: &str) -> Option<&'a [f32]> {
    fisher.and_then(|f| f.get(&format!("{name}.weight"))).map(|t| t.data.as_slice())
}

/// The original weights of layer `name`.
pub(crate) fn layer_of<'a>(session: &'a Session, name: &str) -> Result<&'a LinearWeights, JsError> {
    session
        .weights()?
        .linears()
        .find(|(n, _)| n == name)
        .map(|(_, l)| l)
        .ok_or_else(|| JsError::new(&format!("the model has no linear layer `{name}`")))
}

#[wasm_bindgen]
impl Lab {
    /// The model's linear layers in order: `[{name, block, matrix, rows, cols}]` (rows: inputs).
    #[wasm_bindgen(js_name = layerList)]
    pub fn layer_list(&self) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let layers: Vec<LayerInfo> = session
            .weights()?
            .linears()
            .filter_map(|(name, l)| {
                let (block, matrix) = block_and_matrix(&name)?;
                Some(LayerInfo { block, matrix: matrix.to_string(), rows: l.in_features(), cols: l.out_features(), name })
            })
            .collect();
        to_js(&layers)
    }

    /// Mean Fisher value per weight of every linear layer (blocks × matrices): where the loss is
    /// most sensitive. Fails when no Fisher information is computed or loaded.
    #[wasm_bindgen(js_name = sensitivityMap)]
    pub fn sensitivity_map(&self) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let fisher = session.fisher.borrow().clone().ok_or_else(|| JsError::new("no Fisher information yet"))?;
        let cells: Vec<Cell> = fisher
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let (block, matrix) = block_and_matrix(name)?;
                Some(Cell { name: name.trim_end_matches(".weight").to_string(), block, matrix: matrix.to_string(), value: mean(&t.data) })
            })
            .collect();
        to_js(&cells)
    }

    /// Quantization error of every layer of the current quantization: Fisher-weighted
    /// (`Σ F (w − q)²`, what the loss feels) when Fisher is known, else the plain sum of squares.
    #[wasm_bindgen(js_name = errorMap)]
    pub fn error_map(&self) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let quantized = session.quantized.borrow().clone().ok_or_else(|| JsError::new("nothing is quantized yet"))?;
        if quantized.layers.is_empty() {
            return Err(JsError::new("a packed file opened alone has no original weights to compare with"));
        }
        let fisher = session.fisher.borrow().clone();
        let mut cells = Vec::with_capacity(quantized.layers.len());
        for layer in &quantized.layers {
            let Some((block, matrix)) = block_and_matrix(&layer.name) else { continue };
            let original = &layer_of(&session, &layer.name)?.weight.data;
            let value = weighted_squared_error(original, &layer.dequantized, fisher_of(fisher.as_deref(), &layer.name)).map_err(js_error)?;
            cells.push(Cell { name: layer.name.clone(), block, matrix: matrix.to_string(), value });
        }
        to_js(&ErrorMap { cells, weighted: fisher.is_some(), label: quantized.label.clone() })
    }

    /// One layer's picture (see `LayerPicture`): histogram before and after the current
    /// quantization, the table of output channel `channel`, the outliers' positions.
    #[wasm_bindgen(js_name = layerPicture)]
    pub fn layer_picture(&self, name: &str, channel: usize) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let linear = layer_of(&session, name)?;
        let fisher = session.fisher.borrow().clone();
        let quantized = session.quantized.borrow().clone();
        let layer = quantized.as_ref().and_then(|q| q.layers.iter().find(|l| l.name == name));
        let mut picture = LayerPicture::new(name, linear, fisher_of(fisher.as_deref(), name), layer, channel)?;
        picture.widths = quantized.as_ref().filter(|_| layer.is_some()).and_then(|q| q.method.as_ref()).map(|m| m.widths());
        let value = to_js(&picture)?;
        let label = quantized.as_ref().filter(|_| layer.is_some()).map(|q| q.label.clone());
        set(&value, "label", &label.map_or(JsValue::NULL, JsValue::from))?;
        Ok(value)
    }

    /// What QuIP's incoherence processing (`--incoherence`, seed `seed`) does to layer `name`:
    /// its Hessian's spectrum and diagonal and its weights, before and after
    /// (`plot_data::incoherence::IncoherencePicture`). Fails until the Hessians are computed.
    #[wasm_bindgen(js_name = incoherencePicture)]
    pub fn incoherence_picture(&self, name: &str, seed: u32) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let linear = layer_of(&session, name)?;
        let hessians = session.hessians.borrow().clone().ok_or_else(|| JsError::new("no Hessians yet: compute them in step 2"))?;
        let config = &session.weights()?.config;
        let h = hessian_key(config, name)
            .and_then(|key| hessians.get(&key))
            .ok_or_else(|| JsError::new(&format!("no Hessian for `{name}` (only the blocks' linears have one)")))?;
        let picture = incoherence_picture(name, &linear.weight.data, linear.in_features(), linear.out_features(), h, u64::from(seed)).map_err(js_error)?;
        to_js(&picture)
    }
}

/// `object[key] = value`, for the few fields added after serialization.
pub(crate) fn set(object: &JsValue, key: &str, value: &JsValue) -> Result<(), JsError> {
    js_sys::Reflect::set(object, &key.into(), value).map(|_| ()).map_err(|_| JsError::new("cannot build the picture's data"))
}
