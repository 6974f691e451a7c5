//! The GPU device: wgpu natively (Vulkan, Metal, DX12; lavapipe in CI), WebGPU in the browser.

use crate::error::{ModelError, Result};
use burn::tensor::{Device, Tensor, TensorData};
use std::sync::Mutex;

/// Opens the default GPU through wgpu, once per process: burn registers one runtime per device,
/// so later calls return the same device. Natively this blocks; in the browser it must be awaited.
pub async fn gpu_device() -> Result<Device> {
    static OPENED: Mutex<Option<Device>> = Mutex::new(None);
    let lock = || OPENED.lock().map_err(|_| ModelError::Gpu("device lock poisoned".into()));
    #[cfg(not(target_arch = "wasm32"))]
    {
        // Held across the blocking init, so concurrent callers (test threads) wait for one device.
        let mut opened = lock()?;
        if let Some(device) = opened.as_ref() {
            return Ok(device.clone());
        }
        let device = Device::wgpu_options().init().map_err(no_adapter)?;
        *opened = Some(device.clone());
        Ok(device)
    }
    #[cfg(target_arch = "wasm32")]
    {
        // One thread: the lock is never held across the await.
        if let Some(device) = lock()?.clone() {
            return Ok(device);
        }
        let device = Device::wgpu_options().init_async().await.map_err(no_adapter)?;
        Ok(lock()?.get_or_insert(device).clone())
    }
}

fn no_adapter(e: impl std::fmt::Display) -> ModelError {
    ModelError::Gpu(format!("no usable WebGPU/wgpu adapter: {e}"))
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
