//! The architecture description: what lutlab needs to know about a model, read from its Hugging
//! Face `config.json`. One description drives the one decoder block (`lutlab-model`), the CPU
//! reference, the list of quantizable linears and the files' tensor names, for every supported
//! family:
//!
//! | family | `model_type` | norm | positions | MLP | attention |
//! | --- | --- | --- | --- | --- | --- |
//! | GPT-2 | `gpt2` | LayerNorm, pre | learned | GELU (tanh), 2 matrices | fused q·k·v (Conv1D) |
//! | OPT | `opt` | LayerNorm, pre or post | learned, offset 2 | ReLU, 2 matrices | q, k, v, out |
//! | Llama | `llama`, `mistral`, `qwen2` | RMSNorm, pre | RoPE | SwiGLU, 3 matrices | q, k, v, o; GQA |
//!
//! Linear weights are held as `[in, out]` (`y = x · W + b`): GPT-2's Conv1D layout. Checkpoints
//! in `nn.Linear`'s `[out, in]` are transposed tensor by tensor as they are taken
//! ([`ModelConfig::linear_layout`]).

use crate::error::{LoadError, Result};
use serde_json::{json, Map, Value};

/// The model family: the block structure and the files' tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Opt,
    /// Llama 2/3, TinyLlama, SmolLM, Mistral (no sliding window), Qwen2 (q/k/v biases).
    Llama,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// `(x − mean) / sqrt(var + eps) · γ + β`.
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) · γ`, no β.
    RmsNorm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// GPT-2's tanh approximation of GELU (`gelu_new`).
    GeluTanh,
    Relu,
    /// SiLU gating a second projection (SwiGLU): `down(silu(gate(x)) ⊙ up(x))`.
    SwiGlu,
}

/// How positions enter the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Positions {
    /// A learned table added to the token embedding; row `p + offset` for position `p` (OPT
    /// keeps 2 rows in front).
    Learned { offset: usize },
    /// Rotary embeddings on q and k, halves rotated (HF's `rotate_half`).
    Rope { theta: f64, scaling: Option<RopeScaling> },
}

/// `rope_scaling` types that do not depend on the sequence length.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// How a checkpoint stores linear weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearLayout {
    /// GPT-2's Conv1D: `[in, out]`, as lutlab holds them.
    #[default]
    InOut,
    /// `nn.Linear`: `[out, in]`.
    OutIn,
}

/// One linear layer of a block: its name relative to the block and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearSpec {
    pub name: &'static str,
    pub n_in: usize,
    pub n_out: usize,
    pub bias: bool,
}

/// The hyper-parameters and structure lutlab needs from a `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// `model_type` as written (`gpt2`, `opt`, `llama`, `mistral`, `qwen2`).
    pub model_type: String,
    pub n_layer: usize,
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Width of each head.
    pub head_dim: usize,
    /// Hidden size (the residual stream).
    pub n_embd: usize,
    /// Width of the MLP's hidden layer.
    pub n_inner: usize,
    /// Positions the model takes.
    pub n_positions: usize,
    pub vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    /// Norm before each sub-block (pre-LN); OPT-350m normalizes after (`do_layer_norm_before`).
    pub pre_norm: bool,
    /// A norm after the last block (`ln_f`, `model.norm`).
    pub final_norm: bool,
    pub positions: Positions,
    pub activation: Activation,
    /// Biases on q, k, v / the attention output / the MLP's linears.
    pub qkv_bias: bool,
    pub out_bias: bool,
    pub mlp_bias: bool,
    /// The LM head is the token embedding (no `lm_head.weight` of its own).
    pub tied_head: bool,
    /// Width of the token embedding; differs from `n_embd` only in OPT-350m
    /// (`word_embed_proj_dim`, with `project_in`/`project_out` linears around the blocks).
    pub embed_dim: usize,
    /// The token the tokenizer puts in front of a text, when it does (informational).
    pub bos_token_id: Option<u32>,
}

/// A reader of one `config.json`'s fields, naming the file in every error.
struct Fields<'a> {
    json: &'a Map<String, Value>,
    file: &'a str,
}

impl Fields<'_> {
    /// A dimension: a positive integer, at most [`MAX_DIM`] (so that the defaults computed from
    /// it, `4 * n_embd`, cannot overflow: found by fuzzing, issue 21).
    fn int(&self, field: &'static str, default: Option<usize>) -> Result<usize> {
        let n = match self.json.get(field) {
            Some(Value::Null) | None => default.ok_or(LoadError::BadConfigField { file: self.file.to_string(), field })?,
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or(LoadError::BadConfigField { file: self.file.to_string(), field })?,
        };
        if n > MAX_DIM {
            return Err(self.bad(format!("`{field}` is {n}: implausibly large (at most 2^24)")));
        }
        Ok(n)
    }

    fn float(&self, field: &'static str, default: f64) -> Result<f64> {
        match self.json.get(field) {
            Some(Value::Null) | None => Ok(default),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.bad(format!("`{field}` is not a number"))),
        }
    }

    fn bool(&self, field: &'static str, default: bool) -> Result<bool> {
        match self.json.get(field) {
            Some(Value::Null) | None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(format!("`{field}` is not true or false"))),
        }
    }

    fn str(&self, field: &str) -> Option<&str> {
        self.json.get(field).and_then(Value::as_str)
    }

    fn bad(&self, reason: String) -> LoadError {
        LoadError::BadConfig { file: self.file.to_string(), reason }
    }
}

/// The largest dimension (hidden size, layers, vocabulary, ...) a config may give.
const MAX_DIM: usize = 1 << 24;

/// The `model_type`s lutlab runs, for error messages.
pub const SUPPORTED_MODEL_TYPES: &str = "gpt2, opt, llama, mistral, qwen2";

impl ModelConfig {
    /// Parses `config.json` bytes; `file` names the source in errors. A config without
    /// `model_type` is taken as GPT-2 (as lutlab's first files were written).
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let json: Value = serde_json::from_slice(bytes).map_err(|e| LoadError::BadJson {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        let object = json.as_object().ok_or_else(|| LoadError::BadConfig { file: file.to_string(), reason: "not a JSON object".into() })?;
        let f = Fields { json: object, file };
        let model_type = f.str("model_type").unwrap_or("gpt2");
        let config = match model_type {
            "gpt2" => Self::gpt2_from(&f)?,
            "opt" => Self::opt_from(&f)?,
            "llama" | "mistral" | "qwen2" => Self::llama_from(&f, model_type)?,
            other => return Err(LoadError::UnsupportedArchitecture { model_type: other.to_string() }),
        };
        config.check(file)?;
        Ok(config)
    }

    fn gpt2_from(f: &Fields) -> Result<Self> {
        // Variants of GPT-2 attention that HF supports but lutlab does not compute.
        for (flag, unsupported) in [("scale_attn_by_inverse_layer_idx", true), ("reorder_and_upcast_attn", true), ("scale_attn_weights", false)] {
            if f.json.get(flag).and_then(Value::as_bool) == Some(unsupported) {
                return Err(f.bad(format!("`{flag}: {unsupported}` is not supported")));
            }
        }
        if let Some(act) = f.str("activation_function")
            && act != "gelu_new"
        {
            return Err(f.bad(format!("activation_function `{act}` is not supported (GPT-2 uses gelu_new)")));
        }
        let n_layer = f.int("n_layer", None)?;
        let n_head = f.int("n_head", None)?;
        let n_embd = f.int("n_embd", None)?;
        let mut config = Self::gpt2(
            n_layer,
            n_head,
            n_embd,
            // HF's GPT2Config defaults, used when a config leaves them out.
            f.int("n_positions", Some(1024))?,
            f.int("vocab_size", Some(50257))?,
        );
        config.n_inner = f.int("n_inner", Some(4 * n_embd))?;
        config.norm_eps = f.float("layer_norm_epsilon", 1e-5)?;
        Ok(config)
    }

    fn opt_from(f: &Fields) -> Result<Self> {
        match f.str("activation_function").unwrap_or("relu") {
            "relu" => {}
            other => return Err(f.bad(format!("activation_function `{other}` is not supported for OPT (relu)"))),
        }
        let n_embd = f.int("hidden_size", None)?;
        let n_head = f.int("num_attention_heads", None)?;
        let pre_norm = f.bool("do_layer_norm_before", true)?;
        let bias = f.bool("enable_bias", true)?;
        Ok(Self {
            family: Family::Opt,
            model_type: "opt".into(),
            n_layer: f.int("num_hidden_layers", None)?,
            n_head,
            n_kv_head: n_head,
            head_dim: n_embd / n_head,
            n_embd,
            n_inner: f.int("ffn_dim", None)?,
            n_positions: f.int("max_position_embeddings", None)?,
            vocab_size: f.int("vocab_size", None)?,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            pre_norm,
            // HF builds `final_layer_norm` only for pre-LN models that keep it.
            final_norm: pre_norm && !f.bool("_remove_final_layer_norm", false)?,
            positions: Positions::Learned { offset: 2 },
            activation: Activation::Relu,
            qkv_bias: bias,
            out_bias: bias,
            mlp_bias: bias,
            tied_head: f.bool("tie_word_embeddings", true)?,
            embed_dim: f.int("word_embed_proj_dim", Some(n_embd))?,
            bos_token_id: f.json.get("bos_token_id").and_then(Value::as_u64).map(|v| v as u32),
        })
    }

    fn llama_from(f: &Fields, model_type: &str) -> Result<Self> {
        match f.str("hidden_act").unwrap_or("silu") {
            "silu" => {}
            other => return Err(f.bad(format!("hidden_act `{other}` is not supported ({model_type} uses silu)"))),
        }
        let n_embd = f.int("hidden_size", None)?;
        let n_head = f.int("num_attention_heads", None)?;
        let n_positions = f.int("max_position_embeddings", None)?;
        // Sliding-window attention only changes results past the window.
        let sliding = match model_type {
            "qwen2" if !f.bool("use_sliding_window", false)? => None,
            _ => f.json.get("sliding_window").and_then(Value::as_u64),
        };
        if let Some(window) = sliding
            && (window as usize) < n_positions
        {
            return Err(f.bad(format!(
                "sliding_window {window} is shorter than max_position_embeddings {n_positions}: sliding-window attention is not supported"
            )));
        }
        let (qkv_bias, out_bias) = if model_type == "qwen2" {
            (true, false)
        } else {
            let bias = f.bool("attention_bias", false)?;
            (bias, bias)
        };
        Ok(Self {
            family: Family::Llama,
            model_type: model_type.to_string(),
            n_layer: f.int("num_hidden_layers", None)?,
            n_head,
            n_kv_head: f.int("num_key_value_heads", Some(n_head))?,
            head_dim: f.int("head_dim", Some(n_embd / n_head))?,
            n_embd,
            n_inner: f.int("intermediate_size", None)?,
            n_positions,
            vocab_size: f.int("vocab_size", None)?,
            norm: NormKind::RmsNorm,
            norm_eps: f.float("rms_norm_eps", 1e-6)?,
            pre_norm: true,
            final_norm: true,
            positions: rope_from(f)?,
            activation: Activation::SwiGlu,
            qkv_bias,
            out_bias,
            mlp_bias: f.bool("mlp_bias", false)?,
            tied_head: f.bool("tie_word_embeddings", false)?,
            embed_dim: n_embd,
            bos_token_id: f.json.get("bos_token_id").and_then(Value::as_u64).map(|v| v as u32),
        })
    }

    /// Consistency every family needs; the file is named in each refusal.
    fn check(&self, file: &str) -> Result<()> {
        let bad = |reason: String| LoadError::BadConfig { file: file.to_string(), reason };
        if self.family != Family::Llama && !self.n_embd.is_multiple_of(self.n_head) {
            return Err(bad(format!("the hidden size {} is not a multiple of the {} attention heads", self.n_embd, self.n_head)));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return Err(bad(format!("the {} attention heads are not a multiple of the {} key/value heads", self.n_head, self.n_kv_head)));
        }
        // Llama's default head_dim, hidden_size / heads, is 0 with more heads than dimensions.
        if self.head_dim == 0 {
            return Err(bad(format!("head_dim is 0: {} attention heads for a hidden size of {}", self.n_head, self.n_embd)));
        }
        if let Positions::Rope { .. } = self.positions
            && !self.head_dim.is_multiple_of(2)
        {
            return Err(bad(format!("head_dim {} is odd: rotary embeddings rotate pairs", self.head_dim)));
        }
        // Negated so that NaN is refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(self.norm_eps > 0.0) {
            return Err(bad("the norm epsilon must be > 0".into()));
        }
        // Every dimension, and the attention's width, so that sizes are products of two of
        // them (< 2^48, no overflow).
        let attention = self.n_head.saturating_mul(self.head_dim);
        for (what, v) in [
            ("hidden size", self.n_embd),
            ("MLP width", self.n_inner),
            ("vocabulary", self.vocab_size),
            ("context", self.n_positions),
            ("layers", self.n_layer),
            ("embedding width", self.embed_dim),
            ("attention width (heads × head_dim)", attention),
        ] {
            if v > MAX_DIM {
                return Err(bad(format!("the {what} ({v}) is implausibly large")));
            }
        }
        Ok(())
    }

    /// A GPT-2 config with HF's defaults for everything not given (tests, synthetic models).
    /// Not checked: [`Self::from_json`] checks what a file says.
    pub fn gpt2(n_layer: usize, n_head: usize, n_embd: usize, n_positions: usize, vocab_size: usize) -> Self {
        Self {
            family: Family::Gpt2,
            model_type: "gpt2".into(),
            n_layer,
            n_head,
            n_kv_head: n_head,
            head_dim: n_embd / n_head.max(1),
            n_embd,
            n_inner: 4 * n_embd,
            n_positions,
            vocab_size,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            pre_norm: true,
            final_norm: true,
            positions: Positions::Learned { offset: 0 },
            activation: Activation::GeluTanh,
            qkv_bias: true,
            out_bias: true,
            mlp_bias: true,
            tied_head: true,
            embed_dim: n_embd,
            bos_token_id: None,
        }
    }

    /// The config as Hugging Face `config.json` text (the fields lutlab reads, under their HF
    /// names), as the packed file's `config` metadata and `export` store it; [`Self::from_json`]
    /// reads it back to an equal config.
    pub fn to_json(&self) -> String {
        let mut j = match self.family {
            Family::Gpt2 => json!({
                "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "n_layer": self.n_layer, "n_head": self.n_head, "n_embd": self.n_embd, "n_inner": self.n_inner,
                "n_positions": self.n_positions, "vocab_size": self.vocab_size,
                "layer_norm_epsilon": self.norm_eps, "activation_function": "gelu_new", "tie_word_embeddings": true,
            }),
            Family::Opt => json!({
                "model_type": "opt", "architectures": ["OPTForCausalLM"],
                "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head, "hidden_size": self.n_embd,
                "ffn_dim": self.n_inner, "max_position_embeddings": self.n_positions, "vocab_size": self.vocab_size,
                "do_layer_norm_before": self.pre_norm, "_remove_final_layer_norm": self.pre_norm && !self.final_norm,
                "word_embed_proj_dim": self.embed_dim, "enable_bias": self.qkv_bias, "activation_function": "relu",
                "tie_word_embeddings": self.tied_head,
            }),
            Family::Llama => {
                let arch = match self.model_type.as_str() {
                    "mistral" => "MistralForCausalLM",
                    "qwen2" => "Qwen2ForCausalLM",
                    _ => "LlamaForCausalLM",
                };
                let (theta, scaling) = match &self.positions {
                    Positions::Rope { theta, scaling } => (*theta, scaling.as_ref().map(RopeScaling::to_json)),
                    Positions::Learned { .. } => (10000.0, None),
                };
                json!({
                    "model_type": self.model_type, "architectures": [arch],
                    "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
                    "num_key_value_heads": self.n_kv_head, "head_dim": self.head_dim, "hidden_size": self.n_embd,
                    "intermediate_size": self.n_inner, "max_position_embeddings": self.n_positions,
                    "vocab_size": self.vocab_size, "rms_norm_eps": self.norm_eps, "hidden_act": "silu",
                    "rope_theta": theta, "rope_scaling": scaling, "attention_bias": self.qkv_bias,
                    "mlp_bias": self.mlp_bias, "tie_word_embeddings": self.tied_head,
                })
            }
        };
        if let (Some(bos), Some(object)) = (self.bos_token_id, j.as_object_mut()) {
            object.insert("bos_token_id".into(), bos.into());
        }
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// How the family's checkpoints store linear weights.
    pub fn linear_layout(&self) -> LinearLayout {
        match self.family {
            Family::Gpt2 => LinearLayout::InOut,
            Family::Opt | Family::Llama => LinearLayout::OutIn,
        }
    }

    /// GPT-2 computes q, k and v with one fused linear (`attn.c_attn`, out = q|k|v).
    pub fn fused_qkv(&self) -> bool {
        self.family == Family::Gpt2
    }

    /// The name prefix of block `i`'s tensors.
    pub fn block_prefix(&self, i: usize) -> String {
        match self.family {
            Family::Gpt2 => format!("h.{i}"),
            Family::Opt => format!("model.decoder.layers.{i}"),
            Family::Llama => format!("model.layers.{i}"),
        }
    }

    /// The linear layers of a block, in forward order: THE list of a model's linears
    /// (quantizers, Fisher, files and the GPU block all take it from here).
    pub fn block_linears(&self) -> Vec<LinearSpec> {
        let (c, f) = (self.n_embd, self.n_inner);
        let q = self.n_head * self.head_dim;
        let kv = self.n_kv_head * self.head_dim;
        let spec = |name, n_in, n_out, bias| LinearSpec { name, n_in, n_out, bias };
        match self.family {
            Family::Gpt2 => vec![
                spec("attn.c_attn", c, 3 * c, true),
                spec("attn.c_proj", c, c, true),
                spec("mlp.c_fc", c, f, true),
                spec("mlp.c_proj", f, c, true),
            ],
            Family::Opt => vec![
                spec("self_attn.q_proj", c, q, self.qkv_bias),
                spec("self_attn.k_proj", c, kv, self.qkv_bias),
                spec("self_attn.v_proj", c, kv, self.qkv_bias),
                spec("self_attn.out_proj", q, c, self.out_bias),
                spec("fc1", c, f, self.mlp_bias),
                spec("fc2", f, c, self.mlp_bias),
            ],
            Family::Llama => vec![
                spec("self_attn.q_proj", c, q, self.qkv_bias),
                spec("self_attn.k_proj", c, kv, self.qkv_bias),
                spec("self_attn.v_proj", c, kv, self.qkv_bias),
                spec("self_attn.o_proj", q, c, self.out_bias),
                spec("mlp.gate_proj", c, f, self.mlp_bias),
                spec("mlp.up_proj", c, f, self.mlp_bias),
                spec("mlp.down_proj", f, c, self.mlp_bias),
            ],
        }
    }

    /// The block's linears grouped by the input they share, as index ranges into
    /// [`Self::block_linears`]: q, k and v read the same normed input, as do gate and up. These
    /// are also Llama's "true sequential" groups ([q,k,v], [o], [gate,up], [down]).
    pub fn input_groups(&self) -> Vec<std::ops::Range<usize>> {
        match self.family {
            Family::Gpt2 => vec![0..1, 1..2, 2..3, 3..4],
            Family::Opt => vec![0..3, 3..4, 4..5, 5..6],
            Family::Llama => vec![0..3, 3..4, 4..6, 6..7],
        }
    }

    /// Every linear of the model's blocks by full name (`h.0.attn.c_attn`,
    /// `model.layers.0.self_attn.q_proj`, ...) with its spec, in model order.
    pub fn linear_names(&self) -> Vec<(String, LinearSpec)> {
        let specs = self.block_linears();
        (0..self.n_layer)
            .flat_map(|i| specs.iter().map(move |s| (format!("{}.{}", self.block_prefix(i), s.name), s.clone())))
            .collect()
    }

    /// The two norms of a block, relative to it: before (or, post-LN, after) attention and MLP.
    pub fn block_norms(&self) -> [&'static str; 2] {
        match self.family {
            Family::Gpt2 => ["ln_1", "ln_2"],
            Family::Opt => ["self_attn_layer_norm", "final_layer_norm"],
            Family::Llama => ["input_layernorm", "post_attention_layernorm"],
        }
    }

    /// The names of the model's tensors outside the blocks.
    pub fn names(&self) -> TopNames {
        match self.family {
            Family::Gpt2 => TopNames { embed: "wte", positions: Some("wpe"), final_norm: "ln_f", project_in: None, project_out: None },
            Family::Opt => {
                let projected = self.embed_dim != self.n_embd;
                TopNames {
                    embed: "model.decoder.embed_tokens",
                    positions: Some("model.decoder.embed_positions"),
                    final_norm: "model.decoder.final_layer_norm",
                    project_in: projected.then_some("model.decoder.project_in"),
                    project_out: projected.then_some("model.decoder.project_out"),
                }
            }
            Family::Llama => TopNames { embed: "model.embed_tokens", positions: None, final_norm: "model.norm", project_in: None, project_out: None },
        }
    }

    /// Rows of the learned position table (OPT's offset included).
    pub fn position_rows(&self) -> usize {
        match self.positions {
            Positions::Learned { offset } => self.n_positions + offset,
            Positions::Rope { .. } => 0,
        }
    }

    /// Every tensor a checkpoint of this model holds: `(name, shape in the checkpoint's layout,
    /// required)`. Not required: the bias of a bias-less linear (a packed model's folded centering
    /// writes one) — and nothing else.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>, bool)> {
        self.shapes_with_blocks(0..self.n_layer)
    }

    /// [`Self::tensor_shapes`] with only `blocks`' tensors.
    fn shapes_with_blocks(&self, blocks: std::ops::Range<usize>) -> Vec<(String, Vec<usize>, bool)> {
        let c = self.n_embd;
        let mut out = Vec::new();
        let linear = |out: &mut Vec<(String, Vec<usize>, bool)>, name: &str, n_in: usize, n_out: usize, bias: bool| {
            let shape = match self.linear_layout() {
                LinearLayout::InOut => vec![n_in, n_out],
                LinearLayout::OutIn => vec![n_out, n_in],
            };
            out.push((format!("{name}.weight"), shape, true));
            out.push((format!("{name}.bias"), vec![n_out], bias));
        };
        let norm = |out: &mut Vec<(String, Vec<usize>, bool)>, name: &str| {
            out.push((format!("{name}.weight"), vec![c], true));
            if self.has_norm_bias() {
                out.push((format!("{name}.bias"), vec![c], true));
            }
        };
        let names = self.names();
        out.push((format!("{}.weight", names.embed), vec![self.vocab_size, self.embed_dim], true));
        if let Some(p) = names.positions {
            out.push((format!("{p}.weight"), vec![self.position_rows(), c], true));
        }
        let specs = self.block_linears();
        for i in blocks {
            let p = self.block_prefix(i);
            for n in self.block_norms() {
                norm(&mut out, &format!("{p}.{n}"));
            }
            for s in &specs {
                linear(&mut out, &format!("{p}.{}", s.name), s.n_in, s.n_out, s.bias);
            }
        }
        if self.final_norm {
            norm(&mut out, names.final_norm);
        }
        if !self.tied_head {
            out.push((LM_HEAD_WEIGHT.to_string(), vec![self.vocab_size, self.embed_dim], true));
        }
        if let (Some(pin), Some(pout)) = (names.project_in, names.project_out) {
            linear(&mut out, pin, self.embed_dim, c, false);
            linear(&mut out, pout, c, self.embed_dim, false);
        }
        out
    }

    /// The largest tensor by element count, `(name, elements)`: what must fit in one GPU buffer.
    /// Blocks all have the same shapes, so block 0 stands for them: the page asks this of a
    /// `config.json` before anything else, and listing 2^24 blocks would exhaust its memory
    /// (found by fuzzing, issue 21). Saturates rather than wraps (wasm32's usize is 32 bits).
    pub fn largest_tensor(&self) -> (String, usize) {
        self.shapes_with_blocks(0..self.n_layer.min(1))
            .into_iter()
            .map(|(name, shape, _)| (name, shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))))
            .max_by_key(|(_, n)| *n)
            .unwrap_or_default()
    }

    /// The tensor the quantized LM head (`lm_head` in the packed file) stands for: the tied
    /// embedding, or the untied head's own weight; either is `[vocab, embed_dim]`.
    pub fn head_weight_name(&self) -> String {
        if self.tied_head { format!("{}.weight", self.names().embed) } else { LM_HEAD_WEIGHT.to_string() }
    }

    pub fn has_norm_bias(&self) -> bool {
        self.norm == NormKind::LayerNorm
    }

    /// Number of parameters (a tied head counted once), `usize::MAX` if more. Counted in u128:
    /// dimensions up to 2^24 (`check`) overflow 64 bits, and a 7B model 32 (wasm32).
    pub fn parameter_count(&self) -> usize {
        let [c, e, vocab, layers] = [self.n_embd, self.embed_dim, self.vocab_size, self.n_layer].map(|n| n as u128);
        let linears: u128 = self.block_linears().iter().map(|s| s.n_in as u128 * s.n_out as u128 + if s.bias { s.n_out as u128 } else { 0 }).sum();
        let norm = if self.has_norm_bias() { 2 * c } else { c };
        let per_block = linears + 2 * norm;
        let head = if self.tied_head { 0 } else { vocab * e };
        let projections = if e != c { 2 * e * c } else { 0 };
        let final_norm = if self.final_norm { norm } else { 0 };
        let total = vocab * e + self.position_rows() as u128 * c + layers * per_block + final_norm + head + projections;
        usize::try_from(total).unwrap_or(usize::MAX)
    }
}

/// Names of the tensors outside the blocks (without `.weight`/`.bias`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopNames {
    pub embed: &'static str,
    pub positions: Option<&'static str>,
    pub final_norm: &'static str,
    pub project_in: Option<&'static str>,
    pub project_out: Option<&'static str>,
}

/// The name of an untied LM head's weight (`lm_head.weight`, `[vocab, embed_dim]`).
pub const LM_HEAD_WEIGHT: &str = "lm_head.weight";

impl RopeScaling {
    fn to_json(&self) -> Value {
        match *self {
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings,
            }),
        }
    }

    /// The inverse frequencies after scaling (HF's `_compute_llama3_parameters` and linear).
    pub fn apply(&self, inv_freq: &mut [f64]) {
        match *self {
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    *f = if wavelen < high_wavelen {
                        *f
                    } else if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * *f / factor + smooth * *f
                    };
                }
            }
        }
    }
}

/// Rotary settings from either transformers 4's `rope_theta` + `rope_scaling` or transformers
/// 5's `rope_parameters`.
fn rope_from(f: &Fields) -> Result<Positions> {
    let params = f.json.get("rope_parameters").and_then(Value::as_object);
    let scaling = params.or_else(|| f.json.get("rope_scaling").and_then(Value::as_object));
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(v) => v.as_f64().ok_or_else(|| f.bad("`rope_parameters.rope_theta` is not a number".into()))?,
        None => f.float("rope_theta", 10000.0)?,
    };
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(theta > 0.0) {
        return Err(f.bad(format!("rope_theta {theta} must be > 0")));
    }
    let scaling = match scaling {
        None => None,
        Some(s) => {
            let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
            let num = |key: &str, default: Option<f64>| -> Result<f64> {
                match s.get(key).and_then(Value::as_f64).or(default) {
                    Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                    _ => Err(f.bad(format!("rope scaling `{kind}` needs a positive `{key}`"))),
                }
            };
            match kind {
                "default" => None,
                "linear" => Some(RopeScaling::Linear { factor: num("factor", None)? }),
                "llama3" => {
                    let (low, high) = (num("low_freq_factor", None)?, num("high_freq_factor", None)?);
                    if high <= low {
                        return Err(f.bad(format!("rope scaling llama3: high_freq_factor {high} must exceed low_freq_factor {low}")));
                    }
                    Some(RopeScaling::Llama3 {
                        factor: num("factor", None)?,
                        low_freq_factor: low,
                        high_freq_factor: high,
                        original_max_position_embeddings: num("original_max_position_embeddings", None)?,
                    })
                }
                other => {
                    return Err(f.bad(format!("rope scaling type `{other}` is not supported (default, linear, llama3)")));
                }
            }
        }
    };
    Ok(Positions::Rope { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(text.as_bytes(), "config.json")
    }

    #[test]
    fn every_family_round_trips_through_its_hf_json() {
        let gpt2 = ModelConfig::gpt2(2, 4, 64, 128, 1000);
        let opt = parse(r#"{"model_type":"opt","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,
            "ffn_dim":256,"max_position_embeddings":128,"vocab_size":300,"do_layer_norm_before":false,"word_embed_proj_dim":32}"#).unwrap();
        let llama = parse(r#"{"model_type":"llama","hidden_size":64,"num_attention_heads":8,"num_key_value_heads":2,
            "num_hidden_layers":2,"intermediate_size":172,"max_position_embeddings":128,"vocab_size":512,"rms_norm_eps":1e-5,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}}"#).unwrap();
        let qwen = parse(r#"{"model_type":"qwen2","hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2,
            "num_hidden_layers":1,"intermediate_size":96,"max_position_embeddings":64,"vocab_size":100,"tie_word_embeddings":true,
            "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#).unwrap();
        assert!(!opt.pre_norm && !opt.final_norm && opt.embed_dim == 32 && opt.tied_head);
        assert_eq!(llama.n_kv_head, 2);
        assert!(qwen.qkv_bias && !qwen.out_bias && qwen.tied_head);
        assert_eq!(qwen.positions, Positions::Rope { theta: 1e6, scaling: None });
        for config in [gpt2, opt, llama, qwen] {
            let again = parse(&config.to_json()).unwrap();
            assert_eq!(again, config, "{}", config.to_json());
        }
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err(r#"{"model_type":"bert"}"#).contains("bert"));
        let llama = r#""model_type":"llama","hidden_size":64,"num_hidden_layers":2,"intermediate_size":172,"max_position_embeddings":128,"vocab_size":512"#;
        let e = err(&format!("{{{llama},\"num_attention_heads\":8,\"num_key_value_heads\":3}}"));
        assert!(e.contains("key/value heads") && e.contains("config.json"), "{e}");
        let e = err(&format!("{{{llama},\"num_attention_heads\":8,\"rope_scaling\":{{\"rope_type\":\"yarn\",\"factor\":4}}}}"));
        assert!(e.contains("yarn"), "{e}");
        let e = err(&format!("{{{llama},\"num_attention_heads\":8,\"hidden_act\":\"gelu\"}}"));
        assert!(e.contains("hidden_act"), "{e}");
        let e = err(r#"{"model_type":"mistral","hidden_size":64,"num_attention_heads":8,"num_hidden_layers":2,"intermediate_size":172,"max_position_embeddings":4096,"vocab_size":512,"sliding_window":1024}"#);
        assert!(e.contains("sliding_window"), "{e}");
        let e = err(r#"{"model_type":"opt","hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,"max_position_embeddings":128,"vocab_size":300}"#);
        assert!(e.contains("ffn_dim"), "{e}");
        assert!(err(r#"{"model_type":"gpt2","n_layer":2,"n_head":3,"n_embd":64}"#).contains("multiple"));
    }

    #[test]
    fn llama3_scaling_keeps_short_waves_and_divides_long_ones() {
        let s = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 };
        let mut f = [1.0, 1e-4, 2.0 * std::f64::consts::PI / 4096.0];
        s.apply(&mut f);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 1e-4 / 8.0).abs() < 1e-18);
        // Wavelength 4096 sits on the ramp: (8192/4096 − 1) / 3 = 1/3 of the way back.
        let f0 = 2.0 * std::f64::consts::PI / 4096.0;
        assert!((f[2] - ((2.0 / 3.0) * f0 / 8.0 + f0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn gpt2_parameter_count_matches_the_124m_model() {
        assert_eq!(ModelConfig::gpt2(12, 12, 768, 1024, 50257).parameter_count(), 124_439_808);
    }
}
