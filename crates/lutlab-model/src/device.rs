//! The GPU device: wgpu natively (Vulkan, Metal, DX12; lavapipe in CI), WebGPU in the browser.

use crate::error::{ModelError, Result};
use burn::tensor::{Device, Tensor, TensorData};

/// Opens the default GPU through wgpu. Natively this blocks; in the browser it must be awaited.
pub async fn gpu_device() -> Result<Device> {
    let options = Device::wgpu_options();
    #[cfg(target_arch = "wasm32")]
    let device = options.init_async().await;
    #[cfg(not(target_arch = "wasm32"))]
    let device = options.init();
    device.map_err(|e| ModelError::Gpu(format!("no usable WebGPU/wgpu adapter: {e}")))
}

/// Uploads a host tensor of rank `D`.
pub fn upload<const D: usize>(data: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

/// Reads a float tensor back to the host (async so the browser can wait for the GPU).
pub async fn download<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor.into_data_async().await.map_err(|e| ModelError::Gpu(e.to_string()))?;
    data.try_into_vec::<f32>().map_err(|e| ModelError::Gpu(format!("{e:?}")))
}
