//! Writes the fuzzers' starting corpus into `fuzz/corpus/<target>/seed-*`: small files of every
//! kind the parsers read, made from the repository's real files or by lutlab's own writers.
//! libFuzzer mutates a whole input each run, so seeds are kept to a few KB (the shipped
//! checkpoints and tokenizers are MBs): tiny models of each family's real config, the real
//! tokenizers cut to their first 300 tokens, real checkpoint headers with a little data.
//!
//! `cargo run --release --example make_seeds` in `fuzz/` (scripts/README.md). Only needed to
//! start a corpus again: the committed corpus already holds what these grew into.

use lutlab_core::checkpoint::{write_tensors, Checkpoint, TensorData};
use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::hessian::linalg::Square;
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::{ModelConfig, ModelWeights, NoProgress, TextTokenizer, TokenizerFiles};
use lutlab_fuzz::NEXT_FILE;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

type Error = Box<dyn std::error::Error>;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn read(relative: &str) -> Vec<u8> {
    std::fs::read(repo(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = repo(&format!("fuzz/corpus/{target}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    println!("{target}/seed-{name}: {} bytes", bytes.len());
}

fn join_files(files: &[&[u8]]) -> Vec<u8> {
    files.join(NEXT_FILE)
}

/// Real model configs, and each shrunk to a model of one block and a few hundred weights (same
/// keys, so the same family features: GQA, head_dim, biases, rope scaling, project_in/out).
const CONFIGS: [&str; 8] = [
    "models/gpt2-tiny-wikitext/config.json",
    "models/opt-tiny-wikitext/config.json",
    "models/llama-tiny-wikitext/config.json",
    "models/llama2c-stories260k/config.json",
    "tests/models/llama3-rope/config.json",
    "tests/models/mistral/config.json",
    "tests/models/opt-postln-proj/config.json",
    "tests/models/qwen2-bias/config.json",
];

fn shrink(config: &[u8]) -> Value {
    let mut json: Value = serde_json::from_slice(config).unwrap();
    let object = json.as_object_mut().unwrap();
    let sizes = [
        ("n_layer", 1), ("num_hidden_layers", 1), ("n_head", 2), ("num_attention_heads", 2), ("num_key_value_heads", 1),
        ("n_embd", 8), ("hidden_size", 8), ("n_inner", 8), ("intermediate_size", 8), ("ffn_dim", 8),
        ("n_positions", 4), ("max_position_embeddings", 4), ("vocab_size", 8), ("word_embed_proj_dim", 4), ("head_dim", 6),
    ];
    for (key, value) in sizes {
        if object.contains_key(key) {
            object.insert(key.into(), json!(value));
        }
    }
    // Keep special token ids inside the shrunk vocabulary.
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if object.get(key).and_then(Value::as_u64).is_some_and(|id| id >= 8) {
            object.insert(key.into(), json!(1));
        }
    }
    json
}

/// A model of `config` with small deterministic weights.
fn tiny_weights(config: &ModelConfig) -> Result<ModelWeights, Error> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let tensors = config.tensor_shapes().into_iter().filter(|(_, _, required)| *required).map(|(name, shape, _)| {
        let data = (0..shape.iter().product::<usize>()).map(|_| next()).collect();
        (name, lutlab_core::HostTensor::new(shape, data))
    });
    Ok(ModelWeights::from_checkpoint(config, Checkpoint::from_tensors(tensors.collect::<Vec<_>>()))?)
}

fn checkpoint_bytes(weights: &ModelWeights, dtype: &str, prefix: &str) -> Result<Vec<u8>, Error> {
    let tensors = weights.to_checkpoint_tensors();
    if dtype == "bf16" {
        return Ok(bf16_safetensors(&tensors, prefix));
    }
    let typed: Vec<(String, &[usize], TensorData<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = if dtype == "f16" { TensorData::F16(&t.data) } else { TensorData::F32(&t.data) };
            (format!("{prefix}{name}"), t.shape.as_slice(), data)
        })
        .collect();
    let refs: Vec<_> = typed.iter().map(|(n, s, d)| (n.as_str(), *s, *d)).collect();
    Ok(write_tensors(&refs, None)?)
}

/// BF16 (which lutlab reads but never writes), truncating each f32 to its upper half.
fn bf16_safetensors(tensors: &[(String, lutlab_core::HostTensor)], prefix: &str) -> Vec<u8> {
    let mut header = Map::new();
    let mut data = Vec::new();
    for (name, t) in tensors {
        let start = data.len();
        data.extend(t.data.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()));
        header.insert(format!("{prefix}{name}"), json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [start, data.len()]}));
    }
    let header = Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    bytes
}

fn checkpoint_seeds() -> Result<(), Error> {
    for (i, path) in CONFIGS.iter().enumerate() {
        let config = ModelConfig::from_json(shrink(&read(path)).to_string().as_bytes(), path)?;
        let weights = tiny_weights(&config)?;
        let dtype = ["f32", "f16", "bf16"][i % 3];
        write("safetensors_checkpoint", &format!("{}-{dtype}", config.model_type), &checkpoint_bytes(&weights, dtype, "")?);
        if i == 0 {
            // GPT-2 as HF writes it too (`transformer.` prefix), and in two shards with their index.
            write("safetensors_checkpoint", "gpt2-prefixed", &checkpoint_bytes(&weights, "f32", "transformer.")?);
            let tensors = weights.to_checkpoint_tensors();
            let (first, second) = tensors.split_at(tensors.len() / 2);
            let shard = |part: &[(String, lutlab_core::HostTensor)]| {
                let refs: Vec<_> = part.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), TensorData::F16(&t.data))).collect();
                write_tensors(&refs, None)
            };
            write("safetensors_checkpoint", "gpt2-two-shards", &join_files(&[&shard(first)?, &shard(second)?]));
            let map: Map<String, Value> = tensors
                .iter()
                .enumerate()
                .map(|(j, (n, _))| (n.clone(), json!(format!("model-0000{}-of-00002.safetensors", 1 + 2 * j / tensors.len()))))
                .collect();
            let index = json!({"metadata": {"total_size": 4096}, "weight_map": map});
            write("safetensors_checkpoint", "index-json", serde_json::to_string_pretty(&index)?.as_bytes());
        }
    }
    // The shipped checkpoints' real headers, with the first bytes of their data (cut short, so
    // these start on the "truncated file" path).
    for model in ["gpt2-tiny-wikitext", "opt-tiny-wikitext", "llama-tiny-wikitext", "llama2c-stories260k"] {
        let bytes = read(&format!("models/{model}/model.safetensors"));
        let header = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        if header > 16 << 10 {
            continue;
        }
        write("safetensors_checkpoint", &format!("{model}-head"), &bytes[..8 + header + 64]);
    }
    Ok(())
}

/// Packed files of the tiny models, one per format feature: v1 k-means per channel (f16 and f32
/// tables, dense-and-sparse, seed 000's scaling), v2 packed head, v3 input groups and
/// incoherence processing.
fn packed_seeds() -> Result<(), Error> {
    let requests: Vec<(&str, QuantizeRequest, TableDtype)> = vec![
        ("kmeans-channel", QuantizeRequest { bits: 3, granularity: "channel".into(), ..Default::default() }, TableDtype::F16),
        ("kmeans-tensor-f32", QuantizeRequest { bits: 2, ..Default::default() }, TableDtype::F32),
        ("sparse", QuantizeRequest { bits: 2, granularity: "channel".into(), outlier_percent: Some(5.0), ..Default::default() }, TableDtype::F32),
        ("scaling", QuantizeRequest { bits: 2, granularity: "channel".into(), scaling: true, ..Default::default() }, TableDtype::F16),
        ("head", QuantizeRequest { bits: 3, granularity: "channel".into(), embeddings: true, ..Default::default() }, TableDtype::F16),
        ("rtn-groups", QuantizeRequest { method: "rtn".into(), bits: 3, granularity: "group:4".into(), asym: true, ..Default::default() }, TableDtype::F32),
        ("incoherence", QuantizeRequest { method: "ldlq".into(), bits: 2, granularity: "channel".into(), incoherence: true, ..Default::default() }, TableDtype::F32),
    ];
    for (c, path) in CONFIGS.iter().enumerate() {
        let config = ModelConfig::from_json(shrink(&read(path)).to_string().as_bytes(), path)?;
        let weights = tiny_weights(&config)?;
        let squares: std::collections::HashMap<String, Square> =
            weights.linears().map(|(name, l)| (name, Square::identity(l.in_features()))).collect();
        let hessians = |name: &str| squares.get(name);
        // Every request on GPT-2; one each on the other families.
        for (r, (what, request, dtype)) in requests.iter().enumerate() {
            if c > 0 && r != c % requests.len() {
                continue;
            }
            let made = (|| -> Result<Vec<u8>, Error> {
                let method = request.method(&weights, false)?;
                let calibration = Calibration { hessians: Some(&hessians), ..Calibration::default() };
                let quantized = quantize_model(&weights, &method, request.selection(None), calibration, &mut NoProgress)?;
                let meta = PackedMeta { base_model: path.to_string(), method: what.to_string(), settings: String::new() };
                let packed = PackedModel::from_quantized(&weights, &quantized, meta, *dtype)?;
                let bytes = packed.to_safetensors(*dtype)?;
                PackedModel::from_safetensors("seed", &bytes)?;
                Ok(bytes)
            })();
            match made {
                Ok(bytes) => write("packed_file", &format!("{}-{what}", config.model_type), &bytes),
                Err(e) => eprintln!("packed seed {} {what}: {e}", config.model_type),
            }
        }
    }
    // The committed version 1 and 2 fixtures are real files of lutlab's own writer, but 30-150 KB:
    // their headers (the part the parser reads most) with the data cut short.
    for fixture in ["packed_v1_small", "packed_v2_head"] {
        let bytes = read(&format!("tests/fixtures/{fixture}.safetensors"));
        let header = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        write("packed_file", &format!("{fixture}-head"), &bytes[..8 + header + 64]);
    }
    Ok(())
}

const KEEP_TOKENS: u64 = 300;

/// `vocab` (token → id) cut to ids below `KEEP_TOKENS`, plus `extra` tokens renumbered after
/// them; returns the old → new id map of the tokens kept.
fn cut_vocab(vocab: &Map<String, Value>, extra: &[&str]) -> (Map<String, Value>, std::collections::HashMap<u64, u64>) {
    let mut kept = Map::new();
    let mut ids = std::collections::HashMap::new();
    for (token, id) in vocab {
        let id = id.as_u64().unwrap();
        if id < KEEP_TOKENS {
            kept.insert(token.clone(), json!(id));
            ids.insert(id, id);
        }
    }
    for (j, token) in extra.iter().enumerate() {
        if let Some(id) = vocab.get(*token).and_then(Value::as_u64)
            && id >= KEEP_TOKENS
        {
            kept.insert(token.to_string(), json!(KEEP_TOKENS + j as u64));
            ids.insert(id, KEEP_TOKENS + j as u64);
        }
    }
    (kept, ids)
}

/// A merge (`"a b"` or `["a", "b"]`) whose parts and result are all in `vocab`.
fn merge_kept(merge: &Value, vocab: &Map<String, Value>) -> bool {
    let parts: Vec<String> = match merge {
        Value::String(s) => s.split(' ').map(str::to_string).collect(),
        Value::Array(a) => a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect(),
        _ => return false,
    };
    parts.len() == 2 && parts.iter().all(|p| vocab.contains_key(p)) && vocab.contains_key(&parts.concat())
}

/// Renumbers every `"id"`/`"ids"` of the tokenizer's added tokens and post-processor.
fn renumber(value: &mut Value, ids: &std::collections::HashMap<u64, u64>) {
    match value {
        Value::Object(o) => {
            for (key, v) in o.iter_mut() {
                match (key.as_str(), &mut *v) {
                    ("id", Value::Number(n)) => {
                        if let Some(new) = n.as_u64().and_then(|id| ids.get(&id)) {
                            *v = json!(new);
                        }
                    }
                    ("ids", Value::Array(a)) => a.iter_mut().for_each(|id| {
                        if let Some(new) = id.as_u64().and_then(|old| ids.get(&old)) {
                            *id = json!(new);
                        }
                    }),
                    _ => renumber(v, ids),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| renumber(v, ids)),
        _ => {}
    }
}

fn tokenizer_seeds() -> Result<(), Error> {
    for model in ["gpt2-tiny-wikitext", "opt-tiny-wikitext", "llama-tiny-wikitext"] {
        let mut json: Value = serde_json::from_slice(&read(&format!("models/{model}/tokenizer.json")))?;
        let added: Vec<String> =
            json["added_tokens"].as_array().unwrap().iter().map(|t| t["content"].as_str().unwrap().to_string()).collect();
        let added: Vec<&str> = added.iter().map(String::as_str).collect();
        let (vocab, ids) = cut_vocab(json["model"]["vocab"].as_object().unwrap(), &added);
        let merges: Vec<Value> = json["model"]["merges"].as_array().unwrap().iter().filter(|m| merge_kept(m, &vocab)).cloned().collect();
        json["model"]["vocab"] = Value::Object(vocab);
        json["model"]["merges"] = Value::Array(merges);
        for part in ["added_tokens", "post_processor"] {
            renumber(&mut json[part], &ids);
        }
        let bytes = serde_json::to_vec_pretty(&json)?;
        check_tokenizer(model, TokenizerFiles::Json(bytes.clone()))?;
        write("tokenizer_files", &format!("{model}-tokenizer-json"), &bytes);
    }
    // vocab.json + merges.txt (GPT-2's originals), alone and with each tokenizer_config.json.
    let vocab: Value = serde_json::from_slice(&read("models/gpt2-tiny-wikitext/vocab.json"))?;
    let (vocab, _) = cut_vocab(vocab.as_object().unwrap(), &["<|endoftext|>"]);
    let merges = String::from_utf8(read("models/gpt2-tiny-wikitext/merges.txt"))?;
    let merges: String = merges
        .lines()
        .filter(|line| line.starts_with("#version") || merge_kept(&json!(line), &vocab))
        .map(|line| format!("{line}\n"))
        .collect();
    let vocab = serde_json::to_vec(&Value::Object(vocab))?;
    for (name, config) in [
        ("", None),
        ("gpt2-config", Some(read("models/gpt2-tiny-wikitext/tokenizer_config.json"))),
        ("opt-config", Some(read("models/opt-tiny-wikitext/tokenizer_config.json"))),
    ] {
        let files = TokenizerFiles::VocabMerges { vocab: vocab.clone(), merges: merges.as_bytes().to_vec(), config: config.clone() };
        check_tokenizer(name, files)?;
        let mut parts: Vec<&[u8]> = vec![&vocab, merges.as_bytes()];
        parts.extend(config.as_deref());
        write("tokenizer_files", &format!("vocab-merges{}{name}", if name.is_empty() { "" } else { "-" }), &join_files(&parts));
    }
    Ok(())
}

fn check_tokenizer(what: &str, files: TokenizerFiles) -> Result<(), Error> {
    let tokenizer = TextTokenizer::from_files(&files)?;
    let ids = tokenizer.encode("Hello world <|endoftext|> <s>")?;
    println!("{what}: {} tokens, `Hello world` → {ids:?}", tokenizer.vocab_size());
    Ok(())
}

fn config_seeds() -> Result<(), Error> {
    for path in CONFIGS.iter().chain(&["tests/fixtures/packer_oracle/dense/config.json"]) {
        let name = path.trim_end_matches("/config.json").replace('/', "-");
        write("config_json", &name, &read(path));
    }
    // lutlab's own form (`to_json`), as the packed file's metadata stores it.
    let config = ModelConfig::from_json(&read(CONFIGS[2]), CONFIGS[2])?;
    write("config_json", "llama-to-json", config.to_json().as_bytes());
    Ok(())
}

fn main() -> Result<(), Error> {
    config_seeds()?;
    checkpoint_seeds()?;
    packed_seeds()?;
    tokenizer_seeds()?;
    Ok(())
}
