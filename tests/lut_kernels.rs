//! The LUT GEMV and GEMM kernels (`shaders/lut_gemv.wgsl`; `shaders/lut_dequantize.wgsl` + matmul) against their
//! CPU reference `PackedLinear::reference_matmul`, for every bit width, every granularity, odd
//! shapes, outliers, scales, input shift, bias, input-group scales (GPTQ's groupsize) and vector
//! tables (`lut_vector_gemv.wgsl`).
//!
//! Tolerance: the GPU sums in f32 in a different order than the f64 reference, so each output is
//! allowed `1e-5 · Σ|x·w|` (a few f32 ulps of the terms' magnitude) plus 1e-6.

use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::lut::InputGroupScales;
use lutlab_core::quant::vector::VectorLut;
use lutlab_core::quant::{Granularity, LutMatrix, PackedLinear, SparseColumns, SparseOutliers};
use lutlab_model::burn::tensor::{Tensor, TensorData};
use lutlab_model::lut_linear::{PackedGpuLayer, GEMV_COLUMNS_PER_LANE_OVERRIDE, GEMV_MAX_TOKENS, GEMV_SCALAR_WORDS, GEMV_TARGET_OVERRIDE};
use std::sync::atomic::Ordering;
use lutlab_tests::gpu;

fn random_layer(rng: &mut SplitMix64, rows: usize, cols: usize, bits: u32, granularity: Granularity, extras: bool) -> PackedLinear {
    let levels = 1usize << bits;
    let tables = granularity.tables(cols).unwrap();
    let mut outliers = SparseOutliers::none(rows);
    for r in 0..rows {
        for c in 0..cols {
            if rng.next_u64().is_multiple_of(50) {
                outliers.col_idx.push(c as u32);
                outliers.values.push(rng.next_f64() as f32 - 0.5);
            }
        }
        outliers.row_ptr[r + 1] = outliers.values.len() as u32;
    }
    let lut = LutMatrix {
        rows,
        cols,
        bits,
        granularity,
        tables: (0..tables * levels).map(|_| rng.next_f64() as f32 - 0.5).collect(),
        codes: (0..rows * cols).map(|_| (rng.next_u64() % levels as u64) as u8).collect(),
        input_groups: None,
        outliers,
    };
    let mut packed = PackedLinear::from_lut(&lut).unwrap();
    if extras {
        packed.scales = Some((0..cols).map(|_| 0.5 + rng.next_f64() as f32).collect());
        packed.input_shift = Some((0..rows).map(|_| rng.next_f64() as f32 - 0.5).collect());
    }
    packed
}

fn check(packed: &PackedLinear, m: usize, with_bias: bool, rng: &mut SplitMix64) {
    let device = gpu();
    let x: Vec<f32> = (0..m * packed.rows).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
    let bias: Vec<f32> = (0..packed.cols).map(|_| rng.next_f64() as f32).collect();
    let bias = with_bias.then_some(bias.as_slice());
    let layer = PackedGpuLayer::upload(packed, bias, &device, "test layer").unwrap();
    let input = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, packed.rows]), &device);
    let got: Vec<f32> = layer.forward(input).into_data().try_to_vec::<f32>().unwrap();
    let want = packed.reference_matmul(&x, m, bias);
    let w = packed.effective_weights();
    let what = format!("{}x{} {}-bit vectors of {} {:?} m={m}", packed.rows, packed.cols, packed.bits, packed.vector_dim, packed.granularity());
    for t in 0..m {
        for c in 0..packed.cols {
            let magnitude: f32 = (0..packed.rows).map(|r| (x[t * packed.rows + r] * w[r * packed.cols + c]).abs()).sum();
            let (g, e) = (got[t * packed.cols + c], want[t * packed.cols + c]);
            assert!((g - e).abs() <= 1e-5 * magnitude + 1e-6, "{what}: token {t} column {c}: GPU {g}, CPU {e}");
        }
    }
}

#[test]
fn gemv_matches_the_cpu_for_every_bit_width_and_granularity() {
    let mut rng = SplitMix64::new(1);
    for bits in 1..=8 {
        for granularity in [Granularity::Tensor, Granularity::Channel, Granularity::Group(5)] {
            let packed = random_layer(&mut rng, 77, 45, bits, granularity, bits % 2 == 0);
            check(&packed, 1, bits != 3, &mut rng);
            check(&packed, GEMV_MAX_TOKENS, true, &mut rng);
        }
    }
}

#[test]
fn gemm_matches_the_cpu_for_every_bit_width_and_granularity() {
    let mut rng = SplitMix64::new(2);
    for bits in 1..=8 {
        for granularity in [Granularity::Tensor, Granularity::Channel, Granularity::Group(10)] {
            let packed = random_layer(&mut rng, 70, 130, bits, granularity, bits % 2 == 1);
            check(&packed, GEMV_MAX_TOKENS + 1, true, &mut rng);
            check(&packed, 67, bits != 4, &mut rng);
        }
    }
}

#[test]
fn kernels_handle_gpt2_shapes() {
    let mut rng = SplitMix64::new(3);
    for (rows, cols) in [(768, 2304), (3072, 768)] {
        let packed = random_layer(&mut rng, rows, cols, 3, Granularity::Channel, true);
        check(&packed, 1, true, &mut rng);
        check(&packed, 130, true, &mut rng);
    }
}

#[test]
fn gemv_walks_several_input_chunks_of_one_split() {
    // Without splits one workgroup walks all 35 blocks: two chunks of staged input (32 blocks
    // each), the second partial; then the same layer split the usual way.
    let mut rng = SplitMix64::new(4);
    let packed = random_layer(&mut rng, 1100, 300, 3, Granularity::Group(15), true);
    GEMV_TARGET_OVERRIDE.store(1, Ordering::Relaxed);
    check(&packed, 2, true, &mut rng);
    GEMV_TARGET_OVERRIDE.store(0, Ordering::Relaxed);
    check(&packed, 2, true, &mut rng);
}

#[test]
fn gemv_matches_the_cpu_for_every_bit_width_and_columns_per_lane() {
    // 2,100 rows are 66 blocks: two whole chunks of 32 blocks and a partial one, in one split and
    // in the usual splits (whole chunks each); 40 columns leave the last workgroup's columns
    // partly unused at 1, 2 and 4 columns per lane (workgroups of 8, 16 and 32 columns).
    let mut rng = SplitMix64::new(5);
    for bits in 1..=8 {
        let packed = random_layer(&mut rng, 2100, 40, bits, Granularity::Channel, bits % 2 == 0);
        for per_lane in [1, 2, 4] {
            GEMV_COLUMNS_PER_LANE_OVERRIDE.store(per_lane, Ordering::Relaxed);
            // Even widths load their code words as vec2s/vec4s; each also one word at a time.
            for scalar_words in [false, true] {
                GEMV_SCALAR_WORDS.store(scalar_words, Ordering::Relaxed);
                GEMV_TARGET_OVERRIDE.store(1, Ordering::Relaxed);
                check(&packed, 1, true, &mut rng);
                GEMV_TARGET_OVERRIDE.store(0, Ordering::Relaxed);
                check(&packed, GEMV_MAX_TOKENS, true, &mut rng);
            }
            GEMV_SCALAR_WORDS.store(false, Ordering::Relaxed);
        }
        GEMV_COLUMNS_PER_LANE_OVERRIDE.store(0, Ordering::Relaxed);
    }
}

/// `packed` with a scale (and, `zeros`, a zero point) per group of `size` input rows and column.
fn with_input_groups(mut packed: PackedLinear, size: usize, zeros: bool, rng: &mut SplitMix64) -> PackedLinear {
    let n = packed.rows.div_ceil(size) * packed.cols;
    let scales = (0..n).map(|_| 0.01 + rng.next_f64() as f32 * 0.1).collect();
    let zeros = zeros.then(|| (0..n).map(|_| (rng.next_u64() % 16) as f32).collect());
    packed.input_groups = Some(InputGroupScales { size, scales, zeros });
    packed.validate("input-group layer").unwrap();
    packed
}

#[test]
fn input_group_scales_match_the_cpu_in_gemv_and_gemm() {
    // 2,100 rows: whole chunks and a partial one; groups of 32, 64 (the last partial: 2,100 is
    // not a multiple) and 128 rows; with zero points (asymmetric) and without (symmetric).
    let mut rng = SplitMix64::new(6);
    for bits in 1..=8 {
        let size = [32, 64, 128][bits as usize % 3];
        let packed = random_layer(&mut rng, 2100, 40, bits, Granularity::Tensor, bits % 2 == 0);
        let packed = with_input_groups(packed, size, bits % 3 != 1, &mut rng);
        GEMV_TARGET_OVERRIDE.store(1, Ordering::Relaxed);
        check(&packed, 1, true, &mut rng);
        GEMV_TARGET_OVERRIDE.store(0, Ordering::Relaxed);
        check(&packed, GEMV_MAX_TOKENS, true, &mut rng);
        check(&packed, 37, bits != 5, &mut rng);
    }
    // GPT-2's shapes at 4 bits, group 128, as GPTQ checkpoints are.
    for (rows, cols) in [(768, 2304), (3072, 768)] {
        let packed = with_input_groups(random_layer(&mut rng, rows, cols, 4, Granularity::Tensor, false), 128, true, &mut rng);
        check(&packed, 1, true, &mut rng);
        check(&packed, 70, true, &mut rng);
    }
}

#[test]
fn incoherence_rotations_match_the_cpu_around_the_lut_kernels() {
    // QuIP's processing: input scale, input rotation V and output rotation Uᵀ around the LUT
    // matmul (the bias added after), with factor sizes of odd shapes (45 = 9 × 5, 77 = 11 × 7,
    // 67 prime: one dense factor); both the GEMV and the GEMM path, and each part alone.
    use lutlab_core::quant::incoherence::{Incoherence, Rotation};
    let mut rng = SplitMix64::new(8);
    for (rows, cols, parts) in [(77, 45, 0b111), (64, 67, 0b011), (96, 40, 0b100), (77, 45, 0b010)] {
        let mut packed = random_layer(&mut rng, rows, cols, 3, Granularity::Channel, false);
        packed.scales = Some((0..cols).map(|_| 0.5 + rng.next_f64() as f32).collect());
        packed.incoherence = Some(Incoherence {
            input_scale: (parts & 0b001 != 0).then(|| (0..rows).map(|_| 0.5 + rng.next_f64() as f32).collect()),
            input: (parts & 0b010 != 0).then(|| Rotation::random(rows, rng.next_u64())),
            output: (parts & 0b100 != 0).then(|| Rotation::random(cols, rng.next_u64())),
        });
        packed.validate("rotated layer").unwrap();
        check(&packed, 1, true, &mut rng);
        check(&packed, GEMV_MAX_TOKENS + 3, true, &mut rng);
    }
}

/// A random vector-table layer (`vector_dim` weights per code), with a few sparse outliers and,
/// with `extras`, scales and an input shift.
fn random_vector_layer(rng: &mut SplitMix64, rows: usize, cols: usize, dim: usize, bits: u32, granularity: Granularity, extras: bool) -> PackedLinear {
    let entries = 1usize << (bits as usize * dim);
    let channels_per_table = granularity.channels_per_table(cols).unwrap();
    let vector = VectorLut {
        rows,
        cols,
        dim,
        channels_per_table,
        codebooks: (0..cols / channels_per_table * entries * dim).map(|_| rng.next_f64() as f32 - 0.5).collect(),
        entries,
        codes: (0..rows / dim * cols).map(|_| (rng.next_u64() % entries as u64) as u16).collect(),
    };
    let mut packed = PackedLinear::from_vector(&vector).unwrap();
    let mut sparse = SparseColumns { col_ptr: vec![0], row_idx: Vec::new(), values: Vec::new() };
    for _ in 0..cols {
        for r in 0..rows {
            if rng.next_u64().is_multiple_of(60) {
                sparse.row_idx.push(r as u32);
                sparse.values.push(rng.next_f64() as f32 - 0.5);
            }
        }
        sparse.col_ptr.push(sparse.values.len() as u32);
    }
    packed.sparse = sparse;
    if extras {
        packed.scales = Some((0..cols).map(|_| 0.5 + rng.next_f64() as f32).collect());
        packed.input_shift = Some((0..rows).map(|_| rng.next_f64() as f32 - 0.5).collect());
    }
    packed.validate("random vector layer").unwrap();
    packed
}

/// Vector tables (issue 20): `lut_vector_gemv.wgsl` for a few tokens (one split and several) and
/// `lut_dequantize.wgsl` with DIM > 1 before the matmul, for codes of 2 to 12 bits.
#[test]
fn vector_tables_match_the_cpu_in_gemv_and_gemm() {
    let mut rng = SplitMix64::new(8);
    for (dim, bits) in [(2, 1), (2, 2), (2, 3), (2, 4), (4, 1), (4, 2), (4, 3)] {
        for granularity in [Granularity::Tensor, Granularity::Channel, Granularity::Group(5)] {
            let packed = random_vector_layer(&mut rng, 84, 45, dim, bits, granularity, bits % 2 == 0);
            check(&packed, 1, true, &mut rng);
            check(&packed, GEMV_MAX_TOKENS, bits != 3, &mut rng);
            check(&packed, GEMV_MAX_TOKENS + 1, true, &mut rng);
        }
    }
    // GPT-2's MLP shapes: many blocks of codes, so the GEMV splits its rows and reduces.
    for (rows, cols, dim, bits) in [(768, 3072, 4, 3), (3072, 768, 2, 2)] {
        let packed = random_vector_layer(&mut rng, rows, cols, dim, bits, Granularity::Tensor, true);
        check(&packed, 1, true, &mut rng);
        check(&packed, 33, true, &mut rng);
    }
}

/// Layers of column parts (`--allocate-per channels:N`, format version 6): each part through its
/// own kernels (scalar, vector, other widths and granularities, one with column scales), the
/// outputs side by side and the bias added once, for a few tokens (GEMV) and many (dequantize).
#[test]
fn column_parts_match_the_cpu() {
    let mut rng = SplitMix64::new(9);
    let mut scaled = random_layer(&mut rng, 70, 8, 4, Granularity::Group(8), false);
    scaled.scales = Some((0..8).map(|_| 0.5 + rng.next_f64() as f32).collect());
    let parts = vec![
        random_layer(&mut rng, 70, 24, 2, Granularity::Channel, false),
        random_vector_layer(&mut rng, 70, 16, 2, 3, Granularity::Group(4), false),
        scaled,
    ];
    let packed = PackedLinear::from_parts(parts).unwrap();
    for m in [1, GEMV_MAX_TOKENS, GEMV_MAX_TOKENS + 1] {
        check(&packed, m, true, &mut rng);
    }
}
