//! Kernel benchmarks (native only; `lutlab bench kernels`): one token through a linear layer, as
//! decoding does it, with the LUT GEMV of the model (`shaders/lut_gemv.wgsl`) at several bit
//! widths beside our own dense f32 and f16 GEMV (`shaders/dense_gemv.wgsl`), and a plain copy
//! (`shaders/copy.wgsl`) as the memory-bandwidth ceiling.
//!
//! Timing: after one untimed run (pipeline compilation, first touches, and the output checked
//! against the CPU), each kernel is dispatched `iters` times in one compute pass, untimed for half
//! a second (the GPU's clocks rise) and then three times, and the GPU's own timestamps at the start and
//! end of the pass give the time, the median of the three (wall clock from submit to idle where
//! the device has no timestamp queries). Dispatches of one pass run back to back with
//! the barriers the writes need between them, as consecutive layers would. They rotate through
//! copies of the layer's weights (at least 8, and together more than a large GPU's L2 cache), so
//! each call reads its weights from memory, as decoding a model does: one layer repeated would
//! time the cache.

pub mod model_ops;

use crate::util::{f32_bytes, gpu_error, read_staging, scoped, to_f32, u32_bytes};
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::packed::{blocks, PackedLinear};
use lutlab_core::quant::{Granularity, LutMatrix, SparseOutliers};
use lutlab_model::burn::tensor::Tensor;
use lutlab_model::device::download;
use lutlab_model::lut_linear::{column_major, gemv_columns, gemv_splits, scalar_gemv_sources, PackedGpuLinear};
use lutlab_model::{Gpu, ModelError, Result};
use serde::Serialize;
use std::time::Instant;
use wgpu::util::DeviceExt;

/// One kernel on one shape.
#[derive(Clone, Debug, Serialize)]
pub struct KernelTiming {
    /// `copy`, `dense f32 gemv`, `dense f16 gemv`, `lut gemv 4-bit`, ...
    pub kernel: String,
    /// Tokens multiplied at once: 1 for a GEMV.
    pub tokens: usize,
    pub rows: usize,
    pub cols: usize,
    /// Mean time of one dispatch.
    pub micros: f64,
    /// Bytes the kernel must move (weights, tables, input and output; for the copy, read + write).
    pub bytes: u64,
    pub gb_per_s: f64,
    /// 2 · tokens · rows · cols per second, in units of 10^12.
    pub tflops: f64,
    /// Copies of the weights the calls rotate through (1 for the copy and the GEMM).
    pub rotated_layers: usize,
}

impl KernelTiming {
    fn new(kernel: &str, tokens: usize, rows: usize, cols: usize, bytes: u64, micros: f64) -> Self {
        let flops = 2.0 * (tokens * rows * cols) as f64;
        Self { kernel: kernel.into(), tokens, rows, cols, micros, bytes, gb_per_s: bytes as f64 / micros / 1e3, tflops: flops / micros / 1e6, rotated_layers: 1 }
    }
}

/// Bytes of weights the timed calls rotate through: several times the 50 MB L2 of an H100/H200.
const COLD_BYTES: usize = 256 << 20;

/// Copies of a layer of `weight_bytes` that keep its weights out of L2 between calls.
fn cold_copies(weight_bytes: usize) -> usize {
    COLD_BYTES.div_ceil(weight_bytes.max(1)).clamp(8, 128)
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);
const NONE: u32 = u32::MAX;

/// The copy ceiling over a buffer of `bytes` and the time of one dispatch that does almost
/// nothing (a 4 KiB copy: what every timed call pays for its launch and the barrier after it),
/// then for each `(rows, cols)` shape the dense f32 and f16 GEMV and the LUT GEMV (per-channel
/// tables) at each of `bits`.
pub async fn bench_kernels(gpu: &Gpu, shapes: &[(usize, usize)], bits: &[u32], copy_bytes: u64, iters: usize) -> Result<Vec<KernelTiming>> {
    let device = &gpu.setup.device;
    // The copy binds its buffers whole: no larger than the device allows.
    let mut out = vec![
        bench_copy(gpu, copy_bytes.min(gpu.max_binding_bytes()), iters, "copy").await?,
        bench_copy(gpu, FLOOR_BYTES, iters, DISPATCH_FLOOR).await?,
    ];
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
        let run = Run::single(gpu, &dense_source(false), f32_bytes(&x), u32_bytes(&f32_words), cols, &params, (cols.div_ceil(32), 1, 1))?;
        out.push(run.time("dense f32 gemv", rows, cols, (rows * cols * 4 + (rows + cols) * 4) as u64, &want, iters).await?);

        let halves: Vec<half::f16> = weights.iter().map(|&w| half::f16::from_f32(w)).collect();
        let f16_words: Vec<u32> = halves.chunks_exact(2).map(|p| u32::from(p[0].to_bits()) | (u32::from(p[1].to_bits()) << 16)).collect();
        let want_f16 = dense_reference(&x, &halves.iter().map(|h| h.to_f32()).collect::<Vec<_>>(), cols);
        let run = Run::single(gpu, &dense_source(true), f32_bytes(&x), u32_bytes(&f16_words), cols, &params, ((cols / 2).div_ceil(32), 1, 1))?;
        out.push(run.time("dense f16 gemv", rows, cols, (rows * cols * 2 + (rows + cols) * 4) as u64, &want_f16, iters).await?);

        for &b in bits {
            let packed = random_packed(&mut rng, rows, cols, b)?;
            let want = packed.reference_matmul(&x, 1, None);
            let run = lut_gemv_run(gpu, &packed, &x)?;
            let bytes = (packed.qweight.len() + packed.tables.len() + rows + cols) * 4;
            out.push(run.time(&format!("lut gemv {b}-bit"), rows, cols, bytes as u64, &want, iters).await?);
            out.push(model_gemv(gpu, &packed, &x, &want, bytes as u64, iters).await?);
        }
    }
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
    Ok(out)
}

/// The same GEMV launched as the model launches it (`PackedGpuLinear::forward` through cubecl,
/// which compiles the WGSL without naga's bounds checks), rotating through uploaded copies of the
/// layer, timed by the wall clock (launch costs included) after the warm-up.
async fn model_gemv(gpu: &Gpu, packed: &PackedLinear, x: &[f32], want: &[f32], bytes: u64, iters: usize) -> Result<KernelTiming> {
    let (rows, cols) = (packed.rows, packed.cols);
    let kernel = format!("lut gemv {}-bit model", packed.bits);
    let layers = (0..cold_copies(packed.qweight.len() * 4)).map(|_| PackedGpuLinear::upload(packed, None, &gpu.device, "bench")).collect::<Result<Vec<_>>>()?;
    let x = lutlab_model::device::upload(x, [1, rows], &gpu.device);
    check(&kernel, rows, cols, &download(layers[0].forward(x.clone())).await?, want)?;
    let calls = std::cell::Cell::new(0);
    let micros = wall_micros(iters, || {
        calls.set(calls.get() + 1);
        Ok(layers[calls.get() % layers.len()].forward(x.clone()))
    })
    .await?;
    Ok(KernelTiming { rotated_layers: layers.len(), ..KernelTiming::new(&kernel, 1, rows, cols, bytes, micros) })
}

/// Many tokens through a linear layer (prefill, evaluation): the model's LUT GEMM (the layer
/// dequantized by `shaders/lut_dequantize.wgsl`, then burn's matmul) at each of `bits`, beside
/// burn's dense f32 matmul alone, which the model's dense layers use. Both are timed by the wall
/// clock over `iters` calls ended by a read-back (burn's launches queue without waiting).
pub async fn bench_gemm(gpu: &Gpu, shapes: &[(usize, usize)], bits: &[u32], tokens: usize, iters: usize) -> Result<Vec<KernelTiming>> {
    let mut out = Vec::new();
    let mut rng = SplitMix64::new(2);
    // Checking every token on the CPU would take minutes at 4096 × 11008; the first few suffice.
    let checked = tokens.min(4);
    for &(rows, cols) in shapes {
        let x: Vec<f32> = (0..tokens * rows).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let x_gpu = lutlab_model::device::upload(&x, [tokens, rows], &gpu.device);
        let bytes_io = (tokens * (rows + cols) * 4) as u64;
        for &b in bits {
            let packed = random_packed(&mut rng, rows, cols, b)?;
            let layer = PackedGpuLinear::upload(&packed, None, &gpu.device, "bench")?;
            let got = download(layer.forward(x_gpu.clone()).slice([0..checked, 0..cols])).await?;
            check(&format!("lut gemm {b}-bit"), rows, cols, &got, &packed.reference_matmul(&x[..checked * rows], checked, None))?;
            let micros = wall_micros(iters, || Ok(layer.forward(x_gpu.clone()))).await?;
            let bytes = (packed.qweight.len() + packed.tables.len()) as u64 * 4 + bytes_io;
            out.push(KernelTiming::new(&format!("lut gemm {b}-bit"), tokens, rows, cols, bytes, micros));
        }
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let w = lutlab_model::device::upload(&w, [rows, cols], &gpu.device);
        let micros = wall_micros(iters, || Ok(x_gpu.clone().matmul(w.clone()))).await?;
        out.push(KernelTiming::new("burn f32 gemm", tokens, rows, cols, (rows * cols * 4) as u64 + bytes_io, micros));
        // The dense layer as the model multiplies it (ours on GPUs), which the LUT GEMM's
        // dequantize-then-matmul is measured against.
        let micros = wall_micros(iters, || Ok(lutlab_model::gemm::model_matmul(x_gpu.clone(), w.clone()))).await?;
        out.push(KernelTiming::new("model f32 gemm", tokens, rows, cols, (rows * cols * 4) as u64 + bytes_io, micros));
    }
    Ok(out)
}

/// Mean wall-clock microseconds of `run` over `iters` calls after [`WARM_UP`] of untimed calls,
/// the last result read back (one element) so that the GPU has finished them all.
pub(crate) async fn wall_micros<const D: usize>(iters: usize, run: impl Fn() -> Result<Tensor<D>>) -> Result<f64> {
    let first = |t: Tensor<D>| t.flatten::<1>(0, D - 1).slice(0..1);
    let warm = Instant::now();
    while warm.elapsed() < WARM_UP {
        download(first(run()?)).await?;
    }
    let start = Instant::now();
    let mut y = run()?;
    for _ in 1..iters {
        y = run()?;
    }
    download(first(y)).await?;
    Ok(start.elapsed().as_secs_f64() * 1e6 / iters as f64)
}

/// `got` against `want` relative to its largest magnitude, scaled by √rows (f32 sums).
fn check(kernel: &str, rows: usize, cols: usize, got: &[f32], want: &[f32]) -> Result<()> {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    match (0..want.len()).find(|&i| (got[i] - want[i]).abs() > 1e-4 * scale * (rows as f32).sqrt()) {
        Some(i) => Err(ModelError::Gpu(format!(
            "{kernel} {rows}x{cols}: token {} column {} is {} on the GPU, {} on the CPU",
            i / cols,
            i % cols,
            got[i],
            want[i]
        ))),
        None => Ok(()),
    }
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
        input_groups: None,
        outliers: SparseOutliers::none(rows),
    };
    Ok(PackedLinear::from_lut(&lut)?)
}

pub fn dense_source(f16: bool) -> String {
    include_str!("../../../shaders/dense_gemv.wgsl").replace("{{f16}}", if f16 { "true" } else { "false" })
}

/// The model's GEMV for one token (`lutlab_model::lut_linear`): the split over rows it picks for
/// this shape, and the reduce pass when it splits.
fn lut_gemv_run<'a>(gpu: &'a Gpu, packed: &PackedLinear, x: &[f32]) -> Result<Run<'a>> {
    let (rows, cols) = (packed.rows, packed.cols);
    let tile = gemv_columns();
    let (splits, per_split) = gemv_splits(tile, cols, blocks(rows));
    let mut aux = packed.tables.clone();
    let sparse_at = aux.len() as u32;
    aux.push(0.0);
    let index = vec![0u32; cols + 1];
    let params = [rows as u32, cols as u32, 1, 1, blocks(rows) as u32, sparse_at, NONE, NONE, NONE, (cols + 1) as u32, splits as u32, per_split as u32, 0, NONE, NONE];
    let device = &gpu.setup.device;
    let (x, aux, index, params) = (buffer(device, f32_bytes(x)), buffer(device, f32_bytes(&aux)), buffer(device, u32_bytes(&index)), buffer(device, u32_bytes(&params)));
    let output = device.create_buffer(&wgpu::BufferDescriptor { label: Some("y"), size: (cols * 4) as u64, usage: STORAGE, mapped_at_creation: false });
    let (gemv, reduce) = scalar_gemv_sources(packed.bits, false);
    let (gemv, reduce) = (module(device, &gemv), module(device, &reduce));
    let grid = (cols.div_ceil(tile), splits, 1);
    let partials = device.create_buffer(&wgpu::BufferDescriptor { label: Some("partials"), size: (splits * cols * 4) as u64, usage: STORAGE, mapped_at_creation: false });
    let words = column_major(&packed.qweight, blocks(rows), packed.bits as usize, cols);
    let qweight = u32_bytes(&words);
    let calls = (0..cold_copies(qweight.len()))
        .map(|_| {
            let qweight = buffer(device, qweight);
            if splits == 1 {
                return vec![Step::new(device, &gemv, &[&x, &qweight, &aux, &index, &output, &params], grid)];
            }
            let first = Step::new(device, &gemv, &[&x, &qweight, &aux, &index, &partials, &params], grid);
            let second = Step::new(device, &reduce, &[&x, &partials, &aux, &index, &output, &params], (cols.div_ceil(256), 1, 1));
            vec![first, second]
        })
        .collect();
    Ok(Run { gpu, calls, output })
}

fn buffer(device: &wgpu::Device, bytes: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: bytes, usage: STORAGE })
}

fn module(device: &wgpu::Device, source: &str) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some("bench"), source: wgpu::ShaderSource::Wgsl(source.into()) })
}

/// One dispatch: a pipeline, its buffers, its grid.
struct Step {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: (usize, usize, usize),
}

impl Step {
    fn new(device: &wgpu::Device, module: &wgpu::ShaderModule, buffers: &[&wgpu::Buffer], grid: (usize, usize, usize)) -> Self {
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("bench"),
            layout: None,
            module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let entries: Vec<wgpu::BindGroupEntry> =
            buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
        Self { pipeline, bind, grid }
    }
}

/// A kernel bound to its buffers, writing to `output`: one call (one or more dispatches) per
/// copy of the layer's weights.
struct Run<'a> {
    gpu: &'a Gpu,
    calls: Vec<Vec<Step>>,
    output: wgpu::Buffer,
}

impl<'a> Run<'a> {
    /// One dispatch over the input `x`, a copy of the `weights`, the output and the parameters.
    fn single(gpu: &'a Gpu, source: &str, x: &[u8], weights: &[u8], cols: usize, params: &[u32], grid: (usize, usize, usize)) -> Result<Self> {
        let device = &gpu.setup.device;
        let module = module(device, source);
        let (x, params) = (buffer(device, x), buffer(device, u32_bytes(params)));
        let output = device.create_buffer(&wgpu::BufferDescriptor { label: Some("y"), size: (cols * 4) as u64, usage: STORAGE, mapped_at_creation: false });
        let calls = (0..cold_copies(weights.len())).map(|_| vec![Step::new(device, &module, &[&x, &buffer(device, weights), &output, &params], grid)]).collect();
        Ok(Self { gpu, calls, output })
    }

    /// Encodes `calls` calls, rotating through the layer's copies, in one pass, with GPU
    /// timestamps around it when the device has them.
    fn encode(&self, calls: usize, timer: Option<&Timer>) -> wgpu::CommandBuffer {
        let device = &self.gpu.setup.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let timestamp_writes = timer.map(Timer::pass_writes);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
            for steps in self.calls.iter().cycle().take(calls) {
                for step in steps {
                    pass.set_pipeline(&step.pipeline);
                    pass.set_bind_group(0, &step.bind, &[]);
                    pass.dispatch_workgroups(step.grid.0 as u32, step.grid.1 as u32, step.grid.2 as u32);
                }
            }
        }
        if let Some(timer) = timer {
            timer.resolve(&mut encoder);
        }
        encoder.finish()
    }

    /// Checks the output against `want`, then times it.
    async fn time(&self, kernel: &str, rows: usize, cols: usize, bytes: u64, want: &[f32], iters: usize) -> Result<KernelTiming> {
        let device = &self.gpu.setup.device;
        let queue = &self.gpu.setup.queue;
        scoped(device, kernel, || queue.submit([self.encode(1, None)])).await?;
        let got = to_f32(&read_back(self.gpu, &self.output, (want.len() * 4) as u64).await?);
        check(kernel, rows, cols, &got, want)?;
        let micros = time_commands(self.gpu, |timer| self.encode(iters, timer)).await? / iters as f64;
        Ok(KernelTiming { rotated_layers: self.calls.len(), ..KernelTiming::new(kernel, 1, rows, cols, bytes, micros) })
    }
}

/// How [`bench_kernels`] times on this device.
pub fn timing_method(gpu: &Gpu) -> &'static str {
    if gpu.setup.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) { "GPU timestamps" } else { "wall clock" }
}

/// How long the commands run untimed first: an idle GPU runs at low clocks and takes about a
/// second to reach full speed (an H100: 345 MHz idle, 1,980 MHz under load, by `nvidia-smi`).
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(500);

/// Microseconds the GPU spends on the commands `encode` records, the median of three runs after
/// [`WARM_UP`] of untimed ones (which also touch every copy of the weights).
async fn time_commands(gpu: &Gpu, encode: impl Fn(Option<&Timer>) -> wgpu::CommandBuffer) -> Result<f64> {
    let start = Instant::now();
    while start.elapsed() < WARM_UP {
        time_once(gpu, &encode).await?;
    }
    let mut runs = [time_once(gpu, &encode).await?, time_once(gpu, &encode).await?, time_once(gpu, &encode).await?];
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}

/// One timing of `encode`'s commands: from GPU timestamps around its pass when the device has
/// `TIMESTAMP_QUERY`, else by the wall clock from submit to idle (encoding happens before the
/// clock starts).
async fn time_once(gpu: &Gpu, encode: &impl Fn(Option<&Timer>) -> wgpu::CommandBuffer) -> Result<f64> {
    let device = &gpu.setup.device;
    let timer = device.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| Timer::new(device));
    let commands = encode(timer.as_ref());
    let start = Instant::now();
    gpu.setup.queue.submit([commands]);
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| gpu_error("waiting for the GPU", e))?;
    let wall = start.elapsed().as_secs_f64() * 1e6;
    match timer {
        Some(timer) => {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&read_staging(device, &timer.staging, 16).await?);
            Ok(ticks[1].saturating_sub(ticks[0]) as f64 * f64::from(gpu.setup.queue.get_timestamp_period()) / 1e3)
        }
        None => Ok(wall),
    }
}

/// Two GPU timestamps around a compute pass, resolved into a mappable buffer.
struct Timer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
}

impl Timer {
    fn new(device: &wgpu::Device) -> Self {
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("timer"), ty: wgpu::QueryType::Timestamp, count: 2 });
        let resolved = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps staging"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self { queries, resolved, staging }
    }

    fn pass_writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites { query_set: &self.queries, beginning_of_pass_write_index: Some(0), end_of_pass_write_index: Some(1) }
    }

    fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.staging, 0, 16);
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

/// The kernel name of the dispatch-floor row, and its copy's size.
pub const DISPATCH_FLOOR: &str = "dispatch floor";
const FLOOR_BYTES: u64 = 4096;

/// Copy bandwidth over `bytes` (rounded to whole vec4s): read + write bytes per second, as row
/// `kernel`.
async fn bench_copy(gpu: &Gpu, bytes: u64, iters: usize, kernel: &str) -> Result<KernelTiming> {
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
    let encode = |dispatches: usize, timer: Option<&Timer>| {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        {
            let timestamp_writes = timer.map(Timer::pass_writes);
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            for _ in 0..dispatches {
                pass.dispatch_workgroups(grid.0 as u32, grid.1 as u32, 1);
            }
        }
        if let Some(timer) = timer {
            timer.resolve(&mut encoder);
        }
        encoder.finish()
    };
    scoped(device, "copy", || gpu.setup.queue.submit([encode(1, None)])).await?;
    let copied: Vec<u32> = bytemuck::pod_collect_to_vec(&read_back(gpu, &dst, (words * 4) as u64).await?);
    if copied != source {
        return Err(ModelError::Gpu("copy kernel: the destination differs from the source".into()));
    }
    let micros = time_commands(gpu, |timer| encode(iters, timer)).await? / iters as f64;
    let moved = (words * 8) as u64;
    Ok(KernelTiming::new(kernel, 0, 1, words, moved, micros))
}
