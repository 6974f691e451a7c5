//! A packed model whose tied token embedding / LM head is quantized (`--quantize-embeddings`):
//! the logits come from the head's codes through the LUT kernels, the embedding lookup from the
//! same matrix's rows dequantized. Checked against the CPU: the head's reference matmul on the
//! same hidden states (GEMV and GEMM paths), the CPU reference forward of the dequantized model,
//! and the perplexity of the dequantized model evaluated densely.
//!
//! Tolerances: the head as in `lut_kernels.rs` (f32 sums in another order than the f64
//! reference: `1e-5 · Σ|h·w| + 1e-6` per logit); whole-model logits `1e-4` absolute (as the GPU
//! against transformers in `reference_logits.rs`); perplexity `1e-4` relative (`packed_eval.rs`).

use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::head::{transpose, HEAD};
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::{reference, NoProgress};
use lutlab_model::burn::tensor::{Tensor, TensorData};
use lutlab_model::{perplexity, EvalSettings, Decoder};
use lutlab_tests::*;
use std::sync::OnceLock;

/// The shipped model, 3-bit per-channel k-means with the embeddings, f16 tables, through bytes.
fn packed() -> &'static PackedModel {
    static PACKED: OnceLock<PackedModel> = OnceLock::new();
    PACKED.get_or_init(|| {
        let weights = shipped_model().weights;
        let request = QuantizeRequest { bits: 3, granularity: "channel".into(), embeddings: true, ..QuantizeRequest::default() };
        let method = request.method(&weights, false).unwrap();
        let quantized = quantize_model(&weights, &method, request.selection(None), Calibration::default(), &mut NoProgress).unwrap();
        let packed = PackedModel::from_quantized(&weights, &quantized, PackedMeta::default(), TableDtype::F16).unwrap();
        PackedModel::from_safetensors("head.safetensors", &packed.to_safetensors(TableDtype::F16).unwrap()).unwrap()
    })
}

fn tokens(n: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = shipped_model().tokenizer.encode(&text[..6000]).unwrap();
    tokens[..n].to_vec()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn packed_head_logits_match_the_cpu_reference() {
    let device = gpu();
    let packed = packed();
    let head = &packed.layers[HEAD];
    let model = Decoder::from_packed(packed, &device).unwrap();
    assert!(model.head.is_some(), "the head runs through the LUT kernels");
    let (c, vocab) = (head.rows, head.cols);
    let w = head.effective_weights();
    // The lookup table is the packed matrix's rows, dequantized: exactly the dense model's `wte`.
    let dequantized = packed.dequantized_weights().unwrap();
    assert_eq!(values(model.wte.clone()), transpose(&w, c, vocab));
    assert_eq!(values(model.wte.clone()), dequantized.wte.data);
    // 3 tokens take the GEMV, 40 the GEMM.
    for m in [3, 40] {
        let ids = tokens(m);
        let hidden = values(model.hidden(model.tokens(&[&ids])).unwrap());
        let input = Tensor::<3>::from_data(TensorData::new(hidden.clone(), [1, m, c]), &device);
        let got = values(model.lm_head(input));
        let want = head.reference_matmul(&hidden, m, None);
        for t in 0..m {
            for v in 0..vocab {
                let magnitude: f32 = (0..c).map(|r| (hidden[t * c + r] * w[r * vocab + v]).abs()).sum();
                let (g, e) = (got[t * vocab + v], want[t * vocab + v]);
                assert!((g - e).abs() <= 1e-5 * magnitude + 1e-6, "m={m}: token {t}, logit {v}: GPU {g}, CPU {e}");
            }
        }
        // The whole model against the CPU reference forward of its dense form.
        let logits = values(model.forward(model.tokens(&[&ids])).unwrap());
        let cpu = reference::forward(&dequantized, &ids).unwrap();
        let err = assert_all_close(&format!("logits, {m} tokens"), &logits, &cpu, 1e-4);
        eprintln!("{m} tokens: max |GPU packed − CPU dequantized| logit {err:e}");
    }
}

#[test]
fn perplexity_through_the_packed_head_equals_the_dequantized_model() {
    let device = gpu();
    let packed = packed();
    let ids = tokens(700);
    let ppl = |model: &Decoder| {
        let settings = EvalSettings { max_length: 128, stride: 64, ..EvalSettings::for_model(model) };
        pollster::block_on(perplexity(model, &ids, settings, "valid.txt", &mut NoProgress)).unwrap().perplexity()
    };
    let packed_ppl = ppl(&Decoder::from_packed(packed, &device).unwrap());
    let dense_ppl = ppl(&Decoder::new(&packed.dequantized_weights().unwrap(), &device));
    let original = ppl(&Decoder::new(&shipped_model().weights, &device));
    let rel = (packed_ppl / dense_ppl - 1.0).abs();
    eprintln!("packed head {packed_ppl}, dequantized {dense_ppl} (relative {rel:e}), f32 {original}");
    // The packed head dequantizes to the dense weights bit for bit: measured 0 on lavapipe.
    assert!(rel < 1e-6, "packed {packed_ppl} vs dequantized {dense_ppl}: relative {rel:e}");
    assert!(packed_ppl > original, "a 3-bit embedding costs some perplexity: {packed_ppl} vs {original}");
}
