//! Every kind of broken model input gets a typed error that names the problem, never a panic.

mod tiny_model;

use lutlab_core::perplexity::strided_windows;
use lutlab_core::{ModelConfig, LoadError};
use tiny_model::*;

fn load_error(files: lutlab_core::ModelFiles) -> LoadError {
    match files.load() {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => e,
    }
}

#[test]
fn a_valid_tiny_model_loads_with_and_without_prefix() {
    let model = model_files(safetensors_with(|_, _, _| true)).load().expect("valid model");
    assert_eq!(model.weights.blocks.len(), 1);
    assert_eq!(model.weights.wte.shape, vec![VOCAB, N_EMBD]);
    // HF also writes GPT-2 without the `transformer.` prefix.
    let bare = safetensors_with(|_, _, _| true);
    let parsed = lutlab_core::checkpoint::parse_safetensors("x", &bare).expect("parse");
    let renamed: Vec<(String, Vec<usize>, Vec<f32>)> = parsed
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (n.trim_start_matches("transformer.").to_string(), v.shape().to_vec(), data)
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> = renamed.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    let bytes = lutlab_core::checkpoint::write_safetensors(&refs, None).unwrap();
    model_files(bytes).load().expect("model without prefix");
}

#[test]
fn missing_file_is_named() {
    let err = lutlab_core::ModelFiles::read_dir(std::path::Path::new("/nonexistent/model")).unwrap_err();
    assert!(matches!(err, LoadError::MissingFile { .. }), "{err}");
    let dir = std::env::temp_dir().join(format!("lutlab-missing-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json("gpt2")).unwrap();
    let err = lutlab_core::ModelFiles::read_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("not found"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_safetensors_is_reported() {
    let bytes = safetensors_with(|_, _, _| true);
    for cut in [0, 5, 100, bytes.len() - 1] {
        let err = load_error(model_files(bytes[..cut].to_vec()));
        let text = err.to_string();
        assert!(matches!(err, LoadError::BadSafetensors { .. }), "cut {cut}: {text}");
        assert!(text.contains("model.safetensors"), "{text}");
    }
    let err = load_error(model_files(bytes[..bytes.len() - 1].to_vec()));
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn header_larger_than_file_is_reported() {
    let mut bytes = safetensors_with(|_, _, _| true);
    let claimed = bytes.len() as u64 * 2;
    bytes[..8].copy_from_slice(&claimed.to_le_bytes());
    let err = load_error(model_files(bytes));
    assert!(err.to_string().contains("header says it is"), "{err}");
}

#[test]
fn offsets_out_of_range_are_reported() {
    let bytes = safetensors_with(|_, _, _| true);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    // Point one tensor's end far past the data section; the header stays valid JSON.
    let mut json: serde_json::Value = serde_json::from_str(header).unwrap();
    let entry = json.as_object_mut().unwrap().values_mut().find(|v| v.get("data_offsets").is_some()).unwrap();
    entry["data_offsets"][1] = serde_json::json!(99_999_999u64);
    let new_header = serde_json::to_string(&json).unwrap();
    let mut corrupt = (new_header.len() as u64).to_le_bytes().to_vec();
    corrupt.extend_from_slice(new_header.as_bytes());
    corrupt.extend_from_slice(&bytes[8 + header_len..]);
    let err = load_error(model_files(corrupt));
    assert!(matches!(err, LoadError::BadSafetensors { .. }), "{err}");
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let bytes = safetensors_with(|name, shape, _| {
        if name.ends_with("h.0.mlp.c_fc.weight") {
            *shape = vec![4 * N_EMBD, N_EMBD]; // nn.Linear layout instead of Conv1D
        }
        true
    });
    let err = load_error(model_files(bytes));
    let text = err.to_string();
    assert!(text.contains("h.0.mlp.c_fc.weight") && text.contains("[8, 32]") && text.contains("[32, 8]"), "{text}");
}

#[test]
fn wrong_dtype_is_reported() {
    let tensor = [1i32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![4], &tensor).unwrap();
    let bytes = safetensors::serialize(vec![("wte.weight".to_string(), view)], None).unwrap();
    let err = load_error(model_files(bytes));
    assert!(matches!(err, LoadError::WrongDtype { .. }) && err.to_string().contains("I32"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let bytes = safetensors_with(|name, _, _| !name.ends_with("ln_f.bias"));
    let err = load_error(model_files(bytes));
    assert_eq!(err.to_string(), "tensor `ln_f.bias` is missing from the checkpoint");
}

#[test]
fn nan_weights_are_reported_with_position() {
    let bytes = safetensors_with(|name, _, data| {
        if name.ends_with("h.0.attn.c_proj.weight") {
            data[5] = f32::NAN;
            data[9] = f32::INFINITY;
        }
        true
    });
    let err = load_error(model_files(bytes));
    assert!(matches!(err, LoadError::NonFinite { count: 2, first: 5, .. }), "{err}");
    assert!(err.to_string().contains("h.0.attn.c_proj.weight"));
}

#[test]
fn other_architectures_are_refused_by_name() {
    let err = ModelConfig::from_json(&config_json("bert"), "config.json").unwrap_err();
    assert_eq!(err.to_string(), "model type `bert` is not supported (lutlab runs model_type gpt2, opt, llama, mistral, qwen2)");
    // A supported family with GPT-2's field names misses its own.
    let err = ModelConfig::from_json(&config_json("llama"), "config.json").unwrap_err();
    assert!(err.to_string().contains("hidden_size") && err.to_string().contains("config.json"), "{err}");
    let err = ModelConfig::from_json(br#"{"model_type":"gpt2","n_layer":2}"#, "config.json").unwrap_err();
    assert!(err.to_string().contains("n_head"), "{err}");
    let err = ModelConfig::from_json(b"{not json", "config.json").unwrap_err();
    assert!(matches!(err, LoadError::BadJson { .. }), "{err}");
}

#[test]
fn empty_and_short_texts_are_refused() {
    let err = strided_windows(0, 256, 128, "empty.txt").unwrap_err();
    assert_eq!(err.to_string(), "empty.txt: the text is empty");
    let err = strided_windows(100, 256, 128, "short.txt").unwrap_err();
    assert!(matches!(err, LoadError::TextTooShort { tokens: 100, needed: 256, .. }), "{err}");
    assert!(strided_windows(1000, 256, 0, "x").is_err());
    assert!(strided_windows(1000, 256, 300, "x").is_err());
}

#[test]
fn sharded_checkpoints_load_from_an_index() {
    let dir = std::env::temp_dir().join(format!("lutlab-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shapes = tensor_shapes();
    let (first, second) = shapes.split_at(shapes.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", first), ("model-00002-of-00002.safetensors", second)] {
        let bytes = safetensors_with(|name, _, _| part.iter().any(|(n, _)| n == name));
        std::fs::write(dir.join(file), bytes).unwrap();
        for (name, _) in part {
            map.insert(name.clone(), serde_json::Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), config_json("gpt2")).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gpt2-tokenizer/");
    std::fs::copy(format!("{root}encoder.json"), dir.join("vocab.json")).unwrap();
    std::fs::copy(format!("{root}vocab.bpe"), dir.join("merges.txt")).unwrap();
    let files = lutlab_core::ModelFiles::read_dir(&dir).expect("read sharded dir");
    assert_eq!(files.safetensors.len(), 2);
    let model = files.load().expect("sharded model loads");
    assert_eq!(model.weights.blocks.len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_tensor_stored_in_two_shards_is_refused_naming_both() {
    let shapes = tensor_shapes();
    let (first, _) = shapes.split_at(shapes.len() / 2);
    let a = safetensors_with(|_, _, _| true);
    let b = safetensors_with(|name, _, _| first.iter().any(|(n, _)| n == name));
    let err = lutlab_core::Checkpoint::from_safetensors([("model-00001-of-00002.safetensors", a.as_slice()), ("model-00002-of-00002.safetensors", b.as_slice())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("first in model-00001-of-00002.safetensors"), "{err}");
}

#[test]
fn inconsistent_llama_configs_name_the_field() {
    let llama = |extra: &str| {
        format!(r#"{{"model_type":"llama","hidden_size":64,"num_attention_heads":8,"num_hidden_layers":2,"intermediate_size":172,"max_position_embeddings":128,"vocab_size":512{extra}}}"#)
    };
    assert!(ModelConfig::from_json(llama("").as_bytes(), "config.json").is_ok());
    for (extra, needle) in [
        (r#","num_key_value_heads":3"#, "key/value heads"),
        (r#","rope_scaling":{"rope_type":"dynamic","factor":2.0}"#, "dynamic"),
        (r#","rope_scaling":{"rope_type":"llama3","factor":8.0}"#, "low_freq_factor"),
        (r#","head_dim":7"#, "odd"),
        (r#","rms_norm_eps":-1"#, "epsilon"),
    ] {
        let err = ModelConfig::from_json(llama(extra).as_bytes(), "my/config.json").unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("my/config.json"), "{extra}: {err}");
    }
}

#[test]
fn a_checkpoint_missing_a_declared_tensor_names_it() {
    // A Llama config whose checkpoint lacks one layer's v_proj.
    let config = ModelConfig::from_json(
        br#"{"model_type":"llama","hidden_size":8,"num_attention_heads":2,"num_key_value_heads":1,"num_hidden_layers":1,"intermediate_size":16,"max_position_embeddings":8,"vocab_size":10}"#,
        "config.json",
    )
    .unwrap();
    let tensors = config
        .tensor_shapes()
        .into_iter()
        .filter(|(name, _, required)| *required && !name.contains("v_proj"))
        .map(|(name, shape, _)| (name, lutlab_core::HostTensor::new(shape.clone(), vec![0.0; shape.iter().product()])));
    let err = lutlab_core::ModelWeights::from_checkpoint(&config, lutlab_core::Checkpoint::from_tensors(tensors)).unwrap_err();
    assert_eq!(err.to_string(), "tensor `model.layers.0.self_attn.v_proj.weight` is missing from the checkpoint");
}

#[test]
fn a_file_that_is_not_safetensors_at_all_is_named_so() {
    // A text file saved as model.safetensors: its first 8 bytes read as an absurd header length.
    let text = b"<!DOCTYPE html><html><body>Not found</body></html>\n".repeat(20);
    let err = load_error(model_files(text.clone())).to_string();
    assert!(err.contains("not a safetensors file") && err.contains("<!DOCTYPE html>"), "{err}");
    // The same from disk, where checkpoints are indexed rather than read.
    let path = std::env::temp_dir().join(format!("lutlab-not-safetensors-{}.safetensors", std::process::id()));
    std::fs::write(&path, &text).unwrap();
    let err = lutlab_core::checkpoint::Checkpoint::open(std::slice::from_ref(&path)).map(|_| ()).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("not a safetensors file"), "{err}");
}
