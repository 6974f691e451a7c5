//! Kernel benchmarks (native only; `lutlab bench kernels`): one token through a linear layer, as
//! decoding does it, with the LUT GEMV of the model (`shaders/lut_gemv.wgsl`) at several bit
//! widths beside our own dense f32 and f16 GEMV (`shaders/dense_gemv.wgsl`), and a plain copy
//! (`shaders/copy.wgsl`) as the memory-bandwidth ceiling.
//!
//! Timing: each kernel is dispatched `iters` times in one command buffer, submitted once, and
//! the wall clock runs from the submit to the device going idle, after one untimed warm-up
//! submit (pipeline compilation, first touches). Dispatches of one pass run back to back, so the
//! submit's fixed cost is spread over `iters`; with `iters` ≥ 100 it is under 1% for kernels of
//! a few microseconds. Every kernel's output is checked against the CPU before it is timed.

use crate::util::{f32_bytes, gpu_error, read_staging, scoped, to_f32, u32_bytes};
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::packed::{blocks, PackedLinear};
use lutlab_core::quant::{Granularity, LutMatrix, SparseOutliers};
use lutlab_model::{Gpu, ModelError, Result};
use serde::Serialize;
use std::time::Instant;
use wgpu::util::DeviceExt;

/// One kernel on one shape.
#[derive(Clone, Debug, Serialize)]
pub struct KernelTiming {
    /// `copy`, `dense f32 gemv`, `dense f16 gemv`, `lut gemv 4-bit`, ...
    pub kernel: String,
    pub rows: usize,
    pub cols: usize,
    /// Mean time of one dispatch.
    pub micros: f64,
    /// Bytes the kernel must move (weights, tables, input and output; for the copy, read + write).
    pub bytes: u64,
    pub gb_per_s: f64,
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);
const NONE: u32 = u32::MAX;

/// The copy ceiling over a buffer of `bytes`, then for each `(rows, cols)` shape the dense f32
/// and f16 GEMV and the LUT GEMV (per-channel tables) at each of `bits`.
pub async fn bench_kernels(gpu: &Gpu, shapes: &[(usize, usize)], bits: &[u32], copy_bytes: u64, iters: usize) -> Result<Vec<KernelTiming>> {
    let device = &gpu.setup.device;
    let mut out = vec![bench_copy(gpu, copy_bytes, iters).await?];
    let mut rng = SplitMix64::new(1);
    for &(rows, cols) in shapes {
        if cols % 2 != 0 {
            return Err(ModelError::Gpu(format!("bench: {rows}x{cols}: the f16 GEMV needs an even number of columns")));
        }
        let x: Vec<f32> = (0..rows).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let weights: Vec<f32> = (0..rows * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let want = dense_reference(&x, &weights, cols);
        let params = [rows as u32, cols as u32];

        let f32_words: Vec<u32> = weights.iter().map(|w| w.to_bits()).collect();
        let run = Run::new(gpu, &dense_source(false), &[f32_bytes(&x), u32_bytes(&f32_words)], cols, &params, (cols.div_ceil(32), 1))?;
        out.push(run.time("dense f32 gemv", rows, cols, (rows * cols * 4 + (rows + cols) * 4) as u64, &want, iters).await?);

        let halves: Vec<half::f16> = weights.iter().map(|&w| half::f16::from_f32(w)).collect();
        let f16_words: Vec<u32> = halves.chunks_exact(2).map(|p| u32::from(p[0].to_bits()) | (u32::from(p[1].to_bits()) << 16)).collect();
        let want_f16 = dense_reference(&x, &halves.iter().map(|h| h.to_f32()).collect::<Vec<_>>(), cols);
        let run = Run::new(gpu, &dense_source(true), &[f32_bytes(&x), u32_bytes(&f16_words)], cols, &params, ((cols / 2).div_ceil(32), 1))?;
        out.push(run.time("dense f16 gemv", rows, cols, (rows * cols * 2 + (rows + cols) * 4) as u64, &want_f16, iters).await?);

        for &b in bits {
            let packed = random_packed(&mut rng, rows, cols, b)?;
            let want = packed.reference_matmul(&x, 1, None);
            let mut aux = packed.tables.clone();
            let sparse_at = aux.len() as u32;
            aux.push(0.0);
            let index = vec![0u32; cols + 1];
            let lut_params = [rows as u32, cols as u32, 1, 1, blocks(rows) as u32, sparse_at, NONE, NONE, NONE, (cols + 1) as u32];
            let source = lut_gemv_source(b);
            let inputs = [f32_bytes(&x), u32_bytes(&packed.qweight), f32_bytes(&aux), u32_bytes(&index)];
            let run = Run::new(gpu, &source, &inputs, cols, &lut_params, (cols.div_ceil(32), 1))?;
            let bytes = (packed.qweight.len() + packed.tables.len() + rows + cols) * 4;
            out.push(run.time(&format!("lut gemv {b}-bit"), rows, cols, bytes as u64, &want, iters).await?);
        }
    }
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
    Ok(out)
}

fn dense_reference(x: &[f32], w: &[f32], cols: usize) -> Vec<f32> {
    let mut y = vec![0f64; cols];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        y.iter_mut().zip(row).for_each(|(acc, &v)| *acc += f64::from(x[r]) * f64::from(v));
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// Per-channel tables with random codes (the kernel's cost does not depend on the values).
fn random_packed(rng: &mut SplitMix64, rows: usize, cols: usize, bits: u32) -> Result<PackedLinear> {
    let levels = 1usize << bits;
    let lut = LutMatrix {
        rows,
        cols,
        bits,
        granularity: Granularity::Channel,
        tables: (0..cols * levels).map(|_| rng.next_f64() as f32 - 0.5).collect(),
        codes: (0..rows * cols).map(|_| (rng.next_u64() % levels as u64) as u8).collect(),
        outliers: SparseOutliers::none(rows),
    };
    Ok(PackedLinear::from_lut(&lut)?)
}

pub fn dense_source(f16: bool) -> String {
    include_str!("../../../shaders/dense_gemv.wgsl").replace("{{f16}}", if f16 { "true" } else { "false" })
}

/// The model's LUT GEMV kernel with its compile-time constants filled in as `lutlab_model` does.
pub fn lut_gemv_source(bits: u32) -> String {
    include_str!("../../../shaders/lut_gemv.wgsl")
        .replace("{{bits}}", &bits.to_string())
        .replace("{{shared_tables}}", if (32usize << bits) <= 2048 { "true" } else { "false" })
}

/// A kernel bound to its buffers: `inputs` in binding order, then the output (`cols` f32), then
/// the parameters.
struct Run<'a> {
    gpu: &'a Gpu,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    output: wgpu::Buffer,
    grid: (usize, usize),
    cols: usize,
}

impl<'a> Run<'a> {
    fn new(gpu: &'a Gpu, source: &str, inputs: &[&[u8]], cols: usize, params: &[u32], grid: (usize, usize)) -> Result<Self> {
        let device = &gpu.setup.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("bench"), source: wgpu::ShaderSource::Wgsl(source.into()) });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("bench"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let mut buffers: Vec<wgpu::Buffer> = inputs
            .iter()
            .map(|bytes| device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytes, usage: STORAGE }))
            .collect();
        let output = device.create_buffer(&wgpu::BufferDescriptor { label: Some("y"), size: (cols * 4) as u64, usage: STORAGE, mapped_at_creation: false });
        buffers.push(output.clone());
        buffers.push(device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("params"), contents: u32_bytes(params), usage: STORAGE }));
        let entries: Vec<wgpu::BindGroupEntry> =
            buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
        Ok(Self { gpu, pipeline, bind, output, grid, cols })
    }

    fn submit(&self, dispatches: usize) {
        let device = &self.gpu.setup.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind, &[]);
            for _ in 0..dispatches {
                pass.dispatch_workgroups(self.grid.0 as u32, self.grid.1 as u32, 1);
            }
        }
        self.gpu.setup.queue.submit([encoder.finish()]);
    }

    /// Checks the output against `want` (relative to its largest magnitude), then times it.
    async fn time(&self, kernel: &str, rows: usize, cols: usize, bytes: u64, want: &[f32], iters: usize) -> Result<KernelTiming> {
        let device = &self.gpu.setup.device;
        scoped(device, kernel, || self.submit(1)).await?;
        let got = to_f32(&read_back(self.gpu, &self.output, (self.cols * 4) as u64).await?);
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        if let Some(c) = (0..cols).find(|&c| (got[c] - want[c]).abs() > 1e-4 * scale * (rows as f32).sqrt()) {
            return Err(ModelError::Gpu(format!("{kernel} {rows}x{cols}: column {c} is {} on the GPU, {} on the CPU", got[c], want[c])));
        }
        let start = Instant::now();
        self.submit(iters);
        device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
        let micros = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
        Ok(KernelTiming { kernel: kernel.into(), rows, cols, micros, bytes, gb_per_s: bytes as f64 / micros / 1e3 })
    }
}

async fn read_back(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let device = &gpu.setup.device;
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    gpu.setup.queue.submit([encoder.finish()]);
    read_staging(device, &staging, bytes).await
}

/// Copy bandwidth over `bytes` (rounded to whole vec4s): read + write bytes per second.
async fn bench_copy(gpu: &Gpu, bytes: u64, iters: usize) -> Result<KernelTiming> {
    let device = &gpu.setup.device;
    let words = (bytes / 16).max(1) as usize * 4;
    let source: Vec<u32> = (0..words as u32).collect();
    let groups = (words / 4).div_ceil(256);
    let grid = if groups > 65_535 { (65_535, groups.div_ceil(65_535)) } else { (groups, 1) };
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("copy"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/copy.wgsl").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("copy"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    let src = device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some("src"), contents: u32_bytes(&source), usage: STORAGE });
    let dst = device.create_buffer(&wgpu::BufferDescriptor { label: Some("dst"), size: (words * 4) as u64, usage: STORAGE, mapped_at_creation: false });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: src.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: dst.as_entire_binding() },
        ],
    });
    let submit = |dispatches: usize| {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..dispatches {
                pass.dispatch_workgroups(grid.0 as u32, grid.1 as u32, 1);
            }
        }
        gpu.setup.queue.submit([encoder.finish()]);
    };
    scoped(device, "copy", || submit(1)).await?;
    let copied: Vec<u32> = bytemuck::pod_collect_to_vec(&read_back(gpu, &dst, (words * 4) as u64).await?);
    if copied != source {
        return Err(ModelError::Gpu("copy kernel: the destination differs from the source".into()));
    }
    let start = Instant::now();
    submit(iters);
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
    let micros = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let moved = (words * 8) as u64;
    Ok(KernelTiming { kernel: "copy".into(), rows: 1, cols: words, micros, bytes: moved, gb_per_s: moved as f64 / micros / 1e3 })
}
