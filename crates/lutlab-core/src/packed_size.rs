//! Where a packed file's bytes go, reported beside the original checkpoint: the whole file
//! (what a user downloads) and the quantized layers' own bits per weight, split into codes,
//! tables, outliers and the rest, so "4-bit" reads as what it costs on this model.

use crate::packed_file::{layer_bytes, table_entry_bytes, PackedModel};
use crate::quant::packed::PackedLinear;
use crate::quant::incoherence::Rotation;
use serde::Serialize;

/// The sizes of one packed model, all in bytes of the file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackedSizes {
    /// The whole file: header, dense tensors and packed layers.
    pub file_bytes: usize,
    /// The original checkpoint's safetensors file(s), when known.
    pub original_bytes: Option<u64>,
    /// The dense tensors (embeddings, norms, biases, linears left unquantized) as stored.
    pub dense_bytes: usize,
    /// The quantized layers' tensors: the sum of the five parts below.
    pub layer_bytes: usize,
    /// Weights the quantized layers stand for (`rows × cols` summed).
    pub layer_weights: usize,
    /// The packed codes, padding rows included.
    pub code_bytes: usize,
    /// The look-up tables.
    pub table_bytes: usize,
    /// The sparse part: a 32-bit value and row per outlier and a column pointer per output.
    pub outlier_bytes: usize,
    /// Input-group scales and zero points.
    pub group_bytes: usize,
    /// Per-channel scales, input shifts, incoherence scales and rotations.
    pub other_bytes: usize,
    /// The quantized layers' bits per weight, everything above included.
    pub bits_per_weight: f64,
    /// One line saying what the bits per weight are made of.
    pub explanation: String,
}

impl PackedSizes {
    /// The sizes of `model` written as a file of `file_bytes` bytes.
    pub fn of(model: &PackedModel, file_bytes: usize, original_bytes: Option<u64>) -> Self {
        let layers: Vec<LayerSummary> = model.layers.values().map(LayerSummary::of).collect();
        Self::from_layers(&layers, model.dense_bytes(), file_bytes, original_bytes)
    }

    /// The sizes of a file of `file_bytes` bytes holding these packed layers and `dense_bytes`
    /// of dense tensors (a file written a layer at a time keeps only the summaries).
    pub fn from_layers(layers: &[LayerSummary], dense_bytes: usize, file_bytes: usize, original_bytes: Option<u64>) -> Self {
        let sum = |part: fn(&LayerSummary) -> usize| layers.iter().map(part).sum::<usize>();
        let mut sizes = Self {
            file_bytes,
            original_bytes,
            dense_bytes,
            layer_bytes: sum(LayerSummary::bytes),
            layer_weights: sum(|l| l.rows * l.cols),
            code_bytes: sum(|l| l.codes),
            table_bytes: sum(|l| l.tables),
            outlier_bytes: sum(|l| l.outliers),
            group_bytes: sum(|l| l.groups),
            other_bytes: sum(|l| l.other),
            bits_per_weight: 0.0,
            explanation: String::new(),
        };
        sizes.bits_per_weight = sizes.bits(sizes.layer_bytes);
        sizes.explanation = sizes.explain(layers);
        sizes
    }

    /// Bits per quantized weight that `bytes` amount to.
    fn bits(&self, bytes: usize) -> f64 {
        8.0 * bytes as f64 / self.layer_weights.max(1) as f64
    }

    /// "5.53 bits per weight: 4.00 for the 4-bit codes + 1.52 for the tables (16 f16 entries per
    /// output channel of only 128–512 inputs) + ...": only the parts that are there.
    fn explain(&self, layers: &[LayerSummary]) -> String {
        if layers.is_empty() {
            return "no layer is quantized".to_string();
        }
        let one_or_range = |mut values: Vec<usize>| {
            values.sort_unstable();
            values.dedup();
            match (values.first(), values.last()) {
                (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
                (Some(a), _) => a.to_string(),
                _ => String::new(),
            }
        };
        let bits = one_or_range(layers.iter().map(|l| l.bits as usize).collect());
        let vectors = layers.iter().any(|l| l.vector_dim > 1);
        let codes = if vectors {
            let dims = one_or_range(layers.iter().map(|l| l.vector_dim).collect());
            format!("the codes ({bits} bits per weight, a code per vector of {dims} weights)")
        } else {
            format!("the {bits}-bit codes")
        };
        let mut parts = vec![format!("{:.2} for {codes}", self.bits(self.code_bytes))];
        if self.table_bytes > 0 {
            let levels = one_or_range(layers.iter().map(|l| 1usize << (l.bits as usize * l.vector_dim)).collect());
            let levels = if vectors { format!("{levels} vectors of") } else { levels };
            let dtype = if layers.iter().all(|l| l.entry_bytes == 2) { "f16" } else { "f16/f32" };
            let per = if layers.iter().all(|l| l.channels_per_table == 1) {
                format!("output channel of only {} inputs", one_or_range(layers.iter().map(|l| l.rows).collect()))
            } else {
                format!("table of {} weights", one_or_range(layers.iter().map(|l| l.rows * l.channels_per_table).collect()))
            };
            parts.push(format!("{:.2} for the tables ({levels} {dtype} entries per {per})", self.bits(self.table_bytes)));
        }
        if self.group_bytes > 0 {
            parts.push(format!("{:.2} for a scale (and zero point) per group of input rows", self.bits(self.group_bytes)));
        }
        if self.outlier_bytes > 0 {
            let outliers: usize = layers.iter().map(|l| l.outlier_count).sum();
            let share = 100.0 * outliers as f64 / self.layer_weights.max(1) as f64;
            parts.push(format!(
                "{:.2} for {outliers} outliers ({share:.2}% of the weights, each an exact 32-bit value and row)",
                self.bits(self.outlier_bytes)
            ));
        }
        if self.other_bytes > 0 {
            parts.push(format!("{:.2} for per-channel scales, shifts and rotations", self.bits(self.other_bytes)));
        }
        format!("{:.2} bits per weight: {}", self.bits_per_weight, parts.join(" + "))
    }

    /// "13.49 MB file (12.95 MB of it dense: embeddings, norms, biases) vs 14.52 MB original
    /// checkpoint (0.93× its size)", the comparison left out when the original is unknown.
    pub fn file_line(&self) -> String {
        let mb = |b: f64| format!("{:.2} MB", b / 1e6);
        let file = format!(
            "{} file ({} of it dense: embeddings, norms, biases, unquantized layers)",
            mb(self.file_bytes as f64),
            mb(self.dense_bytes as f64)
        );
        match self.original_bytes {
            Some(original) => format!(
                "{file} vs {} original checkpoint ({:.2}× its size)",
                mb(original as f64),
                self.file_bytes as f64 / original.max(1) as f64
            ),
            None => file,
        }
    }
}

/// What the size report needs of one packed layer: its shape and its bytes by part (they add
/// up to [`layer_bytes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSummary {
    rows: usize,
    cols: usize,
    bits: u32,
    /// Weights per code (1: scalar tables; 2 or 4: vector tables).
    vector_dim: usize,
    channels_per_table: usize,
    /// Bytes per table entry: 2 (f16) or 4.
    entry_bytes: usize,
    outlier_count: usize,
    codes: usize,
    tables: usize,
    outliers: usize,
    groups: usize,
    other: usize,
}

impl LayerSummary {
    pub fn of(l: &PackedLinear) -> Self {
        if l.is_split() {
            // Its parts' bytes added up (the entry width of the first part shown).
            let parts: Vec<Self> = l.column_parts.iter().map(Self::of).collect();
            let sum = |f: fn(&Self) -> usize| parts.iter().map(f).sum::<usize>();
            return Self {
                rows: l.rows,
                cols: l.cols,
                bits: l.bits,
                vector_dim: 1,
                channels_per_table: parts[0].channels_per_table,
                entry_bytes: parts[0].entry_bytes,
                outlier_count: sum(|p| p.outlier_count),
                codes: sum(|p| p.codes),
                tables: sum(|p| p.tables),
                outliers: sum(|p| p.outliers),
                groups: sum(|p| p.groups),
                other: sum(|p| p.other),
            };
        }
        let entry_bytes = table_entry_bytes(l);
        let groups = l.input_groups.as_ref().map_or(0, |g| g.scales.len() + g.zeros.as_ref().map_or(0, Vec::len));
        let rotation = |r: &Option<Rotation>| r.as_ref().map_or(0, |r| r.factor_a.len() + r.factor_b.len() + r.perm.len());
        let incoherence = l.incoherence.as_ref().map_or(0, |t| t.input_scale.as_ref().map_or(0, Vec::len) + rotation(&t.input) + rotation(&t.output));
        let per_channel = l.scales.as_ref().map_or(0, Vec::len) + l.input_shift.as_ref().map_or(0, Vec::len);
        let summary = Self {
            rows: l.rows,
            cols: l.cols,
            bits: l.bits,
            vector_dim: l.vector_dim,
            channels_per_table: l.channels_per_table,
            entry_bytes,
            outlier_count: l.sparse.len(),
            codes: 4 * l.qweight.len(),
            tables: entry_bytes * l.tables.len(),
            outliers: if l.sparse.is_empty() { 0 } else { 4 * l.sparse.col_ptr.len() + 8 * l.sparse.len() },
            groups: entry_bytes * groups,
            other: 4 * (per_channel + incoherence),
        };
        debug_assert_eq!(summary.bytes(), layer_bytes(l));
        summary
    }

    /// The layer's bytes in the file (data only).
    pub fn bytes(&self) -> usize {
        self.codes + self.tables + self.outliers + self.groups + self.other
    }
}
