//! A Rust panic in wasm aborts the module; keep its message so the page can say what happened
//! instead of showing a bare `unreachable` trap.

use std::cell::RefCell;
use wasm_bindgen::prelude::*;

thread_local!(static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) });

#[wasm_bindgen(start)]
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        web_sys::console::error_1(&format!("lutlab panicked: {message}").into());
        LAST_PANIC.with_borrow_mut(|last| *last = Some(message));
    }));
}

/// The message of the panic that stopped the module, if one did.
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with_borrow(Clone::clone)
}
