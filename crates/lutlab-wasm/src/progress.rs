//! Progress reported to a JS callback `(done, total)`, and cancellation from a shared flag that
//! the page sets while the work awaits the GPU.

use lutlab_core::Progress;
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::JsValue;

pub struct JsProgress {
    callback: Option<js_sys::Function>,
    cancelled: Rc<Cell<bool>>,
}

impl JsProgress {
    pub fn new(callback: Option<js_sys::Function>, cancelled: Rc<Cell<bool>>) -> Self {
        Self { callback, cancelled }
    }
}

impl Progress for JsProgress {
    fn update(&mut self, done: u64, total: u64) {
        if let Some(callback) = &self.callback {
            // A throwing callback must not stop the evaluation; the console shows it.
            if let Err(e) = callback.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into()) {
                web_sys::console::warn_2(&"progress callback threw".into(), &e);
            }
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }
}
