//! The CLI on a streamed model (`--stream`: blocks read from disk as they are used) writes what
//! it writes for the resident model: the same Fisher diagonal (computed in block-group passes
//! and written a tensor at a time) and the same packed model (quantized block by block and
//! written layer by layer). Each comparison is of values, which must be equal.

mod common;

use common::{lutlab, lutlab_json, repo};
use lutlab_core::packed_file::PackedModel;
use lutlab_core::Checkpoint;

const MODEL: &str = "models/llama-tiny-wikitext";

fn temp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lutlab-cli-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

#[test]
fn streamed_fisher_and_quantize_write_what_the_resident_model_writes() {
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    let (resident_fisher, streamed_fisher) = (temp("resident-fisher.safetensors"), temp("streamed-fisher.safetensors"));
    let fisher = |out: &str, extra: &[&str]| {
        let mut args = vec!["fisher", "--model", &model, "--data", &data, "--nsamples", "3", "--seqlen", "32", "--out", out, "--json"];
        args.extend_from_slice(extra);
        lutlab_json(&args)
    };
    let a = fisher(&resident_fisher, &[]);
    let b = fisher(&streamed_fisher, &["--stream", "--blocks-per-pass", "2"]);
    assert_eq!((a["streamed"].as_bool(), b["streamed"].as_bool()), (Some(false), Some(true)));
    assert_eq!(a["mean_loss"], b["mean_loss"]);
    let (fa, fb) = (std::fs::read(&resident_fisher).unwrap(), std::fs::read(&streamed_fisher).unwrap());
    let (ca, cb) = (Checkpoint::from_safetensors([("a", fa.as_slice())]).unwrap(), Checkpoint::from_safetensors([("b", fb.as_slice())]).unwrap());
    assert_eq!(ca.names().collect::<Vec<_>>(), cb.names().collect::<Vec<_>>());
    for name in ca.names() {
        assert_eq!(ca.get(name), cb.get(name), "{name}");
    }

    let (resident_packed, streamed_packed) = (temp("resident.safetensors"), temp("streamed.safetensors"));
    let quantize = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "quantize", "--model", &model, "--fisher", &resident_fisher, "--granularity", "channel", "--bits", "3", "--gpu",
            "--restarts", "1", "--range", "3", "--packed", out, "--json",
        ];
        args.extend_from_slice(extra);
        lutlab_json(&args)
    };
    let qa = quantize(&resident_packed, &[]);
    let qb = quantize(&streamed_packed, &["--stream"]);
    assert_eq!(qa["bits_per_weight"], qb["bits_per_weight"]);
    assert_eq!(qa["packed_bytes"], qb["packed_bytes"]);
    let pa = PackedModel::from_safetensors("a", &std::fs::read(&resident_packed).unwrap()).unwrap();
    let pb = PackedModel::read_file(std::path::Path::new(&streamed_packed)).unwrap();
    assert_eq!(pa, pb, "the same packed model");
}

#[test]
fn streamed_gptq_writes_what_the_resident_model_writes() {
    // GPTQ's sequential loop on the streamed model (each block uploaded in turn, the windows
    // passed on through the quantized blocks), and from a Hessian file (no GPU pass at all).
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    let hessians = temp("hessians.safetensors");
    lutlab_json(&["hessian", "--model", &model, "--data", &data, "--nsamples", "4", "--seqlen", "32", "--out", &hessians, "--json"]);
    for (label, extra) in [
        ("sequential", vec!["--hessian-samples", "4", "--hessian-seqlen", "32", "--calibration-data", &data]),
        ("true-sequential", vec!["--hessian-samples", "4", "--hessian-seqlen", "32", "--calibration-data", &data, "--true-sequential"]),
        ("file", vec!["--hessian", &hessians]),
    ] {
        let (resident, streamed) = (temp(&format!("gptq-{label}-resident.safetensors")), temp(&format!("gptq-{label}-streamed.safetensors")));
        let quantize = |out: &str, stream: &str| {
            let mut args = vec!["quantize", "--model", &model, "--method", "gptq", "--bits", "3", "--granularity", "channel", "--act-order", "--packed", out, "--json", stream];
            args.extend_from_slice(&extra);
            lutlab_json(&args)
        };
        let (qa, qb) = (quantize(&resident, "--no-stream"), quantize(&streamed, "--stream"));
        assert_eq!(qa["layers"], qb["layers"], "{label}: every layer's report (errors, proxy losses)");
        let pa = PackedModel::read_file(std::path::Path::new(&resident)).unwrap();
        let pb = PackedModel::read_file(std::path::Path::new(&streamed)).unwrap();
        assert_eq!(pa, pb, "{label}: the same packed model");
    }
}

#[test]
fn a_streamed_quantization_refuses_what_it_cannot_do_before_starting() {
    let model = repo(MODEL).display().to_string();
    for (extra, want) in [
        (vec!["--eval"], "--packed"),
        (vec!["--packed", "/tmp/x.safetensors", "--out", "/tmp/x"], "--out"),
        (vec!["--packed", "/tmp/x.safetensors", "--outlier-percent", "0.45"], "outlier range"),
        (vec!["--packed", "/tmp/x.safetensors", "--quantize-embeddings"], "embeddings"),
    ] {
        let mut args = vec!["quantize", "--model", &model, "--stream"];
        args.extend(extra);
        let out = lutlab(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}
