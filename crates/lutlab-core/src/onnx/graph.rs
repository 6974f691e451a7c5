//! An ONNX graph under construction: nodes with fresh output names, initializers, the graph's
//! inputs and outputs, and the model around it.

use super::proto::{self, Attr, DataType, Dim, Message};
use crate::dense_dtype::DenseDtype;

/// The opset the export targets: 21 has `DequantizeLinear` with `block_size`, `Gelu` with
/// `approximate`, `LayerNormalization`, and reductions taking their axes as an input.
pub const OPSET: i64 = 21;
/// The IR version that goes with opset 21 (ONNX 1.16).
pub const IR_VERSION: i64 = 10;

#[derive(Default)]
pub struct Graph {
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    inputs: Vec<Message>,
    outputs: Vec<Message>,
    next: usize,
    /// Bytes of initializer data so far (a protobuf message must stay under 2 GiB).
    pub data_bytes: usize,
}

impl Graph {
    /// A fresh name starting with `hint`.
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// `op_type` on `inputs` (`""` for an omitted optional input): its one output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        self.op_n(op_type, inputs, 1, attrs).remove(0)
    }

    /// `op_type` with `n` outputs.
    pub fn op_n(&mut self, op_type: &str, inputs: &[&str], n: usize, attrs: &[Attr]) -> Vec<String> {
        let name = self.fresh(op_type);
        let outputs: Vec<String> = (0..n).map(|i| format!("{name}:{i}")).collect();
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        self.nodes.push(proto::node(op_type, &name, inputs, &refs, attrs));
        outputs
    }

    /// `op_type` writing the given output name (the graph's outputs).
    pub fn op_named(&mut self, op_type: &str, inputs: &[&str], output: &str, attrs: &[Attr]) {
        let name = self.fresh(op_type);
        self.nodes.push(proto::node(op_type, &name, inputs, &[output], attrs));
    }

    fn initializer(&mut self, name: &str, data_type: DataType, dims: &[usize], raw: Vec<u8>) -> String {
        self.data_bytes += raw.len();
        self.initializers.push(proto::tensor(name, data_type, dims, &raw));
        name.to_string()
    }

    /// An f32 initializer named `name` (a model tensor's name, or a fresh one with `None`).
    pub fn f32s(&mut self, name: Option<&str>, dims: &[usize], data: &[f32]) -> String {
        let name = name.map_or_else(|| self.fresh("const"), str::to_string);
        self.initializer(&name, DataType::Float, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A model tensor in the smallest float type that holds every value exactly (the packed
    /// file's rule), widened to f32 by a `Cast` the runtime folds at load: half the bytes for
    /// f16 checkpoints, the same values.
    pub fn dense(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let (data_type, raw): (DataType, Vec<u8>) = match DenseDtype::smallest_exact(data) {
            DenseDtype::F32 => return self.f32s(Some(name), dims, data),
            DenseDtype::F16 => (DataType::Float16, data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()),
            DenseDtype::BF16 => (DataType::Bfloat16, data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()),
        };
        let stored = self.initializer(name, data_type, dims, raw);
        self.op("Cast", &[&stored], &[Attr::Int("to", DataType::Float as i64)])
    }

    pub fn i64s(&mut self, name: Option<&str>, dims: &[usize], data: &[i64]) -> String {
        let name = name.map_or_else(|| self.fresh("const"), str::to_string);
        self.initializer(&name, DataType::Int64, dims, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn u8s(&mut self, name: Option<&str>, dims: &[usize], data: &[u8]) -> String {
        let name = name.map_or_else(|| self.fresh("const"), str::to_string);
        self.initializer(&name, DataType::Uint8, dims, data.to_vec())
    }

    pub fn i8s(&mut self, name: Option<&str>, dims: &[usize], data: &[i8]) -> String {
        let name = name.map_or_else(|| self.fresh("const"), str::to_string);
        self.initializer(&name, DataType::Int8, dims, data.iter().map(|&v| v as u8).collect())
    }

    /// A scalar f32 constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.f32s(None, &[], &[v])
    }

    /// A 1-D i64 constant (shapes, axes).
    pub fn ints(&mut self, v: &[i64]) -> String {
        self.i64s(None, &[v.len()], v)
    }

    pub fn input(&mut self, name: &str, data_type: DataType, dims: &[Dim]) {
        self.inputs.push(proto::value_info(name, data_type, dims));
    }

    pub fn output(&mut self, name: &str, data_type: DataType, dims: &[Dim]) {
        self.outputs.push(proto::value_info(name, data_type, dims));
    }

    /// The serialized `ModelProto`: IR version (1), producer (2, 3), graph (7), opset (8),
    /// metadata (14) from `metadata` key/value pairs.
    pub fn into_model(self, graph_name: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let mut g = Message::new();
        self.nodes.iter().for_each(|n| {
            g.message(1, n);
        });
        g.string(2, graph_name);
        self.initializers.iter().for_each(|t| {
            g.message(5, t);
        });
        self.inputs.iter().for_each(|v| {
            g.message(11, v);
        });
        self.outputs.iter().for_each(|v| {
            g.message(12, v);
        });
        let mut opset = Message::new();
        opset.string(1, "").int(2, OPSET);
        let mut model = Message::new();
        model.int(1, IR_VERSION).string(2, "lutlab").string(3, env!("CARGO_PKG_VERSION")).message(7, &g).message(8, &opset);
        for (key, value) in metadata {
            let mut entry = Message::new();
            entry.string(1, key).string(2, value);
            model.message(14, &entry);
        }
        model.into_bytes()
    }
}
