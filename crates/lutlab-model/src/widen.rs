//! A streamed block's linear weights uploaded as the checkpoint stores them and widened to f32
//! `[in, out]` on the GPU (`shaders/widen.wgsl`): a half-precision checkpoint moves half the
//! bytes of f32 to the GPU, and the host does not convert or transpose (for a 7B model's block,
//! 404 MB of f16 instead of an 808 MB f32 copy made on the host's cores). The host path
//! (`StoredLinear::to_in_out`) is the reference; `tests/widen.rs` compares them.

use crate::device::grid_of;
use crate::error::{ModelError, Result};
use crate::lut_linear::{kernel_id, primitive};
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use cubecl::prelude::KernelId;
use lutlab_core::checkpoint::StoredDtype;
use lutlab_core::config::LinearLayout;
use lutlab_core::weights::StoredLinear;

/// Invocations per workgroup (`@workgroup_size` of the shader).
const GROUP: usize = 256;

/// The linear's weight as an f32 `[in, out]` tensor on `device`.
///
/// The stored bytes go up in pieces of whole stored rows, each widened into its place as it
/// arrives, with the queue flushed between pieces: wgpu stages every write in a host buffer of
/// the write's size and frees it once the GPU has copied it, so one 90 MB write a tensor paid
/// for a fresh 90 MB of staging memory each time, while pieces of a few MB, flushed as they go,
/// keep reusing the memory the allocator already holds.
pub fn upload_weight(linear: &StoredLinear, device: &Device) -> Result<Tensor<2>> {
    upload_weight_in_pieces(linear, device, upload_piece_bytes())
}

/// [`upload_weight`] with pieces of about `piece_bytes` (at least two stored rows).
pub fn upload_weight_in_pieces(linear: &StoredLinear, device: &Device, piece_bytes: usize) -> Result<Tensor<2>> {
    let (n_in, n_out) = (linear.n_in, linear.n_out);
    let numel = n_in * n_out;
    if linear.weight.numel() != numel || numel > u32::MAX as usize {
        return Err(ModelError::Gpu(format!("widening a {n_in}x{n_out} weight from {} stored values", linear.weight.numel())));
    }
    let out_in = linear.layout == LinearLayout::OutIn;
    let (rows, row_len) = if out_in { (n_out, n_in) } else { (n_in, n_out) };
    let row_bytes = row_len * linear.weight.dtype.bytes();
    // An even number of rows, so that each piece of 16-bit values is whole u32 words.
    let rows_per_piece = (piece_bytes / row_bytes.max(1)).max(1).next_multiple_of(2).min(rows.max(1));
    // A tiny burn tensor gives us burn's client for the device.
    let anchor = primitive(Tensor::<1, Int>::from_data(TensorData::new(vec![0i32], [1]), device))?;
    let client = anchor.client.clone();
    let out = client.empty(numel * 4);
    let kernel = Widen { dtype: linear.weight.dtype, out_in };
    for first_row in (0..rows).step_by(rows_per_piece) {
        let piece_rows = rows_per_piece.min(rows - first_row);
        let bytes = &linear.weight.bytes[first_row * row_bytes..(first_row + piece_rows) * row_bytes];
        let stored = if bytes.len().is_multiple_of(4) {
            client.create_from_slice(bytes)
        } else {
            // Whole u32 words (an odd count of 16-bit values gets a zero half).
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            client.create_from_slice(&padded)
        };
        let count = piece_rows * row_len;
        let (gx, gy) = grid_of(count.div_ceil(GROUP));
        let params = [n_in, n_out, gx * GROUP, first_row, piece_rows].map(|p| p as u32);
        crate::fused::launch(&client, kernel, GROUP as u32, (gx, gy), [stored, out.clone()], &params);
        if piece_rows < rows {
            client.flush().map_err(|e| ModelError::Gpu(format!("uploading a {n_in}x{n_out} weight: {e:?}")))?;
        }
    }
    let w = CubeTensor::new_contiguous(client, anchor.device.clone(), Shape::new([n_in, n_out]), out, DType::F32);
    Ok(Tensor::from_primitive::<Wgpu>(w))
}

/// Bytes of a stored weight uploaded at a time (`LUTLAB_UPLOAD_PIECE_MIB` overrides, for
/// measuring; 0 uploads each weight whole).
fn upload_piece_bytes() -> usize {
    const DEFAULT_MIB: usize = 4;
    let mib = std::env::var("LUTLAB_UPLOAD_PIECE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MIB);
    if mib == 0 { usize::MAX } else { mib << 20 }
}

/// `shaders/widen.wgsl` for one stored dtype and layout.
#[derive(Clone, Copy)]
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
