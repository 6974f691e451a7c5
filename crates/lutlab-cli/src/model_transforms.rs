//! `lutlab quantize --ln-affine-merge --weight-equalization --act-equalization fused|layerwise`:
//! the float model transformed before quantizing (`lutlab_core::model_transforms`), in this order
//! (norm affine merged, weights equalized, then SmoothQuant's scales from the calibration text's
//! activation ranges), with a Fisher diagonal of the original weights carried over to the
//! transformed ones. Layerwise smoothing leaves the model as it is and returns its scales, which
//! the quantizers apply to the weights they round (`quantize.rs`).

use crate::paths::{repo_path, WIKITEXT_VALID};
use crate::progress::Bar;
use crate::quantize::QuantizeArgs;
use anyhow::{bail, Result};
use lutlab_core::awq::AwqResults;
use lutlab_core::files::{read_file, read_text};
use lutlab_core::fisher_file::FisherDiagonal;
use lutlab_core::model_transforms::{act_equalize, equalize_weights, merge_norm_affine, scale_fisher_columns, scale_fisher_rows, ActEqualization, LayerwiseSmoothing};
use lutlab_core::quant::bias_correction::correct_biases;
use lutlab_core::quant::QuantizedModel;
use lutlab_core::{LoadedModel, ModelWeights, TextTokenizer};
use lutlab_model::{linear_input_stats, open_gpu, ActivationSettings, Decoder, InputStats};

/// Applies the transforms `args` ask for to `loaded`, and to `fisher` (of the original weights);
/// with `--act-equalization layerwise`, returns the scales the quantizers apply.
pub fn apply(args: &QuantizeArgs, loaded: &mut LoadedModel, mut fisher: Option<&mut FisherDiagonal>) -> Result<Option<LayerwiseSmoothing>> {
    let smoothing = args.act_equalization.as_deref().map(str::parse::<ActEqualization>).transpose()?;
    if smoothing == Some(ActEqualization::Layerwise) && args.centering {
        bail!("--act-equalization layerwise scales each linear's input, which --centering measures unscaled: give one");
    }
    if (args.ln_affine_merge || args.weight_equalization || smoothing.is_some() || args.load_awq.is_some()) && args.hessian.is_some() {
        bail!("--load-awq, --ln-affine-merge, --weight-equalization and --act-equalization change the layers' inputs: a --hessian file of the original model does not apply (leave it out to compute the Hessians of the transformed model)");
    }
    // AWQ's results were searched on the original model: they go first.
    if let Some(path) = &args.load_awq {
        let results = AwqResults::from_safetensors(&path.display().to_string(), &read_file(path)?)?;
        let (rows, columns) = results.apply(&mut loaded.weights)?;
        if let Some(fisher) = fisher.as_deref_mut() {
            scale_fisher_rows(fisher, &rows);
            scale_fisher_columns(fisher, &columns);
        }
    }
    if args.ln_affine_merge {
        let rows = merge_norm_affine(&mut loaded.weights)?;
        if let Some(fisher) = fisher.as_deref_mut() {
            scale_fisher_rows(fisher, &rows);
        }
    }
    if args.weight_equalization {
        let (rows, columns) = equalize_weights(&mut loaded.weights)?;
        if let Some(fisher) = fisher.as_deref_mut() {
            scale_fisher_rows(fisher, &rows);
            scale_fisher_columns(fisher, &columns);
        }
    }
    let Some(kind) = smoothing else { return Ok(None) };
    let ranges = input_stats(args, loaded, "activation ranges")?.absmax;
    Ok(act_equalize(kind, &mut loaded.weights, &ranges, args.alpha, fisher)?)
}

/// Each linear layer's input statistics (mean, largest magnitude) over random windows of the
/// calibration text, from `loaded` as it is now, on the GPU.
pub fn input_stats(args: &QuantizeArgs, loaded: &LoadedModel, what: &str) -> Result<InputStats> {
    weights_input_stats(args, &loaded.weights, &loaded.tokenizer, what)
}

/// [`input_stats`] of `weights`.
fn weights_input_stats(args: &QuantizeArgs, weights: &ModelWeights, tokenizer: &TextTokenizer, what: &str) -> Result<InputStats> {
    let path = args.calibration_data.clone().unwrap_or_else(|| repo_path(WIKITEXT_VALID));
    let tokens = tokenizer.encode(&read_text(&path)?)?;
    let gpu = pollster::block_on(open_gpu())?;
    gpu.check_fits(weights)?;
    let model = Decoder::new(weights, &gpu.device);
    let settings = ActivationSettings { nsamples: args.calibration_samples, ..ActivationSettings::for_model(&model) };
    let mut bar = Bar::new(what, "tokens", args.json);
    let stats = pollster::block_on(linear_input_stats(&model, &tokens, settings, &mut bar))?;
    bar.finish();
    Ok(stats)
}

/// `--bias-corr`: the float model with each linear's bias corrected for the mean output shift
/// its quantized weights cause (`quant::bias_correction`), the mean inputs measured on the GPU in
/// the weight-quantized model over windows of the calibration text.
pub fn bias_corrected(args: &QuantizeArgs, loaded: &LoadedModel, quantized: &QuantizedModel) -> Result<ModelWeights> {
    let dequantized = quantized.apply(&loaded.weights);
    let means = weights_input_stats(args, &dequantized, &loaded.tokenizer, "bias correction")?.means;
    let mut corrected = loaded.weights.clone();
    correct_biases(&mut corrected, &dequantized, &means)?;
    Ok(corrected)
}
