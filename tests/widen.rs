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
use lutlab_model::widen::upload_weight_in_pieces;
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
                let (weight, _) = ckpt.read_stored("w", &shape, &mut []).unwrap();
                assert_eq!(weight.dtype, dtype);
                let linear = StoredLinear { weight, layout, n_in, n_out, bias: HostTensor::new(vec![n_out], vec![0.0; n_out]) };
                // Whole, in pieces of two stored rows (the least), and of three rows' bytes
                // (rounded up to four rows), the last piece shorter.
                let row_bytes = shape[1] * dtype.bytes();
                for piece in [usize::MAX, 1, 3 * row_bytes] {
                    assert_widened_exactly(&linear, &device, piece, &format!("{n_in}x{n_out} {layout:?} {dtype:?} pieces of {piece} bytes"));
                }
            }
        }
    }
}

fn assert_widened_exactly(linear: &StoredLinear, device: &lutlab_model::burn::tensor::Device, piece_bytes: usize, what: &str) {
    let want = linear.to_in_out();
    let got = pollster::block_on(download(upload_weight_in_pieces(linear, device, piece_bytes).unwrap())).unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g.to_bits() == w.to_bits(), "{what}: element {i} is {g:e} on the GPU, {w:e} on the host");
    }
}

/// A weight read from a file on disk, as a streamed model reads it: in parallel pieces (above a
/// MiB) into a reused buffer, then uploaded in 1 MiB pieces.
#[test]
fn a_large_weight_read_from_disk_into_a_reused_buffer_widens_exactly() {
    let device = gpu();
    let mut rng = SplitMix64::new(11);
    let (n_in, n_out) = (1536, 1100); // 3.2 MB in f16: several cores' pieces, several uploads
    let v = values(&mut rng, n_in * n_out);
    let dir = std::env::temp_dir().join(format!("lutlab-widen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, stored(TensorData::F16(&v), &[n_out, n_in])).unwrap();
    let ckpt = Checkpoint::open(&[path]).unwrap();
    assert_eq!(ckpt.file_bytes("w"), n_in * n_out * 2);
    let mut scratch = vec![0xffu8; ckpt.file_bytes("w") + 10];
    let (weight, rest) = ckpt.read_stored("w", &[n_out, n_in], &mut scratch).unwrap();
    assert_eq!(rest.len(), 10, "the buffer's front holds the tensor, the rest is handed back");
    let linear = StoredLinear { weight, layout: LinearLayout::OutIn, n_in, n_out, bias: HostTensor::new(vec![n_out], vec![0.0; n_out]) };
    assert_eq!(linear.to_in_out().len(), n_in * n_out);
    assert_widened_exactly(&linear, &device, 1 << 20, "1536x1100 OutIn F16 from disk");
    // A buffer too small for the tensor is an error, not a panic.
    assert!(matches!(ckpt.read_stored("w", &[n_out, n_in], &mut [0u8; 16]), Err(LoadError::InvalidSetting(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The way back: a tensor larger than one read-back piece (2^20 values) comes back in pieces,
/// whole and in order, from a view as from a plain tensor.
#[test]
fn a_large_tensor_reads_back_whole_in_pieces() {
    use lutlab_model::burn::tensor::{Tensor, TensorData};
    let device = gpu();
    let (rows, cols) = (1500, 1601); // 2.4M values: two whole pieces and a short one
    let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
    let t = Tensor::<2>::from_data(TensorData::new(values.clone(), [rows, cols]), &device);
    assert_eq!(pollster::block_on(download(t.clone())).unwrap(), values);
    // A transposed view: read in pieces of its logical (row-major) order.
    let transposed = pollster::block_on(download(t.transpose())).unwrap();
    assert_eq!(transposed.len(), values.len());
    for (k, &v) in transposed.iter().enumerate().step_by(997) {
        let (i, j) = (k / rows, k % rows);
        assert_eq!(v, values[j * cols + i], "transposed element ({i}, {j})");
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
        match ckpt.read_stored("w", &[4, 6], &mut []) {
            Err(LoadError::NonFinite { name, count, first }) => assert_eq!((name.as_str(), count, first), ("w", 2, 13)),
            other => panic!("{data:?}: expected a non-finite error, got {other:?}"),
        }
        // A wrong shape is named before any value is read.
        assert!(matches!(ckpt.read_stored("w", &[6, 4], &mut []), Err(LoadError::WrongShape { .. })));
    }
    // Far into a large tensor (the scan runs in 64 KiB chunks): found and counted all the same.
    let mut v = vec![0.25f32; 100_000];
    v[70_001] = f32::NEG_INFINITY;
    for data in [TensorData::F32(&v), TensorData::F16(&v), TensorData::BF16(&v)] {
        let bytes = stored(data, &[100, 1000]);
        let ckpt = Checkpoint::from_safetensors([("model.safetensors", bytes.as_slice())]).unwrap();
        match ckpt.read_stored("w", &[100, 1000], &mut []) {
            Err(LoadError::NonFinite { count, first, .. }) => assert_eq!((count, first), (1, 70_001)),
            other => panic!("{data:?}: expected a non-finite error, got {other:?}"),
        }
    }
}
