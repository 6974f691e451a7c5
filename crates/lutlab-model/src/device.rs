//! The GPU device: wgpu natively (Vulkan, Metal, DX12; lavapipe in CI), WebGPU in the browser.

use crate::error::{ModelError, Result};
use burn::tensor::wgpu::WgpuSetup;
use burn::tensor::{Device, Tensor, TensorData};
use lutlab_core::ModelWeights;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Mutex;

/// The GPU: burn's device, and the wgpu handles behind it (adapter limits, and later our own
/// WGSL pipelines on the same device and queue).
#[derive(Clone, Debug)]
pub struct Gpu {
    pub device: Device,
    pub setup: WgpuSetup,
}

impl Gpu {
    /// "name (backend, device type)", for logs and the page.
    pub fn describe(&self) -> String {
        let info = self.setup.adapter.get_info();
        // Browsers may hide the adapter's name (SwiftShader's is empty in Chromium).
        let name = if info.name.is_empty() { "unnamed adapter" } else { info.name.as_str() };
        format!("{name} ({:?}, {:?})", info.backend, info.device_type)
    }

    /// Whether the adapter runs on the CPU (lavapipe, SwiftShader), where some work is better
    /// left to the host.
    pub fn is_cpu(&self) -> bool {
        self.setup.adapter.get_info().device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu
    }

    /// Whether shaders can compute in f16 (`--dtype f16`): WGSL's `shader-f16` (most native GPUs,
    /// lavapipe; not SwiftShader). WGSL has no bf16 at all.
    pub fn has_f16(&self) -> bool {
        self.setup.adapter.features().contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16)
    }

    /// Workgroup memory one shader's workgroup may declare (16 KiB in WebGPU by default; burn asks
    /// for the adapter's own figure, 48 KiB on NVIDIA's Vulkan driver).
    pub fn max_workgroup_memory(&self) -> u32 {
        self.setup.device.limits().max_compute_workgroup_storage_size
    }

    /// The largest buffer one shader may bind; burn asks the adapter for its real limits, so this
    /// is the hardware's figure (1 GiB on SwiftShader), not WebGPU's 128 MiB default.
    pub fn max_binding_bytes(&self) -> u64 {
        let limits = self.setup.device.limits();
        // The binding limit is u32 in some wgpu versions and targets, u64 in others.
        #[allow(clippy::useless_conversion)]
        let binding = u64::from(limits.max_storage_buffer_binding_size);
        binding.min(limits.max_buffer_size)
    }

    /// Refuses a buffer of `bytes` (e.g. one micro-batch's logits) that this GPU cannot bind,
    /// saying what to lower.
    pub fn check_buffer_fits(&self, bytes: u64, what: &str, lower: &str) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(ModelError::Gpu(format!("{what} need {bytes} bytes but this GPU binds at most {limit} in one buffer; lower {lower}")));
        }
        Ok(())
    }

    /// Refuses, by name, a model whose largest tensor cannot be bound on this GPU, before any
    /// upload starts (GPT-2's `wte` is 154 MB in f32).
    pub fn check_fits(&self, weights: &ModelWeights) -> Result<()> {
        let limit = self.max_binding_bytes();
        let names = weights.config.names();
        let mut tensors = vec![(names.embed.to_string(), &weights.wte)];
        tensors.extend(names.positions.zip(weights.wpe.as_ref()).map(|(n, t)| (n.to_string(), t)));
        tensors.extend(weights.lm_head.as_ref().map(|t| ("lm_head".to_string(), t)));
        tensors.extend(weights.linears().map(|(name, linear)| (name, &linear.weight)));
        match tensors.into_iter().map(|(name, t)| (name, t.numel() as u64 * 4)).max_by_key(|(_, bytes)| *bytes) {
            Some((name, bytes)) if bytes > limit => Err(ModelError::Gpu(format!(
                "tensor `{name}` needs {bytes} bytes in one buffer but this GPU binds at most {limit}"
            ))),
            _ => Ok(()),
        }
    }
}

/// Opens the default GPU through wgpu, once per process: burn registers one runtime per device,
/// so later calls return the same one. Natively this blocks; in the browser it must be awaited.
/// A lost device later surfaces as an error at the next read-back (cubecl watches for it).
pub async fn open_gpu() -> Result<Gpu> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static OPENED: Mutex<Option<Gpu>> = Mutex::new(None);
        // Held across the blocking init, so concurrent callers (test threads) share one device.
        let mut opened = OPENED.lock().map_err(|_| ModelError::Gpu("device lock poisoned".into()))?;
        if let Some(gpu) = opened.as_ref() {
            return Ok(gpu.clone());
        }
        let (device, setup) = Device::wgpu_options().init_with_setup().map_err(no_adapter)?;
        choose_kernels(&setup);
        let gpu = Gpu { device, setup };
        *opened = Some(gpu.clone());
        Ok(gpu)
    }
    #[cfg(target_arch = "wasm32")]
    {
        // One thread, and wgpu's browser handles are not `Send`: a thread-local, never borrowed
        // across the await.
        thread_local!(static OPENED: std::cell::RefCell<Option<Gpu>> = const { std::cell::RefCell::new(None) });
        if let Some(gpu) = OPENED.with_borrow(Clone::clone) {
            return Ok(gpu);
        }
        let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(no_adapter)?;
        choose_kernels(&setup);
        Ok(OPENED.with_borrow_mut(|opened| opened.get_or_insert(Gpu { device, setup }).clone()))
    }
}

/// Which of our kernels the model runs on this adapter (`fused`, `gemm` say how they choose).
/// In the browser they run on every adapter: on SwiftShader, the CPU adapter Chromium falls back
/// to, they took 8.3 s where burn's took 30.3 s for the same evaluation (BENCHMARKS.md, "The
/// page's kernels on a CPU adapter"). Natively a CPU adapter (lavapipe) keeps burn's, faster there.
fn choose_kernels(setup: &WgpuSetup) {
    let gpu = cfg!(target_arch = "wasm32") || setup.adapter.get_info().device_type != burn::tensor::wgpu::wgpu::DeviceType::Cpu;
    crate::fused::choose_at_startup(gpu);
    // Our matmul stages at least 16 KiB of each workgroup's operands (WebGPU's default limit, which
    // some native downlevel adapters do not reach).
    crate::gemm::choose_at_startup(gpu, setup.adapter.limits().max_compute_workgroup_storage_size);
}

/// Whether the benchmark switch `name` is set to "0" in the environment, turning one of our
/// kernels' defaults off (read once into `cell`, a static of the caller's); never in the browser.
pub(crate) fn switched_off(cell: &'static std::sync::OnceLock<bool>, name: &str) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        *cell.get_or_init(|| std::env::var(name).as_deref() == Ok("0"))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (cell, name);
        false
    }
}

/// Workgroups per grid row for a kernel over a long 1-D range (WebGPU allows 65,535 per grid
/// dimension); the kernel's workgroup index is `y · GROUPS_PER_ROW + x`.
pub(crate) const GROUPS_PER_ROW: usize = 32_768;

/// `groups` workgroups (at least one) as a grid `(x, y)` with `x ≤ GROUPS_PER_ROW`.
pub(crate) fn grid_of(groups: usize) -> (usize, usize) {
    (groups.clamp(1, GROUPS_PER_ROW), groups.div_ceil(GROUPS_PER_ROW).max(1))
}

/// burn's device on the default GPU (see [`open_gpu`]).
pub async fn gpu_device() -> Result<Device> {
    Ok(open_gpu().await?.device)
}

/// wgpu's own words for the loss ("Destroyed: Device was destroyed."), without the layers of
/// "Caused by:" and the backtrace placeholder that cubecl and burn wrap around them.
fn lost_reason(reason: &str) -> String {
    let innermost = reason.rsplit("Caused by:").next().unwrap_or(reason);
    innermost.split("Backtrace:").next().unwrap_or(innermost).trim().to_string()
}

fn no_adapter(e: impl std::fmt::Display) -> ModelError {
    ModelError::Gpu(format!("no usable WebGPU/wgpu adapter: {e}"))
}

/// Uploads a host tensor of rank `D`.
pub fn upload<const D: usize>(data: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

/// Values read back at a time natively. wgpu stages each read in a host buffer of the read's size,
/// allocated for it and freed after: a 7B model's Fisher diagonal (13 GB a pass, tensors of up to
/// 360 MB) came back at about 0.5 GB/s read whole, while pieces this small reuse staging memory
/// the allocator keeps (BENCHMARKS.md, "Streamed blocks in pieces").
#[cfg(not(target_arch = "wasm32"))]
const DOWNLOAD_PIECE: usize = 1 << 20;

/// Reads a float tensor back to the host (async so the browser can wait for the GPU); natively,
/// a large tensor in pieces of [`DOWNLOAD_PIECE`] values.
pub async fn download<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let numel = tensor.shape().num_elements();
        if numel > DOWNLOAD_PIECE {
            let flat = tensor.reshape([numel]);
            let mut values = Vec::with_capacity(numel);
            for start in (0..numel).step_by(DOWNLOAD_PIECE) {
                values.extend(download_whole(flat.clone().slice(start..(start + DOWNLOAD_PIECE).min(numel))).await?);
            }
            return Ok(values);
        }
    }
    download_whole(tensor).await
}

/// [`download`] in one read.
async fn download_whole<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor.into_data_async().await.map_err(|e| match e {
        // cubecl marks the device poisoned from wgpu's device-lost callback.
        burn::tensor::ExecutionError::DevicePoisoned { reason } => ModelError::GpuLost(lost_reason(&reason)),
        e => ModelError::Gpu(e.to_string()),
    })?;
    data.try_into_vec::<f32>().map_err(|e| ModelError::Gpu(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::lost_reason;

    #[test]
    fn a_lost_device_is_named_in_wgpus_words() {
        let reason = "The device is poisoned\nCaused by:\n  Destroyed: Device was destroyed.\nBacktrace:\nNo backtrace available";
        assert_eq!(lost_reason(reason), "Destroyed: Device was destroyed.");
        assert_eq!(lost_reason("Unknown: driver reset"), "Unknown: driver reset");
    }
}
