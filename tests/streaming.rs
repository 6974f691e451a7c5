//! A streamed model (each block read from disk when used) computes what the resident model
//! computes: perplexity, Fisher in block groups, mean inputs. The loop order differs (blocks
//! outer, windows inner), the arithmetic per window does not, so the results are equal to the
//! last bit; the bound below only leaves room for a GPU that reorders a reduction between runs.

use lutlab_core::{ModelFiles, NoProgress};
use lutlab_model::{fisher, linear_input_means, perplexity, ActivationSettings, Decoder, EvalSettings, FisherSettings};
use lutlab_tests::*;

/// Relative difference allowed between streamed and resident results.
const REL: f64 = 1e-6;

fn models() -> [&'static str; 2] {
    // GPT-2's Conv1D layout, and a Llama (nn.Linear layout transposed on read, GQA, RoPE).
    ["models/gpt2-tiny-wikitext", "models/llama-tiny-wikitext"]
}

fn both(dir: &str) -> (Decoder, Decoder, Vec<u32>) {
    let device = gpu();
    let opened = ModelFiles::open_dir(&repo(dir)).expect("opens");
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = opened.tokenizer.encode(&text[..6_000]).unwrap();
    let streamed = Decoder::streamed(&opened.config, opened.checkpoint, &device).expect("streams");
    let resident = Decoder::new(&ModelFiles::open_dir(&repo(dir)).unwrap().load().unwrap().weights, &device);
    assert!(streamed.is_streamed() && !resident.is_streamed());
    (resident, streamed, tokens)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn streamed_perplexity_equals_resident() {
    for dir in models() {
        let (resident, streamed, tokens) = both(dir);
        // Small chunks, so several walks through the blocks happen.
        let settings = EvalSettings { max_length: 128, stride: 64, max_logits_bytes: 4 << 20, max_stream_bytes: 1 << 20 };
        let a = pollster::block_on(perplexity(&resident, &tokens, settings, "valid", &mut NoProgress)).unwrap();
        let b = pollster::block_on(perplexity(&streamed, &tokens, settings, "valid", &mut NoProgress)).unwrap();
        assert_eq!(a.scored, b.scored);
        eprintln!("{dir}: nll sum resident {} streamed {}", a.nll_sum, b.nll_sum);
        assert!(rel(b.nll_sum, a.nll_sum) <= REL, "{dir}: {} vs {}", b.nll_sum, a.nll_sum);
    }
}

#[test]
fn streamed_fisher_in_block_groups_equals_the_single_pass() {
    for dir in models() {
        let (resident, streamed, tokens) = both(dir);
        let settings = FisherSettings { nsamples: 3, seqlen: 32, seed: 4, micro_batch: 2, blocks_per_pass: None, max_logits_bytes: FisherSettings::DEFAULT_LOGITS_BYTES };
        let a = pollster::block_on(fisher(&resident, &tokens, settings, "valid", &mut NoProgress)).unwrap();
        let grouped = FisherSettings { blocks_per_pass: Some(1), ..settings };
        let b = pollster::block_on(fisher(&streamed, &tokens, grouped, "valid", &mut NoProgress)).unwrap();
        assert_eq!(a.diagonal.meta, b.diagonal.meta, "{dir}: same windows, same mean loss");
        assert_eq!(a.diagonal.tensors.len(), b.diagonal.tensors.len());
        for ((na, ta), (nb, tb)) in a.diagonal.tensors.iter().zip(&b.diagonal.tensors) {
            assert_eq!(na, nb, "{dir}: model order");
            let scale = ta.data.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            let worst = ta.data.iter().zip(&tb.data).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
            assert!(worst <= REL * scale, "{dir} {na}: max difference {worst:e} of max {scale:e}");
        }
    }
}

#[test]
fn streamed_mean_inputs_equal_resident() {
    let (resident, streamed, tokens) = both("models/gpt2-tiny-wikitext");
    let settings = ActivationSettings { nsamples: 3, seqlen: 32, seed: 2, batch: 2 };
    let a = pollster::block_on(linear_input_means(&resident, &tokens, settings, &mut NoProgress)).unwrap();
    let b = pollster::block_on(linear_input_means(&streamed, &tokens, settings, &mut NoProgress)).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let worst = x.iter().zip(&b[name]).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{name}: {worst:e}");
    }
}

#[test]
fn a_streamed_model_with_a_missing_block_tensor_fails_before_it_runs() {
    let dir = std::env::temp_dir().join(format!("lutlab-stream-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = repo("models/llama-tiny-wikitext");
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let ckpt = lutlab_core::Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap();
    let kept: Vec<(String, lutlab_core::HostTensor)> =
        ckpt.names().filter(|n| *n != "model.layers.2.mlp.down_proj.weight").map(|n| (n.to_string(), ckpt.get(n).unwrap())).collect();
    let views: Vec<(&str, &[usize], &[f32])> = kept.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice())).collect();
    std::fs::write(dir.join("model.safetensors"), lutlab_core::checkpoint::write_safetensors(&views, None).unwrap()).unwrap();
    let opened = ModelFiles::open_dir(&dir).unwrap();
    let err = Decoder::streamed(&opened.config, opened.checkpoint, &gpu()).unwrap_err().to_string();
    assert!(err.contains("model.layers.2.mlp.down_proj.weight") && err.contains("missing"), "{err}");
}

/// A half-precision checkpoint (F16 and BF16, as HF ships 7B models): the streamed model uploads
/// the stored bytes and widens them on the GPU, the resident one widens on the host; the same
/// perplexity. The Llama's `[out, in]` weights are transposed by the widening kernel too.
#[test]
fn a_half_precision_checkpoint_streams_as_it_loads_resident() {
    use lutlab_core::checkpoint::{write_tensors, TensorData};
    let src = repo("models/llama-tiny-wikitext");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let ckpt = lutlab_core::Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap();
    let tensors: Vec<(String, lutlab_core::HostTensor)> = ckpt.names().map(|n| (n.to_string(), ckpt.get(n).unwrap())).collect();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let device = gpu();
    for label in ["f16", "bf16"] {
        let half = |v| if label == "f16" { TensorData::F16(v) } else { TensorData::BF16(v) };
        let dir = std::env::temp_dir().join(format!("lutlab-stream-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let views: Vec<(&str, &[usize], TensorData<'_>)> = tensors.iter().map(|(n, t)| (n.as_str(), t.shape.as_slice(), half(&t.data))).collect();
        std::fs::write(dir.join("model.safetensors"), write_tensors(&views, None).unwrap()).unwrap();
        let opened = ModelFiles::open_dir(&dir).unwrap();
        let tokens = opened.tokenizer.encode(&text[..4_000]).unwrap();
        let streamed = Decoder::streamed(&opened.config, opened.checkpoint, &device).unwrap();
        let resident = Decoder::new(&ModelFiles::open_dir(&dir).unwrap().load().unwrap().weights, &device);
        let settings = EvalSettings { max_length: 128, stride: 64, max_logits_bytes: 4 << 20, max_stream_bytes: 1 << 20 };
        let a = pollster::block_on(perplexity(&resident, &tokens, settings, "valid", &mut NoProgress)).unwrap();
        let b = pollster::block_on(perplexity(&streamed, &tokens, settings, "valid", &mut NoProgress)).unwrap();
        assert_eq!(a.scored, b.scored);
        assert!(rel(b.nll_sum, a.nll_sum) <= REL, "{label}: streamed {} vs resident {}", b.nll_sum, a.nll_sum);
        std::fs::remove_dir_all(&dir).ok();
    }
}
