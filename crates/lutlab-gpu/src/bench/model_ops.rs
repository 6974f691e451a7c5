//! Which of burn's own kernels would serve the model best (`lutlab bench model-ops`, native): the
//! matmul routines of cubek at GPT-2's evaluation shapes, beside the default burn picks without
//! autotune (`SimpleUnit`), and flash attention beside the separate kernels the model runs now
//! (scores, mask, softmax, weighted sum), and the model's own f32 matmul (`shaders/gemm.wgsl`)
//! on the operand layouts it meets. Each is checked against the default first, then timed
//! by the wall clock over `iters` calls ended by a read-back.

use burn_cubecl::kernel::attention::{attention, AttentionStrategy};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::multi_level::Strategy as Routine;
use cubek::matmul::strategy::Strategy;
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_model::burn::backend::wgpu::CubeTensor;
use lutlab_model::burn::backend::Wgpu;
use lutlab_model::burn::tensor::ops::AttentionModuleOptions;
use lutlab_model::burn::tensor::{activation, DType, Tensor};
use lutlab_model::decoder::matmul_in;
use lutlab_model::device::{download, upload};
use lutlab_model::{Gpu, ModelError, Result};
use serde::Serialize;
use super::wall_micros;

#[derive(Clone, Debug, Serialize)]
pub struct OpTiming {
    pub op: String,
    pub shape: String,
    pub micros: f64,
    pub tflops: f64,
}

type Launch = fn() -> Routine;

/// Matmul routines that need no cooperative-matrix hardware (WGSL has none).
const ROUTINES: [(&str, Launch); 6] = [
    ("SimpleUnit (burn's default)", || Routine::SimpleUnit(Default::default())),
    ("DoubleUnit", || Routine::DoubleUnit(Default::default())),
    ("SimpleCyclicMma", || Routine::SimpleCyclicMma(Default::default())),
    ("DoubleCyclicMma", || Routine::DoubleCyclicMma(Default::default())),
    ("SimpleVecMat", || Routine::SimpleVecMat(Default::default())),
    ("Gemm", || Routine::Gemm(Default::default())),
];

pub async fn bench_model_ops(gpu: &Gpu, iters: usize) -> Result<Vec<OpTiming>> {
    let mut out = Vec::new();
    // GPT-2 124M evaluation: 2 windows × 1024 tokens through c_attn, c_fc, c_proj; a 4096-wide layer.
    for (m, k, n) in [(2048, 768, 2304), (2048, 768, 3072), (2048, 3072, 768), (512, 4096, 11008)] {
        // Software adapters allocate at most 128 MiB at once.
        if (m.max(k) * n * 4) as u64 > gpu.max_binding_bytes() {
            continue;
        }
        out.extend(matmuls(gpu, m, k, n, iters).await?);
    }
    // The model's other operand layouts: an HF `[out, in]` weight (Bᵀ) and a Hessian's `xᵀx`
    // (Aᵀ, 8 windows of 1024 positions through a 3072-wide input).
    // Fisher's block backward at micro-batch 1 (one window of 1024 positions): a weight's
    // per-sample gradient `xᵀ·∂y` (K = the positions; c_attn's and the MLP's c_proj) and the
    // input's gradient `∂y·Wᵀ` (the MLP's c_fc, back from 3072 to 768).
    let fisher = [(768, 1024, 2304, Operands::InputTransposed), (3072, 1024, 768, Operands::InputTransposed), (1024, 3072, 768, Operands::WeightTransposed)];
    for (m, k, n, layout) in [(2048, 768, 3072, Operands::WeightTransposed), (3072, 8192, 3072, Operands::InputTransposed)].into_iter().chain(fisher) {
        if (m.max(k) * n.max(k) * 4) as u64 <= gpu.max_binding_bytes() {
            out.extend(strided_matmul(gpu, m, k, n, layout, iters).await?);
        }
    }
    out.extend(attentions(gpu, 2, 12, 1024, 64, iters).await?);
    Ok(out)
}

fn random(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
}

fn primitive(t: Tensor<2>) -> Result<CubeTensor> {
    t.try_into_primitive::<Wgpu>().map_err(|e| ModelError::Gpu(format!("bench: {e:?}")))
}

async fn matmuls(gpu: &Gpu, m: usize, k: usize, n: usize, iters: usize) -> Result<Vec<OpTiming>> {
    let mut rng = SplitMix64::new(7);
    let a = upload(&random(&mut rng, m * k), [m, k], &gpu.device);
    let b = upload(&random(&mut rng, k * n), [k, n], &gpu.device);
    let want = download(a.clone().matmul(b.clone())).await?;
    let scale = want.iter().fold(1e-6f32, |acc, v| acc.max(v.abs()));
    let flops = 2.0 * (m * k * n) as f64;
    let mut out = Vec::new();
    // What the model runs (`decoder::matmul_in`): f32, and f16 operands with f32 accumulation
    // (`--dtype f16`; on a SPIR-V build, through cooperative matrices where the GPU has them).
    for (name, dtype) in [("the model's, f32 (shaders/gemm.wgsl)", DType::F32), ("the model's, f16 operands", DType::F16)] {
        if dtype == DType::F16 && !gpu.has_f16() {
            continue;
        }
        let run = || -> Result<Tensor<2>> { Ok(matmul_in(a.clone(), b.clone(), dtype)) };
        let got = download(run()?).await?;
        let tolerance = if dtype == DType::F16 { 2e-2 } else { 1e-3 };
        if let Some(i) = (0..want.len()).find(|&i| (got[i] - want[i]).abs() > tolerance * scale) {
            out.push(OpTiming { op: format!("matmul {name}: wrong at {i} ({} vs {})", got[i], want[i]), shape: format!("{m}x{k}x{n}"), micros: f64::NAN, tflops: 0.0 });
            continue;
        }
        if dtype == DType::F32 {
            out.extend(our_tunings(gpu, &format!("matmul {name}"), &format!("{m}x{k}x{n}"), flops, iters, run).await?);
            continue;
        }
        let micros = wall_micros(iters, run).await?;
        out.push(OpTiming { op: format!("matmul {name}"), shape: format!("{m}x{k}x{n}"), micros, tflops: flops / micros / 1e6 });
    }
    for (name, routine) in ROUTINES {
        let run = || -> Result<Tensor<2>> {
            let (lhs, rhs) = (primitive(a.clone())?, primitive(b.clone())?);
            let y = Tensor::<2>::zeros([m, n], &gpu.device);
            let out_t = primitive(y.clone())?;
            let f32_type = burn_cubecl::cubecl::ir::ElemType::Float(burn_cubecl::cubecl::ir::FloatKind::F32);
            let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems { lhs: f32_type, rhs: f32_type, out: f32_type });
            let client = lhs.client.clone();
            let lhs_b = cubek::std::InputBinding::new(lhs.binding(), f32_type);
            let rhs_b = cubek::std::InputBinding::new(rhs.binding(), f32_type);
            cubek::matmul::launch::launch_ref(&Strategy::MultiLevel(routine()), &client, lhs_b, rhs_b, out_t.binding(), &mut dtypes)
                .map_err(|e| ModelError::Gpu(e.to_string().lines().next().unwrap_or_default().to_string()))?;
            Ok(y)
        };
        let got = match run() {
            Ok(y) => download(y).await?,
            Err(e) => {
                out.push(OpTiming { op: format!("matmul {name}: unavailable ({e})"), shape: format!("{m}x{k}x{n}"), micros: f64::NAN, tflops: 0.0 });
                continue;
            }
        };
        if let Some(i) = (0..want.len()).find(|&i| (got[i] - want[i]).abs() > 1e-3 * scale) {
            out.push(OpTiming { op: format!("matmul {name}: wrong at {i} ({} vs {})", got[i], want[i]), shape: format!("{m}x{k}x{n}"), micros: f64::NAN, tflops: 0.0 });
            continue;
        }
        let micros = wall_micros(iters, run).await?;
        out.push(OpTiming { op: format!("matmul {name}"), shape: format!("{m}x{k}x{n}"), micros, tflops: flops / micros / 1e6 });
    }
    Ok(out)
}

/// `run` (our kernel) timed under each tuning this adapter can run: K slices of 16 and 32 (32 where
/// workgroups get 32 KiB), operands read as scalars or, where aligned, as vec4s; the first row is
/// the tuning the process runs by default, the tuning it started with restored after.
async fn our_tunings(gpu: &Gpu, name: &str, shape: &str, flops: f64, iters: usize, run: impl Fn() -> Result<Tensor<2>>) -> Result<Vec<OpTiming>> {
    use lutlab_model::gemm::{set_tuning, tuning, workgroup_bytes, SLICES};
    let at_start = tuning();
    let others = SLICES.into_iter().filter(|&s| workgroup_bytes(s) <= gpu.max_workgroup_memory()).flat_map(|s| [(s, false), (s, true)]);
    let mut out = Vec::new();
    for (slice, vector_loads) in std::iter::once(at_start).chain(others.filter(|&t| t != at_start)) {
        set_tuning(slice, vector_loads);
        let timed = wall_micros(iters, &run).await;
        set_tuning(at_start.0, at_start.1);
        let micros = timed?;
        let loads = if vector_loads { "vec4 loads" } else { "scalar loads" };
        out.push(OpTiming { op: format!("{name}, K slices of {slice}, {loads}"), shape: shape.to_string(), micros, tflops: flops / micros / 1e6 });
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Operands {
    /// `a · bᵀ` with `b` stored `[n, k]`.
    WeightTransposed,
    /// `aᵀ · b` with `a` stored `[k, m]`.
    InputTransposed,
}

/// The model's f32 matmul (`lutlab_model::gemm`) on transposed views beside burn's matmul of the
/// same views, checked against burn's.
async fn strided_matmul(gpu: &Gpu, m: usize, k: usize, n: usize, layout: Operands, iters: usize) -> Result<Vec<OpTiming>> {
    let mut rng = SplitMix64::new(9);
    let (a, b, what) = match layout {
        Operands::WeightTransposed => (upload(&random(&mut rng, m * k), [m, k], &gpu.device), upload(&random(&mut rng, n * k), [n, k], &gpu.device).transpose(), "a·bᵀ"),
        Operands::InputTransposed => (upload(&random(&mut rng, k * m), [k, m], &gpu.device).transpose(), upload(&random(&mut rng, k * n), [k, n], &gpu.device), "aᵀ·b"),
    };
    let want = download(a.clone().matmul(b.clone())).await?;
    let scale = want.iter().fold(1e-6f32, |acc, v| acc.max(v.abs()));
    let flops = 2.0 * (m * k * n) as f64;
    let shape = format!("{m}x{k}x{n}");
    let got = download(lutlab_model::gemm::matmul(a.clone(), b.clone())).await?;
    if let Some(i) = (0..want.len()).find(|&i| (got[i] - want[i]).abs() > 1e-3 * scale) {
        return Ok(vec![OpTiming { op: format!("matmul {what}, the model's: wrong at {i} ({} vs {})", got[i], want[i]), shape, micros: f64::NAN, tflops: 0.0 }]);
    }
    let mut out = our_tunings(gpu, &format!("matmul {what}, the model's f32 (shaders/gemm.wgsl)"), &shape, flops, iters, || Ok(lutlab_model::gemm::matmul(a.clone(), b.clone()))).await?;
    let burns = wall_micros(iters, || Ok(a.clone().matmul(b.clone()))).await?;
    out.push(OpTiming { op: format!("matmul {what}, burn's default"), shape, micros: burns, tflops: flops / burns / 1e6 });
    Ok(out)
}

async fn attentions(gpu: &Gpu, b: usize, h: usize, t: usize, d: usize, iters: usize) -> Result<Vec<OpTiming>> {
    let mut rng = SplitMix64::new(8);
    let shape = [b, h, t, d];
    let q = lutlab_model::device::upload(&random(&mut rng, b * h * t * d), shape, &gpu.device);
    let kk = lutlab_model::device::upload(&random(&mut rng, b * h * t * d), shape, &gpu.device);
    let v = lutlab_model::device::upload(&random(&mut rng, b * h * t * d), shape, &gpu.device);
    let causal = {
        let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
        upload(&mask, [1, 1, t, t], &gpu.device)
    };
    let separate = || activation::softmax(q.clone().matmul(kk.clone().swap_dims(2, 3)) / (d as f64).sqrt() + causal.clone(), 3).matmul(v.clone());
    let flash = || -> Result<Tensor<4>> {
        let p = |x: &Tensor<4>| x.clone().try_into_primitive::<Wgpu>().map_err(|e| ModelError::Gpu(format!("bench: {e:?}")));
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let y = attention(p(&q)?, p(&kk)?, p(&v)?, None, None, options, AttentionStrategy::FlashUnit).map_err(|e| ModelError::Gpu(format!("flash attention: {e:?}")))?;
        Ok(Tensor::from_primitive::<Wgpu>(y))
    };
    let want = download(separate()).await?;
    let flops = 4.0 * (b * h * t * t * d) as f64 / 2.0; // causal: half the scores
    let mut out = Vec::new();
    let micros = wall_micros(iters, || Ok(separate())).await?;
    out.push(OpTiming { op: "attention, separate kernels (the model now)".into(), shape: format!("{b}x{h}x{t}x{d}"), micros, tflops: flops / micros / 1e6 });
    match flash() {
        Ok(y) => {
            let got = download(y).await?;
            let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            let micros = wall_micros(iters, flash).await?;
            out.push(OpTiming { op: format!("attention, flash (unit), max abs diff {err:.2e}"), shape: format!("{b}x{h}x{t}x{d}"), micros, tflops: flops / micros / 1e6 });
        }
        Err(e) => out.push(OpTiming { op: format!("attention, flash: {e}"), shape: String::new(), micros: f64::NAN, tflops: 0.0 }),
    }
    Ok(out)
}
