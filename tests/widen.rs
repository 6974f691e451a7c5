//! A streamed block's linear weights widened to f32 `[in, out]` on the GPU from the bytes the
//! checkpoint stores (`shaders/widen.wgsl`), against the host's widening and transposition
//! (`StoredLinear::to_in_out`, what `BlockWeights::read` does): exactly equal, as widening
//! F16/BF16 to f32 is exact. Every dtype, both layouts, odd sizes (an odd number of 16-bit values
//! leaves half a word), subnormals, signed zeros and the largest finite values.

use lutlab_core::checkpoint::{write_tensors, StoredDtype, TensorData};
use lutlab_core::config::LinearLayout;
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::weights::StoredLinear;
use lutlab_core::{Checkpoint, HostTensor, LoadError};
use lutlab_model::device::download;
use lutlab_model::widen::upload_weight;
use lutlab_tests::gpu;

fn values(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    let special = [0.0, -0.0, 6.0e-8, -3.0e-6, 65504.0, -65504.0, 1.0e-40, 1.5e-39];
    (0..n).map(|i| if i % 17 == 5 { special[i / 17 % special.len()] } else { (rng.next_f64() as f32 - 0.5) * 4.0 }).collect()
}

fn stored(data: TensorData<'_>, shape: &[usize]) -> Vec<u8> {
    write_tensors(&[("w", shape, data)], None).unwrap()
}

#[test]
fn widening_on_the_gpu_equals_the_host_for_every_dtype_and_layout() {
    let device = gpu();
    let mut rng = SplitMix64::new(3);
    for (n_in, n_out) in [(37, 53), (64, 96), (1, 7)] {
        let v = values(&mut rng, n_in * n_out);
        for layout in [LinearLayout::InOut, LinearLayout::OutIn] {
            let shape = match layout {
                LinearLayout::InOut => [n_in, n_out],
                LinearLayout::OutIn => [n_out, n_in],
            };
            for (dtype, data) in [(StoredDtype::F32, TensorData::F32(&v)), (StoredDtype::F16, TensorData::F16(&v)), (StoredDtype::BF16, TensorData::BF16(&v))] {
                let bytes = stored(data, &shape);
                let ckpt = Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap();
                let weight = ckpt.read_stored("w", &shape).unwrap();
                assert_eq!(weight.dtype, dtype);
                let linear = StoredLinear { weight, layout, n_in, n_out, bias: HostTensor::new(vec![n_out], vec![0.0; n_out]) };
                let want = linear.to_in_out();
                let got = pollster::block_on(download(upload_weight(&linear, &device).unwrap())).unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g.to_bits() == w.to_bits(), "{n_in}x{n_out} {layout:?} {dtype:?}: element {i} is {g:e} on the GPU, {w:e} on the host");
                }
            }
        }
    }
}

#[test]
fn a_non_finite_stored_value_is_refused_by_name() {
    let mut v = vec![0.5f32; 24];
    v[13] = f32::NAN;
    v[20] = f32::INFINITY;
    for data in [TensorData::F32(&v), TensorData::F16(&v), TensorData::BF16(&v)] {
        let bytes = stored(data, &[4, 6]);
        let ckpt = Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap();
        match ckpt.read_stored("w", &[4, 6]) {
            Err(LoadError::NonFinite { name, count, first }) => assert_eq!((name.as_str(), count, first), ("w", 2, 13)),
            other => panic!("{data:?}: expected a non-finite error, got {other:?}"),
        }
        // A wrong shape is named before any value is read.
        assert!(matches!(ckpt.read_stored("w", &[6, 4]), Err(LoadError::WrongShape { .. })));
    }
}
