//! The bit slider: re-quantize one layer at another bit width with the current quantization's
//! settings, on the GPU (`quantize_layer_gpu`), and return its picture. A preview: the quantized
//! model that evaluations and downloads use does not change.

use crate::lab::{js_error, to_js, Lab};
use crate::plots::{fisher_of, layer_of, set, LayerPicture};
use lutlab_core::quant::model::{quantize_layer, Calibration, SampleWeights};
use lutlab_core::quant::Method;
use lutlab_gpu::quantize_layer_gpu;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Milliseconds from the page's clock (sub-millisecond where the browser allows).
fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or_else(js_sys::Date::now, |p| p.now())
}

#[wasm_bindgen]
impl Lab {
    /// Re-quantizes layer `name` at `bits` bits with the settings of the current quantization
    /// (k-means on the GPU when `onGpu`, falling back to the CPU with a note if the GPU fails).
    /// Resolves to the layer's picture (as `layerPicture`, table of output channel `channel`)
    /// plus `ms` (the quantization alone), `engine` (`gpu` or `cpu`) and `bits`.
    #[wasm_bindgen(js_name = requantizeLayer)]
    pub fn requantize_layer(&self, name: String, bits: u32, channel: usize, on_gpu: bool) -> Result<js_sys::Promise, JsError> {
        let session = self.current()?;
        layer_of(&session, &name)?;
        let quantized = session.quantized.borrow().clone().ok_or_else(|| JsError::new("quantize the model first (step 3): the slider re-quantizes one layer with those settings"))?;
        let method = quantized.method.as_ref().ok_or_else(|| JsError::new("a packed file opened alone has no original weights to re-quantize"))?;
        // Minifloat formats fix their own width and integer grids start at 2 bits.
        method.check_bits(bits).map_err(|e| js_error(format!("{} at {bits} bits: {e}", quantized.label)))?;
        let widths = method.widths();
        let method = method.with_bits(bits);
        let fisher = if quantized.fisher_weighted {
            Some(session.fisher.borrow().clone().ok_or_else(|| JsError::new("the quantization was Fisher-weighted but the Fisher information is gone"))?)
        } else {
            None
        };
        let input_means = session.input_means.borrow().clone();
        let gpu = self.gpu.clone();
        Ok(future_to_promise(async move {
            let linear = layer_of(&session, &name)?;
            let n_embd = session.weights()?.config.n_embd;
            let lookup = |layer: &str| fisher.as_deref().and_then(|f| f.get(layer)).map(|t| t.data.as_slice());
            let sample_weights: Option<SampleWeights> = fisher.as_ref().map(|_| &lookup as _);
            // Centering is part of the settings when the layers' means were used.
            let centering = quantized.layers.iter().any(|l| l.transform.as_ref().is_some_and(|t| t.input_shift.is_some()));
            let calibration = Calibration { fisher: sample_weights, input_means: input_means.as_deref().filter(|_| centering), ..Default::default() };
            let start = now_ms();
            let mut notes = Vec::new();
            let (layer, engine) = match &method {
                Method::Kmeans { .. } if on_gpu => match quantize_layer_gpu(&gpu, &name, linear, &method, calibration, n_embd).await {
                    Ok(layer) => (layer, "gpu"),
                    Err(e) => {
                        notes.push(format!("the GPU k-means failed ({e}); this result comes from the CPU reference"));
                        (quantize_layer(&name, linear, &method, calibration, n_embd).map_err(js_error)?, "cpu")
                    }
                },
                Method::Kmeans { .. } => (quantize_layer(&name, linear, &method, calibration, n_embd).map_err(js_error)?, "cpu"),
                Method::Uniform(_) | Method::Hessian { .. } => {
                    notes.push("this method has no GPU path: it ran on the CPU".to_string());
                    (quantize_layer(&name, linear, &method, calibration, n_embd).map_err(js_error)?, "cpu")
                }
            };
            let ms = now_ms() - start;
            let mut picture = LayerPicture::new(&name, linear, fisher_of(session.fisher.borrow().as_deref(), &name), Some(&layer), channel)?;
            picture.notes.extend(notes);
            picture.widths = Some(widths);
            let value = to_js(&picture)?;
            set(&value, "ms", &ms.into())?;
            set(&value, "engine", &engine.into())?;
            set(&value, "label", &format!("{} → {bits}-bit (this layer only)", quantized.label).into())?;
            Ok(value)
        }))
    }
}
