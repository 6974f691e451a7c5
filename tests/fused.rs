//! The fused forward kernels (`lutlab_model::fused`: `shaders/norm.wgsl`, `shaders/softmax.wgsl`)
//! against f64 CPU references of what burn's separate ops compute: LayerNorm with the biased
//! variance, RMSNorm, and `softmax(scores · scale + mask)` with a causal mask broadcast over
//! batches and heads. Rows wider than a workgroup's 256 invocations and a grid with more rows
//! than one grid row, so every index path runs. Tolerance: 2e-6 of the outputs' scale (f32 sums
//! over up to 1,000 values in another order than the reference), and for the norms also a few
//! f32 roundings of each input as the normalization amplifies them (a row of 3 close values has
//! a small σ).

use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_model::burn::tensor::{Tensor, TensorData};
use lutlab_model::fused::{masked_softmax, norm};
use lutlab_tests::*;

fn random(rng: &mut SplitMix64, n: usize, spread: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * spread).collect()
}

#[test]
fn fused_norms_match_the_cpu() {
    let device = gpu();
    let mut rng = SplitMix64::new(11);
    for (b, t, n) in [(2, 5, 768), (1, 3, 1000), (3, 1, 7), (2, 16_500, 3)] {
        // An offset mean, so the LayerNorm's centering matters.
        let x: Vec<f32> = random(&mut rng, b * t * n, 4.0).iter().map(|v| v + 3.0).collect();
        let gamma = random(&mut rng, n, 2.0);
        let beta = random(&mut rng, n, 1.0);
        let eps = 1e-5;
        let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [b, t, n]), &device);
        let gt = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [n]), &device);
        let bt = Tensor::<1>::from_data(TensorData::new(beta.clone(), [n]), &device);
        for layer_norm in [true, false] {
            let got = norm(&xt, &gt, layer_norm.then_some(&bt), eps).expect("f32 tensors without autodiff");
            let got = got.into_data().try_to_vec::<f32>().unwrap();
            // Each output's bound: a few f32 roundings of the input and its mean, amplified as the
            // normalization amplifies them (1/σ, γ), plus 2e-6 of the output's scale.
            let (mut want, mut bound) = (Vec::new(), Vec::new());
            for row in x.chunks(n) {
                let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let mean = if layer_norm { row.iter().sum::<f64>() / n as f64 } else { 0.0 };
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                let inv = 1.0 / (var + eps).sqrt();
                for i in 0..n {
                    let g = f64::from(gamma[i]);
                    want.push((row[i] - mean) * inv * g + if layer_norm { f64::from(beta[i]) } else { 0.0 });
                    bound.push(8.0 * f64::from(f32::EPSILON) * (row[i].abs() + mean.abs()) * inv * g.abs());
                }
            }
            let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let allowed = bound[i] + 2e-6 * scale;
                assert!((f64::from(*g) - w).abs() <= allowed, "{b}x{t}x{n} layer norm {layer_norm}: output {i} is {g}, the f64 reference {w} (bound {allowed:.2e})");
            }
        }
    }
}

#[test]
fn fused_masked_softmax_matches_the_cpu() {
    let device = gpu();
    let mut rng = SplitMix64::new(12);
    // (b, h, t, past): keys s = past + t (a KV cache's earlier positions), rows = b·h·t, one case
    // with more rows than a grid row's 32,768 workgroups.
    for (b, h, t, past) in [(2, 3, 17, 0), (1, 2, 9, 300), (1, 2, 40, 0), (4, 16, 520, 0)] {
        let s = past + t;
        let scores = random(&mut rng, b * h * t * s, 12.0);
        let mask: Vec<f32> = (0..t * s).map(|i| if i % s > past + i / s { f32::NEG_INFINITY } else { 0.0 }).collect();
        let scale = 0.125;
        let st = Tensor::<4>::from_data(TensorData::new(scores.clone(), [b, h, t, s]), &device);
        let mt = Tensor::<4>::from_data(TensorData::new(mask.clone(), [1, 1, t, s]), &device);
        let got = masked_softmax(&st, scale, &mt).expect("f32 tensors without autodiff").into_data().try_to_vec::<f32>().unwrap();
        let mut want = Vec::with_capacity(got.len());
        for (r, row) in scores.chunks(s).enumerate() {
            let logits: Vec<f64> = row.iter().zip(&mask[(r % t) * s..(r % t + 1) * s]).map(|(&v, &m)| f64::from(v) * scale + f64::from(m)).collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            want.extend(logits.iter().map(|l| ((l - max).exp() / total) as f32));
        }
        assert_all_close(&format!("{b}x{h}x{t}, {past} earlier"), &got, &want, 2e-6);
    }
}

/// Whole models with and without the fused kernels (`same_logits_either_way`: GPT-2's
/// LayerNorm and the trained Llama's RMSNorm, within 1e-4). CPU adapters run burn's kernels in the
/// model, so this test switches the fused ones on; the only test here that does.
#[test]
fn models_give_the_same_logits_with_the_fused_kernels() {
    same_logits_either_way(lutlab_model::fused::use_in_model);
}
