//! Quantizing a model's layers with the k-means on the GPU: the same preparation and finishing as
//! the CPU path (`lutlab_core::quant::model::KmeansJob`: tables, sample weights, dense-and-sparse
//! outliers), with [`quantize_kmeans_gpu_report`] in the middle; vector tables the same around
//! [`fit_vector_tables_gpu`]. GPTQ and LDLQ round on the GPU (`lutlab_model::GpuRounder`) after
//! their grid is fitted on the CPU; round-to-nearest and the other Hessian methods run on the CPU.

use crate::kmeans::quantize_kmeans_gpu_report;
use crate::profile;
use crate::vector_kmeans::fit_vector_tables_gpu;
use lutlab_core::quant::model::{quantize_layer, selected_layers, Calibration, KmeansJob, LayerSelection, VectorJob};
use lutlab_core::quant::{quantize_layer_rounded_by, Method, QuantizedLayer, QuantizedModel};
use lutlab_core::weights::LinearWeights;
use lutlab_core::{ModelWeights, LoadError, Progress};
use lutlab_model::{Gpu, GpuRounder, ModelError, Result};

/// One linear weight, its k-means or its GPTQ/LDLQ rounding on the GPU.
pub async fn quantize_layer_gpu(
    gpu: &Gpu,
    name: &str,
    linear: &LinearWeights,
    method: &Method,
    calibration: Calibration<'_>,
    n_embd: usize,
) -> Result<QuantizedLayer> {
    match method {
        Method::Kmeans { settings, .. } if settings.vector_dim > 1 => {
            let job = VectorJob::new(name, linear, settings, calibration, n_embd)?;
            let centres = fit_vector_tables_gpu(gpu, &job.problems, &job.settings).await.map_err(|e| match e {
                ModelError::Gpu(m) => ModelError::Gpu(format!("{name}: {m}")),
                other => other,
            })?;
            return Ok(job.finish(centres)?);
        }
        Method::Kmeans { .. } => {}
        Method::Hessian { rounding, .. } => {
            let rounder = GpuRounder::new(gpu.clone());
            let (rows, cols) = (linear.in_features(), linear.out_features());
            let on_gpu = async |w: &[f32], h: &_, grid: &_, exact: Option<&[bool]>| rounder.round_async(w, rows, cols, h, grid, exact, rounding).await;
            return Ok(quantize_layer_rounded_by(name, linear, method, calibration, n_embd, on_gpu).await?);
        }
        // Uniform grids are fitted on the CPU.
        Method::Uniform(_) => return Ok(quantize_layer(name, linear, method, calibration, n_embd)?),
    }
    let t = profile::start();
    let job = KmeansJob::new(name, linear, method, calibration, n_embd)?;
    profile::stop("job preparation", t);
    let output = quantize_kmeans_gpu_report(gpu, &job.weights, job.rows, job.cols, job.sample_weights, job.excluded(), &job.settings)
        .await
        .map_err(|e| match e {
            ModelError::Load(e) => ModelError::Load(job.in_layer(e)),
            other => other,
        })?;
    let t = profile::start();
    let layer = job.finish(output)?;
    profile::stop("job finish (outliers, error report)", t);
    Ok(layer)
}

/// The GPU twin of `lutlab_core::quant::quantize_model`: every weight `selection` names (the
/// linears of some blocks, the embeddings if asked), with progress in weights and a cancel check
/// between layers.
pub async fn quantize_model_gpu(
    gpu: &Gpu,
    weights: &ModelWeights,
    method: &Method,
    selection: impl Into<LayerSelection>,
    calibration: Calibration<'_>,
    progress: &mut dyn Progress,
) -> Result<QuantizedModel> {
    let selected = selected_layers(weights, selection)?;
    let total = selected.iter().map(|(_, l)| l.weight.numel() as u64).sum();
    let mut done = 0;
    progress.update(0, total);
    let mut layers = Vec::with_capacity(selected.len());
    for (name, linear) in selected {
        if progress.is_cancelled() {
            return Err(LoadError::Cancelled.into());
        }
        layers.push(quantize_layer_gpu(gpu, &name, &linear, method, calibration, weights.config.n_embd).await?);
        done += linear.weight.numel() as u64;
        progress.update(done, total);
    }
    profile::report("quantize_model_gpu");
    Ok(QuantizedModel { layers })
}
