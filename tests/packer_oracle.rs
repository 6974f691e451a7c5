//! The packed format's oracle outside lutlab: `scripts/pack_reference.py`, written from
//! `docs/FORMAT.md` alone, packs a tiny random GPT-2 (3-, 4- and 5-bit codes crossing words,
//! padding rows, tables per channel, per group of channels and per matrix in F16 and F32, sparse
//! corrections, scales and an input shift) and writes the dense model the file stands for.
//! lutlab must read the file to those weights and run it through its LUT kernels to the dense
//! model's logits. Its version-4 file (`v4/`: dense tensors in F16, BF16 and F32, each the
//! smallest exact dtype by the document's rule) must read to its dense weights bit for bit, and
//! lutlab's writer must choose the same dtype for every dense tensor.

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
    oracle_in("tests/fixtures/packer_oracle")
}

fn oracle_in(fixture: &str) -> (PackedModel, lutlab_core::ModelWeights) {
    let dir = repo(fixture);
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

/// The header of a safetensors file.
fn header(bytes: &[u8]) -> serde_json::Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn the_independent_packers_version_4_file_reads_its_16_bit_dense_tensors_exactly() {
    let dir = repo("tests/fixtures/packer_oracle/v4");
    let bytes = std::fs::read(dir.join("packed.safetensors")).expect("the oracle's version-4 file");
    let theirs = header(&bytes);
    assert_eq!(theirs["__metadata__"]["format_version"], "4");
    assert_eq!(theirs["wte.weight"]["dtype"], "F16");
    assert_eq!(theirs["h.1.attn.c_proj.bias"]["dtype"], "BF16");
    let (packed, dense) = oracle_in("tests/fixtures/packer_oracle/v4");
    // Dense tensors are stored losslessly: bit for bit the reference's f32 values (but for the
    // biases of packed layers, which the reference folds an input shift into).
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (name, tensor) in dense.to_checkpoint_tensors() {
        let of_packed_layer = name.strip_suffix(".bias").is_some_and(|layer| packed.layers.contains_key(layer));
        if let Some(ours) = packed.dense.get(&name).filter(|_| !of_packed_layer) {
            assert_eq!(bits(&ours.data), bits(&tensor.data), "{name}");
        }
    }
    let decoded = packed.dequantized_weights().unwrap();
    for (name, _) in dense.config.linear_names() {
        let (want, got) = (dense.linear(&name).unwrap(), decoded.linear(&name).unwrap());
        assert_all_close(&format!("{name} weight"), &got.weight.data, &want.weight.data, WEIGHT_ABS);
        assert_all_close(&format!("{name} bias"), &got.bias.data, &want.bias.data, BIAS_ABS);
    }
    // lutlab's writer picks the dtype the oracle picked for every dense tensor (the smallest exact).
    let ours = header(&packed.to_safetensors(lutlab_core::packed_file::TableDtype::F32).expect("write"));
    assert_eq!(ours["__metadata__"]["format_version"], "4");
    for name in packed.dense.keys() {
        assert_eq!(ours[name.as_str()]["dtype"], theirs[name.as_str()]["dtype"], "{name}");
    }
}

#[test]
fn the_independent_packers_version_4_file_runs_to_its_dense_logits() {
    let (packed, dense) = oracle_in("tests/fixtures/packer_oracle/v4");
    let device = gpu();
    let ids: Vec<u32> = (0..2 * 24).map(|i| (i * 37 + 5) % 96).collect();
    let rows: Vec<&[u32]> = ids.chunks(24).collect();
    let logits = |model: &Decoder| pollster::block_on(download(model.forward(model.tokens(&rows)).unwrap())).unwrap();
    let err = assert_all_close(
        "logits",
        &logits(&Decoder::from_packed(&packed, &device).unwrap()),
        &logits(&Decoder::new(&dense, &device)),
        LOGITS_ABS,
    );
    eprintln!("version 4 (independent packer) vs dense logits: max |error| {err:e}");
}
