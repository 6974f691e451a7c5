//! GPT-2's weights, named and shape-checked against its config.
//!
//! Linear layers keep GPT-2's Conv1D layout, `weight: [in, out]`, so `y = x · W + b` needs no transpose.

use crate::checkpoint::{Checkpoint, HostTensor};
use crate::config::Gpt2Config;
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct LayerNormWeights {
    pub gamma: HostTensor,
    pub beta: HostTensor,
}

/// A linear layer in Conv1D layout: `weight` is `[in, out]`.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    pub weight: HostTensor,
    pub bias: HostTensor,
}

impl LinearWeights {
    pub fn in_features(&self) -> usize {
        self.weight.shape[0]
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape[1]
    }
}

#[derive(Clone, Debug)]
pub struct BlockWeights {
    pub ln_1: LayerNormWeights,
    pub attn_c_attn: LinearWeights,
    pub attn_c_proj: LinearWeights,
    pub ln_2: LayerNormWeights,
    pub mlp_c_fc: LinearWeights,
    pub mlp_c_proj: LinearWeights,
}

impl BlockWeights {
    /// The block's linear layers with their HF names relative to the block (`attn.c_attn`, ...).
    pub fn linears(&self) -> [(&'static str, &LinearWeights); 4] {
        [
            ("attn.c_attn", &self.attn_c_attn),
            ("attn.c_proj", &self.attn_c_proj),
            ("mlp.c_fc", &self.mlp_c_fc),
            ("mlp.c_proj", &self.mlp_c_proj),
        ]
    }
}

/// Every weight of a GPT-2 model. The language-model head is tied to `wte`.
#[derive(Clone, Debug)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    pub wte: HostTensor,
    pub wpe: HostTensor,
    pub blocks: Vec<BlockWeights>,
    pub ln_f: LayerNormWeights,
}

impl Gpt2Weights {
    /// Takes GPT-2's tensors out of a checkpoint, checking names, shapes and finiteness.
    /// Extra tensors (`attn.bias` mask buffers, a tied `lm_head.weight`) are ignored.
    pub fn from_checkpoint(config: &Gpt2Config, mut ckpt: Checkpoint) -> Result<Self> {
        let c = config.n_embd;
        let layer_norm = |ckpt: &mut Checkpoint, prefix: &str| -> Result<LayerNormWeights> {
            Ok(LayerNormWeights {
                gamma: ckpt.take(&format!("{prefix}.weight"), &[c])?,
                beta: ckpt.take(&format!("{prefix}.bias"), &[c])?,
            })
        };
        let linear = |ckpt: &mut Checkpoint, prefix: &str, i: usize, o: usize| -> Result<LinearWeights> {
            Ok(LinearWeights {
                weight: ckpt.take(&format!("{prefix}.weight"), &[i, o])?,
                bias: ckpt.take(&format!("{prefix}.bias"), &[o])?,
            })
        };
        let wte = ckpt.take("wte.weight", &[config.vocab_size, c])?;
        let wpe = ckpt.take("wpe.weight", &[config.n_positions, c])?;
        let blocks = (0..config.n_layer)
            .map(|i| {
                let p = format!("h.{i}");
                Ok(BlockWeights {
                    ln_1: layer_norm(&mut ckpt, &format!("{p}.ln_1"))?,
                    attn_c_attn: linear(&mut ckpt, &format!("{p}.attn.c_attn"), c, 3 * c)?,
                    attn_c_proj: linear(&mut ckpt, &format!("{p}.attn.c_proj"), c, c)?,
                    ln_2: layer_norm(&mut ckpt, &format!("{p}.ln_2"))?,
                    mlp_c_fc: linear(&mut ckpt, &format!("{p}.mlp.c_fc"), c, config.n_inner)?,
                    mlp_c_proj: linear(&mut ckpt, &format!("{p}.mlp.c_proj"), config.n_inner, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = layer_norm(&mut ckpt, "ln_f")?;
        Ok(Self { config: config.clone(), wte, wpe, blocks, ln_f })
    }

    /// All linear layers with their full HF names (`h.0.attn.c_attn`, ...), in model order.
    pub fn linears(&self) -> impl Iterator<Item = (String, &LinearWeights)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.linears().into_iter().map(move |(n, l)| (format!("h.{i}.{n}"), l)))
    }
}
