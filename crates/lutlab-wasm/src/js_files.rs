//! Reads a model's files from the JS object the page builds:
//! `{ config: Uint8Array, safetensors: [{ name, bytes }], tokenizerJson?, vocab?, merges?, tokenizerConfig? }`.

use js_sys::{Array, Reflect, Uint8Array};
use lutlab_core::{ModelFiles, TokenizerFiles};
use wasm_bindgen::{JsCast, JsError, JsValue};

fn field(object: &JsValue, name: &str) -> Result<JsValue, JsError> {
    Reflect::get(object, &name.into()).map_err(|_| JsError::new(&format!("model files: cannot read `{name}`")))
}

fn optional_bytes(object: &JsValue, name: &str) -> Result<Option<Vec<u8>>, JsError> {
    let value = field(object, name)?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let bytes = value.dyn_into::<Uint8Array>().map_err(|_| JsError::new(&format!("model files: `{name}` is not a Uint8Array")))?;
    Ok(Some(bytes.to_vec()))
}

fn bytes(object: &JsValue, name: &str) -> Result<Vec<u8>, JsError> {
    optional_bytes(object, name)?.ok_or_else(|| JsError::new(&format!("model files: `{name}` is missing")))
}

pub fn model_files(files: &JsValue) -> Result<ModelFiles, JsError> {
    let config_json = bytes(files, "config")?;
    let shards = field(files, "safetensors")?
        .dyn_into::<Array>()
        .map_err(|_| JsError::new("model files: `safetensors` is not an array"))?;
    let safetensors = shards
        .iter()
        .map(|shard| {
            let name = field(&shard, "name")?.as_string().ok_or_else(|| JsError::new("model files: a shard has no name"))?;
            Ok((name, bytes(&shard, "bytes")?))
        })
        .collect::<Result<Vec<_>, JsError>>()?;
    let tokenizer = match optional_bytes(files, "tokenizerJson")? {
        Some(json) => TokenizerFiles::Json(json),
        None => TokenizerFiles::VocabMerges {
            vocab: bytes(files, "vocab")?,
            merges: bytes(files, "merges")?,
            config: optional_bytes(files, "tokenizerConfig")?,
        },
    };
    Ok(ModelFiles { config_json, safetensors, tokenizer })
}

/// The shard files named by a `model.safetensors.index.json`, so the page knows what to fetch.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = shardFiles)]
pub fn shard_files(index_json: &[u8]) -> Result<Vec<String>, JsError> {
    lutlab_core::checkpoint::shard_files(index_json, lutlab_core::files::WEIGHTS_INDEX_FILE).map_err(|e| JsError::new(&e.to_string()))
}

/// Refuses, before the weights are downloaded, a model whose `config.json` is unusable or whose
/// largest tensor cannot be bound on this GPU (f32, in one buffer), naming the tensor.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = checkConfigFits)]
pub fn check_config_fits(config_json: &[u8], max_binding_bytes: f64) -> Result<(), JsError> {
    let config = lutlab_core::ModelConfig::from_json(config_json, lutlab_core::files::CONFIG_FILE).map_err(|e| JsError::new(&e.to_string()))?;
    let (name, elements) = config.largest_tensor();
    let bytes = elements as f64 * 4.0;
    if bytes > max_binding_bytes {
        return Err(JsError::new(&format!(
            "this {} model is too large for this GPU in the page: tensor `{name}` needs {:.0} MB in one buffer as f32, \
             and the GPU binds at most {:.0} MB ({:.0} M parameters in all). Use the lutlab CLI for it",
            config.model_type,
            bytes / 1e6,
            max_binding_bytes / 1e6,
            config.parameter_count() as f64 / 1e6
        )));
    }
    Ok(())
}
