//! Linear layers that multiply straight from packed LUT weights on the GPU: the WGSL kernels in
//! `shaders/lut_gemv.wgsl` (a few tokens; `lut_vector_gemv.wgsl` for vector tables) and
//! `shaders/lut_dequantize.wgsl` followed by burn's matmul (many), launched on burn's
//! own wgpu device through cubecl, so their inputs and outputs are ordinary burn tensors and the
//! rest of the model (attention, LayerNorm, the head) runs unchanged around them.
//!
//! A packed layer lives on the GPU as three buffers: the packed code words; one f32 buffer with
//! the tables, sparse values, scales, input shift, bias and input-group scales and zeros; one u32
//! buffer with the sparse column pointers and row indices. Few bindings per kernel (WebGPU
//! guarantees 8 storage buffers).

use crate::error::{ModelError, Result};
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::Wgpu;
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};
use cubecl::prelude::{CubeCount, CubeDim, ExecutionMode, KernelId};
use cubecl::server::{Handle, KernelArguments};
use lutlab_core::quant::packed::{blocks, PackedLinear, BLOCK_ROWS};

/// Up to this many tokens a call takes the GEMV kernel (one workgroup row per token).
pub const GEMV_MAX_TOKENS: usize = 4;
/// Columns a vector-table GEMV workgroup multiplies (one per lane of a slice).
const VECTOR_GEMV_COLUMNS: usize = 32;
/// Slices of 32 lanes in a scalar GEMV workgroup, each multiplying its own columns.
const GEMV_SLICES: usize = 8;
/// Columns each lane of the scalar GEMV multiplies (its staged inputs are read once for all).
const GEMV_COLUMNS_PER_LANE: usize = 4;
/// Packed blocks (of 32 rows) a GEMV workgroup walks at least.
const GEMV_MIN_BLOCKS_PER_SPLIT: usize = 8;
/// Packed blocks of input a GEMV workgroup stages at once (`CHUNK_BLOCKS` in the shader).
const GEMV_CHUNK_BLOCKS: usize = 32;
/// Workgroups a GEMV aims for: narrow layers split their rows until a large GPU is full. On an
/// H100 (132 SMs), 4-bit at 4096 × 11008 and 11008 × 4096 took 24.9 µs aiming for 528 against
/// 28.4 and 30.1 µs aiming for 2,048 (more splits, more partial sums), 4096 × 4096 the same.
const GEMV_TARGET_WORKGROUPS: usize = 528;
/// Marks an absent optional part (scales, shift, bias) in the parameters.
const NONE: u32 = u32::MAX;

/// A packed layer on the GPU: one LUT layer, or column parts side by side (a layer whose blocks
/// of channels got different widths, `--allocate-per`), each run by its own kernels and the
/// outputs concatenated.
#[derive(Clone, Debug)]
pub enum PackedGpuLayer {
    Whole(PackedGpuLinear),
    Parts { parts: Vec<PackedGpuLinear>, bias: Option<Tensor<1>> },
}

impl PackedGpuLayer {
    /// Uploads `packed` (validated) with its `bias` (`[cols]`); see [`PackedGpuLinear::upload`].
    pub fn upload(packed: &PackedLinear, bias: Option<&[f32]>, device: &Device, what: &str) -> Result<Self> {
        if !packed.is_split() {
            return Ok(Self::Whole(PackedGpuLinear::upload(packed, bias, device, what)?));
        }
        let parts = packed
            .column_parts
            .iter()
            .enumerate()
            .map(|(i, part)| PackedGpuLinear::upload(part, None, device, &format!("{what}.part{i}")))
            .collect::<Result<_>>()?;
        let bias = bias.map(|v| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device));
        Ok(Self::Parts { parts, bias })
    }

    /// `y = x · W + bias` for `x: [m, rows]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Whole(layer) => layer.forward(x),
            Self::Parts { parts, bias } => {
                let y = Tensor::cat(parts.iter().map(|p| p.forward(x.clone())).collect(), 1);
                match bias {
                    Some(bias) => y + bias.clone().unsqueeze::<2>(),
                    None => y,
                }
            }
        }
    }
}

/// A packed linear layer uploaded to the GPU.
#[derive(Clone, Debug)]
pub struct PackedGpuLinear {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    /// Weights per code: 1 for scalar tables, 2 or 4 for vector tables.
    pub vector_dim: usize,
    qweight: CubeTensor,
    aux: CubeTensor,
    index: CubeTensor,
    /// The input shift and the bias again, as tensors for the GEMM path's burn operations.
    shift: Option<Tensor<1>>,
    bias: Option<Tensor<1>>,
    /// QuIP's incoherence processing around the LUT matmul (the bias is then added after it, so
    /// the kernels get none).
    incoherence: Option<GpuIncoherence>,
    /// Whether the layer has input-group scales (a separate GEMV variant).
    grouped: bool,
    /// Parameters shared by the kernels; the token count (`params[2]`) and the GEMV split
    /// (`params[10..12]`) are set per call. `params[12..15]`: blocks of 32 rows per input group,
    /// where the group scales and zeros start in `aux` (or `NONE`).
    params: [u32; 15],
}

impl PackedGpuLinear {
    /// Uploads `packed` (validated) with its `bias` (`[cols]`) to `device`, which must be a plain
    /// wgpu device (the kernels are not differentiable).
    pub fn upload(packed: &PackedLinear, bias: Option<&[f32]>, device: &Device, what: &str) -> Result<Self> {
        packed.validate(what)?;
        let code_blocks = blocks(packed.code_rows());
        if bias.is_some_and(|b| b.len() != packed.cols) {
            return Err(ModelError::Gpu(format!("{what}: bias length does not match {} columns", packed.cols)));
        }
        let mut aux = packed.tables.clone();
        let sparse_values_at = aux.len();
        aux.extend_from_slice(&packed.sparse.values);
        let mut append = |part: Option<&[f32]>| {
            part.map_or(NONE, |values| {
                let at = aux.len() as u32;
                aux.extend_from_slice(values);
                at
            })
        };
        let scales_at = append(packed.scales.as_deref());
        let shift_at = append(packed.input_shift.as_deref());
        // With incoherence the bias is added after the output rotation, not by the kernels.
        let bias_at = append(bias.filter(|_| packed.incoherence.is_none()));
        let groups = packed.input_groups.as_ref();
        let group_scales_at = append(groups.map(|g| g.scales.as_slice()));
        let group_zeros_at = append(groups.and_then(|g| g.zeros.as_deref()));
        let mut index = packed.sparse.col_ptr.clone();
        let row_idx_at = index.len() as u32;
        index.extend_from_slice(&packed.sparse.row_idx);
        let params = [
            packed.rows as u32,
            packed.cols as u32,
            0,
            packed.channels_per_table as u32,
            code_blocks as u32,
            sparse_values_at as u32,
            scales_at,
            shift_at,
            bias_at,
            row_idx_at,
            1,
            0,
            groups.map_or(0, |g| (g.size / BLOCK_ROWS) as u32),
            group_scales_at,
            group_zeros_at,
        ];
        Ok(Self {
            rows: packed.rows,
            cols: packed.cols,
            bits: packed.bits,
            vector_dim: packed.vector_dim,
            grouped: groups.is_some(),
            qweight: upload_u32(&column_major(&packed.qweight, code_blocks, packed.code_bits() as usize, packed.cols), device)?,
            aux: primitive(Tensor::<1>::from_data(TensorData::new(aux.clone(), [aux.len()]), device))?,
            index: upload_u32(&index, device)?,
            shift: packed.input_shift.as_deref().map(|v| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)),
            bias: bias.map(|v| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)),
            incoherence: packed.incoherence.as_ref().map(|t| GpuIncoherence::upload(t, device)),
            params,
        })
    }

    /// `y = scale ⊙ ((x − shift) · W) + bias` for `x: [m, rows]` on the layer's device.
    ///
    /// Panics if `x` has another width or lives on another device: both are fixed when a model is
    /// assembled (`Decoder::with_packed`), so this is a bug, never bad input.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let Some(incoherence) = &self.incoherence else { return self.lut_forward(x) };
        let y = incoherence.after(self.lut_forward(incoherence.before(x)));
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<2>(),
            None => y,
        }
    }

    /// The LUT matmul itself: `scale ⊙ ((x − shift) · W)`, plus the bias unless the layer has
    /// incoherence processing (then [`Self::forward`] adds it after the output rotation).
    fn lut_forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [m, k] = x.dims();
        // Cannot fail: shapes are checked when a model is loaded, every model lives on the wgpu
        // device, and packed layers never run inside autodiff (Fisher refuses a packed model by
        // name), so the input is a plain wgpu tensor of the layer's width.
        assert_eq!(k, self.rows, "LUT matmul: input width differs from the layer's rows");
        let x = primitive(x).expect("LUT matmul: the input is on the layer's wgpu device");
        let x = burn::backend::wgpu::into_contiguous(x);
        let client = x.client.clone();
        let out = client.empty(m * self.cols * 4);
        let mut params = self.params;
        params[2] = m as u32;
        let buffers = |weights: &Handle, y: &Handle, params: &[u32]| {
            KernelArguments::new()
                .with_buffer(x.handle.clone().binding())
                .with_buffer(weights.clone().binding())
                .with_buffer(self.aux.handle.clone().binding())
                .with_buffer(self.index.handle.clone().binding())
                .with_buffer(y.clone().binding())
                .with_buffer(client.create_from_slice(bytemuck::cast_slice(params)).binding())
        };
        if m <= GEMV_MAX_TOKENS {
            let (gemv, tile) = match self.vector_dim {
                1 => (LutKernel::scalar_gemv(self.bits, self.grouped), gemv_columns()),
                dim => (LutKernel { shader: Shader::VectorGemv, bits: self.code_bits(), dim: dim as u32, ..LutKernel::default() }, VECTOR_GEMV_COLUMNS),
            };
            let (splits, blocks_per_split) = gemv_splits(tile, self.cols, params[4] as usize);
            params[10] = splits as u32;
            params[11] = blocks_per_split as u32;
            let grid = CubeCount::Static(self.cols.div_ceil(tile) as u32, splits as u32, m as u32);
            if splits == 1 {
                client.launch(Box::new(SourceKernel::new(gemv, CubeDim::new_2d(32, 8))), grid, buffers(&self.qweight.handle, &out, &params));
            } else {
                let partials = client.empty(m * splits * self.cols * 4);
                client.launch(Box::new(SourceKernel::new(gemv, CubeDim::new_2d(32, 8))), grid, buffers(&self.qweight.handle, &partials, &params));
                let reduce = LutKernel { shader: Shader::GemvReduce, ..LutKernel::default() };
                let grid = CubeCount::Static(self.cols.div_ceil(256) as u32, m as u32, 1);
                client.launch(Box::new(SourceKernel::new(reduce, CubeDim::new_1d(256))), grid, buffers(&partials, &out, &params));
            }
        } else {
            return self.gemm(Tensor::from_primitive::<Wgpu>(x));
        }
        let y = CubeTensor::new_contiguous(client, x.device.clone(), Shape::new([m, self.cols]), out, DType::F32);
        Tensor::from_primitive::<Wgpu>(y)
    }

    /// Many tokens: the layer dequantized to its effective dense weight (scales and sparse
    /// outliers included) by one kernel, then burn's matmul, shift and bias.
    fn gemm(&self, x: Tensor<2>) -> Tensor<2> {
        let w = self.dequantized();
        let x = match &self.shift {
            Some(shift) => x - shift.clone().unsqueeze::<2>(),
            None => x,
        };
        let y = crate::gemm::model_matmul(x, w);
        match &self.bias {
            Some(bias) if self.incoherence.is_none() => y + bias.clone().unsqueeze::<2>(),
            _ => y,
        }
    }

    /// Bits per code: `bits · vector_dim`.
    fn code_bits(&self) -> u32 {
        self.bits * self.vector_dim as u32
    }

    /// `scale ⊙ W` as a dense `[rows, cols]` tensor (tables looked up, sparse outliers added).
    pub fn dequantized(&self) -> Tensor<2> {
        let client = self.qweight.client.clone();
        let w = client.empty(self.rows * self.cols * 4);
        let arguments = KernelArguments::new()
            .with_buffer(self.qweight.handle.clone().binding())
            .with_buffer(self.aux.handle.clone().binding())
            .with_buffer(self.index.handle.clone().binding())
            .with_buffer(w.clone().binding())
            .with_buffer(client.create_from_slice(bytemuck::cast_slice(&self.params)).binding());
        let kernel = LutKernel { shader: Shader::Dequantize, bits: self.code_bits(), dim: self.vector_dim as u32, ..LutKernel::default() };
        let grid = CubeCount::Static(self.cols.div_ceil(256) as u32, self.params[4], 1);
        client.launch(Box::new(SourceKernel::new(kernel, CubeDim::new_1d(256))), grid, arguments);
        let w = CubeTensor::new_contiguous(client, self.qweight.device.clone(), Shape::new([self.rows, self.cols]), w, DType::F32);
        Tensor::from_primitive::<Wgpu>(w)
    }
}

/// QuIP's incoherence processing on the GPU: the input scaled and rotated by `V` before the LUT
/// matmul, its output rotated by `Uᵀ` after, each rotation a permutation and two small matmuls
/// (`(A ⊗ B) z` is `A Z Bᵀ` for `z` read as an `a×b` matrix), as burn operations.
#[derive(Clone, Debug)]
struct GpuIncoherence {
    input_scale: Option<Tensor<1>>,
    input: Option<GpuRotation>,
    output: Option<GpuRotation>,
}

#[derive(Clone, Debug)]
struct GpuRotation {
    a: usize,
    b: usize,
    factor_a: Tensor<2>,
    factor_b: Tensor<2>,
    /// `perm` (gathers the input of `T`) and its inverse (scatters the output of `Tᵀ`).
    perm: Tensor<1, Int>,
    inverse: Tensor<1, Int>,
}

impl GpuIncoherence {
    fn upload(t: &lutlab_core::quant::incoherence::Incoherence, device: &Device) -> Self {
        let vector = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
        Self { input_scale: t.input_scale.as_deref().map(vector), input: t.input.as_ref().map(|r| GpuRotation::upload(r, device)), output: t.output.as_ref().map(|r| GpuRotation::upload(r, device)) }
    }

    /// `V (x ⊙ input_scale)` for each row `x`.
    fn before(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match &self.input_scale {
            Some(s) => x * s.clone().unsqueeze::<2>(),
            None => x,
        };
        match &self.input {
            Some(v) => v.apply(x),
            None => x,
        }
    }

    /// `Uᵀ y` for each row `y`.
    fn after(&self, y: Tensor<2>) -> Tensor<2> {
        match &self.output {
            Some(u) => u.apply_transpose(y),
            None => y,
        }
    }
}

impl GpuRotation {
    fn upload(r: &lutlab_core::quant::incoherence::Rotation, device: &Device) -> Self {
        let square = |v: &[f32], n: usize| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [n, n]), device);
        let indices = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v.clone(), [v.len()]), device);
        let mut inverse = vec![0i64; r.perm.len()];
        r.perm.iter().enumerate().for_each(|(i, &p)| inverse[p as usize] = i as i64);
        Self {
            a: r.a,
            b: r.b,
            factor_a: square(&r.factor_a, r.a),
            factor_b: square(&r.factor_b, r.b),
            perm: indices(r.perm.iter().map(|&p| i64::from(p)).collect()),
            inverse: indices(inverse),
        }
    }

    /// `T x = (A ⊗ B) x_perm` for each row `x` of `[m, a·b]`.
    fn apply(&self, x: Tensor<2>) -> Tensor<2> {
        let x = x.select(1, self.perm.clone());
        self.kronecker(x, self.factor_a.clone(), self.factor_b.clone())
    }

    /// `Tᵀ y = P⁻¹ (Aᵀ ⊗ Bᵀ) y` for each row `y`.
    fn apply_transpose(&self, y: Tensor<2>) -> Tensor<2> {
        let z = self.kronecker(y, self.factor_a.clone().transpose(), self.factor_b.clone().transpose());
        z.select(1, self.inverse.clone())
    }

    /// `(A ⊗ B) z` per row: `Z Bᵀ` as one `[m·a, b]` matmul, then `A` along the `a` axis as one
    /// `[m·b, a]` matmul with the axes swapped.
    fn kronecker(&self, z: Tensor<2>, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        let m = z.dims()[0];
        let (na, nb) = (self.a, self.b);
        let zb = z.reshape([m * na, nb]).matmul(b.transpose()); // rows (t, i): Z_t[i, :] Bᵀ
        let swapped = zb.reshape([m, na, nb]).swap_dims(1, 2).reshape([m * nb, na]); // rows (t, j): column j
        let out = swapped.matmul(a.transpose()); // (A · column)ᵀ
        out.reshape([m, nb, na]).swap_dims(1, 2).reshape([m, na * nb])
    }
}

/// Test hook: when non-zero, the GEMV aims for this many workgroups instead of
/// `GEMV_TARGET_WORKGROUPS` (1: no split, so one workgroup walks many chunks of input). Any
/// value gives the same results.
#[doc(hidden)]
pub static GEMV_TARGET_OVERRIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Test and benchmark hook: when non-zero, the scalar GEMV's lanes multiply this many columns
/// (1, 2 or 4) instead of `GEMV_COLUMNS_PER_LANE`. Any value gives the same results.
#[doc(hidden)]
pub static GEMV_COLUMNS_PER_LANE_OVERRIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Test and benchmark hook: when set, the scalar GEMV loads its code words one u32 at a time
/// instead of as vec2/vec4s (natively also `LUTLAB_GEMV_VEC4=0`). Either gives the same results.
#[doc(hidden)]
pub static GEMV_SCALAR_WORDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How many code words the scalar GEMV loads at once for `bits`-bit codes: a block's `bits`
/// words are contiguous and start at a multiple of `bits`, so as vec4s where `bits` is a multiple
/// of 4, vec2s where it is even (one 16- or 8-byte load instead of four or two), else one by one.
fn gemv_code_width(bits: u32) -> u32 {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if crate::device::switched_off(&OFF, "LUTLAB_GEMV_VEC4") || GEMV_SCALAR_WORDS.load(std::sync::atomic::Ordering::Relaxed) {
        return 1;
    }
    match bits % 4 {
        0 => 4,
        2 => 2,
        _ => 1,
    }
}

/// The WGSL type `qweight` is bound as, for `width` code words per load.
fn code_word(width: u32) -> &'static str {
    match width {
        4 => "vec4<u32>",
        2 => "vec2<u32>",
        _ => "u32",
    }
}

/// Columns per lane of the scalar GEMV.
fn gemv_columns_per_lane() -> usize {
    match GEMV_COLUMNS_PER_LANE_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => GEMV_COLUMNS_PER_LANE,
        n => n.clamp(1, 4),
    }
}

/// Columns a scalar GEMV workgroup multiplies.
pub fn gemv_columns() -> usize {
    GEMV_SLICES * gemv_columns_per_lane()
}

/// `(splits, blocks per split)` of a GEMV over `blocks` blocks of rows and `cols` columns, in
/// workgroups of `tile` columns.
pub fn gemv_splits(tile: usize, cols: usize, blocks: usize) -> (usize, usize) {
    let tiles = cols.div_ceil(tile);
    let target = match GEMV_TARGET_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => GEMV_TARGET_WORKGROUPS,
        n => n,
    };
    let wanted = (target / tiles).clamp(1, blocks.div_ceil(GEMV_MIN_BLOCKS_PER_SPLIT).max(1));
    let mut per_split = blocks.div_ceil(wanted).max(1);
    // A scalar GEMV's lanes take one block of each chunk of 32: a matrix of several chunks splits
    // on chunk boundaries, so that no lane idles in a split's last chunk.
    if blocks >= GEMV_CHUNK_BLOCKS {
        per_split = per_split.next_multiple_of(GEMV_CHUNK_BLOCKS);
    }
    (blocks.div_ceil(per_split).max(1), per_split)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shader {
    Gemv,
    GemvReduce,
    Dequantize,
    VectorGemv,
}

/// One compiled variant of a LUT kernel: the code width and the weights per code (`dim`) are
/// compile-time constants, and the GEMV has variants for its columns per lane and for
/// input-group scales.
#[derive(Debug)]
struct LutKernel {
    shader: Shader,
    /// Bits per code (per weight for scalar tables).
    bits: u32,
    dim: u32,
    shared_tables: bool,
    grouped: bool,
    cols_per_lane: u32,
    /// Code words per load in the scalar GEMV (1, 2 or 4: `qweight` bound as u32, vec2 or vec4).
    code_width: u32,
}

impl LutKernel {
    /// The scalar GEMV: its tables staged in workgroup memory when 32 columns' worth fit.
    fn scalar_gemv(bits: u32, grouped: bool) -> Self {
        Self { shader: Shader::Gemv, bits, shared_tables: bits <= 6, grouped, code_width: gemv_code_width(bits), ..Self::default() }
    }
}

/// The WGSL of the scalar GEMV (`grouped`: with input-group scales) and of its reduce pass,
/// exactly as the model launches them, for benchmarks that run them on their own pipelines.
pub fn scalar_gemv_sources(bits: u32, grouped: bool) -> (String, String) {
    let reduce = LutKernel { shader: Shader::GemvReduce, ..LutKernel::default() };
    (LutKernel::scalar_gemv(bits, grouped).source().complete(), reduce.source().complete())
}

impl Default for LutKernel {
    fn default() -> Self {
        Self { shader: Shader::Gemv, bits: 1, dim: 1, shared_tables: false, grouped: false, cols_per_lane: gemv_columns_per_lane() as u32, code_width: 1 }
    }
}

impl KernelSource for LutKernel {
    fn source(&self) -> SourceTemplate {
        if self.shader == Shader::Dequantize {
            return SourceTemplate::new(kernel_body(self.shader)).register("bits", self.bits.to_string()).register("dim", self.dim.to_string());
        }
        let template = SourceTemplate::new(include_str!("../../../shaders/lut_common.wgsl"))
            .add_template(kernel_body(self.shader))
            .register("bits", self.bits.to_string())
            .register("dim", self.dim.to_string())
            .register("shared_tables", self.shared_tables.to_string())
            .register("cols_per_lane", self.cols_per_lane.to_string())
            .register("code_word", code_word(self.code_width));
        let decode = gemv_decode(self.bits, self.cols_per_lane, self.grouped, self.code_width);
        template.register("columns", decode.columns).register("decode", decode.decode).register("sums", decode.sums)
    }

    fn id(&self) -> KernelId {
        kernel_id::<Self>().info((self.shader, self.bits, self.dim, self.shared_tables, self.grouped, self.cols_per_lane, self.code_width))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// The WGSL of a kernel, without `lut_common.wgsl` (bindings and epilogue), which goes first
/// (except for the dequantization, which has its own bindings).
fn kernel_body(shader: Shader) -> &'static str {
    match shader {
        Shader::Gemv => include_str!("../../../shaders/lut_gemv.wgsl"),
        Shader::GemvReduce => include_str!("../../../shaders/lut_gemv_reduce.wgsl"),
        Shader::Dequantize => include_str!("../../../shaders/lut_dequantize.wgsl"),
        Shader::VectorGemv => include_str!("../../../shaders/lut_vector_gemv.wgsl"),
    }
}

/// The host-written parts of `lut_gemv.wgsl` for `bits` per code, `r` columns per lane and
/// optional input-group scales: generated per variant because GPU compilers keep arrays with
/// computed indices in slow local memory; literal shifts and names leave them nothing to guess.
struct GemvDecode {
    /// Before the chunk loop: each of the lane's columns `c{i}` (clamped to the last), where its
    /// code words start (`words{i}`), its table (`table{i}`) and two accumulators.
    columns: String,
    /// One block `k` of 32 rows: the 8 staged input vec4s, every column's `bits` words (all loads
    /// issued before the first multiply-add: a GEMV waits on memory, not arithmetic), then each
    /// column's 32 lookups and multiply-adds.
    decode: String,
    /// After the loop: the lane's column sums into `sums` (one component per column).
    sums: String,
}

fn gemv_decode(bits: u32, r: u32, grouped: bool, width: u32) -> GemvDecode {
    let mut columns = String::new();
    for i in 0..r {
        columns += &format!("    let c{i} = min(first + {i}u, cols - 1u);
");
        columns += &format!("    let words{i} = c{i} * blocks * BITS;
");
        columns += &format!("    let table{i} = select(c{i} / channels_per_table * LEVELS, (lid.y * R + {i}u) * LEVELS, SHARED_TABLES);
");
        columns += &format!("    var acc{i}_0 = 0.0;
    var acc{i}_1 = 0.0;
");
    }
    let mut decode = String::new();
    for q in 0..8 {
        decode += &format!("{INDENT}let x{q} = xs[xk + {q}u];
");
    }
    for i in 0..r {
        if width == 1 {
            for j in 0..bits {
                decode += &format!("{INDENT}let w{i}_{j} = qweight[words{i} + k * BITS + {j}u];
");
            }
            continue;
        }
        // The block's words as `bits / width` vectors (its first word's index is a multiple of
        // `bits`, so of `width`), then named one by one for the lookups.
        for g in 0..bits / width {
            decode += &format!("{INDENT}let v{i}_{g} = qweight[(words{i} + k * BITS) / {width}u + {g}u];
");
        }
        for j in 0..bits {
            decode += &format!("{INDENT}let w{i}_{j} = v{i}_{}.{};
", j / width, ["x", "y", "z", "w"][(j % width) as usize]);
        }
    }
    if grouped {
        decode += &format!("{INDENT}let xsum = dot((x0 + x1) + (x2 + x3) + ((x4 + x5) + (x6 + x7)), vec4<f32>(1.0));
");
    }
    for i in 0..r {
        decode += &block_multiply_adds(bits, i, grouped);
    }
    let parts: Vec<String> = (0..4).map(|i| if i < r { format!("acc{i}_0 + acc{i}_1") } else { "0.0".into() }).collect();
    let sums = format!("    sums = vec4<f32>({});
", parts.join(", "));
    GemvDecode { columns, decode, sums }
}

const INDENT: &str = "            ";

/// Column `i`'s 32 codes of block `k`, held in words `w{i}_0..`, each looked up in its table and
/// multiplied by its input in `x0..x7`, into two accumulators. With input groups a block lies in
/// one group, whose weights are `(entry − zero) · scale`, so the block's products of plain
/// entries are summed first and then `acc += scale · (Σ entry·x − zero · Σ x)`: two group loads
/// per block and column, not per weight.
fn block_multiply_adds(bits: u32, i: u32, grouped: bool) -> String {
    let mut out = String::new();
    if grouped {
        out += &format!("{INDENT}{{
{INDENT}var g0 = 0.0;
{INDENT}var g1 = 0.0;
");
    }
    for n in 0..32 {
        let (word, shift) = ((n * bits) / 32, (n * bits) % 32);
        let code = match shift {
            0 => format!("w{i}_{word}"),
            s if s + bits > 32 => format!("((w{i}_{word} >> {s}u) | (w{i}_{} << {}u))", word + 1, 32 - s),
            s => format!("(w{i}_{word} >> {s}u)"),
        };
        let lane = ["x", "y", "z", "w"][(n % 4) as usize];
        let sum = if grouped { format!("g{}", n % 2) } else { format!("acc{i}_{}", n % 2) };
        out += &format!("{INDENT}{sum} += x{}.{lane} * lut(table{i} + ({code} & MASK));
", n / 4);
    }
    if grouped {
        out += &format!("{INDENT}acc{i}_0 += group_scale(k, c{i}) * ((g0 + g1) - group_zero(k, c{i}) * xsum);
{INDENT}}}
");
    }
    out
}

/// The code words of a packed layer as the GPU keeps them: column by column (`[cols, blocks,
/// bits]`) instead of the file's `[blocks · bits, cols]`, so that a column's codes are one
/// contiguous run for the GEMV. The same word values, permuted.
pub fn column_major(qweight: &[u32], blocks: usize, bits: usize, cols: usize) -> Vec<u32> {
    let mut out = vec![0u32; qweight.len()];
    for (row, words) in qweight.chunks_exact(cols).enumerate() {
        let (k, j) = (row / bits, row % bits);
        for (c, &w) in words.iter().enumerate() {
            out[(c * blocks + k) * bits + j] = w;
        }
    }
    out
}

/// The cache key of one of our WGSL kernels, compiled without the loop counters naga adds to
/// every loop of a kernel launched in cubecl's checked mode (`force_loop_bounding`), which keep
/// the driver from unrolling our fixed-count inner loops. Our loops all have bounds the kernel
/// computes; buffer bounds are the kernels' own checks either way (cubecl turns wgpu's off).
pub(crate) fn kernel_id<K: 'static>() -> KernelId {
    KernelId::new::<K>().mode(ExecutionMode::Unchecked)
}

pub(crate) fn primitive<const D: usize, K>(tensor: Tensor<D, K>) -> Result<CubeTensor>
where
    K: burn::tensor::BackendPrimitive<Wgpu, Primitive = CubeTensor> + burn::tensor::kind::Basic,
{
    tensor.try_into_primitive::<Wgpu>().map_err(|e| ModelError::Gpu(format!("LUT kernels need the wgpu device: {e:?}")))
}

/// u32 words as a burn int tensor (i32 bits; the kernels read them as u32).
fn upload_u32(words: &[u32], device: &Device) -> Result<CubeTensor> {
    let as_i32: Vec<i32> = words.iter().map(|&w| w as i32).collect();
    primitive(Tensor::<1, Int>::from_data(TensorData::new(as_i32, [words.len()]), device))
}

