//! The float-model transforms of `model_transforms` keep the model's outputs (CPU reference
//! forward, every shipped family), and refuse what they cannot transform.

use lutlab_core::checkpoint::HostTensor;
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::model_transforms::{equalize_weights, merge_norm_affine, scale_fisher_rows, smooth_activations, LayerwiseSmoothing, RowScales};
use lutlab_core::quant::hessian::Square;
use lutlab_core::quant::{QuantizedLayer, QuantizedModel};
use lutlab_core::reference::{forward, linear_input_absmax};
use lutlab_core::{Checkpoint, ModelConfig, ModelWeights};
use std::path::Path;

/// A model directory's weights (some test models have no tokenizer).
fn load(relative: &str) -> ModelWeights {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    let config = ModelConfig::from_json(&std::fs::read(dir.join("config.json")).unwrap(), "config.json").unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    ModelWeights::from_checkpoint(&config, Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap()).unwrap()
}

const FAMILIES: [&str; 4] = ["models/gpt2-tiny-wikitext", "models/opt-tiny-wikitext", "models/llama-tiny-wikitext", "models/llama2c-stories260k"];

fn some_tokens(weights: &ModelWeights, seed: u32) -> Vec<u32> {
    let vocab = weights.config.vocab_size as u32;
    (0..48u32).map(|i| (i * 37 + seed) % vocab).collect()
}

/// The largest logit change from `original` to `transformed` on a few tokens, as a fraction of
/// the largest logit.
fn logit_change(original: &ModelWeights, transformed: &ModelWeights) -> f32 {
    let tokens = some_tokens(original, 5);
    let (before, after) = (forward(original, &tokens).unwrap(), forward(transformed, &tokens).unwrap());
    let largest = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / largest
}

#[test]
fn merging_the_norm_affine_keeps_every_familys_logits() {
    for model in FAMILIES {
        let original = load(model);
        let mut merged = original.clone();
        let scales = merge_norm_affine(&mut merged).unwrap();
        let change = logit_change(&original, &merged);
        println!("{model}: max |logit change| {change:e} of the largest logit");
        assert!(change <= 5e-6, "{model}: logits moved by {change:e} of the largest");
        // The norms are plain now, and their affine went into the linears after them.
        for block in &merged.blocks {
            for norm in [&block.norm_1, &block.norm_2] {
                assert!(norm.gamma.data.iter().all(|&g| g == 1.0));
                assert!(norm.beta.as_ref().is_none_or(|b| b.data.iter().all(|&v| v == 0.0)));
            }
        }
        let readers = merged.config.input_groups()[0].len() + merged.config.input_groups()[2].len();
        assert_eq!(scales.len(), readers * merged.config.n_layer, "{model}");
        let changed = merged.linears().zip(original.linears()).filter(|((_, a), (_, b))| a.weight.data != b.weight.data).count();
        assert_eq!(changed, scales.len(), "{model}: exactly the linears after a norm change");
    }
}

#[test]
fn smoothing_keeps_every_familys_logits_and_balances_the_ranges() {
    for model in FAMILIES {
        let original = load(model);
        let windows = [some_tokens(&original, 11), some_tokens(&original, 23)];
        let windows: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        let ranges = linear_input_absmax(&original, &windows).unwrap();
        let mut smoothed = original.clone();
        let scales = smooth_activations(&mut smoothed, &ranges, 0.5).unwrap();
        let change = logit_change(&original, &smoothed);
        println!("{model}: SmoothQuant α = 0.5, max |logit change| {change:e} of the largest logit");
        assert!(change <= 5e-6, "{model}: logits moved by {change:e} of the largest");
        // At α = 0.5 each smoothed input channel's range equals its weight rows' largest value.
        for (name, s) in &scales {
            let (a, linear) = (&ranges[name], smoothed.linear(name).unwrap());
            let cols = linear.out_features();
            let group_max: Vec<f32> = scales
                .keys()
                .filter(|other| other.rsplit_once('.').map(|p| p.0) == name.rsplit_once('.').map(|p| p.0) && scales[*other] == *s)
                .map(|other| smoothed.linear(other).unwrap())
                .fold(vec![0f32; s.len()], |mut m, l| {
                    for (mj, row) in m.iter_mut().zip(l.weight.data.chunks_exact(l.out_features())) {
                        *mj = row.iter().fold(*mj, |x, w| x.max(w.abs()));
                    }
                    m
                });
            assert_eq!(linear.weight.data.len() / cols, s.len());
            for j in 0..s.len() {
                if a[j] > 0.0 && group_max[j] > 0.0 && s[j] > 1e-5 && s[j] < 1e5 {
                    let (x, w) = (a[j] / s[j], group_max[j]);
                    assert!((x - w).abs() <= 1e-4 * x.max(w), "{name}[{j}]: activation range {x} vs weight range {w}");
                }
            }
        }
    }
}

/// Every linear of `scaled` as an unquantized layer (its weights as they are).
fn unquantized(scaled: &ModelWeights) -> QuantizedModel {
    let layers = scaled
        .linears()
        .map(|(name, l)| QuantizedLayer {
            name,
            dequantized: l.weight.data.clone(),
            lut: None,
            vector: None,
            column_parts: None,
            mse: 0.0,
            outliers: 0,
            bits_per_weight: 32.0,
            proxy_loss: None,
            transform: None,
        })
        .collect();
    QuantizedModel { layers }
}

#[test]
fn layerwise_smoothing_keeps_every_familys_logits_and_balances_each_linear() {
    // Post-norm OPT too: the explicit input scale needs no norm to fold into.
    for model in FAMILIES.iter().copied().chain(["tests/models/opt-postln-proj"]) {
        let original = load(model);
        let windows = [some_tokens(&original, 11), some_tokens(&original, 23)];
        let windows: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        let ranges = linear_input_absmax(&original, &windows).unwrap();
        let smoothing = LayerwiseSmoothing::new(&original, &ranges, 0.5).unwrap();
        assert_eq!(smoothing.scales.len(), original.linears().count(), "{model}: every linear has its own scales");
        let scaled = smoothing.scaled(&original);
        // Unquantized, the scaled weights behind an explicit `⊙ 1/s` are the original model.
        let layers = smoothing.unscale_model(&original, unquantized(&scaled)).unwrap();
        let change = logit_change(&original, &layers.apply(&original));
        println!("{model}: layerwise SmoothQuant α = 0.5, max |logit change| {change:e} of the largest logit");
        assert!(change <= 5e-6, "{model}: logits moved by {change:e} of the largest");
        for layer in &layers.layers {
            let s = &smoothing.scales[&layer.name];
            let t = layer.transform.as_ref().unwrap().incoherence.as_ref().unwrap();
            let m = t.input_scale.as_ref().unwrap();
            assert!(t.input.is_none() && t.output.is_none() && m.iter().zip(s).all(|(m, s)| (m * s - 1.0).abs() <= 1e-6), "{}: input scale 1/s", layer.name);
            assert!(layer.mse <= 1e-12, "{}: unquantized error {}", layer.name, layer.mse);
            // At α = 0.5 the scaled input's range equals the scaled weight row's, layer by layer.
            let (a, w) = (&ranges[&layer.name], scaled.linear(&layer.name).unwrap());
            for (j, row) in w.weight.data.chunks_exact(w.out_features()).enumerate() {
                let row_max = row.iter().fold(0f32, |x, v| x.max(v.abs()));
                if a[j] > 0.0 && row_max > 0.0 && s[j] > 1e-5 && s[j] < 1e5 {
                    let x = a[j] / s[j];
                    assert!((x - row_max).abs() <= 1e-4 * x.max(row_max), "{}[{j}]: activation range {x} vs weight range {row_max}", layer.name);
                }
            }
        }
        // q, k and v read one input but get scales of their own from their own weights.
        let names: Vec<String> = original.linears().map(|(n, _)| n).collect();
        if original.config.input_groups()[0].len() == 3 {
            assert_ne!(smoothing.scales[&names[0]], smoothing.scales[&names[1]], "{model}: q and k scales");
        }
    }
}

#[test]
fn a_scaled_hessian_keeps_every_proxy_loss() {
    // tr(ΔW H ΔWᵀ) in the original and the scaled coordinates: ΔW' = diag(s)·ΔW, H' = H/(s sᵀ).
    let n = 3;
    let h = Square { n, data: vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0] };
    let s = vec![2.0f32, 0.5, 3.0];
    let smoothing = LayerwiseSmoothing { scales: RowScales::from([("l".to_string(), s.clone())]) };
    let scaled = smoothing.scale_hessian("l", &h);
    let dw = [0.3f64, -0.7, 0.2];
    let loss = |h: &Square, d: &[f64]| (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| d[i] * h.data[i * n + j] * d[j]).sum::<f64>();
    let dw_scaled: Vec<f64> = dw.iter().zip(&s).map(|(d, &s)| d * f64::from(s)).collect();
    assert!((loss(&h, &dw) - loss(&scaled, &dw_scaled)).abs() <= 1e-12);
    assert!(matches!(smoothing.scale_hessian("other", &h), std::borrow::Cow::Borrowed(_)));
}

#[test]
fn post_norm_blocks_and_bad_settings_are_refused_by_name() {
    let mut post_norm = load("tests/models/opt-postln-proj");
    let e = merge_norm_affine(&mut post_norm).unwrap_err().to_string();
    assert!(e.contains("do_layer_norm_before = false"), "{e}");
    let e = smooth_activations(&mut post_norm, &Default::default(), 0.5).unwrap_err().to_string();
    assert!(e.contains("act-equalization") && e.contains("do_layer_norm_before = false"), "{e}");
    let mut gpt2 = load(FAMILIES[0]);
    assert!(smooth_activations(&mut gpt2, &Default::default(), 1.5).unwrap_err().to_string().contains("between 0 and 1"));
    assert!(smooth_activations(&mut gpt2, &Default::default(), 0.5).unwrap_err().to_string().contains("no activation range for `h.0.attn.c_attn`"));
    assert!(LayerwiseSmoothing::new(&gpt2, &Default::default(), -0.1).unwrap_err().to_string().contains("between 0 and 1"));
    assert!(LayerwiseSmoothing::new(&gpt2, &Default::default(), 0.5).unwrap_err().to_string().contains("no activation range for `h.0.attn.c_attn`"));
}

#[test]
fn a_fisher_diagonal_follows_its_rows_scaling() {
    // A weight scaled by γ has gradient ∂L/∂w / γ: its squared gradient is divided by γ².
    let tensor = HostTensor::new(vec![3, 2], vec![1.0, 2.0, 4.0, 8.0, 5.0, 6.0]);
    let mut fisher = FisherDiagonal { tensors: vec![("h.0.attn.c_attn.weight".into(), tensor)], ..Default::default() };
    let scales = RowScales::from([("h.0.attn.c_attn".to_string(), vec![2.0, 0.5, 0.0])]);
    scale_fisher_rows(&mut fisher, &scales);
    assert_eq!(fisher.tensors[0].1.data, vec![0.25, 0.5, 16.0, 32.0, 0.0, 0.0]);
}

#[test]
fn weight_equalization_keeps_every_familys_logits_and_equalizes_the_pairs() {
    for model in FAMILIES {
        let original = load(model);
        let mut equalized = original.clone();
        let (rows, columns) = equalize_weights(&mut equalized).unwrap();
        let change = logit_change(&original, &equalized);
        println!("{model}: weight equalization, max |logit change| {change:e} of the largest logit");
        assert!(change <= 5e-6, "{model}: logits moved by {change:e} of the largest");
        // Every pair changed, and each producer column's range now equals its consumer rows'.
        let pairs = if equalized.config.family == lutlab_core::Family::Gpt2 { 1 } else { 2 };
        assert_eq!((rows.len(), columns.len()), (pairs * equalized.config.n_layer, pairs * equalized.config.n_layer), "{model}");
        let block = &equalized.blocks[0];
        let (producer, consumer, first, group) = match equalized.config.family {
            lutlab_core::Family::Gpt2 => (&block.linears[0], &block.linears[1], 2 * equalized.config.n_embd, 1),
            _ => (&block.linears[2], &block.linears[3], 0, equalized.config.n_head / equalized.config.n_kv_head),
        };
        let d = equalized.config.head_dim;
        let mut worst = 0f32;
        for row in 0..consumer.in_features() {
            let col = first + (row / d / group) * d + row % d;
            let r1 = producer.weight.data.chunks_exact(producer.out_features()).fold(0f32, |m, r| m.max(r[col].abs()));
            // The consumer range of a shared value column is over all the rows reading it.
            let r2 = (0..consumer.in_features())
                .filter(|&r| first + (r / d / group) * d + r % d == col)
                .flat_map(|r| consumer.weight.data[r * consumer.out_features()..][..consumer.out_features()].iter())
                .fold(0f32, |m, w| m.max(w.abs()));
            worst = worst.max((r1 - r2).abs() / r1.max(r2));
        }
        assert!(worst <= 1e-5, "{model}: value/output ranges differ by {worst:e} after equalization");
    }
}

#[test]
fn bias_correction_restores_each_layers_mean_output() {
    use lutlab_core::quant::bias_correction::correct_biases;
    for model in FAMILIES {
        let mut float = load(model);
        let mut quantized = float.clone();
        let names: Vec<String> = float.linears().map(|(name, _)| name).collect();
        // A coarse grid: quantization that shifts mean outputs visibly.
        for name in &names {
            quantized.linear_mut(name).unwrap().weight.data.iter_mut().for_each(|w| *w = (*w * 8.0).round() / 8.0);
        }
        let windows = [some_tokens(&float, 3), some_tokens(&float, 7)];
        let windows: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
        let means: std::collections::BTreeMap<String, Vec<f32>> = lutlab_core::reference::linear_input_means(&quantized, &windows)
            .unwrap()
            .into_iter()
            .map(|(name, m)| (name, m.into_iter().map(|v| v as f32).collect()))
            .collect();
        let original = float.clone();
        let corrections = correct_biases(&mut float, &quantized, &means).unwrap();
        assert_eq!(corrections.len(), names.len(), "{model}: every linear corrected");
        let mut worst = 0f64;
        for name in &names {
            let (o, q, corrected, m) = (original.linear(name).unwrap(), quantized.linear(name).unwrap(), float.linear(name).unwrap(), &means[name]);
            let cols = o.out_features();
            for c in 0..cols {
                let mean_out = |w: &[f32], b: f32| m.iter().enumerate().map(|(r, &x)| f64::from(x) * f64::from(w[r * cols + c])).sum::<f64>() + f64::from(b);
                let (want, uncorrected, got) = (mean_out(&o.weight.data, o.bias.data[c]), mean_out(&q.weight.data, o.bias.data[c]), mean_out(&q.weight.data, corrected.bias.data[c]));
                worst = worst.max((want - got).abs() / (want - uncorrected).abs().max(1e-3));
            }
        }
        println!("{model}: corrected mean outputs keep at most {worst:.1e} of the shift quantization caused");
        assert!(worst <= 1e-3, "{model}: {worst}");
    }
}

/// An AWQ results file in the form `scripts/awq_to_safetensors.py` writes: `scales` as
/// (prev_op, layers, scales), `clips` as (layer, out, groups, max_val).
fn awq_file(scales: &[(&str, Vec<&str>, Vec<f32>)], clips: &[(&str, usize, usize, Vec<f32>)]) -> Vec<u8> {
    let names: Vec<String> = (0..scales.len()).map(|i| format!("scale.{i}")).collect();
    let clip_names: Vec<String> = clips.iter().map(|c| format!("clip.{}", c.0)).collect();
    let shapes: Vec<Vec<usize>> = scales.iter().map(|s| vec![s.2.len()]).chain(clips.iter().map(|c| vec![c.1, c.2])).collect();
    let mut tensors: Vec<(&str, &[usize], &[f32])> = Vec::new();
    for (i, s) in scales.iter().enumerate() {
        tensors.push((&names[i], &shapes[i], &s.2));
    }
    for (i, c) in clips.iter().enumerate() {
        tensors.push((&clip_names[i], &shapes[scales.len() + i], &c.3));
    }
    let listing: Vec<serde_json::Value> =
        scales.iter().enumerate().map(|(i, s)| serde_json::json!({ "prev_op": s.0, "layers": s.1, "tensor": names[i] })).collect();
    let metadata = std::collections::HashMap::from([("awq_scales".to_string(), serde_json::to_string(&listing).unwrap())]);
    lutlab_core::checkpoint::write_safetensors(&tensors, Some(metadata)).unwrap()
}

#[test]
fn awq_scales_keep_the_logits_and_clipping_bounds_the_weights() {
    use lutlab_core::awq::AwqResults;
    let positive = |n: usize, seed: u32| (0..n as u32).map(|i| 0.5 + ((i * 2_654_435_761u32).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32).collect::<Vec<f32>>();
    for (model, entries) in [
        (
            "models/opt-tiny-wikitext",
            vec![
                ("self_attn_layer_norm", vec!["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                ("self_attn.v_proj", vec!["self_attn.out_proj"]),
                ("final_layer_norm", vec!["fc1"]),
                ("fc1", vec!["fc2"]),
            ],
        ),
        (
            "models/llama-tiny-wikitext",
            vec![
                ("input_layernorm", vec!["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                ("post_attention_layernorm", vec!["mlp.gate_proj", "mlp.up_proj"]),
                ("mlp.up_proj", vec!["mlp.down_proj"]),
            ],
        ),
    ] {
        let original = load(model);
        let config = original.config.clone();
        let prefix = config.block_prefix(0);
        let full = |n: &str| format!("{prefix}.{n}");
        let width = |layer: &str| original.linear(&full(layer)).unwrap().in_features();
        let scales: Vec<(String, Vec<String>, Vec<f32>)> = entries
            .iter()
            .enumerate()
            .map(|(i, (prev, layers))| (full(prev), layers.iter().map(|l| full(l)).collect(), positive(width(layers[0]), i as u32)))
            .collect();
        let borrowed: Vec<(&str, Vec<&str>, Vec<f32>)> =
            scales.iter().map(|(p, l, s)| (p.as_str(), l.iter().map(String::as_str).collect(), s.clone())).collect();
        let results = AwqResults::from_safetensors("awq.safetensors", &awq_file(&borrowed, &[])).unwrap();
        assert_eq!(results.scales.len(), entries.len());
        let mut scaled = original.clone();
        results.apply(&mut scaled).unwrap();
        let change = logit_change(&original, &scaled);
        println!("{model}: AWQ scales, max |logit change| {change:e} of the largest logit");
        assert!(change <= 5e-6, "{model}: {change:e}");
        assert_ne!(scaled.linear(&full(entries[0].1[0])).unwrap().weight.data, original.linear(&full(entries[0].1[0])).unwrap().weight.data);

        // Clipping: half of each group's largest magnitude, groups of 32 input rows.
        let down = full(entries.last().unwrap().1[0]);
        let layer = original.linear(&down).unwrap();
        let (rows, cols, groups) = (layer.in_features(), layer.out_features(), layer.in_features() / 32);
        let mut max_val = vec![0f32; cols * groups];
        for (r, row) in layer.weight.data.chunks_exact(cols).enumerate() {
            for (c, w) in row.iter().enumerate() {
                let m = &mut max_val[c * groups + r / (rows / groups)];
                *m = m.max(w.abs() * 0.5);
            }
        }
        let clipped_file = awq_file(&[], &[(&down, cols, groups, max_val.clone())]);
        let mut clipped = original.clone();
        AwqResults::from_safetensors("awq.safetensors", &clipped_file).unwrap().apply(&mut clipped).unwrap();
        let w = &clipped.linear(&down).unwrap().weight.data;
        for (r, row) in w.chunks_exact(cols).enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!(v.abs() <= max_val[c * groups + r / (rows / groups)], "{down}[{r}, {c}] = {v}");
            }
        }
        assert!(logit_change(&original, &clipped) > 1e-3, "{model}: clipping changes the model");

        // Results for another model are refused by name.
        let mut other = load(if model.contains("opt") { "models/llama-tiny-wikitext" } else { "models/opt-tiny-wikitext" });
        let err = results.apply(&mut other).unwrap_err().to_string();
        assert!(err.contains("another model"), "{err}");
    }
    let err = AwqResults::from_safetensors("x.safetensors", &lutlab_core::checkpoint::write_safetensors(&[], None).unwrap()).unwrap_err().to_string();
    assert!(err.contains("not an AWQ results file"), "{err}");
}
