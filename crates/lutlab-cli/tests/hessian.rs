//! `lutlab hessian` and the Hessian methods of `lutlab quantize` end to end on the shipped Llama:
//! a Hessian file written and read back, GPTQ below round-to-nearest on the loss it minimises,
//! the packed result evaluated through the LUT kernels, the sequential path, and refusals.

mod common;

use common::{lutlab, lutlab_json, lutlab_json_with, repo};

const MODEL: &str = "models/llama-tiny-wikitext";

fn temp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lutlab-cli-hessian-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

fn total_proxy(report: &serde_json::Value) -> f64 {
    report["layers"].as_array().unwrap().iter().map(|l| l["proxy_loss"].as_f64().expect("every layer reports its proxy loss")).sum()
}

#[test]
fn gptq_from_a_hessian_file_beats_nearest_and_packs() {
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    let hessian = temp("h.safetensors");
    let written = lutlab_json(&["hessian", "--model", &model, "--data", &data, "--nsamples", "6", "--seqlen", "64", "--out", &hessian, "--json"]);
    assert!(written["hessians"].as_u64().unwrap() > 0);
    // QuIP's summary of the file: one line per distinct input, with the statistics in range, and
    // the eigenvectors more incoherent after QuIP's processing on average.
    let summary = lutlab_json(&["hessian", "--model", &model, "--from", &hessian, "--incoherence", "--json"]);
    let layers = summary["layers"].as_array().unwrap();
    assert_eq!(layers.len() as u64, written["hessians"].as_u64().unwrap());
    let (mut before, mut after) = (0.0, 0.0);
    for l in layers {
        let n = l["inputs"].as_u64().unwrap();
        let ratio = l["trace_ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio <= 1.0 + 1e-9, "{l}");
        assert!(l["rank_1e2"].as_u64().unwrap() <= l["rank"].as_u64().unwrap() && l["rank"].as_u64().unwrap() <= n);
        assert_eq!(l["eigenvalues"].as_array().unwrap().len() as u64, n);
        before += l["mu"].as_f64().unwrap();
        after += l["processed_mu"].as_f64().unwrap();
    }
    assert!(after < before, "μ of H's eigenvectors: {before} before, {after} after processing (summed)");
    let quantize = |method: &str, extra: &[&str]| {
        let packed = temp(&format!("{method}.lut"));
        let mut args = vec!["quantize", "--model", &model, "--method", method, "--bits", "3", "--granularity", "channel", "--asym", "--hessian", &hessian, "--json", "--packed"];
        args.push(Box::leak(packed.into_boxed_str()));
        args.extend_from_slice(extra);
        lutlab_json(&args)
    };
    let nearest = quantize("greedy", &["--npasses", "0"]);
    let gptq = quantize("gptq", &[]);
    let rg = quantize("ldlq-rg", &[]);
    let (n, g, r) = (total_proxy(&nearest), total_proxy(&gptq), total_proxy(&rg));
    assert!(g < 0.9 * n, "GPTQ's proxy loss {g} is not below nearest rounding's {n}");
    assert!(r < n, "LDLQ-RG {r} vs nearest {n}");
    // k-means tables rounded to with feedback (H-diagonal-weighted k-means) pack as well.
    let kmeans = quantize("ldlq", &["--grid", "kmeans", "--restarts", "1"]);
    assert!(total_proxy(&kmeans).is_finite() && kmeans["packed_bytes"].as_u64().is_some());
    // The packed GPTQ model runs through the LUT kernels (on a few thousand characters).
    let short = temp("short.txt");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&short, &text[..text.char_indices().nth(4000).unwrap().0]).unwrap();
    let eval = lutlab_json(&["eval", "--packed", &temp("gptq.lut"), "--model", &model, "--data", &short, "--max-length", "64", "--stride", "64", "--json"]);
    assert!(eval["perplexity"].as_f64().unwrap().is_finite());
    // Mixed precision under a budget, priced by the proxy loss (no Fisher file given).
    let mixed = quantize("gptq", &["--budget", "3bpw", "--widths", "2,3,4"]);
    assert_eq!(mixed["allocation"]["estimate"], "hessian-proxy");
    assert!(mixed["sizes"]["bits_per_weight"].as_f64().unwrap() <= 3.0);
    let estimate = mixed["allocation"]["estimated_loss"].as_f64().unwrap();
    assert!((estimate - total_proxy(&mixed)).abs() <= 1e-9 * estimate, "the estimate {estimate} is the layers' proxy loss {}", total_proxy(&mixed));
}

#[test]
fn sequential_gptq_runs_on_the_gpu_and_true_sequential_too() {
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    for extra in [&[][..], &["--true-sequential", "--act-order"][..]] {
        let mut args = vec![
            "quantize", "--model", &model, "--method", "gptq", "--bits", "4", "--granularity", "group:32", "--asym", "--calibration-data", &data,
            "--hessian-samples", "4", "--hessian-seqlen", "32", "--json", "--out", Box::leak(temp("dense").into_boxed_str()),
        ];
        if extra.contains(&"--act-order") {
            args.push("--static-groups");
        }
        args.extend_from_slice(extra);
        let report = lutlab_json(&args);
        assert!(total_proxy(&report) > 0.0);
        // Input groups of 32 with f16 scale and zero point: 4 + 32/32 bits per weight.
        assert!((report["bits_per_weight"].as_f64().unwrap() - 5.0).abs() < 1e-9);
    }
}

#[test]
fn gptq_rounded_on_the_gpu_reports_what_the_cpu_reference_does() {
    // `--gpu`: the row loop in f32 on the GPU, the factor from faer on the host (the default on
    // a CPU adapter) and from the GPU's queued Cholesky (`LUTLAB_GPTQ_FACTOR=gpu`, the default on
    // GPUs), each against the f64 CPU rounding, from one Hessian file (so all see the same
    // Hessians).
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    let hessian = temp("h-gpu.safetensors");
    lutlab_json(&["hessian", "--model", &model, "--data", &data, "--nsamples", "6", "--seqlen", "64", "--out", &hessian, "--json"]);
    let quantize = |gpu: Option<&str>, granularity: &str, act_order: bool| {
        let packed = temp(&format!("gptq-gpu-{gpu:?}-{}.safetensors", granularity.replace(':', "")));
        let mut args = vec!["quantize", "--model", &model, "--method", "gptq", "--bits", "3", "--granularity", granularity, "--hessian", &hessian, "--json", "--packed"];
        args.push(Box::leak(packed.into_boxed_str()));
        if act_order {
            args.push("--act-order");
        }
        if gpu.is_some() {
            args.push("--gpu");
        }
        lutlab_json_with(&[("LUTLAB_GPTQ_FACTOR", gpu.unwrap_or("host"))], &args)
    };
    // Per channel with act-order, and GPTQ's groups of input rows fitted as they are reached
    // (the GPU reads each group's rows back and fits them with the CPU's own code).
    for (granularity, act_order) in [("channel", true), ("group:32", false)] {
        let cpu = quantize(None, granularity, act_order);
        for factor in ["host", "gpu"] {
            let gpu = quantize(Some(factor), granularity, act_order);
            assert_eq!(cpu["bits_per_weight"], gpu["bits_per_weight"], "{granularity}: both pack alike");
            let (cpu, gpu) = (cpu["layers"].as_array().unwrap(), gpu["layers"].as_array().unwrap());
            assert_eq!(cpu.len(), gpu.len());
            let mut worst = 0f64;
            for (c, g) in cpu.iter().zip(gpu) {
                let (pc, pg) = (c["proxy_loss"].as_f64().unwrap(), g["proxy_loss"].as_f64().unwrap());
                // f32 against f64 (tests/hessian_rounding_gpu.rs bounds the codes); measured on
                // lavapipe: at most 4.6e-8 relative with the host's factor, 3.6e-7 with the GPU's.
                assert!((pc - pg).abs() <= 1e-3 * pc, "{granularity}, factored on the {factor} {}: proxy loss CPU {pc} GPU {pg} ({:.1e})", c["name"], (pc - pg).abs() / pc);
                worst = worst.max((pc - pg).abs() / pc);
            }
            eprintln!("{granularity}, factored on the {factor}: largest relative difference of a layer's proxy loss: {worst:.1e}");
        }
    }
}

#[test]
fn bad_hessian_requests_are_refused_by_name() {
    let model = repo(MODEL).display().to_string();
    let fisher_like = temp("not-a-hessian.safetensors");
    std::fs::write(&fisher_like, lutlab_core::checkpoint::write_safetensors(&[("x", &[1usize][..], &[1.0f32][..])], None).unwrap()).unwrap();
    let out = lutlab(&["quantize", "--model", &model, "--method", "gptq", "--hessian", &fisher_like, "--eval"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is missing") && err.contains("Hessian file"), "{err}");
    let out = lutlab(&["quantize", "--model", &model, "--method", "gptq", "--quantize-embeddings", "--eval"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("embeddings have no Hessian"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lutlab(&["quantize", "--model", &model, "--method", "gptq", "--granularity", "group:32", "--act-order", "--eval"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("static groups"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Perplexity of the packed file `packed` (run by the LUT kernels) and of the dense export
/// `dense`, on the first 3,000 characters of WikiText-2 validation.
fn packed_and_dense_perplexity(packed: &str, dense: &str) -> (f64, f64) {
    let model = repo(MODEL).display().to_string();
    let short = format!("{packed}.short.txt"); // one per caller: tests run in parallel
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    std::fs::write(&short, &text[..text.char_indices().nth(3000).unwrap().0]).unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--data", &short, "--max-length", "64", "--stride", "64", "--json"];
        args.extend_from_slice(extra);
        lutlab_json(&args)["perplexity"].as_f64().unwrap()
    };
    (eval(&["--packed", packed, "--model", &model]), eval(&["--model", dense]))
}

#[test]
fn input_groups_pack_and_evaluate_through_the_lut_kernels_as_their_dense_weights() {
    // Groups of 32 input rows: RTN and GPTQ results pack (format version 3: codes and a f16
    // scale and zero point per group) and the packed file, run by the LUT kernels, gives the
    // perplexity of its dense export to f32 summation-order error.
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    for (method, extra) in [("rtn", &[][..]), ("gptq", &["--calibration-data", &data, "--hessian-samples", "4", "--hessian-seqlen", "32"][..])] {
        let (packed, dense) = (temp(&format!("{method}-groups.lut")), temp(&format!("{method}-groups-dense")));
        let mut args = vec!["quantize", "--model", &model, "--method", method, "--bits", "4", "--granularity", "group:32", "--asym", "--json"];
        args.extend_from_slice(&["--packed", &packed, "--out", &dense]);
        args.extend_from_slice(extra);
        let report = lutlab_json(&args);
        assert!(report["packed_bytes"].as_u64().is_some(), "{method}: every layer packs");
        let bytes = std::fs::read(&packed).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        // Input groups need version 3; the f16 checkpoint's dense tensors, stored as f16, make it 4.
        assert_eq!(header["__metadata__"]["format_version"], "4", "{method}");
        assert!(header["__metadata__"]["layers"].as_str().unwrap().contains("\"group_size\":32"), "{method}");
        let (from_packed, from_dense) = packed_and_dense_perplexity(&packed, &dense);
        assert!((from_packed - from_dense).abs() <= 1e-5 * from_dense, "{method}: packed {from_packed} vs dense {from_dense}");
    }
}

#[test]
fn incoherence_processing_packs_and_evaluates_as_its_dense_export() {
    // QuIP's incoherence processing on the shipped Llama (GQA; 192 = 16 × 12 and 512 = 32 × 16
    // factor pairs): the packed file keeps rotated codes and the rotations, the LUT kernels run
    // it with the rotations in the forward pass, and it gives the perplexity of its dense export.
    let model = repo(MODEL).display().to_string();
    let data = repo("data/wikitext-2/valid.txt").display().to_string();
    let (packed, dense) = (temp("incoherent.lut"), temp("incoherent-dense"));
    let report = lutlab_json(&[
        "quantize", "--model", &model, "--method", "ldlq-rg", "--bits", "3", "--granularity", "channel", "--incoherence",
        "--calibration-data", &data, "--hessian-samples", "4", "--hessian-seqlen", "32", "--json", "--packed", &packed, "--out", &dense,
    ]);
    assert!(report["method"].as_str().unwrap().contains("+incoherence"), "{}", report["method"]);
    assert!(total_proxy(&report) > 0.0);
    let (from_packed, from_dense) = packed_and_dense_perplexity(&packed, &dense);
    assert!((from_packed - from_dense).abs() <= 1e-5 * from_dense, "packed {from_packed} vs dense {from_dense}");
    // QuIP's options that do not combine are refused by name.
    let out = lutlab(&["quantize", "--model", &model, "--method", "gptq", "--qfn", "b", "--granularity", "group:32", "--eval"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("qfn b"), "{}", String::from_utf8_lossy(&out.stderr));
}
