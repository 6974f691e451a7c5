//! A streamed block's linear weights uploaded as the checkpoint stores them and widened to f32
//! `[in, out]` on the GPU (`shaders/widen.wgsl`): a half-precision checkpoint moves half the
//! bytes of f32 to the GPU, and the host does not convert or transpose (for a 7B model's block,
//! 404 MB of f16 instead of an 808 MB f32 copy made on the host's cores). The host path
//! (`StoredLinear::to_in_out`) is the reference; `tests/widen.rs` compares them.

use crate::device::grid_of;
use crate::error::{ModelError, Result};
use crate::lut_linear::{kernel_id, primitive};
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::server::KernelArguments;
use lutlab_core::checkpoint::StoredDtype;
use lutlab_core::config::LinearLayout;
use lutlab_core::weights::StoredLinear;

/// Invocations per workgroup (`@workgroup_size` of the shader).
const GROUP: usize = 256;

/// The linear's weight as an f32 `[in, out]` tensor on `device`.
pub fn upload_weight(linear: &StoredLinear, device: &Device) -> Result<Tensor<2>> {
    let (n_in, n_out) = (linear.n_in, linear.n_out);
    let numel = n_in * n_out;
    if linear.weight.numel() != numel || numel > u32::MAX as usize {
        return Err(ModelError::Gpu(format!("widening a {n_in}x{n_out} weight from {} stored values", linear.weight.numel())));
    }
    // Whole u32 words (an odd count of 16-bit values gets a zero half).
    let mut bytes = linear.weight.bytes.to_vec();
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    let words = bytes.len() / 4;
    let stored = primitive(Tensor::<1, Int>::from_data(TensorData::from_bytes_vec(bytes, [words], DType::I32), device))?;
    let client = stored.client.clone();
    let out = client.empty(numel * 4);
    let (gx, gy) = grid_of(numel.div_ceil(GROUP));
    let params = [n_in as u32, n_out as u32, (gx * GROUP) as u32];
    let arguments = KernelArguments::new()
        .with_buffer(stored.handle.clone().binding())
        .with_buffer(out.clone().binding())
        .with_buffer(client.create_from_slice(bytemuck::cast_slice(&params)).binding());
    let kernel = Widen { dtype: linear.weight.dtype, out_in: linear.layout == LinearLayout::OutIn };
    client.launch(Box::new(SourceKernel::new(kernel, CubeDim::new_1d(GROUP as u32))), CubeCount::Static(gx as u32, gy as u32, 1), arguments);
    let w = CubeTensor::new_contiguous(client, stored.device.clone(), Shape::new([n_in, n_out]), out, DType::F32);
    Ok(Tensor::from_primitive::<Wgpu>(w))
}

/// `shaders/widen.wgsl` for one stored dtype and layout.
struct Widen {
    dtype: StoredDtype,
    out_in: bool,
}

impl KernelSource for Widen {
    fn source(&self) -> SourceTemplate {
        let dtype = match self.dtype {
            StoredDtype::F32 => 0,
            StoredDtype::F16 => 1,
            StoredDtype::BF16 => 2,
        };
        SourceTemplate::new(include_str!("../../../shaders/widen.wgsl")).register("dtype", dtype.to_string()).register("out_in", self.out_in.to_string())
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>().info((self.dtype as u8, self.out_in))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
