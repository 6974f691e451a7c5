//! GPTQ and LDLQ on the GPU: the factorization, the row loop and the lazy batch updates of
//! `lutlab_core::quant::hessian::round_with_hessian` in f32 on burn's device, as GPTQ's authors
//! run them in PyTorch. The CPU version (f64, faer) stays the reference; the two are compared in
//! `tests/hessian_rounding_gpu.rs`.
//!
//! Both methods run in QuIP's LDL form (Theorem 6: LDLQ and GPTQ round alike), which needs one
//! Cholesky factor and no inverse: with `J` the reversal, `J H J = L Lᵀ` gives `H = R Rᵀ` for the
//! upper `R = J L J`, and `H = (Ú + I) D (Ú + I)ᵀ` with `Ú + I = R` with each column divided by its
//! pivot, `D` the pivots squared. The Cholesky factor is blocked: each 256-wide diagonal block is
//! factored on the host in f64, the panel below it and the trailing matrix are updated by burn's
//! matmul. The rows are then rounded in batches of `blocksize` by `shaders/ldl_round_rows.wgsl`,
//! each batch's errors reaching the later rows in one matmul.
//!
//! The proxy loss comes out of the rounding itself: with `e` the targets' rounding errors,
//! `Δᵀ (H + λI) Δ = Σ_k D_k e_k²` exactly, so `tr(ΔW H ΔWᵀ)` is that sum less the damping's share
//! (and GPTQ's dead inputs'), with no product by `H` (on a 7B model's `down_proj`, that product
//! cost as much as the rounding).

use crate::device::{download, upload, Gpu};
use crate::error::{ModelError, Result};
use crate::lut_linear::primitive;
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Device, Int, Shape, Tensor};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::server::KernelArguments;
use lutlab_core::quant::hessian::linalg::{cholesky_lower, lower_inverse};
use lutlab_core::quant::hessian::{Feedback, Grid, Rounded, RoundingSettings, Square};
use lutlab_core::{profile, LoadError};

/// Width of the diagonal blocks factored on the host.
const PANEL: usize = 256;
/// Threads per workgroup of the row kernel (its `@workgroup_size`).
const THREADS: u32 = 64;

/// Rounds on the GPU what it can: GPTQ and LDLQ feedback onto fixed tables (k-means, or uniform
/// per channel or tensor), without kept outliers or greedy passes; everything else declines to
/// the CPU reference.
pub struct GpuRounder {
    pub gpu: Gpu,
}

impl GpuRounder {
    /// Whether this case runs here (the CPU reference checks and refuses bad input itself).
    #[allow(clippy::too_many_arguments)]
    pub fn handles(&self, weights: &[f32], rows: usize, cols: usize, h: &Square, grid: &Grid, exact: Option<&[bool]>, settings: &RoundingSettings) -> bool {
        let Grid::Tables { levels, tables, channels_per_table } = grid else { return false };
        let fits = (rows * rows * 4) as u64 <= self.gpu.max_binding_bytes() && rows < 1 << 16;
        matches!(settings.feedback, Feedback::Gptq | Feedback::Ldlq)
            && settings.greedy_passes == 0
            && settings.blocksize > 0
            && settings.percdamp.is_finite()
            && settings.percdamp >= 0.0
            && exact.is_none()
            && fits
            && (1..=256).contains(levels)
            && *channels_per_table > 0
            && cols.is_multiple_of(*channels_per_table)
            && tables.len() == cols / channels_per_table * levels
            && tables.iter().all(|v| v.is_finite())
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
        let Grid::Tables { levels, tables, channels_per_table } = grid else { return None };
        let rounded = round_on_gpu(&self.gpu.device, weights, rows, cols, h, (*levels, tables, *channels_per_table), settings).await;
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

/// GPTQ/LDLQ rounding of `weights` (`[rows, cols]`) onto `tables` (`levels` entries per table,
/// `channels_per_table` channels each) through `h`, damped and ordered as the CPU reference does
/// (dead inputs, `percdamp` · mean diagonal, raised tenfold once if the factor fails,
/// act-order).
pub async fn round_on_gpu(
    device: &Device,
    weights: &[f32],
    rows: usize,
    cols: usize,
    h: &Square,
    (levels, tables, channels_per_table): (usize, &[f32], usize),
    settings: &RoundingSettings,
) -> Result<Rounded> {
    let n = rows;
    // GPTQ's dead inputs (never fired): H[k,k] = 1 and their weights zeroed.
    let dead: Vec<bool> = (0..n).map(|k| h.at(k, k) == 0.0).collect();
    let w: Vec<f32> = weights.chunks_exact(cols).zip(&dead).flat_map(|(row, &d)| row.iter().map(move |&v| if d { 0.0 } else { v })).collect();
    let diagonal: Vec<f64> = (0..n).map(|k| if dead[k] { 1.0 } else { h.at(k, k) }).collect();
    let mean = diagonal.iter().sum::<f64>() / n as f64;
    for factor in [1.0, 10.0] {
        let lambda = factor * settings.percdamp * mean;
        let mut order: Vec<usize> = (0..n).collect();
        if settings.act_order {
            let damped: Vec<f64> = diagonal.iter().map(|d| d + lambda).collect();
            order.sort_by(|&a, &b| damped[b].total_cmp(&damped[a]));
        }
        let phase = profile::start();
        let factored = ldl_factor(device, h, &diagonal, lambda, &order).await?;
        profile::stop("host: GPU rounding: damping and factor", phase);
        let Some((ldl, pivots)) = factored else { continue };
        let phase = profile::start();
        let (codes, loss) = round_rows(device, &w, n, cols, &order, ldl, &pivots, (levels, tables, channels_per_table), settings.blocksize).await?;
        profile::stop("host: GPU rounding: row loop", phase);
        // Back to the original row order, and the proxy loss against the undamped `H`.
        let mut out_codes = vec![0u8; n * cols];
        let mut values = vec![0f32; n * cols];
        let (mut damping, mut dead_share) = (0.0, 0.0);
        for (k, &row) in order.iter().enumerate() {
            for c in 0..cols {
                let code = codes[k * cols + c];
                let value = tables[c / channels_per_table * levels + code as usize];
                out_codes[row * cols + c] = code as u8;
                values[row * cols + c] = value;
                let delta = f64::from(w[row * cols + c]) - f64::from(value);
                damping += delta * delta;
                if dead[row] {
                    dead_share += delta * delta;
                }
            }
        }
        let proxy_loss = (loss.iter().map(|&l| f64::from(l)).sum::<f64>() - lambda * damping - dead_share).max(0.0);
        return Ok(Rounded { codes: out_codes, values, proxy_loss, groups: None });
    }
    Err(ModelError::Load(LoadError::InvalidSetting(format!(
        "the Hessian is not positive definite even with damping {} (10 × percdamp {}): raise --percdamp or calibrate on more text",
        10.0 * settings.percdamp,
        settings.percdamp
    ))))
}

/// QuIP's `Ú` (as a full `[n, n]` tensor whose strictly upper part is used) and the pivots `√D`
/// of the damped Hessian in processing order; `None` when it is not positive definite in f32.
async fn ldl_factor(device: &Device, h: &Square, diagonal: &[f64], lambda: f64, order: &[usize]) -> Result<Option<(Tensor<2>, Vec<f32>)>> {
    let n = h.n;
    // J H J in processing order: row i is original row order[n − 1 − i].
    let reversed: Vec<usize> = order.iter().rev().copied().collect();
    let mut p = vec![0f32; n * n];
    lutlab_core::parallel::for_row_chunks(&mut p, n, |first, chunk| {
        for (i, out) in chunk.chunks_exact_mut(n).enumerate() {
            let r = reversed[first + i];
            for (j, &c) in reversed.iter().enumerate() {
                out[j] = if r == c { (diagonal[r] + lambda) as f32 } else { h.at(r, c) as f32 };
            }
        }
    });
    let Some((l, diagonal_of_l)) = cholesky(upload(&p, [n, n], device), n, device).await? else { return Ok(None) };
    // R = J L J; Ú + I = R with column j divided by R[j, j] = L[n−1−j, n−1−j].
    let pivots: Vec<f32> = diagonal_of_l.iter().rev().map(|&d| d as f32).collect();
    let unit_upper = l.flip([0, 1]) / upload(&pivots, [1, n], device);
    Ok(Some((unit_upper, pivots)))
}

/// The lower Cholesky factor of the symmetric `a` (`[n, n]`, consumed) and its diagonal, blocked
/// right-looking: each diagonal block factored on the host in f64, the panel below it solved and
/// the trailing matrix updated by matmuls on the GPU. `None` when a block is not positive
/// definite.
async fn cholesky(a: Tensor<2>, n: usize, device: &Device) -> Result<Option<(Tensor<2>, Vec<f64>)>> {
    let mut a = a;
    let mut diagonal = vec![0.0; n];
    for k0 in (0..n).step_by(PANEL) {
        let k1 = (k0 + PANEL).min(n);
        let b = k1 - k0;
        let block = download(a.clone().slice([k0..k1, k0..k1])).await?;
        let Some(l11) = cholesky_lower(&Square::from_f32(b, &block)?) else { return Ok(None) };
        (0..b).for_each(|i| diagonal[k0 + i] = l11.at(i, i));
        let as_f32 = |m: &Square| m.data.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        a = a.slice_assign([k0..k1, k0..k1], upload(&as_f32(&l11), [b, b], device));
        if k1 < n {
            // A21 = L21 L11ᵀ, so L21 = A21 L11⁻ᵀ; then A22 −= L21 L21ᵀ.
            let inverse_transposed = upload(&as_f32(&lower_inverse(&l11).transpose()), [b, b], device);
            let l21 = a.clone().slice([k1..n, k0..k1]).matmul(inverse_transposed);
            let trailing = a.clone().slice([k1..n, k1..n]) - l21.clone().matmul(l21.clone().transpose());
            a = a.slice_assign([k1..n, k0..k1], l21).slice_assign([k1..n, k1..n], trailing);
        }
    }
    // The strictly upper part still holds the input.
    Ok(Some((a.tril(0), diagonal)))
}

/// The row loop: `w`'s rows taken in `order`, rounded in batches of `blocksize` by the kernel,
/// each batch's errors added to the rows after it by one matmul. Returns the codes (rows in
/// processing order) and each channel's `Σ_k D_k e_k²`.
#[allow(clippy::too_many_arguments)]
async fn round_rows(
    device: &Device,
    w: &[f32],
    n: usize,
    m: usize,
    order: &[usize],
    unit_upper: Tensor<2>,
    pivots: &[f32],
    (levels, tables, channels_per_table): (usize, &[f32], usize),
    blocksize: usize,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let ordered: Vec<f32> = order.iter().flat_map(|&r| w[r * m..(r + 1) * m].iter().copied()).collect();
    let weights = contiguous(upload(&ordered, [n, m], device))?;
    let mut targets = upload(&ordered, [n, m], device);
    let coefficients = contiguous(unit_upper.clone())?;
    let aux: Vec<f32> = tables.iter().chain(pivots).copied().collect();
    let aux = contiguous(upload(&aux, [aux.len()], device))?;
    let client = weights.client.clone();
    let codes = client.empty(n * m * 4);
    let loss = contiguous(Tensor::<1>::zeros([m], device))?;
    for k0 in (0..n).step_by(blocksize) {
        let k1 = (k0 + blocksize).min(n);
        let t = contiguous(targets)?;
        let errors = client.empty((k1 - k0) * m * 4);
        let params = [n, m, k0, k1, levels, channels_per_table, tables.len()].map(|v| v as u32);
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
            let feedback = unit_upper.clone().slice([k0..k1, k1..n]).transpose().matmul(errors);
            let later = targets.clone().slice([k1..n, 0..m]) + feedback;
            targets = targets.slice_assign([k1..n, 0..m], later);
        }
    }
    let codes = CubeTensor::new_contiguous(client, weights.device.clone(), Shape::new([n * m]), codes, DType::I32);
    let codes = Tensor::<1, Int>::from_primitive::<Wgpu>(codes).into_data_async().await.map_err(|e| ModelError::Gpu(e.to_string()))?;
    let codes: Vec<u32> = codes.iter::<i64>().map(|c| c as u32).collect();
    let loss = download(Tensor::<1>::from_primitive::<Wgpu>(loss)).await?;
    Ok((codes, loss))
}

fn contiguous<const D: usize>(t: Tensor<D>) -> Result<CubeTensor> {
    Ok(burn::backend::wgpu::into_contiguous(primitive(t)?))
}

/// `shaders/ldl_round_rows.wgsl`.
#[derive(Debug)]
struct RoundRows;

impl KernelSource for RoundRows {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/ldl_round_rows.wgsl"))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
