//! The page's bit slider, natively (`lutlab bench requantize`): how long re-quantizing one layer
//! with [`quantize_layer_gpu`] takes (the page's target: under 200 ms for a 768×3072 matrix),
//! beside the CPU reference on the same layer.
//!
//! The layer is synthetic but shaped like a trained one: Gaussian weights (σ 0.02, GPT-2's init)
//! with a few heavy-tailed ones, and a positive, heavy-tailed Fisher diagonal, so the weighted
//! k-means does the same work as on real weights. Each setting runs once untimed (pipelines
//! compile, buffers first touched), then `iters` timed runs, wall clock from call to result on
//! the host, as the slider sees it.

use crate::layer::quantize_layer_gpu;
use lutlab_core::quant::kmeans::rng::SplitMix64;
use lutlab_core::quant::model::{quantize_layer, Calibration, SampleWeights};
use lutlab_core::quant::{Granularity, KmeansSettings, Method};
use lutlab_core::weights::LinearWeights;
use lutlab_core::HostTensor;
use lutlab_model::{Gpu, Result};
use serde::Serialize;
use std::time::Instant;

/// One bit width on one shape.
#[derive(Clone, Debug, Serialize)]
pub struct RequantizeTiming {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub granularity: String,
    /// Timed GPU runs, in milliseconds.
    pub gpu_ms: Vec<f64>,
    pub gpu_median_ms: f64,
    /// One CPU reference run, when asked for.
    pub cpu_ms: Option<f64>,
    /// Mean squared error of the GPU result (a check that it did the work).
    pub mse: f64,
}

/// A `[rows, cols]` layer and its Fisher diagonal, deterministic in `seed`.
pub fn synthetic_layer(rows: usize, cols: usize, seed: u64) -> (LinearWeights, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let mut gaussian = move || {
        // Box–Muller; 1 − u keeps the logarithm finite.
        let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let n = rows * cols;
    let weight: Vec<f32> = (0..n).map(|i| (0.02 * gaussian() * if i % 997 == 0 { 8.0 } else { 1.0 }) as f32).collect();
    let fisher: Vec<f32> = (0..n).map(|_| (1e-6 * gaussian().powi(2).exp()) as f32).collect();
    let linear = LinearWeights { weight: HostTensor::new(vec![rows, cols], weight), bias: HostTensor::new(vec![cols], vec![0.0; cols]) };
    (linear, fisher)
}

/// Times Fisher-weighted k-means of a synthetic `rows × cols` layer at each of `bits`, with
/// `granularity` tables: `iters` GPU runs after a warm-up, and one CPU run when `cpu`.
pub async fn bench_requantize(gpu: &Gpu, rows: usize, cols: usize, bits: &[u32], granularity: Granularity, iters: usize, cpu: bool) -> Result<Vec<RequantizeTiming>> {
    let (linear, fisher) = synthetic_layer(rows, cols, 7);
    let name = "h.0.mlp.c_fc";
    let lookup = |_: &str| Some(fisher.as_slice());
    let sample_weights: SampleWeights = &lookup;
    let calibration = Calibration::fisher(Some(sample_weights));
    let mut out = Vec::with_capacity(bits.len());
    for &b in bits {
        let method = Method::Kmeans { settings: KmeansSettings { bits: b, granularity, ..KmeansSettings::default() }, outliers: None, scaling: false };
        let warm = quantize_layer_gpu(gpu, name, &linear, &method, calibration, rows).await?;
        crate::profile::report(&format!("requantize {b}-bit, warm-up"));
        let mut gpu_ms = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            let layer = quantize_layer_gpu(gpu, name, &linear, &method, calibration, rows).await?;
            gpu_ms.push(start.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(layer);
        }
        crate::profile::report(&format!("requantize {b}-bit, {iters} timed runs"));
        let cpu_ms = if cpu {
            let start = Instant::now();
            std::hint::black_box(quantize_layer(name, &linear, &method, calibration, rows)?);
            Some(start.elapsed().as_secs_f64() * 1e3)
        } else {
            None
        };
        out.push(RequantizeTiming { rows, cols, bits: b, granularity: format!("{granularity:?}").to_lowercase(), gpu_median_ms: median(&gpu_ms), gpu_ms, cpu_ms, mse: warm.mse });
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_layer_is_deterministic_and_plausible() {
        let (a, fa) = synthetic_layer(64, 32, 7);
        let (b, _) = synthetic_layer(64, 32, 7);
        assert_eq!(a.weight.data, b.weight.data);
        let std = (a.weight.data.iter().map(|w| f64::from(*w).powi(2)).sum::<f64>() / 2048.0).sqrt();
        assert!((0.015..0.05).contains(&std), "σ {std}");
        assert!(fa.iter().all(|f| *f > 0.0 && f.is_finite()));
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
