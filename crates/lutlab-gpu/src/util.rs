//! Small wgpu helpers that work the same natively and in the browser: reading buffers back
//! through `map_async` as a future, and turning validation / out-of-memory errors into `Result`s.

use lutlab_model::{ModelError, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub fn gpu_error(what: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Gpu(format!("{what}: {e}"))
}

/// A one-shot channel whose receiver is a future (what `map_async`'s callback resolves).
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T>() -> (impl FnOnce(T) + Send + 'static, Receiver<T>)
where
    T: Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
    let sender = {
        let slot = slot.clone();
        move |value: T| {
            if let Ok(mut s) = slot.lock() {
                s.value = Some(value);
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        }
    };
    (sender, Receiver(slot))
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut s) = self.0.lock() else { return Poll::Ready(None) };
        match s.value.take() {
            Some(v) => Poll::Ready(Some(v)),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Maps `staging` (MAP_READ) for reading, waits for it (natively by polling the device; in the
/// browser the event loop resolves it) and returns a copy of its first `bytes` bytes.
pub async fn read_staging(device: &wgpu::Device, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let (send, done) = oneshot();
    staging.map_async(wgpu::MapMode::Read, 0..bytes, send);
    // Natively this blocks until the GPU is done and runs the callback; on WebGPU it is a no-op.
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
    match done.await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(gpu_error("reading a buffer back", e)),
        None => return Err(ModelError::Gpu("reading a buffer back: the map callback was dropped".into())),
    }
    let out = {
        let view = staging.get_mapped_range(0..bytes).map_err(|e| gpu_error("reading a buffer back", e))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(out)
}

/// Runs `f` inside validation and out-of-memory error scopes and reports what they caught (a
/// refused allocation, a limit exceeded) as an error instead of wgpu's default panic.
pub async fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let validation = validation.pop();
    let oom = oom.pop();
    if let Some(e) = validation.await {
        return Err(gpu_error(what, e));
    }
    if let Some(e) = oom.await {
        return Err(gpu_error(what, e));
    }
    Ok(out)
}

pub fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

pub fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

pub fn to_u32(bytes: &[u8]) -> Vec<u32> {
    bytemuck::pod_collect_to_vec(bytes)
}
