//! A packed model evaluated through the LUT kernels gives the perplexity of its dequantized
//! weights evaluated densely (the bound: 1e-4 relative), for k-means LUTs with outliers,
//! a uniform grid stored as a LUT, and seed 000's scales and input shift; the packed file goes
//! through bytes and back first, so what is evaluated is what a file holds.

use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::{quantize_model, Calibration, QuantizeRequest};
use lutlab_core::NoProgress;
use lutlab_model::{linear_input_means, perplexity, ActivationSettings, EvalSettings, Decoder};
use lutlab_tests::*;

/// Packed (LUT kernels) against dequantized (dense) perplexity. Where the kernels dequantize to
/// the dense weights bit for bit the two are equal (measured 0 on lavapipe for tables, outliers
/// and uniform grids); where a layer keeps seed 000's scales and input shift beside its codes,
/// the dense form has them folded in, a different f32 rounding: measured 1.2e-7 (scales and
/// shift) and 2.2e-8 (scaling and centering).
const REL: f64 = 1e-6;

fn tokens() -> Vec<u32> {
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let tokens = shipped_model().tokenizer.encode(&text[..6000]).unwrap();
    tokens[..tokens.len().min(700)].to_vec()
}

fn ppl(model: &Decoder, tokens: &[u32]) -> f64 {
    let settings = EvalSettings { max_length: 128, stride: 64, ..EvalSettings::for_model(model) };
    pollster::block_on(perplexity(model, tokens, settings, "valid.txt", &mut NoProgress)).unwrap().perplexity()
}

fn packed_model(request: QuantizeRequest, table_dtype: TableDtype) -> PackedModel {
    packed_with(request, table_dtype, Calibration::default())
}

fn packed_with(request: QuantizeRequest, table_dtype: TableDtype, calibration: Calibration) -> PackedModel {
    let weights = shipped_model().weights;
    let method = request.method(&weights, false).unwrap();
    let quantized = quantize_model(&weights, &method, None, calibration, &mut NoProgress).unwrap();
    let packed = PackedModel::from_quantized(&weights, &quantized, PackedMeta::default(), table_dtype).unwrap();
    let bytes = packed.to_safetensors(table_dtype).unwrap();
    PackedModel::from_safetensors("packed.safetensors", &bytes).unwrap()
}

fn check(what: &str, packed: &PackedModel) {
    let device = gpu();
    let tokens = tokens();
    let packed_ppl = ppl(&Decoder::from_packed(packed, &device).unwrap(), &tokens);
    let dense_ppl = ppl(&Decoder::new(&packed.dequantized_weights().unwrap(), &device), &tokens);
    let rel = (packed_ppl / dense_ppl - 1.0).abs();
    eprintln!("{what}: packed {packed_ppl} vs dequantized {dense_ppl} (relative {rel:e})");
    assert!(rel < REL, "{what}: packed {packed_ppl} vs dequantized {dense_ppl}: relative {rel:e}");
}

fn request(method: &str, bits: u32, granularity: &str) -> QuantizeRequest {
    QuantizeRequest { method: method.into(), bits, granularity: granularity.into(), ..QuantizeRequest::default() }
}

#[test]
fn kmeans_dense_and_sparse_packed_equals_dequantized() {
    let request = QuantizeRequest { outlier_percent: Some(0.45), ..request("kmeans", 3, "channel") };
    check("k-means 3-bit channel + 0.45% outliers, f16 tables", &packed_model(request, TableDtype::F16));
}

#[test]
fn whole_tensor_and_uniform_grids_run_through_the_same_kernels() {
    check("k-means 4-bit tensor, f32 tables", &packed_model(request("kmeans", 4, "tensor"), TableDtype::F32));
    check("rtn int4 channel as a LUT", &packed_model(request("rtn", 4, "channel"), TableDtype::F32));
}

#[test]
fn scales_and_input_shift_match_their_folded_dense_form() {
    let mut packed = packed_model(request("kmeans", 2, "group:32"), TableDtype::F32);
    let mut rng = SplitMix64::new(9);
    for layer in packed.layers.values_mut() {
        layer.scales = Some((0..layer.cols).map(|_| 0.8 + 0.4 * rng.next_f64() as f32).collect());
        layer.input_shift = Some((0..layer.rows).map(|_| 0.1 * (rng.next_f64() as f32 - 0.5)).collect());
    }
    check("k-means 2-bit group:32 with scales and shift", &packed);
}

/// Seed 000's transforms through the whole path: means from the original model on the GPU,
/// scaled and centered whole-tensor k-means, packed (scales, shift and folded bias in the file),
/// evaluated through the LUT kernels: equal to its dense form, and no worse than plain k-means
/// by more than noise (seed 000 reports them helping).
#[test]
fn seed000_scaling_and_centering_run_packed() {
    let loaded = shipped_model();
    let device = gpu();
    let model = Decoder::new(&loaded.weights, &device);
    let text = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).unwrap();
    let calibration_tokens = loaded.tokenizer.encode(&text[6000..60_000]).unwrap();
    let settings = ActivationSettings { nsamples: 8, ..ActivationSettings::for_model(&model) };
    let means = pollster::block_on(linear_input_means(&model, &calibration_tokens, settings, &mut NoProgress)).unwrap();
    let transformed_request = QuantizeRequest { scaling: true, centering: true, ..request("kmeans", 3, "tensor") };
    let packed = packed_with(transformed_request, TableDtype::F16, Calibration { input_means: Some(&means), ..Calibration::default() });
    let layer = &packed.layers["h.1.mlp.c_fc"];
    assert!(layer.scales.is_some() && layer.input_shift.is_some(), "scales and shift are stored");
    check("k-means 3-bit tensor, scaled and centered", &packed);
    let tokens = tokens();
    let transformed = ppl(&Decoder::from_packed(&packed, &device).unwrap(), &tokens);
    let plain = ppl(&Decoder::from_packed(&packed_model(request("kmeans", 3, "tensor"), TableDtype::F16), &device).unwrap(), &tokens);
    eprintln!("3-bit tensor k-means: plain {plain}, scaled + centered {transformed}");
    assert!(transformed < plain * 1.05, "scaled + centered {transformed} vs plain {plain}");
}

/// Determinism (with the CLI and the page's byte-for-byte check in tests/e2e/page.test.mjs):
/// the same settings and seed write the same file twice, k-means restarts and outliers included,
/// though the work is spread over threads.
#[test]
fn the_same_settings_and_seed_write_a_bit_identical_file() {
    let request = QuantizeRequest { outlier_percent: Some(0.45), restarts: Some(2), seed: 7, ..request("kmeans", 3, "channel") };
    let bytes = || packed_model(request.clone(), TableDtype::F16).to_safetensors(TableDtype::F16).unwrap();
    let (first, second) = (bytes(), bytes());
    assert!(first == second, "two runs with seed 7 wrote different files ({} and {} bytes)", first.len(), second.len());
    let other = QuantizeRequest { seed: 8, ..request };
    assert!(packed_model(other, TableDtype::F16).to_safetensors(TableDtype::F16).unwrap() != first, "the seed matters");
}
