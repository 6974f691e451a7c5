//! The quantization request the page and the CLI share: settings reach the method, and settings
//! that do not fit the method are refused by name.

use lutlab_core::checkpoint::Checkpoint;
use lutlab_core::quant::{Method, QuantizeRequest};
use lutlab_core::{ModelConfig, ModelWeights};

fn shipped_weights() -> ModelWeights {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/gpt2-tiny-wikitext");
    let config = ModelConfig::from_json(&std::fs::read(dir.join("config.json")).expect("config"), "config.json").expect("config");
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("shipped model");
    let checkpoint = Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).expect("checkpoint");
    ModelWeights::from_checkpoint(&config, checkpoint).expect("weights")
}

fn kmeans_restarts(request: &QuantizeRequest, weights: &ModelWeights) -> usize {
    match request.method(weights, false).expect("method") {
        Method::Kmeans { settings, .. } => settings.restarts,
        other => panic!("expected k-means, got {other:?}"),
    }
}

#[test]
fn restarts_reach_kmeans_and_are_refused_where_they_mean_nothing() {
    let weights = shipped_weights();
    assert_eq!(kmeans_restarts(&QuantizeRequest::default(), &weights), 10);
    assert_eq!(kmeans_restarts(&QuantizeRequest { restarts: Some(1), ..Default::default() }, &weights), 1);
    let zero = QuantizeRequest { restarts: Some(0), ..Default::default() }.method(&weights, false).unwrap_err().to_string();
    assert!(zero.contains("restarts must be at least 1"), "{zero}");
    let rtn = QuantizeRequest { method: "rtn".into(), restarts: Some(3), ..Default::default() };
    let err = rtn.method(&weights, false).unwrap_err().to_string();
    assert!(err.contains("restarts") && err.contains("round-to-nearest"), "{err}");
    // The page sends requests as JSON: the field is optional there.
    let from_json: QuantizeRequest = serde_json::from_str(r#"{"method":"kmeans","bits":3,"restarts":2}"#).expect("json");
    assert_eq!(kmeans_restarts(&from_json, &weights), 2);
}

#[test]
fn rtn_labels_name_the_scale_settings_that_differ_from_the_defaults() {
    let plain = QuantizeRequest { method: "rtn".into(), granularity: "channel".into(), ..Default::default() };
    assert_eq!(plain.label(false), "rtn int 4-bit channel sym");
    let tuned = QuantizeRequest { scale_stats: "mse".into(), scale_type: "po2".into(), asym: true, ..plain };
    assert_eq!(tuned.label(false), "rtn int 4-bit channel asym mse po2");
}
