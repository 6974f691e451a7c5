//! Bias correction (Brevitas' `--bias-corr`): quantizing a layer's weights shifts the mean of its
//! outputs, `E[x·W_q] ≠ E[x·W]`, and every layer after it inherits the shift. The correction adds
//! the shift back to the bias: `b += E[x]·(W − W_q)` per output channel, with `E[x]` the layer's
//! mean input *in the weight-quantized model* over the calibration text (so it is measured where
//! the quantized layer actually runs). One pass: every layer's mean input is taken from the
//! quantized model before any correction, as Brevitas collects its statistics in one pass.

use crate::error::{LoadError, Result};
use crate::weights::ModelWeights;
use std::collections::BTreeMap;

/// Adds each linear's correction `E[x]·(W − W_q)` to `float`'s biases, where `quantized` is the
/// weight-quantized model (same names and shapes) and `means[name]` its mean inputs. Summed in
/// f64. Returns the corrections by layer.
pub fn correct_biases(
    float: &mut ModelWeights,
    quantized: &ModelWeights,
    means: &BTreeMap<String, Vec<f32>>,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut corrections = BTreeMap::new();
    let names: Vec<String> = float.linears().map(|(name, _)| name).collect();
    for name in names {
        let q = quantized.linear(&name).ok_or_else(|| LoadError::InvalidSetting(format!("bias correction: the quantized model has no `{name}`")))?;
        let mean = means.get(&name).ok_or_else(|| LoadError::InvalidSetting(format!("bias correction: no mean input for `{name}`")))?;
        let f = float.linear_mut(&name).ok_or_else(|| LoadError::InvalidSetting(format!("bias correction: the model has no `{name}`")))?;
        let (rows, cols) = (f.in_features(), f.out_features());
        if q.weight.data.len() != rows * cols || mean.len() != rows {
            return Err(LoadError::InvalidSetting(format!(
                "bias correction: `{name}` is {rows}x{cols} but the quantized layer holds {} weights and {} mean inputs",
                q.weight.data.len(),
                mean.len()
            )));
        }
        let mut shift = vec![0f64; cols];
        for ((wf, wq), &m) in f.weight.data.chunks_exact(cols).zip(q.weight.data.chunks_exact(cols)).zip(mean) {
            shift.iter_mut().zip(wf.iter().zip(wq)).for_each(|(s, (a, b))| *s += f64::from(m) * (f64::from(*a) - f64::from(*b)));
        }
        let shift: Vec<f32> = shift.into_iter().map(|s| s as f32).collect();
        f.bias.data.iter_mut().zip(&shift).for_each(|(b, s)| *b += s);
        corrections.insert(name, shift);
    }
    Ok(corrections)
}
