//! GPTQ and LDLQ on the GPU: the factorization, the row loop and the lazy batch updates of
//! `lutlab_core::quant::hessian::round_with_hessian` in f32 on burn's device, as GPTQ's authors
//! run them in PyTorch. The CPU version (f64, faer) stays the reference; the two are compared in
//! `tests/hessian_rounding_gpu.rs`.
//!
//! Both methods run in QuIP's LDL form (Theorem 6: LDLQ and GPTQ round alike), which needs one
//! Cholesky factor and no inverse: with `J` the reversal, `J H J = L Lᵀ` gives `H = R Rᵀ` for the
//! upper `R = J L J`, and `H = (Ú + I) D (Ú + I)ᵀ` with `Ú + I = R` with each column divided by its
//! pivot, `D` the pivots squared. The factor is blocked on the GPU and queued whole, no read-back
//! between its steps (or, on a native CPU adapter, computed by faer on the host;
//! [`Factorization`]). The rows are then rounded in batches of `blocksize` by
//! `shaders/ldl_round_rows.wgsl`, each batch's errors reaching the later rows in one matmul.
//!
//! The proxy loss comes out of the rounding itself: with `e` the targets' rounding errors,
//! `Δᵀ (H + λI) Δ = Σ_k D_k e_k²` exactly, so `tr(ΔW H ΔWᵀ)` is that sum less the damping's share
//! (and GPTQ's dead inputs'), with no product by `H` (on a 7B model's `down_proj`, that product
//! cost as much as the rounding).

use crate::device::{download, upload, Gpu};
use crate::error::{ModelError, Result};
use crate::gemm::model_matmul;
use crate::lut_linear::{kernel_id, primitive};
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Device, Int, Shape, Tensor};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::server::KernelArguments;
use lutlab_core::quant::hessian::{fit_uniform, Feedback, FittedGroups, Grid, Rounded, RoundingSettings, Square};
use lutlab_core::quant::uniform::{UniformGranularity, UniformSettings};
use lutlab_core::{profile, LoadError};

/// Width of the diagonal blocks of the GPU's Cholesky factor (`shaders/cholesky.wgsl`: one
/// workgroup of as many invocations holds a block in 16 KiB of workgroup memory).
const PANEL: usize = 64;
/// Threads per workgroup of the row kernel (its `@workgroup_size`).
const THREADS: u32 = 64;
/// "None" in the kernel's parameters.
const NONE: u32 = u32::MAX;

/// Rounds on the GPU what it can: GPTQ and LDLQ feedback onto fixed tables (k-means, or uniform
/// per channel or tensor) or uniform grids per input group (static or fitted as rows are
/// reached), without kept outliers or greedy passes; everything else declines to the CPU
/// reference.
pub struct GpuRounder {
    pub gpu: Gpu,
    pub factorization: Factorization,
}

/// Where the Hessian is factored before the GPU's row loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Factorization {
    /// faer, f64, on every core, then one upload.
    Host,
    /// Blocked and queued whole on the GPU ([`cholesky`], f32 as GPTQ's own code).
    Gpu,
}

impl Factorization {
    /// On the GPU, except on a native CPU adapter (lavapipe), where faer on the host is faster;
    /// `LUTLAB_GPTQ_FACTOR=gpu|host` overrides it natively (benchmarks).
    pub fn default_for(gpu: &Gpu) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        match std::env::var("LUTLAB_GPTQ_FACTOR").as_deref() {
            Ok("gpu") => return Factorization::Gpu,
            Ok("host") => return Factorization::Host,
            _ => {}
        }
        if gpu.is_cpu() && !cfg!(target_arch = "wasm32") {
            Factorization::Host
        } else {
            Factorization::Gpu
        }
    }
}

impl GpuRounder {
    /// A rounder factoring where [`Factorization::default_for`] its GPU says.
    pub fn new(gpu: Gpu) -> Self {
        Self { factorization: Factorization::default_for(&gpu), gpu }
    }

    /// Whether this case runs here (the CPU reference checks and refuses bad input itself).
    #[allow(clippy::too_many_arguments)]
    pub fn handles(&self, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, exact: Option<&[bool]>, settings: &RoundingSettings) -> bool {
        let grid_fits = match grid {
            Grid::Tables { levels, tables, channels_per_table } => {
                (1..=256).contains(levels)
                    && *channels_per_table > 0
                    && cols.is_multiple_of(*channels_per_table)
                    && tables.len() == cols / channels_per_table * levels
                    && tables.iter().all(|v| v.is_finite())
            }
            // Groups fitted as rows are reached need rows in their own order (the CPU refuses
            // act-order without static groups, by name).
            Grid::InputGroups { size, settings: uniform, static_groups } => {
                (*static_groups || !settings.act_order)
                    && UniformGranularity::InputGroup(*size).groups(rows, cols).is_ok()
                    && UniformSettings { granularity: UniformGranularity::Channel, ..*uniform }.validate(*size, cols).is_ok()
                    && uniform.levels() <= 256
            }
        };
        // An empty layer has nothing to round (and a GPU buffer of no bytes is an error).
        let fits = rows > 0 && cols > 0 && (rows * rows * 4) as u64 <= self.gpu.max_binding_bytes() && rows < 1 << 16;
        matches!(settings.feedback, Feedback::Gptq | Feedback::Ldlq)
            && settings.greedy_passes == 0
            && settings.blocksize > 0
            && settings.percdamp.is_finite()
            && settings.percdamp >= 0.0
            && exact.is_none()
            && fits
            && grid_fits
            && weights.len() == rows * cols
            && h.n == rows
            && weights.iter().all(|w| w.is_finite())
            && h.data.iter().all(|v| v.is_finite())
            && h.diagonal().iter().all(|&d| d >= 0.0)
    }

    /// The rounding of this case on the GPU, or `None` where it [`handles`](Self::handles) not.
    /// Async, so the page awaits the GPU (`lutlab_core::quant::quantize_layer_rounded_by`).
    #[allow(clippy::too_many_arguments)]
    pub async fn round_async(&self, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, exact: Option<&[bool]>, settings: &RoundingSettings) -> Option<lutlab_core::Result<Rounded>> {
        if !self.handles(weights, rows, cols, h, grid, exact, settings) {
            return None;
        }
        let rounded = round_on_gpu(&self.gpu.device, self.factorization, weights, rows, cols, h, grid, settings).await;
        Some(rounded.map_err(|e| match e {
            ModelError::Load(e) => e,
            e => LoadError::InvalidSetting(format!("rounding on the GPU: {e}")),
        }))
    }
}

/// Natively the core's synchronous layer loop (`quantize --gpu`) blocks on the GPU.
#[cfg(not(target_arch = "wasm32"))]
impl lutlab_core::quant::hessian::HessianRounder for GpuRounder {
    fn round(&self, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, exact: Option<&[bool]>, settings: &RoundingSettings) -> Option<lutlab_core::Result<Rounded>> {
        pollster::block_on(self.round_async(weights, rows, cols, h, grid, exact, settings))
    }
}

/// The tables each row rounds to, in processing order.
enum RowTables<'a> {
    /// The same `tables` (`levels` entries, `channels_per_table` channels each) for every row; with
    /// `row_groups` (static input groups), processing row `k` uses set `row_groups[k]` of
    /// `cols / channels_per_table` tables.
    Fixed { levels: usize, tables: &'a [f32], channels_per_table: usize, row_groups: Option<Vec<usize>> },
    /// GPTQ's dynamic input groups: a uniform grid per channel fitted on each group's `size`
    /// rows as updated, when the loop reaches them (rows in their own order), their tables
    /// `[groups, cols]` returned by the loop. `gptq_state`: the rows as GPTQ's own updates leave
    /// them (see [`gptq_state`]), else as LDLQ's.
    Fitted { size: usize, settings: UniformSettings, gptq_state: bool },
}

impl RowTables<'_> {
    fn levels(&self) -> usize {
        match self {
            RowTables::Fixed { levels, .. } => *levels,
            RowTables::Fitted { settings, .. } => settings.levels(),
        }
    }

    /// Channels sharing a table (a fitted group has one per channel).
    fn channels_per_table(&self) -> usize {
        match self {
            RowTables::Fixed { channels_per_table, .. } => *channels_per_table,
            RowTables::Fitted { .. } => 1,
        }
    }

    /// Where processing row `k`, channel `c`'s table starts: in the fixed tables, or in the
    /// fitted groups' tables.
    fn table_of(&self, k: usize, c: usize, cols: usize) -> usize {
        let set = match self {
            RowTables::Fixed { row_groups, .. } => row_groups.as_ref().map_or(0, |groups| groups[k]),
            RowTables::Fitted { size, .. } => k / size,
        };
        let per_table = self.channels_per_table();
        (set * (cols / per_table) + c / per_table) * self.levels()
    }
}

/// GPTQ/LDLQ rounding of `weights` (`[rows, cols]`) onto `grid` through `h`, damped and ordered as
/// the CPU reference does (dead inputs, `percdamp` · mean diagonal, raised tenfold once if the
/// factor fails, act-order); input groups fitted as the CPU reference fits them.
#[allow(clippy::too_many_arguments)]
pub async fn round_on_gpu(device: &Device, factorization: Factorization, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, settings: &RoundingSettings) -> Result<Rounded> {
    let n = rows;
    // GPTQ's dead inputs (never fired): H[k,k] = 1 and their weights zeroed.
    let dead: Vec<bool> = (0..n).map(|k| h.at(k, k) == 0.0).collect();
    let w: Vec<f32> = weights.chunks_exact(cols).zip(&dead).flat_map(|(row, &d)| row.iter().map(move |&v| if d { 0.0 } else { v })).collect();
    let diagonal: Vec<f64> = (0..n).map(|k| if dead[k] { 1.0 } else { h.at(k, k) }).collect();
    let mean = diagonal.iter().sum::<f64>() / n as f64;
    // Static groups are fitted on the weights as given, before any rounding (as the CPU does).
    let static_fit = match grid {
        Grid::InputGroups { size, settings: uniform, static_groups: true } => Some(fit_uniform(weights, rows, cols, uniform, UniformGranularity::InputGroup(*size))?),
        _ => None,
    };
    for factor in [1.0, 10.0] {
        let lambda = factor * settings.percdamp * mean;
        let mut order: Vec<usize> = (0..n).collect();
        if settings.act_order {
            let damped: Vec<f64> = diagonal.iter().map(|d| d + lambda).collect();
            order.sort_by(|&a, &b| damped[b].total_cmp(&damped[a]));
        }
        let row_tables = match (grid, &static_fit) {
            (Grid::Tables { levels, tables, channels_per_table }, _) => RowTables::Fixed { levels: *levels, tables, channels_per_table: *channels_per_table, row_groups: None },
            (Grid::InputGroups { size, settings: uniform, .. }, Some(fit)) => {
                RowTables::Fixed { levels: uniform.levels(), tables: &fit.tables, channels_per_table: 1, row_groups: Some(order.iter().map(|&r| r / size).collect()) }
            }
            (Grid::InputGroups { size, settings: uniform, .. }, None) => RowTables::Fitted { size: *size, settings: *uniform, gptq_state: settings.feedback == Feedback::Gptq },
        };
        let phase = profile::start();
        let factored = shared_ldl_factor(device, factorization, h, &diagonal, lambda, &order, [settings.percdamp.to_bits(), u64::from(settings.act_order), factor.to_bits(), factorization as u64]).await?;
        profile::stop("host: GPU rounding: damping and factor", phase);
        profile::span(|| format!("  {n}x{cols} damping and factor"), phase);
        let Some((ldl, pivots)) = &factored.0 else { continue };
        let phase = profile::start();
        let rounded = round_rows(device, &w, n, cols, &order, ldl.clone(), pivots.clone(), &row_tables, settings.blocksize).await?;
        profile::stop("host: GPU rounding: row loop", phase);
        profile::span(|| format!("  {n}x{cols} row loop"), phase);
        // The GPU's factor is checked here, its pivots read back with the codes: one wait.
        if !factor_succeeded(&rounded.pivots) {
            continue;
        }
        // Back to the original row order, and the proxy loss against the undamped `H`.
        let phase = profile::start();
        let tables = match &row_tables {
            RowTables::Fixed { tables, .. } => tables,
            RowTables::Fitted { .. } => rounded.fitted_tables.as_slice(),
        };
        // Each original row from its place in processing order, rows split over the cores.
        let mut position = vec![0; n];
        order.iter().enumerate().for_each(|(k, &row)| position[row] = k);
        let gathered = lutlab_core::parallel::map_ranges(n, |rows| {
            let (mut codes, mut values) = (Vec::with_capacity(rows.len() * cols), Vec::with_capacity(rows.len() * cols));
            let (mut damping, mut dead_share) = (0.0, 0.0);
            for row in rows {
                let k = position[row];
                for c in 0..cols {
                    let code = rounded.codes[k * cols + c];
                    let value = tables[row_tables.table_of(k, c, cols) + code as usize];
                    codes.push(code as u8);
                    values.push(value);
                    let delta = f64::from(w[row * cols + c]) - f64::from(value);
                    damping += delta * delta;
                    if dead[row] {
                        dead_share += delta * delta;
                    }
                }
            }
            (codes, values, damping, dead_share)
        });
        let (mut out_codes, mut values) = (Vec::with_capacity(n * cols), Vec::with_capacity(n * cols));
        let (mut damping, mut dead_share) = (0.0, 0.0);
        for (codes, vals, d, dead) in gathered {
            out_codes.extend_from_slice(&codes);
            values.extend_from_slice(&vals);
            damping += d;
            dead_share += dead;
        }
        let proxy_loss = (rounded.loss.iter().map(|&l| f64::from(l)).sum::<f64>() - lambda * damping - dead_share).max(0.0);
        profile::stop("host: GPU rounding: codes gathered, proxy loss", phase);
        profile::span(|| format!("  {n}x{cols} codes gathered, proxy loss"), phase);
        let groups = static_fit.map(|fit| FittedGroups { scales: fit.scales, zero_points: fit.zero_points }).or(rounded.fitted);
        return Ok(Rounded { codes: out_codes, values, proxy_loss, groups });
    }
    Err(ModelError::Load(LoadError::InvalidSetting(format!(
        "the Hessian is not positive definite even with damping {} (10 × percdamp {}): raise --percdamp or calibrate on more text",
        10.0 * settings.percdamp,
        settings.percdamp
    ))))
}

/// [`ldl_factor`]'s result, shared by the layers that read one input (`quant::hessian::shared`).
struct GpuFactor(Option<(Tensor<2>, Tensor<1>)>);

/// Whether a factor's pivots (read back after the row loop) are all positive: the GPU's marks a
/// failed one 0.
fn factor_succeeded(pivots: &[f32]) -> bool {
    pivots.iter().all(|p| *p > 0.0 && p.is_finite())
}

/// [`ldl_factor`], computed once for the layers given the same shared Hessian (natively; the
/// page rounds one layer at a time and factors each). `key`: what the factor depends on besides
/// `h` (damping, act-order, the damping's attempt, where it is factored).
async fn shared_ldl_factor(device: &Device, factorization: Factorization, h: &Square, diagonal: &[f64], lambda: f64, order: &[usize], key: [u64; 4]) -> Result<std::sync::Arc<GpuFactor>> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        lutlab_core::quant::hessian::shared::factor_of(h, key.to_vec(), || pollster::block_on(ldl_factor(device, factorization, h, diagonal, lambda, order)).map(GpuFactor))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = key;
        Ok(std::sync::Arc::new(GpuFactor(ldl_factor(device, factorization, h, diagonal, lambda, order).await?)))
    }
}

/// QuIP's `Ú` (as a full `[n, n]` tensor whose strictly upper part is used) and the pivots `√D`
/// of the damped Hessian in processing order, on the GPU; `None` when the host's factor finds it
/// not positive definite. The GPU's factor is not read back here (no wait): a failed one has a
/// zero pivot, which [`factor_succeeded`] finds after the row loop.
async fn ldl_factor(device: &Device, factorization: Factorization, h: &Square, diagonal: &[f64], lambda: f64, order: &[usize]) -> Result<Option<(Tensor<2>, Tensor<1>)>> {
    if factorization == Factorization::Host {
        return Ok(host_ldl_factor(h, diagonal, lambda, order).map(|(unit_upper, pivots)| (upload(&unit_upper, [h.n, h.n], device), upload(&pivots, [h.n], device))));
    }
    let n = h.n;
    let phase = profile::start();
    // J H J in processing order: row i is original row order[n − 1 − i].
    let reversed: Vec<usize> = order.iter().rev().copied().collect();
    let p = upload(&damped_in_order(h, diagonal, lambda, &reversed, 0f32, |v| v as f32), [n, n], device);
    profile::stop("host: GPU rounding: … of which the damped Hessian ordered and uploaded", phase);
    let (l, diagonal_of_l) = cholesky(p, n)?;
    // R = J L J; Ú + I = R with column j divided by R[j, j] = L[n−1−j, n−1−j].
    let pivots = diagonal_of_l.flip([0]);
    let unit_upper = l.flip([0, 1]) / pivots.clone().reshape([1, n]);
    Ok(Some((unit_upper, pivots)))
}

/// [`ldl_factor`] on the host in f64: `Ú` (`[n, n]` row-major, strictly upper) and the pivots
/// `√D`, or `None` when the damped Hessian is not positive definite.
fn host_ldl_factor(h: &Square, diagonal: &[f64], lambda: f64, order: &[usize]) -> Option<(Vec<f32>, Vec<f32>)> {
    let damped = Square { n: h.n, data: damped_in_order(h, diagonal, lambda, order, 0f64, |v| v) };
    let (unit_upper, d) = lutlab_core::quant::hessian::linalg::ldl_upper(&damped)?;
    Some((unit_upper.data.iter().map(|&v| v as f32).collect(), d.iter().map(|d| d.sqrt() as f32).collect()))
}

/// The damped Hessian (`h` with `diagonal + lambda` on its diagonal) with its rows and columns in
/// `order`, row-major, each entry converted by `to`; rows gathered on every core.
fn damped_in_order<T: Copy + Send>(h: &Square, diagonal: &[f64], lambda: f64, order: &[usize], zero: T, to: impl Fn(f64) -> T + Sync) -> Vec<T> {
    let n = h.n;
    let mut out = vec![zero; n * n];
    lutlab_core::parallel::for_row_chunks(&mut out, n, |first, chunk| {
        for (i, row) in chunk.chunks_exact_mut(n).enumerate() {
            let r = order[first + i];
            for (j, &c) in order.iter().enumerate() {
                row[j] = to(if r == c { diagonal[r] + lambda } else { h.at(r, c) });
            }
        }
    });
    out
}

/// The GPU's lower Cholesky factor of the symmetric `a` (`[n, n]` row-major, f32), the one
/// GPTQ's GPU factorization uses: `L` (row-major, zero above the diagonal) and its diagonal, or
/// `None` when `a` is not positive definite in f32 (`tests/hessian_rounding_gpu.rs` against faer).
pub async fn cholesky_on_gpu(a: &[f32], n: usize, device: &Device) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let (l, diagonal) = cholesky(upload(a, [n, n], device), n)?;
    let diagonal = download(diagonal).await?;
    Ok(factor_succeeded(&diagonal).then_some((download(l).await?, diagonal)))
}

/// The lower Cholesky factor of the symmetric `a` (`[n, n]`, consumed) and its diagonal, blocked
/// right-looking and queued whole on the GPU (`shaders/cholesky.wgsl`): each 64-wide diagonal
/// block factored by one workgroup, the panel below it solved by a kernel, the trailing matrix
/// updated by a matmul. Nothing is read back: a pivot that is not positive is 0 in the diagonal.
fn cholesky(a: Tensor<2>, n: usize) -> Result<(Tensor<2>, Tensor<1>)> {
    let mut a = contiguous(a)?;
    let client = a.client.clone();
    let pivots = client.empty(n * 4);
    for k0 in (0..n).step_by(PANEL) {
        let k1 = (k0 + PANEL).min(n);
        let params = [n, k0, k1 - k0].map(|v| v as u32);
        // The kernels write into `a` in place: a buffer nothing else holds.
        if !a.can_mut() {
            a = burn::backend::wgpu::into_contiguous(a.copy());
        }
        crate::fused::launch(&client, CholeskyStep { panel: false }, PANEL as u32, (1, 1), [a.handle.clone(), pivots.clone()], &params);
        if k1 < n {
            crate::fused::launch(&client, CholeskyStep { panel: true }, PANEL as u32, ((n - k1).div_ceil(PANEL), 1), [a.handle.clone(), pivots.clone()], &params);
            // A22 −= L21 L21ᵀ.
            let whole = Tensor::<2>::from_primitive::<Wgpu>(a);
            let l21 = whole.clone().slice([k1..n, k0..k1]);
            let trailing = whole.clone().slice([k1..n, k1..n]) - model_matmul(l21.clone(), l21.transpose());
            a = contiguous(whole.slice_assign([k1..n, k1..n], trailing))?;
        }
    }
    let pivots = CubeTensor::new_contiguous(client, a.device.clone(), Shape::new([n]), pivots, DType::F32);
    // The strictly upper part still holds the input.
    Ok((Tensor::<2>::from_primitive::<Wgpu>(a).tril(0), Tensor::from_primitive::<Wgpu>(pivots)))
}

/// What the row loop found: each weight's code (rows in processing order, into the tables
/// [`RowTables::table_of`] names), each channel's `Σ_k D_k e_k²`, and for dynamic input groups
/// the tables fitted (`[groups, cols]`, `levels` entries each) with their scales and zero points.
struct RowLoop {
    codes: Vec<u32>,
    /// The factor's pivots, read back with the codes.
    pivots: Vec<f32>,
    loss: Vec<f32>,
    fitted_tables: Vec<f32>,
    fitted: Option<FittedGroups>,
}

/// The row loop: `w`'s rows taken in `order`, rounded in batches of `blocksize` by the kernel,
/// each batch's errors added to the rows after it by one matmul. A dynamic input group ends a
/// batch where it starts (as the CPU reference), and is fitted there on its rows as updated, on
/// the host by the reference's own `fit_uniform`.
#[allow(clippy::too_many_arguments)]
async fn round_rows(
    device: &Device,
    w: &[f32],
    n: usize,
    m: usize,
    order: &[usize],
    unit_upper: Tensor<2>,
    pivots: Tensor<1>,
    row_tables: &RowTables<'_>,
    blocksize: usize,
) -> Result<RowLoop> {
    let ordered: Vec<f32> = order.iter().flat_map(|&r| w[r * m..(r + 1) * m].iter().copied()).collect();
    let weights = contiguous(upload(&ordered, [n, m], device))?;
    let mut targets = upload(&ordered, [n, m], device);
    let coefficients = contiguous(unit_upper.clone())?;
    let client = weights.client.clone();
    let codes = client.empty(n * m * 4);
    let loss = contiguous(Tensor::<1>::zeros([m], device))?;
    // aux = tables | pivots | each row's table set (as f32: exact below 2^24). Fixed tables go
    // up once; fitted groups put their tables up per group.
    // The pivots join on the GPU, where the factor left them.
    let aux_of = |tables: &[f32], row_sets: Option<&[usize]>| -> Result<(CubeTensor, u32, u32)> {
        let mut parts = vec![upload(tables, [tables.len()], device), pivots.clone()];
        let sets_at = match row_sets {
            Some(sets) => {
                parts.push(upload(&sets.iter().map(|&g| g as f32).collect::<Vec<_>>(), [sets.len()], device));
                (tables.len() + n) as u32
            }
            None => NONE,
        };
        Ok((contiguous(Tensor::cat(parts, 0))?, tables.len() as u32, sets_at))
    };
    let (levels, channels_per_table) = (row_tables.levels(), row_tables.channels_per_table());
    let group_size = match row_tables {
        RowTables::Fixed { .. } => n,
        RowTables::Fitted { size, .. } => *size,
    };
    let mut aux = match row_tables {
        RowTables::Fixed { tables, row_groups, .. } => Some(aux_of(tables, row_groups.as_deref())?),
        RowTables::Fitted { .. } => None,
    };
    let (mut fitted_tables, mut scales, mut zero_points) = (Vec::new(), Vec::new(), Vec::new());
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + blocksize).min(n).min((k0 / group_size + 1) * group_size);
        if let RowTables::Fitted { size, settings, gptq_state: as_gptq } = row_tables
            && k0.is_multiple_of(*size)
        {
            let rows = (*size).min(n - k0);
            let mut slice = download(targets.clone().slice([k0..k0 + rows, 0..m])).await?;
            if *as_gptq && k0 > 0 {
                let block = download(unit_upper.clone().slice([k0..k0 + rows, k0..k0 + rows])).await?;
                slice = gptq_state(&ordered[k0 * m..(k0 + rows) * m], &slice, &block, m);
            }
            let fit = fit_uniform(&slice, rows, m, settings, UniformGranularity::Channel)?;
            aux = Some(aux_of(&fit.tables, None)?);
            fitted_tables.extend_from_slice(&fit.tables);
            scales.extend_from_slice(&fit.scales);
            zero_points.extend_from_slice(&fit.zero_points);
        }
        let (aux, pivots_at, sets_at) = aux.as_ref().ok_or_else(|| ModelError::Gpu("no tables for the row loop".into()))?;
        let t = contiguous(targets)?;
        let errors = client.empty((k1 - k0) * m * 4);
        let params = [n as u32, m as u32, k0 as u32, k1 as u32, levels as u32, channels_per_table as u32, *pivots_at, *sets_at];
        let arguments = KernelArguments::new()
            .with_buffer(t.handle.clone().binding())
            .with_buffer(weights.handle.clone().binding())
            .with_buffer(coefficients.handle.clone().binding())
            .with_buffer(aux.handle.clone().binding())
            .with_buffer(codes.clone().binding())
            .with_buffer(loss.handle.clone().binding())
            .with_buffer(errors.clone().binding())
            .with_buffer(client.create_from_slice(bytemuck::cast_slice(&params)).binding());
        let grid = CubeCount::Static((m as u32).div_ceil(THREADS), 1, 1);
        client.launch(Box::new(SourceKernel::new(RoundRows, CubeDim::new_1d(THREADS))), grid, arguments);
        targets = Tensor::from_primitive::<Wgpu>(t);
        if k1 < n {
            // GPTQ's lazy batch update: rows k1.. += Ú[k0..k1, k1..]ᵀ · errors.
            let errors = Tensor::<2>::from_primitive::<Wgpu>(CubeTensor::new_contiguous(client.clone(), weights.device.clone(), Shape::new([k1 - k0, m]), errors, DType::F32));
            let feedback = model_matmul(unit_upper.clone().slice([k0..k1, k1..n]).transpose(), errors);
            let later = targets.clone().slice([k1..n, 0..m]) + feedback;
            targets = targets.slice_assign([k1..n, 0..m], later);
        }
        k0 = k1;
    }
    let codes = CubeTensor::new_contiguous(client, weights.device.clone(), Shape::new([n * m]), codes, DType::I32);
    let codes = Tensor::<1, Int>::from_primitive::<Wgpu>(codes).into_data_async().await.map_err(|e| ModelError::Gpu(e.to_string()))?;
    // The kernel writes u32 codes into an i32 buffer: read its bytes as they are.
    let codes: Vec<u32> = codes.as_slice::<i32>().map_err(|e| ModelError::Gpu(format!("{e:?}")))?.iter().map(|&c| c as u32).collect();
    let loss = download(Tensor::<1>::from_primitive::<Wgpu>(loss)).await?;
    let pivots = download(pivots).await?;
    let fitted = matches!(row_tables, RowTables::Fitted { .. }).then_some(FittedGroups { scales, zero_points });
    Ok(RowLoop { codes, pivots, loss, fitted_tables, fitted })
}

/// A group's rows as GPTQ's updates leave them when the loop reaches the group, from the same rows
/// as QuIP's LDL updates leave them (`targets`, `[s, m]`; `weights` as given). Both forms round
/// every row alike (QuIP's Theorem 6) but differ on rows not yet reached, which a dynamic group's
/// fit sees. With `H = (I + Ú) D (I + Ú)ᵀ` split into the rounded rows F and the rest R, GPTQ's
/// rows are `w_R + H_RR⁻¹ H_RF (w_F − q_F) = w_R + C⁻ᵀ Bᵀ (w_F − q_F)` with `C = (I + Ú)_RR`,
/// `B = Ú_FR`, and LDL's are `w_R + Bᵀ (w_F − q_F)`; on the group's leading rows of R,
/// `C⁻ᵀ` is the inverse of its leading block, `(I + Ú_GG)⁻ᵀ` (`block`, `[s, s]`, its strictly
/// upper part): one triangular solve per group, on the host in f64.
fn gptq_state(weights: &[f32], targets: &[f32], block: &[f32], m: usize) -> Vec<f32> {
    let s = targets.len() / m;
    let mut x: Vec<f64> = targets.iter().zip(weights).map(|(&t, &w)| f64::from(t) - f64::from(w)).collect();
    // (I + Ú_GG)ᵀ is unit lower: forward substitution, x_i −= Σ_{k<i} Ú_ki x_k.
    for i in 1..s {
        let (done, rest) = x.split_at_mut(i * m);
        let row = &mut rest[..m];
        for k in 0..i {
            let a = f64::from(block[k * s + i]);
            if a != 0.0 {
                row.iter_mut().zip(&done[k * m..(k + 1) * m]).for_each(|(v, &xk)| *v -= a * xk);
            }
        }
    }
    x.iter().zip(weights).map(|(&d, &w)| (f64::from(w) + d) as f32).collect()
}

fn contiguous<const D: usize>(t: Tensor<D>) -> Result<CubeTensor> {
    Ok(burn::backend::wgpu::into_contiguous(primitive(t)?))
}

/// `shaders/cholesky.wgsl`: a diagonal block's factor, or the panel below it.
#[derive(Debug)]
struct CholeskyStep {
    panel: bool,
}

impl KernelSource for CholeskyStep {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/cholesky.wgsl")).register("panel", self.panel.to_string())
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>().info(self.panel)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// `shaders/ldl_round_rows.wgsl`.
#[derive(Debug)]
struct RoundRows;

impl KernelSource for RoundRows {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/ldl_round_rows.wgsl"))
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>()
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
