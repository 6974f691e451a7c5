//! Property tests (proptest): the code layout round-trips at every width and shape, the
//! quantizers keep their invariants on arbitrary inputs, and the file parsers never panic on any
//! bytes, whole or a valid file damaged. Failures shrink to a minimal case.

use lutlab_core::packed_file::PackedModel;
use lutlab_core::quant::kmeans::{lloyd_1d_from, optimal_1d};
use lutlab_core::quant::packed::{pack_codes, unpack_codes};
use lutlab_core::quant::uniform::{quantize_uniform, UniformGranularity, UniformSettings};
use lutlab_core::ModelConfig;
use lutlab_tests::*;
use proptest::prelude::*;

/// Codes of a `[rows, cols]` matrix at `bits`.
fn codes() -> impl Strategy<Value = (usize, usize, u32, Vec<u8>)> {
    (1usize..80, 1usize..12, 1u32..=8).prop_flat_map(|(rows, cols, bits)| {
        (Just(rows), Just(cols), Just(bits), proptest::collection::vec(0u8..=((1u16 << bits) - 1) as u8, rows * cols))
    })
}

proptest! {
    #[test]
    fn packed_codes_unpack_to_themselves_with_zero_padding((rows, cols, bits, codes) in codes()) {
        let packed = pack_codes(&codes, rows, cols, bits);
        prop_assert_eq!(packed.len(), rows.div_ceil(32) * bits as usize * cols);
        prop_assert_eq!(unpack_codes(&packed, rows, cols, bits), codes);
        // The last block's padding rows decode to 0 (docs/FORMAT.md §3).
        let padded = rows.div_ceil(32) * 32;
        let all = unpack_codes(&packed, padded, cols, bits);
        prop_assert!(all[rows * cols..].iter().all(|&c| c == 0));
    }

    #[test]
    fn lloyd_never_ends_above_its_start_and_codes_are_nearest(
        values in proptest::collection::vec(-10f32..10.0, 1..200),
        start in proptest::collection::vec(-10f32..10.0, 1..16),
    ) {
        let fit = lloyd_1d_from(&values, None, &start, 50).unwrap();
        let mut sorted: Vec<f64> = start.iter().map(|&v| f64::from(v)).collect();
        sorted.sort_by(f64::total_cmp);
        let initial: f64 = values.iter().map(|&v| sorted.iter().map(|c| (f64::from(v) - c).powi(2)).fold(f64::INFINITY, f64::min)).sum();
        prop_assert!(fit.objective <= initial * (1.0 + 1e-9) + 1e-9, "objective {} above the start's {}", fit.objective, initial);
        prop_assert_eq!(fit.centroids.len(), start.len());
        prop_assert!(fit.codes.iter().all(|&c| (c as usize) < start.len()));
    }

    #[test]
    fn the_exact_fit_is_sorted_and_no_worse_than_lloyd(
        values in proptest::collection::vec(-10f32..10.0, 1..120),
        k in 1usize..9,
    ) {
        let exact = optimal_1d(&values, None, k).unwrap();
        prop_assert!(exact.centroids.windows(2).all(|w| w[0] <= w[1]), "centroids sorted: {:?}", exact.centroids);
        let start: Vec<f32> = (0..k).map(|i| values[i * values.len() / k]).collect();
        let lloyd = lloyd_1d_from(&values, None, &start, 100).unwrap();
        prop_assert!(exact.objective <= lloyd.objective * (1.0 + 1e-9) + 1e-9, "exact {} vs Lloyd {}", exact.objective, lloyd.objective);
    }

    /// Asymmetric min-max grids only: a symmetric int grid `[-2^(b-1), 2^(b-1) - 1] · absmax/2^(b-1)`
    /// (Brevitas' `IntScaling` with `narrow_range=False`, as the LLM example quantizes) clips the
    /// largest positive weight to `(1 - 2^(1-b))·absmax`, so re-rounding shrinks the scale again
    /// (found by this test: 2 bits, one weight 3.155 → 1.578 → 0.789). By design, not a bug.
    #[test]
    fn uniform_rounding_is_idempotent(
        (rows, cols, weights) in (1usize..40, 1usize..6).prop_flat_map(|(r, c)| (Just(r), Just(c), proptest::collection::vec(-4f32..4.0, r * c))),
        bits in 2u32..=8,
    ) {
        let settings = UniformSettings { bits, symmetric: false, granularity: UniformGranularity::Channel, ..UniformSettings::default() };
        let once = quantize_uniform(&weights, rows, cols, &settings).unwrap().dequantize();
        let twice = quantize_uniform(&once, rows, cols, &settings).unwrap().dequantize();
        for (a, b) in once.iter().zip(&twice) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{} re-rounds to {}", a, b);
        }
    }

    #[test]
    fn the_parsers_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = PackedModel::from_safetensors("fuzz.safetensors", &bytes);
        let _ = lutlab_core::checkpoint::parse_safetensors("fuzz.safetensors", &bytes);
        let _ = ModelConfig::from_json(&bytes, "config.json");
    }

    #[test]
    fn a_damaged_packed_file_is_refused_or_read_never_a_panic(
        cut in 0usize..200_000,
        flips in proptest::collection::vec((0usize..200_000, any::<u8>()), 0..8),
    ) {
        let mut bytes = std::fs::read(repo("tests/fixtures/packer_oracle/packed.safetensors")).unwrap();
        for (at, value) in flips {
            let n = bytes.len();
            bytes[at % n] = value;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        let _ = PackedModel::from_safetensors("damaged.safetensors", &bytes);
    }
}
