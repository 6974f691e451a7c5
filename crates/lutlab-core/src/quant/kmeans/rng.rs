//! A tiny seeded generator, so k-means++ is reproducible without a new dependency and every
//! table gets its own stream (tables can then be run in any order, or in parallel, with the same
//! result).

/// SplitMix64 (Steele, Lea and Flood 2014): one add and a 64-bit finaliser per draw. Statistically
/// fine for picking seeds, and trivially portable to WGSL if the GPU wants the same draws.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A stream from a plain seed (tests, fuzzing).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The generator for restart `run` of table `table` in a quantization seeded with `seed`:
    /// seed, table and run are mixed through the finaliser, so neighbouring tables and restarts
    /// do not get shifted copies of one stream.
    pub fn for_run(seed: u64, table: usize, run: usize) -> Self {
        let mut a = Self(seed);
        let mut b = Self(a.next_u64() ^ table as u64);
        let mut c = Self(b.next_u64() ^ run as u64);
        Self(c.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
