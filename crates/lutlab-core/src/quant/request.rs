//! A quantization request in plain words and numbers, as the CLI's flags and the page's form give
//! it (serde), turned into a [`Method`] once the model is known.

use crate::error::{LoadError, Result};
use crate::quant::kmeans::KmeansSettings;
use crate::quant::hessian::{Feedback, RoundingSettings};
use crate::quant::incoherence::IncoherenceSettings;
use crate::quant::model::{HessianGrid, LayerSelection, Method};
use crate::quant::outliers::{range_for_outlier_percent, OutlierSettings};
use crate::quant::uniform::{NumberFormat, ScaleStats, ScaleType, UniformGranularity, UniformSettings};
use crate::weights::ModelWeights;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuantizeRequest {
    /// `kmeans`, `rtn`, or a Hessian method: `gptq`, `ldlq`, `ldlq-rg`, `greedy`.
    pub method: String,
    pub bits: u32,
    /// `tensor`, `channel`, `group`, `group:G` (rtn also `channel-group:G`).
    pub granularity: String,
    /// k-means: dense-and-sparse keeping this percent of weights by range (paper: 0.45).
    pub outlier_percent: Option<f64>,
    /// k-means: SqueezeLLM's range factor directly.
    pub range: Option<f64>,
    /// k-means: top percent of weights by Fisher value kept exactly (paper: 0.05).
    pub sensitive: f64,
    pub seed: u64,
    /// k-means: k-means++ runs per table, the best kept (`None`: the default of 10; sklearn's
    /// `n_init="auto"` with k-means++, as `nuq.py` calls it, is 1).
    pub restarts: Option<usize>,
    /// rtn: `int`, `e4m3`, `e2m1`, ...
    pub format: String,
    pub asym: bool,
    /// rtn: `stats`, `percentile:P`, `mse`, `hqo`.
    pub scale_stats: String,
    /// rtn: `float` or `po2`.
    pub scale_type: String,
    /// Asymmetric uniform grids: integer zero points (GPTQ's quantizer; Brevitas'
    /// `--quantize-weight-zero-point`).
    pub quantize_zero_point: bool,
    /// k-means: seed 000's per-channel scaling.
    pub scaling: bool,
    /// k-means: seed 000's centering (needs the layers' mean inputs from calibration).
    pub centering: bool,
    /// Also quantize the tied token embedding / LM head (`quant::head`). Off by default.
    pub embeddings: bool,
    /// Hessian methods: the grid, `kmeans` or a number format (`int`, `e2m1`, ...; with the rtn
    /// options for scales).
    pub grid: String,
    /// GPTQ/LDLQ: round inputs in order of decreasing `H[k,k]` (on for `ldlq-rg`).
    pub act_order: bool,
    /// Damping as a fraction of the Hessian's mean diagonal (GPTQ: 0.01).
    pub percdamp: f64,
    /// Rows updated together (GPTQ: 128).
    pub blocksize: usize,
    /// Input groups fitted on the original weights before rounding (GPTQ's `--static-groups`).
    pub static_groups: bool,
    /// Greedy passes (`ldlq-rg`, `greedy`; default 1 for those, QuIP's `--npasses`).
    pub npasses: Option<usize>,
    /// QuIP's `--incoh_processing`: `pre_rescale`, `pre_proj` and `qfn` `b` together (qfn b
    /// where the grid is a symmetric int grid per channel).
    pub incoherence: bool,
    /// QuIP's `--pre_rescale`: the diagonal rescaling of inputs by `(H_ii / ‖W_i‖²)^¼`.
    pub pre_rescale: bool,
    /// QuIP's `--pre_proj`: random orthogonal transforms on both sides of each layer.
    pub pre_proj: bool,
    /// QuIP's quantizer function: `a` (the `grid` as configured) or `b` (per channel, ±2.4 RMS).
    pub qfn: String,
    /// Mixed precision: each layer's width chosen from `widths` for the least estimated loss
    /// under this size (`3.5bpw`, `12MB`; `quant::allocate::Budget`). `None`: every layer at
    /// `bits`.
    pub budget: Option<String>,
    /// The candidate widths of a budget (empty: `quant::mixed::DEFAULT_WIDTHS`).
    pub widths: Vec<u32>,
    /// What a budget gives a width to: `layers`, or `channels:N` (each block of N output
    /// channels; `quant::mixed::AllocationUnit`). `None`: layers.
    pub allocate_per: Option<String>,
    /// Widths fixed by rules, `PATTERN=BITS` (`quant::mixed::LayerRule`; llama.cpp's
    /// `--tensor-type`): layers whose name contains PATTERN get BITS, the rest `bits`.
    pub layer_bits: Vec<String>,
    /// Brevitas' `--ln-affine-merge`: each block norm's γ and β folded into the linears after it
    /// before quantizing (`model_transforms::merge_norm_affine`).
    pub ln_affine_merge: bool,
    /// Brevitas' `--weight-equalization`: cross-layer equalization of each value/output and
    /// ReLU or SwiGLU up/down pair (`model_transforms::equalize_weights`).
    pub weight_equalization: bool,
    /// Brevitas' `--bias-corr`: after quantizing, each linear's bias corrected for the mean output
    /// shift of its quantized weights (`quant::bias_correction`).
    pub bias_corr: bool,
    /// Brevitas' `--load-awq`: llm-awq's search results (scales and clipping) applied first
    /// (`awq::AwqResults`), the file's path.
    pub load_awq: Option<String>,
    /// Brevitas' `--act-equalization`: `fused` (SmoothQuant's scales folded into the norms,
    /// `model_transforms::smooth_activations`), or `None`.
    pub act_equalization: Option<String>,
    /// SmoothQuant's α.
    pub alpha: f64,
    /// k-means over vectors of this many consecutive input rows (`quant::vector`); `None`: scalar tables.
    pub vector_dim: Option<usize>,
}

impl Default for QuantizeRequest {
    fn default() -> Self {
        Self {
            method: "kmeans".into(),
            bits: 4,
            granularity: "tensor".into(),
            outlier_percent: None,
            range: None,
            sensitive: 0.0,
            seed: 0,
            restarts: None,
            format: "int".into(),
            asym: false,
            scale_stats: "stats".into(),
            scale_type: "float".into(),
            quantize_zero_point: false,
            scaling: false,
            centering: false,
            embeddings: false,
            grid: "int".into(),
            act_order: false,
            percdamp: 0.01,
            blocksize: 128,
            static_groups: false,
            npasses: None,
            incoherence: false,
            pre_rescale: false,
            pre_proj: false,
            qfn: "a".into(),
            budget: None,
            widths: Vec::new(),
            allocate_per: None,
            layer_bits: Vec::new(),
            ln_affine_merge: false,
            weight_equalization: false,
            bias_corr: false,
            load_awq: None,
            act_equalization: None,
            alpha: 0.5,
            vector_dim: None,
        }
    }
}

impl QuantizeRequest {
    /// The method for `weights`; `has_fisher` says whether sample weights come with it.
    pub fn method(&self, weights: &ModelWeights, has_fisher: bool) -> Result<Method> {
        self.method_with(has_fisher, &|percent| {
            let matrices: Vec<&[f32]> = weights.linears().map(|(_, l)| l.weight.data.as_slice()).collect();
            range_for_outlier_percent(&matrices, percent)
        })
    }

    /// [`Self::method`] for a model that is never in memory whole (streamed): an outlier percent,
    /// a quantile over every weight of the model, is refused in favour of SqueezeLLM's `range`.
    pub fn method_streamed(&self, has_fisher: bool) -> Result<Method> {
        self.method_with(has_fisher, &|_| {
            Err(invalid("an outlier percent is a quantile over every weight of the model, which a streamed model never holds: give the outlier range instead"))
        })
    }

    /// `percent_range` turns an outlier percent into SqueezeLLM's range factor.
    fn method_with(&self, has_fisher: bool, percent_range: &dyn Fn(f64) -> Result<f64>) -> Result<Method> {
        match self.method.as_str() {
            "kmeans" => {
                let (settings, outliers) = self.kmeans_parts(has_fisher, percent_range)?;
                Ok(Method::Kmeans { settings, outliers, scaling: self.scaling })
            }
            "rtn" if self.scaling || self.centering => Err(invalid("scaling and centering are seed 000's k-means transforms: use method kmeans")),
            "rtn" if self.restarts.is_some() => Err(invalid("restarts are k-means++ runs: round-to-nearest has none")),
            "rtn" => Ok(Method::Uniform(self.uniform_settings(&self.format)?)),
            "gptq" | "ldlq" | "ldlq-rg" | "greedy" | "ldlbal-admm" => self.hessian_method(has_fisher, percent_range),
            other => Err(invalid(&format!("method `{other}`: use kmeans, rtn, gptq, ldlq, ldlq-rg, greedy or ldlbal-admm"))),
        }
    }

    fn hessian_method(&self, has_fisher: bool, percent_range: &dyn Fn(f64) -> Result<f64>) -> Result<Method> {
        if self.scaling || self.centering {
            return Err(invalid("scaling and centering are seed 000's k-means transforms: they do not combine with Hessian methods"));
        }
        if self.embeddings {
            return Err(invalid("the embeddings have no Hessian here (their input is a token id): quantize them with kmeans or rtn"));
        }
        let (feedback, act_order, passes) = match self.method.as_str() {
            "gptq" => (Feedback::Gptq, self.act_order, 0),
            "ldlq" => (Feedback::Ldlq, self.act_order, 0),
            "ldlq-rg" => (Feedback::Ldlq, true, self.npasses.unwrap_or(1)),
            // Its own order (increasing H_kk, as QuIP's) and triangle-greedy passes.
            "ldlbal-admm" => (Feedback::LdlbalAdmm, false, self.npasses.unwrap_or(1)),
            _ => (Feedback::Nearest, self.act_order, self.npasses.unwrap_or(1)),
        };
        if self.npasses.is_some() && matches!(self.method.as_str(), "gptq" | "ldlq") {
            return Err(invalid("greedy passes belong to ldlq-rg and greedy"));
        }
        let rounding = RoundingSettings { feedback, act_order, greedy_passes: passes, blocksize: self.blocksize, percdamp: self.percdamp };
        let (rescale, project) = (self.incoherence || self.pre_rescale, self.incoherence || self.pre_proj);
        let incoherence = (rescale || project).then_some(IncoherenceSettings { rescale, project, seed: self.seed });
        let qfn_b = match self.qfn.as_str() {
            // `--incoherence` brings qfn b where it applies (int grid per channel, symmetric);
            // with another grid or granularity the grid stays as configured.
            "a" => self.incoherence && self.grid == "int" && matches!(self.granularity.as_str(), "channel" | "tensor") && !self.asym,
            "b" => true,
            other => return Err(invalid(&format!("qfn `{other}`: use a (the grid as configured) or b (QuIP's ±2.4·RMS grid per channel)"))),
        };
        let rms_granularity = matches!(self.granularity.as_str(), "channel" | "tensor");
        if qfn_b && (self.grid != "int" || !rms_granularity || self.asym) {
            return Err(invalid(
                "qfn b is QuIP's symmetric grid over ±2.4 RMS of the matrix (granularity tensor, as QuIP's code) or of each \
                 output channel (channel): use grid int, one of those granularities, no --asym",
            ));
        }
        let grid = if qfn_b {
            HessianGrid::Rms { bits: self.bits, per_channel: self.granularity == "channel" }
        } else if self.grid == "kmeans" {
            if self.vector_dim.is_some_and(|d| d > 1) {
                return Err(invalid("vector tables (--vector-dim) are fitted by k-means alone: a Hessian method rounds to scalar grids"));
            }
            let (settings, outliers) = self.kmeans_parts(has_fisher, percent_range)?;
            HessianGrid::Kmeans { settings, outliers }
        } else {
            if self.static_groups && !self.granularity.starts_with("group") {
                return Err(invalid("static groups need a group granularity (group:G)"));
            }
            HessianGrid::Uniform { settings: self.uniform_settings(&self.grid)?, static_groups: self.static_groups }
        };
        Ok(Method::Hessian { rounding, grid, incoherence })
    }

    /// The k-means settings and the dense-and-sparse outliers asked for (k-means, or a Hessian
    /// method's k-means grid).
    fn kmeans_parts(&self, has_fisher: bool, percent_range: &dyn Fn(f64) -> Result<f64>) -> Result<(KmeansSettings, Option<OutlierSettings>)> {
        let defaults = KmeansSettings::default();
        let restarts = match self.restarts {
            Some(0) => return Err(invalid("restarts must be at least 1")),
            Some(n) => n,
            None => defaults.restarts,
        };
        let vector_dim = self.vector_dim.unwrap_or(1);
        let settings = KmeansSettings { bits: self.bits, granularity: self.granularity.parse()?, seed: self.seed, restarts, vector_dim, ..defaults };
        let range = match (self.range, self.outlier_percent) {
            (Some(_), Some(_)) => return Err(invalid("give the outlier range or the outlier percent, not both")),
            (Some(range), None) => Some(range),
            (None, Some(percent)) => Some(percent_range(percent)?),
            (None, None) => None,
        };
        if self.sensitive > 0.0 && !has_fisher {
            return Err(invalid("sensitive weights are chosen by their Fisher value: compute or load Fisher first"));
        }
        let outliers = (range.is_some() || self.sensitive > 0.0).then_some(OutlierSettings { range, sensitivity: self.sensitive });
        if vector_dim > 1 {
            settings.vector_settings()?;
            if outliers.is_some() || self.scaling || self.centering {
                return Err(invalid("vector tables (--vector-dim) do not combine with dense-and-sparse outliers or seed 000's scaling and centering yet"));
            }
        }
        Ok((settings, outliers))
    }

    /// The uniform grid asked for, in number format `format` (rtn's `format`, a Hessian method's
    /// `grid`).
    fn uniform_settings(&self, format: &str) -> Result<UniformSettings> {
        Ok(UniformSettings {
            bits: self.bits,
            format: format.parse::<NumberFormat>()?,
            symmetric: !self.asym,
            granularity: self.granularity.parse::<UniformGranularity>()?,
            scale_stats: self.scale_stats.parse::<ScaleStats>()?,
            scale_type: self.scale_type.parse::<ScaleType>()?,
            integer_zero_point: self.quantize_zero_point,
        })
    }

    /// The weights to quantize: the linears of `blocks` (all by default), and the embeddings
    /// when asked.
    pub fn selection(&self, blocks: Option<std::ops::Range<usize>>) -> LayerSelection {
        LayerSelection { blocks, embeddings: self.embeddings }
    }

    /// "kmeans 4-bit tensor", "rtn int 4-bit channel asym", for reports and file names; ends in
    /// " +embeddings" when the embeddings are quantized too.
    pub fn label(&self, has_fisher: bool) -> String {
        let embeddings = if self.embeddings { " +embeddings" } else { "" };
        let per = match self.allocate_per.as_deref() {
            Some(unit) if unit.starts_with("channels") => format!(" per {unit}"),
            _ => String::new(),
        };
        let budget = self.budget.as_ref().map_or(String::new(), |b| format!(" under {b}{per}"));
        let rules = if self.layer_bits.is_empty() { String::new() } else { format!(" ({})", self.layer_bits.join(", ")) };
        let merged = match (self.ln_affine_merge, self.weight_equalization) {
            (true, true) => " +ln-affine-merge +weight-equalization",
            (true, false) => " +ln-affine-merge",
            (false, true) => " +weight-equalization",
            (false, false) => "",
        };
        let smoothed = match &self.act_equalization {
            Some(kind) => format!(" +smoothquant {kind} α={}", self.alpha),
            None => String::new(),
        };
        let corrected = if self.bias_corr { " +bias-corr" } else { "" };
        let awq = if self.load_awq.is_some() { " +awq" } else { "" };
        format!("{}{awq}{merged}{smoothed}{corrected}{embeddings}{budget}{rules}", self.method_label(has_fisher))
    }

    /// The rules of `layer_bits`.
    pub fn layer_rules(&self) -> Result<Vec<crate::quant::mixed::LayerRule>> {
        self.layer_bits.iter().map(|rule| rule.parse()).collect()
    }

    /// The widths a mixed-precision request quantizes at: a budget's candidates, or `bits` and
    /// every rule's bits.
    pub fn candidate_widths(&self) -> Result<Vec<u32>> {
        if self.budget.is_some() && !self.layer_bits.is_empty() {
            return Err(invalid("give a budget (the widths are chosen) or layer rules (the widths are given), not both"));
        }
        if !self.layer_bits.is_empty() {
            let mut widths: Vec<u32> = self.layer_rules()?.iter().map(|r| r.bits).chain([self.bits]).collect();
            widths.sort_unstable();
            widths.dedup();
            return Ok(widths);
        }
        Ok(if self.widths.is_empty() { crate::quant::mixed::DEFAULT_WIDTHS.to_vec() } else { self.widths.clone() })
    }

    /// What a budget allocates to (`allocate_per`; a budget's option only).
    pub fn allocation_unit(&self) -> Result<crate::quant::mixed::AllocationUnit> {
        match &self.allocate_per {
            None => Ok(crate::quant::mixed::AllocationUnit::Layer),
            Some(_) if self.budget.is_none() => Err(invalid("--allocate-per says what a budget allocates to: give --budget")),
            Some(text) => text.parse(),
        }
    }

    /// Whether layers get different widths (a budget or layer rules).
    pub fn is_mixed(&self) -> bool {
        self.budget.is_some() || !self.layer_bits.is_empty()
    }

    /// "4-bit", or "mixed 2–8-bit" under a budget.
    fn bits_label(&self) -> String {
        match self.budget {
            Some(_) => {
                let widths = self.candidate_widths().unwrap_or_default();
                let (lo, hi) = (widths.iter().min().copied().unwrap_or(self.bits), widths.iter().max().copied().unwrap_or(self.bits));
                format!("mixed {lo}–{hi}-bit")
            }
            None => format!("{}-bit", self.bits),
        }
    }

    fn method_label(&self, has_fisher: bool) -> String {
        match self.method.as_str() {
            "gptq" | "ldlq" | "ldlq-rg" | "greedy" | "ldlbal-admm" => {
                let grid = if self.grid == "kmeans" {
                    let weighted = if has_fisher { "Fisher-weighted " } else { "" };
                    format!("{weighted}kmeans")
                } else {
                    format!("{} {}{}", self.grid, if self.asym { "asym" } else { "sym" }, self.zero_point_label())
                };
                let order = if self.act_order && self.method != "ldlq-rg" { " act-order" } else { "" };
                let fixed = if self.static_groups { " static-groups" } else { "" };
                let processing = match (self.incoherence, self.pre_rescale, self.pre_proj) {
                    (true, _, _) => " +incoherence".to_string(),
                    (false, rescale, proj) => format!("{}{}", if rescale { " +rescale" } else { "" }, if proj { " +proj" } else { "" }),
                };
                let qfn = if self.qfn == "b" && !self.incoherence { " qfn-b" } else { "" };
                format!("{}{processing} {grid}{qfn} {} {}{order}{fixed}", self.method, self.bits_label(), self.granularity)
            }
            "rtn" => {
                // Scale estimation and type only where they differ from the defaults, so that
                // each setting gets its own line in the page's perplexity-vs-bits plot.
                let stats = if self.scale_stats == "stats" { String::new() } else { format!(" {}", self.scale_stats) };
                let po2 = if self.scale_type == "po2" { " po2" } else { "" };
                let symmetry = if self.asym { "asym" } else { "sym" };
                let zero_point = self.zero_point_label();
                format!("rtn {} {} {} {symmetry}{zero_point}{stats}{po2}", self.format, self.bits_label(), self.granularity)
            }
            _ => {
                let weighted = if has_fisher { " Fisher-weighted" } else { "" };
                let sparse = match (self.outlier_percent, self.range) {
                    (Some(p), _) => format!(" +{p}% outliers"),
                    (_, Some(r)) => format!(" +outliers range {r}"),
                    _ => String::new(),
                };
                let scaled = if self.scaling { " scaled" } else { "" };
                let centered = if self.centering { " centered" } else { "" };
                let vectors = match self.vector_dim {
                    Some(d) if d > 1 => format!(" vectors of {d}"),
                    _ => String::new(),
                };
                format!("kmeans{weighted}{scaled}{centered}{vectors} {} {}{sparse}", self.bits_label(), self.granularity)
            }
        }
    }
}

impl QuantizeRequest {
    /// " int-zp" when asymmetric zero points are rounded to integers.
    fn zero_point_label(&self) -> &'static str {
        if self.asym && self.quantize_zero_point { " int-zp" } else { "" }
    }
}

fn invalid(reason: &str) -> LoadError {
    LoadError::InvalidSetting(reason.to_string())
}
