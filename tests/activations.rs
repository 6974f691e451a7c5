//! Seed 000's centering statistics: the GPU means of every linear layer's input
//! (`lutlab_model::activations`) against the plain-Rust CPU forward
//! (`lutlab_core::reference::linear_input_means`) on the shipped model and against an
//! independent float64 numpy forward (`scripts/numpy_reference.py centering`), plus the sampler,
//! batch independence, the fold into the bias on real layers, and bad input.

use lutlab_core::checkpoint::{parse_safetensors, read_i64};
use lutlab_core::quant::transforms::{fold_input_shift, prepare_linear};
use lutlab_core::reference;
use lutlab_core::{NoProgress, Progress};
use lutlab_model::{
    ActivationSettings, Decoder, ModelError, linear_input_means, linear_input_stats_windows, sample_starts,
};
use lutlab_tests::*;
use std::collections::BTreeMap;

/// GPU against CPU, per layer: `‖gpu − cpu‖ / ‖cpu‖` (f32 GPU sums per batch, f64 on the host;
/// the CPU reference sums in f64). Measured 2.8e-7 on lavapipe (6 windows of 256 tokens); the bound leaves room for GPUs.
const NORM_REL: f64 = 1e-4;

fn valid_tokens() -> Vec<u32> {
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).expect("valid.txt");
    shipped_model().tokenizer.encode(&text).expect("valid.txt tokenizes")
}

fn rel_norm(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err: f64 = got.iter().zip(want).map(|(g, w)| (f64::from(*g) - w).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    err / norm
}

fn gpu_means(model: &Decoder, tokens: &[u32], starts: &[usize], seqlen: usize, batch: usize) -> BTreeMap<String, Vec<f32>> {
    pollster::block_on(linear_input_stats_windows(model, tokens, starts, seqlen, batch, &mut NoProgress)).expect("GPU means").means
}

#[test]
fn gpu_means_match_the_cpu_reference() {
    let loaded = shipped_model();
    let config = &loaded.weights.config;
    let tokens = valid_tokens();
    let seqlen = config.n_positions;
    let starts = sample_starts(tokens.len(), 6, seqlen, 0, "valid.txt").unwrap();
    let windows: Vec<&[u32]> = starts.iter().map(|&s| &tokens[s..s + seqlen]).collect();
    let cpu = reference::linear_input_means(&loaded.weights, &windows).unwrap();
    let model = Decoder::new(&loaded.weights, &gpu());
    let gpu = gpu_means(&model, &tokens, &starts, seqlen, 4); // batches of 4 and 2

    let expected: Vec<String> = config.linear_names().into_iter().map(|(name, _)| name).collect();
    assert_eq!(gpu.keys().cloned().collect::<std::collections::BTreeSet<_>>(), expected.iter().cloned().collect());
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>());
    let mut worst = 0f64;
    for (name, want) in &cpu {
        let got = &gpu[name];
        let width = if name.ends_with("mlp.c_proj") { 4 * config.n_embd } else { config.n_embd };
        assert_eq!(got.len(), width, "{name}");
        let rel = rel_norm(got, want);
        worst = worst.max(rel);
        assert!(rel <= NORM_REL, "{name}: relative error {rel:e} in norm exceeds {NORM_REL:e}");
        assert!(want.iter().any(|v| v.abs() > 1e-3), "{name}: means are not trivially zero");
    }
    eprintln!("GPU vs CPU input means: worst relative error in norm {worst:e} over {} layers", cpu.len());
}

#[test]
fn gpu_input_ranges_match_the_cpu_reference() {
    // SmoothQuant's max |x_j| per input channel: a maximum, so GPU and CPU agree to the rounding
    // of the one activation that holds it.
    let loaded = shipped_model();
    let tokens = valid_tokens();
    let seqlen = 64;
    let starts = sample_starts(tokens.len(), 5, seqlen, 3, "valid.txt").unwrap();
    let windows: Vec<&[u32]> = starts.iter().map(|&s| &tokens[s..s + seqlen]).collect();
    let cpu = reference::linear_input_absmax(&loaded.weights, &windows).unwrap();
    let model = Decoder::new(&loaded.weights, &gpu());
    let stats = pollster::block_on(linear_input_stats_windows(&model, &tokens, &starts, seqlen, 2, &mut NoProgress)).unwrap();
    assert_eq!(cpu.keys().collect::<Vec<_>>(), stats.absmax.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (name, want) in &cpu {
        let got = &stats.absmax[name];
        let largest = want.iter().fold(0f32, |m, &v| m.max(v));
        let err = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max) / largest;
        worst = worst.max(err);
        assert!(err <= 1e-5, "{name}: max |x| differs by {err:e} of the largest");
    }
    eprintln!("GPU vs CPU input ranges: worst {worst:e} of each layer's largest over {} layers", cpu.len());
}

/// The independent oracle: `tests/fixtures/centering_reference.safetensors`, made by
/// `scripts/numpy_reference.py centering` (a float64 numpy forward written from GPT-2's definition,
/// f16 weights upcast exactly) on the 6 windows of 256 tokens of valid.txt that
/// `gpu_means_match_the_cpu_reference` samples (seed 0); the fixture holds the starts and the
/// token ids, and both are checked against lutlab's sampler and tokenizer before the GPU runs on
/// exactly those ids.
/// Per layer, `max |got − numpy| / max |numpy|` (the layer's worst element against its largest
/// mean). Measured on lavapipe: GPU 4.4e-7, lutlab's CPU reference 1.8e-7 (both f32 forwards
/// against f64, worst of the 16 layers); the bound is about 10× the GPU's figure.
const NUMPY_REL_MAX: f64 = 5e-6;

fn read_f64(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f64> {
    let view = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F64, "{name}");
    view.data().chunks_exact(8).map(|b| f64::from_le_bytes(std::array::from_fn(|i| b[i]))).collect()
}

fn rel_max(got: impl ExactSizeIterator<Item = f64>, want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "layer widths differ");
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
    got.zip(want).map(|(g, w)| (g - w).abs()).fold(0f64, f64::max) / scale
}

#[test]
fn gpu_and_cpu_means_match_the_numpy_reference() {
    let bytes = fixture("centering_reference.safetensors");
    let st = parse_safetensors("centering_reference.safetensors", &bytes).unwrap();
    let (_, starts) = read_i64(&st, "starts").unwrap();
    let (shape, ids) = read_i64(&st, "ids").unwrap();
    let starts: Vec<usize> = starts.iter().map(|&s| s as usize).collect();
    let (windows, seqlen) = (shape[0], shape[1]);
    let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();

    let loaded = shipped_model();
    let config = &loaded.weights.config;
    // The fixture's windows are this file's: lutlab's sampler and tokenizer give the same ones.
    let tokens = valid_tokens();
    assert_eq!(seqlen, config.n_positions);
    assert_eq!(starts, sample_starts(tokens.len(), windows, seqlen, 0, "valid.txt").unwrap(), "sampler");
    for (w, &s) in starts.iter().enumerate() {
        assert_eq!(&tokens[s..s + seqlen], &ids[w * seqlen..(w + 1) * seqlen], "window {w}: tokenizer");
    }

    let model = Decoder::new(&loaded.weights, &gpu());
    let flat_starts: Vec<usize> = (0..windows).map(|w| w * seqlen).collect();
    let gpu = gpu_means(&model, &ids, &flat_starts, seqlen, 4);
    let rows: Vec<&[u32]> = ids.chunks_exact(seqlen).collect();
    let cpu = reference::linear_input_means(&loaded.weights, &rows).unwrap();

    let names: Vec<String> = config.linear_names().into_iter().map(|(name, _)| name).collect();
    assert_eq!(gpu.keys().collect::<std::collections::BTreeSet<_>>(), names.iter().collect());
    let (mut worst_gpu, mut worst_cpu) = (0f64, 0f64);
    for name in &names {
        let want = read_f64(&st, name);
        assert!(want.iter().any(|v| v.abs() > 1e-3), "{name}: means are not trivially zero");
        let g = rel_max(gpu[name].iter().map(|&v| f64::from(v)), &want);
        let c = rel_max(cpu[name].iter().copied(), &want);
        worst_gpu = worst_gpu.max(g);
        worst_cpu = worst_cpu.max(c);
        assert!(g <= NUMPY_REL_MAX, "{name}: GPU means off numpy's by {g:e} of the largest mean (bound {NUMPY_REL_MAX:e})");
        assert!(c <= NUMPY_REL_MAX, "{name}: CPU reference means off numpy's by {c:e} of the largest mean (bound {NUMPY_REL_MAX:e})");
    }
    eprintln!("input means vs numpy f64 over {} layers: GPU worst {worst_gpu:e}, CPU reference worst {worst_cpu:e}", names.len());
}

#[test]
fn means_do_not_depend_on_the_batch_and_follow_the_sampler() {
    let loaded = shipped_model();
    let tokens = valid_tokens();
    let model = Decoder::new(&loaded.weights, &gpu());
    let settings = ActivationSettings { nsamples: 5, seqlen: 64, seed: 3, batch: 2 };
    let sampled = pollster::block_on(linear_input_means(&model, &tokens, settings, &mut NoProgress)).unwrap();
    let starts = sample_starts(tokens.len(), 5, 64, 3, "valid.txt").unwrap();
    let one_by_one = gpu_means(&model, &tokens, &starts, 64, 1);
    let all_at_once = gpu_means(&model, &tokens, &starts, 64, 5);
    for (name, want) in &sampled {
        let want64: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        assert!(rel_norm(&one_by_one[name], &want64) < 1e-5, "{name}: batch 1 vs 2");
        assert!(rel_norm(&all_at_once[name], &want64) < 1e-5, "{name}: batch 5 vs 2");
    }
    let defaults = ActivationSettings::for_model(&model);
    assert_eq!((defaults.nsamples, defaults.seqlen), (100, loaded.weights.config.n_positions));
}

/// On real layers with real means: the folded layer `(x − μ) · W + b'` is `x · W + b` for actual
/// layer inputs (the CPU forward's), and `prepare_linear` stores that bias with the scales.
#[test]
fn folding_real_means_keeps_real_layers_exact() {
    let loaded = shipped_model();
    let tokens = valid_tokens();
    let windows: Vec<&[u32]> = vec![&tokens[1000..1064], &tokens[5000..5064]];
    let means = reference::linear_input_means(&loaded.weights, &windows).unwrap();
    let block = &loaded.weights.blocks[2];
    let (layer, name) = (&block.linears[2], "h.2.mlp.c_fc");
    let (rows, cols) = (layer.in_features(), layer.out_features());
    let mu: Vec<f32> = means[name].iter().map(|&v| v as f32).collect();
    let mut bias = layer.bias.data.clone();
    fold_input_shift(&layer.weight.data, &mut bias, cols, &mu).unwrap();
    // Inputs: random rows around the mean.
    let x: Vec<f32> = (0..3 * rows).map(|i| mu[i % rows] + ((i * 7919 % 101) as f32 / 101.0 - 0.5)).collect();
    let direct = reference::linear(&x, layer);
    let centred: Vec<f32> = x.iter().enumerate().map(|(i, v)| v - mu[i % rows]).collect();
    let shifted = lutlab_core::weights::LinearWeights {
        weight: layer.weight.clone(),
        bias: lutlab_core::HostTensor::new(vec![cols], bias.clone()),
    };
    let folded = reference::linear(&centred, &shifted);
    assert_all_close("folded c_fc", &folded, &direct, 1e-4);
    let t = prepare_linear(&layer.weight.data, &layer.bias.data, rows, cols, None, Some(&mu), Some(4)).unwrap();
    assert_eq!(t.bias, bias);
    assert_eq!(t.input_shift.as_deref(), Some(&mu[..]));
    assert_eq!(t.scales.map(|s| s.len()), Some(cols));
}

struct CancelAt(u64);

impl Progress for CancelAt {
    fn update(&mut self, done: u64, _total: u64) {
        if done >= self.0 {
            self.0 = 0;
        }
    }
    fn is_cancelled(&self) -> bool {
        self.0 == 0
    }
}

#[test]
fn bad_input_and_cancel_are_clear_errors() {
    let loaded = shipped_model();
    let model = Decoder::new(&loaded.weights, &gpu());
    let tokens = valid_tokens();
    let n_positions = loaded.weights.config.n_positions;
    let err = |r: lutlab_model::Result<BTreeMap<String, Vec<f32>>>| r.unwrap_err().to_string();
    let too_long = ActivationSettings { nsamples: 1, seqlen: n_positions + 1, seed: 0, batch: 1 };
    assert!(err(pollster::block_on(linear_input_means(&model, &tokens, too_long, &mut NoProgress))).contains("seqlen"));
    let none = ActivationSettings { nsamples: 0, seqlen: 8, seed: 0, batch: 1 };
    assert!(err(pollster::block_on(linear_input_means(&model, &tokens, none, &mut NoProgress))).contains("nsamples"));
    let short = ActivationSettings { nsamples: 1, seqlen: 8, seed: 0, batch: 1 };
    assert!(pollster::block_on(linear_input_means(&model, &tokens[..4], short, &mut NoProgress)).is_err());
    let past_end = pollster::block_on(linear_input_stats_windows(&model, &tokens[..10], &[5], 8, 1, &mut NoProgress)).map(|s| s.means);
    assert!(err(past_end).contains("runs past the end"));
    let bad_id = pollster::block_on(linear_input_stats_windows(&model, &[1, 2, 60_000], &[0], 3, 1, &mut NoProgress)).map(|s| s.means);
    assert!(err(bad_id).contains("outside the vocabulary"));
    let cancelled = pollster::block_on(linear_input_stats_windows(&model, &tokens, &[0, 8, 16], 8, 1, &mut CancelAt(8)));
    assert!(matches!(cancelled, Err(ModelError::Cancelled)));
}
