//! `lutlab quantize --method gptq|ldlq|ldlq-rg|greedy`: each layer rounded with its Hessian,
//! either GPTQ's way (sequential: block by block on the GPU, each block's Hessians computed
//! with the blocks before it already quantized) or from a Hessian file of the float model.

use crate::paths::{repo_path, WIKITEXT_VALID};
use crate::progress::Bar;
use crate::quantize::QuantizeArgs;
use anyhow::{bail, Result};
use lutlab_core::files::read_text;
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::model_transforms::LayerwiseSmoothing;
use lutlab_core::hessian_file::HessianFile;
use lutlab_core::quant::hessian::Square;
use lutlab_core::quant::model::{quantize_layer, selected_layers, Calibration, LayerSelection};
use lutlab_core::quant::{Method, QuantizedLayer, QuantizedModel};
use lutlab_core::{LoadedModel, Progress, TextTokenizer};
use std::borrow::Cow;
use lutlab_model::{quantize_sequential, ActivationSettings, Decoder, GpuRounder, HessianSettings};

/// What the Hessian methods quantize: the model (whose inputs give the Hessians), the Fisher
/// diagonal of the weights the quantizers round, and layerwise smoothing's scales, if any.
pub struct Target<'a> {
    pub loaded: &'a LoadedModel,
    pub fisher: Option<&'a FisherDiagonal>,
    pub smoothing: Option<&'a LayerwiseSmoothing>,
}

/// The quantized layers, and with calibration text the seconds of GPTQ's sequential loop alone
/// (from the embedded windows on, the text tokenized and the model uploaded before it: the clock
/// `scripts/bench_gptq_peer.py` keeps for PyTorch's GPTQ).
pub fn run(args: &QuantizeArgs, target: Target, method: &Method, selection: LayerSelection, bar: &mut Bar) -> Result<(QuantizedModel, Option<f64>)> {
    let Target { loaded, fisher, smoothing } = target;
    let weights = &loaded.weights;
    let selected: Vec<String> = selected_layers(weights, selection)?.into_iter().map(|(name, _)| name).collect();
    let n_embd = weights.config.n_embd;
    let rounder = gpu_rounder(args)?;
    // With layerwise smoothing a layer is rounded as `diag(s)·W` against the Hessian of its
    // scaled input, then unscaled.
    let one = |name: &str, h: &Square| -> Result<QuantizedLayer> {
        let linear = weights.linear(name).ok_or_else(|| anyhow::anyhow!("{name}: not a linear of the model"))?;
        let (rounded, h) = match smoothing {
            Some(s) => (s.scale_linear(name, linear), s.scale_hessian(name, h)),
            None => (Cow::Borrowed(linear), Cow::Borrowed(h)),
        };
        let hessian = |n: &str| (n == name).then_some(h.as_ref());
        let sample_weights = |n: &str| fisher.and_then(|f| f.get(n)).map(|t| t.data.as_slice());
        let calibration = Calibration { fisher: fisher.map(|_| &sample_weights as _), hessians: Some(&hessian), rounder: rounder.as_ref().map(|r| r as _), ..Default::default() };
        let layer = quantize_layer(name, &rounded, method, calibration, n_embd)?;
        Ok(match smoothing {
            Some(s) => s.unscale(linear, layer)?,
            None => layer,
        })
    };
    let mut layers = Vec::with_capacity(selected.len());
    if let Some(path) = &args.hessian {
        if args.true_sequential {
            bail!("--true-sequential computes the Hessians as it quantizes: it does not combine with --hessian FILE");
        }
        let file = HessianFile::open(path, &weights.config)?;
        for (i, name) in selected.iter().enumerate() {
            if bar.is_cancelled() {
                return Err(lutlab_core::LoadError::Cancelled.into());
            }
            bar.update(i as u64, selected.len() as u64);
            layers.push(one(name, &file.read(name)?)?);
        }
        return Ok((QuantizedModel { layers }, None));
    }
    let tokens = calibration_tokens(args, &loaded.tokenizer)?;
    let gpu = pollster::block_on(lutlab_model::open_gpu())?;
    gpu.check_fits(weights)?;
    let model = Decoder::new(weights, &gpu.device);
    let settings = settings(args, &model);
    // A step's layers are quantized concurrently: each result is kept with its place in the model.
    let done = std::sync::Mutex::new(Vec::with_capacity(selected.len()));
    let start = std::time::Instant::now();
    pollster::block_on(quantize_sequential(
        &model,
        &tokens,
        settings,
        &|layer| {
            let Some(index) = selected.iter().position(|n| n == layer.name) else {
                // Outside --blocks: the float weights go on unchanged.
                return Ok(None);
            };
            let quantized = one(layer.name, layer.hessian).map_err(|e| lutlab_core::LoadError::InvalidSetting(format!("{e:#}")))?;
            let values = quantized.dequantized.clone();
            done.lock().unwrap_or_else(|e| e.into_inner()).push((index, quantized));
            Ok(Some(values))
        },
        bar,
    ))?;
    let seconds = start.elapsed().as_secs_f64();
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(index, _)| *index);
    layers.extend(done.into_iter().map(|(_, layer)| layer));
    Ok((QuantizedModel { layers }, Some(seconds)))
}

/// With `--gpu`, GPTQ and LDLQ round on the GPU (f32, as GPTQ's own code; the other cases on
/// the CPU, in f64).
pub fn gpu_rounder(args: &QuantizeArgs) -> Result<Option<GpuRounder>> {
    Ok(match args.gpu {
        true => Some(GpuRounder::new(pollster::block_on(lutlab_model::open_gpu())?)),
        false => None,
    })
}

/// The calibration text (`--calibration-data`, else WikiText-2 validation) as token ids.
pub fn calibration_tokens(args: &QuantizeArgs, tokenizer: &TextTokenizer) -> Result<Vec<u32>> {
    let path = args.calibration_data.clone().unwrap_or_else(|| repo_path(WIKITEXT_VALID));
    Ok(tokenizer.encode(&read_text(&path)?)?)
}

/// The sequential loop's windows (`--hessian-samples`, `--hessian-seqlen`) and order
/// (`--true-sequential`) for `model`.
pub fn settings(args: &QuantizeArgs, model: &Decoder) -> HessianSettings {
    let defaults = HessianSettings::for_model(model).windows;
    let windows = ActivationSettings { nsamples: args.hessian_samples, seqlen: args.hessian_seqlen.unwrap_or(defaults.seqlen), ..defaults };
    HessianSettings { windows, true_sequential: args.true_sequential }
}
