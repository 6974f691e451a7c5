//! The Hugging Face `config.json` of a GPT-2 model.

use crate::error::{LoadError, Result};
use serde_json::Value;

/// The hyper-parameters lutlab needs from a GPT-2 `config.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gpt2Config {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub n_positions: usize,
    pub vocab_size: usize,
    pub layer_norm_epsilon: f64,
    /// Width of the MLP's hidden layer (`n_inner`, default 4 × n_embd).
    pub n_inner: usize,
}

impl Gpt2Config {
    /// Parses `config.json` bytes; `file` names the source in errors.
    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let json: Value = serde_json::from_slice(bytes).map_err(|e| LoadError::BadJson {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("gpt2");
        if model_type != "gpt2" {
            return Err(LoadError::UnsupportedArchitecture { model_type: model_type.to_string() });
        }
        let int = |field: &'static str, default: Option<usize>| -> Result<usize> {
            match json.get(field) {
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or(LoadError::BadConfigField { file: file.to_string(), field }),
                None => default.ok_or(LoadError::BadConfigField { file: file.to_string(), field }),
            }
        };
        let config = Self {
            n_layer: int("n_layer", None)?,
            n_head: int("n_head", None)?,
            n_embd: int("n_embd", None)?,
            // HF's GPT2Config defaults, used when a config leaves them out.
            n_positions: int("n_positions", Some(1024))?,
            vocab_size: int("vocab_size", Some(50257))?,
            layer_norm_epsilon: json.get("layer_norm_epsilon").and_then(Value::as_f64).unwrap_or(1e-5),
            n_inner: 0,
        };
        let mut config = config;
        config.n_inner = match json.get("n_inner") {
            None | Some(Value::Null) => 4 * config.n_embd,
            Some(_) => int("n_inner", None)?,
        };
        // Variants of GPT-2 attention that HF supports but lutlab does not compute.
        for (flag, unsupported) in [("scale_attn_by_inverse_layer_idx", true), ("reorder_and_upcast_attn", true), ("scale_attn_weights", false)] {
            if json.get(flag).and_then(Value::as_bool) == Some(unsupported) {
                return Err(LoadError::BadConfig { file: file.to_string(), reason: format!("`{flag}: {unsupported}` is not supported") });
            }
        }
        if !config.n_embd.is_multiple_of(config.n_head) {
            return Err(LoadError::BadConfig {
                file: file.to_string(),
                reason: format!("n_embd {} is not a multiple of n_head {}", config.n_embd, config.n_head),
            });
        }
        if let Some(act) = json.get("activation_function").and_then(Value::as_str)
            && act != "gelu_new"
        {
            return Err(LoadError::BadConfig {
                file: file.to_string(),
                reason: format!("activation_function `{act}` is not supported (GPT-2 uses gelu_new)"),
            });
        }
        // Negated so that NaN is refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(config.layer_norm_epsilon > 0.0) {
            return Err(LoadError::BadConfig { file: file.to_string(), reason: "layer_norm_epsilon must be > 0".into() });
        }
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters (tied `lm_head` counted once).
    pub fn parameter_count(&self) -> usize {
        let c = self.n_embd;
        let f = self.n_inner;
        let per_block = 2 * 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + (c * f + f) + (f * c + c);
        self.vocab_size * c + self.n_positions * c + self.n_layer * per_block + 2 * c
    }
}
