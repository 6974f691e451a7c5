//! The page's channel view (`plot_data::channel`): one output channel's weights before and after,
//! its table, outliers and error. Checked against the checkpoint's own tensors in both layouts
//! (GPT-2's Conv1D stores `[in, out]`, HF Linear `[out, in]`), against the quantized layer (every
//! quantized weight that is not an outlier is one of the drawn table entries), and against the
//! error heatmap's layer sum.

use lutlab_core::plot_data::channel::ChannelPicture;
use lutlab_core::plot_data::weighted_squared_error;
use lutlab_core::quant::model::quantize_layer;
use lutlab_core::quant::{Calibration, QuantizeRequest};
use lutlab_core::ModelWeights;
use lutlab_tests::{load_weights, repo};

/// The checkpoint's stored tensor of layer `name` (`[shape], data`), under whatever prefix it has.
fn stored(dir: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(repo(dir).join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let key = file.names().into_iter().find(|n| n.ends_with(&format!("{name}.weight"))).unwrap_or_else(|| panic!("{dir}: no {name}.weight"));
    // Decoded as stored (F16 or F32), with no layout change.
    let tensor = lutlab_core::checkpoint::read_f32(&file, key).unwrap();
    assert_eq!(tensor.shape, file.tensor(key).unwrap().shape(), "{key}");
    (tensor.shape, tensor.data)
}

fn model(dir: &str) -> ModelWeights {
    load_weights(&repo(dir))
}

#[test]
fn a_channel_is_the_checkpoints_column_for_conv1d_and_its_row_for_linear() {
    // GPT-2 (Conv1D, stored [in, out]): output channel c is stored column c.
    let gpt2 = model("models/gpt2-tiny-wikitext");
    let name = "h.1.mlp.c_fc";
    let (shape, data) = stored("models/gpt2-tiny-wikitext", name);
    let linear = gpt2.linear(name).unwrap();
    assert_eq!(shape, vec![linear.in_features(), linear.out_features()], "Conv1D stores [in, out]");
    assert_ne!(shape[0], shape[1], "a non-square layer, so a transposed read cannot pass");
    for channel in [0, 5, shape[1] - 1] {
        let picture = ChannelPicture::new(linear, channel, None, None).unwrap();
        let want: Vec<f32> = (0..shape[0]).map(|r| data[r * shape[1] + channel]).collect();
        assert_eq!(picture.before, want, "{name} channel {channel}");
        assert!(picture.after.is_none() && picture.table.is_none() && picture.error.is_none());
    }

    // OPT (HF Linear, stored [out, in]): output channel c is stored row c.
    let opt = model("models/opt-tiny-wikitext");
    let name = opt.linears().map(|(n, _)| n).find(|n| n.ends_with("fc1")).unwrap();
    let (shape, data) = stored("models/opt-tiny-wikitext", &name);
    let linear = opt.linear(&name).unwrap();
    assert_eq!(shape, vec![linear.out_features(), linear.in_features()], "Linear stores [out, in]");
    assert_ne!(shape[0], shape[1]);
    for channel in [0, 7, shape[0] - 1] {
        let picture = ChannelPicture::new(linear, channel, None, None).unwrap();
        assert_eq!(picture.before, data[channel * shape[1]..(channel + 1) * shape[1]], "{name} channel {channel}");
    }
    // A channel past the last is the last.
    assert_eq!(ChannelPicture::new(linear, 1 << 20, None, None).unwrap().channel, shape[0] - 1);
}

/// Quantizes GPT-2's `h.1.mlp.c_fc` with `request` (Fisher: a deterministic positive stand-in).
fn quantized(request: QuantizeRequest, fisher: &[f32]) -> (ModelWeights, lutlab_core::quant::QuantizedLayer) {
    let weights = model("models/gpt2-tiny-wikitext");
    let method = request.method(&weights, request.method == "kmeans").unwrap();
    let lookup = |_: &str| Some(fisher);
    let calibration = Calibration::fisher(Some(&lookup));
    let layer = quantize_layer("h.1.mlp.c_fc", weights.linear("h.1.mlp.c_fc").unwrap(), &method, calibration, weights.config.n_embd).unwrap();
    (weights, layer)
}

fn stand_in_fisher(weights: &ModelWeights) -> Vec<f32> {
    let n = weights.linear("h.1.mlp.c_fc").unwrap().weight.numel();
    (0..n).map(|i| 1e-4 * (1 + (i * 7919) % 13) as f32).collect()
}

#[test]
fn quantized_weights_of_a_channel_are_its_table_entries_and_errors_add_up_to_the_layers() {
    let fisher = stand_in_fisher(&model("models/gpt2-tiny-wikitext"));
    for scaling in [false, true] {
        let request = QuantizeRequest { bits: 3, granularity: "channel".into(), outlier_percent: Some(0.45), scaling, restarts: Some(1), ..QuantizeRequest::default() };
        let (weights, layer) = quantized(request, &fisher);
        let linear = weights.linear("h.1.mlp.c_fc").unwrap();
        let mut summed = 0.0;
        let mut outliers = 0;
        for channel in 0..linear.out_features() {
            let picture = ChannelPicture::new(linear, channel, Some(&fisher), Some(&layer)).unwrap();
            let (after, table) = (picture.after.as_ref().unwrap(), picture.table.as_ref().unwrap());
            assert_eq!(table.len(), 8, "3 bits: 8 entries");
            for (row, (&q, &w)) in after.iter().zip(&picture.before).enumerate() {
                if picture.outlier_rows.contains(&(row as u32)) {
                    // Kept exactly (up to the scale's rounding with scaling).
                    assert!((q - w).abs() <= 1e-6 * w.abs().max(1.0), "scaling {scaling}, channel {channel} row {row}: outlier {w} → {q}");
                } else {
                    assert!(table.contains(&q), "scaling {scaling}, channel {channel} row {row}: {q} is not an entry of {table:?}");
                }
            }
            let mut distinct: Vec<f32> = after.iter().enumerate().filter(|(r, _)| !picture.outlier_rows.contains(&(*r as u32))).map(|(_, &q)| q).collect();
            distinct.sort_by(f32::total_cmp);
            distinct.dedup();
            assert!(distinct.len() <= 8, "channel {channel}: {} distinct values", distinct.len());
            assert!(picture.weighted);
            summed += picture.error.unwrap();
            outliers += picture.outlier_rows.len();
        }
        assert_eq!(outliers, layer.outliers, "scaling {scaling}: every outlier belongs to one channel");
        assert!(outliers > 0, "0.45 % outliers in a {}-weight layer", fisher.len());
        // The channels' errors add up to the heatmap's value of the layer.
        let layer_error = weighted_squared_error(&linear.weight.data, &layer.dequantized, Some(&fisher)).unwrap();
        assert!((summed - layer_error).abs() <= 1e-9 * layer_error, "scaling {scaling}: channels {summed} vs layer {layer_error}");
    }
}

#[test]
fn a_uniform_grid_is_drawn_through_the_channels_scale() {
    let request = QuantizeRequest { method: "rtn".into(), bits: 3, granularity: "channel".into(), asym: true, ..QuantizeRequest::default() };
    let weights = model("models/gpt2-tiny-wikitext");
    let (_, layer) = quantized(request, &stand_in_fisher(&weights));
    let linear = weights.linear("h.1.mlp.c_fc").unwrap();
    for channel in [0, 100, linear.out_features() - 1] {
        let picture = ChannelPicture::new(linear, channel, None, Some(&layer)).unwrap();
        let table = picture.table.as_ref().expect("a per-channel uniform grid is a table");
        assert!(!picture.weighted);
        // Evenly spaced: the grid points through one scale.
        let step = table[1] - table[0];
        assert!(step > 0.0 && table.windows(2).all(|p| ((p[1] - p[0]) - step).abs() <= 1e-5 * step), "{table:?}");
        for &q in picture.after.as_ref().unwrap() {
            assert!(table.iter().any(|&t| (t - q).abs() <= 1e-6 * step), "channel {channel}: {q} off the grid {table:?}");
        }
    }
}

#[test]
fn the_slider_widths_are_what_each_method_accepts() {
    let weights = model("models/gpt2-tiny-wikitext");
    let widths = |request: QuantizeRequest| request.method(&weights, false).unwrap().widths();
    assert_eq!(widths(QuantizeRequest::default()), (1..=8).collect::<Vec<_>>(), "k-means tables: 1 to 8");
    let rtn = |format: &str, bits| QuantizeRequest { method: "rtn".into(), format: format.into(), bits, ..QuantizeRequest::default() };
    assert_eq!(widths(rtn("int", 4)), (2..=8).collect::<Vec<_>>(), "an integer grid: 2 to 8");
    assert_eq!(widths(rtn("e4m3", 8)), vec![8], "FP8 fixes its width");
    assert_eq!(widths(rtn("e2m1", 4)), vec![4], "FP4 fixes its width");
    let method = rtn("int", 4).method(&weights, false).unwrap();
    assert_eq!(method.with_bits(6).bits(), 6);
    assert!(method.check_bits(1).is_err());
}
