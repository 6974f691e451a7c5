//! How a packed file stores a tensor that is not quantized (embeddings, norms, biases, linears
//! left dense): losslessly, in the smallest dtype that holds every value exactly. A model loaded
//! from an f16 checkpoint (the shipped ones) has only f16 values, so its dense tensors take half
//! the bytes they took as f32, and reading them back gives the very same f32 values.

use crate::checkpoint::TensorData;
use safetensors::Dtype;

/// The dtype of a dense tensor in a packed file (`docs/FORMAT.md` §2, version 4 for F16/BF16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DenseDtype {
    /// IEEE binary16: exact for every value of an f16 checkpoint.
    F16,
    /// bfloat16 (f32's exponent, 8 significant bits): exact for every value of a bf16 checkpoint.
    BF16,
    /// Everything else (an f32 checkpoint, a centred bias).
    #[default]
    F32,
}

impl DenseDtype {
    /// The smallest dtype that holds every value bit for bit: F16, else BF16, else F32.
    /// (-0.0 stays -0.0: the bits are compared, not the values.)
    pub fn smallest_exact(values: &[f32]) -> Self {
        let exact_f16 = |v: &f32| half::f16::from_f32(*v).to_f32().to_bits() == v.to_bits();
        let exact_bf16 = |v: &f32| half::bf16::from_f32(*v).to_f32().to_bits() == v.to_bits();
        if values.iter().all(exact_f16) {
            DenseDtype::F16
        } else if values.iter().all(exact_bf16) {
            DenseDtype::BF16
        } else {
            DenseDtype::F32
        }
    }

    /// The values to write as this dtype (exact when the dtype came from [`Self::smallest_exact`]).
    pub fn data(self, values: &[f32]) -> TensorData<'_> {
        match self {
            DenseDtype::F16 => TensorData::F16(values),
            DenseDtype::BF16 => TensorData::BF16(values),
            DenseDtype::F32 => TensorData::F32(values),
        }
    }

    /// The safetensors dtype.
    pub fn dtype(self) -> Dtype {
        match self {
            DenseDtype::F16 => Dtype::F16,
            DenseDtype::BF16 => Dtype::BF16,
            DenseDtype::F32 => Dtype::F32,
        }
    }

    /// The dense dtype a safetensors dtype stands for, if it is one.
    pub fn of(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F16 => Some(DenseDtype::F16),
            Dtype::BF16 => Some(DenseDtype::BF16),
            Dtype::F32 => Some(DenseDtype::F32),
            _ => None,
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            DenseDtype::F16 | DenseDtype::BF16 => 2,
            DenseDtype::F32 => 4,
        }
    }

    /// Little-endian bytes of this dtype as f32 values (a trailing partial value is ignored:
    /// the container check has already matched the length to the shape).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DenseDtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DenseDtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DenseDtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_exact_dtype_is_chosen() {
        // 1/3 rounded to f16 is exact in f16 (and not in bf16: 11 significant bits).
        let f16_exact = [0.0, -0.0, 1.0, -2.5, half::f16::from_f32(1.0 / 3.0).to_f32(), 65504.0, 2f32.powi(-24)];
        assert_eq!(DenseDtype::smallest_exact(&f16_exact), DenseDtype::F16);
        // bf16 values beyond f16's range or below its subnormals, or with f32's exponent.
        for v in [1e6_f32, 1e-7, half::bf16::from_f32(1e30).to_f32()] {
            let v = half::bf16::from_f32(v).to_f32();
            assert_eq!(DenseDtype::smallest_exact(&[1.0, v]), DenseDtype::BF16, "{v}");
        }
        assert_eq!(DenseDtype::smallest_exact(&[1.0, 1.0 / 3.0]), DenseDtype::F32);
        assert_eq!(DenseDtype::smallest_exact(&[1.0 + f32::EPSILON]), DenseDtype::F32);
        // Exact in bf16 but one value only in f32: the whole tensor is f32.
        assert_eq!(DenseDtype::smallest_exact(&[1e6, 0.1]), DenseDtype::F32);
        assert_eq!(DenseDtype::smallest_exact(&[]), DenseDtype::F16);
    }

    #[test]
    fn values_round_trip_bit_for_bit_in_their_chosen_dtype() {
        let values: Vec<f32> = [0.0, -0.0, 1.5, -3.0e-5, 1e6, 2.0e-7, 0.1, 1.0 / 3.0, 7.0e30]
            .into_iter()
            .flat_map(|v: f32| [v, half::f16::from_f32(v).to_f32(), half::bf16::from_f32(v).to_f32()])
            .collect();
        for chunk in values.chunks(3).chain(values.chunks(5)).chain([values.as_slice()]) {
            let dtype = DenseDtype::smallest_exact(chunk);
            let bytes = dtype.data(chunk).to_le_bytes();
            assert_eq!(bytes.len(), dtype.bytes() * chunk.len());
            let back = dtype.decode(&bytes);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(chunk), "{dtype:?}");
        }
    }
}
