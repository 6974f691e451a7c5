//! The page's handle on lutlab: one GPU, at most one loaded model, one cancel flag.

use crate::js_files::model_files;
use crate::progress::JsProgress;
use lutlab_core::fisher_file::{check_diagonal_finite, FisherDiagonal};
use lutlab_core::quant::model::{quantize_layer, selected_layers, Calibration, InputMeans, Method, QuantizedLayer, SampleWeights};
use lutlab_gpu::quantize_layer_gpu;
use lutlab_core::quant::{QuantizeRequest, QuantizedModel};
use lutlab_core::quant::allocate::Budget;
use lutlab_core::quant::mixed::{candidates, AllocationReport, AllocationUnit, Candidates};
use lutlab_core::quant::inputs::{InputQuantRequest, InputQuantization, InputScaling};
use lutlab_core::model_transforms::{act_equalize, layer_smoothing_scales, scale_fisher_rows, ActEqualization, LayerwiseSmoothing};
use lutlab_core::packed_file::{PackedMeta, PackedModel, TableDtype};
use lutlab_core::packed_size::PackedSizes;
use lutlab_core::{LoadError, ModelConfig, ModelWeights, LoadedModel, Progress, TextTokenizer};
use lutlab_core::hessian_file::hessian_key;
use lutlab_core::perplexity::strided_windows;
use lutlab_core::quant::hessian::Square;
use lutlab_model::{calibrate_inputs, fisher, hessians, linear_input_stats, open_gpu, perplexity, ActivationSettings, EvalSettings, FisherSettings, Decoder, Gpu, HessianSettings, ModelError};
use std::collections::HashMap;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// A model on the GPU with its tokenizer and, unless it came from a packed file, the host weights
/// it came from (the quantizers read them); and the latest quantized version of it.
pub(crate) struct Session {
    name: String,
    model: Decoder,
    tokenizer: TextTokenizer,
    pub(crate) weights: Option<ModelWeights>,
    /// Bytes of the safetensors file(s) the model was loaded from (a packed file's size is set
    /// beside it); `None` for a packed file opened on its own.
    original_bytes: Option<u64>,
    pub(crate) quantized: RefCell<Option<Rc<Quantized>>>,
    /// The Fisher diagonal computed here or loaded from a file, for weighted quantization.
    pub(crate) fisher: RefCell<Option<Rc<FisherDiagonal>>>,
    /// Each linear layer's mean input on calibration text, for seed 000's centering.
    pub(crate) input_means: RefCell<Option<Rc<InputMeans>>>,
    /// Each linear layer's largest input per channel on the same windows (SmoothQuant's picture).
    pub(crate) input_ranges: RefCell<Option<Rc<InputMeans>>>,
    /// Each distinct linear input's Hessian (by its first linear's name), for GPTQ-style methods.
    pub(crate) hessians: RefCell<Option<Rc<HashMap<String, Square>>>>,
    /// The latest size-budget quantization's candidates (every layer at every width), so the
    /// budget slider re-allocates without quantizing again.
    pub(crate) candidates: RefCell<Option<Rc<Candidates>>>,
}

/// A quantized model: on the GPU (packed, through the LUT kernels, when every layer is a LUT)
/// and, when packed, the file's content for download.
pub(crate) struct Quantized {
    model: Decoder,
    packed: Option<PackedModel>,
    /// The packed file, built once when quantizing (its size is reported, then it is what the
    /// download saves); `None` for a file opened from disk, rebuilt if downloaded again.
    file: Option<Vec<u8>>,
    pub(crate) label: String,
    /// Each layer's result (for the pictures) and the method that made them (for the bit
    /// slider); empty and `None` for a packed file opened without its original weights.
    pub(crate) layers: Vec<QuantizedLayer>,
    pub(crate) method: Option<Method>,
    /// Whether the method was weighted by the session's Fisher diagonal.
    pub(crate) fisher_weighted: bool,
}

impl Session {
    fn new(name: String, model: Decoder, tokenizer: TextTokenizer, weights: Option<ModelWeights>, original_bytes: Option<u64>) -> Self {
        Self {
            name,
            model,
            tokenizer,
            weights,
            original_bytes,
            quantized: RefCell::default(),
            fisher: RefCell::default(),
            input_means: RefCell::default(),
            input_ranges: RefCell::default(),
            hessians: RefCell::default(),
            candidates: RefCell::default(),
        }
    }

    /// The host weights, which a packed file does not have.
    pub(crate) fn weights(&self) -> Result<&ModelWeights, JsError> {
        self.weights.as_ref().ok_or_else(|| {
            JsError::new("this is a packed file, which holds only its quantized form: load the original model to compute Fisher information or quantize")
        })
    }
}

#[wasm_bindgen]
pub struct Lab {
    pub(crate) gpu: Gpu,
    session: Rc<RefCell<Option<Rc<Session>>>>,
    cancelled: Rc<Cell<bool>>,
}

#[derive(Serialize)]
struct ModelSummary {
    /// `gpt2`, `opt`, `llama`, ...
    model_type: String,
    n_layer: usize,
    n_head: usize,
    n_kv_head: usize,
    n_embd: usize,
    n_positions: usize,
    vocab_size: usize,
    parameters: usize,
    /// For a packed file: its method and sizes.
    packed: Option<PackedSummary>,
}

impl ModelSummary {
    fn new(config: &ModelConfig, packed: Option<PackedSummary>) -> Self {
        Self {
            model_type: config.model_type.clone(),
            n_layer: config.n_layer,
            n_head: config.n_head,
            n_kv_head: config.n_kv_head,
            n_embd: config.n_embd,
            n_positions: config.n_positions,
            vocab_size: config.vocab_size,
            parameters: config.parameter_count(),
            packed,
        }
    }
}

/// Sizes of a packed model: the whole file beside the original checkpoint's file(s), and its
/// quantized layers as stored and as f16 (the usual comparison), with what their bits per
/// weight are made of (the same figures as `lutlab quantize`).
#[derive(Serialize)]
struct PackedSummary {
    method: String,
    /// The quantized layers' bits per weight, tables, scales and outliers included.
    bits_per_weight: f64,
    /// The quantized layers' tensors.
    packed_bytes: usize,
    /// The quantized layers' weights as dense f16.
    f16_bytes: usize,
    compression: f64,
    /// The whole packed file (what the download saves).
    file_bytes: usize,
    /// The dense tensors in the file (embeddings, norms, biases, layers left unquantized).
    dense_bytes: usize,
    /// The safetensors file(s) the model was loaded from, when known.
    original_bytes: Option<u64>,
    /// One line: what the bits per weight are made of.
    explanation: String,
}

impl PackedSummary {
    fn of(packed: &PackedModel, file_bytes: usize, original_bytes: Option<u64>) -> Self {
        let sizes = PackedSizes::of(packed, file_bytes, original_bytes);
        let f16_bytes = packed.f16_bytes_of_packed_layers();
        Self {
            method: packed.meta.method.clone(),
            bits_per_weight: sizes.bits_per_weight,
            packed_bytes: sizes.layer_bytes,
            f16_bytes,
            compression: f16_bytes as f64 / sizes.layer_bytes.max(1) as f64,
            file_bytes,
            dense_bytes: sizes.dense_bytes,
            original_bytes,
            explanation: sizes.explanation,
        }
    }
}

#[derive(Serialize)]
struct PerplexityReport {
    /// The input quantization evaluated with, if any.
    inputs: Option<String>,
    perplexity: f64,
    nll_sum: f64,
    tokens: usize,
    scored: usize,
    max_length: usize,
    stride: usize,
    seconds: f64,
    tokens_per_s: f64,
}

#[derive(Serialize)]
struct FisherReport {
    nsamples: usize,
    seqlen: usize,
    seed: u64,
    mean_loss: Option<f64>,
    seconds: f64,
    tokens_per_s: f64,
}

#[derive(Serialize)]
struct LayerReport {
    name: String,
    mse: f64,
    outliers: usize,
    bits_per_weight: f64,
    /// `tr(ΔW H ΔWᵀ)` when the session has Hessians.
    proxy_loss: Option<f64>,
}

#[derive(Serialize)]
struct QuantizeReport {
    label: String,
    bits_per_weight: f64,
    seconds: f64,
    layers: Vec<LayerReport>,
    /// Present when the result is packed (every layer a LUT) and runs through the LUT kernels.
    packed: Option<PackedSummary>,
    /// Under a size budget: each layer's chosen width and estimate (as the CLI's `--json`).
    allocation: Option<AllocationReport>,
    /// Under a size budget: the bits per weight the candidates allow, smallest and largest.
    feasible: Option<(f64, f64)>,
}



/// Lets the page paint and handle input between steps of CPU work (a `setTimeout(0)`).
pub(crate) async fn yield_to_page() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        // `setTimeout` of the page or of the worker the module runs in; a failed timer only
        // means no pause, and the work goes on.
        let set_timeout = js_sys::Reflect::get(&js_sys::global(), &"setTimeout".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        match set_timeout {
            Some(set_timeout) => {
                let _ = set_timeout.call1(&JsValue::NULL, &resolve);
            }
            None => {
                let _ = resolve.call0(&JsValue::NULL);
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

pub(crate) fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The rejection of long GPU work: a JS `Error` whose `name` says what kind of end it was, so the
/// page tells a user's cancel (`Cancelled`) and a lost device (`GpuLost`) from a failure
/// (`Error`) by type rather than by the message's wording.
pub(crate) fn work_error<E: std::fmt::Display + 'static>(e: E) -> JsValue {
    let any = &e as &dyn std::any::Any;
    let name = match (any.downcast_ref::<ModelError>(), any.downcast_ref::<LoadError>()) {
        (Some(ModelError::Cancelled | ModelError::Load(LoadError::Cancelled)), _) | (_, Some(LoadError::Cancelled)) => "Cancelled",
        (Some(ModelError::GpuLost(_)), _) => "GpuLost",
        _ => "Error",
    };
    let error = js_sys::Error::new(&e.to_string());
    error.set_name(name);
    error.into()
}

pub(crate) fn to_js(value: &impl Serialize) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_error)
}

#[wasm_bindgen]
impl Lab {
    /// Opens the WebGPU device with the adapter's own limits. Rejects with a message when the
    /// browser has no usable WebGPU.
    pub async fn open() -> Result<Lab, JsError> {
        let gpu = open_gpu().await.map_err(js_error)?;
        Ok(Lab { gpu, session: Rc::default(), cancelled: Rc::default() })
    }

    /// The adapter, e.g. "SwiftShader Device (Subzero) (BrowserWebGpu, Cpu)".
    #[wasm_bindgen(getter)]
    pub fn device(&self) -> String {
        self.gpu.describe()
    }

    /// The largest buffer a shader may bind on this GPU, in bytes.
    #[wasm_bindgen(getter, js_name = maxBindingBytes)]
    pub fn max_binding_bytes(&self) -> f64 {
        self.gpu.max_binding_bytes() as f64
    }

    /// Checks and uploads a model named `name`: `{ config, safetensors: [{name, bytes}],
    /// tokenizerJson? | vocab + merges }`, all `Uint8Array`. Replaces the loaded model; on error
    /// the previous one stays. Returns the model's shape.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, name: String, files: JsValue) -> Result<JsValue, JsError> {
        let files = model_files(&files)?;
        let original_bytes = files.safetensors.iter().map(|(_, bytes)| bytes.len() as u64).sum();
        let LoadedModel { weights, tokenizer } = files.load().map_err(js_error)?;
        self.gpu.check_fits(&weights).map_err(js_error)?;
        let model = Decoder::new(&weights, &self.gpu.device);
        let summary = ModelSummary::new(&weights.config, None);
        *self.session.borrow_mut() = Some(Rc::new(Session::new(name, model, tokenizer, Some(weights), Some(original_bytes))));
        to_js(&summary)
    }

    /// Opens a packed file (made here or by `lutlab quantize --packed`) and runs it through the
    /// LUT kernels, without the original weights; the loaded model's tokenizer stays (GPT-2's).
    /// Replaces the loaded model; a file that does not parse leaves everything as it was.
    #[wasm_bindgen(js_name = openPacked)]
    pub fn open_packed(&self, name: String, bytes: &[u8]) -> Result<JsValue, JsError> {
        let current = self.current().map_err(|_| JsError::new("load a model first: the packed file is read with its tokenizer"))?;
        let packed = PackedModel::from_safetensors(&name, bytes).map_err(js_error)?;
        let model = Decoder::from_packed(&packed, &self.gpu.device).map_err(js_error)?;
        // The original's size is known when the file was made from the model loaded now.
        let original_bytes = current.original_bytes.filter(|_| packed.meta.base_model == current.name);
        let summary = ModelSummary::new(&packed.config, Some(PackedSummary::of(&packed, bytes.len(), original_bytes)));
        let session = Session::new(name, model.clone(), current.tokenizer.clone(), None, None);
        *session.quantized.borrow_mut() = Some(Rc::new(Quantized {
            model,
            label: packed.meta.method.clone(),
            packed: Some(packed),
            file: None,
            layers: Vec::new(),
            method: None,
            fisher_weighted: false,
        }));
        *self.session.borrow_mut() = Some(Rc::new(session));
        to_js(&summary)
    }

    /// Token ids of `text` under the loaded model's tokenizer.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.current()?.tokenizer.encode(text).map_err(js_error)
    }

    /// The window and stride an evaluation runs with (the settings as `perplexity` takes them)
    /// and, given `tokenCount`, its windows: `{ max_length, stride, windows?, positions?, scored? }`,
    /// `positions` being the tokens the model reads, which the page's time estimate is made of.
    #[wasm_bindgen(js_name = evaluationPlan)]
    pub fn evaluation_plan(&self, token_count: Option<usize>, max_length: Option<usize>, stride: Option<usize>) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let settings = EvalSettings::with_overrides(&session.model, max_length, stride);
        let Some(token_count) = token_count else {
            return to_js(&serde_json::json!({ "max_length": settings.max_length, "stride": settings.stride }));
        };
        let windows = strided_windows(token_count, settings.max_length, settings.stride, "the text").map_err(js_error)?;
        to_js(&serde_json::json!({
            "windows": windows.len(),
            "positions": windows.iter().map(|w| w.len()).sum::<usize>(),
            "scored": windows.iter().map(|w| w.scored()).sum::<usize>(),
            "max_length": settings.max_length,
            "stride": settings.stride,
        }))
    }

    /// Perplexity of `tokens` with HF's strided protocol (`maxLength` defaults to the model's
    /// context, `stride` to half of it), of the quantized model when `quantized`, else of the
    /// original. `onProgress(doneTokens, totalTokens)` is called after each batch; `cancel()`
    /// stops at the next batch. `windowsPerBatch` caps a batch (the page keeps batches short on a
    /// slow GPU, so a cancel frees the GPU soon). `inputs` (an `InputQuantRequest`, or undefined)
    /// quantizes every linear's input; static scales are calibrated first on
    /// `calibrationTokens` (random windows as the calibration step draws them). Resolves to a
    /// report object.
    #[allow(clippy::too_many_arguments)]
    pub fn perplexity(
        &self,
        tokens: Vec<u32>,
        max_length: Option<usize>,
        stride: Option<usize>,
        quantized: bool,
        on_progress: Option<js_sys::Function>,
        windows_per_batch: Option<usize>,
        inputs: JsValue,
        calibration_tokens: Option<Vec<u32>>,
        calibration_samples: Option<usize>,
        calibration_seqlen: Option<usize>,
    ) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        let quantized_model = if quantized {
            Some(session.quantized.borrow().clone().ok_or_else(|| JsError::new("nothing is quantized yet"))?)
        } else {
            None
        };
        let inputs = if inputs.is_undefined() || inputs.is_null() {
            None
        } else {
            let request: InputQuantRequest = serde_wasm_bindgen::from_value(inputs).map_err(|e| JsError::new(&format!("input quantization settings: {e}")))?;
            Some(request.settings().map_err(js_error)?)
        };
        self.cancelled.set(false);
        let mut progress = JsProgress::new(on_progress, self.cancelled.clone());
        Ok(future_to_promise(async move {
            let base = quantized_model.as_deref().map_or(&session.model, |q| &q.model);
            // Input quantization runs on a copy of the decoder (its tensors are shared handles).
            let with_inputs = match inputs {
                None => None,
                Some(settings) => {
                    let statics = match settings.scaling {
                        InputScaling::Static => {
                            let text = calibration_tokens.as_deref().ok_or_else(|| js_error("static input scales need the calibration text"))?;
                            let act = ActivationSettings::with_overrides(base, calibration_samples, calibration_seqlen, None, None);
                            calibrate_inputs(base, text, act, &settings, &base.input_multipliers, &mut progress).await.map_err(work_error)?
                        }
                        InputScaling::Dynamic | InputScaling::NoScale => Default::default(),
                    };
                    let mut model = base.clone();
                    let multipliers = base.input_multipliers.clone();
                    model.quantize_inputs(InputQuantization { settings, statics, multipliers }).map_err(work_error)?;
                    Some(model)
                }
            };
            let model = with_inputs.as_ref().unwrap_or(base);
            let mut settings = EvalSettings::with_overrides(model, max_length, stride);
            if let Some(windows) = windows_per_batch {
                // A window's scored logits (`stride` tokens after the first window) per window of
                // the batch: eval sizes its batches from that bound.
                let window_logits = settings.stride * model.config.vocab_size * 4;
                settings.max_logits_bytes = settings.max_logits_bytes.min(windows.max(1) * window_logits);
            }
            let start = js_sys::Date::now();
            let nll = perplexity(model, &tokens, settings, "the text", &mut progress).await.map_err(work_error)?;
            let seconds = (js_sys::Date::now() - start) / 1000.0;
            Ok(to_js(&PerplexityReport {
                inputs: model.input_quant.as_ref().map(|q| q.settings.label()),
                perplexity: nll.perplexity(),
                nll_sum: nll.nll_sum,
                tokens: tokens.len(),
                scored: nll.scored,
                max_length: settings.max_length,
                stride: settings.stride,
                seconds,
                tokens_per_s: nll.scored as f64 / seconds.max(1e-9),
            })?)
        }))
    }

    /// The Fisher diagonal of the linear weights on `nsamples` random windows of `seqlen` tokens
    /// of `tokens` (defaults: 128 and the model's context; `seed` 0). Kept for quantization.
    /// `onProgress(doneTokens, totalTokens)`; `cancel()` stops between samples.
    pub fn fisher(
        &self,
        tokens: Vec<u32>,
        nsamples: Option<usize>,
        seqlen: Option<usize>,
        seed: Option<u32>,
        on_progress: Option<js_sys::Function>,
    ) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        let settings = FisherSettings::with_overrides(&session.model, nsamples, seqlen, seed.map(u64::from), Some(1));
        self.gpu
            .check_buffer_fits(settings.logits_bytes(session.model.config.vocab_size), "one sample's logits", "the window length")
            .map_err(js_error)?;
        self.cancelled.set(false);
        let mut progress = JsProgress::new(on_progress, self.cancelled.clone());
        Ok(future_to_promise(async move {
            let start = js_sys::Date::now();
            let run = fisher(&session.model, &tokens, settings, "the calibration text", &mut progress).await.map_err(work_error)?;
            check_diagonal_finite(&run.diagonal).map_err(js_error)?;
            let seconds = (js_sys::Date::now() - start) / 1000.0;
            let report = FisherReport {
                nsamples: settings.nsamples,
                seqlen: settings.seqlen,
                seed: settings.seed,
                mean_loss: run.diagonal.meta.mean_loss,
                seconds,
                tokens_per_s: (settings.nsamples * settings.seqlen) as f64 / seconds.max(1e-9),
            };
            *session.fisher.borrow_mut() = Some(Rc::new(run.diagonal));
            Ok(to_js(&report)?)
        }))
    }

    /// The Hessian `H = (2/N) Σ x xᵀ` of every linear input of the original model over `nsamples`
    /// random windows of `seqlen` tokens of `tokens` (defaults: 128 and the model's context), on
    /// the GPU: kept for the GPTQ-style methods and every method's proxy loss.
    /// `onProgress(doneBlocks, totalBlocks)`; `cancel()` stops between blocks.
    pub fn hessians(&self, tokens: Vec<u32>, nsamples: Option<usize>, seqlen: Option<usize>, on_progress: Option<js_sys::Function>) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        session.weights()?;
        let defaults = HessianSettings::for_model(&session.model).windows;
        let windows = ActivationSettings::with_overrides(&session.model, nsamples.or(Some(defaults.nsamples)), seqlen, None, Some(defaults.batch));
        let settings = HessianSettings { windows, true_sequential: false };
        self.cancelled.set(false);
        let mut progress = JsProgress::new(on_progress, self.cancelled.clone());
        Ok(future_to_promise(async move {
            let start = js_sys::Date::now();
            let mut found = HashMap::new();
            hessians(&session.model, &tokens, settings, &mut |name, h| {
                found.insert(name.to_string(), h);
                Ok(())
            }, &mut progress)
            .await
            .map_err(work_error)?;
            let count = found.len();
            *session.hessians.borrow_mut() = Some(Rc::new(found));
            let seconds = (js_sys::Date::now() - start) / 1000.0;
            Ok(to_js(&serde_json::json!({ "hessians": count, "nsamples": windows.nsamples, "seqlen": windows.seqlen, "seconds": seconds }))?)
        }))
    }

    /// Each linear layer's mean input over `nsamples` random windows of `seqlen` tokens of
    /// `tokens` (defaults: 100 and the model's context), on the original model: kept for seed
    /// 000's centering. `onProgress(doneWindows, totalWindows)`; `cancel()` stops between batches.
    #[wasm_bindgen(js_name = inputMeans)]
    pub fn input_means(&self, tokens: Vec<u32>, nsamples: Option<usize>, seqlen: Option<usize>, on_progress: Option<js_sys::Function>) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        session.weights()?;
        let settings = ActivationSettings::with_overrides(&session.model, nsamples, seqlen, None, None);
        self.cancelled.set(false);
        let mut progress = JsProgress::new(on_progress, self.cancelled.clone());
        Ok(future_to_promise(async move {
            let start = js_sys::Date::now();
            let stats = linear_input_stats(&session.model, &tokens, settings, &mut progress).await.map_err(work_error)?;
            let layers = stats.means.len();
            *session.input_means.borrow_mut() = Some(Rc::new(stats.means));
            *session.input_ranges.borrow_mut() = Some(Rc::new(stats.absmax));
            let seconds = (js_sys::Date::now() - start) / 1000.0;
            Ok(to_js(&serde_json::json!({ "layers": layers, "nsamples": settings.nsamples, "seqlen": settings.seqlen, "seconds": seconds }))?)
        }))
    }

    /// SmoothQuant's picture for linear `layer`: its input's largest magnitude per channel on the
    /// calibration windows ("Compute mean activations" measures them), before and after dividing
    /// by the scales `s = max|x|^α / max|W|^(1−α)` that `--act-equalization` would use.
    pub fn smoothing(&self, layer: &str, alpha: f64) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let weights = session.weights()?;
        let ranges = session.input_ranges.borrow().clone().ok_or_else(|| JsError::new("compute the mean activations first (step 2)"))?;
        let before = ranges.get(layer).ok_or_else(|| JsError::new(&format!("no activation ranges for `{layer}`")))?;
        if !(0.0..=1.0).contains(&alpha) {
            return Err(JsError::new(&format!("alpha {alpha}: SmoothQuant's migration strength is between 0 and 1")));
        }
        let scales = layer_smoothing_scales(weights, layer, before, alpha).map_err(js_error)?;
        let after: Vec<f32> = before.iter().zip(&scales).map(|(x, s)| x / s).collect();
        to_js(&serde_json::json!({ "layer": layer, "alpha": alpha, "before": before, "after": after, "scales": scales }))
    }

    /// The kept Fisher diagonal as a safetensors file (the same format as `lutlab fisher`).
    #[wasm_bindgen(js_name = fisherFile)]
    pub fn fisher_file(&self) -> Result<Vec<u8>, JsError> {
        let session = self.current()?;
        let fisher = session.fisher.borrow().clone().ok_or_else(|| JsError::new("no Fisher information yet"))?;
        fisher.to_safetensors().map_err(js_error)
    }

    /// Loads a Fisher file made earlier (here, by `lutlab fisher`, or SqueezeLLM-style with the
    /// model's tensor names), checked against the loaded model.
    #[wasm_bindgen(js_name = loadFisher)]
    pub fn load_fisher(&self, name: &str, bytes: &[u8]) -> Result<(), JsError> {
        let session = self.current()?;
        let diagonal = FisherDiagonal::from_safetensors(name, bytes, session.weights()?).map_err(js_error)?;
        *session.fisher.borrow_mut() = Some(Rc::new(diagonal));
        Ok(())
    }

    /// Quantizes the loaded model's linear weights as `request` says (see
    /// `lutlab_core::quant::QuantizeRequest`: `{method, bits, granularity, outlier_percent, ...}`),
    /// one layer at a time, yielding to the page between layers. `onProgress(doneWeights,
    /// totalWeights)`; `cancel()` stops between layers. Resolves to a report with one entry per
    /// layer; the quantized model is then kept for `perplexity(..., quantized = true)`.
    /// `onGpu`: run the k-means on the GPU (WGSL), else on the CPU (the reference).
    pub fn quantize(&self, request: JsValue, use_fisher: bool, on_gpu: bool, on_progress: Option<js_sys::Function>) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        session.weights()?;
        let input_means = session.input_means.borrow().clone();
        let fisher_diagonal = if use_fisher {
            Some(session.fisher.borrow().clone().ok_or_else(|| JsError::new("compute or load Fisher information first"))?)
        } else {
            None
        };
        let request: QuantizeRequest = serde_wasm_bindgen::from_value(request).map_err(|e| JsError::new(&format!("quantization settings: {e}")))?;
        if !request.layer_bits.is_empty() || request.ln_affine_merge || request.weight_equalization || request.bias_corr || request.load_awq.is_some() {
            return Err(JsError::new(
                "layer rules and the model transforms other than SmoothQuant (norm merge, weight equalization, bias correction) run in the CLI for now: \
                 `lutlab quantize --layer-bits`, `--ln-affine-merge`, `--weight-equalization`, `--bias-corr`",
            ));
        }
        // A size budget (bits per weight): the model quantized at every candidate width, then
        // each layer's width allocated, as `lutlab quantize --budget` does.
        let budget = request.budget.as_deref().map(str::parse::<Budget>).transpose().map_err(js_error)?;
        if let Some(Budget::FileBytes(_)) = budget {
            return Err(JsError::new("give the page's budget in bits per weight (e.g. 3.5); a file-size budget runs in the CLI: `lutlab quantize --budget 12MB`"));
        }
        let widths = if budget.is_some() { request.candidate_widths().map_err(js_error)? } else { Vec::new() };
        // SmoothQuant from step 2's activation ranges (as `lutlab quantize --act-equalization`).
        let smoothing = request.act_equalization.as_deref().map(str::parse::<ActEqualization>).transpose().map_err(js_error)?;
        let ranges = match smoothing {
            Some(_) => Some(session.input_ranges.borrow().clone().ok_or_else(|| JsError::new("SmoothQuant needs each layer's input ranges: compute the mean activations first (step 2)"))?),
            None => None,
        };
        if smoothing.is_some() && (request.centering || !matches!(request.method.as_str(), "kmeans" | "rtn")) {
            return Err(JsError::new("SmoothQuant changes the layers' inputs, which step 2's mean inputs and Hessians measured unchanged: use k-means or round-to-nearest without centering here (the CLI recomputes the Hessians: `lutlab quantize --act-equalization`)"));
        }
        let hessian_map = session.hessians.borrow().clone();
        let gpu = self.gpu.clone();
        let device = self.gpu.device.clone();
        self.cancelled.set(false);
        let mut progress = JsProgress::new(on_progress, self.cancelled.clone());
        Ok(future_to_promise(async move {
            let original = session.weights()?;
            // Fused smoothing quantizes a smoothed copy of the model (its norms changed); layerwise
            // leaves the model and scales each layer's weights for the quantizer, with the Fisher
            // diagonal carried over either way.
            let mut fisher_carried = fisher_diagonal.as_deref().filter(|_| smoothing.is_some()).cloned();
            let (smoothed, layerwise) = match (smoothing, &ranges) {
                (Some(ActEqualization::Fused), Some(ranges)) => {
                    let mut smoothed = original.clone();
                    act_equalize(ActEqualization::Fused, &mut smoothed, ranges, request.alpha, fisher_carried.as_mut()).map_err(js_error)?;
                    (Some(smoothed), None)
                }
                (Some(ActEqualization::Layerwise), Some(ranges)) => {
                    let layerwise = LayerwiseSmoothing::new(original, ranges, request.alpha).map_err(js_error)?;
                    if let Some(f) = fisher_carried.as_mut() {
                        scale_fisher_rows(f, &layerwise.scales);
                    }
                    (None, Some(layerwise))
                }
                _ => (None, None),
            };
            let weights = smoothed.as_ref().unwrap_or(original);
            let fisher_used = fisher_carried.as_ref().or(fisher_diagonal.as_deref());
            let method = request.method(weights, fisher_diagonal.is_some()).map_err(js_error)?;
            let lookup = |name: &str| fisher_used.and_then(|f| f.get(name)).map(|t| t.data.as_slice());
            let sample_weights: Option<SampleWeights> = fisher_diagonal.as_ref().map(|_| &lookup as _);
            if request.centering && input_means.is_none() {
                return Err(js_error("centering needs the layers' mean inputs: compute them first").into());
            }
            if method.needs_hessians() && hessian_map.is_none() {
                return Err(js_error("GPTQ-style methods need each layer's Hessian: compute the Hessians first (step 2)").into());
            }
            let config = &weights.config;
            let hessian_of = |name: &str| hessian_key(config, name).and_then(|key| hessian_map.as_deref().and_then(|m| m.get(&key)));
            let calibration = Calibration {
                fisher: sample_weights,
                input_means: input_means.as_deref().filter(|_| request.centering),
                hessians: hessian_map.as_ref().map(|_| &hessian_of as _),
                rounder: None,
            };
            let layers = selected_layers(weights, request.selection(None)).map_err(js_error)?;
            // One quantization of every layer per width: the request's, or under a budget each
            // candidate width (and the method's own, which the head keeps with Fisher).
            let mut runs: Vec<u32> = widths.clone();
            if budget.is_some() && fisher_diagonal.is_some() && !runs.contains(&method.bits()) {
                runs.push(method.bits());
            }
            if runs.is_empty() {
                runs.push(method.bits());
            }
            let per_run: u64 = layers.iter().map(|(_, l)| l.weight.numel() as u64).sum();
            let total = per_run * runs.len() as u64;
            let (mut done, mut models) = (0, Vec::with_capacity(runs.len()));
            let start = js_sys::Date::now();
            for &bits in &runs {
                let method = method.with_bits(bits);
                let mut quantized = Vec::with_capacity(layers.len());
                for (name, linear) in &layers {
                    progress.update(done, total);
                    yield_to_page().await;
                    if progress.is_cancelled() {
                        return Err(work_error(ModelError::Cancelled));
                    }
                    let rounded = match &layerwise {
                        Some(l) => l.scale_linear(name, linear),
                        None => std::borrow::Cow::Borrowed(&**linear),
                    };
                    let layer = if on_gpu {
                        quantize_layer_gpu(&gpu, name, &rounded, &method, calibration, weights.config.n_embd).await.map_err(work_error)?
                    } else {
                        quantize_layer(name, &rounded, &method, calibration, weights.config.n_embd).map_err(js_error)?
                    };
                    quantized.push(match &layerwise {
                        Some(l) => l.unscale(linear, layer).map_err(js_error)?,
                        None => layer,
                    });
                    done += linear.weight.numel() as u64;
                }
                models.push((bits, QuantizedModel { layers: quantized }));
            }
            progress.update(done, total);
            let (quantized, allocation, feasible) = match budget {
                None => (models.pop().map(|(_, m)| m).ok_or_else(|| js_error("nothing was quantized"))?, None, None),
                Some(budget) => {
                    let mut quantized_at = |m: &Method| {
                        // `candidates` asks for each width once: each model moves out.
                        let at = models.iter().position(|(bits, _)| *bits == m.bits());
                        at.map(|i| models.swap_remove(i).1).ok_or_else(|| LoadError::InvalidSetting(format!("{} bits were not quantized", m.bits())))
                    };
                    let found = candidates(weights, &method, &widths, sample_weights, TableDtype::F16, AllocationUnit::Layer, &mut quantized_at).map_err(js_error)?;
                    let allocation = found.allocate(found.layer_budget(budget, None).map_err(js_error)?).map_err(js_error)?;
                    let report = found.report(&allocation, budget.to_string(), &widths);
                    let chosen = found.chosen(&allocation);
                    let feasible = found.feasible_bits_per_weight();
                    *session.candidates.borrow_mut() = Some(Rc::new(found));
                    (chosen, Some(report), Some(feasible))
                }
            };
            let label = request.label(fisher_diagonal.is_some());
            // Every layer a LUT: packed (f16 tables, as the file stores them) and run through the
            // LUT kernels; otherwise (input-group uniform scales) dense.
            let packed = if quantized.layers.iter().all(QuantizedLayer::has_packed_form) {
                let allocation = allocation.as_ref().map(serde_json::to_string).transpose().map_err(js_error)?.unwrap_or_default();
                let meta = PackedMeta { base_model: session.name.clone(), method: label.clone(), settings: serde_json::to_string(&request).unwrap_or_default(), allocation };
                Some(PackedModel::from_quantized(weights, &quantized, meta, TableDtype::F16).map_err(js_error)?)
            } else {
                None
            };
            // The file is built once: its size is reported now, and the download saves it.
            let file = packed.as_ref().map(|p| p.to_safetensors(TableDtype::F16)).transpose().map_err(js_error)?;
            let model = match &packed {
                Some(packed) => Decoder::from_packed(packed, &device).map_err(js_error)?,
                None => Decoder { input_multipliers: quantized.input_multipliers(), ..Decoder::new(&quantized.apply(weights), &device) },
            };
            let report = QuantizeReport {
                label: label.clone(),
                bits_per_weight: quantized.bits_per_weight(),
                seconds: (js_sys::Date::now() - start) / 1000.0,
                layers: quantized
                    .layers
                    .iter()
                    .map(|l| LayerReport { name: l.name.clone(), mse: l.mse, outliers: l.outliers, bits_per_weight: l.bits_per_weight, proxy_loss: l.proxy_loss })
                    .collect(),
                packed: match (&packed, &file) {
                    (Some(packed), Some(file)) => Some(PackedSummary::of(packed, file.len(), session.original_bytes)),
                    _ => None,
                },
                allocation,
                feasible,
            };
            let fisher_weighted = fisher_diagonal.is_some();
            *session.quantized.borrow_mut() = Some(Rc::new(Quantized { model, packed, file, label, layers: quantized.layers, method: Some(method), fisher_weighted }));
            Ok(to_js(&report)?)
        }))
    }

    /// The budget slider: the allocation the latest size-budget quantization's candidates give at
    /// `bits_per_weight` (each layer's width and estimate; nothing is quantized again), or a clear
    /// error outside the feasible range.
    #[wasm_bindgen(js_name = allocateBudget)]
    pub fn allocate_budget(&self, bits_per_weight: f64) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let found = session.candidates.borrow().clone().ok_or_else(|| JsError::new("quantize with a size budget first: the slider re-allocates its candidates"))?;
        let budget = Budget::BitsPerWeight(bits_per_weight);
        let allocation = found.allocate(found.layer_budget(budget, None).map_err(js_error)?).map_err(js_error)?;
        let widths: Vec<u32> = found.layers.iter().flat_map(|l| l.candidates.iter().map(|c| c.bits)).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        to_js(&found.report(&allocation, budget.to_string(), &widths))
    }

    /// The quantized model as a packed file (docs/FORMAT.md): `{ name, bytes }`, the name made of
    /// the model, the method and the size.
    #[wasm_bindgen(js_name = packedFile)]
    pub fn packed_file(&self) -> Result<JsValue, JsError> {
        let session = self.current()?;
        let quantized = session.quantized.borrow().clone().ok_or_else(|| JsError::new("nothing is quantized yet"))?;
        let packed = quantized.packed.as_ref().ok_or_else(|| JsError::new("this quantization has no packed form (its scales are not per output channel)"))?;
        let rebuilt;
        let bytes = match &quantized.file {
            Some(file) => file.as_slice(),
            None => {
                rebuilt = packed.to_safetensors(TableDtype::F16).map_err(js_error)?;
                rebuilt.as_slice()
            }
        };
        let stem = format!("{}-{}-{:.1}MB", session.name, quantized.label, bytes.len() as f64 / 1e6);
        let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
        let name = format!("{}.lutlab.safetensors", stem.trim_matches('-'));
        let object = js_sys::Object::new();
        js_sys::Reflect::set(&object, &"name".into(), &name.into()).map_err(|_| JsError::new("packed file: cannot build the result"))?;
        js_sys::Reflect::set(&object, &"bytes".into(), &js_sys::Uint8Array::from(bytes).into())
            .map_err(|_| JsError::new("packed file: cannot build the result"))?;
        Ok(object.into())
    }

    /// Asks the running work to stop at its next step; its promise rejects with an error named
    /// `Cancelled`.
    pub fn cancel(&self) {
        self.cancelled.set(true);
    }

    /// The WebGPU device itself (undefined off the web), so the page's worker hears of a loss
    /// from its `lost` promise at once, even while idle: cubecl's own device-lost callback only
    /// makes the next call fail.
    #[wasm_bindgen(getter, js_name = webgpuDevice)]
    pub fn webgpu_device(&self) -> JsValue {
        #[cfg(target_arch = "wasm32")]
        if let Some(device) = self.gpu.setup.device.as_webgpu() {
            return AsRef::<JsValue>::as_ref(device).clone();
        }
        JsValue::UNDEFINED
    }

    /// Destroys the GPU device as a driver reset would (for tests of the page's recovery): work
    /// in flight and every later call reject with an error named `GpuLost`.
    #[wasm_bindgen(js_name = loseDevice)]
    pub fn lose_device(&self) {
        self.gpu.setup.device.destroy();
    }

    /// Runs models on lutlab's own kernels (our matmul; the fused norms, softmax and loss) with
    /// `true`, the page's default, or on burn's with `false` (for tests: both must give the same
    /// perplexity, Fisher and Hessians in the browser).
    #[wasm_bindgen(js_name = useGpuKernels)]
    pub fn use_gpu_kernels(&self, on: bool) {
        lutlab_model::fused::use_in_model(on);
        lutlab_model::gemm::use_gemm_in_model(on);
    }

    pub(crate) fn current(&self) -> Result<Rc<Session>, JsError> {
        self.session.borrow().clone().ok_or_else(|| JsError::new("no model is loaded"))
    }
}

/// What text generation (generate.rs) reads of the session: its models and tokenizer.
pub(crate) struct GenerationModels {
    session: Rc<Session>,
    quantized: Option<Rc<Quantized>>,
}

impl GenerationModels {
    /// The original model, unless the session is a packed file opened on its own.
    pub(crate) fn original(&self) -> Option<&Decoder> {
        self.session.weights.as_ref().map(|_| &self.session.model)
    }

    /// The latest quantized model and its label.
    pub(crate) fn quantized(&self) -> Option<(&Decoder, &str)> {
        self.quantized.as_deref().map(|q| (&q.model, q.label.as_str()))
    }

    pub(crate) fn tokenizer(&self) -> &TextTokenizer {
        &self.session.tokenizer
    }
}

impl Lab {
    /// The session's models for generation, and a cleared cancel flag for the work to poll.
    pub(crate) fn generation_models(&self) -> Result<(GenerationModels, Rc<Cell<bool>>), JsError> {
        let session = self.session.borrow().clone().ok_or_else(|| JsError::new("no model is loaded"))?;
        let quantized = session.quantized.borrow().clone();
        self.cancelled.set(false);
        Ok((GenerationModels { session, quantized }, self.cancelled.clone()))
    }
}
