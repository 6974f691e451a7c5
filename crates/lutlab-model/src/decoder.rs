//! GPT-2 on burn: learned position embeddings, pre-LayerNorm blocks, `gelu_new`, causal
//! self-attention and a language-model head tied to the token embedding.

use crate::device::upload;
use crate::error::Result;
use crate::lut_linear::PackedGpuLinear;
use lutlab_core::packed_file::PackedModel;
use lutlab_core::quant::head::{transpose, HEAD};
use lutlab_core::LoadError;
use burn::tensor::{activation, Bool, Device, Int, Tensor, TensorData};
use lutlab_core::weights::{LayerNormWeights, LinearWeights};
use lutlab_core::{Gpt2Config, Gpt2Weights, HostTensor};

/// LayerNorm over the last dimension (biased variance, as PyTorch).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gamma: Tensor<1>,
    pub beta: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    fn new(w: &LayerNormWeights, eps: f64, device: &Device) -> Self {
        Self { gamma: upload1(&w.gamma, device), beta: upload1(&w.beta, device), eps }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.gamma.clone().unsqueeze::<3>() + self.beta.clone().unsqueeze::<3>()
    }
}

/// A linear layer in GPT-2's Conv1D layout: `y = x · W + b`, `W: [in, out]`, with `W` either a
/// dense tensor (burn's matmul) or packed LUT codes (lutlab's LUT kernels, bias fused).
/// A model holds a few dozen of these, so the variants' size difference costs nothing worth an
/// indirection on the dense path.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Linear {
    Dense { weight: Tensor<2>, bias: Tensor<1> },
    Packed(Box<PackedGpuLinear>),
}

impl Linear {
    fn new(w: &LinearWeights, device: &Device) -> Self {
        Self::Dense { weight: upload2(&w.weight, device), bias: upload1(&w.bias, device) }
    }

    /// The dense weight and bias, or `None` for a packed layer.
    pub fn dense(&self) -> Option<(&Tensor<2>, &Tensor<1>)> {
        match self {
            Self::Dense { weight, bias } => Some((weight, bias)),
            Self::Packed(_) => None,
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, n_in] = x.dims();
        let x = x.reshape([b * t, n_in]);
        let y = match self {
            Self::Dense { weight, bias } => x.matmul(weight.clone()) + bias.clone().unsqueeze::<2>(),
            Self::Packed(layer) => layer.forward(x),
        };
        let n_out = y.dims()[1];
        y.reshape([b, t, n_out])
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn_c_attn: Linear,
    pub attn_c_proj: Linear,
    pub ln_2: LayerNorm,
    pub mlp_c_fc: Linear,
    pub mlp_c_proj: Linear,
}

#[derive(Clone, Debug)]
pub struct Gpt2 {
    pub config: Gpt2Config,
    /// The token embedding `[vocab, C]`, and the head's weight (transposed) unless `head` is set.
    pub wte: Tensor<2>,
    /// The LM head packed (a packed model with quantized embeddings): logits come from its codes
    /// through the LUT kernels, and `wte` holds the same matrix's rows dequantized for the lookup.
    pub head: Option<Box<PackedGpuLinear>>,
    pub wpe: Tensor<2>,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
}

/// `gelu_new`: the tanh approximation GPT-2 was trained with.
pub fn gelu_new<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    activation::gelu_approximate(x)
}

impl Gpt2 {
    /// Uploads checked host weights to `device`.
    pub fn new(weights: &Gpt2Weights, device: &Device) -> Self {
        let eps = weights.config.layer_norm_epsilon;
        let blocks = weights
            .blocks
            .iter()
            .map(|b| Block {
                ln_1: LayerNorm::new(&b.ln_1, eps, device),
                attn_c_attn: Linear::new(&b.attn_c_attn, device),
                attn_c_proj: Linear::new(&b.attn_c_proj, device),
                ln_2: LayerNorm::new(&b.ln_2, eps, device),
                mlp_c_fc: Linear::new(&b.mlp_c_fc, device),
                mlp_c_proj: Linear::new(&b.mlp_c_proj, device),
            })
            .collect();
        Self {
            config: weights.config.clone(),
            wte: upload2(&weights.wte, device),
            head: None,
            wpe: upload2(&weights.wpe, device),
            blocks,
            ln_f: LayerNorm::new(&weights.ln_f, eps, device),
        }
    }

    /// Uploads a packed model: its packed linear layers run through the LUT kernels straight
    /// from their codes (never expanded to dense weights), everything else as stored. `device`
    /// must be a plain (not autodiff) wgpu device. The model was validated when it was parsed.
    pub fn from_packed(model: &PackedModel, device: &Device) -> Result<Self> {
        let config = &model.config;
        let eps = config.layer_norm_epsilon;
        let tensor = |name: &str| model.dense.get(name).ok_or_else(|| LoadError::MissingTensor { name: name.to_string() });
        let layer_norm = |prefix: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: upload1(tensor(&format!("{prefix}.weight"))?, device),
                beta: upload1(tensor(&format!("{prefix}.bias"))?, device),
                eps,
            })
        };
        let linear = |name: &str| -> Result<Linear> {
            let bias = tensor(&format!("{name}.bias"))?;
            Ok(match model.layers.get(name) {
                Some(packed) => Linear::Packed(Box::new(PackedGpuLinear::upload(packed, Some(&bias.data), device, name)?)),
                None => Linear::Dense { weight: upload2(tensor(&format!("{name}.weight"))?, device), bias: upload1(bias, device) },
            })
        };
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            blocks.push(Block {
                ln_1: layer_norm(&format!("h.{i}.ln_1"))?,
                attn_c_attn: linear(&format!("h.{i}.attn.c_attn"))?,
                attn_c_proj: linear(&format!("h.{i}.attn.c_proj"))?,
                ln_2: layer_norm(&format!("h.{i}.ln_2"))?,
                mlp_c_fc: linear(&format!("h.{i}.mlp.c_fc"))?,
                mlp_c_proj: linear(&format!("h.{i}.mlp.c_proj"))?,
            });
        }
        // A packed head: its kernels give the logits, its dequantized rows the embedding lookup.
        let (wte, head) = match model.layers.get(HEAD) {
            Some(packed) => {
                let rows = transpose(&packed.effective_weights(), packed.rows, packed.cols);
                let wte = upload(&rows, [packed.cols, packed.rows], device);
                (wte, Some(Box::new(PackedGpuLinear::upload(packed, None, device, HEAD)?)))
            }
            None => (upload2(tensor("wte.weight")?, device), None),
        };
        Ok(Self {
            config: config.clone(),
            wte,
            head,
            wpe: upload2(tensor("wpe.weight")?, device),
            blocks,
            ln_f: layer_norm("ln_f")?,
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

    /// The final hidden states `[B, T, C]` (after `ln_f`).
    pub fn hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let c = self.config.n_embd;
        let tok = self.wte.clone().select(0, tokens.reshape([b * t])).reshape([b, t, c]);
        #[allow(clippy::single_range_in_vec_init)] // burn's slice takes one range per dimension
        let pos = self.wpe.clone().slice([0..t]).unsqueeze::<3>();
        let mut x = tok + pos;
        let causal = causal_bias(t, &self.device());
        for block in &self.blocks {
            x = x.clone() + self.attention(block, block.ln_1.forward(x), &causal);
            let h = gelu_new(block.mlp_c_fc.forward(block.ln_2.forward(x.clone())));
            x = x + block.mlp_c_proj.forward(h);
        }
        self.ln_f.forward(x)
    }

    /// Logits `[B, T, vocab]` from hidden states, through the head tied to `wte` (packed: the LUT
    /// kernels on its codes).
    pub fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = hidden.dims();
        let hidden = hidden.reshape([b * t, c]);
        let logits = match &self.head {
            Some(head) => head.forward(hidden),
            None => hidden.matmul(self.wte.clone().transpose()),
        };
        logits.reshape([b, t, self.config.vocab_size])
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.lm_head(self.hidden(tokens))
    }

    /// Token plus position embeddings `[B, T, C]`: the residual stream entering block 0.
    #[allow(clippy::single_range_in_vec_init)] // burn's slice takes one range per dimension
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let c = self.config.n_embd;
        let tok = self.wte.clone().select(0, tokens.reshape([b * t])).reshape([b, t, c]);
        tok + self.wpe.clone().slice([0..t]).unsqueeze::<3>()
    }

    /// The causal mask for `t` positions (`[1, 1, T, T]`, 0 or -inf), as [`Self::hidden`] uses.
    pub fn causal_mask(&self, t: usize) -> Tensor<4> {
        causal_bias(t, &self.device())
    }

    /// One block on the residual stream `x` `[B, T, C]`, exactly as [`Self::hidden`] runs it,
    /// also returning the inputs of its four linear layers in forward order (`attn.c_attn`,
    /// `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; `lutlab_core::reference::LINEAR_LAYERS`): what seed
    /// 000's centering averages.
    pub fn block_with_inputs(&self, block: &Block, x: Tensor<3>, causal: &Tensor<4>) -> (Tensor<3>, [Tensor<3>; 4]) {
        let h1 = block.ln_1.forward(x.clone());
        let mixed = self.attention_heads(block, h1.clone(), causal);
        let x = x + block.attn_c_proj.forward(mixed.clone());
        let h2 = block.ln_2.forward(x.clone());
        let f = gelu_new(block.mlp_c_fc.forward(h2.clone()));
        let x = x + block.mlp_c_proj.forward(f.clone());
        (x, [h1, mixed, h2, f])
    }

    fn attention(&self, block: &Block, x: Tensor<3>, causal: &Tensor<4>) -> Tensor<3> {
        block.attn_c_proj.forward(self.attention_heads(block, x, causal))
    }

    /// Causal self-attention up to (not including) `c_proj`: the heads merged back to `[B, T, C]`.
    fn attention_heads(&self, block: &Block, x: Tensor<3>, causal: &Tensor<4>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let (h, d) = (self.config.n_head, self.config.head_dim());
        let qkv = block.attn_c_attn.forward(x);
        // [B, T, C] → [B, H, T, D] for each of q, k, v.
        let heads = |i: usize| qkv.clone().slice([0..b, 0..t, i * c..(i + 1) * c]).reshape([b, t, h, d]).swap_dims(1, 2);
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt() + causal.clone();
        let y = activation::softmax(scores, 3).matmul(v);
        y.swap_dims(1, 2).reshape([b, t, c])
    }
}

/// `[1, 1, T, T]`: 0 where a position may attend, -inf above the diagonal.
fn causal_bias(t: usize, device: &Device) -> Tensor<4> {
    let future = Tensor::<2, Bool>::tril_mask([t, t], 0, device);
    Tensor::<2>::zeros([t, t], device).mask_fill(future, f32::NEG_INFINITY).unsqueeze::<4>()
}

fn upload1(t: &HostTensor, device: &Device) -> Tensor<1> {
    upload(&t.data, [t.shape[0]], device)
}

fn upload2(t: &HostTensor, device: &Device) -> Tensor<2> {
    upload(&t.data, [t.shape[0], t.shape[1]], device)
}
