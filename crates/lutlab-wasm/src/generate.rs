//! The page's "see the difference in words": one prompt continued by the original model and by
//! the quantized one (through its LUT kernels when packed), with the same settings and seed, so
//! the two texts differ only where the models do.

use crate::progress::JsProgress;
use lutlab_core::{Progress, TextTokenizer};
use lutlab_model::generate::{continuation, end_of_text, generate, GenerateSettings, Sampling};
use lutlab_model::Decoder;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::lab::{js_error, to_js, work_error, Lab};

/// `{ max_new_tokens, temperature?, top_k?, seed? }`: greedy without a temperature.
#[derive(Deserialize)]
struct GenerateRequest {
    #[serde(default = "default_max_new_tokens")]
    max_new_tokens: usize,
    temperature: Option<f64>,
    /// 0: the whole vocabulary.
    #[serde(default)]
    top_k: usize,
    #[serde(default)]
    seed: u64,
}

fn default_max_new_tokens() -> usize {
    24
}

/// One model's continuation.
#[derive(Serialize)]
struct Continuation {
    label: String,
    tokens: Vec<u32>,
    text: String,
    stopped: &'static str,
    /// Why it stopped early, in words; absent when it produced every token asked for.
    note: Option<String>,
    seconds: f64,
    tokens_per_s: f64,
}

#[derive(Serialize)]
struct GenerateReport {
    prompt_tokens: Vec<u32>,
    sampling: String,
    original: Option<Continuation>,
    quantized: Option<Continuation>,
    /// How many leading tokens the two continuations share, and those tokens' text (where the
    /// page starts highlighting); 0 and empty unless both models ran.
    shared_tokens: usize,
    shared_text: String,
    /// Said when one side is missing (nothing quantized yet, or only a packed file is open).
    message: Option<String>,
}

/// Reports one model's share of the work as part of both models' total.
struct Share<'a> {
    inner: &'a mut JsProgress,
    before: u64,
    total: u64,
}

impl Progress for Share<'_> {
    fn update(&mut self, done: u64, _total: u64) {
        self.inner.update(self.before + done, self.total);
    }

    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

/// One model's continuation of `prompt`, timed.
async fn continue_prompt(
    model: &Decoder,
    label: &str,
    tokenizer: &TextTokenizer,
    prompt: &[u32],
    settings: GenerateSettings,
    progress: &mut dyn Progress,
) -> Result<Continuation, JsValue> {
    let start = js_sys::Date::now();
    let generation = generate(model, prompt, settings, progress).await.map_err(work_error)?;
    let seconds = (js_sys::Date::now() - start) / 1000.0;
    Ok(Continuation {
        label: label.to_string(),
        text: continuation(tokenizer, prompt, &generation.tokens).map_err(js_error)?,
        stopped: generation.stopped.as_str(),
        note: generation.stopped.explain(model.config.n_positions),
        seconds,
        tokens_per_s: generation.tokens.len() as f64 / seconds.max(1e-9),
        tokens: generation.tokens,
    })
}

#[wasm_bindgen]
impl Lab {
    /// Continues `prompt` with the original model and the latest quantized one, the same way
    /// (`settings`: `{ max_new_tokens = 24, temperature?, top_k = 0, seed = 0 }`, greedy without a
    /// temperature). `onProgress(doneTokens, totalTokens)` over both models; `cancel()` stops
    /// before the next token. Resolves to `{ prompt_tokens, sampling, original, quantized,
    /// message }`, each continuation `{ label, tokens, text, stopped, note, seconds, tokens_per_s }`
    /// or null when that model is not there (then `message` says why).
    pub fn generate(&self, prompt: String, settings: JsValue, on_progress: Option<js_sys::Function>) -> Result<js_sys::Promise, JsError> {
        let request: GenerateRequest = serde_wasm_bindgen::from_value(settings).map_err(|e| JsError::new(&format!("generation settings: {e}")))?;
        let (models, cancelled) = self.generation_models()?;
        let prompt_tokens = models.tokenizer().encode(&prompt).map_err(js_error)?;
        if prompt_tokens.is_empty() {
            return Err(JsError::new("the prompt is empty: type some text for the models to continue"));
        }
        let sampling = match request.temperature {
            Some(temperature) => Sampling::Sample { temperature, top_k: request.top_k, seed: request.seed },
            None => Sampling::Greedy,
        };
        let settings = GenerateSettings { max_new_tokens: request.max_new_tokens, sampling, stop_token: end_of_text(models.tokenizer()) };
        settings.validate().map_err(js_error)?;
        let message = match (models.original(), models.quantized()) {
            (Some(_), None) => Some("Nothing is quantized yet: quantize the model (step 3) to see its text beside the original's.".to_string()),
            (None, _) => Some("Only a packed file is open: load the original model to see its text beside the quantized one.".to_string()),
            _ => None,
        };
        let mut progress = JsProgress::new(on_progress, cancelled);
        Ok(future_to_promise(async move {
            let runs = usize::from(models.original().is_some()) + usize::from(models.quantized().is_some());
            let total = (runs * settings.max_new_tokens) as u64;
            let tokenizer = models.tokenizer();
            let original = match models.original() {
                Some(model) => {
                    let mut share = Share { inner: &mut progress, before: 0, total };
                    Some(continue_prompt(model, "original (f32)", tokenizer, &prompt_tokens, settings, &mut share).await?)
                }
                None => None,
            };
            let quantized = match models.quantized() {
                Some((model, label)) => {
                    let before = if original.is_some() { settings.max_new_tokens as u64 } else { 0 };
                    let mut share = Share { inner: &mut progress, before, total };
                    Some(continue_prompt(model, label, tokenizer, &prompt_tokens, settings, &mut share).await?)
                }
                None => None,
            };
            let shared_tokens = match (&original, &quantized) {
                (Some(a), Some(b)) => a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count(),
                _ => 0,
            };
            let shared_text = match &original {
                Some(a) => continuation(tokenizer, &prompt_tokens, &a.tokens[..shared_tokens]).map_err(js_error)?,
                None => String::new(),
            };
            let report = GenerateReport { prompt_tokens, sampling: sampling.to_string(), original, quantized, shared_tokens, shared_text, message };
            Ok(to_js(&report)?)
        }))
    }
}
