//! Our matmul inside autodiff graphs (Fisher's recomputed blocks and head): a burn autodiff
//! operation whose forward and both backward products run on `shaders/gemm.wgsl`.
//!
//! For `c = a · b` the gradients are `∂a = ∂c · bᵀ` and `∂b = aᵀ · ∂c`; the kernel reads the
//! transposed operands through their strides, so neither backward product copies. Fisher's
//! per-sample weight gradients (`xᵀ · ∂y` over 1024 positions, for each of a block's linears)
//! are exactly these products, which burn's matmul computed at a fraction of our kernel's speed.
//! Operands the kernel does not take (broadcast batch dimensions, other dtypes, layouts whose
//! batch does not fold into its strides) go to burn's own autodiff matmul.

use crate::gemm::{launch, takes};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Autodiff, Wgpu};
use burn::tensor::Tensor;

type Tracked = Autodiff<Wgpu>;

/// `a · b` over the last two dimensions of tensors autodiff tracks (either or both), on our
/// kernel where it applies.
pub fn tracked_matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    // Both operands must live on the autodiff device (a constant is `.autodiff()` without
    // `require_grad`), as burn's own matmul requires.
    if !takes(&a, &b) || !a.is_autodiff() || !b.is_autodiff() {
        return a.matmul(b);
    }
    let (Ok(pa), Ok(pb)) = (a.clone().try_into_primitive::<Tracked>(), b.clone().try_into_primitive::<Tracked>()) else {
        return a.matmul(b);
    };
    let (a_tracked, b_tracked) = (pa.is_tracked(), pb.is_tracked());
    let c = match GemmBackward.prepare::<NoCheckpointing>([pa.node(), pb.node()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            // Each operand is kept only if the other one's gradient needs it.
            let a_kept = b_tracked.then(|| prep.checkpoint(&pa));
            let b_kept = a_tracked.then(|| prep.checkpoint(&pb));
            prep.finish((a_kept, b_kept), product(pa.into_primitive(), pb.into_primitive()))
        }
        OpsKind::UnTracked(prep) => prep.finish(product(pa.into_primitive(), pb.into_primitive())),
    };
    Tensor::from_primitive::<Tracked>(c)
}

/// `a · b` on our kernel, or burn's matmul where the kernel cannot read the operands.
fn product(a: CubeTensor, b: CubeTensor) -> CubeTensor {
    match launch(a, b) {
        Ok(c) => c,
        Err(operands) => {
            let (a, b) = *operands;
            Wgpu::float_matmul(a, b)
        }
    }
}

/// The backward of [`tracked_matmul`]; its state is the operands it kept.
#[derive(Debug)]
struct GemmBackward;

impl Backward<Wgpu, 2> for GemmBackward {
    type State = (Option<NodeId>, Option<NodeId>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let (a, b) = ops.state;
        let a: Option<CubeTensor> = a.map(|id| checkpointer.retrieve_node_output(id));
        let b: Option<CubeTensor> = b.map(|id| checkpointer.retrieve_node_output(id));
        binary::<Wgpu, _, _>(
            ops.parents,
            ops.node,
            grads,
            // `binary` asks for a gradient only of a tracked operand, whose partner was kept.
            |grad| product(grad, Wgpu::float_transpose(b.expect("kept for the tracked operand"))),
            |grad| product(Wgpu::float_transpose(a.expect("kept for the tracked operand")), grad),
        );
    }
}
