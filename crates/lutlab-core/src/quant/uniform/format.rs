//! The number formats of the uniform quantizers: integers and minifloats (eXmY).
//!
//! A minifloat here is sign + `E` exponent bits + `M` mantissa bits, `1 + E + M` bits in all,
//! with subnormals. Two families, as in Brevitas (`float_ocp_eXmY`, `float_fnuz_eXmY`):
//!
//! - **OCP** (Open Compute Project OFP8 v1.0 and the MX v1.0 FP6/FP4 element types): bias
//!   `2^(E-1) - 1`. At 8 bits, E4M3 keeps only `S.1111.111` as NaN and has no infinities
//!   (max 448); E5M2 follows IEEE 754 (exponent all ones is Inf/NaN, max 57344). Every other
//!   width (E2M1, E3M2, E2M3, ...) has no special values: all codes are finite.
//! - **FNUZ** (finite, no negative zero; AMD/Graphcore FP8): bias `2^(E-1)`, no infinities, the
//!   negative-zero pattern `1000...0` is the only NaN, every other code is finite (E4M3FNUZ max
//!   240, E5M2FNUZ max 57344).
//!
//! Codes are the formats' own bit patterns (sign in the top bit), so a LUT code of an 8-bit
//! float result *is* the FP8 byte. Rounding is to the nearest representable value, ties to the
//! even code (IEEE round-half-to-even), saturating at the largest finite value; zero is always
//! encoded as `+0` (so FNUZ's NaN pattern and OCP's `-0` are never produced).

use crate::error::{LoadError, Result};
use std::fmt;
use std::str::FromStr;

/// The two minifloat families; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatVariant {
    Ocp,
    Fnuz,
}

/// A sign + `exponent_bits` + `mantissa_bits` minifloat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MiniFloat {
    pub exponent_bits: u32,
    pub mantissa_bits: u32,
    pub variant: FloatVariant,
}

impl MiniFloat {
    /// OCP FP8 E4M3 (`float8_e4m3fn`): max 448.
    pub const E4M3: Self = Self::ocp(4, 3);
    /// FNUZ FP8 E4M3 (`float8_e4m3fnuz`): max 240.
    pub const E4M3_FNUZ: Self = Self::fnuz(4, 3);
    /// OCP FP8 E5M2 (`float8_e5m2`): max 57344, IEEE Inf/NaN.
    pub const E5M2: Self = Self::ocp(5, 2);
    /// FNUZ FP8 E5M2 (`float8_e5m2fnuz`): max 57344.
    pub const E5M2_FNUZ: Self = Self::fnuz(5, 2);
    /// OCP MX FP4 E2M1: {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
    pub const E2M1: Self = Self::ocp(2, 1);
    /// OCP MX FP6 E3M2: max 28.
    pub const E3M2: Self = Self::ocp(3, 2);
    /// OCP MX FP6 E2M3: max 7.5.
    pub const E2M3: Self = Self::ocp(2, 3);

    const fn ocp(exponent_bits: u32, mantissa_bits: u32) -> Self {
        Self { exponent_bits, mantissa_bits, variant: FloatVariant::Ocp }
    }

    const fn fnuz(exponent_bits: u32, mantissa_bits: u32) -> Self {
        Self { exponent_bits, mantissa_bits, variant: FloatVariant::Fnuz }
    }

    /// A format of at most 8 bits with at least one exponent bit.
    pub fn new(exponent_bits: u32, mantissa_bits: u32, variant: FloatVariant) -> Result<Self> {
        let format = Self { exponent_bits, mantissa_bits, variant };
        if exponent_bits == 0 {
            return Err(LoadError::InvalidSetting(format!("{format}: a minifloat needs at least one exponent bit")));
        }
        if format.bits() > 8 {
            return Err(LoadError::InvalidSetting(format!(
                "{format} has {} bits; lutlab's codes hold at most 8",
                format.bits()
            )));
        }
        Ok(format)
    }

    /// Total width: sign, exponent and mantissa.
    pub fn bits(self) -> u32 {
        1 + self.exponent_bits + self.mantissa_bits
    }

    pub fn bias(self) -> i32 {
        let half = 1i32 << (self.exponent_bits - 1);
        match self.variant {
            FloatVariant::Ocp => half - 1,
            FloatVariant::Fnuz => half,
        }
    }

    /// The value of a code (bit pattern); `None` for NaN and Inf patterns and codes wider than
    /// the format.
    pub fn decode(self, code: u32) -> Option<f32> {
        let (e, m) = (self.exponent_bits, self.mantissa_bits);
        if code >= 1 << self.bits() {
            return None;
        }
        let sign_bit = 1u32 << (e + m);
        let exp = (code >> m) & ((1 << e) - 1);
        let man = code & ((1 << m) - 1);
        let exp_max = (1 << e) - 1;
        match self.variant {
            FloatVariant::Fnuz if code == sign_bit => return None,
            FloatVariant::Ocp if self.bits() == 8 && e == 4 && m == 3 && exp == exp_max && man == (1 << m) - 1 => {
                return None;
            }
            FloatVariant::Ocp if self.bits() == 8 && e == 5 && m == 2 && exp == exp_max => return None,
            _ => {}
        }
        // Exact in f64 (at most 8 significant bits, small exponents), and exact again in f32.
        let magnitude = if exp == 0 {
            f64::from(man) * 2f64.powi(1 - self.bias() - m as i32)
        } else {
            f64::from((1 << m) + man) * 2f64.powi(exp as i32 - self.bias() - m as i32)
        };
        let value = if code & sign_bit != 0 { -magnitude } else { magnitude };
        Some(value as f32)
    }

    /// Every code's value, indexed by code; NaN/Inf patterns are `None`.
    pub fn values(self) -> Vec<Option<f32>> {
        (0..1u32 << self.bits()).map(|c| self.decode(c)).collect()
    }

    /// The finite non-negative values in code order (`magnitudes()[k]` is the value of code `k`);
    /// strictly increasing, starting at 0.
    pub fn magnitudes(self) -> Vec<f32> {
        let sign_bit = 1u32 << (self.exponent_bits + self.mantissa_bits);
        (0..sign_bit).map_while(|c| self.decode(c)).collect()
    }

    /// The largest finite value.
    pub fn max_value(self) -> f32 {
        self.magnitudes().last().copied().unwrap_or(0.0)
    }

    /// The smallest positive (subnormal) value.
    pub fn min_subnormal(self) -> f32 {
        self.decode(1).unwrap_or(0.0)
    }
}

impl fmt::Display for MiniFloat {
    /// `e4m3` for OCP formats, `fnuz_e4m3` for FNUZ ones (both parse back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.variant {
            FloatVariant::Ocp => "",
            FloatVariant::Fnuz => "fnuz_",
        };
        write!(f, "{prefix}e{}m{}", self.exponent_bits, self.mantissa_bits)
    }
}

/// What the weights are rounded to: integers on a scaled grid, or scaled minifloats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumberFormat {
    Int,
    Float(MiniFloat),
}

impl NumberFormat {
    /// Checks that the format fits `bits` (2 to 8; a minifloat needs `1 + E + M == bits`).
    pub fn check_bits(self, bits: u32) -> Result<()> {
        if !(2..=8).contains(&bits) {
            return Err(LoadError::InvalidSetting(format!(
                "{bits}-bit uniform quantization is not supported: use 2 to 8 bits"
            )));
        }
        match self {
            NumberFormat::Int => Ok(()),
            NumberFormat::Float(f) if f.bits() == bits => Ok(()),
            NumberFormat::Float(f) => {
                let fitting = [MiniFloat::E2M1, MiniFloat::E3M2, MiniFloat::E2M3, MiniFloat::E4M3, MiniFloat::E5M2]
                    .iter()
                    .filter(|g| g.bits() == bits)
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>();
                let hint = if fitting.is_empty() {
                    format!("any eXmY with X + Y = {}", bits - 1)
                } else {
                    format!("{} (or any eXmY with X + Y = {})", fitting.join(", "), bits - 1)
                };
                Err(LoadError::InvalidSetting(format!(
                    "format {f} takes {} bits (1 sign + {} exponent + {} mantissa) and does not fit {bits}-bit \
                     weights; at {bits} bits use int or {hint}",
                    f.bits(),
                    f.exponent_bits,
                    f.mantissa_bits
                )))
            }
        }
    }
}

impl fmt::Display for NumberFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberFormat::Int => f.write_str("int"),
            NumberFormat::Float(m) => m.fmt(f),
        }
    }
}

impl FromStr for NumberFormat {
    type Err = LoadError;
    /// `int`, or `eXmY` with an optional family prefix: `ocp_`, `fnuz_`, `float_ocp_`,
    /// `float_fnuz_` (Brevitas' spelling) or `float_`; without one a minifloat is OCP.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            LoadError::InvalidSetting(format!(
                "format `{s}`: use int or eXmY (e4m3, e5m2, e2m1, e3m2, e2m3, ...), optionally prefixed by \
                 ocp_ or fnuz_"
            ))
        };
        let lower = s.trim().to_ascii_lowercase();
        if lower == "int" {
            return Ok(NumberFormat::Int);
        }
        let rest = lower.strip_prefix("float_").unwrap_or(&lower);
        let (variant, rest) = if let Some(r) = rest.strip_prefix("ocp_") {
            (FloatVariant::Ocp, r)
        } else if let Some(r) = rest.strip_prefix("fnuz_") {
            (FloatVariant::Fnuz, r)
        } else if let Some(r) = rest.strip_suffix("fnuz") {
            // PyTorch's spelling: e4m3fnuz, e5m2fnuz.
            (FloatVariant::Fnuz, r)
        } else {
            (FloatVariant::Ocp, rest.strip_suffix("fn").unwrap_or(rest))
        };
        let (e, m) = rest.strip_prefix('e').and_then(|r| r.split_once('m')).ok_or_else(bad)?;
        let e: u32 = e.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        MiniFloat::new(e, m, variant).map(NumberFormat::Float)
    }
}

/// One group's quantization grid: the format, the bit width and the signedness resolved into
/// the operations the quantizer needs.
#[derive(Clone, Debug)]
pub(crate) enum Grid {
    /// Integers `qmin..=qmax`; code `q - qmin`.
    Int { qmin: i32, qmax: i32 },
    /// A minifloat with its finite magnitudes (index = magnitude code) precomputed.
    Float { format: MiniFloat, magnitudes: Vec<f32> },
}

impl Grid {
    /// Signed `[-2^(b-1), 2^(b-1) - 1]` (symmetric: full range, as Brevitas' LLM example with
    /// `narrow_range=False`) or unsigned `[0, 2^b - 1]` (asymmetric, with a zero point).
    pub(crate) fn new(format: NumberFormat, bits: u32, symmetric: bool) -> Result<Self> {
        format.check_bits(bits)?;
        match format {
            NumberFormat::Int if symmetric => Ok(Grid::Int { qmin: -(1 << (bits - 1)), qmax: (1 << (bits - 1)) - 1 }),
            NumberFormat::Int => Ok(Grid::Int { qmin: 0, qmax: (1 << bits) - 1 }),
            NumberFormat::Float(f) if symmetric => Ok(Grid::Float { format: f, magnitudes: f.magnitudes() }),
            NumberFormat::Float(f) => Err(LoadError::InvalidSetting(format!(
                "format {f} is a sign-magnitude float and has no zero point: use symmetric quantization"
            ))),
        }
    }

    /// What the clipping threshold maps to: `2^(b-1)` for signed ints (Brevitas' int scaling),
    /// `2^b - 1` for unsigned ones (the whole range), the largest finite value for floats.
    pub(crate) fn divisor(&self) -> f32 {
        match self {
            Grid::Int { qmin, qmax } if *qmin < 0 => -(*qmin as f32),
            Grid::Int { qmax, .. } => *qmax as f32,
            Grid::Float { magnitudes, .. } => magnitudes.last().copied().unwrap_or(1.0),
        }
    }

    /// The code of weight `w` with this scale and zero point (round half to even, clamp).
    pub(crate) fn encode(&self, w: f32, scale: f32, zero_point: f32) -> u8 {
        match self {
            Grid::Int { qmin, qmax } => {
                let q = (w / scale + zero_point).round_ties_even().clamp(*qmin as f32, *qmax as f32);
                (q as i32 - qmin) as u8
            }
            Grid::Float { format, magnitudes } => {
                let y = w / scale;
                let k = round_to_magnitude(magnitudes, y.abs());
                if k == 0 || y >= 0.0 {
                    k as u8
                } else {
                    (k as u32 | 1 << (format.exponent_bits + format.mantissa_bits)) as u8
                }
            }
        }
    }

    /// The unscaled grid value of a code, before the zero point: the integer `q` or the
    /// minifloat's value (NaN/Inf codes, never produced, read as 0).
    pub(crate) fn level(&self, code: u8) -> f32 {
        match self {
            Grid::Int { qmin, .. } => (i32::from(code) + qmin) as f32,
            Grid::Float { format, magnitudes } => {
                let sign_bit = 1usize << (format.exponent_bits + format.mantissa_bits);
                let k = usize::from(code) & (sign_bit - 1);
                match magnitudes.get(k) {
                    Some(&v) if usize::from(code) & sign_bit == 0 => v,
                    Some(&v) if k != 0 => -v,
                    _ => 0.0,
                }
            }
        }
    }

    /// The table entry of a code: `(q - zero_point) * scale`, or `value * scale` for floats.
    pub(crate) fn table_value(&self, code: u8, scale: f32, zero_point: f32) -> f32 {
        match self {
            Grid::Int { .. } => (self.level(code) - zero_point) * scale,
            Grid::Float { .. } => self.level(code) * scale,
        }
    }

    #[allow(dead_code)]
    pub(crate) fn levels(&self) -> usize {
        match self {
            Grid::Int { qmin, qmax } => (qmax - qmin + 1) as usize,
            Grid::Float { format, .. } => 1 << format.bits(),
        }
    }

    pub(crate) fn is_float(&self) -> bool {
        matches!(self, Grid::Float { .. })
    }
}

/// Index of the magnitude nearest to `a >= 0`, ties to the even index (the even code),
/// saturating at the largest one. `magnitudes` is strictly increasing and starts at 0.
pub(crate) fn round_to_magnitude(magnitudes: &[f32], a: f32) -> usize {
    let last = magnitudes.len().saturating_sub(1);
    if a.is_nan() {
        return 0;
    }
    // First index whose magnitude exceeds `a`.
    let above = magnitudes.partition_point(|&v| v <= a);
    if above > last {
        return last;
    }
    let below = above.saturating_sub(1);
    if above == 0 {
        return 0;
    }
    // Both neighbours have at most 8 significant bits: their midpoint is exact in f64.
    let mid = (f64::from(magnitudes[below]) + f64::from(magnitudes[above])) / 2.0;
    let a = f64::from(a);
    if a < mid {
        below
    } else if a > mid {
        above
    } else if below % 2 == 0 {
        below
    } else {
        above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_values() {
        assert_eq!(MiniFloat::E2M1.magnitudes(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
    }

    #[test]
    fn rounding_ties_to_even_code() {
        let m = MiniFloat::E2M1.magnitudes();
        assert_eq!(round_to_magnitude(&m, 0.25), 0); // 0 | 0.5: even is 0
        assert_eq!(round_to_magnitude(&m, 0.75), 2); // 0.5 | 1.0: even is 1.0
        assert_eq!(round_to_magnitude(&m, 2.5), 4); // 2 | 3: even is 2
        assert_eq!(round_to_magnitude(&m, 3.5), 6); // 3 | 4: even is 4
        assert_eq!(round_to_magnitude(&m, 5.0), 6); // 4 | 6: even is 4
        assert_eq!(round_to_magnitude(&m, 100.0), 7); // saturates at 6
    }
}
