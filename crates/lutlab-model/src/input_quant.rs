//! Input (activation) quantization on the GPU: each linear's input fake-quantized by burn tensor
//! ops before it is multiplied, and the static scales calibrated on text. The CPU reference is
//! `lutlab_core::quant::inputs::fake_quantize`; the rules (groups, ranges, scale estimators,
//! rounding) are documented there and reproduced here op for op.
//!
//! Everything is exact f32 arithmetic except the division `x / scale` (WGSL allows 2.5 ulp), so
//! a value lying on a rounding boundary may land one step away from the CPU's: the tests bound
//! how often. Minifloat rounding needs the step of each value's binade; it is built from
//! comparisons with exact powers of two rather than `log2` (inexact on GPUs).

use crate::decoder::{run_block, BlockVisitor, Decoder};
use crate::device::download;
use crate::error::{ModelError, Result};
use crate::activations::{check_seqlen, check_windows};
use crate::hessian::embed_starts;
use crate::ActivationSettings;
use burn::tensor::{Device, Tensor, TensorData};
use lutlab_core::quant::inputs::{reciprocals, GridArithmetic, InputCalibration, InputGranularity, InputMultipliers, InputParams, InputQuantSettings, InputScaling};
use lutlab_core::quant::{ScaleStats, ScaleType};
use lutlab_core::Progress;
use std::collections::BTreeMap;

/// One linear input's quantizer: the settings, the grid as arithmetic, fixed parameters (static
/// or no-scale) or none (dynamic), and the layer's input multiplier, if it has one.
#[derive(Clone, Debug)]
pub struct InputQuantizer {
    pub settings: InputQuantSettings,
    grid: GridArithmetic,
    fixed: Option<InputParams>,
    /// The layer's input multiplier `m` and `1/m` (rounded on the host, as the CPU reference's).
    multiplier: Option<(Tensor<1>, Tensor<1>)>,
}

impl InputQuantizer {
    pub fn new(settings: InputQuantSettings, fixed: Option<InputParams>) -> Result<Self> {
        Ok(Self { grid: settings.grid_arithmetic()?, settings, fixed, multiplier: None })
    }

    /// The quantizer of a layer that multiplies its input by `m` first: it quantizes `x ⊙ m`
    /// and hands back `Q(x ⊙ m) ⊘ m` (`InputQuantization::quantize`).
    pub fn with_multiplier(self, m: &[f32], device: &Device) -> Self {
        let upload = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device);
        Self { multiplier: Some((upload(m.to_vec()), upload(reciprocals(m)))), ..self }
    }

    pub fn has_multiplier(&self) -> bool {
        self.multiplier.is_some()
    }

    /// `x` `[B, T, C]` fake-quantized. Per-tensor dynamic scales are per sequence (one window), so
    /// a result does not depend on how windows are batched.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let Some((m, inverse)) = &self.multiplier else { return self.quantize(x) };
        self.quantize(x * m.clone().unsqueeze::<3>()) * inverse.clone().unsqueeze::<3>()
    }

    fn quantize(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let group = match self.settings.granularity {
            InputGranularity::Tensor => t * c,
            InputGranularity::Row => c,
            InputGranularity::Group(g) => g,
        };
        let rows = x.reshape([b * t * c / group, group]);
        let device = rows.device();
        let (scale, zero_point) = match self.fixed {
            Some(p) => (Tensor::<2>::full([1, 1], p.scale, &device), Tensor::<2>::full([1, 1], p.zero_point, &device)),
            None => self.dynamic_params(rows.clone()),
        };
        self.dequantize(rows, scale, zero_point).reshape([b, t, c])
    }

    /// Each row's scale and zero point `[G, 1]`, as `uniform::scale::estimate` chooses them.
    fn dynamic_params(&self, rows: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (low, high) = if self.settings.symmetric {
            (rows.clone().max_dim(1).mul_scalar(0.0), rows.clone().abs().max_dim(1))
        } else {
            (rows.clone().min_dim(1).clamp_max(0.0), rows.clone().max_dim(1).clamp_min(0.0))
        };
        let (mut scale, mut zero_point) = self.params_from_range(low.clone(), high.clone());
        if self.settings.scale_stats == ScaleStats::Mse {
            // Clipping ranges alpha · [low, high], alpha = 1, 0.99, ..., 0.01; the first minimum of
            // the squared error wins (strictly smaller replaces).
            let mut best = Tensor::<2>::full(scale.dims(), f32::INFINITY, &scale.device());
            for k in (1..=MSE_STEPS).rev() {
                let alpha = k as f32 / MSE_STEPS as f32;
                let (s, z) = self.params_from_range(low.clone().mul_scalar(alpha), high.clone().mul_scalar(alpha));
                let err = (rows.clone() - self.dequantize(rows.clone(), s.clone(), z.clone())).powi_scalar(2).sum_dim(1);
                let better = err.clone().lower(best.clone());
                best = best.mask_where(better.clone(), err);
                scale = scale.mask_where(better.clone(), s);
                zero_point = zero_point.mask_where(better, z);
            }
        }
        if self.settings.integer_zero_point {
            zero_point = zero_point.round();
        }
        (scale, zero_point)
    }

    /// `uniform::scale::params_from_range` on tensors.
    fn params_from_range(&self, low: Tensor<2>, high: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let divisor = self.grid.divisor();
        if self.settings.symmetric {
            (self.restrict(high.div_scalar(divisor)), low.mul_scalar(0.0))
        } else {
            let scale = self.restrict((high - low.clone()).div_scalar(divisor));
            let zero_point = low.neg() / scale.clone();
            (scale, zero_point)
        }
    }

    /// A degenerate scale (zero, subnormal, infinite, NaN) becomes 1; po2 rounds up.
    fn restrict(&self, s: Tensor<2>) -> Tensor<2> {
        let normal = s.clone().greater_equal_elem(f32::MIN_POSITIVE).bool_and(s.clone().lower_equal_elem(f32::MAX));
        let s = s.mask_fill(normal.bool_not(), 1.0);
        match self.settings.scale_type {
            ScaleType::Float => s,
            ScaleType::PowerOfTwo => po2_ceil(s),
        }
    }

    /// `(q(x) − zp)·scale` with per-row (or broadcast `[1, 1]`) parameters.
    fn dequantize(&self, x: Tensor<2>, scale: Tensor<2>, zero_point: Tensor<2>) -> Tensor<2> {
        match &self.grid {
            GridArithmetic::Int { qmin, qmax, .. } => {
                let q = (x / scale.clone() + zero_point.clone()).round().clamp(*qmin, *qmax);
                (q - zero_point) * scale
            }
            GridArithmetic::Float { base, thresholds, max } => {
                let y = x / scale.clone();
                let a = y.clone().abs();
                let mut step = a.clone().mul_scalar(0.0).add_scalar(*base);
                // Each threshold passed doubles the step: base · 2^n as a sum of exact powers of two.
                for (k, &t) in thresholds.iter().enumerate() {
                    let doubling = base * 2f32.powi(k as i32);
                    step = step + a.clone().greater_equal_elem(t).float().mul_scalar(doubling);
                }
                let q = (a / step.clone()).round().mul(step).clamp_max(*max);
                y.sign() * q * scale
            }
        }
    }
}

const MSE_STEPS: u32 = 100;

/// The smallest power of two `≥ s` for normal positive `s`: `log2` guesses the exponent, exact
/// powers of two and one correction each way make it exact.
fn po2_ceil(s: Tensor<2>) -> Tensor<2> {
    let guess = (s.clone().log() / std::f32::consts::LN_2).ceil().clamp(-126.0, 127.0);
    let p = exact_pow2(guess);
    let half = p.clone().mul_scalar(0.5);
    let p = p.mask_where(half.clone().greater_equal(s.clone()), half);
    let twice = p.clone().mul_scalar(2.0);
    p.clone().mask_where(p.lower(s), twice)
}

/// `2^e` for integer-valued `e` in `[-126, 127]`, exactly: `2^-126` times `2^(2^j)` for each set
/// bit `j` of `e + 126`.
fn exact_pow2(e: Tensor<2>) -> Tensor<2> {
    let mut k = e.add_scalar(126.0);
    let mut p = k.clone().mul_scalar(0.0).add_scalar(2f32.powi(-126));
    for j in 0..8 {
        let half = k.clone().div_scalar(2.0).floor();
        let bit = k - half.clone().mul_scalar(2.0);
        // 2^128 is not an f32: bit 7 multiplies by 2^64 twice.
        let (factor, times) = if j == 7 { (2f32.powi(64), 2) } else { (2f32.powi(1 << j), 1) };
        for _ in 0..times {
            p = p * bit.clone().mul_scalar(factor - 1.0).add_scalar(1.0);
        }
        k = half;
    }
    p
}

/// The static parameters of every linear input (and the LM head's, if `settings` quantizes it),
/// from `settings.nsamples` windows of `tokens`: each window's estimate (`InputCalibration`),
/// averaged. Inputs are observed unquantized, as Brevitas' calibration mode does. Blocks are
/// walked one at a time, each block's inputs read back before the next, so memory holds one
/// block's activations.
pub async fn calibrate_inputs(
    model: &Decoder,
    tokens: &[u32],
    act: ActivationSettings,
    settings: &InputQuantSettings,
    multipliers: &InputMultipliers,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, InputParams>> {
    let starts = act.starts(model, tokens)?;
    let windows = Windows { tokens, starts: &starts, seqlen: act.seqlen, batch: act.batch };
    calibrate_inputs_windows(model, windows, settings, multipliers, progress).await
}

/// Windows `tokens[start..start + seqlen]` of a text, `batch` per pass.
#[derive(Clone, Copy)]
pub struct Windows<'a> {
    pub tokens: &'a [u32],
    pub starts: &'a [usize],
    pub seqlen: usize,
    pub batch: usize,
}

/// [`calibrate_inputs`] on given windows; each layer's input is observed times its multiplier.
pub async fn calibrate_inputs_windows(
    model: &Decoder,
    windows: Windows<'_>,
    settings: &InputQuantSettings,
    multipliers: &InputMultipliers,
    progress: &mut dyn Progress,
) -> Result<BTreeMap<String, InputParams>> {
    let Windows { tokens, starts, seqlen, batch } = windows;
    settings.validate()?;
    if settings.scaling != InputScaling::Static {
        return Err(lutlab_core::LoadError::InvalidSetting(format!(
            "calibration is for static input scales; these are {:?}",
            settings.scaling
        ))
        .into());
    }
    check_seqlen(model, seqlen)?;
    check_windows(model, tokens, starts, seqlen)?;
    if batch == 0 {
        return Err(lutlab_core::LoadError::InvalidSetting("batch must be at least 1".into()).into());
    }
    let mut states = embed_starts(model, tokens, starts, seqlen, batch);
    let config = &model.config;
    let groups = config.input_groups();
    let specs = config.block_linears();
    let mut calibration = InputCalibration::default();
    progress.update(0, model.n_blocks() as u64 + 1);
    for i in 0..model.n_blocks() {
        if progress.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let block = model.block(i)?;
        let mut seen = BlockInputs::default();
        run_block(i, &block, &mut states, Some(&mut seen))?;
        for inputs in seen.states {
            for group in &groups {
                let input = inputs[group.start].clone();
                let [_, t, n] = input.dims();
                let values = download(input).await?;
                for w in values.chunks(t * n) {
                    for layer in group.clone() {
                        let name = format!("{}.{}", config.block_prefix(i), specs[layer].name);
                        calibration.add_window(settings, &name, w, multipliers.get(&name).map(Vec::as_slice))?;
                    }
                }
            }
        }
        progress.update(i as u64 + 1, model.n_blocks() as u64 + 1);
    }
    if settings.quantize_head {
        for (_, x) in states {
            let values = download(model.finish(x)).await?;
            for w in values.chunks(seqlen * config.embed_dim) {
                calibration.add_window(settings, lutlab_core::quant::head::HEAD, w, None)?;
            }
        }
    }
    progress.update(model.n_blocks() as u64 + 1, model.n_blocks() as u64 + 1);
    Ok(calibration.finish(settings))
}

/// Each state's linear inputs of one block.
#[derive(Default)]
struct BlockInputs {
    states: Vec<Vec<Tensor<3>>>,
}

impl BlockVisitor for BlockInputs {
    fn inputs(&mut self, _index: usize, inputs: Vec<Tensor<3>>) -> Result<()> {
        self.states.push(inputs);
        Ok(())
    }
}
