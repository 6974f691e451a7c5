//! The `--input-*` options (Brevitas' names, seed 002) of every command that evaluates: each
//! linear's input fake-quantized during evaluation (`lutlab_core::quant::inputs`), static scales
//! calibrated on text (or read from a file written earlier with `--save-input-scales`).

use crate::paths::{repo_path, WIKITEXT_VALID};
use crate::progress::Bar;
use anyhow::{bail, Context, Result};
use clap::Args;
use lutlab_core::files::read_text;
use lutlab_core::quant::inputs::{InputMultipliers, InputParams, InputQuantRequest, InputQuantSettings, InputQuantization, InputScaling};
use lutlab_core::{ModelConfig, TextTokenizer};
use lutlab_model::{calibrate_inputs, ActivationSettings, Decoder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Clone, Debug, Default)]
pub struct InputQuantArgs {
    /// Quantize every linear's input to this many bits (2 to 8); off when absent.
    #[arg(long, alias = "input-bits")]
    pub input_bit_width: Option<u32>,
    /// int, or eXmY (e4m3, e5m2, ...; optionally ocp_ or fnuz_) with X + Y = bits − 1.
    #[arg(long, default_value = "int")]
    pub input_quant_format: String,
    /// stats (static: the 99.999th percentile; dynamic: absmax/min-max), percentile:P
    /// (static) or mse.
    #[arg(long, default_value = "stats")]
    pub input_param_method: String,
    /// float_scale or po2_scale.
    #[arg(long, default_value = "float_scale")]
    pub input_scale_precision: String,
    /// static (calibrated on --act-calibration-data), dynamic (from each input) or no_scale.
    #[arg(long, default_value = "static")]
    pub input_scale_type: String,
    /// sym or asym.
    #[arg(long, default_value = "asym")]
    pub input_quant_type: String,
    /// per_tensor, per_row (each token) or per_group (dynamic only for the last two).
    #[arg(long, default_value = "per_tensor")]
    pub input_quant_granularity: String,
    /// Channels per group with per_group.
    #[arg(long, default_value_t = 64)]
    pub input_group_size: usize,
    /// Round input zero points to integers.
    #[arg(long)]
    pub quantize_input_zero_point: bool,
    /// Also quantize the LM head's input.
    #[arg(long)]
    pub quantize_last_layer: bool,
    /// Calibrate static input scales (Brevitas' flag; static scales are always calibrated,
    /// unless read with --input-scales).
    #[arg(long)]
    pub act_calibration: bool,
    /// Text for the static input scales (default: WikiText-2 validation).
    #[arg(long)]
    pub act_calibration_data: Option<PathBuf>,
    /// Random windows of that text (Brevitas' --nsamples: 128).
    #[arg(long, default_value_t = 128)]
    pub act_calibration_samples: usize,
    /// Read static input scales from this file instead of calibrating.
    #[arg(long)]
    pub input_scales: Option<PathBuf>,
    /// Write the calibrated static input scales to this file (JSON).
    #[arg(long)]
    pub save_input_scales: Option<PathBuf>,
}

/// The file `--save-input-scales` writes and `--input-scales` reads.
#[derive(Serialize, Deserialize)]
struct ScalesFile {
    settings: String,
    layers: BTreeMap<String, InputParams>,
}

impl InputQuantArgs {
    /// The settings, or `None` without `--input-bit-width`. Contradictions are named.
    pub fn settings(&self) -> Result<Option<InputQuantSettings>> {
        let Some(bits) = self.input_bit_width else {
            if self.act_calibration || self.input_scales.is_some() || self.save_input_scales.is_some() || self.quantize_last_layer {
                bail!("--act-calibration, --input-scales, --save-input-scales and --quantize-last-layer need --input-bit-width");
            }
            return Ok(None);
        };
        let settings = InputQuantRequest {
            bits,
            format: self.input_quant_format.clone(),
            quant_type: self.input_quant_type.clone(),
            scale_type: self.input_scale_type.clone(),
            granularity: self.input_quant_granularity.clone(),
            group_size: self.input_group_size,
            param_method: self.input_param_method.clone(),
            scale_precision: self.input_scale_precision.clone(),
            quantize_zero_point: self.quantize_input_zero_point,
            quantize_last_layer: self.quantize_last_layer,
        }
        .settings()?;
        if settings.scaling != InputScaling::Static {
            for (given, flag) in [
                (self.act_calibration, "--act-calibration"),
                (self.input_scales.is_some(), "--input-scales"),
                (self.save_input_scales.is_some(), "--save-input-scales"),
                (self.act_calibration_data.is_some(), "--act-calibration-data"),
            ] {
                if given {
                    bail!("{flag} is for static input scales; --input-scale-type {} has none to calibrate", self.input_scale_type);
                }
            }
        }
        if self.input_scales.is_some() && self.act_calibration {
            bail!("--input-scales reads static scales calibrated earlier; --act-calibration would calibrate them again: give one");
        }
        Ok(Some(settings))
    }

    /// `model` with its inputs quantized as asked (static scales calibrated or read now); the
    /// settings' label for reports.
    pub fn apply(&self, model: &mut Decoder, tokenizer: &TextTokenizer, quiet: bool) -> Result<Option<String>> {
        let multipliers = model.input_multipliers.clone();
        let Some(q) = self.quantization(&model.config, multipliers, |settings, m| self.calibrate(model, tokenizer, settings, m, quiet))? else { return Ok(None) };
        let label = q.settings.label();
        model.quantize_inputs(q)?;
        Ok(Some(label))
    }

    /// The input quantization asked for, or `None` without `--input-bit-width`, of a model whose
    /// layers have `multipliers`. Static scales are read from `--input-scales` or made by
    /// `calibrate` (the only step that needs a model on the GPU), and saved with
    /// `--save-input-scales`.
    pub fn quantization(
        &self,
        config: &ModelConfig,
        multipliers: InputMultipliers,
        calibrate: impl FnOnce(&InputQuantSettings, &InputMultipliers) -> Result<BTreeMap<String, InputParams>>,
    ) -> Result<Option<InputQuantization>> {
        let Some(settings) = self.settings()? else { return Ok(None) };
        let statics = match settings.scaling {
            InputScaling::Static => match &self.input_scales {
                Some(path) => read_scales(path, config)?,
                None => calibrate(&settings, &multipliers)?,
            },
            InputScaling::Dynamic | InputScaling::NoScale => BTreeMap::new(),
        };
        if let Some(path) = &self.save_input_scales {
            let file = ScalesFile { settings: settings.label(), layers: statics.clone() };
            std::fs::write(path, serde_json::to_string_pretty(&file)?).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Some(InputQuantization { settings, statics, multipliers }))
    }

    /// Static scales calibrated on the model (on the GPU) over the calibration text.
    pub fn calibrate(
        &self,
        model: &Decoder,
        tokenizer: &TextTokenizer,
        settings: &InputQuantSettings,
        multipliers: &InputMultipliers,
        quiet: bool,
    ) -> Result<BTreeMap<String, InputParams>> {
        let path = self.act_calibration_data.clone().unwrap_or_else(|| repo_path(WIKITEXT_VALID));
        let tokens = tokenizer.encode(&read_text(&path)?)?;
        let act = ActivationSettings { nsamples: self.act_calibration_samples, ..ActivationSettings::for_model(model) };
        let mut bar = Bar::new("input scales", "blocks", quiet);
        let statics = pollster::block_on(calibrate_inputs(model, &tokens, act, settings, multipliers, &mut bar))
            .with_context(|| format!("calibrating static input scales on {}", path.display()))?;
        bar.finish();
        Ok(statics)
    }
}

/// Static scales from a file, checked against the model's layers (a file made for another model
/// names layers this one lacks, or lacks some of its).
fn read_scales(path: &std::path::Path, config: &ModelConfig) -> Result<BTreeMap<String, InputParams>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ScalesFile = serde_json::from_str(&text).with_context(|| format!("{}: not an input-scales file (--save-input-scales writes one)", path.display()))?;
    check_layers(&path.display().to_string(), &file.layers, config)?;
    Ok(file.layers)
}

fn check_layers(what: &str, layers: &BTreeMap<String, InputParams>, config: &ModelConfig) -> Result<()> {
    let names: Vec<String> = config.linear_names().into_iter().map(|(n, _)| n).collect();
    if let Some(extra) = layers.keys().find(|k| !names.contains(k) && k.as_str() != lutlab_core::quant::head::HEAD) {
        bail!("{what}: scales for layer `{extra}`, which this {} model does not have: the file was calibrated on another model", config.model_type);
    }
    if let Some((name, p)) = layers.iter().find(|(_, p)| !(p.scale.is_normal() && p.scale > 0.0 && p.zero_point.is_finite())) {
        bail!("{what}: layer `{name}` has scale {} and zero point {}: not a usable quantizer", p.scale, p.zero_point);
    }
    Ok(())
}

/// What `export --dequantized` writes into `config.json` beside the model's own fields.
#[derive(Serialize, Deserialize)]
pub struct RecordedInputs {
    pub settings: InputQuantRequest,
    /// The settings' label, for people reading the file.
    #[serde(default)]
    pub label: String,
    /// Static scales per layer (empty for dynamic or no-scale inputs).
    #[serde(default)]
    pub layers: BTreeMap<String, InputParams>,
    /// Per layer, the factors its input is multiplied by before it is quantized (layerwise
    /// SmoothQuant's `1/s`); the checkpoint's weights are the layer's `diag(m)·W` already.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub multipliers: InputMultipliers,
}

impl RecordedInputs {
    pub fn of(q: &InputQuantization) -> Self {
        Self { settings: q.settings.request(), label: q.settings.label(), layers: q.statics.clone(), multipliers: q.multipliers.clone() }
    }
}

/// The input quantization recorded in `model_dir/config.json` (`input_quantization`), if any,
/// checked against `config`'s layers.
pub fn recorded_input_quantization(model_dir: &std::path::Path, config: &ModelConfig) -> Result<Option<InputQuantization>> {
    let path = model_dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(recorded) = json.get("input_quantization") else { return Ok(None) };
    let what = format!("{}: input_quantization", path.display());
    let recorded: RecordedInputs = serde_json::from_value(recorded.clone()).with_context(|| what.clone())?;
    let settings = recorded.settings.settings().with_context(|| what.clone())?;
    check_layers(&what, &recorded.layers, config)?;
    let q = InputQuantization { settings, statics: recorded.layers, multipliers: recorded.multipliers };
    for (name, spec) in config.linear_names() {
        q.multiplier(&name, spec.n_in).with_context(|| what.clone())?;
    }
    Ok(Some(q))
}
