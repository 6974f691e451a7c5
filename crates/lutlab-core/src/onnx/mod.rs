//! `lutlab export --onnx-qcdq`: a packed model, its inputs quantized or not, as one ONNX file
//! that a standard runtime (onnxruntime) executes. No ONNX library: the protobuf messages are
//! written by hand (`proto`), the graph assembled by `graph`, the decoder written by `model`.

pub mod graph;
pub mod model;
pub mod proto;

pub use model::{export_onnx, OnnxModel};
