//! Input (activation) quantization: the input of every quantized linear rounded onto an integer
//! or minifloat grid before it is multiplied, as Brevitas' LLM example does with its `--input-*`
//! options (seed 002). Quantization is simulated ("fake-quantized"): `x → (q(x) − zp)·scale` in
//! f32, the values an integer or FP8 kernel would see, so every weight format runs unchanged.
//!
//! The vocabulary is Brevitas':
//! - **scaling** `static` (one scale and zero point per layer, calibrated on text: the mean over
//!   calibration windows of each window's estimate, Brevitas' running average of per-batch
//!   statistics), `dynamic` (computed from each input as it arrives) or `no_scale` (scale 1);
//! - **granularity** per tensor, per row (one token's channels) or per group of `g` consecutive
//!   channels of a row (dynamic only: a static scale serves every token, so it is per tensor);
//! - **statistics** `stats` (static: the 99.999th percentile, Brevitas' activation default;
//!   dynamic: absmax / min-max) or `mse` (the clipping range minimising the squared error);
//! - float or power-of-two scales, symmetric or asymmetric grids, float or integer zero points.
//!
//! Each group's scale comes from the same estimator as the weights' (`uniform::scale`), so the
//! rounding rules (half to even, Brevitas' full-range signed ints, saturating minifloats) are one
//! implementation. [`fake_quantize`] is the CPU reference of the GPU path
//! (`lutlab_model::input_quant`).
//!
//! A layer with an explicit input multiplier `m` (its packed `input_scale`: SmoothQuant's
//! `--act-equalization layerwise` stores `1/s` there, QuIP's rescaling its `D`) multiplies its
//! input by `m` before anything else, and its quantizer sees that product, as Brevitas places the
//! equalization `Mul` before the quantized linear: [`InputQuantization::quantize`] hands the layer
//! `Q(x ⊙ m) ⊘ m`, which the layer's `⊙ m` (or its plain weight `diag(m)·W`) turns into `Q(x ⊙ m)`.

use super::uniform::format::Grid;
use super::uniform::scale::estimate;
use super::uniform::{MiniFloat, NumberFormat, ScaleStats, ScaleType};
use crate::error::{LoadError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where an input's scale comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputScaling {
    /// Calibrated once on text, then fixed.
    Static,
    /// Computed from every input as it arrives.
    Dynamic,
    /// Scale 1, zero point 0: the grid's own values (a plain cast to FP8, say).
    NoScale,
}

/// Which input values share one scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputGranularity {
    /// The whole input of a layer: every token of one sequence (a dynamic scale is per window, so
    /// a result does not depend on how windows are batched).
    Tensor,
    /// Each token's channels.
    Row,
    /// `g` consecutive channels of a token.
    Group(usize),
}

/// Every option of input quantization.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputQuantSettings {
    /// 2 to 8.
    pub bits: u32,
    pub format: NumberFormat,
    pub symmetric: bool,
    pub granularity: InputGranularity,
    /// `Stats`, `Percentile(P)` (static only) or `Mse`.
    pub scale_stats: ScaleStats,
    pub scale_type: ScaleType,
    pub scaling: InputScaling,
    /// Round zero points to integers (Brevitas' `--quantize-input-zero-point`).
    pub integer_zero_point: bool,
    /// Also the LM head's input (Brevitas' `--quantize-last-layer`).
    pub quantize_head: bool,
}

impl Default for InputQuantSettings {
    /// Brevitas' defaults: 8-bit asymmetric integers, static per-tensor float scales from stats.
    fn default() -> Self {
        Self {
            bits: 8,
            format: NumberFormat::Int,
            symmetric: false,
            granularity: InputGranularity::Tensor,
            scale_stats: ScaleStats::Stats,
            scale_type: ScaleType::Float,
            scaling: InputScaling::Static,
            integer_zero_point: false,
            quantize_head: false,
        }
    }
}

/// The options as words, Brevitas' spelling (the CLI's `--input-*` flags, the page's controls).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputQuantRequest {
    pub bits: u32,
    /// `int` or eXmY.
    pub format: String,
    /// `sym` or `asym`.
    pub quant_type: String,
    /// `static`, `dynamic` or `no_scale`.
    pub scale_type: String,
    /// `per_tensor`, `per_row` or `per_group`.
    pub granularity: String,
    pub group_size: usize,
    /// `stats`, `percentile:P` or `mse`.
    pub param_method: String,
    /// `float_scale` or `po2_scale`.
    pub scale_precision: String,
    pub quantize_zero_point: bool,
    pub quantize_last_layer: bool,
}

impl Default for InputQuantRequest {
    fn default() -> Self {
        Self {
            bits: 8,
            format: "int".into(),
            quant_type: "asym".into(),
            scale_type: "static".into(),
            granularity: "per_tensor".into(),
            group_size: 64,
            param_method: "stats".into(),
            scale_precision: "float_scale".into(),
            quantize_zero_point: false,
            quantize_last_layer: false,
        }
    }
}

impl InputQuantRequest {
    /// The checked settings; every unknown word and contradiction is named.
    pub fn settings(&self) -> Result<InputQuantSettings> {
        let symmetric = match self.quant_type.as_str() {
            "sym" => true,
            "asym" => false,
            other => return Err(LoadError::InvalidSetting(format!("input quant type `{other}`: use sym or asym"))),
        };
        let settings = InputQuantSettings {
            bits: self.bits,
            format: self.format.parse()?,
            symmetric,
            granularity: InputGranularity::parse(&self.granularity, self.group_size)?,
            scale_stats: self.param_method.parse()?,
            scale_type: self.scale_precision.parse()?,
            scaling: self.scale_type.parse()?,
            integer_zero_point: self.quantize_zero_point,
            quantize_head: self.quantize_last_layer,
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// One scale group's parameters: `x ≈ (q − zero_point)·scale`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputParams {
    pub scale: f32,
    pub zero_point: f32,
}

impl InputQuantSettings {
    /// Brevitas' percentile for static activation ranges.
    pub const STATIC_PERCENTILE: f64 = 99.999;

    /// Checks the options on their own (widths are checked per layer by [`Self::check_width`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(LoadError::InvalidSetting(why));
        self.format.check_bits(self.bits).map_err(|e| match e {
            LoadError::InvalidSetting(why) => LoadError::InvalidSetting(format!("input quantization: {why}")),
            other => other,
        })?;
        if !self.symmetric && matches!(self.format, NumberFormat::Float(_)) {
            return bad(format!("input format {} is a sign-magnitude float and has no zero point: use --input-quant-type sym", self.format));
        }
        self.scale_stats.check()?;
        match (self.scaling, self.scale_stats, self.granularity) {
            (_, ScaleStats::Hqo, _) => bad("input scales from hqo: use stats or mse (HQO optimises weights against themselves)".into()),
            (InputScaling::Dynamic, ScaleStats::Percentile(_), _) => {
                bad("dynamic input scales use absmax/min-max (stats) or mse; a percentile is for static scales".into())
            }
            (InputScaling::Static, _, InputGranularity::Row | InputGranularity::Group(_)) => bad(format!(
                "static input scales are per tensor (one scale serves every token); per-row and per-group input scales are dynamic: \
                 use --input-scale-type dynamic, or --input-quant-granularity per_tensor (asked: {})",
                self.granularity
            )),
            (_, _, InputGranularity::Group(0)) => bad("input group size 0: give a positive --input-group-size".into()),
            _ => Ok(()),
        }
    }

    /// Checks that a layer of `n_in` inputs splits into this granularity's groups.
    pub fn check_width(&self, n_in: usize, layer: &str) -> Result<()> {
        match self.granularity {
            InputGranularity::Group(g) if g == 0 || !n_in.is_multiple_of(g) => Err(LoadError::InvalidSetting(format!(
                "--input-group-size {g} does not divide the {n_in} inputs of `{layer}`: use a divisor of every quantized layer's width"
            ))),
            _ => Ok(()),
        }
    }

    /// The statistic that chooses each scale: `stats` is the 99.999th percentile when static.
    pub fn effective_stats(&self) -> ScaleStats {
        match (self.scaling, self.scale_stats) {
            (InputScaling::Static, ScaleStats::Stats) => ScaleStats::Percentile(Self::STATIC_PERCENTILE),
            (_, stats) => stats,
        }
    }

    /// Values per scale group in an input of `len` values, `n_in` per row.
    pub fn group_len(&self, len: usize, n_in: usize) -> usize {
        match self.granularity {
            InputGranularity::Tensor => len,
            InputGranularity::Row => n_in,
            InputGranularity::Group(g) => g,
        }
    }

    pub(crate) fn grid(&self) -> Result<Grid> {
        Grid::new(self.format, self.bits, self.symmetric)
    }

    /// What the GPU path needs to round onto the grid with arithmetic alone.
    pub fn grid_arithmetic(&self) -> Result<GridArithmetic> {
        self.validate()?;
        let grid = self.grid()?;
        Ok(match self.format {
            NumberFormat::Int => {
                let (qmin, qmax) = if self.symmetric { (-(1i32 << (self.bits - 1)), (1i32 << (self.bits - 1)) - 1) } else { (0, (1i32 << self.bits) - 1) };
                GridArithmetic::Int { qmin: qmin as f32, qmax: qmax as f32, divisor: grid.divisor() }
            }
            NumberFormat::Float(f) => float_arithmetic(f),
        })
    }

    /// One group's parameters from its values (dynamic scales, or one calibration window).
    pub fn params(&self, values: &[f32]) -> Result<InputParams> {
        let grid = self.grid()?;
        let mut p = estimate(values, &grid, self.symmetric, self.effective_stats(), self.scale_type);
        if self.integer_zero_point {
            p.zero_point = p.zero_point.round_ties_even() + 0.0;
        }
        Ok(InputParams { scale: p.scale, zero_point: p.zero_point })
    }

    /// The settings in words ([`InputQuantRequest::settings`] reads them back unchanged).
    pub fn request(&self) -> InputQuantRequest {
        let (granularity, group_size) = match self.granularity {
            InputGranularity::Tensor => ("per_tensor", InputQuantRequest::default().group_size),
            InputGranularity::Row => ("per_row", InputQuantRequest::default().group_size),
            InputGranularity::Group(g) => ("per_group", g),
        };
        InputQuantRequest {
            bits: self.bits,
            format: self.format.to_string(),
            quant_type: if self.symmetric { "sym" } else { "asym" }.into(),
            scale_type: match self.scaling {
                InputScaling::Static => "static",
                InputScaling::Dynamic => "dynamic",
                InputScaling::NoScale => "no_scale",
            }
            .into(),
            granularity: granularity.into(),
            group_size,
            param_method: self.scale_stats.to_string(),
            scale_precision: match self.scale_type {
                ScaleType::Float => "float_scale",
                ScaleType::PowerOfTwo => "po2_scale",
            }
            .into(),
            quantize_zero_point: self.integer_zero_point,
            quantize_last_layer: self.quantize_head,
        }
    }

    /// A short description for reports: `A8 int asym static per-tensor`.
    pub fn label(&self) -> String {
        let scaling = match self.scaling {
            InputScaling::Static => "static",
            InputScaling::Dynamic => "dynamic",
            InputScaling::NoScale => "no-scale",
        };
        format!("A{} {} {} {scaling} {}", self.bits, self.format, if self.symmetric { "sym" } else { "asym" }, self.granularity)
    }
}

/// A grid as arithmetic on f32 (exact: only powers of two, comparisons and rounding).
#[derive(Clone, Debug, PartialEq)]
pub enum GridArithmetic {
    /// `q = clamp(round_half_even(x / scale + zp), qmin, qmax)`; a range of width `w` maps to
    /// `w / divisor` per step.
    Int { qmin: f32, qmax: f32, divisor: f32 },
    /// A minifloat magnitude `a` rounds to a multiple of `step(a)` (half to even), saturating at
    /// `max`: `step(a) = base · 2^(number of thresholds ≤ a)` (subnormals and the first binade
    /// share `base`; each later binade doubles it).
    Float { base: f32, thresholds: Vec<f32>, max: f32 },
}

impl GridArithmetic {
    /// What the clipping threshold maps to (see `Grid::divisor`).
    pub fn divisor(&self) -> f32 {
        match self {
            GridArithmetic::Int { divisor, .. } => *divisor,
            GridArithmetic::Float { max, .. } => *max,
        }
    }
}

fn float_arithmetic(f: MiniFloat) -> GridArithmetic {
    let (bias, m) = (f.bias(), f.mantissa_bits as i32);
    let max = f.max_value();
    let pow2 = |e: i32| 2f64.powi(e) as f32;
    // Binade `E` (exponent field E ≥ 1) starts at 2^(E − bias) with step 2^(E − bias − m); the
    // subnormals share the step of binade 1. Binades past the largest finite value only matter
    // through the saturation.
    let thresholds = (2..(1i32 << f.exponent_bits)).map(|e| pow2(e - bias)).filter(|&t| t <= max).collect();
    GridArithmetic::Float { base: pow2(1 - bias - m), thresholds, max }
}

/// Fake-quantizes `x` (rows of `n_in` values) in place: each scale group by its own dynamic
/// parameters, or all by `fixed` (static or no-scale). The CPU reference of the GPU path.
pub fn fake_quantize(x: &mut [f32], n_in: usize, settings: &InputQuantSettings, fixed: Option<InputParams>) -> Result<()> {
    settings.validate()?;
    if n_in == 0 || !x.len().is_multiple_of(n_in) {
        return Err(LoadError::InvalidSetting(format!("{} input values are not rows of {n_in}", x.len())));
    }
    settings.check_width(n_in, "this input")?;
    let grid = settings.grid()?;
    let group = settings.group_len(x.len(), n_in).max(1);
    for values in x.chunks_mut(group) {
        let p = match fixed {
            Some(p) => p,
            None => settings.params(values)?,
        };
        for v in values.iter_mut() {
            *v = grid.table_value(grid.encode(*v, p.scale, p.zero_point), p.scale, p.zero_point);
        }
    }
    Ok(())
}

/// `1/v` of each value, in f32.
pub fn reciprocals(m: &[f32]) -> Vec<f32> {
    m.iter().map(|v| 1.0 / v).collect()
}

/// Multiplies each row of `x` (rows of `m.len()` values) by `m`, channel by channel.
pub fn multiply_rows(x: &mut [f32], m: &[f32]) {
    x.chunks_exact_mut(m.len()).for_each(|row| row.iter_mut().zip(m).for_each(|(v, f)| *v *= f));
}

/// Static input scales: the mean over calibration windows of each window's parameters, per layer.
#[derive(Clone, Debug, Default)]
pub struct InputCalibration {
    sums: BTreeMap<String, (f64, f64, usize)>,
}

impl InputCalibration {
    /// Adds one window's input (`values`, every position and channel) of layer `name`, as its
    /// quantizer sees it: multiplied by the layer's `multiplier`, if any.
    pub fn add_window(&mut self, settings: &InputQuantSettings, name: &str, values: &[f32], multiplier: Option<&[f32]>) -> Result<()> {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(LoadError::InvalidSetting(format!("the input of `{name}` has a non-finite value at {i}: cannot calibrate its scale")));
        }
        let mut multiplied = Vec::new();
        let values = match multiplier {
            Some(m) => {
                multiplied.extend_from_slice(values);
                multiply_rows(&mut multiplied, m);
                &multiplied[..]
            }
            None => values,
        };
        let p = settings.params(values)?;
        let entry = self.sums.entry(name.to_string()).or_insert((0.0, 0.0, 0));
        entry.0 += f64::from(p.scale);
        entry.1 += f64::from(p.zero_point);
        entry.2 += 1;
        Ok(())
    }

    /// The averaged parameters by layer; a power-of-two or integer setting is re-applied to the
    /// average (a mean of powers of two is not one).
    pub fn finish(self, settings: &InputQuantSettings) -> BTreeMap<String, InputParams> {
        self.sums
            .into_iter()
            .map(|(name, (scale, zp, n))| {
                let mut scale = (scale / n as f64) as f32;
                if settings.scale_type == ScaleType::PowerOfTwo {
                    scale = super::uniform::po2_ceil(scale);
                }
                let mut zero_point = (zp / n as f64) as f32;
                if settings.integer_zero_point {
                    zero_point = zero_point.round_ties_even() + 0.0;
                }
                (name, InputParams { scale, zero_point })
            })
            .collect()
    }
}

/// Per linear (full name), the factor each input channel is multiplied by before the layer's
/// input is quantized (see the module's documentation); layers not named have none.
pub type InputMultipliers = BTreeMap<String, Vec<f32>>;

/// Input quantization of a whole model: the settings, per layer (full name) the fixed
/// parameters of static scales, and the layers' explicit input multipliers.
#[derive(Clone, Debug, PartialEq)]
pub struct InputQuantization {
    pub settings: InputQuantSettings,
    pub statics: BTreeMap<String, InputParams>,
    pub multipliers: InputMultipliers,
}

impl InputQuantization {
    /// Quantization by `settings` with `statics` for layers without input multipliers.
    pub fn new(settings: InputQuantSettings, statics: BTreeMap<String, InputParams>) -> Self {
        Self { settings, statics, multipliers: InputMultipliers::new() }
    }

    /// Fake-quantizes rows `x` of `n_in` values, the input of layer `name`: `Q(x ⊙ m) ⊘ m` with
    /// the layer's multiplier `m`, else `Q(x)`.
    pub fn quantize(&self, name: &str, x: &mut [f32], n_in: usize) -> Result<()> {
        let fixed = self.fixed(name)?;
        let Some(m) = self.multiplier(name, n_in)? else { return fake_quantize(x, n_in, &self.settings, fixed) };
        multiply_rows(x, m);
        fake_quantize(x, n_in, &self.settings, fixed)?;
        // Times `1/m` rounded once, not divided by `m`: the GPU multiplies the same f32s exactly
        // (WGSL's division may be off by 2.5 ulp, enough to flip a later rounding).
        multiply_rows(x, &reciprocals(m));
        Ok(())
    }

    /// Layer `name`'s multiplier, checked against its width `n_in`.
    pub fn multiplier(&self, name: &str, n_in: usize) -> Result<Option<&[f32]>> {
        match self.multipliers.get(name) {
            Some(m) if m.len() != n_in => Err(LoadError::InvalidSetting(format!("`{name}`: {} input multipliers for {n_in} inputs", m.len()))),
            Some(m) if m.iter().any(|v| !(v.is_finite() && *v > 0.0)) => {
                Err(LoadError::InvalidSetting(format!("`{name}`: an input multiplier is not a positive finite number")))
            }
            m => Ok(m.map(Vec::as_slice)),
        }
    }

    /// The fixed parameters of layer `name`: calibrated (static), 1 and 0 (no scale), or none
    /// (dynamic).
    pub fn fixed(&self, name: &str) -> Result<Option<InputParams>> {
        match self.settings.scaling {
            InputScaling::Dynamic => Ok(None),
            InputScaling::NoScale => Ok(Some(InputParams { scale: 1.0, zero_point: 0.0 })),
            InputScaling::Static => self.statics.get(name).copied().map(Some).ok_or_else(|| {
                LoadError::InvalidSetting(format!("static input quantization has no calibrated scale for `{name}`: run the calibration (--act-calibration) on this model"))
            }),
        }
    }
}

impl fmt::Display for InputGranularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputGranularity::Tensor => f.write_str("per-tensor"),
            InputGranularity::Row => f.write_str("per-row"),
            InputGranularity::Group(g) => write!(f, "per-group-{g}"),
        }
    }
}

impl FromStr for InputScaling {
    type Err = LoadError;
    /// Brevitas' `static`, `dynamic`, `no_scale`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "static" => Ok(Self::Static),
            "dynamic" => Ok(Self::Dynamic),
            "no_scale" | "no-scale" | "none" => Ok(Self::NoScale),
            _ => Err(LoadError::InvalidSetting(format!("input scale type `{s}`: use static, dynamic or no_scale"))),
        }
    }
}

impl InputGranularity {
    /// Brevitas' `per_tensor`, `per_row`, `per_group` (with its group size).
    pub fn parse(s: &str, group_size: usize) -> Result<Self> {
        match s.trim() {
            "per_tensor" | "tensor" => Ok(Self::Tensor),
            "per_row" | "row" | "per_token" | "token" => Ok(Self::Row),
            "per_group" | "group" => Ok(Self::Group(group_size)),
            _ => Err(LoadError::InvalidSetting(format!("input granularity `{s}`: use per_tensor, per_row or per_group"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(format: &str, bits: u32, symmetric: bool) -> InputQuantSettings {
        InputQuantSettings { bits, format: format.parse().unwrap(), symmetric, scaling: InputScaling::Dynamic, ..Default::default() }
    }

    #[test]
    fn float_arithmetic_rounds_like_the_table() {
        // Every format's step rule lands on the nearest representable magnitude.
        for f in [MiniFloat::E4M3, MiniFloat::E5M2, MiniFloat::E2M1, MiniFloat::E3M2, MiniFloat::E2M3, MiniFloat::E4M3_FNUZ] {
            let GridArithmetic::Float { base, thresholds, max } = float_arithmetic(f) else { unreachable!() };
            let grid = Grid::new(NumberFormat::Float(f), f.bits(), true).unwrap();
            for i in 0..4000 {
                let a = max * 1.2 * i as f32 / 4000.0;
                let step = base * 2f32.powi(thresholds.iter().filter(|&&t| t <= a).count() as i32);
                let q = ((a / step).round_ties_even() * step).min(max);
                let expected = grid.table_value(grid.encode(a, 1.0, 0.0), 1.0, 0.0);
                assert_eq!(q, expected, "{f} at {a}");
            }
        }
    }

    #[test]
    fn settings_round_trip_through_words() {
        let words = [
            InputQuantRequest::default(),
            InputQuantRequest { format: "e4m3".into(), bits: 8, quant_type: "sym".into(), scale_type: "dynamic".into(), granularity: "per_group".into(), group_size: 32, scale_precision: "po2_scale".into(), ..Default::default() },
            InputQuantRequest { bits: 4, scale_type: "dynamic".into(), granularity: "per_row".into(), param_method: "mse".into(), quantize_zero_point: true, quantize_last_layer: true, ..Default::default() },
            InputQuantRequest { param_method: "percentile:99.9".into(), ..Default::default() },
        ];
        for w in words {
            let settings = w.settings().unwrap();
            assert_eq!(settings.request().settings().unwrap(), settings, "{w:?}");
        }
    }

    #[test]
    fn dynamic_rows_use_their_own_range() {
        let s = InputQuantSettings { granularity: InputGranularity::Row, ..settings("int", 8, true) };
        let mut x = vec![1.0, -0.5, 0.25, 100.0, -50.0, 25.0];
        fake_quantize(&mut x, 3, &s, None).unwrap();
        // absmax 1 → scale 1/128; absmax 100 → scale 100/128: both rows exact on their grids.
        assert_eq!(x, vec![1.0 - 1.0 / 128.0, -0.5, 0.25, 100.0 - 100.0 / 128.0, -50.0, 25.0]);
    }

    #[test]
    fn contradictory_settings_are_named() {
        let static_rows = InputQuantSettings { granularity: InputGranularity::Row, ..Default::default() };
        assert!(static_rows.validate().unwrap_err().to_string().contains("static input scales are per tensor"));
        let dynamic_percentile = InputQuantSettings { scale_stats: ScaleStats::Percentile(99.0), ..settings("int", 8, false) };
        assert!(dynamic_percentile.validate().unwrap_err().to_string().contains("percentile"));
        let asym_float = settings("e4m3", 8, false);
        assert!(asym_float.validate().unwrap_err().to_string().contains("no zero point"));
        let wrong_width = settings("e4m3", 4, true);
        assert!(wrong_width.validate().unwrap_err().to_string().contains("input quantization"));
        let groups = InputQuantSettings { granularity: InputGranularity::Group(64), ..settings("int", 8, true) };
        assert!(groups.check_width(100, "h.0.mlp.c_fc").unwrap_err().to_string().contains("does not divide the 100 inputs of `h.0.mlp.c_fc`"));
    }

    #[test]
    fn static_scales_average_the_windows() {
        let s = InputQuantSettings { symmetric: true, scale_stats: ScaleStats::Stats, scaling: InputScaling::Static, ..Default::default() };
        let mut c = InputCalibration::default();
        // 99.999th percentile of ≤ 100k values is the absmax.
        c.add_window(&s, "a", &[1.0, -2.0], None).unwrap();
        c.add_window(&s, "a", &[4.0, 0.0], None).unwrap();
        let p = c.finish(&s)["a"];
        assert_eq!(p, InputParams { scale: 3.0 / 128.0, zero_point: 0.0 });
        assert!(InputCalibration::default().add_window(&s, "a", &[f32::NAN], None).is_err());
    }
}
