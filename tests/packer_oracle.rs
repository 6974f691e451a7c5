//! The packed format's oracle outside lutlab: `scripts/pack_reference.py`, written from
//! `docs/FORMAT.md` alone, packs a tiny random GPT-2 (3-, 4- and 5-bit codes crossing words,
//! padding rows, tables per channel, per group of channels and per matrix in F16 and F32, sparse
//! corrections, scales and an input shift) and writes the dense model the file stands for.
//! lutlab must read the file to those weights and run it through its LUT kernels to the dense
//! model's logits.

use lutlab_core::packed_file::PackedModel;
use lutlab_model::device::download;
use lutlab_model::Decoder;
use lutlab_tests::*;

/// Weights: the reference adds the sparse corrections and applies the scales in f32 as lutlab
/// does, so they agree to f32 rounding; biases fold the input shift through a sum of up to 192
/// products in f64 (numpy) against lutlab's order.
const WEIGHT_ABS: f32 = 1e-6;
const BIAS_ABS: f32 = 1e-5;
/// Logits of the LUT kernels against dense matmuls of the same weights (as in lut_kernels.rs).
const LOGITS_ABS: f32 = 1e-4;

fn oracle() -> (PackedModel, lutlab_core::ModelWeights) {
    let dir = repo("tests/fixtures/packer_oracle");
    let bytes = std::fs::read(dir.join("packed.safetensors")).expect("the oracle's packed file");
    let packed = PackedModel::from_safetensors("packed.safetensors", &bytes).expect("lutlab reads the independent packer's file");
    (packed, load_weights(&dir.join("dense")))
}

#[test]
fn the_independent_packers_file_decodes_to_its_dense_weights() {
    let (packed, dense) = oracle();
    let decoded = packed.dequantized_weights().unwrap();
    for (name, _) in dense.config.linear_names() {
        let (want, got) = (dense.linear(&name).unwrap(), decoded.linear(&name).unwrap());
        assert_all_close(&format!("{name} weight"), &got.weight.data, &want.weight.data, WEIGHT_ABS);
        assert_all_close(&format!("{name} bias"), &got.bias.data, &want.bias.data, BIAS_ABS);
    }
}

#[test]
fn the_independent_packers_file_runs_through_the_lut_kernels_to_the_dense_logits() {
    let (packed, dense) = oracle();
    let device = gpu();
    let ids: Vec<u32> = (0..2 * 24).map(|i| (i * 37 + 5) % 96).collect();
    let rows: Vec<&[u32]> = ids.chunks(24).collect();
    let logits = |model: &Decoder| pollster::block_on(download(model.forward(model.tokens(&rows)).unwrap())).unwrap();
    let from_packed = logits(&Decoder::from_packed(&packed, &device).unwrap());
    let from_dense = logits(&Decoder::new(&dense, &device));
    let err = assert_all_close("logits", &from_packed, &from_dense, LOGITS_ABS);
    eprintln!("packed (independent packer) vs dense logits: max |error| {err:e}");
}
