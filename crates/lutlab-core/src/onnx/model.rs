//! A packed model as one self-contained ONNX graph (opset 21): the decoder of every family the
//! architecture description knows, written op by op as the CPU reference computes it
//! (`reference::hidden_observed`), with
//!
//! - **weights** from their packed form: a layer whose every table is an integer grid (`(k − z)·s`
//!   exactly, the uniform formats with f32 tables) as `uint8` codes into `DequantizeLinear` per
//!   output channel (ONNX's QDQ form); any other table (k-means, minifloat, f16-rounded grids,
//!   input groups) as the table gathered by the codes (`GatherElements`), then the input-group
//!   scale and zero point, the sparse outliers (`ScatterND` adding them) and the column scales. A
//!   runtime folds these constant subgraphs once at load, then multiplies densely.
//! - **inputs** quantized as lutlab's evaluation does (`quant::inputs`): fixed (static or no-scale)
//!   parameters with an integer zero point as `QuantizeLinear → Clip → DequantizeLinear` (QCDQ),
//!   anything else (dynamic scales per tensor, row or group; fractional zero points) as the
//!   explicit arithmetic Brevitas emits: reduce, divide, round half to even, clip, rescale.
//!
//! Inputs: `input_ids` `[batch, sequence]` int64; output: `logits` `[batch, sequence, vocab]`.

use super::graph::Graph;
use super::proto::{Attr, DataType, Dim};
use crate::config::{Activation, NormKind, Positions};
use crate::error::{LoadError, Result};
use crate::packed_file::PackedModel;
use crate::quant::head::HEAD;
use crate::quant::inputs::{InputGranularity, InputParams, InputQuantization, InputScaling};
use crate::quant::packed::{packed_wide_code, unpack_codes, PackedLinear};
use crate::quant::uniform::{NumberFormat, ScaleStats, ScaleType};
use crate::reference::Rope;
use crate::weights::{LinearWeights, NormWeights};
use crate::{HostTensor, ModelConfig, ModelWeights};

/// The largest graph written: protobuf messages are limited to 2 GiB (ONNX's external-data form
/// for larger models is not written).
const MAX_BYTES: usize = (1 << 31) - (64 << 20);

/// An exported model and how its packed layers were written.
pub struct OnnxModel {
    pub bytes: Vec<u8>,
    /// Packed layers written as `DequantizeLinear` of integer codes.
    pub dequantize_layers: usize,
    /// Packed layers written as a table gathered by codes.
    pub table_layers: usize,
}

/// Refuses, by name, what the export cannot express exactly.
fn check_exportable(packed: &PackedModel, inputs: Option<&InputQuantization>) -> Result<()> {
    let refuse = |why: String| Err(LoadError::InvalidSetting(format!("ONNX export: {why}")));
    let rotated = |l: &PackedLinear| l.incoherence.as_ref().is_some_and(|t| t.input.is_some() || t.output.is_some());
    if let Some((name, _)) = packed.layers.iter().find(|(_, l)| rotated(l)) {
        return refuse(format!("layer `{name}` has QuIP's incoherence processing (rotations in the forward pass); export it with --dequantized"));
    }
    if let Some(q) = inputs {
        let s = &q.settings;
        if s.format != NumberFormat::Int {
            return refuse(format!("input format {} is a minifloat; the export writes int input grids", s.format));
        }
        if s.scaling == InputScaling::Dynamic && s.scale_stats != ScaleStats::Stats {
            return refuse(format!("dynamic input scales by {}: the graph computes absmax/min-max scales only", s.scale_stats));
        }
    }
    Ok(())
}

/// The ONNX graph of `packed` with its inputs quantized by `inputs`.
pub fn export_onnx(packed: &PackedModel, inputs: Option<&InputQuantization>) -> Result<OnnxModel> {
    check_exportable(packed, inputs)?;
    let weights = packed.dequantized_weights()?;
    let mut b = Builder { g: Graph::default(), config: &packed.config, packed, weights: &weights, inputs, dequantize_layers: 0, table_layers: 0, packed_weights: Default::default() };
    b.g.input("input_ids", DataType::Int64, &[Dim::Named("batch"), Dim::Named("sequence")]);
    b.decoder()?;
    let vocab = packed.config.vocab_size;
    b.g.output("logits", DataType::Float, &[Dim::Named("batch"), Dim::Named("sequence"), Dim::Fixed(vocab)]);
    if b.g.data_bytes > MAX_BYTES {
        return Err(LoadError::InvalidSetting(format!(
            "ONNX export: {} bytes of tensors exceed protobuf's 2 GiB limit for one file (external data is not written)",
            b.g.data_bytes
        )));
    }
    let (dequantize_layers, table_layers) = (b.dequantize_layers, b.table_layers);
    let mut metadata = vec![("base_model", packed.meta.base_model.clone()), ("method", packed.meta.method.clone())];
    if let Some(q) = inputs {
        metadata.push(("inputs", q.settings.label()));
    }
    Ok(OnnxModel { bytes: b.g.into_model("lutlab", &metadata), dequantize_layers, table_layers })
}

struct Builder<'a> {
    g: Graph,
    config: &'a ModelConfig,
    packed: &'a PackedModel,
    /// Every tensor dense (`[in, out]` linears, norms, embeddings): what is not packed.
    weights: &'a ModelWeights,
    inputs: Option<&'a InputQuantization>,
    dequantize_layers: usize,
    table_layers: usize,
    /// Packed weights already in the graph by layer (the tied head serves the embedding too).
    packed_weights: std::collections::HashMap<String, String>,
}

/// What every block needs of the sequence length, computed once.
struct Sequence {
    /// `[T]` as a 1-D int64 tensor.
    len: String,
    /// `[T, T]` boolean, true where a query may attend (key ≤ query).
    causal: String,
    /// RoPE's `cos`, `sin` `[T, head_dim]` (HF's `rotate_half` pairing), when the family has them.
    rope: Option<(String, String)>,
}

impl Builder<'_> {
    fn decoder(&mut self) -> Result<()> {
        let config = self.config;
        let len = self.g.op("Shape", &["input_ids"], &[Attr::Int("start", 1), Attr::Int("end", 2)]);
        let square = self.g.op("Concat", &[&len, &len], &[Attr::Int("axis", 0)]);
        let one = self.g.scalar(1.0);
        let ones = self.g.op("Expand", &[&one, &square], &[]);
        let lower = self.g.op("Trilu", &[&ones], &[Attr::Int("upper", 0)]);
        let causal = self.g.op("Cast", &[&lower], &[Attr::Int("to", 9)]);
        let rope = match Rope::new(config, config.n_positions) {
            Some(r) => {
                let full = |t: &[f32]| -> Vec<f32> { t.chunks_exact(r.half).flat_map(|row| row.iter().chain(row).copied()).collect() };
                let dims = [config.n_positions, config.head_dim];
                let (cos, sin) = (self.g.f32s(Some("rope.cos"), &dims, &full(&r.cos)), self.g.f32s(Some("rope.sin"), &dims, &full(&r.sin)));
                Some((self.first_rows(&cos, &len, 0), self.first_rows(&sin, &len, 0)))
            }
            None => None,
        };
        let seq = Sequence { len, causal, rope };

        let head = self.packed.layers.get(HEAD);
        let wte = match head {
            // The tied embedding is the packed head's weight, transposed: stored once.
            Some(layer) if config.tied_head => {
                let w = self.packed_weight(HEAD, layer)?;
                let w = match &layer.scales {
                    Some(scales) => {
                        let s = self.g.f32s(Some("lm_head.scales"), &[layer.cols], scales);
                        self.g.op("Mul", &[&w, &s], &[])
                    }
                    None => w,
                };
                self.g.op("Transpose", &[&w], &[Attr::Ints("perm", vec![1, 0])])
            }
            _ => self.host_tensor("wte", &self.weights.wte),
        };
        let mut x = self.g.op("Gather", &[&wte, "input_ids"], &[Attr::Int("axis", 0)]);
        if let Some(p) = &self.weights.project_in {
            x = self.linear(&x, "project_in", p)?;
        }
        if let (Some(wpe), Positions::Learned { offset }) = (&self.weights.wpe, &config.positions) {
            let wpe = self.host_tensor("wpe", wpe);
            let positions = self.first_rows(&wpe, &seq.len, *offset);
            x = self.g.op("Add", &[&x, &positions], &[]);
        }
        for i in 0..config.n_layer {
            x = self.block(i, &x, &seq)?;
        }
        if let Some(ln_f) = &self.weights.ln_f {
            x = self.norm(&x, ln_f);
        }
        if let Some(p) = &self.weights.project_out {
            x = self.linear(&x, "project_out", p)?;
        }
        if self.inputs.is_some_and(|q| q.settings.quantize_head) {
            x = self.quantized(&x, HEAD)?;
        }
        match head {
            Some(layer) => {
                let logits = self.packed_linear(&x, HEAD, layer, None)?;
                self.g.op_named("Identity", &[&logits], "logits", &[]);
            }
            None => {
                let head = match &self.weights.lm_head {
                    Some(h) => self.host_tensor("lm_head", h),
                    None => wte,
                };
                let head_t = self.g.op("Transpose", &[&head], &[Attr::Ints("perm", vec![1, 0])]);
                self.g.op_named("MatMul", &[&x, &head_t], "logits", &[]);
            }
        }
        Ok(())
    }

    /// Rows `offset..offset + T` of a `[rows, n]` table.
    fn first_rows(&mut self, table: &str, len: &str, offset: usize) -> String {
        let start = self.g.ints(&[offset as i64]);
        let end = self.g.op("Add", &[len, &start], &[]);
        let axes = self.g.ints(&[0]);
        self.g.op("Slice", &[table, &start, &end, &axes], &[])
    }

    fn host_tensor(&mut self, name: &str, t: &HostTensor) -> String {
        self.g.dense(name, &t.shape, &t.data)
    }

    fn block(&mut self, i: usize, x: &str, seq: &Sequence) -> Result<String> {
        let config = self.config;
        let block = &self.weights.blocks[i];
        let prefix = config.block_prefix(i);
        let specs = config.block_linears();
        let names: Vec<String> = specs.iter().map(|s| format!("{prefix}.{}", s.name)).collect();
        let l = &block.linears;
        let pre = |b: &mut Self, n: &NormWeights, x: &str| if config.pre_norm { b.norm(x, n) } else { x.to_string() };

        let h = pre(self, &block.norm_1, x);
        let (q, k, v, out) = if config.fused_qkv() {
            let hq = self.linear_inputs(&h, &names[..1])?;
            let qkv = self.linear(&hq[0], &names[0], &l[0])?;
            let c = config.n_embd as i64;
            let split = self.g.ints(&[c, c, c]);
            let parts = self.g.op_n("Split", &[&qkv, &split], 3, &[Attr::Int("axis", 2)]);
            (parts[0].clone(), parts[1].clone(), parts[2].clone(), 1)
        } else {
            let hq = self.linear_inputs(&h, &names[..3])?;
            (self.linear(&hq[0], &names[0], &l[0])?, self.linear(&hq[1], &names[1], &l[1])?, self.linear(&hq[2], &names[2], &l[2])?, 3)
        };
        let mixed = self.attention(&q, &k, &v, seq);
        let mixed = self.linear_inputs(&mixed, &names[out..=out])?;
        let attn = self.linear(&mixed[0], &names[out], &l[out])?;
        let mut x = self.g.op("Add", &[x, &attn], &[]);
        if !config.pre_norm {
            x = self.norm(&x, &block.norm_1);
        }

        let h = pre(self, &block.norm_2, &x);
        let first = out + 1;
        let readers = if config.activation == Activation::SwiGlu { 2 } else { 1 };
        let hq = self.linear_inputs(&h, &names[first..first + readers])?;
        let hidden = match config.activation {
            Activation::SwiGlu => {
                let gate = self.linear(&hq[0], &names[first], &l[first])?;
                let up = self.linear(&hq[1], &names[first + 1], &l[first + 1])?;
                let sig = self.g.op("Sigmoid", &[&gate], &[]);
                let silu = self.g.op("Mul", &[&gate, &sig], &[]);
                self.g.op("Mul", &[&silu, &up], &[])
            }
            Activation::GeluTanh => {
                let f = self.linear(&hq[0], &names[first], &l[first])?;
                self.g.op("Gelu", &[&f], &[Attr::Str("approximate", "tanh")])
            }
            Activation::Relu => {
                let f = self.linear(&hq[0], &names[first], &l[first])?;
                self.g.op("Relu", &[&f], &[])
            }
        };
        let down = l.len() - 1;
        let hidden = self.linear_inputs(&hidden, &names[down..=down])?;
        let mlp = self.linear(&hidden[0], &names[down], &l[down])?;
        let mut x = self.g.op("Add", &[&x, &mlp], &[]);
        if !config.pre_norm {
            x = self.norm(&x, &block.norm_2);
        }
        Ok(x)
    }

    /// Causal self-attention from `q` `[B, T, H·D]`, `k`, `v` `[B, T, KV·D]`: `[B, T, H·D]`.
    fn attention(&mut self, q: &str, k: &str, v: &str, seq: &Sequence) -> String {
        let config = self.config;
        let (h, kv, d) = (config.n_head as i64, config.n_kv_head as i64, config.head_dim as i64);
        let heads = |b: &mut Self, x: &str, n: i64| {
            let shape = b.g.ints(&[0, 0, n, d]);
            let x = b.g.op("Reshape", &[x, &shape], &[]);
            b.g.op("Transpose", &[&x], &[Attr::Ints("perm", vec![0, 2, 1, 3])])
        };
        let (mut q, mut k, mut v) = (heads(self, q, h), heads(self, k, kv), heads(self, v, kv));
        if let Some((cos, sin)) = &seq.rope {
            q = self.rotate(&q, cos, sin);
            k = self.rotate(&k, cos, sin);
        }
        if kv < h {
            // Query head `j` reads key/value head `j / group`.
            let (expand, merge) = (self.g.ints(&[1, 1, h / kv, 1, 1]), self.g.ints(&[0, h, -1, d]));
            let axes = self.g.ints(&[2]);
            let repeat = |b: &mut Self, x: &str| {
                let x = b.g.op("Unsqueeze", &[x, &axes], &[]);
                let x = b.g.op("Expand", &[&x, &expand], &[]);
                b.g.op("Reshape", &[&x, &merge], &[])
            };
            k = repeat(self, &k);
            v = repeat(self, &v);
        }
        let kt = self.g.op("Transpose", &[&k], &[Attr::Ints("perm", vec![0, 1, 3, 2])]);
        let scores = self.g.op("MatMul", &[&q, &kt], &[]);
        let sqrt_d = self.g.scalar((d as f64).sqrt() as f32);
        let scores = self.g.op("Div", &[&scores, &sqrt_d], &[]);
        let minus_inf = self.g.scalar(f32::NEG_INFINITY);
        let scores = self.g.op("Where", &[&seq.causal, &scores, &minus_inf], &[]);
        let p = self.g.op("Softmax", &[&scores], &[Attr::Int("axis", -1)]);
        let mixed = self.g.op("MatMul", &[&p, &v], &[]);
        let mixed = self.g.op("Transpose", &[&mixed], &[Attr::Ints("perm", vec![0, 2, 1, 3])]);
        let merged = self.g.ints(&[0, 0, h * d]);
        self.g.op("Reshape", &[&mixed, &merged], &[])
    }

    /// Rotary embedding of `x` `[B, H, T, D]`: `x · cos + [−x₂, x₁] · sin`.
    fn rotate(&mut self, x: &str, cos: &str, sin: &str) -> String {
        let (half, d) = (self.config.head_dim as i64 / 2, self.config.head_dim as i64);
        let axes = self.g.ints(&[3]);
        let (zero, mid, end) = (self.g.ints(&[0]), self.g.ints(&[half]), self.g.ints(&[d]));
        let x1 = self.g.op("Slice", &[x, &zero, &mid, &axes], &[]);
        let x2 = self.g.op("Slice", &[x, &mid, &end, &axes], &[]);
        let neg = self.g.op("Neg", &[&x2], &[]);
        let rotated = self.g.op("Concat", &[&neg, &x1], &[Attr::Int("axis", 3)]);
        let a = self.g.op("Mul", &[x, cos], &[]);
        let b = self.g.op("Mul", &[&rotated, sin], &[]);
        self.g.op("Add", &[&a, &b], &[])
    }

    fn norm(&mut self, x: &str, n: &NormWeights) -> String {
        let eps = self.config.norm_eps;
        let gamma = self.g.f32s(None, &n.gamma.shape, &n.gamma.data);
        match self.config.norm {
            NormKind::LayerNorm => {
                let beta = match &n.beta {
                    Some(b) => self.g.f32s(None, &b.shape, &b.data),
                    None => String::new(),
                };
                self.g.op("LayerNormalization", &[x, &gamma, &beta], &[Attr::Int("axis", -1), Attr::Float("epsilon", eps as f32)])
            }
            NormKind::RmsNorm => {
                let square = self.g.op("Mul", &[x, x], &[]);
                let axes = self.g.ints(&[-1]);
                let mean = self.g.op("ReduceMean", &[&square, &axes], &[Attr::Int("keepdims", 1)]);
                let eps = self.g.scalar(eps as f32);
                let var = self.g.op("Add", &[&mean, &eps], &[]);
                let rms = self.g.op("Sqrt", &[&var], &[]);
                let normed = self.g.op("Div", &[x, &rms], &[]);
                self.g.op("Mul", &[&normed, &gamma], &[])
            }
        }
    }

    /// `x · W + b` for linear `name`: packed when the file packs it, else dense.
    fn linear(&mut self, x: &str, name: &str, w: &LinearWeights) -> Result<String> {
        let packed = self.packed;
        if let Some(layer) = packed.layers.get(name) {
            // The stored bias (dequantized weights fold an input shift into theirs).
            let bias = packed.dense.get(&format!("{name}.bias")).map(|b| b.data.as_slice());
            return self.packed_linear(x, name, layer, bias);
        }
        let weight = self.g.dense(&format!("{name}.weight"), &w.weight.shape, &w.weight.data);
        let y = self.g.op("MatMul", &[x, &weight], &[]);
        Ok(self.add_bias(&y, name, Some(&w.bias.data)))
    }

    fn add_bias(&mut self, y: &str, name: &str, bias: Option<&[f32]>) -> String {
        match bias {
            Some(b) if b.iter().any(|&v| v != 0.0) => {
                let bias = self.g.f32s(Some(&format!("{name}.bias")), &[b.len()], b);
                self.g.op("Add", &[y, &bias], &[])
            }
            _ => y.to_string(),
        }
    }

    /// `scale ⊙ ((x − shift) · W) + bias` for a packed layer.
    fn packed_linear(&mut self, x: &str, name: &str, layer: &PackedLinear, bias: Option<&[f32]>) -> Result<String> {
        let x = match &layer.input_shift {
            Some(shift) => {
                let s = self.g.f32s(Some(&format!("{name}.input_shift")), &[layer.rows], shift);
                self.g.op("Sub", &[x, &s], &[])
            }
            None => x.to_string(),
        };
        let w = self.packed_weight(name, layer)?;
        let mut y = self.g.op("MatMul", &[&x, &w], &[]);
        if let Some(scales) = &layer.scales {
            let s = self.g.f32s(Some(&format!("{name}.scales")), &[layer.cols], scales);
            y = self.g.op("Mul", &[&y, &s], &[]);
        }
        Ok(self.add_bias(&y, name, bias))
    }

    /// The `[in, out]` weight of a packed layer (tables, groups and sparse part; no column scales).
    fn packed_weight(&mut self, name: &str, layer: &PackedLinear) -> Result<String> {
        if let Some(w) = self.packed_weights.get(name) {
            return Ok(w.clone());
        }
        let w = self.new_packed_weight(name, layer)?;
        self.packed_weights.insert(name.to_string(), w.clone());
        Ok(w)
    }

    fn new_packed_weight(&mut self, name: &str, layer: &PackedLinear) -> Result<String> {
        // Column parts (blocks of channels at different widths): each part's weight, side by side.
        if layer.is_split() {
            let parts = layer
                .column_parts
                .iter()
                .enumerate()
                .map(|(i, part)| self.new_packed_weight(&format!("{name}.part{i}"), part))
                .collect::<Result<Vec<_>>>()?;
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            return Ok(self.g.op("Concat", &parts, &[Attr::Int("axis", 1)]));
        }
        let cols = layer.cols;
        let base = if layer.is_vector() { self.vector_table_weight(name, layer) } else { self.scalar_table_weight(name, layer) };
        let sparse = &layer.sparse;
        if sparse.is_empty() {
            return Ok(base);
        }
        // The outliers are added where they sit: ScatterND with `add` on (row, column) pairs.
        let mut positions = Vec::with_capacity(2 * sparse.len());
        let mut values = Vec::with_capacity(sparse.len());
        for c in 0..cols {
            for i in sparse.col_ptr[c] as usize..sparse.col_ptr[c + 1] as usize {
                positions.extend([i64::from(sparse.row_idx[i]), c as i64]);
                values.push(sparse.values[i]);
            }
        }
        let at = self.g.i64s(Some(&format!("{name}.outlier_positions")), &[values.len(), 2], &positions);
        let outliers = self.g.f32s(Some(&format!("{name}.outliers")), &[values.len()], &values);
        Ok(self.g.op("ScatterND", &[&base, &at, &outliers], &[Attr::Str("reduction", "add")]))
    }

    /// A vector-table layer's weight: each code (one per `d` rows of a column) made an index into
    /// the stacked codebooks, a Gather of `[tables · entries, d]` rows, and the vectors laid back
    /// along the input rows.
    fn vector_table_weight(&mut self, name: &str, layer: &PackedLinear) -> String {
        self.table_layers += 1;
        let (d, cols, levels) = (layer.vector_dim, layer.cols, layer.levels());
        let vectors = layer.code_rows();
        let index: Vec<i64> = (0..vectors)
            .flat_map(|v| (0..cols).map(move |c| (v, c)))
            .map(|(v, c)| (c / layer.channels_per_table * levels + usize::from(packed_wide_code(&layer.qweight, cols, layer.code_bits(), v, c))) as i64)
            .collect();
        let index = self.g.i64s(Some(&format!("{name}.codes")), &[vectors, cols], &index);
        let codebooks = self.g.f32s(Some(&format!("{name}.lut")), &[layer.num_tables() * levels, d], &layer.tables);
        let entries = self.g.op("Gather", &[&codebooks, &index], &[Attr::Int("axis", 0)]); // [vectors, cols, d]
        let by_row = self.g.op("Transpose", &[&entries], &[Attr::Ints("perm", vec![0, 2, 1])]); // [vectors, d, cols]
        let shape = self.g.ints(&[layer.rows as i64, cols as i64]);
        self.g.op("Reshape", &[&by_row, &shape], &[])
    }

    /// A scalar-table layer's weight: DequantizeLinear when every table is an integer grid, else
    /// a GatherElements of the tables (and the input groups' scales and zeros).
    fn scalar_table_weight(&mut self, name: &str, layer: &PackedLinear) -> String {
        let (rows, cols) = (layer.rows, layer.cols);
        let codes = unpack_codes(&layer.qweight, rows, cols, layer.bits);
        let codes_t = self.g.u8s(Some(&format!("{name}.codes")), &[rows, cols], &codes);
        match integer_grid(layer) {
            Some(grid) => {
                self.dequantize_layers += 1;
                let (dims, attrs) = match grid.block_size {
                    None => (vec![cols], vec![Attr::Int("axis", 1)]),
                    Some(size) => (vec![rows.div_ceil(size), cols], vec![Attr::Int("axis", 0), Attr::Int("block_size", size as i64)]),
                };
                let s = self.g.f32s(Some(&format!("{name}.weight_scale")), &dims, &grid.scales);
                let z = self.g.u8s(Some(&format!("{name}.weight_zero_point")), &dims, &grid.zeros);
                self.g.op("DequantizeLinear", &[&codes_t, &s, &z], &attrs)
            }
            None => {
                self.table_layers += 1;
                // Table entry `k` of column `c` at `[k, c]`, so that GatherElements along axis 0
                // reads `table[codes[r, c], c]`.
                let levels = layer.levels();
                let by_column: Vec<f32> =
                    (0..levels).flat_map(|k| (0..cols).map(move |c| (c, k))).map(|(c, k)| layer.tables[c / layer.channels_per_table * levels + k]).collect();
                let table = self.g.f32s(Some(&format!("{name}.lut")), &[levels, cols], &by_column);
                let index = self.g.op("Cast", &[&codes_t], &[Attr::Int("to", DataType::Int64 as i64)]);
                let entries = self.g.op("GatherElements", &[&table, &index], &[Attr::Int("axis", 0)]);
                match &layer.input_groups {
                    Some(groups) => {
                        let groups_n = rows.div_ceil(groups.size);
                        let of_row: Vec<i64> = (0..rows).map(|r| (r / groups.size) as i64).collect();
                        let of_row = self.g.i64s(Some(&format!("{name}.group_of_row")), &[rows], &of_row);
                        let scales = self.g.f32s(Some(&format!("{name}.group_scales")), &[groups_n, cols], &groups.scales);
                        let scales = self.g.op("Gather", &[&scales, &of_row], &[Attr::Int("axis", 0)]);
                        let entries = match &groups.zeros {
                            Some(zeros) => {
                                let zeros = self.g.f32s(Some(&format!("{name}.group_zeros")), &[groups_n, cols], zeros);
                                let zeros = self.g.op("Gather", &[&zeros, &of_row], &[Attr::Int("axis", 0)]);
                                self.g.op("Sub", &[&entries, &zeros], &[])
                            }
                            None => entries,
                        };
                        self.g.op("Mul", &[&entries, &scales], &[])
                    }
                    None => entries,
                }
            }
        }
    }

    /// The inputs of the linears `names`, which all read `x`, as they multiply: each times its
    /// layer's input scale (an explicit `Mul`, SmoothQuant layerwise), then quantized when the
    /// export quantizes inputs. Without input scales the linears share one quantized input.
    fn linear_inputs(&mut self, x: &str, names: &[String]) -> Result<Vec<String>> {
        let packed = self.packed;
        let scale_of = |name: &str| packed.layers.get(name).and_then(|l| l.incoherence.as_ref()?.input_scale.as_ref());
        if names.iter().all(|n| scale_of(n).is_none()) {
            let shared = self.quantized(x, &names[0])?;
            return Ok(vec![shared; names.len()]);
        }
        names
            .iter()
            .map(|name| {
                let scaled = match scale_of(name) {
                    Some(m) => {
                        let m = self.g.f32s(Some(&format!("{name}.input_scale")), &[m.len()], m);
                        self.g.op("Mul", &[x, &m], &[])
                    }
                    None => x.to_string(),
                };
                self.quantized(&scaled, name)
            })
            .collect()
    }

    /// Linear `name`'s input quantized, when the export quantizes inputs.
    fn quantized(&mut self, x: &str, name: &str) -> Result<String> {
        let Some(q) = self.inputs else { return Ok(x.to_string()) };
        let fixed = q.fixed(name)?;
        Ok(input_quantizer(&mut self.g, x, q, fixed))
    }
}

/// A packed layer whose weights are `(code − zero) · scale` exactly, with a scale and integer
/// zero point per output column (`axis` 1) or per group of input rows and column (`axis` 0 with
/// `block_size`): `DequantizeLinear` of the codes reproduces them bit for bit.
#[derive(Debug, PartialEq)]
struct IntegerGrid {
    /// `[cols]`, or `[groups, cols]` row-major.
    scales: Vec<f32>,
    zeros: Vec<u8>,
    block_size: Option<usize>,
}

/// The layer as an [`IntegerGrid`], when every table is one: without input groups each table
/// must be `(k − z) · s` exactly; with them each table must hold integers `k − o` and each
/// group's zero point `o + zero` must be an integer code.
fn integer_grid(layer: &PackedLinear) -> Option<IntegerGrid> {
    if layer.bits > 8 {
        return None;
    }
    let levels = layer.levels();
    let tables: Vec<&[f32]> = layer.tables.chunks_exact(levels).collect();
    let cols = layer.cols;
    let table_of = |c: usize| tables[c / layer.channels_per_table];
    match &layer.input_groups {
        None => {
            let mut scales = Vec::with_capacity(cols);
            let mut zeros = Vec::with_capacity(cols);
            for c in 0..cols {
                let table = table_of(c);
                // The zero point is the entry that is exactly 0; the step a neighbour's value
                // (±1 · s is exact in floating point).
                let zero = table.iter().position(|&v| v == 0.0)?;
                let scale = if zero + 1 < levels { table[zero + 1] } else { -table[zero.checked_sub(1)?] };
                let exact = table.iter().enumerate().all(|(k, &v)| (k as f32 - zero as f32) * scale == v);
                if !(scale.is_normal() && scale > 0.0 && exact) {
                    return None;
                }
                scales.push(scale);
                zeros.push(zero as u8);
            }
            Some(IntegerGrid { scales, zeros, block_size: None })
        }
        Some(groups) => {
            // Each table `k − o`: its offset `o = −table[0]`, an integer code.
            let offset = |table: &[f32]| -> Option<f32> {
                let o = -table[0];
                let integral = o.fract() == 0.0 && (0.0..levels as f32).contains(&o);
                (integral && table.iter().enumerate().all(|(k, &v)| v == k as f32 - o)).then_some(o)
            };
            let offsets: Vec<f32> = (0..cols).map(|c| offset(table_of(c))).collect::<Option<_>>()?;
            let mut zeros = Vec::with_capacity(groups.scales.len());
            for (at, &scale) in groups.scales.iter().enumerate() {
                let zp = offsets[at % cols] + groups.zeros.as_ref().map_or(0.0, |z| z[at]);
                if !(scale.is_normal() && scale > 0.0 && zp.fract() == 0.0 && (0.0..=255.0).contains(&zp)) {
                    return None;
                }
                zeros.push(zp as u8);
            }
            Some(IntegerGrid { scales: groups.scales.clone(), zeros, block_size: Some(groups.size) })
        }
    }
}

/// The quantizer of one linear input `x` `[B, T, C]` as lutlab's evaluation applies it.
fn input_quantizer(g: &mut Graph, x: &str, q: &InputQuantization, fixed: Option<InputParams>) -> String {
    let s = &q.settings;
    let (qmin, qmax, divisor) = if s.symmetric {
        let half = (1i64 << (s.bits - 1)) as f32;
        (-half, half - 1.0, half)
    } else {
        let top = ((1i64 << s.bits) - 1) as f32;
        (0.0, top, top)
    };
    if let Some(p) = fixed {
        if p.zero_point.fract() == 0.0 && p.zero_point >= qmin && p.zero_point <= qmax {
            return qcdq(g, x, p, s.symmetric, qmin, qmax);
        }
        let (scale, zero) = (g.scalar(p.scale), g.scalar(p.zero_point));
        return fake_quantize(g, x, &scale, &zero, qmin, qmax);
    }
    // Dynamic: the values sharing a scale are reduced together.
    let c = x.to_string();
    let (values, axes, restore) = match s.granularity {
        InputGranularity::Row => (c, vec![-1], None),
        InputGranularity::Tensor => (c, vec![1, 2], None),
        InputGranularity::Group(size) => {
            let shape = g.ints(&[0, 0, -1, size as i64]);
            (g.op("Reshape", &[x, &shape], &[]), vec![-1], Some(x.to_string()))
        }
    };
    let axes = g.ints(&axes);
    let keep = [Attr::Int("keepdims", 1)];
    let zero_f = g.scalar(0.0);
    let (raw, low) = if s.symmetric {
        let abs = g.op("Abs", &[&values], &[]);
        (g.op("ReduceMax", &[&abs, &axes], &keep), None)
    } else {
        let min = g.op("ReduceMin", &[&values, &axes], &keep);
        let max = g.op("ReduceMax", &[&values, &axes], &keep);
        let low = g.op("Min", &[&min, &zero_f], &[]);
        let high = g.op("Max", &[&max, &zero_f], &[]);
        (g.op("Sub", &[&high, &low], &[]), Some(low))
    };
    let div = g.scalar(divisor);
    let raw = g.op("Div", &[&raw, &div], &[]);
    // A scale that is zero or subnormal (an all-zero input) becomes 1, as `uniform::scale` does.
    let (tiny, one) = (g.scalar(f32::MIN_POSITIVE), g.scalar(1.0));
    let too_small = g.op("Less", &[&raw, &tiny], &[]);
    let mut scale = g.op("Where", &[&too_small, &one, &raw], &[]);
    if s.scale_type == ScaleType::PowerOfTwo {
        scale = po2_ceil(g, &scale);
    }
    let zero = match low {
        Some(low) => {
            let ratio = g.op("Div", &[&low, &scale], &[]);
            let zp = g.op("Neg", &[&ratio], &[]);
            if s.integer_zero_point { g.op("Round", &[&zp], &[]) } else { zp }
        }
        None => zero_f,
    };
    let y = fake_quantize(g, &values, &scale, &zero, qmin, qmax);
    match restore {
        Some(original) => {
            let shape = g.op("Shape", &[&original], &[]);
            g.op("Reshape", &[&y, &shape], &[])
        }
        None => y,
    }
}

/// `(clip(round_half_even(x / s + z), qmin, qmax) − z) · s`, in float arithmetic.
fn fake_quantize(g: &mut Graph, x: &str, scale: &str, zero: &str, qmin: f32, qmax: f32) -> String {
    let scaled = g.op("Div", &[x, scale], &[]);
    let shifted = g.op("Add", &[&scaled, zero], &[]);
    let rounded = g.op("Round", &[&shifted], &[]);
    let (lo, hi) = (g.scalar(qmin), g.scalar(qmax));
    let clipped = g.op("Clip", &[&rounded, &lo, &hi], &[]);
    let centred = g.op("Sub", &[&clipped, zero], &[]);
    g.op("Mul", &[&centred, scale], &[])
}

/// `QuantizeLinear → Clip → DequantizeLinear` with a fixed scale and integer zero point: int8
/// codes for symmetric grids, uint8 for asymmetric ones; the clip narrows 8 bits to `bits`.
fn qcdq(g: &mut Graph, x: &str, p: InputParams, symmetric: bool, qmin: f32, qmax: f32) -> String {
    let scale = g.scalar(p.scale);
    let (zero, lo, hi) = if symmetric {
        (g.i8s(None, &[], &[p.zero_point as i8]), g.i8s(None, &[], &[qmin as i8]), g.i8s(None, &[], &[qmax as i8]))
    } else {
        (g.u8s(None, &[], &[p.zero_point as u8]), g.u8s(None, &[], &[qmin as u8]), g.u8s(None, &[], &[qmax as u8]))
    };
    let q = g.op("QuantizeLinear", &[x, &scale, &zero], &[]);
    let q = g.op("Clip", &[&q, &lo, &hi], &[]);
    g.op("DequantizeLinear", &[&q, &scale, &zero], &[])
}

/// The smallest power of two ≥ `s` (> 0): `2^⌈log2 s⌉`, corrected by one step either way where
/// the logarithm's rounding crossed an integer, so exact powers of two stay themselves.
fn po2_ceil(g: &mut Graph, s: &str) -> String {
    let log = g.op("Log", &[s], &[]);
    let ln2 = g.scalar(std::f32::consts::LN_2);
    let log2 = g.op("Div", &[&log, &ln2], &[]);
    let e = g.op("Ceil", &[&log2], &[]);
    let two = g.scalar(2.0);
    let p = g.op("Pow", &[&two, &e], &[]);
    let half = g.op("Div", &[&p, &two], &[]);
    let half_enough = g.op("GreaterOrEqual", &[&half, s], &[]);
    let p = g.op("Where", &[&half_enough, &half, &p], &[]);
    let short = g.op("Less", &[&p, s], &[]);
    let double = g.op("Mul", &[&p, &two], &[]);
    g.op("Where", &[&short, &double, &p], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::lut::{Granularity, LutMatrix, SparseOutliers};

    fn layer(tables: Vec<f32>) -> PackedLinear {
        let lut = LutMatrix {
            rows: 4,
            cols: 2,
            bits: 3,
            granularity: Granularity::Channel,
            tables,
            codes: vec![0; 8],
            input_groups: None,
            outliers: SparseOutliers::none(4),
        };
        PackedLinear::from_lut(&lut).unwrap()
    }

    #[test]
    fn integer_grids_are_recognized_exactly() {
        // 3-bit symmetric grid (q in -4..=3) and an asymmetric one with zero point 2, per channel.
        let s = [0.013f32, 0.7];
        let mut tables: Vec<f32> = (0..8).map(|k| (k as f32 - 4.0) * s[0]).collect();
        tables.extend((0..8).map(|k| (k as f32 - 2.0) * s[1]));
        let grid = IntegerGrid { scales: s.to_vec(), zeros: vec![4, 2], block_size: None };
        assert_eq!(integer_grid(&layer(tables.clone())), Some(grid));
        // An entry off by one ulp (an f16-rounded or k-means table) is gathered instead.
        let mut off = tables;
        off[5] = f32::from_bits(off[5].to_bits() + 1);
        assert_eq!(integer_grid(&layer(off)), None);
    }
}
