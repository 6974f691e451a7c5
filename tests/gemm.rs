//! The model's f32 matmul kernel (`shaders/gemm.wgsl` through `lutlab_model::gemm::matmul`)
//! against an f64 CPU product, on shapes that are not multiples of its 128 × 128 tiles or its
//! 16- or 32-deep K slices, with transposed operands (read through strides, both load paths of each
//! operand, as scalars and as vec4s) and batches (attention's `[b, h, t, d]` products, a
//! `swap_dims` view included); every tuning of the kernel gives the same bits.
//!
//! Tolerance: the GPU sums in f32 in another order than the f64 reference, so each output may
//! differ by `1e-5 · Σ|a·b|` (a few f32 ulps of the terms' magnitude) plus 1e-6.
//!
//! Inside autodiff graphs (`tracked_gemm`): the gradients of both operands against burn's autodiff
//! matmul, and Fisher's diagonal through either matmul.

use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_model::burn::tensor::{Tensor, TensorData};
use lutlab_core::NoProgress;
use lutlab_model::gemm::{matmul, set_tuning, tuning, use_gemm_in_model, SLICES};
use lutlab_model::tracked_gemm::tracked_matmul;
use lutlab_tests::*;
use std::sync::Mutex;

/// Held by the tests that switch the model's matmul or the kernel's tuning, which are switches
/// for the whole process; the choices made at start-up are restored when it is released (on the
/// device's GPU the model's matmul is ours).
static MODEL_MATMUL_SWITCH: Mutex<()> = Mutex::new(());

struct Switching {
    at_start: bool,
    tuning_at_start: (u32, bool),
    _lock: std::sync::MutexGuard<'static, ()>,
}

fn switching() -> Switching {
    let lock = MODEL_MATMUL_SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    Switching { at_start: lutlab_model::gemm::gemm_in_model(), tuning_at_start: tuning(), _lock: lock }
}

impl Drop for Switching {
    fn drop(&mut self) {
        use_gemm_in_model(self.at_start);
        set_tuning(self.tuning_at_start.0, self.tuning_at_start.1);
    }
}

/// `product` under every tuning of the kernel (K slices of 16 and 32, operands read as scalars and,
/// where aligned, as vec4s), which must agree bit for bit: each output sums its K in the same
/// order whichever way the slices are loaded. The caller holds [`switching`].
fn under_every_tuning(label: &str, product: impl Fn() -> Tensor<3>) -> Tensor<3> {
    let mut first: Option<(Tensor<3>, Vec<f32>)> = None;
    for slice in SLICES {
        for vector_loads in [false, true] {
            set_tuning(slice, vector_loads);
            let got = product();
            let values = got.clone().into_data().try_to_vec::<f32>().unwrap();
            match &first {
                None => first = Some((got, values)),
                Some((_, want)) => {
                    let differ = values.iter().zip(want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
                    assert_eq!(differ, 0, "{label}: {differ} outputs differ with K slices of {slice}, vec4 loads {vector_loads}, from slices of 16 read as scalars");
                }
            }
        }
    }
    first.unwrap().0
}

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
    let _switch = switching();
    let device = gpu();
    let mut rng = SplitMix64::new(7);
    // (m, k, n): one partial tile, several tiles with ragged edges, K not a multiple of 16, a
    // single row and column (the decode path's shapes); few tiles over a long K, which the kernel
    // splits into chunks summed after (4 chunks of 288, the last 236 long; 8 of 512). Extents that
    // are multiples of 4 are read as vec4s along them: K in (64, 8, 512), (130, 1100, 70) and
    // (40, 4096, 200), m and n where they are (the transposed cases), a K that is not a multiple
    // of 32 (136, 1100) leaving a partial 32-deep slice.
    for (m, k, n) in [(5, 3, 7), (130, 77, 259), (257, 136, 129), (1, 300, 1), (64, 8, 512), (130, 1100, 70), (40, 4096, 200)] {
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let want = reference(&a, &b, 1, m, k, n);
        let up = |x: &[f32], shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(x.to_vec(), shape), &device);
        let label = format!("{m}x{k}x{n}");
        // Row-major operands: A loaded along k, B along n.
        let plain = format!("{label} plain");
        check(&plain, under_every_tuning(&plain, || matmul(up(&a, [m, k]), up(&b, [k, n])).unsqueeze()), &want);
        // Bᵀ stored as [n, k] (HF's Linear weight): B loaded along k.
        let bt = format!("{label} b transposed");
        check(&bt, under_every_tuning(&bt, || matmul(up(&a, [m, k]), up(&transposed(&b, k, n), [n, k]).transpose()).unsqueeze()), &want);
        // Aᵀ stored as [k, m] (the Hessians' xᵀx): A loaded along m.
        let at = format!("{label} a transposed");
        check(&at, under_every_tuning(&at, || matmul(up(&transposed(&a, m, k), [k, m]).transpose(), up(&b, [k, n])).unsqueeze()), &want);
    }
}

#[test]
fn matmul_matches_the_cpu_over_batches() {
    let _switch = switching();
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
    check("q·kᵀ", under_every_tuning("q·kᵀ", || matmul(q4.clone(), k4.clone().swap_dims(2, 3)).reshape([b * h, t, t])), &want);
    // Heads split off the projections ([b, t, h, d] seen as [b, h, t, d]): two batch strides.
    let x = random(&mut rng, b * t * h * d);
    let v = random(&mut rng, b * h * d * 5);
    let x4 = Tensor::<4>::from_data(TensorData::new(x.clone(), [b, t, h, d]), &device).swap_dims(1, 2);
    let v4 = Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, d, 5]), &device);
    let xs: Vec<f32> = (0..b * h).flat_map(|z| (0..t * d).map(move |i| (z / h, z % h, i / d, i % d))).map(|(bi, hi, ti, di)| x[((bi * t + ti) * h + hi) * d + di]).collect();
    let want = reference(&xs, &v, b * h, t, d, 5);
    check("[b, t, h, d] view · v", under_every_tuning("view · v", || matmul(x4.clone(), v4.clone()).reshape([b * h, t, 5])), &want);
    // A batch of products over a K long enough to split (3 batches of 1 tile: 8 chunks each).
    let (z, m, k, n) = (3, 20, 2100, 30);
    let a = random(&mut rng, z * m * k);
    let bm = random(&mut rng, z * k * n);
    let want = reference(&a, &bm, z, m, k, n);
    let up = |x: &[f32], shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(x.to_vec(), shape), &device);
    check("batched, K split", under_every_tuning("batched", || matmul(up(&a, [z, m, k]), up(&bm, [z, k, n]))), &want);
}

/// Whole models through each matmul (`same_logits_either_way`: GPT-2 and the trained Llama,
/// within 1e-4). The only test here that switches the model's matmul; the others call the kernel
/// directly.
#[test]
fn models_give_the_same_logits_through_our_matmul_and_burns() {
    let _switch = switching();
    same_logits_either_way(use_gemm_in_model);
}

/// `∂a` and `∂b` of `Σ (a · b) ⊙ r` through our kernel and through burn's autodiff matmul: a
/// batch of two, B as a transposed view (HF's `[out, in]` weights), and B a constant (only A's
/// gradient is taken, so the backward keeps only B).
#[test]
fn tracked_matmul_gives_the_gradients_of_burns() {
    let device = gpu().autodiff();
    let mut rng = SplitMix64::new(10);
    let (z, m, k, n) = (2, 37, 45, 29);
    let a = random(&mut rng, z * m * k);
    let b_stored = random(&mut rng, z * n * k);
    let r = Tensor::<3>::from_data(TensorData::new(random(&mut rng, z * m * n), [z, m, n]), &device);
    for b_tracked in [true, false] {
        let run = |ours: bool| {
            let a = Tensor::<3>::from_data(TensorData::new(a.clone(), [z, m, k]), &device).require_grad();
            let b = Tensor::<3>::from_data(TensorData::new(b_stored.clone(), [z, n, k]), &device);
            let b = if b_tracked { b.require_grad() } else { b };
            let c = if ours { tracked_matmul(a.clone(), b.clone().swap_dims(1, 2)) } else { a.clone().matmul(b.clone().swap_dims(1, 2)) };
            let grads = (c * r.clone()).sum().backward();
            let grad_of = |t: &Tensor<3>| t.grad(&grads).map(|g| g.into_data().try_to_vec::<f32>().unwrap());
            (grad_of(&a).expect("∂a"), grad_of(&b))
        };
        let ((a_ours, b_ours), (a_burn, b_burn)) = (run(true), run(false));
        let label = if b_tracked { "both tracked" } else { "b constant" };
        // Each gradient entry sums n (∂a) or m (∂b) products of values below 0.5 in magnitude.
        let err = assert_all_close(&format!("{label}: ∂a"), &a_ours, &a_burn, 1e-5);
        eprintln!("{label}: max |∂a difference| {err:e}");
        assert_eq!(b_ours.is_some(), b_tracked, "{label}: ∂b exists only for a tracked b");
        if let (Some(ours), Some(burn)) = (b_ours, b_burn) {
            let err = assert_all_close(&format!("{label}: ∂b"), &ours, &burn, 1e-5);
            eprintln!("{label}: max |∂b difference| {err:e}");
        }
    }
}

/// Fisher's diagonal (per-sample squared gradients, micro-batch 2: batched weight copies) of the
/// shipped GPT-2 through our matmul and through burn's, within 1e-3 of its norm per tensor, the
/// bound of the PyTorch comparison in tests/fisher.rs. The two sum in the same order except where
/// ours splits K (the head's gradient `∂logits · wte` over 50,257 words in 8 chunks, a sum that
/// cancels almost to zero since softmax − one-hot sums to zero): measured on lavapipe 0 without
/// the split (`LUTLAB_GEMM_SPLIT=0`), 7.5e-5 with it (block 0's `c_attn`, at the end of the
/// backward chain); in Chromium 2.6e-4 (tests/e2e/gpu-kernels.test.mjs).
#[test]
fn fisher_is_the_same_through_our_matmul_and_burns() {
    let _switch = switching();
    let weights = shipped_model().weights;
    let model = lutlab_model::Decoder::new(&weights, &gpu());
    let vocab = weights.config.vocab_size as u32;
    let tokens: Vec<u32> = (0..400u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let run = |ours: bool| {
        use_gemm_in_model(ours);
        let starts = [0, 100, 200, 300];
        pollster::block_on(lutlab_model::fisher_windows(&model, &tokens, &starts, 64, 2, "tokens", &mut NoProgress)).unwrap()
    };
    let (ours, burn) = (run(true), run(false));
    assert_eq!(ours.diagonal.tensors.len(), 16);
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let mut worst = 0f64;
    for ((name, a), (_, b)) in ours.diagonal.tensors.iter().zip(&burn.diagonal.tensors) {
        let diff = norm(&mut a.data.iter().zip(&b.data).map(|(&x, &y)| f64::from(x) - f64::from(y)));
        let rel = diff / norm(&mut b.data.iter().map(|&v| f64::from(v)));
        assert!(rel < 1e-3, "{name}: our matmul's Fisher differs from burn's by {rel:e} in norm");
        worst = worst.max(rel);
    }
    let (la, lb) = (ours.diagonal.meta.mean_loss.unwrap(), burn.diagonal.meta.mean_loss.unwrap());
    assert!((la / lb - 1.0).abs() < 1e-6, "mean loss {la} vs {lb}");
    eprintln!("Fisher through our matmul vs burn's: worst relative difference in norm {worst:e}; mean loss {la} vs {lb}");
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

/// The Hessians' `Σ xᵀx` (`gemm::add_gram`, then `symmetric_from_upper`) over two batches,
/// on our kernel and on burn's matmul, against the f64 sum. 200 inputs span 2 × 2 tiles, one of
/// them skipped; over 300 rows the kernel adds the upper tiles in place, over 1,100 rows (few
/// tiles, a long K) it splits K into 4 chunks of 288, the last one short, and sums their partial
/// Grams.
#[test]
fn gram_sums_match_the_cpu_on_either_matmul() {
    let _switch = switching();
    let device = gpu();
    let mut rng = SplitMix64::new(11);
    for (rows, n) in [(300, 200), (1100, 200)] {
        let xs: Vec<Vec<f32>> = (0..2).map(|_| random(&mut rng, rows * n)).collect();
        let (mut want, mut magnitude) = (vec![0f64; n * n], vec![0f64; n * n]);
        for x in &xs {
            let (sum, mag) = reference(&transposed(x, rows, n), x, 1, n, rows, n);
            want.iter_mut().zip(&sum).for_each(|(w, s)| *w += s);
            magnitude.iter_mut().zip(&mag).for_each(|(w, s)| *w += s);
        }
        for ours in [true, false] {
            use_gemm_in_model(ours);
            let mut sum = None;
            for x in &xs {
                sum = Some(lutlab_model::gemm::add_gram(sum, Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, n]), &device)).unwrap());
            }
            let got = lutlab_model::gemm::symmetric_from_upper(sum.unwrap()).unsqueeze();
            let label = format!("Σ xᵀx over {rows} rows, {}", if ours { "our kernel" } else { "burn's matmul" });
            check(&label, got, &(want.clone(), magnitude.clone()));
        }
    }
}
