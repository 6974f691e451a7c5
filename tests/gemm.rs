//! The model's f32 matmul kernel (`shaders/gemm.wgsl` through `lutlab_model::gemm::matmul`)
//! against an f64 CPU product, on shapes that are not multiples of its 128 × 128 tiles or its
//! 16-deep K slices, with transposed operands (read through strides, both load paths of each
//! operand) and batches (attention's `[b, h, t, d]` products, a `swap_dims` view included).
//!
//! Tolerance: the GPU sums in f32 in another order than the f64 reference, so each output may
//! differ by `1e-5 · Σ|a·b|` (a few f32 ulps of the terms' magnitude) plus 1e-6.

use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_model::burn::tensor::{Tensor, TensorData};
use lutlab_model::gemm::matmul;
use lutlab_tests::*;

fn random(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
}

/// `a · b` of row-major `[batch, m, k]` and `[batch, k, n]` in f64, with each output's Σ|a·b|.
fn reference(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; batch * m * n];
    let mut magnitude = vec![0.0; batch * m * n];
    for z in 0..batch {
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    let t = f64::from(a[(z * m + i) * k + l]) * f64::from(b[(z * k + l) * n + j]);
                    out[(z * m + i) * n + j] += t;
                    magnitude[(z * m + i) * n + j] += t.abs();
                }
            }
        }
    }
    (out, magnitude)
}

fn check(label: &str, got: Tensor<3>, want: &(Vec<f64>, Vec<f64>)) {
    let got = got.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.0.len(), "{label}: output size");
    for (i, (&g, (&w, &mag))) in got.iter().zip(want.0.iter().zip(&want.1)).enumerate() {
        let bound = 1e-5 * mag + 1e-6;
        assert!((f64::from(g) - w).abs() <= bound, "{label}: output {i} is {g}, the f64 product {w} (bound {bound:.2e})");
    }
}

/// Row-major `[rows, cols]` transposed.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|i| x[(i % rows) * cols + i / rows]).collect()
}

#[test]
fn matmul_matches_the_cpu_on_odd_shapes_and_transposed_operands() {
    let device = gpu();
    let mut rng = SplitMix64::new(7);
    // (m, k, n): one partial tile, several tiles with ragged edges, K not a multiple of 16, a
    // single row and column (the decode path's shapes).
    for (m, k, n) in [(5, 3, 7), (130, 77, 259), (257, 136, 129), (1, 300, 1), (64, 8, 512)] {
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let want = reference(&a, &b, 1, m, k, n);
        let up = |x: &[f32], shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), shape), &device);
        let label = format!("{m}x{k}x{n}");
        // Row-major operands: A loaded along k, B along n.
        check(&format!("{label} plain"), matmul(up(&a, [m, k]), up(&b, [k, n])).unsqueeze(), &want);
        // Bᵀ stored as [n, k] (HF's Linear weight): B loaded along k.
        check(&format!("{label} b transposed"), matmul(up(&a, [m, k]), up(&transposed(&b, k, n), [n, k]).transpose()).unsqueeze(), &want);
        // Aᵀ stored as [k, m] (the Hessians' xᵀx): A loaded along m.
        check(&format!("{label} a transposed"), matmul(up(&transposed(&a, m, k), [k, m]).transpose(), up(&b, [k, n])).unsqueeze(), &want);
    }
}

#[test]
fn matmul_matches_the_cpu_over_batches() {
    let device = gpu();
    let mut rng = SplitMix64::new(8);
    // Attention's scores and values: [b, h, t, d] · [b, h, d, t], the keys a swapped view.
    let (b, h, t, d) = (2, 3, 67, 24);
    let q = random(&mut rng, b * h * t * d);
    let keys = random(&mut rng, b * h * t * d);
    let q4 = Tensor::<4>::from_data(TensorData::new(q.clone(), [b, h, t, d]), &device);
    let k4 = Tensor::<4>::from_data(TensorData::new(keys.clone(), [b, h, t, d]), &device);
    let kt: Vec<f32> = (0..b * h).flat_map(|z| transposed(&keys[z * t * d..(z + 1) * t * d], t, d)).collect();
    let want = reference(&q, &kt, b * h, t, d, t);
    check("q·kᵀ", matmul(q4, k4.swap_dims(2, 3)).reshape([b * h, t, t]), &want);
    // Heads split off the projections ([b, t, h, d] seen as [b, h, t, d]): two batch strides.
    let x = random(&mut rng, b * t * h * d);
    let v = random(&mut rng, b * h * d * 5);
    let x4 = Tensor::<4>::from_data(TensorData::new(x.clone(), [b, t, h, d]), &device).swap_dims(1, 2);
    let v4 = Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, d, 5]), &device);
    let xs: Vec<f32> = (0..b * h).flat_map(|z| (0..t * d).map(move |i| (z / h, z % h, i / d, i % d))).map(|(bi, hi, ti, di)| x[((bi * t + ti) * h + hi) * d + di]).collect();
    let want = reference(&xs, &v, b * h, t, d, 5);
    check("[b, t, h, d] view · v", matmul(x4, v4).reshape([b * h, t, 5]), &want);
}

/// Whole models through each matmul (`same_logits_either_way`: GPT-2 and the trained Llama,
/// within 1e-4). The only test here that switches the model's matmul; the others call the kernel
/// directly.
#[test]
fn models_give_the_same_logits_through_our_matmul_and_burns() {
    same_logits_either_way(lutlab_model::gemm::use_gemm_in_model);
}

/// Views that start inside their buffer: rows 4.. of A (an offset cubecl binds from, 1 KiB in)
/// and columns 3.. of B (an unaligned start burn copies first).
#[test]
fn matmul_reads_sliced_operands() {
    let device = gpu();
    let mut rng = SplitMix64::new(9);
    let (m, k, n) = (40, 64, 33);
    let a_full = random(&mut rng, (m + 4) * k);
    let b_full = random(&mut rng, k * (n + 3));
    let a: Vec<f32> = a_full[4 * k..].to_vec();
    let b: Vec<f32> = (0..k).flat_map(|r| b_full[r * (n + 3) + 3..(r + 1) * (n + 3)].to_vec()).collect();
    let want = reference(&a, &b, 1, m, k, n);
    let at = Tensor::<2>::from_data(TensorData::new(a_full, [m + 4, k]), &device).slice([4..m + 4, 0..k]);
    let bt = Tensor::<2>::from_data(TensorData::new(b_full, [k, n + 3]), &device).slice([0..k, 3..n + 3]);
    check("sliced", matmul(at, bt).unsqueeze(), &want);
}
