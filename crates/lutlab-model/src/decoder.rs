//! The decoder on burn: ONE block implementation for every family the architecture description
//! knows (GPT-2, OPT, Llama; `lutlab_core::config`), used by evaluation, generation, Fisher
//! (through per-sample linears) and the activation statistics (through the block's input sink).
//!
//! The block: `x + attn(norm_1(x))`, then `x + mlp(norm_2(x))` (post-LN OPT normalizes after each
//! residual add instead). Attention projects q, k, v (GPT-2: one fused linear), applies rotary
//! embeddings when the family has them, lets each query head read key/value head `h / (H / KV)`
//! (grouped-query attention) and masks the future. The MLP is two matrices around GELU or ReLU,
//! or SwiGLU's three.

use crate::device::upload;
use crate::error::Result;
use crate::input_quant::InputQuantizer;
use crate::lut_linear::PackedGpuLayer;
use burn::tensor::{activation, Bool, DType, Device, Int, Tensor, TensorData};
use lutlab_core::config::{Activation, LinearLayout, Positions};
use lutlab_core::packed_file::PackedModel;
use lutlab_core::quant::head::{transpose, HEAD};
use lutlab_core::quant::inputs::{InputMultipliers, InputQuantization};
use lutlab_core::reference::Rope;
use lutlab_core::weights::{BlockWeights, EdgeWeights, LinearWeights, NormWeights, StoredBlock};
use lutlab_core::Checkpoint;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use lutlab_core::{HostTensor, LoadError, ModelConfig, ModelWeights};

/// LayerNorm (biased variance, as PyTorch) or RMSNorm over the last dimension.
#[derive(Clone, Debug)]
pub struct Norm {
    pub gamma: Tensor<1>,
    /// `None` for RMSNorm.
    pub beta: Option<Tensor<1>>,
    eps: f64,
}

impl Norm {
    fn new(w: &NormWeights, eps: f64, device: &Device) -> Self {
        Self { gamma: upload1(&w.gamma, device), beta: w.beta.as_ref().map(|b| upload1(b, device)), eps }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let Some(y) = crate::fused::in_model().then(|| crate::fused::norm(&x, &self.gamma, self.beta.as_ref(), self.eps)).flatten() {
            return y;
        }
        let gamma = self.gamma.clone().unsqueeze::<3>();
        match &self.beta {
            Some(beta) => {
                let (var, mean) = x.clone().var_mean_bias(2);
                (x - mean) / (var + self.eps).sqrt() * gamma + beta.clone().unsqueeze::<3>()
            }
            None => {
                let mean_square = x.clone().powi_scalar(2).mean_dim(2);
                x / (mean_square + self.eps).sqrt() * gamma
            }
        }
    }

    /// The same norm with its parameters moved by `f` (onto the autodiff device, say).
    pub fn map(&self, f: impl Fn(Tensor<1>) -> Tensor<1>) -> Self {
        Self { gamma: f(self.gamma.clone()), beta: self.beta.clone().map(&f), eps: self.eps }
    }
}

/// A linear layer `y = x · W + b`, `W: [in, out]`: a dense tensor (burn's matmul), packed LUT
/// codes (lutlab's LUT kernels, bias fused), or per-sample copies of a dense weight (Fisher: a
/// `[B, in, out]` leaf that sample `b` multiplies by, so each sample's gradient is its own).
/// A model holds a few dozen of these, so the variants' size difference costs nothing worth an
/// indirection on the dense path.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Linear {
    Dense { weight: Tensor<2>, bias: Tensor<1> },
    Packed(Box<PackedGpuLayer>),
    PerSample { weight: Tensor<3>, bias: Tensor<1> },
}

impl Linear {
    pub fn new(w: &LinearWeights, device: &Device) -> Self {
        Self::Dense { weight: upload2(&w.weight, device), bias: upload1(&w.bias, device) }
    }

    /// The layer with a dense weight stored in `dtype` (packed layers keep their LUT kernels).
    pub fn stored_as(self, dtype: DType) -> Self {
        match self {
            Self::Dense { weight, bias } => Self::Dense { weight: stored_as(weight, dtype), bias },
            other => other,
        }
    }

    /// The dense weight and bias, or `None` for a packed layer.
    pub fn dense(&self) -> Option<(&Tensor<2>, &Tensor<1>)> {
        match self {
            Self::Dense { weight, bias } => Some((weight, bias)),
            Self::Packed(_) | Self::PerSample { .. } => None,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // Dense and packed layers multiply `[B·T, in]` rows; per-sample copies multiply each
        // sample's rows by its own weight.
        let rows = |x: Tensor<3>, f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let [b, t, n_in] = x.dims();
            let y = f(x.reshape([b * t, n_in]));
            let n_out = y.dims()[1];
            y.reshape([b, t, n_out])
        };
        match self {
            Self::Dense { weight, bias } => rows(x, &|x| matmul_in(x, weight.clone(), weight.dtype()) + bias.clone().unsqueeze::<2>()),
            Self::Packed(layer) => rows(x, &|x| layer.forward(x)),
            Self::PerSample { weight, bias } => crate::gemm::model_matmul(x, weight.clone()) + bias.clone().unsqueeze::<3>(),
        }
    }
}

/// `a · b` computed in `dtype`: f32 as is; in half precision the operands are rounded to it
/// (weights stored so already), burn's matmul accumulates in f32, and the product is widened
/// back to f32, so norms, softmax and the residual stream stay f32 (`--dtype`).
pub fn matmul_in<const D: usize>(a: Tensor<D>, b: Tensor<D>, dtype: DType) -> Tensor<D> {
    if dtype == DType::F32 {
        return crate::gemm::model_matmul(a, b);
    }
    a.cast(dtype).matmul(b.cast(dtype)).cast(DType::F32)
}

/// A weight in `dtype` (a no-op for f32).
fn stored_as<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if dtype == DType::F32 { t } else { t.cast(dtype) }
}

/// The host tensors outside the blocks, borrowed for upload (from a whole model or a streamed
/// one's `EdgeWeights`).
struct Edges<'a> {
    wte: &'a HostTensor,
    wpe: Option<&'a HostTensor>,
    ln_f: Option<&'a NormWeights>,
    lm_head: Option<&'a HostTensor>,
    project_in: Option<&'a LinearWeights>,
    project_out: Option<&'a LinearWeights>,
}

/// One decoder block: its norms, its linears in `ModelConfig::block_linears` order, and, with
/// input quantization, one input quantizer per linear in the same order.
#[derive(Clone, Debug)]
pub struct Block {
    pub norm_1: Norm,
    pub norm_2: Norm,
    pub linears: Vec<Linear>,
    pub inputs: Option<Arc<Vec<InputQuantizer>>>,
}

impl Block {
    /// Uploads one streamed block from its checkpoint's bytes: each linear's weight as stored,
    /// widened and laid out `[in, out]` on the GPU (`widen.rs`).
    pub fn upload_stored(w: &StoredBlock, eps: f64, device: &Device) -> Result<Self> {
        let linears = w
            .linears
            .iter()
            .map(|l| Ok(Linear::Dense { weight: crate::widen::upload_weight(l, device)?, bias: upload1(&l.bias, device) }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Block { norm_1: Norm::new(&w.norm_1, eps, device), norm_2: Norm::new(&w.norm_2, eps, device), linears, inputs: None })
    }

    /// Uploads checked host weights of one block.
    pub fn upload(w: &BlockWeights, eps: f64, device: &Device) -> Self {
        Block {
            norm_1: Norm::new(&w.norm_1, eps, device),
            norm_2: Norm::new(&w.norm_2, eps, device),
            linears: w.linears.iter().map(|l| Linear::new(l, device)).collect(),
            inputs: None,
        }
    }

    /// The block with its dense weights stored in `dtype`.
    pub fn stored_as(self, dtype: DType) -> Self {
        Self { linears: self.linears.into_iter().map(|l| l.stored_as(dtype)).collect(), ..self }
    }
}

/// Watches [`Decoder::run_blocks`] (or a caller's own walk over [`run_block`]): the activation
/// statistics and the Hessians read each block's linear inputs.
pub trait BlockVisitor {
    /// The inputs of block `index`'s linears for one state, in `block_linears` order (q, k and
    /// v, gate and up, each get their shared input).
    fn inputs(&mut self, index: usize, inputs: Vec<Tensor<3>>) -> Result<()>;
}

/// Block `index`'s linear inputs on every state, handed to `visitor`, without the block's output
/// (its last product is skipped): the states stay as they are. GPTQ's Hessian pass, whose
/// outputs the quantized block computes again.
pub fn visit_block_inputs(index: usize, block: &Block, states: &[(BlockContext, Tensor<3>)], visitor: &mut dyn BlockVisitor) -> Result<()> {
    for (ctx, x) in states {
        let mut inputs = Vec::new();
        block.run(ctx, x.clone(), Some(&mut inputs), None, false);
        visitor.inputs(index, inputs)?;
    }
    Ok(())
}

/// One step of the layer loop: block `index` (`block`) on every state. Sequential quantization
/// (GPTQ) walks the blocks itself with this step, so that it can replace each block by its
/// quantized form, between awaits for the Hessians, before the states go on.
pub fn run_block<'v>(index: usize, block: &Block, states: &mut [(BlockContext, Tensor<3>)], mut visitor: Option<&mut (dyn BlockVisitor + 'v)>) -> Result<()> {
    for (ctx, x) in states.iter_mut() {
        let mut inputs = Vec::new();
        let keep = visitor.is_some().then_some(&mut inputs);
        *x = block.forward(ctx, x.clone(), keep);
        if let Some(v) = visitor.as_deref_mut() {
            v.inputs(index, inputs)?;
        }
    }
    Ok(())
}

/// Where a decoder's blocks are: uploaded once, or (a model larger than the GPU or host memory
/// should hold at once) read from the checkpoint and uploaded each time they are used, so the
/// GPU holds one block's weights at a time. Callers walk the blocks with [`Decoder::block`], one
/// layer loop for both.
#[derive(Clone, Debug)]
pub enum Blocks {
    Resident(Vec<Block>),
    /// The checkpoint, and the host buffer each block's weights are read into on their way
    /// to the GPU (one buffer for every block, so its pages are faulted in once).
    Streamed { checkpoint: Arc<Checkpoint<'static>>, scratch: Arc<Mutex<Vec<u8>>> },
}

/// What a block needs besides its weights, for `t` positions starting at position `start` on one
/// device: the causal mask and the rotary tables.
#[derive(Clone, Debug)]
pub struct BlockContext {
    pub config: ModelConfig,
    /// `[1, 1, T, start + T]`, 0 or -inf: query `i` (position `start + i`) sees keys `0..=start + i`.
    pub causal: Tensor<4>,
    /// `cos` and `sin` `[1, 1, T, head_dim]` (each half repeated) of positions `start..start + T`,
    /// with RoPE.
    pub rope: Option<(Tensor<4>, Tensor<4>)>,
    /// What attention's two products run in (f32, or the decoder's half precision).
    pub compute: DType,
}

impl BlockContext {
    /// For a whole sequence of `t` positions.
    pub fn new(config: &ModelConfig, t: usize, device: &Device) -> Self {
        Self::at(config, 0, t, device)
    }

    /// For `t` new positions after `start` cached ones (a KV-cached generation step).
    pub fn at(config: &ModelConfig, start: usize, t: usize, device: &Device) -> Self {
        let future = Tensor::<2, Bool>::tril_mask([t, start + t], start as i64, device);
        let causal = Tensor::<2>::zeros([t, start + t], device).mask_fill(future, f32::NEG_INFINITY).unsqueeze::<4>();
        let rope = Rope::new(config, start + t).map(|r| {
            let full = |half: &[f32]| -> Tensor<4> {
                let rows: Vec<f32> = half.chunks_exact(r.half).skip(start).flat_map(|row| row.iter().chain(row).copied()).collect();
                upload(&rows, [t, 2 * r.half], device).unsqueeze::<4>()
            };
            (full(&r.cos), full(&r.sin))
        });
        Self { config: config.clone(), causal, rope, compute: DType::F32 }
    }

    /// The same context with its tensors moved by `f` (onto the autodiff device, say).
    pub fn map(&self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self { config: self.config.clone(), causal: f(self.causal.clone()), rope: self.rope.clone().map(|(c, s)| (f(c), f(s))), compute: self.compute }
    }
}

/// One block's keys and values of the positions seen so far `[B, KV, S, D]` (after RoPE, before
/// grouped heads are repeated): what a generation step attends to without recomputing them.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys and values; returns all of them.
    fn extend(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let join = |old: Option<Tensor<4>>, new: Tensor<4>| match old {
            Some(old) => Tensor::cat(vec![old, new], 2),
            None => new,
        };
        let (k, v) = (join(self.keys.take(), k), join(self.values.take(), v));
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        (k, v)
    }
}

impl Block {
    /// The block on the residual stream `x` `[B, T, C]`. With `inputs`, the input of each
    /// linear is pushed there in `block_linears` order (what seed 000's centering averages);
    /// with `cache`, attention also sees the cached positions and this step's are added.
    pub fn forward(&self, ctx: &BlockContext, x: Tensor<3>, inputs: Option<&mut Vec<Tensor<3>>>) -> Tensor<3> {
        self.forward_cached(ctx, x, inputs, None)
    }

    /// [`Self::forward`] with an optional KV cache (`ctx` made by [`BlockContext::at`] with
    /// `start` = the positions cached).
    pub fn forward_cached(&self, ctx: &BlockContext, x: Tensor<3>, inputs: Option<&mut Vec<Tensor<3>>>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.run(ctx, x, inputs, cache, true).unwrap_or_else(|| unreachable!("the block's output was asked for"))
    }

    /// The block, its output only when `output` (else it stops after the last linear's input).
    fn run(&self, ctx: &BlockContext, x: Tensor<3>, mut inputs: Option<&mut Vec<Tensor<3>>>, cache: Option<&mut KvCache>, output: bool) -> Option<Tensor<3>> {
        let config = &ctx.config;
        let mut keep = |t: &Tensor<3>| {
            if let Some(sink) = inputs.as_deref_mut() {
                sink.push(t.clone());
            }
        };
        let l = &self.linears;
        // Linear `j`'s input as it multiplies: quantized when the block quantizes inputs.
        let quantized = |j: usize, x: Tensor<3>| match &self.inputs {
            Some(q) => q[j].forward(x),
            None => x,
        };
        // The inputs of linears `group`, which share `x` (q, k and v; gate and up): quantized once,
        // by the first of them, unless input multipliers give each its own.
        let shared = |group: Range<usize>, x: Tensor<3>| -> Vec<Tensor<3>> {
            match &self.inputs {
                Some(q) if group.clone().any(|j| q[j].has_multiplier()) => group.map(|j| q[j].forward(x.clone())).collect(),
                _ => vec![quantized(group.start, x); group.len()],
            }
        };
        let pre = |norm: &Norm, x: &Tensor<3>| if config.pre_norm { norm.forward(x.clone()) } else { x.clone() };

        let h = pre(&self.norm_1, &x);
        let [b, t, _] = h.dims();
        let (q, k, v, out) = if config.fused_qkv() {
            keep(&h);
            let qkv = l[0].forward(quantized(0, h));
            let c = config.n_embd;
            let part = |i: usize| qkv.clone().slice([0..b, 0..t, i * c..(i + 1) * c]);
            (part(0), part(1), part(2), 1)
        } else {
            (0..3).for_each(|_| keep(&h));
            let h = shared(0..3, h);
            (l[0].forward(h[0].clone()), l[1].forward(h[1].clone()), l[2].forward(h[2].clone()), 3)
        };
        let mixed = attention(ctx, q, k, v, cache);
        keep(&mixed);
        let mut x = x + l[out].forward(quantized(out, mixed));
        if !config.pre_norm {
            x = self.norm_1.forward(x);
        }

        let h = pre(&self.norm_2, &x);
        let mlp = &l[out + 1..];
        let hidden = match config.activation {
            Activation::SwiGlu => {
                keep(&h);
                keep(&h);
                let h = shared(out + 1..out + 3, h);
                activation::silu(mlp[0].forward(h[0].clone())) * mlp[1].forward(h[1].clone())
            }
            Activation::GeluTanh => {
                keep(&h);
                let x = mlp[0].forward(quantized(out + 1, h));
                crate::fused::in_model().then(|| crate::fused::gelu_tanh(&x)).flatten().unwrap_or_else(|| activation::gelu_approximate(x))
            }
            Activation::Relu => {
                keep(&h);
                activation::relu(mlp[0].forward(quantized(out + 1, h)))
            }
        };
        keep(&hidden);
        if !output {
            return None;
        }
        let down = mlp.len() - 1;
        let mut x = x + mlp[down].forward(quantized(out + 1 + down, hidden));
        if !config.pre_norm {
            x = self.norm_2.forward(x);
        }
        Some(x)
    }
}

/// Causal self-attention from projected `q` `[B, T, H·D]` and `k`, `v` `[B, T, KV·D]`, up to (not
/// including) the output projection: the heads merged back to `[B, T, H·D]`.
fn attention(ctx: &BlockContext, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, cache: Option<&mut KvCache>) -> Tensor<3> {
    let config = &ctx.config;
    let [b, t, _] = q.dims();
    let (h, kv, d) = (config.n_head, config.n_kv_head, config.head_dim);
    let heads = |x: Tensor<3>, n: usize| x.reshape([b, t, n, d]).swap_dims(1, 2);
    let (mut q, mut k, mut v) = (heads(q, h), heads(k, kv), heads(v, kv));
    if let Some((cos, sin)) = &ctx.rope {
        q = rotate(q, cos, sin);
        k = rotate(k, cos, sin);
    }
    if let Some(cache) = cache {
        (k, v) = cache.extend(k, v);
    }
    let s = k.dims()[2];
    if kv < h {
        // Query head `j` reads key/value head `j / group`.
        let group = h / kv;
        let repeat = |x: Tensor<4>| x.unsqueeze_dim::<5>(2).repeat_dim(2, group).reshape([b, h, s, d]);
        k = repeat(k);
        v = repeat(v);
    }
    let scores = matmul_in(q, k.swap_dims(2, 3), ctx.compute);
    let scale = 1.0 / (d as f64).sqrt();
    let fused = crate::fused::in_model().then(|| crate::fused::masked_softmax(&scores, scale, &ctx.causal)).flatten();
    let probabilities = match fused {
        Some(p) => p,
        None => activation::softmax(scores / (d as f64).sqrt() + ctx.causal.clone(), 3),
    };
    matmul_in(probabilities, v, ctx.compute).swap_dims(1, 2).reshape([b, t, h * d])
}

/// Rotary embedding with HF's `rotate_half` pairing: `x · cos + [−x₂, x₁] · sin`.
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// A whole model on the GPU: embeddings, blocks, final norm, LM head.
#[derive(Clone, Debug)]
pub struct Decoder {
    pub config: ModelConfig,
    /// The token embedding `[vocab, embed_dim]`; the head's weight too when tied and not packed.
    pub wte: Tensor<2>,
    /// An untied dense LM head `[vocab, embed_dim]`.
    pub lm_head: Option<Tensor<2>>,
    /// The LM head packed (a packed model with quantized embeddings): logits come from its codes
    /// through the LUT kernels (and, tied, `wte` holds the same matrix's rows dequantized).
    pub head: Option<Box<PackedGpuLayer>>,
    /// Learned positions `[rows, C]` (OPT's first `offset` rows unused).
    pub wpe: Option<Tensor<2>>,
    pub blocks: Blocks,
    pub ln_f: Option<Norm>,
    pub project_in: Option<Linear>,
    pub project_out: Option<Linear>,
    /// Input quantization of every linear (and, if asked, the head): see [`Self::quantize_inputs`].
    pub input_quant: Option<Arc<InputQuantization>>,
    /// The LM head's input quantizer (`--quantize-last-layer`).
    pub head_input: Option<InputQuantizer>,
    /// Each linear's explicit input multiplier (a packed layer's `input_scale`), which input
    /// quantization applies before it rounds (`lutlab_core::quant::inputs`); empty for a float model.
    pub input_multipliers: InputMultipliers,
    /// What the dense weights are stored and multiplied in: f32, or f16 (`Self::stored_as`).
    pub dtype: DType,
}

impl Decoder {
    /// Uploads checked host weights to `device`.
    pub fn new(weights: &ModelWeights, device: &Device) -> Self {
        Self::new_as(weights, device, DType::F32)
    }

    /// [`Self::new`] with the dense weights stored in `dtype` ([`Self::stored_as`]), each block
    /// converted as it uploads, so the GPU never holds the whole model in f32.
    pub fn new_as(weights: &ModelWeights, device: &Device, dtype: DType) -> Self {
        let eps = weights.config.norm_eps;
        let blocks = weights.blocks.iter().map(|b| Block::upload(b, eps, device).stored_as(dtype)).collect();
        let edges = Edges {
            wte: &weights.wte,
            wpe: weights.wpe.as_ref(),
            ln_f: weights.ln_f.as_ref(),
            lm_head: weights.lm_head.as_ref(),
            project_in: weights.project_in.as_ref(),
            project_out: weights.project_out.as_ref(),
        };
        Self::with_blocks(&weights.config, edges, Blocks::Resident(blocks), device).stored_as(dtype)
    }

    /// A model streamed from `checkpoint`: the embeddings, final norm and head are uploaded now,
    /// each block when it is used (and dropped after). Every block's tensors are checked (names,
    /// shapes) before anything runs, so a bad checkpoint fails here, not hours in.
    pub fn streamed(config: &ModelConfig, checkpoint: Checkpoint<'static>, device: &Device) -> Result<Self> {
        let e = EdgeWeights::read(config, &checkpoint)?;
        lutlab_core::weights::check_layout(config, &checkpoint)?;
        let edges = Edges {
            wte: &e.wte,
            wpe: e.wpe.as_ref(),
            ln_f: e.ln_f.as_ref(),
            lm_head: e.lm_head.as_ref(),
            project_in: e.project_in.as_ref(),
            project_out: e.project_out.as_ref(),
        };
        Ok(Self::with_blocks(config, edges, Blocks::Streamed { checkpoint: Arc::new(checkpoint), scratch: Arc::default() }, device))
    }

    fn with_blocks(config: &ModelConfig, edges: Edges<'_>, blocks: Blocks, device: &Device) -> Self {
        let eps = config.norm_eps;
        Self {
            config: config.clone(),
            wte: upload2(edges.wte, device),
            lm_head: edges.lm_head.map(|t| upload2(t, device)),
            head: None,
            wpe: edges.wpe.map(|t| upload2(t, device)),
            blocks,
            ln_f: edges.ln_f.map(|n| Norm::new(n, eps, device)),
            project_in: edges.project_in.map(|l| Linear::new(l, device)),
            project_out: edges.project_out.map(|l| Linear::new(l, device)),
            input_quant: None,
            head_input: None,
            input_multipliers: InputMultipliers::new(),
            dtype: DType::F32,
        }
    }

    /// From now on every linear's input is fake-quantized by `q` (static scales from
    /// `input_quant::calibrate_inputs`); every width and static scale is checked first.
    pub fn quantize_inputs(&mut self, q: InputQuantization) -> Result<()> {
        q.settings.validate()?;
        for (name, spec) in self.config.linear_names() {
            q.settings.check_width(spec.n_in, &name)?;
        }
        // Everything is built before anything changes, so a refused setting leaves the model as it was.
        let head_input = if q.settings.quantize_head {
            q.settings.check_width(self.config.embed_dim, HEAD)?;
            Some(InputQuantizer::new(q.settings, q.fixed(HEAD)?)?)
        } else {
            None
        };
        let device = self.device();
        let quantizers = (0..self.n_blocks()).map(|i| block_input_quantizers(&self.config, &q, i, &device)).collect::<Result<Vec<_>>>()?;
        self.head_input = head_input;
        if let Blocks::Resident(blocks) = &mut self.blocks {
            blocks.iter_mut().zip(quantizers).for_each(|(block, q)| block.inputs = Some(Arc::new(q)));
        }
        self.input_quant = Some(Arc::new(q));
        Ok(())
    }

    /// The model with its dense weights (blocks' linears, embedding, head, projections) stored and
    /// multiplied in `dtype` (f32 or f16; the caller checks the adapter has f16): half the GPU
    /// memory of the weights, f32 accumulation, f32 norms and softmax. Packed layers keep their
    /// f32 LUT kernels; a streamed model converts each block as it uploads it.
    pub fn stored_as(self, dtype: DType) -> Self {
        let blocks = match self.blocks {
            Blocks::Resident(blocks) => Blocks::Resident(blocks.into_iter().map(|b| b.stored_as(dtype)).collect()),
            streamed => streamed,
        };
        Self {
            wte: stored_as(self.wte, dtype),
            lm_head: self.lm_head.map(|t| stored_as(t, dtype)),
            project_in: self.project_in.map(|l| l.stored_as(dtype)),
            project_out: self.project_out.map(|l| l.stored_as(dtype)),
            blocks,
            dtype,
            ..self
        }
    }

    /// Block `index`: the resident one, or read and uploaded now (streamed).
    pub fn block(&self, index: usize) -> Result<Cow<'_, Block>> {
        match &self.blocks {
            Blocks::Resident(blocks) => blocks
                .get(index)
                .map(Cow::Borrowed)
                .ok_or_else(|| LoadError::InvalidSetting(format!("block {index} of a {}-block model", blocks.len())).into()),
            Blocks::Streamed { checkpoint, scratch } => {
                // A poisoned lock only means another thread panicked mid-read: the buffer is reusable.
                let mut scratch = scratch.lock().unwrap_or_else(|e| e.into_inner());
                let phase = lutlab_core::profile::start();
                let weights = StoredBlock::read(&self.config, checkpoint, index, &mut scratch)?;
                lutlab_core::profile::stop("block read from the checkpoint (host)", phase);
                let mut block = Block::upload_stored(&weights, self.config.norm_eps, &self.device())?.stored_as(self.dtype);
                if let Some(q) = &self.input_quant {
                    block.inputs = Some(Arc::new(block_input_quantizers(&self.config, q, index, &self.device())?));
                }
                Ok(Cow::Owned(block))
            }
        }
    }

    pub fn n_blocks(&self) -> usize {
        self.config.n_layer
    }

    /// Whether blocks are read from the checkpoint as they are used.
    pub fn is_streamed(&self) -> bool {
        matches!(self.blocks, Blocks::Streamed { .. })
    }

    /// Uploads a packed model: its packed linear layers run through the LUT kernels straight
    /// from their codes (never expanded to dense weights), everything else as stored. `device`
    /// must be a plain (not autodiff) wgpu device. The model was validated when it was parsed.
    pub fn from_packed(model: &PackedModel, device: &Device) -> Result<Self> {
        let config = &model.config;
        let eps = config.norm_eps;
        let tensor = |name: &str| model.dense.get(name).ok_or_else(|| LoadError::MissingTensor { name: name.to_string() });
        let norm = |prefix: &str| -> Result<Norm> {
            let beta = if config.has_norm_bias() { Some(upload1(tensor(&format!("{prefix}.bias"))?, device)) } else { None };
            Ok(Norm { gamma: upload1(tensor(&format!("{prefix}.weight"))?, device), beta, eps })
        };
        let linear = |name: &str, n_in: usize, n_out: usize| -> Result<Linear> {
            let zeros = HostTensor::new(vec![n_out], vec![0.0; n_out]);
            let bias = model.dense.get(&format!("{name}.bias")).unwrap_or(&zeros);
            Ok(match model.layers.get(name) {
                Some(packed) => Linear::Packed(Box::new(PackedGpuLayer::upload(packed, Some(&bias.data), device, name)?)),
                None => {
                    let w = tensor(&format!("{name}.weight"))?;
                    let weight = match config.linear_layout() {
                        LinearLayout::InOut => upload2(w, device),
                        LinearLayout::OutIn => upload(&transpose(&w.data, n_out, n_in), [n_in, n_out], device),
                    };
                    Linear::Dense { weight, bias: upload1(bias, device) }
                }
            })
        };
        let [n1, n2] = config.block_norms();
        let specs = config.block_linears();
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = config.block_prefix(i);
            blocks.push(Block {
                norm_1: norm(&format!("{p}.{n1}"))?,
                norm_2: norm(&format!("{p}.{n2}"))?,
                linears: specs.iter().map(|s| linear(&format!("{p}.{}", s.name), s.n_in, s.n_out)).collect::<Result<_>>()?,
                inputs: None,
            });
        }
        let names = config.names();
        let embed = format!("{}.weight", names.embed);
        // A packed head: its kernels give the logits; tied, its dequantized rows the embedding.
        let head = model.layers.get(HEAD);
        let wte = match head {
            Some(packed) if config.tied_head => {
                let rows = transpose(&packed.effective_weights(), packed.rows, packed.cols);
                upload(&rows, [packed.cols, packed.rows], device)
            }
            _ => upload2(tensor(&embed)?, device),
        };
        let lm_head = match head {
            None if !config.tied_head => Some(upload2(tensor(&config.head_weight_name())?, device)),
            _ => None,
        };
        let head = head.map(|packed| PackedGpuLayer::upload(packed, None, device, HEAD).map(Box::new)).transpose()?;
        let projection = |name: Option<&str>, n_in, n_out| name.map(|n| linear(n, n_in, n_out)).transpose();
        Ok(Self {
            config: config.clone(),
            wte,
            lm_head,
            head,
            wpe: names.positions.map(|p| tensor(&format!("{p}.weight")).map(|t| upload2(t, device))).transpose()?,
            blocks: Blocks::Resident(blocks),
            ln_f: if config.final_norm { Some(norm(names.final_norm)?) } else { None },
            project_in: projection(names.project_in, config.embed_dim, config.n_embd)?,
            project_out: projection(names.project_out, config.n_embd, config.embed_dim)?,
            input_quant: None,
            head_input: None,
            input_multipliers: model.input_multipliers(),
            dtype: DType::F32,
        })
    }

    pub fn device(&self) -> Device {
        self.wte.device()
    }

    /// Token ids `[B, T]` as a GPU tensor. Callers check ids with `reference::check_tokens`.
    pub fn tokens(&self, rows: &[&[u32]]) -> Tensor<2, Int> {
        let t = rows.first().map_or(0, |r| r.len());
        let flat: Vec<i32> = rows.iter().flat_map(|r| r.iter().map(|&id| id as i32)).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), t]), &self.device())
    }

    /// The context every block of this model needs for `t` positions.
    pub fn context(&self, t: usize) -> BlockContext {
        BlockContext { compute: self.dtype, ..BlockContext::new(&self.config, t, &self.device()) }
    }

    /// The residual stream entering block 0 `[B, T, C]`: token embeddings (projected in OPT-350m)
    /// plus learned positions where the family has them.
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.embed_at(tokens, 0)
    }

    /// [`Self::embed`] for tokens at positions `start..start + T`.
    pub fn embed_at(&self, tokens: Tensor<2, Int>, start: usize) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let e = self.config.embed_dim;
        let mut x = self.wte.clone().select(0, tokens.reshape([b * t])).reshape([b, t, e]).cast(DType::F32);
        if let Some(project_in) = &self.project_in {
            x = project_in.forward(x);
        }
        if let (Some(wpe), Positions::Learned { offset }) = (&self.wpe, &self.config.positions) {
            let c = self.config.n_embd;
            let first = start + offset;
            x = x + wpe.clone().slice([first..first + t, 0..c]).unsqueeze::<3>();
        }
        x
    }

    /// The final norm and output projection: the LM head's input.
    pub fn finish(&self, x: Tensor<3>) -> Tensor<3> {
        finish(self.ln_f.as_ref(), self.project_out.as_ref(), x)
    }

    /// The final hidden states `[B, T, embed_dim]` (the LM head's input).
    pub fn hidden(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        Ok(self.hidden_batches(vec![tokens])?.remove(0))
    }

    /// [`Self::hidden`] of several batches (each `[B, T]`, shapes may differ), walking the blocks
    /// once. A streamed model reads each block once for all the batches.
    pub fn hidden_batches(&self, batches: Vec<Tensor<2, Int>>) -> Result<Vec<Tensor<3>>> {
        let mut states: Vec<(BlockContext, Tensor<3>)> =
            batches.into_iter().map(|tokens| (self.context(tokens.dims()[1]), self.embed(tokens))).collect();
        self.run_blocks(&mut states, None)?;
        Ok(states.into_iter().map(|(_, x)| self.finish(x)).collect())
    }

    /// THE layer loop: every block, in order, on each residual stream of `states`. With a
    /// `visitor`, each block's linear inputs (see [`Block::forward`]) are handed over per state.
    pub fn run_blocks(&self, states: &mut [(BlockContext, Tensor<3>)], mut visitor: Option<&mut dyn BlockVisitor>) -> Result<()> {
        for i in 0..self.n_blocks() {
            let block = self.block(i)?;
            run_block(i, &block, states, visitor.as_deref_mut())?;
        }
        Ok(())
    }

    /// The final hidden states `[B, T, embed_dim]` of `tokens` at positions `start..start + T`,
    /// attending also to the positions in `caches` (one per block, each holding `start`
    /// positions), which this step extends.
    pub fn hidden_cached(&self, tokens: Tensor<2, Int>, caches: &mut [KvCache]) -> Result<Tensor<3>> {
        let start = caches.first().map_or(0, KvCache::len);
        let t = tokens.dims()[1];
        let ctx = BlockContext { compute: self.dtype, ..BlockContext::at(&self.config, start, t, &self.device()) };
        let mut x = self.embed_at(tokens, start);
        for (i, cache) in caches.iter_mut().enumerate() {
            x = self.block(i)?.forward_cached(&ctx, x, None, Some(cache));
        }
        Ok(self.finish(x))
    }

    /// The dense head weight `[vocab, embed_dim]` (an untied head, or the embedding).
    pub fn head_weight(&self) -> &Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// Logits `[B, T, vocab]` from hidden states (packed: the LUT kernels on the head's codes).
    pub fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let hidden = match &self.head_input {
            Some(q) => q.forward(hidden),
            None => hidden,
        };
        let [b, t, c] = hidden.dims();
        let hidden = hidden.reshape([b * t, c]);
        let logits = match &self.head {
            Some(head) => head.forward(hidden),
            None => matmul_in(hidden, self.head_weight().clone().transpose(), self.dtype),
        };
        logits.reshape([b, t, self.config.vocab_size])
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        Ok(self.lm_head(self.hidden(tokens)?))
    }
}

/// Block `index`'s input quantizers, one per linear in `block_linears` order, each with its
/// layer's input multiplier (uploaded to `device`), if any.
fn block_input_quantizers(config: &ModelConfig, q: &InputQuantization, index: usize, device: &Device) -> Result<Vec<InputQuantizer>> {
    let prefix = config.block_prefix(index);
    let specs = config.block_linears();
    specs
        .iter()
        .map(|s| {
            let name = format!("{prefix}.{}", s.name);
            let quantizer = InputQuantizer::new(q.settings, q.fixed(&name)?)?;
            Ok(match q.multiplier(&name, s.n_in)? {
                Some(m) => quantizer.with_multiplier(m, device),
                None => quantizer,
            })
        })
        .collect()
}

/// What follows the last block: the final norm, then OPT-350m's output projection.
pub fn finish(ln_f: Option<&Norm>, project_out: Option<&Linear>, x: Tensor<3>) -> Tensor<3> {
    let x = match ln_f {
        Some(norm) => norm.forward(x),
        None => x,
    };
    match project_out {
        Some(p) => p.forward(x),
        None => x,
    }
}

fn upload1(t: &HostTensor, device: &Device) -> Tensor<1> {
    upload(&t.data, [t.shape[0]], device)
}

fn upload2(t: &HostTensor, device: &Device) -> Tensor<2> {
    upload(&t.data, [t.shape[0], t.shape[1]], device)
}
