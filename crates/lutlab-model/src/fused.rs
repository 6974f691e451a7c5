//! Fused kernels for the model: LayerNorm/RMSNorm (`shaders/norm.wgsl`), attention's scaled,
//! masked softmax (`shaders/softmax.wgsl`), GPT-2's GELU (`shaders/gelu.wgsl`) and evaluation's
//! per-token loss over the vocabulary (`shaders/nll.wgsl`), each one launch where burn's
//! separate kernels take 7–9. Under autodiff (Fisher's blocks) the norms, softmax and GELU are
//! operations of their own whose backward is one kernel too ([`crate::tracked_fused`]), and
//! Fisher's head takes the loss and its gradient with respect to the logits from one kernel
//! (`shaders/nll.wgsl`) outside autodiff. `tests/fused.rs` compares each with an f64
//! CPU reference.
//!
//! The model uses them on GPUs ([`use_in_model`], set when the GPU is opened): each replaces
//! several passes over the tensor through memory with one (GPT-2 124M-shaped evaluation on one
//! H100 1.04–1.29× faster with the norms and softmax fused; BENCHMARKS.md), and in the browser on
//! every adapter (`device::choose_kernels`). On a native CPU adapter (lavapipe) burn's separate
//! kernels stay: there a workgroup per row costs more than it saves (the shipped Llama's
//! evaluation took 42 s with them against 28 s without, lavapipe, 2 cores).

use crate::device::grid_of;
use crate::lut_linear::{kernel_id, primitive};
use burn::backend::wgpu::{into_contiguous, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Shape, Tensor};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::client::Client;
use cubecl::server::{Handle, KernelArguments};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the model's forward uses the fused norms, softmax and GELU.
static IN_MODEL: AtomicBool = AtomicBool::new(false);

/// Whether evaluation's loss uses the fused kernel.
static NLL_IN_MODEL: AtomicBool = AtomicBool::new(false);

/// Makes the model's forward and evaluation's loss use the fused kernels (`true`) or burn's
/// separate ones.
pub fn use_in_model(fused: bool) {
    IN_MODEL.store(fused, Ordering::Relaxed);
    NLL_IN_MODEL.store(fused, Ordering::Relaxed);
}

/// The choice when the process opens its GPU: the norms and softmax on GPUs (`gpu`), burn's on
/// CPU adapters; the loss on every adapter, since a workgroup per row of a vocabulary has work
/// enough even on a CPU (lavapipe, 512 rows of GPT-2's 50,257 logits: 0.12 s against burn's
/// 0.31 s). `LUTLAB_FUSED=0|1` overrides both natively (benchmarks).
pub(crate) fn choose_at_startup(gpu: bool) {
    #[cfg(not(target_arch = "wasm32"))]
    match std::env::var("LUTLAB_FUSED").as_deref() {
        Ok("0") => return use_in_model(false),
        Ok("1") => return use_in_model(true),
        _ => {}
    }
    IN_MODEL.store(gpu, Ordering::Relaxed);
    NLL_IN_MODEL.store(true, Ordering::Relaxed);
}

/// Whether the model's forward uses the fused norms and softmax.
pub fn in_model() -> bool {
    IN_MODEL.load(Ordering::Relaxed)
}

/// Whether evaluation's loss uses the fused kernel.
pub fn nll_in_model() -> bool {
    NLL_IN_MODEL.load(Ordering::Relaxed)
}

/// Invocations per workgroup of every fused kernel (one workgroup per row; `workgroup_reduce.wgsl`).
const THREADS: u32 = 64;

/// Whether a fused kernel can take `t`: f32, not tracked by autodiff.
fn plain_f32<const D: usize>(t: &Tensor<D>) -> bool {
    t.dtype() == DType::F32 && !t.is_autodiff()
}

/// `x` normalized over its last dimension: LayerNorm `(x − mean)/√(var + eps) · γ + β` with
/// `beta`, RMSNorm `x/√(mean(x²) + eps) · γ` without; `None` where the kernel does not apply.
/// Under autodiff (Fisher's blocks, γ and β constants) the gradient comes from
/// `shaders/norm_backward.wgsl` ([`crate::tracked_fused`]).
pub fn norm(x: &Tensor<3>, gamma: &Tensor<1>, beta: Option<&Tensor<1>>, eps: f64) -> Option<Tensor<3>> {
    if x.is_autodiff() {
        return crate::tracked_fused::norm(x, gamma, beta, eps);
    }
    if !plain_f32(x) || !plain_f32(gamma) || beta.is_some_and(|b| !plain_f32(b)) {
        return None;
    }
    let beta = match beta {
        Some(beta) => Some(primitive(beta.clone()).ok()?),
        None => None,
    };
    let y = norm_kernel(primitive(x.clone()).ok()?, primitive(gamma.clone()).ok()?, beta, eps);
    Some(Tensor::from_primitive::<Wgpu>(y))
}

/// [`norm`] on the kernel's operands (`x` of any shape, over its last dimension).
pub(crate) fn norm_kernel(x: CubeTensor, gamma: CubeTensor, beta: Option<CubeTensor>, eps: f64) -> CubeTensor {
    let x = into_contiguous(x);
    let shape = x.meta.shape().clone();
    let n = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / n.max(1);
    let kernel = Fused::Norm { layer_norm: beta.is_some() };
    let gamma = into_contiguous(gamma);
    let client = x.client.clone();
    // RMSNorm reads no β.
    let beta = beta.map_or_else(|| placeholder(&client), |beta| into_contiguous(beta).handle);
    let y = client.empty(rows * n * 4);
    let grid = grid_of(rows);
    let params = [n as u32, (eps as f32).to_bits(), rows as u32, grid.0 as u32];
    launch(&client, kernel, THREADS, grid, [x.handle.clone(), gamma.handle, beta, y.clone()], &params);
    CubeTensor::new_contiguous(client, x.device.clone(), shape, y, DType::F32)
}

/// The gradient of [`norm_kernel`] with respect to `x`, given the output's gradient `dy`.
pub(crate) fn norm_backward_kernel(x: CubeTensor, gamma: CubeTensor, dy: CubeTensor, layer_norm: bool, eps: f64) -> CubeTensor {
    let (x, gamma, dy) = (into_contiguous(x), into_contiguous(gamma), into_contiguous(dy));
    let shape = x.meta.shape().clone();
    let n = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / n.max(1);
    let client = x.client.clone();
    let dx = client.empty(rows * n * 4);
    let grid = grid_of(rows);
    let params = [n as u32, (eps as f32).to_bits(), rows as u32, grid.0 as u32];
    launch(&client, Fused::NormBackward { layer_norm }, THREADS, grid, [x.handle.clone(), gamma.handle, dy.handle, dx.clone()], &params);
    CubeTensor::new_contiguous(client, x.device.clone(), shape, dx, DType::F32)
}

/// GPT-2's GELU (`gelu_new`, the tanh approximation) of each element, as burn's
/// `gelu_approximate` computes it; `None` where the kernel does not apply. Under autodiff
/// (Fisher's blocks) its gradient comes from the same kernel's backward ([`crate::tracked_fused`]).
pub fn gelu_tanh<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    if x.is_autodiff() {
        return crate::tracked_fused::gelu_tanh(x);
    }
    if !plain_f32(x) {
        return None;
    }
    Some(Tensor::from_primitive::<Wgpu>(gelu_kernel(primitive(x.clone()).ok()?, None)))
}

/// [`gelu_tanh`] of `x` on the kernel's operands, or with `dy` the gradient `dy · gelu'(x)`.
pub(crate) fn gelu_kernel(x: CubeTensor, dy: Option<CubeTensor>) -> CubeTensor {
    const WORKGROUP: u32 = 256;
    let x = into_contiguous(x);
    let shape = x.meta.shape().clone();
    let n = shape.num_elements();
    let client = x.client.clone();
    let backward = dy.is_some();
    // The forward reads no `dy`.
    let dy = dy.map_or_else(|| placeholder(&client), |dy| into_contiguous(dy).handle);
    let out = client.empty(n * 4);
    let grid = grid_of(n.div_ceil(WORKGROUP as usize));
    let params = [n as u32, grid.0 as u32];
    launch(&client, Fused::Gelu { backward }, WORKGROUP, grid, [x.handle.clone(), dy, out.clone()], &params);
    CubeTensor::new_contiguous(client, x.device.clone(), shape, out, DType::F32)
}

/// `softmax(scores · scale + mask)` over the last dimension, `scores` `[b, h, t, s]` and the
/// additive `mask` `[1, 1, t, s]` shared by every batch and head; `None` where the kernel does
/// not apply. Under autodiff (Fisher's blocks, the mask a constant) the gradient comes from
/// `shaders/softmax_backward.wgsl` ([`crate::tracked_fused`]).
pub fn masked_softmax(scores: &Tensor<4>, scale: f64, mask: &Tensor<4>) -> Option<Tensor<4>> {
    let [_, _, t, s] = scores.dims();
    if mask.dims() != [1, 1, t, s] {
        return None;
    }
    if scores.is_autodiff() {
        return crate::tracked_fused::masked_softmax(scores, scale, mask);
    }
    if !plain_f32(scores) || !plain_f32(mask) {
        return None;
    }
    let y = masked_softmax_kernel(primitive(scores.clone()).ok()?, scale, primitive(mask.clone()).ok()?);
    Some(Tensor::from_primitive::<Wgpu>(y))
}

/// [`masked_softmax`] on the kernel's operands.
pub(crate) fn masked_softmax_kernel(scores: CubeTensor, scale: f64, mask: CubeTensor) -> CubeTensor {
    let (scores, mask) = (into_contiguous(scores), into_contiguous(mask));
    let shape = scores.meta.shape().clone();
    let (t, s) = (shape[2], shape[3]);
    let rows = shape.num_elements() / s.max(1);
    let client = scores.client.clone();
    let y = client.empty(rows * s * 4);
    let grid = grid_of(rows);
    let params = [s as u32, t as u32, (scale as f32).to_bits(), rows as u32, grid.0 as u32];
    launch(&client, Fused::Softmax, THREADS, grid, [scores.handle.clone(), mask.handle, y.clone()], &params);
    CubeTensor::new_contiguous(client, scores.device.clone(), shape, y, DType::F32)
}

/// The gradient of [`masked_softmax_kernel`] with respect to the scores, from its output `y`
/// and the output's gradient `dy`.
pub(crate) fn masked_softmax_backward_kernel(y: CubeTensor, dy: CubeTensor, scale: f64) -> CubeTensor {
    let (y, dy) = (into_contiguous(y), into_contiguous(dy));
    let shape = y.meta.shape().clone();
    let s = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / s.max(1);
    let client = y.client.clone();
    let dscores = client.empty(rows * s * 4);
    let grid = grid_of(rows);
    let params = [s as u32, (scale as f32).to_bits(), rows as u32, grid.0 as u32];
    launch(&client, Fused::SoftmaxBackward, THREADS, grid, [y.handle.clone(), dy.handle, dscores.clone()], &params);
    CubeTensor::new_contiguous(client, y.device.clone(), shape, dscores, DType::F32)
}

/// The negative log-likelihood `[b, s, 1]` of `targets` (one per row, `b · s` of them) under
/// `logits` `[b, s, v]`, as `eval::token_nll` computes it; `None` where the kernel does not apply.
pub fn token_nll(logits: &Tensor<3>, targets: &[u32]) -> Option<Tensor<3>> {
    let [b, s, v] = logits.dims();
    let (nll, _) = nll_kernel(&logits.clone().reshape([b * s, v]), targets, None)?;
    Some(nll.reshape([b, s, 1]))
}

/// Each row's loss `[rows]` of `targets` (one per row) under `logits` `[rows, v]`, as
/// [`token_nll`] computes it, and the gradient of `scale ·` their sum with respect to the logits,
/// `scale · (softmax − one-hot)` `[rows, v]`: one kernel where burn's autodiff takes ~20 launches
/// (Fisher's head); `None` where the kernel does not apply.
pub fn token_nll_gradient(logits: &Tensor<2>, targets: &[u32], scale: f32) -> Option<(Tensor<1>, Tensor<2>)> {
    let (nll, gradient) = nll_kernel(logits, targets, Some(scale))?;
    Some((nll, gradient?))
}

/// `shaders/nll.wgsl` over `logits` `[rows, v]`: each row's loss, and with `gradient_scale` the
/// gradient of that times their sum; `None` where the kernel does not apply.
fn nll_kernel(logits: &Tensor<2>, targets: &[u32], gradient_scale: Option<f32>) -> Option<(Tensor<1>, Option<Tensor<2>>)> {
    let [rows, v] = logits.dims();
    if !plain_f32(logits) || targets.len() != rows || targets.iter().any(|&t| t as usize >= v) {
        return None;
    }
    let logits = into_contiguous(primitive(logits.clone()).ok()?);
    let client = logits.client.clone();
    let nll = client.empty(rows * 4);
    // The loss alone writes no gradient.
    let gradient = match gradient_scale {
        Some(_) => client.empty(rows * v * 4),
        None => placeholder(&client),
    };
    let grid = grid_of(rows);
    let params = [v as u32, rows as u32, grid.0 as u32, gradient_scale.unwrap_or(0.0).to_bits()];
    let targets = client.create_from_slice(bytemuck::cast_slice(targets));
    let kernel = Fused::Nll { gradient: gradient_scale.is_some() };
    launch(&client, kernel, THREADS, grid, [logits.handle.clone(), targets, nll.clone(), gradient.clone()], &params);
    let primitive = |handle, shape: Shape| CubeTensor::new_contiguous(client.clone(), logits.device.clone(), shape, handle, DType::F32);
    let gradient = gradient_scale.map(|_| Tensor::from_primitive::<Wgpu>(primitive(gradient, Shape::new([rows, v]))));
    Some((Tensor::from_primitive::<Wgpu>(primitive(nll, Shape::new([rows]))), gradient))
}

/// Fisher's accumulation: `accumulator` `[in, out]` plus each sample's squared gradient of a
/// micro-batch's per-sample gradients `grad` `[b, in, out]`, and each sample's sum of squares
/// `[b]`, in one pass over `grad` (`shaders/add_squares.wgsl`); the accumulator is updated in
/// place. `None` (the accumulator untouched) where the kernel does not apply.
pub fn add_squares(accumulator: &mut Tensor<2>, grad: &Tensor<3>) -> Option<Tensor<1>> {
    const PER_WORKGROUP: usize = 64 * 64;
    let [b, n_in, n_out] = grad.dims();
    if !plain_f32(grad) || !plain_f32(accumulator) || accumulator.dims() != [n_in, n_out] || b == 0 {
        return None;
    }
    let acc = into_contiguous(primitive(std::mem::replace(accumulator, Tensor::empty([0, 0], &grad.device()))).ok()?);
    if !acc.can_mut() {
        // Shared: written in place it would change another tensor.
        *accumulator = Tensor::from_primitive::<Wgpu>(acc);
        return None;
    }
    let grad = into_contiguous(primitive(grad.clone()).ok()?);
    let n = n_in * n_out;
    let groups = n.div_ceil(PER_WORKGROUP);
    let client = grad.client.clone();
    let partial = client.empty(b * groups * 4);
    let grid = grid_of(groups);
    let params = [n as u32, groups as u32, grid.0 as u32];
    launch(&client, Fused::AddSquares { samples: b }, THREADS, grid, [grad.handle.clone(), acc.handle.clone(), partial.clone()], &params);
    let partial = CubeTensor::new_contiguous(client, grad.device.clone(), Shape::new([b, groups]), partial, DType::F32);
    *accumulator = Tensor::from_primitive::<Wgpu>(acc);
    Some(Tensor::<2>::from_primitive::<Wgpu>(partial).sum_dim(1).reshape([b]))
}

/// Launches `kernel` on a `grid` of `workgroup`-wide workgroups, `buffers` bound in order and the
/// parameters `params` after them (every fused kernel's last binding).
pub(crate) fn launch<const N: usize>(client: &Client, kernel: impl KernelSource + 'static, workgroup: u32, (gx, gy): (usize, usize), buffers: [Handle; N], params: &[u32]) {
    let arguments = buffers
        .into_iter()
        .fold(KernelArguments::new(), |arguments, buffer| arguments.with_buffer(buffer.binding()))
        .with_buffer(client.create_from_slice(bytemuck::cast_slice(params)).binding());
    client.launch(Box::new(SourceKernel::new(kernel, CubeDim::new_1d(workgroup))), CubeCount::Static(gx as u32, gy as u32, 1), arguments);
}

/// A buffer of its own for a binding that a kernel's variant does not use (RMSNorm's β, the
/// GELU forward's `dy`, the loss's gradient without it): WebGPU refuses one buffer bound to two
/// writable bindings, and cubecl binds every buffer read_write.
fn placeholder(client: &Client) -> Handle {
    client.create_from_slice(&[0u8; 4])
}

/// The fused kernels' WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fused {
    Norm { layer_norm: bool },
    NormBackward { layer_norm: bool },
    Softmax,
    SoftmaxBackward,
    Gelu { backward: bool },
    Nll { gradient: bool },
    AddSquares { samples: usize },
}

impl KernelSource for Fused {
    fn source(&self) -> SourceTemplate {
        let kernel = match self {
            Fused::Norm { .. } => include_str!("../../../shaders/norm.wgsl"),
            Fused::NormBackward { .. } => include_str!("../../../shaders/norm_backward.wgsl"),
            Fused::Softmax => include_str!("../../../shaders/softmax.wgsl"),
            Fused::SoftmaxBackward => include_str!("../../../shaders/softmax_backward.wgsl"),
            Fused::Gelu { .. } => include_str!("../../../shaders/gelu.wgsl"),
            Fused::AddSquares { .. } => include_str!("../../../shaders/add_squares.wgsl"),
            Fused::Nll { .. } => include_str!("../../../shaders/nll.wgsl"),
        };
        // WGSL has no include: the shared functions are appended.
        let statistics = match self {
            Fused::Norm { .. } | Fused::NormBackward { .. } => include_str!("../../../shaders/norm_statistics.wgsl"),
            _ => "",
        };
        let source = SourceTemplate::new(format!("{kernel}\n{statistics}\n{}", include_str!("../../../shaders/workgroup_reduce.wgsl")));
        match self {
            Fused::Norm { layer_norm } | Fused::NormBackward { layer_norm } => source.register("layer_norm", layer_norm.to_string()),
            Fused::Gelu { backward } => source.register("backward", backward.to_string()),
            Fused::AddSquares { samples } => source.register("samples", samples.to_string()),
            Fused::Nll { gradient } => source.register("gradient", gradient.to_string()),
            _ => source,
        }
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>().info(*self)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
