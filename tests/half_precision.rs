//! Half precision on the GPU (`--dtype f16`, issue 17): dense weights stored in f16, matmul
//! operands rounded to f16 with f32 accumulation, the product widened back to f32, norms,
//! softmax and the residual stream in f32 (`Decoder::stored_as`, `decoder::matmul_in`).
//!
//! - `matmul_in` against its CPU reference: the f64 product of the f16-rounded operands, rounded
//!   to f16 (burn's f16 matmul returns f16): within one f16 step plus f32 accumulation's error.
//! - Perplexity in f16 within 0.5 % of f32 (the bound) on every family, resident,
//!   streamed (converted block by block, equal to resident) and packed (dense parts in f16, LUT
//!   kernels in f32); measured on lavapipe: ≤ 5e-5.
//!
//! Where the adapter lacks shader-f16 (SwiftShader) the CLI refuses `--dtype f16` by name
//! (`crates/lutlab-cli/tests/dtype.rs`); these tests need it and say so.

use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::{ModelFiles, NoProgress};
use lutlab_model::burn;
use lutlab_model::decoder::matmul_in;
use lutlab_model::{open_gpu, perplexity, Decoder, EvalSettings};
use lutlab_tests::*;
use burn::tensor::{DType, Tensor, TensorData};

/// The bound on f16 perplexity against f32.
const REL: f64 = 5e-3;

fn has_f16() -> bool {
    let gpu = pollster::block_on(open_gpu()).expect("a GPU");
    assert!(gpu.has_f16(), "{} has no shader-f16: these tests need it (lavapipe has it)", gpu.describe());
    true
}

/// `v` rounded to the nearest f16 (round half to even), exactly, without a half-float crate:
/// 11 significant bits for normal values, a fixed step of 2⁻²⁴ below 2⁻¹⁴.
fn f16_round(v: f32) -> f64 {
    let v = f64::from(v);
    if v == 0.0 {
        return 0.0;
    }
    let exponent = v.abs().log2().floor().max(-14.0);
    let step = 2f64.powf(exponent - 10.0);
    let q = v / step;
    let r = q.round();
    // Ties to even.
    let r = if (q - q.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - q.signum() } else { r };
    r * step
}

#[test]
fn half_matmul_matches_its_cpu_reference() {
    assert!(has_f16());
    let device = gpu();
    let (m, k, n) = (8, 1000, 24);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 13 % 89) as f32 - 44.0) / 51.0).collect();
    let ta = Tensor::<2>::from_data(TensorData::new(a.clone(), [m, k]), &device);
    let tb = Tensor::<2>::from_data(TensorData::new(b.clone(), [k, n]), &device);
    let got: Vec<f32> = matmul_in(ta, tb, DType::F16).into_data().try_to_vec::<f32>().unwrap();
    // Allowed: one f16 step (ulp) of the result, plus what accumulating in f32 in another order
    // than the f64 sum may cost, 2⁻²² · Σ|a·b| (accumulating in f16 would cost ~2⁻¹¹ · Σ|a·b|).
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let terms: Vec<f64> = (0..k).map(|l| f16_round(a[i * k + l]) * f16_round(b[l * n + j])).collect();
            let exact: f64 = terms.iter().sum();
            let magnitude: f64 = terms.iter().map(|t| t.abs()).sum();
            let want = f16_round(exact as f32);
            let step = 2f64.powf(want.abs().max(2f64.powi(-14)).log2().floor() - 10.0);
            let err = (f64::from(got[i * n + j]) - want).abs() / (step + magnitude * 2f64.powi(-22));
            worst = worst.max(err);
        }
    }
    eprintln!("f16 matmul vs CPU reference: worst {worst:.2} of the bound");
    assert!(worst <= 1.0, "{worst} of the bound");
}

fn ppl(model: &Decoder, tokens: &[u32]) -> f64 {
    let settings = EvalSettings { max_length: 128, stride: 64, max_logits_bytes: 16 << 20, max_stream_bytes: 1 << 20 };
    pollster::block_on(perplexity(model, tokens, settings, "valid", &mut NoProgress)).unwrap().perplexity()
}

fn rel(a: f64, b: f64) -> f64 {
    (a / b - 1.0).abs()
}

#[test]
fn f16_perplexity_is_within_half_a_percent_of_f32_in_every_family() {
    assert!(has_f16());
    let device = gpu();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    for dir in ["models/gpt2-tiny-wikitext", "models/opt-tiny-wikitext", "models/llama-tiny-wikitext"] {
        let loaded = ModelFiles::read_dir(&repo(dir)).unwrap().load().unwrap();
        let tokens = loaded.tokenizer.encode(&text[..12_000]).unwrap();
        let f32_ppl = ppl(&Decoder::new(&loaded.weights, &device), &tokens);
        let half = Decoder::new(&loaded.weights, &device).stored_as(DType::F16);
        assert_eq!(half.wte.dtype(), DType::F16);
        let f16_ppl = ppl(&half, &tokens);
        let opened = ModelFiles::open_dir(&repo(dir)).unwrap();
        let streamed = Decoder::streamed(&opened.config, opened.checkpoint, &device).unwrap().stored_as(DType::F16);
        let streamed_ppl = ppl(&streamed, &tokens);
        eprintln!("{dir}: f32 {f32_ppl}, f16 {f16_ppl} (relative {:e}), streamed f16 {streamed_ppl}", rel(f16_ppl, f32_ppl));
        assert!(rel(f16_ppl, f32_ppl) < REL, "{dir}: f16 {f16_ppl} vs f32 {f32_ppl}");
        assert!(rel(streamed_ppl, f16_ppl) < 1e-6, "{dir}: streamed f16 {streamed_ppl} vs resident {f16_ppl}");
    }
}

#[test]
fn a_packed_model_in_f16_keeps_its_lut_kernels() {
    assert!(has_f16());
    let device = gpu();
    let loaded = shipped_model();
    let request = QuantizeRequest { method: "kmeans".into(), bits: 4, granularity: "channel".into(), ..QuantizeRequest::default() };
    let method = request.method(&loaded.weights, false).unwrap();
    let quantized = quantize_model(&loaded.weights, &method, None, Calibration::default(), &mut NoProgress).unwrap();
    let packed = PackedModel::from_quantized(&loaded.weights, &quantized, PackedMeta::default(), TableDtype::F16).unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = loaded.tokenizer.encode(&text[..12_000]).unwrap();
    let f32_ppl = ppl(&Decoder::from_packed(&packed, &device).unwrap(), &tokens);
    let f16_ppl = ppl(&Decoder::from_packed(&packed, &device).unwrap().stored_as(DType::F16), &tokens);
    eprintln!("packed: f32 {f32_ppl}, f16 {f16_ppl} (relative {:e})", rel(f16_ppl, f32_ppl));
    assert!(rel(f16_ppl, f32_ppl) < REL);
}
