//! lutlab in the browser: a thin wasm-bindgen layer. JS hands in bytes and callbacks; all model
//! logic lives in lutlab-core and lutlab-model, shared with the CLI.

mod generate;
mod js_files;
mod lab;
mod panic;
mod plots;
mod progress;
mod slider;

pub use js_files::shard_files;
pub use lab::Lab;
