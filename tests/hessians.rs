//! Hessians on the GPU (`lutlab_model::hessian`) against the plain-Rust CPU forward
//! (`reference::linear_input_hessians`) on the shipped model: float Hessians, and GPTQ's
//! sequential order (block i's Hessians computed with blocks < i quantized), in plain and
//! "true sequential" steps.

use lutlab_core::quant::hessian::Square;
use lutlab_core::reference;
use lutlab_core::{ModelWeights, NoProgress};
use lutlab_model::{hessians, quantize_sequential, sample_starts, ActivationSettings, Decoder, HessianSettings};
use lutlab_tests::*;
use std::collections::BTreeMap;

/// `‖gpu − cpu‖ / ‖cpu‖` per Hessian. The GPU sums `xᵀx` in f32 per batch (f64 across batches
/// on the host is not needed at this size), the CPU in f64. Measured: 5.6e-7 (lavapipe), 5.1e-7
/// (H200).
const NORM_REL: f64 = 5e-6;

fn rel_norm(got: &Square, want: &Square) -> f64 {
    let err: f64 = got.data.iter().zip(&want.data).map(|(g, w)| (g - w).powi(2)).sum::<f64>().sqrt();
    err / want.data.iter().map(|w| w * w).sum::<f64>().sqrt()
}

fn setup() -> (lutlab_core::LoadedModel, Vec<u32>, HessianSettings, Vec<usize>) {
    let loaded = shipped_model();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).expect("valid.txt");
    let tokens = loaded.tokenizer.encode(&text).expect("tokenizes");
    let windows = ActivationSettings { nsamples: 5, seqlen: 64, seed: 3, batch: 2 };
    let settings = HessianSettings { windows, true_sequential: false };
    let starts = sample_starts(tokens.len(), windows.nsamples, windows.seqlen, windows.seed, "valid").unwrap();
    (loaded, tokens, settings, starts)
}

fn windows<'a>(tokens: &'a [u32], starts: &[usize], seqlen: usize) -> Vec<&'a [u32]> {
    starts.iter().map(|&s| &tokens[s..s + seqlen]).collect()
}

#[test]
fn gpu_hessians_match_the_cpu_reference() {
    let (loaded, tokens, settings, starts) = setup();
    let cpu = reference::linear_input_hessians(&loaded.weights, &windows(&tokens, &starts, settings.windows.seqlen)).unwrap();
    let model = Decoder::new(&loaded.weights, &gpu());
    let mut gpu_h: BTreeMap<String, Square> = BTreeMap::new();
    pollster::block_on(hessians(&model, &tokens, settings, &mut |name, h| {
        gpu_h.insert(name.to_string(), h);
        Ok(())
    }, &mut NoProgress))
    .unwrap();
    assert_eq!(gpu_h.keys().collect::<Vec<_>>(), cpu.keys().collect::<Vec<_>>());
    let mut worst = 0f64;
    for (name, want) in &cpu {
        let rel = rel_norm(&gpu_h[name], want);
        worst = worst.max(rel);
        assert!(rel < NORM_REL, "{name}: {rel:e}");
    }
    eprintln!("GPU vs CPU Hessians: worst relative error in norm {worst:e} over {} inputs", cpu.len());
}

/// Each linear's weights replaced by a crude stand-in for quantization (rounded to multiples of
/// 0.05), so a block's outputs change visibly.
fn crude(weights: &[f32]) -> Vec<f32> {
    weights.iter().map(|w| (w / 0.05).round() * 0.05).collect()
}

#[test]
fn sequential_hessians_see_the_quantized_blocks_before_them() {
    let (loaded, tokens, settings, starts) = setup();
    let windows = windows(&tokens, &starts, settings.windows.seqlen);
    let config = loaded.weights.config.clone();
    for true_sequential in [false, true] {
        let settings = HessianSettings { true_sequential, ..settings };
        let model = Decoder::new(&loaded.weights, &gpu());
        // The callback runs concurrently for a step's linears: collect, then put in model order.
        let seen = std::sync::Mutex::new(Vec::new());
        pollster::block_on(quantize_sequential(&model, &tokens, settings, &|layer| {
            let crude = crude(&loaded.weights.linear(layer.name).expect("a linear of the model").weight.data);
            seen.lock().unwrap().push(((layer.block, layer.linear), layer.name.to_string(), layer.hessian.clone(), crude.clone()));
            Ok(Some(crude))
        }, &mut NoProgress))
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|s| s.0);
        let mut quantized: ModelWeights = loaded.weights.clone();
        for (_, name, _, crude) in &seen {
            quantized.linear_mut(name).unwrap().weight.data = crude.clone();
        }
        let seen: Vec<(String, Square)> = seen.into_iter().map(|(_, name, h, _)| (name, h)).collect();
        assert_eq!(seen.len(), config.linear_names().len());
        // The CPU reference, block by block: the model with the blocks before (and, true
        // sequentially, the groups before) already replaced.
        let mut partial = loaded.weights.clone();
        let mut worst = 0f64;
        for (name, h) in &seen {
            let key = lutlab_core::hessian_file::hessian_key(&config, name).unwrap();
            let want = &reference::linear_input_hessians(&partial, &windows).unwrap()[&key];
            let rel = rel_norm(h, want);
            worst = worst.max(rel);
            assert!(rel < NORM_REL, "{name} (true sequential {true_sequential}): {rel:e}");
            // Plain sequential: the whole block is replaced once its last linear is done.
            let (block, index) = partial.linear_position(name).unwrap();
            let last_of_step = if true_sequential {
                config.input_groups().iter().any(|g| g.end - 1 == index)
            } else {
                index == config.block_linears().len() - 1
            };
            if last_of_step {
                let specs = config.block_linears();
                let done: Vec<usize> = if true_sequential {
                    config.input_groups().into_iter().find(|g| g.contains(&index)).unwrap().collect()
                } else {
                    (0..specs.len()).collect()
                };
                for j in done {
                    let full = format!("{}.{}", config.block_prefix(block), specs[j].name);
                    partial.linear_mut(&full).unwrap().weight.data = quantized.linear(&full).unwrap().weight.data.clone();
                }
            }
        }
        eprintln!("sequential (true {true_sequential}) GPU vs CPU Hessians: worst {worst:e}");
        // And the quantized blocks did change what later blocks see.
        let float = reference::linear_input_hessians(&loaded.weights, &windows).unwrap();
        let last = &seen.last().unwrap();
        let key = lutlab_core::hessian_file::hessian_key(&config, &last.0).unwrap();
        assert!(rel_norm(&last.1, &float[&key]) > 10.0 * NORM_REL, "quantizing earlier blocks changed nothing");
    }
}

/// The linears of one input (Llama's q, k, v and gate, up) are handed the one Hessian of that
/// input with its factorization shared (`quant::hessian::shared`): a factor asked for through it
/// is computed once per input group, and GPTQ's rounding through the shared factor gives the
/// codes it gives from an unshared copy of the Hessian.
#[test]
fn the_linears_of_one_input_share_its_factor_and_round_alike() {
    use lutlab_core::quant::hessian::{round_with_hessian, shared::factor_of, Feedback, Grid, RoundingSettings};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let folder = repo("models/llama-tiny-wikitext");
    let loaded = lutlab_core::ModelFiles::open_dir(&folder).unwrap().load().unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = loaded.tokenizer.encode(&text[..20_000]).unwrap();
    let settings = HessianSettings { windows: ActivationSettings { nsamples: 4, seqlen: 64, seed: 1, batch: 2 }, true_sequential: false };
    let model = Decoder::new(&loaded.weights, &gpu());
    /// A stand-in factor: which computation produced it.
    struct Computation(usize);
    let computations = AtomicUsize::new(0);
    let seen = std::sync::Mutex::new(Vec::new());
    let rounding = RoundingSettings { feedback: Feedback::Gptq, ..RoundingSettings::default() };
    pollster::block_on(quantize_sequential(&model, &tokens, settings, &|layer| {
        let w = &loaded.weights.linear(layer.name).unwrap().weight;
        let (rows, cols) = (w.shape[0], w.shape[1]);
        let marker = factor_of(layer.hessian, vec![], || Ok::<_, ()>(Computation(computations.fetch_add(1, Ordering::SeqCst)))).unwrap().0;
        // 4-bit tables per channel, evenly spaced over each channel's range.
        let tables: Vec<f32> = (0..cols)
            .flat_map(|c| {
                let (lo, hi) = (0..rows).map(|r| w.data[r * cols + c]).fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
                (0..16).map(move |i| lo + (hi - lo) * i as f32 / 15.0)
            })
            .collect();
        let grid = Grid::Tables { levels: 16, tables, channels_per_table: 1 };
        let shared = round_with_hessian(&w.data, rows, cols, layer.hessian, &grid, None, &rounding).unwrap();
        let alone = round_with_hessian(&w.data, rows, cols, &layer.hessian.clone(), &grid, None, &rounding).unwrap();
        assert_eq!(shared.codes, alone.codes, "{}: shared and unshared factors round differently", layer.name);
        seen.lock().unwrap().push((layer.block, layer.linear, marker));
        Ok(None)
    }, &mut NoProgress))
    .unwrap();
    let seen = seen.into_inner().unwrap();
    let groups = loaded.weights.config.input_groups();
    for block in 0..loaded.weights.config.n_layer {
        for group in &groups {
            let markers: std::collections::BTreeSet<usize> = seen.iter().filter(|s| s.0 == block && group.contains(&s.1)).map(|s| s.2).collect();
            assert_eq!(markers.len(), 1, "block {block}, linears {group:?}: {} computations of one input's factor", markers.len());
        }
    }
    // One computation per input group and block, none per linear.
    assert_eq!(computations.load(Ordering::SeqCst), groups.len() * loaded.weights.config.n_layer);
}
