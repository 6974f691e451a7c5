//! A model's weights, named and shape-checked against its architecture description.
//!
//! Linear layers are held as `[in, out]` (`y = x · W + b`, GPT-2's Conv1D layout) whatever the
//! checkpoint's layout: `nn.Linear` weights (`[out, in]`) are transposed one tensor at a time as
//! they are taken. Layers without a bias get a zero one, so quantizers that fold a shift into the
//! bias (seed 000's centering) work on every family.

use crate::checkpoint::{Checkpoint, HostTensor, StoredTensor};
use crate::config::{LinearLayout, ModelConfig, LM_HEAD_WEIGHT};
use crate::error::Result;
use crate::quant::head::transpose;

/// A LayerNorm (`beta` set) or an RMSNorm (`beta` `None`).
#[derive(Clone, Debug)]
pub struct NormWeights {
    pub gamma: HostTensor,
    pub beta: Option<HostTensor>,
}

/// A linear layer as `[in, out]`: `weight` is `[in, out]`, `bias` `[out]` (zeros when the
/// checkpoint has none).
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

/// One decoder block: its two norms and its linears in `ModelConfig::block_linears` order.
#[derive(Clone, Debug)]
pub struct BlockWeights {
    pub norm_1: NormWeights,
    pub norm_2: NormWeights,
    pub linears: Vec<LinearWeights>,
}

/// Every weight of a model.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// The token embedding `[vocab, embed_dim]`; the LM head's weight too when tied.
    pub wte: HostTensor,
    /// Learned positions `[position_rows, n_embd]` (GPT-2, OPT), `None` with RoPE.
    pub wpe: Option<HostTensor>,
    pub blocks: Vec<BlockWeights>,
    pub ln_f: Option<NormWeights>,
    /// An untied LM head, as stored: `[vocab, embed_dim]`.
    pub lm_head: Option<HostTensor>,
    /// OPT-350m's projections between the embedding width and the hidden size (no bias).
    pub project_in: Option<LinearWeights>,
    pub project_out: Option<LinearWeights>,
}

/// Everything outside the blocks: embeddings, final norm, head, OPT-350m's projections. A
/// streamed model holds these and reads its blocks as it uses them.
#[derive(Clone, Debug)]
pub struct EdgeWeights {
    pub wte: HostTensor,
    pub wpe: Option<HostTensor>,
    pub ln_f: Option<NormWeights>,
    pub lm_head: Option<HostTensor>,
    pub project_in: Option<LinearWeights>,
    pub project_out: Option<LinearWeights>,
}

impl EdgeWeights {
    /// Reads them from `ckpt`, checking names, shapes and finiteness.
    pub fn read(config: &ModelConfig, ckpt: &Checkpoint<'_>) -> Result<Self> {
        let names = config.names();
        let wte = ckpt.read(&format!("{}.weight", names.embed), &[config.vocab_size, config.embed_dim])?;
        let wpe = match names.positions {
            Some(name) => Some(ckpt.read(&format!("{name}.weight"), &[config.position_rows(), config.n_embd])?),
            None => None,
        };
        let ln_f = if config.final_norm { Some(read_norm(ckpt, config, names.final_norm)?) } else { None };
        let lm_head = if config.tied_head { None } else { Some(ckpt.read(LM_HEAD_WEIGHT, &[config.vocab_size, config.embed_dim])?) };
        let projection = |name: Option<&str>, n_in, n_out| -> Result<Option<LinearWeights>> {
            name.map(|name| read_linear(ckpt, config, name, n_in, n_out, false)).transpose()
        };
        let project_in = projection(names.project_in, config.embed_dim, config.n_embd)?;
        let project_out = projection(names.project_out, config.n_embd, config.embed_dim)?;
        Ok(Self { wte, wpe, ln_f, lm_head, project_in, project_out })
    }
}

impl BlockWeights {
    /// Block `index` read from `ckpt` (its linears as `[in, out]`), checked as the whole model is.
    pub fn read(config: &ModelConfig, ckpt: &Checkpoint<'_>, index: usize) -> Result<Self> {
        let p = config.block_prefix(index);
        let linears = config
            .block_linears()
            .iter()
            .map(|s| read_linear(ckpt, config, &format!("{p}.{}", s.name), s.n_in, s.n_out, s.bias))
            .collect::<Result<Vec<_>>>()?;
        let [norm_1, norm_2] = read_block_norms(ckpt, config, index)?;
        Ok(Self { norm_1, norm_2, linears })
    }
}

/// One block with its linears' weights as the checkpoint stores them (dtype and layout), for a
/// GPU that widens and lays them out itself ([`Self::read`]); norms and biases as f32.
#[derive(Clone, Debug)]
pub struct StoredBlock<'a> {
    pub norm_1: NormWeights,
    pub norm_2: NormWeights,
    pub linears: Vec<StoredLinear<'a>>,
}

/// A linear's stored weight: `[in, out]` (`InOut`) or `[out, in]` (`OutIn`) in its file's dtype.
#[derive(Clone, Debug)]
pub struct StoredLinear<'a> {
    pub weight: StoredTensor<'a>,
    pub layout: LinearLayout,
    pub n_in: usize,
    pub n_out: usize,
    pub bias: HostTensor,
}

impl StoredLinear<'_> {
    /// The `[in, out]` f32 weight the host path reads ([`BlockWeights::read`]): the CPU
    /// reference of the GPU's widening.
    pub fn to_in_out(&self) -> Vec<f32> {
        let values = self.weight.to_f32();
        match self.layout {
            LinearLayout::InOut => values,
            LinearLayout::OutIn => transpose(&values, self.n_out, self.n_in),
        }
    }
}

impl<'a> StoredBlock<'a> {
    /// Block `index` of `ckpt`, checked as [`BlockWeights::read`] checks it; weights on disk are
    /// read into `scratch` (grown to the block's size the first time, then reused).
    pub fn read(config: &ModelConfig, ckpt: &'a Checkpoint<'_>, index: usize, scratch: &'a mut Vec<u8>) -> Result<Self> {
        let p = config.block_prefix(index);
        let layout = config.linear_layout();
        let specs = config.block_linears();
        let names: Vec<String> = specs.iter().map(|s| format!("{p}.{}", s.name)).collect();
        let weights: Vec<String> = names.iter().map(|name| format!("{name}.weight")).collect();
        let needed: usize = weights.iter().map(|w| ckpt.file_bytes(w)).sum();
        if scratch.len() < needed {
            scratch.resize(needed, 0);
        }
        let mut rest = scratch.as_mut_slice();
        let mut linears = Vec::with_capacity(specs.len());
        for ((s, name), weight_name) in specs.iter().zip(&names).zip(&weights) {
            let shape = match layout {
                LinearLayout::InOut => [s.n_in, s.n_out],
                LinearLayout::OutIn => [s.n_out, s.n_in],
            };
            let (weight, after) = ckpt.read_stored(weight_name, &shape, rest)?;
            rest = after;
            linears.push(StoredLinear { weight, layout, n_in: s.n_in, n_out: s.n_out, bias: read_bias(ckpt, name, s.n_out, s.bias)? });
        }
        let [norm_1, norm_2] = read_block_norms(ckpt, config, index)?;
        Ok(Self { norm_1, norm_2, linears })
    }
}

impl ModelWeights {
    /// Reads the model's tensors from a checkpoint, checking names, shapes and finiteness.
    /// Extra tensors (GPT-2's `attn.bias` mask buffers, a tied `lm_head.weight`) are ignored.
    pub fn from_checkpoint(config: &ModelConfig, ckpt: Checkpoint<'_>) -> Result<Self> {
        let blocks = (0..config.n_layer).map(|i| BlockWeights::read(config, &ckpt, i)).collect::<Result<Vec<_>>>()?;
        Ok(Self::from_parts(config, EdgeWeights::read(config, &ckpt)?, blocks))
    }

    pub fn from_parts(config: &ModelConfig, edges: EdgeWeights, blocks: Vec<BlockWeights>) -> Self {
        let EdgeWeights { wte, wpe, ln_f, lm_head, project_in, project_out } = edges;
        Self { config: config.clone(), wte, wpe, blocks, ln_f, lm_head, project_in, project_out }
    }

    /// All linear layers of the blocks with their full names (`h.0.attn.c_attn`,
    /// `model.layers.0.self_attn.q_proj`, ...), in model order.
    pub fn linears(&self) -> impl Iterator<Item = (String, &LinearWeights)> {
        let names = self.config.linear_names();
        names.into_iter().map(|(name, _)| name).zip(self.blocks.iter().flat_map(|b| b.linears.iter()))
    }

    /// `(block, index in the block)` of a block-linear by full name, or `None`.
    pub fn linear_position(&self, name: &str) -> Option<(usize, usize)> {
        let per_block = self.config.block_linears().len();
        self.config.linear_names().iter().position(|(n, _)| n == name).map(|i| (i / per_block, i % per_block))
    }

    /// The tensors of a block-linear by full name, or `None`.
    pub fn linear(&self, name: &str) -> Option<&LinearWeights> {
        let (b, k) = self.linear_position(name)?;
        self.blocks.get(b)?.linears.get(k)
    }

    pub fn linear_mut(&mut self, name: &str) -> Option<&mut LinearWeights> {
        let (b, k) = self.linear_position(name)?;
        self.blocks.get_mut(b)?.linears.get_mut(k)
    }

    /// The LM head's weight `[vocab, embed_dim]`: the untied head, or the token embedding.
    pub fn head_weight(&self) -> &HostTensor {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// Every tensor under its checkpoint name and in the checkpoint's layout (linears back to
    /// `[out, in]` for `nn.Linear` families; zero biases of bias-less layers left out): what
    /// `export` writes and [`Self::from_checkpoint`] reads back.
    pub fn to_checkpoint_tensors(&self) -> Vec<(String, HostTensor)> {
        let config = &self.config;
        let mut out = Vec::new();
        let norm = |out: &mut Vec<(String, HostTensor)>, prefix: &str, n: &NormWeights| {
            out.push((format!("{prefix}.weight"), n.gamma.clone()));
            if let Some(beta) = &n.beta {
                out.push((format!("{prefix}.bias"), beta.clone()));
            }
        };
        let linear = |out: &mut Vec<(String, HostTensor)>, name: &str, l: &LinearWeights, bias: bool| {
            let (n_in, n_out) = (l.in_features(), l.out_features());
            let weight = match config.linear_layout() {
                LinearLayout::InOut => l.weight.clone(),
                LinearLayout::OutIn => HostTensor::new(vec![n_out, n_in], transpose(&l.weight.data, n_in, n_out)),
            };
            out.push((format!("{name}.weight"), weight));
            if bias || l.bias.data.iter().any(|&b| b != 0.0) {
                out.push((format!("{name}.bias"), l.bias.clone()));
            }
        };
        let names = config.names();
        out.push((format!("{}.weight", names.embed), self.wte.clone()));
        if let (Some(name), Some(wpe)) = (names.positions, &self.wpe) {
            out.push((format!("{name}.weight"), wpe.clone()));
        }
        let [n1, n2] = config.block_norms();
        let specs = config.block_linears();
        for (i, block) in self.blocks.iter().enumerate() {
            let p = config.block_prefix(i);
            norm(&mut out, &format!("{p}.{n1}"), &block.norm_1);
            norm(&mut out, &format!("{p}.{n2}"), &block.norm_2);
            for (spec, l) in specs.iter().zip(&block.linears) {
                linear(&mut out, &format!("{p}.{}", spec.name), l, spec.bias);
            }
        }
        if let Some(ln_f) = &self.ln_f {
            norm(&mut out, names.final_norm, ln_f);
        }
        if let Some(head) = &self.lm_head {
            out.push((LM_HEAD_WEIGHT.to_string(), head.clone()));
        }
        for (name, l) in [(names.project_in, &self.project_in), (names.project_out, &self.project_out)] {
            if let (Some(name), Some(l)) = (name, l) {
                linear(&mut out, name, l, false);
            }
        }
        out
    }
}

/// A LayerNorm's `{prefix}.weight` and `.bias`, or an RMSNorm's weight.
/// Block `index`'s two norms.
fn read_block_norms(ckpt: &Checkpoint<'_>, config: &ModelConfig, index: usize) -> Result<[NormWeights; 2]> {
    let p = config.block_prefix(index);
    let [norm_1, norm_2] = config.block_norms();
    Ok([read_norm(ckpt, config, &format!("{p}.{norm_1}"))?, read_norm(ckpt, config, &format!("{p}.{norm_2}"))?])
}

fn read_norm(ckpt: &Checkpoint<'_>, config: &ModelConfig, prefix: &str) -> Result<NormWeights> {
    let c = [config.n_embd];
    Ok(NormWeights {
        gamma: ckpt.read(&format!("{prefix}.weight"), &c)?,
        beta: if config.has_norm_bias() { Some(ckpt.read(&format!("{prefix}.bias"), &c)?) } else { None },
    })
}

/// Reads linear `name` as `[n_in, n_out]`, transposing an `nn.Linear` `[out, in]` weight; a
/// missing bias of a bias-less layer becomes zeros (one that is there, as a packed model's folded
/// centering writes it, is read).
fn read_linear(ckpt: &Checkpoint<'_>, config: &ModelConfig, name: &str, n_in: usize, n_out: usize, bias: bool) -> Result<LinearWeights> {
    let weight_name = format!("{name}.weight");
    let weight = match config.linear_layout() {
        LinearLayout::InOut => ckpt.read(&weight_name, &[n_in, n_out])?,
        LinearLayout::OutIn => {
            let w = ckpt.read(&weight_name, &[n_out, n_in])?;
            HostTensor::new(vec![n_in, n_out], transpose(&w.data, n_out, n_in))
        }
    };
    Ok(LinearWeights { weight, bias: read_bias(ckpt, name, n_out, bias)? })
}

/// The bias of linear `name`: read when declared or present, else zeros.
fn read_bias(ckpt: &Checkpoint<'_>, name: &str, n_out: usize, declared: bool) -> Result<HostTensor> {
    let bias_name = format!("{name}.bias");
    if declared || ckpt.contains(&bias_name) {
        return ckpt.read(&bias_name, &[n_out]);
    }
    Ok(HostTensor::new(vec![n_out], vec![0.0; n_out]))
}

/// Checks, without reading any values, that `ckpt` holds every tensor `config` declares with its
/// shape: what a streamed model verifies before it starts.
pub fn check_layout(config: &ModelConfig, ckpt: &Checkpoint<'_>) -> Result<()> {
    for (name, expected, required) in config.tensor_shapes() {
        match ckpt.shape(&name) {
            None if required => return Err(crate::LoadError::MissingTensor { name }),
            Some(found) if found != expected.as_slice() => {
                return Err(crate::LoadError::WrongShape { name, expected, found: found.to_vec() });
            }
            _ => {}
        }
    }
    Ok(())
}
