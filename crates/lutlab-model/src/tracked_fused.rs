//! The fused norms, attention softmax and GELU inside autodiff graphs (Fisher's recomputed
//! blocks): burn autodiff operations whose forward is `shaders/norm.wgsl` /
//! `shaders/softmax.wgsl` / `shaders/gelu.wgsl` and whose backward is
//! `shaders/norm_backward.wgsl` / `shaders/softmax_backward.wgsl` / `gelu.wgsl`'s backward, one
//! launch each where burn's ops take ~7 forward and ~10–15 backward, each a pass over the tensor.
//!
//! Only the gradient with respect to the normalized input or the scores is computed: γ, β and
//! the mask must be constants (Fisher differentiates the linear weights and the residual
//! stream); a tracked γ or β goes to burn's ops, as do other dtypes.

use crate::fused::{gelu_kernel, masked_softmax_backward_kernel, masked_softmax_kernel, norm_backward_kernel, norm_kernel};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Autodiff, Wgpu};
use burn::tensor::{DType, Tensor};

type Tracked = Autodiff<Wgpu>;

/// [`crate::fused::norm`] of a tensor autodiff tracks; `None` where burn's ops must do it.
pub(crate) fn norm(x: &Tensor<3>, gamma: &Tensor<1>, beta: Option<&Tensor<1>>, eps: f64) -> Option<Tensor<3>> {
    let gamma = constant(gamma)?;
    let beta = match beta {
        Some(beta) => Some(constant(beta)?),
        None => None,
    };
    let layer_norm = beta.is_some();
    let forward = |x| norm_kernel(x, gamma.clone(), beta, eps);
    unary_op(NormBackward, x, forward, |x, _| (x, gamma.clone(), layer_norm, eps))
}

/// [`crate::fused::masked_softmax`] of scores autodiff tracks; `None` where burn's ops must do it.
pub(crate) fn masked_softmax(scores: &Tensor<4>, scale: f64, mask: &Tensor<4>) -> Option<Tensor<4>> {
    let mask = constant(mask)?;
    unary_op(SoftmaxBackward, scores, |scores| masked_softmax_kernel(scores, scale, mask), |_, y| (y, scale))
}

/// [`crate::fused::gelu_tanh`] of a tensor autodiff tracks; `None` for other dtypes.
pub(crate) fn gelu_tanh<const D: usize>(x: &Tensor<D>) -> Option<Tensor<D>> {
    unary_op(GeluBackward, x, |x| gelu_kernel(x, None), |x, _| x)
}

/// `forward` of the f32 `x` as an autodiff operation whose backward is `op`; when `x` is tracked,
/// `state` picks what the backward keeps from the input and the output. `None` for other dtypes.
fn unary_op<O, const D: usize>(
    op: O,
    x: &Tensor<D>,
    forward: impl FnOnce(CubeTensor) -> CubeTensor,
    state: impl FnOnce(CubeTensor, CubeTensor) -> O::State,
) -> Option<Tensor<D>>
where
    O: Backward<Wgpu, 1>,
{
    if x.dtype() != DType::F32 {
        return None;
    }
    let x = x.clone().try_into_primitive::<Tracked>().ok()?;
    let y = match op.prepare::<NoCheckpointing>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            let y = forward(x.clone());
            prep.finish(state(x, y.clone()), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    };
    Some(Tensor::from_primitive::<Tracked>(y))
}

/// The f32 values of a parameter that takes no gradient (on the autodiff device or not);
/// `None` for a tracked one.
fn constant<const D: usize>(t: &Tensor<D>) -> Option<CubeTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    if !t.is_autodiff() {
        return crate::lut_linear::primitive(t.clone()).ok();
    }
    let tracked = t.clone().try_into_primitive::<Tracked>().ok()?;
    (!tracked.is_tracked()).then(|| tracked.into_primitive())
}

/// The backward of [`norm`]; its state is the input, γ, the kind of norm and its epsilon.
#[derive(Debug)]
struct NormBackward;

impl Backward<Wgpu, 1> for NormBackward {
    type State = (CubeTensor, CubeTensor, bool, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, gamma, layer_norm, eps) = ops.state;
        unary::<Wgpu, _>(ops.parents, ops.node, grads, |dy| norm_backward_kernel(x, gamma, dy, layer_norm, eps));
    }
}

/// The backward of [`masked_softmax`]; its state is the probabilities and the scores' scale.
#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Wgpu, 1> for SoftmaxBackward {
    type State = (CubeTensor, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (y, scale) = ops.state;
        unary::<Wgpu, _>(ops.parents, ops.node, grads, |dy| masked_softmax_backward_kernel(y, dy, scale));
    }
}

/// The backward of [`gelu_tanh`]; its state is the input.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Wgpu, 1> for GeluBackward {
    type State = CubeTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let x = ops.state;
        unary::<Wgpu, _>(ops.parents, ops.node, grads, |dy| gelu_kernel(x, Some(dy)));
    }
}
