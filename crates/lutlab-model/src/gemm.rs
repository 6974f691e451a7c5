//! The model's f32 matrix products on our own WGSL kernel (`shaders/gemm.wgsl`: 128 × 128 tiles,
//! 8 × 8 outputs per invocation in registers), which runs natively and in the page alike.
//! Operands are read through their strides, so a transposed view (HF's `[out, in]` weights, the
//! head's `wteᵀ`) is multiplied without a copy; leading dimensions are a batch (attention's windows
//! and heads read in place from the `[b, t, h·d]` projections).
//!
//! Used by evaluation, the Hessians' forwards, generation, the LUT GEMM's dequantized layer and,
//! through [`crate::tracked_gemm`], Fisher's autodiff graphs; other dtypes and shapes the kernel
//! does not take (more than two batch dimensions that do not fold into one stride) go to burn's matmul.
//!
//! The model runs ours on GPUs, where it measured 1.3–1.6× burn's matmul at the model's shapes
//! (one H100: 18.6 vs 14.6 TFLOP/s at 2048 × 768 × 3072, 21.3 vs 15.8 for a Hessian's `xᵀx`;
//! BENCHMARKS.md), and burn's on CPU adapters (lavapipe), where ours took 1.8× burn's time.
//! `LUTLAB_MATMUL=gemm|burn` overrides the choice natively; [`use_gemm_in_model`] in code.

use crate::lut_linear::{kernel_id, primitive};
use burn::backend::wgpu::{into_contiguous, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::ops::FloatTensorOps;
use burn::backend::Wgpu;
use burn::tensor::{DType, Shape, Tensor};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::server::KernelArguments;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Rows and columns of C a workgroup computes (`gemm.wgsl`).
const TILE: usize = 128;
/// Workgroup memory the kernel declares at K slices of `slice` (`sa` and `sb`: 2 × slice × 128 f32).
pub const fn workgroup_bytes(slice: u32) -> u32 {
    2 * slice * 128 * 4
}
/// The K slice depths the kernel is built with.
pub const SLICES: [u32; 2] = [16, 32];
/// The slice depth it runs unless told otherwise: it fits WebGPU's default 16 KiB of workgroup
/// memory, and the deeper one measured no faster (BENCHMARKS.md).
const DEFAULT_SLICE: u32 = 16;
/// The most workgroups cubecl dispatches along one grid axis (WebGPU's limit).
const MAX_GROUPS: usize = 65_535;

/// Whether the model's f32 matmuls run on our kernel.
static MODEL_USES_GEMM: AtomicBool = AtomicBool::new(false);
/// The kernel's K slice depth (one of [`SLICES`]).
static SLICE: AtomicU32 = AtomicU32::new(DEFAULT_SLICE);
/// Whether operands aligned for it are read as vec4s.
static VECTOR_LOADS: AtomicBool = AtomicBool::new(true);

/// Picks the model's f32 matmul when the process opens its GPU: ours on GPUs (`gpu`) whose
/// workgroups get `workgroup_memory` bytes (at least what the default slices take), burn's on CPU
/// adapters; `LUTLAB_MATMUL=gemm|burn` overrides it natively (benchmarks), and
/// `LUTLAB_GEMM_SLICE=16|32`, `LUTLAB_GEMM_VEC4=0` how ours reads its operands.
pub(crate) fn choose_at_startup(gpu: bool, workgroup_memory: u32) {
    use_gemm_in_model(override_from_env().unwrap_or(gpu && workgroup_memory >= workgroup_bytes(DEFAULT_SLICE)));
    let (slice, vector_loads) = tuning_from_env();
    let slice = slice.filter(|&s| workgroup_bytes(s) <= workgroup_memory).unwrap_or(DEFAULT_SLICE);
    set_tuning(slice, vector_loads.unwrap_or(true));
}

/// How our kernel reads its operands from now on: K slices of `slice` (one of [`SLICES`]; the
/// adapter must give `2 · slice · 512` bytes of workgroup memory), aligned operands as vec4s or not.
/// The products are the same bit for bit either way (each output sums its K in order); only the
/// speed differs.
pub fn set_tuning(slice: u32, vector_loads: bool) {
    assert!(SLICES.contains(&slice), "a K slice of {slice} (the kernel is built for {SLICES:?})");
    SLICE.store(slice, Ordering::Relaxed);
    VECTOR_LOADS.store(vector_loads, Ordering::Relaxed);
}

/// The kernel's K slice depth and whether it reads aligned operands as vec4s now.
pub fn tuning() -> (u32, bool) {
    (SLICE.load(Ordering::Relaxed), VECTOR_LOADS.load(Ordering::Relaxed))
}

/// Makes the model's f32 matmuls run on our kernel (`true`) or burn's, from now on.
pub fn use_gemm_in_model(ours: bool) {
    MODEL_USES_GEMM.store(ours, Ordering::Relaxed);
}

/// Whether the model's f32 matmuls run on our kernel now.
pub fn gemm_in_model() -> bool {
    MODEL_USES_GEMM.load(Ordering::Relaxed)
}

#[cfg(not(target_arch = "wasm32"))]
fn override_from_env() -> Option<bool> {
    match std::env::var("LUTLAB_MATMUL").ok()?.as_str() {
        "burn" => Some(false),
        "gemm" => Some(true),
        _ => None,
    }
}

#[cfg(target_arch = "wasm32")]
fn override_from_env() -> Option<bool> {
    None
}

#[cfg(not(target_arch = "wasm32"))]
fn tuning_from_env() -> (Option<u32>, Option<bool>) {
    let slice = std::env::var("LUTLAB_GEMM_SLICE").ok().and_then(|s| s.parse().ok()).filter(|s| SLICES.contains(s));
    (slice, std::env::var("LUTLAB_GEMM_VEC4").ok().map(|v| v != "0"))
}

#[cfg(target_arch = "wasm32")]
fn tuning_from_env() -> (Option<u32>, Option<bool>) {
    (None, None)
}

/// Products of fewer rows than this (generation's one new token a step) go to burn's matmul:
/// our kernel's 128-row tile would run 127 idle rows for it (the page's generation on SwiftShader
/// took 175 s with every product on ours against 107 s on burn's).
const FEW_ROWS: usize = 16;

/// The model's f32 matmul: [`matmul`] or burn's, as [`choose_at_startup`] or [`use_gemm_in_model`] picked.
/// Tensors autodiff tracks go through [`crate::tracked_gemm`], whose backward runs on our kernel too.
pub fn model_matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if !MODEL_USES_GEMM.load(Ordering::Relaxed) || a.dims()[D - 2] < FEW_ROWS {
        a.matmul(b)
    } else if a.is_autodiff() || b.is_autodiff() {
        crate::tracked_gemm::tracked_matmul(a, b)
    } else {
        matmul(a, b)
    }
}

/// `a · b` over the last two dimensions (`[.., m, k] · [.., k, n]`), on our kernel where it
/// applies, else burn's matmul.
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if !takes(&a, &b) || a.is_autodiff() || b.is_autodiff() {
        return a.matmul(b);
    }
    let (Ok(a), Ok(b)) = (primitive(a.clone()), primitive(b.clone())) else { return a.matmul(b) };
    match launch(a, b) {
        Ok(c) => Tensor::from_primitive::<Wgpu>(c),
        Err(operands) => {
            let (a, b) = *operands;
            Tensor::<D>::from_primitive::<Wgpu>(a).matmul(Tensor::from_primitive::<Wgpu>(b))
        }
    }
}

/// Whether the kernel takes operands of these shapes and dtypes: f32, the same batch dimensions
/// (no broadcast), no empty dimension (the layout is checked again on the primitives).
pub(crate) fn takes<const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> bool {
    let (da, db) = (a.dims(), b.dims());
    D >= 2
        && da[..D - 2] == db[..D - 2]
        && da[D - 1] == db[D - 2]
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32
        && da.iter().chain(&db).all(|&s| s > 0)
}

/// The product of the primitives, or both back where the kernel cannot read them as they are.
pub(crate) fn launch(a: CubeTensor, b: CubeTensor) -> Result<CubeTensor, Box<(CubeTensor, CubeTensor)>> {
    launch_into(a, b, Output::New)
}

/// Where [`launch_into`] puts a product.
enum Output<'a> {
    /// A new tensor; K split into chunks where the output tiles are too few to fill the GPU, their
    /// partial products summed.
    New,
    /// Added in place to a Gram sum's tiles on and above the diagonal (a contiguous `[n, n]`
    /// buffer nothing else holds; `a · b` a Gram matrix `xᵀx`).
    AddToUpper(&'a CubeTensor),
    /// The tiles on and above the diagonal of K's `splits` chunks, each into its slot of a zeroed
    /// `[splits, n, n]` buffer, then summed: a Gram matrix of few tiles over a long K.
    UpperInChunks(&'a CubeTensor, usize),
}

/// The product `a · b` as `output` asks.
fn launch_into(a: CubeTensor, b: CubeTensor, output: Output) -> Result<CubeTensor, Box<(CubeTensor, CubeTensor)>> {
    let (a, b) = unaliased(readable(a), readable(b))?;
    let (Some(la), Some(lb)) = (Layout::of(&a), Layout::of(&b)) else { return Err(Box::new((a, b))) };
    let (m, k, n) = (la.rows, la.cols, lb.cols);
    let batch = la.outer * la.inner;
    // The kernel indexes in u32: every element it reads or writes must have a u32 index.
    if m.div_ceil(TILE) > MAX_GROUPS || batch > MAX_GROUPS || [la.last_index(), lb.last_index(), batch * m * n].iter().any(|&e| e > u32::MAX as usize) {
        return Err(Box::new((a, b)));
    }
    let client = a.client.clone();
    let tiles = batch * m.div_ceil(TILE) * n.div_ceil(TILE);
    // Split only where the partial products still have u32 indices.
    let splits = match output {
        Output::New if k_splits(tiles, k) * batch * m * n <= u32::MAX as usize => k_splits(tiles, k),
        Output::New | Output::AddToUpper(_) => 1,
        Output::UpperInChunks(_, splits) => splits,
    };
    let chunk = k.div_ceil(splits).next_multiple_of(16);
    if batch * splits > MAX_GROUPS {
        return Err(Box::new((a, b)));
    }
    let c = match output {
        Output::AddToUpper(sum) | Output::UpperInChunks(sum, _) => sum.handle.clone(),
        Output::New => client.empty(splits * batch * m * n * 4),
    };
    let params: [u32; 15] = [m, n, k, la.row, la.col, la.outer_stride, lb.row, lb.col, lb.outer_stride, la.inner, la.inner_stride, lb.inner_stride, splits, chunk, batch].map(|v| v as u32);
    let arguments = KernelArguments::new()
        .with_buffer(a.handle.clone().binding())
        .with_buffer(b.handle.clone().binding())
        .with_buffer(c.clone().binding())
        .with_buffer(client.create_from_slice(bytemuck::cast_slice(&params)).binding());
    let (slice, vector_loads) = tuning();
    let (a_k_fast, b_n_fast) = (la.col == 1, lb.col == 1);
    let kernel = GemmKernel {
        a_k_fast,
        b_n_fast,
        a_vec4: vector_loads && la.reads_as_vec4(a_k_fast),
        b_vec4: vector_loads && lb.reads_as_vec4(b_n_fast),
        slice,
        upper_tiles: !matches!(output, Output::New),
        accumulate: matches!(output, Output::AddToUpper(_)),
    };
    let grid = CubeCount::Static(n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, (batch * splits) as u32);
    client.launch(Box::new(SourceKernel::new(kernel, CubeDim::new_2d(16, 16))), grid, arguments);
    let mut dims = a.meta.shape().as_slice().to_vec();
    let last = dims.len() - 1;
    dims[last] = n;
    if splits == 1 {
        return Ok(CubeTensor::new_contiguous(client, a.device.clone(), Shape::from(dims), c, DType::F32));
    }
    // The chunks' partial products summed.
    let partial = CubeTensor::new_contiguous(client, a.device.clone(), Shape::new([splits, batch * m * n]), c, DType::F32);
    Ok(Wgpu::float_reshape(Wgpu::float_sum_dim(partial, 0), Shape::from(dims)))
}

/// Workgroups a product should fill the GPU with: a few per multiprocessor of a large GPU (an
/// H100 has 132).
const TARGET_WORKGROUPS: usize = 256;
/// The least K a chunk of a split product takes (16 slices of 16).
const MIN_CHUNK: usize = 256;

/// Into how many chunks to split the K of a product of `tiles` output tiles: enough to reach
/// [`TARGET_WORKGROUPS`], each chunk at least [`MIN_CHUNK`] long, and at most 8 (each chunk's
/// partial product is written and summed). `LUTLAB_GEMM_SPLIT=0` turns it off natively (benchmarks).
fn k_splits(tiles: usize, k: usize) -> usize {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if crate::device::switched_off(&OFF, "LUTLAB_GEMM_SPLIT") {
        return 1;
    }
    TARGET_WORKGROUPS.div_ceil(tiles).min(k / MIN_CHUNK).clamp(1, 8)
}

/// The operand as the kernel can read it: a storage-tiled buffer (whose strides order tiles, not
/// rows) laid out as rows first. A view that starts inside its buffer needs nothing: cubecl binds
/// it from its first element (burn copies a slice whose start is not aligned for that).
fn readable(t: CubeTensor) -> CubeTensor {
    if t.meta.is_tiled() {
        return into_contiguous(t);
    }
    t
}

/// The operands bound apart in browsers: WebGPU refuses a dispatch that binds one buffer range to
/// two bindings when one of them is writable, and cubecl binds every buffer read_write, so a
/// product of a tensor with a view of itself (the Hessians' `xᵀx`, the Cholesky's `l·lᵀ`) would
/// fail validation there and its result never arrive. In the page the view is read from a copy;
/// natively wgpu allows the aliasing, and nothing is copied.
fn unaliased(a: CubeTensor, b: CubeTensor) -> Result<(CubeTensor, CubeTensor), Box<(CubeTensor, CubeTensor)>> {
    let aliased = a.handle.memory.descriptor().id == b.handle.memory.descriptor().id;
    if !cfg!(target_arch = "wasm32") || !aliased {
        Ok((a, b))
    } else if !a.is_contiguous() {
        Ok((into_contiguous(a), b))
    } else if !b.is_contiguous() {
        Ok((a, into_contiguous(b)))
    } else {
        Err(Box::new((a, b)))
    }
}

/// An operand as the kernel reads it: `outer × inner` matrices of `rows × cols` (attention's
/// `[b, h, t, d]`: windows and heads, two strides because heads split off a `[b, t, h·d]` tensor
/// are not a whole matrix apart), element `(z, i, j)` at
/// `(z / inner) · outer_stride + (z % inner) · inner_stride + i · row + j · col`.
struct Layout {
    outer: usize,
    inner: usize,
    rows: usize,
    cols: usize,
    row: usize,
    col: usize,
    outer_stride: usize,
    inner_stride: usize,
}

impl Layout {
    /// `None` where the batch dimensions before the last one do not fold into one stride.
    fn of(t: &CubeTensor) -> Option<Self> {
        let shape = t.meta.shape().as_slice();
        let strides: &[usize] = t.meta.strides();
        let d = shape.len();
        let (rows, cols) = (shape[d - 2], shape[d - 1]);
        let (inner, inner_stride) = if d >= 3 { (shape[d - 3], strides[d - 3]) } else { (1, 0) };
        let mut outer = 1;
        let mut outer_stride = 0;
        // Fold from the innermost outer dimension out: each must step over the ones inside it.
        for i in (0..d.saturating_sub(3)).rev() {
            if shape[i] == 1 {
                continue;
            }
            if outer == 1 {
                outer_stride = strides[i];
            } else if strides[i] != outer_stride * outer {
                return None;
            }
            outer *= shape[i];
        }
        Some(Self { outer, inner, rows, cols, row: strides[d - 2], col: strides[d - 1], outer_stride, inner_stride })
    }

    /// Whether the kernel can read the operand as vec4s, four values at once along its contiguous
    /// index (the columns' where `along_cols`, else the rows'): that index of stride 1, the extent
    /// along it and every other stride multiples of 4, so that each quad the kernel loads is one
    /// aligned vec4, inside the operand whole or not at all. (K's chunks are multiples of 16.)
    fn reads_as_vec4(&self, along_cols: bool) -> bool {
        let (unit, extent, other) = if along_cols { (self.col, self.cols, self.row) } else { (self.row, self.rows, self.col) };
        let batch_strides = [(self.outer, self.outer_stride), (self.inner, self.inner_stride)];
        unit == 1 && extent % 4 == 0 && other % 4 == 0 && batch_strides.iter().all(|&(count, stride)| count == 1 || stride % 4 == 0)
    }

    /// The index of the operand's last element, the largest the kernel computes for it.
    fn last_index(&self) -> usize {
        (self.outer - 1) * self.outer_stride + (self.inner - 1) * self.inner_stride + (self.rows - 1) * self.row + (self.cols - 1) * self.col
    }
}

/// `sum + xᵀx` for `x: [rows, n]` (`sum` `[n, n]`, none: zeros), the Hessians' accumulation. On our
/// kernel only the tiles on and above the diagonal are computed, in place in `sum` (half the
/// multiply-adds, no second `[n, n]` buffer) or, for few tiles, in K chunks whose zeroed partial
/// Grams are summed and added; the entries below them hold whatever they held:
/// read the result through [`symmetric_from_upper`]. With burn's matmul the whole product is added.
pub fn add_gram(sum: Option<Tensor<2>>, x: Tensor<2>) -> crate::error::Result<Tensor<2>> {
    let n = x.dims()[1];
    let xt = x.clone().transpose();
    // Where the kernel cannot accumulate in place: the whole product, then added.
    let added = |sum: Option<Tensor<2>>| {
        let xtx = model_matmul(xt.clone(), x.clone());
        match sum {
            Some(sum) => sum + xtx,
            None => xtx,
        }
    };
    if !MODEL_USES_GEMM.load(Ordering::Relaxed) || !takes(&xt, &x) || x.is_autodiff() {
        return Ok(added(sum));
    }
    let (pa, pb) = (primitive(xt.clone())?, primitive(x.clone())?);
    // A narrow input's Gram has few tiles (21 on and above the diagonal at 768 wide): its long K
    // (a pass's every position) goes in chunks, as for any product, their partial Grams summed.
    let tiles = n.div_ceil(TILE) * (n.div_ceil(TILE) + 1) / 2;
    let splits = k_splits(tiles, x.dims()[0]);
    if splits > 1 && splits * n * n <= u32::MAX as usize {
        let partials = primitive(Tensor::<2>::zeros([splits, n * n], &x.device()))?;
        return Ok(match launch_into(pa, pb, Output::UpperInChunks(&partials, splits)) {
            Ok(gram) => match (sum, Tensor::<2>::from_primitive::<Wgpu>(gram)) {
                (Some(sum), gram) => sum + gram,
                (None, gram) => gram,
            },
            Err(_) => added(sum),
        });
    }
    let acc = primitive(sum.unwrap_or_else(|| Tensor::zeros([n, n], &x.device())))?;
    // In place only into a buffer this sum alone holds, laid out as rows.
    if !acc.can_mut() || !acc.is_contiguous() || acc.meta.is_tiled() {
        return Ok(added(Some(Tensor::from_primitive::<Wgpu>(acc))));
    }
    Ok(match launch_into(pa, pb, Output::AddToUpper(&acc)) {
        Ok(_) => Tensor::from_primitive::<Wgpu>(acc),
        Err(_) => added(Some(Tensor::from_primitive::<Wgpu>(acc))),
    })
}

/// The symmetric `[n, n]` matrix whose upper triangle [`add_gram`] computed, on the GPU: the host
/// then reads it row by row instead of down the columns of the upper triangle.
pub fn symmetric_from_upper(sum: Tensor<2>) -> Tensor<2> {
    sum.clone().triu(0) + sum.triu(1).transpose()
}

/// `shaders/gemm.wgsl` for one pair of operand layouts, writing C or adding a Gram matrix's upper
/// tiles to it.
struct GemmKernel {
    a_k_fast: bool,
    b_n_fast: bool,
    a_vec4: bool,
    b_vec4: bool,
    slice: u32,
    upper_tiles: bool,
    accumulate: bool,
}

/// The template's words for reading one operand (`name`) as scalars or as vec4s: its element
/// type, one value at index i, four from i on.
fn operand_reads(name: &str, vec4: bool) -> [String; 3] {
    if vec4 {
        ["vec4<f32>".into(), format!("{name}[i / 4u][i % 4u]"), format!("{name}[i / 4u]")]
    } else {
        ["f32".into(), format!("{name}[i]"), format!("vec4<f32>({name}[i], {name}[i + 1u], {name}[i + 2u], {name}[i + 3u])")]
    }
}

impl KernelSource for GemmKernel {
    fn source(&self) -> SourceTemplate {
        let [a_elem, a_one, a_four] = operand_reads("a", self.a_vec4);
        let [b_elem, b_one, b_four] = operand_reads("b", self.b_vec4);
        SourceTemplate::new(include_str!("../../../shaders/gemm.wgsl"))
            .register("a_k_fast", self.a_k_fast.to_string())
            .register("b_n_fast", self.b_n_fast.to_string())
            .register("a_vec4", self.a_vec4.to_string())
            .register("b_vec4", self.b_vec4.to_string())
            .register("a_elem", a_elem)
            .register("a_one", a_one)
            .register("a_four", a_four)
            .register("b_elem", b_elem)
            .register("b_one", b_one)
            .register("b_four", b_four)
            .register("slice", self.slice.to_string())
            .register("upper_tiles", self.upper_tiles.to_string())
            .register("accumulate", self.accumulate.to_string())
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>().info((self.a_k_fast, self.b_n_fast, self.a_vec4, self.b_vec4, self.slice, self.upper_tiles, self.accumulate))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
