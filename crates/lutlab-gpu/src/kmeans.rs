//! Weighted 1-D Lloyd k-means on the GPU (WGSL in `shaders/kmeans_*.wgsl`), with the semantics of
//! the CPU reference `lutlab_core::quant::kmeans` (its module docs are the specification):
//!
//! - *assignment*: nearest centroid, ties to the lower index, of equal centroids the first;
//! - *update*: each non-empty cluster's centroid becomes its weighted mean;
//! - *empty clusters*: re-seeded on the worst-served points, exactly as the CPU does it — on the
//!   host, after a read-back, because it needs a sort (rare: duplicate initial centroids, or a
//!   cluster emptied by its neighbours);
//! - *stop*: when an update changes no code (a fixed point), or after `max_iter` updates.
//!
//! Many independent *runs* go at once: a run fits one table (a whole matrix, a channel, a group)
//! from its own initial centroids, and the restarts of one table are runs over the same values.
//! Each iteration is two dispatches: `kmeans_assign` (one workgroup per chunk of 4096 values:
//! codes, changed-code count and per-centroid partial sums, reduced in workgroup memory) and
//! `kmeans_update` (one workgroup per run: adds its chunks' partials and moves the centroids).
//! Every few iterations the host reads the runs' states (a few bytes): done, or waiting for a
//! re-seed. On CPU adapters both passes have sequential twins without barriers (see
//! [`LloydKernels`]). Reductions are trees in a fixed order (no float atomics exist in WebGPU), so a run
//! is deterministic.
//!
//! The per-centroid sums of a chunk take one of two ways in the shader: over a *sorted* segment
//! (the host checks; quantization always runs on sorted points) the clusters are contiguous runs
//! and a segmented scan sums them at a cost independent of `k`; over a segment in any order each
//! centroid's lanes pick out its values (`k` compares per value: fine at 4 bits, slower at 8).
//!
//! Where the GPU differs from the CPU: sums are f32 (the CPU sums in f64), taken as offsets from
//! the current centroid so their error scales with a cluster's width, not the values' magnitude;
//! and the assignment compares `|x - c|` in f32 where the CPU compares against f64 midpoints. So
//! a value within about one f32 ulp of a midpoint between two centroids ("near-tie") may land in
//! the other cluster; the effect on the objective is of the order of that ulp.
//!
//! Limits respected: no f16, no float atomics, workgroups of 256, workgroup memory under WebGPU's
//! 16 KiB, at most 8 storage buffers per shader, 2-D dispatch past 65,535 workgroups, and every
//! buffer within the device's binding limit (runs are split into rounds; a single table's values
//! must fit one binding: 32 M values at WebGPU's 128 MiB default, far more on real adapters).

use crate::init::{self, Points};
use crate::profile;
use crate::seeding;
use crate::util::{f32_bytes, read_staging, scoped, to_f32, to_u32, u32_bytes};
use lutlab_core::LoadError;
use lutlab_core::quant::kmeans::{KmeansOutput, KmeansSettings, TableReport, assign, levels, objective};
use lutlab_core::quant::{KmeansInit, LutMatrix, SparseOutliers};
use lutlab_model::{Gpu, ModelError, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// Values per `kmeans_assign` workgroup (4 tiles of 1024; a multiple of 4 so code words align).
const CHUNK: usize = 4096;
/// Invocations per workgroup of the sequential passes (`kmeans_*_seq.wgsl`).
const SEQ_WG: usize = 64;
/// Most iterations between two state read-backs (it starts at 2 and doubles).
const MAX_CHECK_INTERVAL: usize = 16;

// Run states, as in the shaders (ACTIVE = 0: iterating).
const FRESH: u32 = 1;
const CONVERGED: u32 = 2;
const STOPPED: u32 = 3;
const RESEED: u32 = 4;
/// Items' run field: this bit marks a segment sorted ascending.
const SORTED_BIT: u32 = 0x8000_0000;

/// Test hook: when non-zero, 2-D dispatch grids use rows of this many workgroups instead of the
/// device's limit (65,535), so small problems exercise the 2-D path. Any width gives the same
/// results.
#[doc(hidden)]
pub static DISPATCH_ROW_OVERRIDE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Many independent weighted 1-D k-means runs over contiguous segments of one value array.
#[derive(Clone, Copy, Debug)]
pub struct KmeansBatch<'a> {
    /// The values of every segment, concatenated (finite).
    pub values: &'a [f32],
    /// Sample weight of each value (finite, ≥ 0; 0 = not in the fit, but still coded); `None`: 1.
    pub weights: Option<&'a [f32]>,
    /// Segment `s` is `values[offsets[s]..offsets[s + 1]]`; `offsets` starts at 0 and ends at
    /// `values.len()`.
    pub offsets: &'a [usize],
    /// Entries per table, 1 to 256 (codes are u8).
    pub k: usize,
    /// The segment of each run (`None`: run `s` fits segment `s`, one run per segment).
    pub run_segments: Option<&'a [usize]>,
    /// `k` initial centroids per run, any order (runs × k).
    pub initial: &'a [f32],
    /// Cap on updates per run.
    pub max_iter: usize,
    /// Read the codes back (`false` saves the transfer when only tables and objectives matter).
    pub codes: bool,
}

impl KmeansBatch<'_> {
    fn runs(&self) -> usize {
        self.run_segments.map_or(self.offsets.len().saturating_sub(1), <[usize]>::len)
    }

    fn segment_of(&self, run: usize) -> usize {
        self.run_segments.map_or(run, |s| s[run])
    }

    fn segment(&self, run: usize) -> std::ops::Range<usize> {
        let s = self.segment_of(run);
        self.offsets[s]..self.offsets[s + 1]
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Load(LoadError::InvalidSetting(m)));
        if !(1..=256).contains(&self.k) {
            return bad(format!("k-means needs 1 to 256 clusters (u8 codes), got {}", self.k));
        }
        if self.offsets.first() != Some(&0)
            || self.offsets.last() != Some(&self.values.len())
            || self.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return bad(format!(
                "segment offsets must rise from 0 to the {} values, got {} offsets",
                self.values.len(),
                self.offsets.len()
            ));
        }
        let segments = self.offsets.len() - 1;
        if let Some(s) = self.run_segments.and_then(|r| r.iter().find(|&&s| s >= segments)) {
            return bad(format!("run on segment {s}, but there are {segments} segments"));
        }
        if self.initial.len() != self.runs() * self.k {
            return bad(format!(
                "{} initial centroids for {} runs of {} entries",
                self.initial.len(),
                self.runs(),
                self.k
            ));
        }
        if self.values.len() > u32::MAX as usize / 2 {
            return bad(format!("{} values do not fit 32-bit GPU indices", self.values.len()));
        }
        lutlab_core::checkpoint::check_finite("initial centroids", self.initial)?;
        check_inputs(self.values, self.weights)?;
        Ok(())
    }
}

/// The result of [`lloyd_gpu`], per run.
#[derive(Clone, Debug, PartialEq)]
pub struct LloydGpuOutput {
    pub k: usize,
    /// runs × k, ascending within each run.
    pub centroids: Vec<f32>,
    /// `Σ w (x - centroids[code])²` per run over its segment (f32 partial sums, added in f64).
    pub objective: Vec<f64>,
    /// Updates done per run.
    pub iterations: Vec<usize>,
    /// The run reached a fixed point before `max_iter`.
    pub converged: Vec<bool>,
    /// The codes of each run's segment, run after run (empty unless asked for).
    pub codes: Vec<u8>,
    /// Run `r`'s codes are `codes[code_offsets[r]..code_offsets[r + 1]]`.
    pub code_offsets: Vec<usize>,
    /// Empty-cluster re-seeds done on the host.
    pub reseeds: usize,
    /// State read-backs (each one a GPU round trip).
    pub checks: usize,
}

impl LloydGpuOutput {
    pub fn centroids_of(&self, run: usize) -> &[f32] {
        &self.centroids[run * self.k..(run + 1) * self.k]
    }
    pub fn codes_of(&self, run: usize) -> &[u8] {
        &self.codes[self.code_offsets[run]..self.code_offsets[run + 1]]
    }
}

/// Fails on NaN/Inf values and on NaN, infinite or negative sample weights, naming the flat index
/// (the CPU reference's check, with its messages).
fn check_inputs(values: &[f32], sample_weights: Option<&[f32]>) -> Result<()> {
    lutlab_core::checkpoint::check_finite("weights", values)?;
    if let Some(sample) = sample_weights {
        if sample.len() != values.len() {
            return Err(LoadError::InvalidSetting(format!(
                "{} sample weights for {} weights",
                sample.len(),
                values.len()
            ))
            .into());
        }
        lutlab_core::checkpoint::check_finite("sample weights", sample)?;
        if let Some((i, v)) = sample.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return Err(LoadError::InvalidSetting(format!(
                "sample weights must be non-negative (Fisher values are squares); found {v} at flat index {i}"
            ))
            .into());
        }
    }
    Ok(())
}

/// The compute pipelines, built once per device: the workgroup passes and their sequential
/// twins for CPU adapters (see [`LloydKernels`]).
pub(crate) struct Kernels {
    assign: wgpu::ComputePipeline,
    update: wgpu::ComputePipeline,
    assign_seq: wgpu::ComputePipeline,
    update_seq: wgpu::ComputePipeline,
    /// The vector tables' assignment (`crate::vector_kmeans`).
    pub(crate) vector_assign: wgpu::ComputePipeline,
}

/// Which Lloyd passes run. The workgroup passes (`kmeans_assign`, `kmeans_update`) reduce in
/// workgroup memory with many barriers, which suits GPUs; CPU rasterisers (lavapipe, Chromium's
/// SwiftShader) switch between lane groups at every barrier, which made one Lloyd iteration of a
/// 768×3072 layer take ~1 s there. The sequential passes (`kmeans_assign_seq`,
/// `kmeans_update_seq`) give each item and each run one invocation that walks its values in
/// order, with no barrier; they need sorted segments (quantization always sorts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LloydKernels {
    /// Sequential on a CPU adapter when every segment is sorted, else the workgroup passes.
    #[default]
    Auto,
    Workgroup,
    /// Sequential when every segment is sorted (else the workgroup passes).
    Sequential,
}

pub(crate) async fn kernels(device: &wgpu::Device) -> Result<Arc<Kernels>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::Mutex;
        static CACHE: Mutex<Vec<(wgpu::Device, Arc<Kernels>)>> = Mutex::new(Vec::new());
        let cached =
            |cache: &Vec<(wgpu::Device, Arc<Kernels>)>| cache.iter().find(|(d, _)| d == device).map(|(_, k)| k.clone());
        if let Some(k) = CACHE.lock().ok().and_then(|c| cached(&c)) {
            return Ok(k);
        }
        let built = Arc::new(build_kernels(device).await?);
        let mut cache = CACHE.lock().map_err(|_| ModelError::Gpu("kernel cache lock poisoned".into()))?;
        Ok(cached(&cache).unwrap_or_else(|| {
            cache.push((device.clone(), built.clone()));
            built
        }))
    }
    #[cfg(target_arch = "wasm32")]
    {
        thread_local!(static CACHE: std::cell::RefCell<Vec<(wgpu::Device, Arc<Kernels>)>> =
            const { std::cell::RefCell::new(Vec::new()) });
        if let Some(k) = CACHE.with_borrow(|c| c.iter().find(|(d, _)| d == device).map(|(_, k)| k.clone())) {
            return Ok(k);
        }
        let built = Arc::new(build_kernels(device).await?);
        CACHE.with_borrow_mut(|c| c.push((device.clone(), built.clone())));
        Ok(built)
    }
}

/// A k-means pass's WGSL behind `kmeans_common.wgsl` (parameters and run states).
fn with_common(pass: &str) -> String {
    format!("{}{pass}", include_str!("../../../shaders/kmeans_common.wgsl"))
}

async fn build_kernels(device: &wgpu::Device) -> Result<Kernels> {
    scoped(device, "compiling the k-means kernels", || {
        let pipeline = |name: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        };
        Kernels {
            assign: pipeline("kmeans_assign", &with_common(include_str!("../../../shaders/kmeans_assign.wgsl"))),
            update: pipeline("kmeans_update", &with_common(include_str!("../../../shaders/kmeans_update.wgsl"))),
            assign_seq: pipeline("kmeans_assign_seq", &with_common(include_str!("../../../shaders/kmeans_assign_seq.wgsl"))),
            update_seq: pipeline("kmeans_update_seq", &with_common(include_str!("../../../shaders/kmeans_update_seq.wgsl"))),
            vector_assign: pipeline("vector_kmeans_assign", include_str!("../../../shaders/vector_kmeans_assign.wgsl")),
        }
    })
    .await
}

/// Workgroup grid for `n` workgroups: rows of `max_dim` (the shaders use the same row width).
pub(crate) fn grid(n: usize, max_dim: u32) -> Result<(u32, u32)> {
    let max = max_dim as usize;
    let rows = n.div_ceil(max);
    if rows > max {
        return Err(ModelError::Gpu(format!("{n} workgroups exceed a {max} x {max} dispatch")));
    }
    Ok((n.min(max) as u32, rows as u32))
}

/// One round of runs whose per-run buffers fit the binding limit.
struct Round {
    runs: Vec<usize>,
}

/// Weighted Lloyd k-means of every run of `batch` on the GPU. Each run should have more distinct
/// positive-weight values than `k` (as the CPU's Lloyd requires; otherwise it keeps re-seeding
/// until `max_iter`); a run over an empty segment is returned as is, with objective 0.
pub async fn lloyd_gpu(gpu: &Gpu, batch: KmeansBatch<'_>) -> Result<LloydGpuOutput> {
    lloyd_gpu_with(gpu, batch, LloydKernels::Auto).await
}

/// [`lloyd_gpu`] with a choice of passes (tests compare them; results agree to f32 rounding).
pub async fn lloyd_gpu_with(gpu: &Gpu, batch: KmeansBatch<'_>, passes: LloydKernels) -> Result<LloydGpuOutput> {
    batch.check()?;
    let device = &gpu.setup.device;
    let kernels = kernels(device).await?;
    let limit = gpu.max_binding_bytes();
    let n = batch.values.len();
    if (n as u64) * 4 > limit {
        return Err(ModelError::Gpu(format!(
            "{n} values need {} bytes in one buffer but this GPU binds at most {limit}",
            n * 4
        )));
    }
    let k = batch.k;
    let runs = batch.runs();
    let ones;
    let weights_host = match batch.weights {
        Some(w) => w,
        None => {
            ones = vec![1.0f32; n];
            &ones
        }
    };
    let (values, weights) = scoped(device, "uploading k-means values", || {
        let storage = wgpu::BufferUsages::STORAGE;
        (
            upload(device, "kmeans values", f32_bytes(batch.values), storage),
            upload(device, "kmeans weights", f32_bytes(weights_host), storage),
        )
    })
    .await?;

    // Rounds: greedy, so that codes and partials of a round each fit one binding.
    let mut rounds = vec![Round { runs: Vec::new() }];
    let (mut code_bytes, mut partial_bytes) = (0u64, 0u64);
    for r in 0..runs {
        let len = batch.segment(r).len();
        let (c, p) = ((len.div_ceil(4) * 4) as u64, (len.div_ceil(CHUNK) * k * 12) as u64);
        if c > limit || p > limit {
            return Err(ModelError::Gpu(format!("a segment of {len} values does not fit this GPU's bindings")));
        }
        if code_bytes + c > limit || partial_bytes + p > limit {
            rounds.push(Round { runs: Vec::new() });
            (code_bytes, partial_bytes) = (0, 0);
        }
        code_bytes += c;
        partial_bytes += p;
        if let Some(round) = rounds.last_mut() {
            round.runs.push(r);
        }
    }

    let mut out = LloydGpuOutput {
        k,
        centroids: vec![0.0; runs * k],
        objective: vec![0.0; runs],
        iterations: vec![0; runs],
        converged: vec![false; runs],
        codes: Vec::new(),
        code_offsets: vec![0; runs + 1],
        reseeds: 0,
        checks: 0,
    };
    if batch.codes {
        for r in 0..runs {
            out.code_offsets[r + 1] = out.code_offsets[r] + batch.segment(r).len();
        }
        out.codes = vec![0; out.code_offsets[runs]];
    }
    // Sorted segments take the shader's segmented-scan path (cost independent of k).
    let sorted: Vec<bool> =
        batch.offsets.windows(2).map(|w| batch.values[w[0]..w[1]].windows(2).all(|p| p[0] <= p[1])).collect();
    let all_sorted = sorted.iter().all(|&s| s);
    let sequential = all_sorted
        && match passes {
            LloydKernels::Auto => gpu.setup.adapter.get_info().device_type == wgpu::DeviceType::Cpu,
            LloydKernels::Workgroup => false,
            LloydKernels::Sequential => true,
        };
    for round in rounds.iter().filter(|r| !r.runs.is_empty()) {
        run_round(gpu, &kernels, &batch, &sorted, sequential, &values, &weights, &round.runs, &mut out).await?;
    }
    Ok(out)
}

pub(crate) fn upload(device: &wgpu::Device, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    // wgpu rejects empty storage bindings: keep at least 16 bytes.
    let mut padded;
    let contents = if bytes.len() < 16 {
        padded = bytes.to_vec();
        padded.resize(16, 0);
        &padded[..]
    } else {
        bytes
    };
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents, usage })
}

pub(crate) fn empty_buffer(device: &wgpu::Device, label: &str, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).div_ceil(4) * 4,
        usage,
        mapped_at_creation: false,
    })
}

/// Runs one round of runs to the end and writes their results into `out`.
#[allow(clippy::too_many_arguments)]
async fn run_round(
    gpu: &Gpu,
    kernels: &Kernels,
    batch: &KmeansBatch<'_>,
    sorted: &[bool],
    sequential: bool,
    values: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    round: &[usize],
    out: &mut LloydGpuOutput,
) -> Result<()> {
    let device = &gpu.setup.device;
    let queue = &gpu.setup.queue;
    let k = batch.k;
    let n_runs = round.len();

    // Items (chunks of a run's segment) and per-run records; runs of empty segments start done.
    let mut items: Vec<u32> = Vec::new();
    let mut run_state: Vec<u32> = Vec::with_capacity(n_runs * 4);
    let mut word0 = Vec::with_capacity(n_runs + 1);
    let mut words = 0usize;
    for &r in round {
        let seg = batch.segment(r);
        let first_item = items.len() / 4;
        let flag = if sorted[batch.segment_of(r)] { SORTED_BIT } else { 0 };
        let mut start = seg.start;
        while start < seg.end {
            let count = CHUNK.min(seg.end - start);
            items.extend_from_slice(&[
                round_index(&run_state) | flag,
                start as u32,
                count as u32,
                (words + (start - seg.start) / 4) as u32,
            ]);
            start += count;
        }
        let n_items = items.len() / 4 - first_item;
        let state = if seg.is_empty() { STOPPED } else { FRESH };
        run_state.extend_from_slice(&[first_item as u32, n_items as u32, state, 0]);
        word0.push(words);
        words += seg.len().div_ceil(4);
    }
    word0.push(words);
    let n_items = items.len() / 4;
    // Ascending, as the assignment's binary search needs (Lloyd and the re-seed keep the order).
    let mut initial: Vec<f32> = Vec::with_capacity(n_runs * k);
    for &r in round {
        let mut c = batch.initial[r * k..(r + 1) * k].to_vec();
        c.sort_by(f32::total_cmp);
        initial.extend_from_slice(&c);
    }

    let limit = device.limits().max_compute_workgroups_per_dimension;
    let max_dim = match DISPATCH_ROW_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => limit,
        row => row.min(limit),
    };
    // The sequential passes take 64 items or runs per workgroup (one per invocation).
    let (assign, update, per_group) = if sequential {
        (&kernels.assign_seq, &kernels.update_seq, SEQ_WG)
    } else {
        (&kernels.assign, &kernels.update, 1)
    };
    let item_grid = grid(n_items.div_ceil(per_group), max_dim)?;
    let run_grid = grid(n_runs.div_ceil(per_group), max_dim)?;
    let params: [u32; 8] =
        [k as u32, n_items as u32, n_runs as u32, batch.max_iter.min(u32::MAX as usize - 1) as u32, max_dim, 0, 0, 0];
    use wgpu::BufferUsages as U;
    let (bufs, bind_assign, bind_update) = scoped(device, "allocating k-means buffers", || {
        let params = upload(device, "kmeans params", u32_bytes(&params), U::UNIFORM);
        let items = upload(device, "kmeans items", u32_bytes(&items), U::STORAGE);
        let runs = upload(device, "kmeans runs", u32_bytes(&run_state), U::STORAGE | U::COPY_DST | U::COPY_SRC);
        let centroids = upload(device, "kmeans centroids", f32_bytes(&initial), U::STORAGE | U::COPY_DST | U::COPY_SRC);
        let codes = empty_buffer(device, "kmeans codes", words as u64 * 4, U::STORAGE | U::COPY_SRC);
        let partials = empty_buffer(device, "kmeans partials", (n_items * k * 12) as u64, U::STORAGE);
        let changed = empty_buffer(device, "kmeans changed", n_runs as u64 * 4, U::STORAGE);
        let objective = empty_buffer(device, "kmeans objective", (n_runs * k * 4) as u64, U::STORAGE | U::COPY_SRC);
        let bind_assign = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("kmeans_assign"),
            layout: &assign.get_bind_group_layout(0),
            entries: &entries(&[&params, values, weights, &items, &runs, &centroids, &codes, &partials, &changed]),
        });
        let bind_update = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("kmeans_update"),
            layout: &update.get_bind_group_layout(0),
            entries: &entries(&[&params, &runs, &centroids, &partials, &changed, &objective]),
        });
        (Buffers { runs, centroids, codes, objective }, bind_assign, bind_update)
    })
    .await?;
    let state_bytes = (n_runs * 16) as u64;
    let state_staging = empty_buffer(device, "kmeans state read-back", state_bytes, U::MAP_READ | U::COPY_DST);

    let mut interval = 2usize;
    loop {
        scoped(device, "running k-means", || {
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kmeans") });
            {
                let mut pass = encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("lloyd"), timestamp_writes: None });
                for _ in 0..interval {
                    pass.set_pipeline(assign);
                    pass.set_bind_group(0, &bind_assign, &[]);
                    pass.dispatch_workgroups(item_grid.0, item_grid.1, 1);
                    pass.set_pipeline(update);
                    pass.set_bind_group(0, &bind_update, &[]);
                    pass.dispatch_workgroups(run_grid.0, run_grid.1, 1);
                }
            }
            encoder.copy_buffer_to_buffer(&bufs.runs, 0, &state_staging, 0, state_bytes);
            queue.submit([encoder.finish()]);
        })
        .await?;
        let state = to_u32(&read_staging(device, &state_staging, state_bytes).await?);
        out.checks += 1;
        let waiting: Vec<usize> = (0..n_runs).filter(|&i| state[i * 4 + 2] == RESEED).collect();
        if !waiting.is_empty() {
            reseed_runs(gpu, batch, round, &word0, &bufs, &waiting).await?;
            out.reseeds += waiting.len();
        }
        if waiting.is_empty() && (0..n_runs).all(|i| matches!(state[i * 4 + 2], CONVERGED | STOPPED)) {
            break;
        }
        interval = (interval * 2).min(MAX_CHECK_INTERVAL);
    }

    // Results: centroids, objective terms, states, and optionally the codes.
    let c_bytes = (n_runs * k * 4) as u64;
    let code_bytes = if batch.codes { words as u64 * 4 } else { 0 };
    let total = 2 * c_bytes + state_bytes + code_bytes;
    let staging = empty_buffer(device, "kmeans results read-back", total, U::MAP_READ | U::COPY_DST);
    scoped(device, "reading k-means results", || {
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kmeans results") });
        encoder.copy_buffer_to_buffer(&bufs.centroids, 0, &staging, 0, c_bytes);
        encoder.copy_buffer_to_buffer(&bufs.objective, 0, &staging, c_bytes, c_bytes);
        encoder.copy_buffer_to_buffer(&bufs.runs, 0, &staging, 2 * c_bytes, state_bytes);
        if code_bytes > 0 {
            encoder.copy_buffer_to_buffer(&bufs.codes, 0, &staging, 2 * c_bytes + state_bytes, code_bytes);
        }
        queue.submit([encoder.finish()]);
    })
    .await?;
    let bytes = read_staging(device, &staging, total).await?;
    let (c_end, o_end, s_end) = (c_bytes as usize, 2 * c_bytes as usize, (2 * c_bytes + state_bytes) as usize);
    let centroids = to_f32(&bytes[..c_end]);
    let objective = to_f32(&bytes[c_end..o_end]);
    let state = to_u32(&bytes[o_end..s_end]);
    let code_words = if code_bytes > 0 { &bytes[s_end..] } else { &[][..] };

    for (i, &r) in round.iter().enumerate() {
        // Ascending tables (Lloyd keeps the order; this only guards against f32 rounding), codes
        // remapped to match.
        let mut order: Vec<usize> = (0..k).collect();
        let c = &centroids[i * k..(i + 1) * k];
        order.sort_by(|&a, &b| c[a].total_cmp(&c[b]).then(a.cmp(&b)));
        let mut remap = vec![0u8; k];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u8;
            out.centroids[r * k + new] = c[old];
        }
        out.objective[r] = objective[i * k..(i + 1) * k].iter().map(|&v| f64::from(v)).sum();
        out.iterations[r] = state[i * 4 + 3] as usize;
        out.converged[r] = state[i * 4 + 2] == CONVERGED;
        if batch.codes {
            let len = batch.segment(r).len();
            let src = &code_words[word0[i] * 4..word0[i] * 4 + len];
            let dst = &mut out.codes[out.code_offsets[r]..out.code_offsets[r] + len];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = remap[usize::from(s)];
            }
        }
    }
    Ok(())
}

/// Bind group entries 0, 1, ... for `list`.
pub(crate) fn entries<'a>(list: &[&'a wgpu::Buffer]) -> Vec<wgpu::BindGroupEntry<'a>> {
    list.iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect()
}

/// The index the next run record will get (items refer to runs by their index in the round).
fn round_index(run_state: &[u32]) -> u32 {
    (run_state.len() / 4) as u32
}

struct Buffers {
    runs: wgpu::Buffer,
    centroids: wgpu::Buffer,
    codes: wgpu::Buffer,
    objective: wgpu::Buffer,
}

/// Re-seeds the empty clusters of the runs `waiting` (indices in the round) on the host, exactly
/// as the CPU reference, from the codes that produced their last update and the updated
/// centroids; then lets them go on (state FRESH: the next check must not call them converged).
async fn reseed_runs(
    gpu: &Gpu,
    batch: &KmeansBatch<'_>,
    round: &[usize],
    word0: &[usize],
    bufs: &Buffers,
    waiting: &[usize],
) -> Result<()> {
    let device = &gpu.setup.device;
    let queue = &gpu.setup.queue;
    let k = batch.k;
    // Layout of the read-back: each run's centroids, then its code words.
    let mut spans = Vec::with_capacity(waiting.len());
    let mut total = 0u64;
    for &i in waiting {
        let c = (i * k * 4) as u64;
        let w = (word0[i] * 4) as u64;
        let w_len = ((word0[i + 1] - word0[i]) * 4) as u64;
        spans.push((total, c, total + (k * 4) as u64, w, w_len));
        total += (k * 4) as u64 + w_len;
    }
    let staging = empty_buffer(
        device,
        "kmeans reseed read-back",
        total,
        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
    );
    scoped(device, "reading runs to re-seed", || {
        let mut encoder =
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("kmeans reseed") });
        for &(at, c, w_at, w, w_len) in &spans {
            encoder.copy_buffer_to_buffer(&bufs.centroids, c, &staging, at, (k * 4) as u64);
            if w_len > 0 {
                encoder.copy_buffer_to_buffer(&bufs.codes, w, &staging, w_at, w_len);
            }
        }
        queue.submit([encoder.finish()]);
    })
    .await?;
    let bytes = read_staging(device, &staging, total).await?;
    for (&i, &(at, _, w_at, _, _)) in waiting.iter().zip(&spans) {
        let r = round[i];
        let seg = batch.segment(r);
        let c32 = to_f32(&bytes[at as usize..at as usize + k * 4]);
        let codes = &bytes[w_at as usize..w_at as usize + seg.len()];
        let mut c: Vec<f64> = c32.iter().map(|&v| f64::from(v)).collect();
        let (points, cluster) = points_with_clusters(batch, seg, codes);
        init::reseed(&points, &cluster, &mut c);
        let new: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        queue.write_buffer(&bufs.centroids, (i * k * 4) as u64, f32_bytes(&new));
        queue.write_buffer(&bufs.runs, (i * 16 + 8) as u64, u32_bytes(&[FRESH]));
    }
    Ok(())
}

/// The segment's points (distinct positive-weight values with summed weights, as the CPU
/// reference builds them) and the cluster of each (equal values always share a code).
fn points_with_clusters(batch: &KmeansBatch<'_>, seg: std::ops::Range<usize>, codes: &[u8]) -> (Points, Vec<usize>) {
    let w = |i: usize| batch.weights.map_or(1.0, |w| f64::from(w[i]));
    let mut triples: Vec<(f32, f64, u8)> =
        seg.clone().zip(codes).filter(|&(i, _)| w(i) > 0.0).map(|(i, &code)| (batch.values[i], w(i), code)).collect();
    triples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut points = Points::default();
    let mut cluster = Vec::new();
    for (v, wv, code) in triples {
        match points.x.last() {
            Some(&last) if last == f64::from(v) => {
                if let Some(lw) = points.w.last_mut() {
                    *lw += wv;
                }
            }
            _ => {
                points.x.push(f64::from(v));
                points.w.push(wv);
                cluster.push(usize::from(code));
            }
        }
    }
    (points, cluster)
}

/// [`quantize_kmeans_gpu_report`] without the report: the GPU twin of
/// `lutlab_core::quant::quantize_kmeans`.
pub async fn quantize_kmeans_gpu(
    gpu: &Gpu,
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    settings: &KmeansSettings,
) -> Result<LutMatrix> {
    Ok(quantize_kmeans_gpu_report(gpu, weights, rows, cols, sample_weights, None, settings).await?.matrix)
}

/// Lloyd k-means LUT quantization of an `[rows, cols]` (Conv1D `[in, out]`) matrix on the GPU,
/// with the semantics of `lutlab_core::quant::quantize_kmeans_report`: the same tables per
/// granularity, effective weights (uniform fallback, `excluded` at weight 0), documented exact
/// results for tables with at most `k` distinct values, and the same initial centroids for each
/// table and restart (k-means++ or quantiles, drawn on the host from the CPU's streams). The
/// Lloyd iterations of all tables and restarts run on the GPU at once, over each table's distinct
/// values with summed weights; the best restart per table is kept (lowest objective, ties to the
/// earlier; restarts within the f32 objective's precision are ranked by their exact f64 objective
/// on the host, see [`best_restart`]); every weight is then coded to its table on the host with
/// the CPU reference's assignment, and the objective summed in f64. Host work (sorting each
/// table's values, k-means++, coding) runs on all cores natively, on the page's thread in the
/// browser; natively the k-means++ of a chunk of tables overlaps the GPU's Lloyd on the chunk
/// before (see `seeding`).
///
/// Where the result can differ from the CPU's: table entries by a few f32 ulps (and so the codes
/// of values next to a midpoint); the tests bound both on the shipped model.
pub async fn quantize_kmeans_gpu_report(
    gpu: &Gpu,
    weights: &[f32],
    rows: usize,
    cols: usize,
    sample_weights: Option<&[f32]>,
    excluded: Option<&[bool]>,
    settings: &KmeansSettings,
) -> Result<KmeansOutput> {
    let k = levels(settings.bits)?;
    if rows == 0 || cols == 0 {
        return Err(LoadError::InvalidSetting(format!("cannot quantize an empty {rows}x{cols} matrix")).into());
    }
    if rows.checked_mul(cols) != Some(weights.len()) {
        return Err(LoadError::WrongShape {
            name: "weights".into(),
            expected: vec![rows, cols],
            found: vec![weights.len()],
        }
        .into());
    }
    if let Some(e) = excluded.filter(|e| e.len() != weights.len()) {
        return Err(LoadError::InvalidSetting(format!(
            "outlier mask has {} entries for {} weights",
            e.len(),
            weights.len()
        ))
        .into());
    }
    check_inputs(weights, sample_weights)?;
    let per_table = settings.granularity.channels_per_table(cols)?;
    let n_tables = cols / per_table;
    let restarts = match settings.init {
        KmeansInit::PlusPlus => settings.restarts.max(1),
        KmeansInit::Quantile => 1,
    };

    // Host: each table's weights in table order, effective weights and points.
    let t = profile::start();
    let (tables, points) = prepare_tables(weights, rows, cols, per_table, n_tables, sample_weights, excluded, k);
    profile::stop("host: tables, sort, points", t);

    // GPU Lloyd over the points of the tables that need a fit, in batches that fit a binding and
    // in chunks whose k-means++ seeding (on the host) overlaps the Lloyd of the chunk before.
    let limit = gpu.max_binding_bytes();
    let fitted: Vec<usize> = (0..n_tables).filter(|&t| tables[t].exact.is_none()).collect();
    let mut chosen: Vec<(Vec<f32>, usize, bool)> =
        tables.iter().map(|t| (t.exact.clone().unwrap_or_default(), 0, true)).collect();
    let cpu_adapter = gpu.setup.adapter.get_info().device_type == wgpu::DeviceType::Cpu;
    let groups: Vec<Vec<usize>> = split_by_bytes(&fitted, |t| points[t].len() as u64 * 4, limit)
        .into_iter()
        .flat_map(|g| seeding::chunks(g, restarts, cpu_adapter))
        .collect();
    let seed_plan = seeding::Plan { k, init: settings.init, seed: settings.seed, restarts };
    let mut seeds = seeding::Seeds::start(points.clone(), groups.clone(), seed_plan);
    let t_lloyd = profile::start();
    for group in groups {
        let run_segments: Vec<usize> = (0..group.len()).flat_map(|s| std::iter::repeat_n(s, restarts)).collect();
        let t_wait = profile::start();
        let chunk = seeds.next()?;
        profile::stop("  of which waiting for k-means++", t_wait);
        let t_fit = profile::start();
        let fit = lloyd_gpu(
            gpu,
            KmeansBatch {
                values: &chunk.values,
                weights: Some(&chunk.weights),
                offsets: &chunk.offsets,
                k,
                run_segments: Some(&run_segments),
                initial: &chunk.initial,
                max_iter: settings.max_iter,
                codes: false,
            },
        )
        .await?;
        profile::stop("  of which lloyd_gpu", t_fit);
        let best = parallel_map(group.len(), |s| {
            best_restart(&fit, s * restarts..(s + 1) * restarts, &points[group[s]])
        });
        for (s, &t) in group.iter().enumerate() {
            let b = best[s];
            chosen[t] = (fit.centroids_of(b).to_vec(), fit.iterations[b], fit.converged[b]);
        }
    }

    profile::stop("gpu lloyd (with uploads, read-back, best restart)", t_lloyd);

    // Last pass: every weight coded to its table, objective with the stored f32 entries. On the
    // host, with the CPU reference's assignment (f64 midpoints, ties to the lower index): the
    // codes must come back to the host for packing anyway, and sending every weight and its
    // sample weight to the GPU to code it costs more than coding it on the cores (profiled on
    // GPT-2 124M: 1.6 s on the GPU vs 0.24 s on 16 cores).
    let t_code = profile::start();
    let coded = parallel_map(n_tables, |t| {
        let mut entries = chosen[t].0.clone();
        entries.sort_by(f32::total_cmp);
        let table: Vec<f64> = entries.iter().map(|&v| f64::from(v)).collect();
        let codes = assign(&tables[t].values, &table);
        let objective = objective(&tables[t].values, &tables[t].weights, &table, &codes);
        (entries, codes, objective)
    });
    // Back to the matrix layout, in bands of rows on all cores: a table's codes are in row order
    // within its columns (see `prepare_tables`), so row `r` of table `t` is
    // `codes_t[r * per_table..][..per_table]`.
    let band = rows.div_ceil(threads()).max(1);
    let bands = parallel_map(rows.div_ceil(band), |b| {
        let band_rows = b * band..((b + 1) * band).min(rows);
        let mut out = Vec::with_capacity(band_rows.len() * cols);
        for r in band_rows {
            for (_, table_codes, _) in &coded {
                out.extend_from_slice(&table_codes[r * per_table..(r + 1) * per_table]);
            }
        }
        out
    });
    let codes: Vec<u8> = bands.concat();
    let mut objectives = vec![0.0; n_tables];
    for (t, (entries, _, objective)) in coded.into_iter().enumerate() {
        objectives[t] = objective;
        chosen[t].0 = entries;
    }

    profile::stop("host coding (assignment, objective, scatter)", t_code);
    let reports: Vec<TableReport> = (0..n_tables)
        .map(|t| TableReport {
            objective: objectives[t],
            iterations: chosen[t].1,
            converged: chosen[t].2,
            distinct: points[t].len(),
        })
        .collect();
    let matrix = LutMatrix {
        rows,
        cols,
        bits: settings.bits,
        granularity: settings.granularity,
        tables: chosen.iter().flat_map(|c| c.0.iter().copied()).collect(),
        codes,
        input_groups: None,
        outliers: SparseOutliers::none(rows),
    };
    Ok(KmeansOutput { objective: reports.iter().map(|r| r.objective).sum(), matrix, tables: reports })
}

/// The restart to keep among `runs` of one table: the lowest objective, ties to the earlier, as
/// the CPU does. The GPU's f32 objectives rank runs to about 1e-6; restarts that end on distinct
/// fixed points closer than that (adjacent local optima, common at 1 and 2 bits) are ranked by
/// their exact f64 objective over the table's points, computed here, so the choice is the CPU's.
fn best_restart(fit: &LloydGpuOutput, runs: std::ops::Range<usize>, points: &Points) -> usize {
    const F32_RANKING: f64 = 1e-5;
    let first = runs.start;
    let lowest = runs.clone().map(|r| fit.objective[r]).fold(f64::INFINITY, f64::min);
    let close: Vec<usize> = runs.filter(|&r| fit.objective[r] <= lowest * (1.0 + F32_RANKING)).collect();
    // Runs that reached the same fixed point (tables equal to f32 rounding) count once, as the
    // earliest of them: the CPU gets bit-identical tables and objectives there and keeps it.
    let same = |a: &[f32], b: &[f32]| {
        let scale = a.iter().chain(b).fold(0f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 * scale)
    };
    let mut distinct: Vec<usize> = Vec::new();
    for r in close {
        if !distinct.iter().any(|&d| same(fit.centroids_of(d), fit.centroids_of(r))) {
            distinct.push(r);
        }
    }
    match distinct.as_slice() {
        [] => first,
        [only] => *only,
        several => {
            let exact: Vec<f64> = several.iter().map(|&r| points_objective(points, fit.centroids_of(r))).collect();
            let mut best = 0;
            for i in 1..several.len() {
                if exact[i] < exact[best] {
                    best = i;
                }
            }
            several[best]
        }
    }
}

/// `Σ w (x - c)²` over `points` with each at its nearest entry of the ascending `table`, in f64.
fn points_objective(points: &Points, table: &[f32]) -> f64 {
    let c: Vec<f64> = table.iter().map(|&v| f64::from(v)).collect();
    points
        .x
        .iter()
        .zip(&points.w)
        .map(|(&x, &w)| {
            let p = c.partition_point(|&v| v < x);
            let d = match (p.checked_sub(1), c.get(p)) {
                (Some(lo), Some(&hi)) => (x - c[lo]).min(hi - x),
                (Some(lo), None) => x - c[lo],
                (None, Some(&hi)) => hi - x,
                (None, None) => 0.0,
            };
            w * d * d
        })
        .sum()
}

/// One table on the host.
struct Table {
    /// Its weights, row after row of its output columns.
    values: Vec<f32>,
    /// Effective sample weights.
    weights: Vec<f64>,
    /// The exact table when it has at most `k` distinct values (else Lloyd fits it).
    exact: Option<Vec<f32>>,
}

/// Every table's weights and points (shared with the seeding thread).
#[allow(clippy::too_many_arguments)]
fn prepare_tables(
    weights: &[f32],
    rows: usize,
    cols: usize,
    per_table: usize,
    n_tables: usize,
    sample_weights: Option<&[f32]>,
    excluded: Option<&[bool]>,
    k: usize,
) -> (Vec<Table>, Arc<Vec<Points>>) {
    // Points per table (a big table sorts on several threads).
    let inner = (threads() / n_tables.max(1)).max(1);
    let prepared = parallel_map(n_tables, |t| {
        let columns = t * per_table..(t + 1) * per_table;
        let idx: Vec<usize> = (0..rows).flat_map(|r| columns.clone().map(move |c| r * cols + c)).collect();
        let values: Vec<f32> = idx.iter().map(|&i| weights[i]).collect();
        let sample: Option<Vec<f32>> = sample_weights.map(|s| idx.iter().map(|&i| s[i]).collect());
        let excl: Option<Vec<bool>> = excluded.map(|e| idx.iter().map(|&i| e[i]).collect());
        let w = init::effective_weights(sample.as_deref(), excl.as_deref(), idx.len());
        let points = init::points_parallel(&values, &w, inner);
        let exact = (points.len() <= k).then(|| {
            let pad = points.x.last().copied().unwrap_or(0.0);
            let mut c: Vec<f32> = points.x.iter().map(|&v| v as f32).collect();
            c.resize(k, pad as f32);
            c
        });
        (Table { values, weights: w, exact }, points)
    });
    let (tables, points) = prepared.into_iter().unzip();
    (tables, Arc::new(points))
}

/// Threads for host work: all cores natively, one in the browser.
pub(crate) fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::available_parallelism().map_or(1, |p| p.get())
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

/// `(0..n).map(f)`, on several threads natively (tables are independent; each draws from its own
/// random stream, so the result does not depend on the thread count).
pub(crate) fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = threads().min(n);
        if threads > 1 {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let mut done: Vec<(usize, T)> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if i >= n {
                                    break mine;
                                }
                                mine.push((i, f(i)));
                            }
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
            });
            done.sort_by_key(|(i, _)| *i);
            return done.into_iter().map(|(_, v)| v).collect();
        }
    }
    (0..n).map(f).collect()
}

/// Consecutive groups of `items` whose `bytes` add up to at most `limit` (an item larger than
/// the limit gets a group of its own; [`lloyd_gpu`] then says it does not fit).
fn split_by_bytes(items: &[usize], bytes: impl Fn(usize) -> u64, limit: u64) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for &i in items {
        let b = bytes(i);
        match groups.last_mut() {
            Some(g) if used + b <= limit => g.push(i),
            _ => {
                groups.push(vec![i]);
                used = 0;
            }
        }
        used += b;
    }
    groups
}
