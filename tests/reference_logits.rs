//! lutlab's GPT-2 against HF transformers' logits (fixture made by
//! scripts/make_reference_fixtures.py), and the CPU reference forward against the GPU.

use lutlab_core::checkpoint::{parse_safetensors, read_f32, read_i64};
use lutlab_core::reference;
use lutlab_model::device::download;
use lutlab_model::Decoder;
use lutlab_tests::*;

/// f32 logits from two f32 implementations (GPU vs CUDA with TF32 off): the bound.
const LOGITS_ABS: f32 = 1e-4;
const HEAD: usize = 4096;

struct Case {
    ids: Vec<u32>,
    rows: usize,
    logits_head: Vec<f32>,
    logsumexp: Vec<f32>,
}

fn cases() -> Vec<(String, Case)> {
    let bytes = fixture("reference_logits.safetensors");
    let st = parse_safetensors("reference_logits.safetensors", &bytes).unwrap();
    let mut cases = Vec::new();
    for prefix in ["p0", "p1", "p2", "batch"] {
        let (shape, ids) = read_i64(&st, &format!("{prefix}.input_ids")).unwrap();
        let rows = if shape.len() == 2 { shape[0] } else { 1 };
        cases.push((
            prefix.to_string(),
            Case {
                ids: ids.iter().map(|&i| i as u32).collect(),
                rows,
                logits_head: read_f32(&st, &format!("{prefix}.logits_head")).unwrap().data,
                logsumexp: read_f32(&st, &format!("{prefix}.logsumexp")).unwrap().data,
            },
        ));
    }
    cases
}

#[test]
fn gpu_logits_match_transformers() {
    let loaded = shipped_model();
    let model = Decoder::new(&loaded.weights, &gpu());
    let vocab = loaded.config().vocab_size;
    for (name, case) in cases() {
        let rows: Vec<&[u32]> = case.ids.chunks(case.ids.len() / case.rows).collect();
        let logits = pollster::block_on(download(model.forward(model.tokens(&rows)).unwrap())).unwrap();
        let err = assert_all_close(&format!("{name} logits"), &head_columns(&logits, vocab, HEAD), &case.logits_head, LOGITS_ABS);
        let lse = assert_all_close(&format!("{name} logsumexp"), &row_logsumexp(&logits, vocab), &case.logsumexp, LOGITS_ABS);
        eprintln!("{name}: max |logit error| {err:e}, max |logsumexp error| {lse:e}");
    }
}

#[test]
fn cpu_reference_matches_transformers() {
    let loaded = shipped_model();
    let vocab = loaded.config().vocab_size;
    for (name, case) in cases() {
        for (r, ids) in case.ids.chunks(case.ids.len() / case.rows).enumerate() {
            let logits = reference::forward(&loaded.weights, ids).unwrap();
            let t = ids.len();
            let want = &case.logits_head[r * t * HEAD..(r + 1) * t * HEAD];
            assert_all_close(&format!("{name}[{r}] cpu logits"), &head_columns(&logits, vocab, HEAD), want, LOGITS_ABS);
            let want = &case.logsumexp[r * t..(r + 1) * t];
            assert_all_close(&format!("{name}[{r}] cpu logsumexp"), &row_logsumexp(&logits, vocab), want, LOGITS_ABS);
        }
    }
}

#[test]
fn cpu_reference_matches_gpu_on_a_full_window() {
    let loaded = shipped_model();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = loaded.tokenizer.encode(&text[..20_000]).unwrap();
    let window = &tokens[..loaded.config().n_positions];
    let model = Decoder::new(&loaded.weights, &gpu());
    let gpu_logits = pollster::block_on(download(model.forward(model.tokens(&[window])).unwrap())).unwrap();
    let cpu_logits = reference::forward(&loaded.weights, window).unwrap();
    let err = assert_all_close("full-window logits, GPU vs CPU", &gpu_logits, &cpu_logits, LOGITS_ABS);
    eprintln!("GPU vs CPU over {} positions: max |error| {err:e}", window.len());
}
