//! The packed form of a LUT-quantized linear layer: what the file stores and what the GPU
//! kernels read (`shaders/lut_*.wgsl`). `docs/FORMAT.md` is the specification; in short:
//!
//! - **codes** of the `[in, out]` Conv1D matrix are packed per output column, in *blocks* of 32
//!   input rows: block `k` of column `c` is `bits` little-endian u32 words holding the codes of
//!   rows `32k..32k+32`, code `i` at bit `i * bits` of that 32·bits-bit string (so 3-bit codes
//!   cross word boundaries, as in SqueezeLLM's `pack.py`). Word `j` of block `k` of column `c`
//!   is `qweight[(k * bits + j) * cols + c]`: neighbouring columns are neighbouring words, which
//!   is what a GPU thread per column wants (coalesced reads). Rows past `in` pad with code 0.
//! - **tables**: `2^bits` f32 entries per table; table `c / channels_per_table` serves column `c`.
//! - **sparse part**: exact corrections in compressed sparse *columns* (one list per output
//!   channel, which is SqueezeLLM's CSR over its `[out, in]` weight), added to the table value.
//! - optional **input-group scales** (GPTQ/AWQ's `groupsize`, format version 3): a scale and
//!   zero point per output column and group of input rows (a multiple of 32), so the table
//!   entry becomes `(entry − zero) · scale` (`InputGroupScales`).
//! - optional **scales** (one per output column) and **input shift** (one per input row), seed
//!   000's scaling and centering: `y = scale ⊙ ((x − shift) · W) + bias`.
//! - optional **incoherence** (QuIP, format version 3): the codes are of rotated weights, and
//!   the layer runs as `y = Uᵀ-rotate(scale ⊙ (V-rotate(x ⊙ input_scale) · W)) + bias`
//!   (`quant::incoherence`).
//! - **vector tables** (`vector_dim` d > 1, format version 5, `quant::vector`): one code per
//!   vector of `d` consecutive input rows of a column, `bits · d` bits wide, packed exactly as
//!   above with the vectors in the place of rows (a block holds 32 vectors, `32·d` rows); a table
//!   has `2^(bits·d)` entries of `d` values.

use crate::error::{LoadError, Result};
use crate::quant::incoherence::Incoherence;
use crate::quant::lut::{Granularity, InputGroupScales, LutMatrix};
use crate::quant::vector::VectorLut;

/// Input rows per packed block: one block of one column is exactly `bits` u32 words.
pub const BLOCK_ROWS: usize = 32;

/// Exact corrections stored by output column: `col_ptr[c]..col_ptr[c + 1]` index the entries of
/// column `c`, each an input row and a value added to the table's.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SparseColumns {
    pub col_ptr: Vec<u32>,
    pub row_idx: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseColumns {
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One linear weight, packed. See the module docs for the layout.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedLinear {
    /// Input features (rows of the Conv1D weight).
    pub rows: usize,
    /// Output features (columns).
    pub cols: usize,
    /// Bits per weight (a vector table's codes are `bits · vector_dim` wide).
    pub bits: u32,
    /// Weights per code: 1 for scalar tables, 2 or 4 for vector tables (consecutive input rows).
    pub vector_dim: usize,
    /// Consecutive output columns that share one table (`cols`: one table for the matrix; 1: per
    /// channel).
    pub channels_per_table: usize,
    /// `[blocks(code_rows) * code_bits, cols]` row-major.
    pub qweight: Vec<u32>,
    /// `[cols / channels_per_table, 2^code_bits, vector_dim]` row-major.
    pub tables: Vec<f32>,
    /// Per group of input rows and output column, applied to the table entry; `None`: none.
    pub input_groups: Option<InputGroupScales>,
    pub sparse: SparseColumns,
    /// Per output column; `None` means 1.
    pub scales: Option<Vec<f32>>,
    /// Per input row, subtracted from the input; `None` means 0.
    pub input_shift: Option<Vec<f32>>,
    /// QuIP's incoherence processing around the LUT matmul; `None`: none.
    pub incoherence: Option<Incoherence>,
    /// A layer whose blocks of output columns were given different widths (`--allocate-per
    /// channels:N`, format version 6): the layer is these parts side by side, each a whole
    /// packed layer of its columns, and the fields above are empty (see [`Self::from_parts`]).
    pub column_parts: Vec<PackedLinear>,
}

/// Blocks of [`BLOCK_ROWS`] rows needed for `rows` input rows.
pub fn blocks(rows: usize) -> usize {
    rows.div_ceil(BLOCK_ROWS)
}

/// Packs row-major `[rows, cols]` codes (each `< 2^bits`) into the block layout.
pub fn pack_codes(codes: &[u8], rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    pack_with(|i| u32::from(codes[i]), rows, cols, bits)
}

/// [`pack_codes`] for codes up to 16 bits wide (vector tables' codes, up to 12).
pub fn pack_wide_codes(codes: &[u16], rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    pack_with(|i| u32::from(codes[i]), rows, cols, bits)
}

fn pack_with(code_at: impl Fn(usize) -> u32, rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    let bits_usize = bits as usize;
    let mut packed = vec![0u32; blocks(rows) * bits_usize * cols];
    for r in 0..rows {
        let (block, i) = (r / BLOCK_ROWS, r % BLOCK_ROWS);
        let bit = i * bits_usize;
        let (word, shift) = (bit / 32, bit % 32);
        for c in 0..cols {
            let code = u64::from(code_at(r * cols + c)) << shift;
            let at = (block * bits_usize + word) * cols + c;
            packed[at] |= code as u32;
            // A code that straddles two words puts its high bits at the start of the next one.
            if shift + bits_usize > 32 {
                packed[at + cols] |= (code >> 32) as u32;
            }
        }
    }
    packed
}

/// The code of row `r`, column `c` in packed words (the inverse of [`pack_codes`]).
pub fn packed_code(qweight: &[u32], cols: usize, bits: u32, r: usize, c: usize) -> u8 {
    packed_wide_code(qweight, cols, bits, r, c) as u8
}

/// [`packed_code`] for codes up to 16 bits wide.
pub fn packed_wide_code(qweight: &[u32], cols: usize, bits: u32, r: usize, c: usize) -> u16 {
    let bits_usize = bits as usize;
    let (block, i) = (r / BLOCK_ROWS, r % BLOCK_ROWS);
    let bit = i * bits_usize;
    let (word, shift) = (bit / 32, bit % 32);
    let at = (block * bits_usize + word) * cols + c;
    let mut value = u64::from(qweight[at]) >> shift;
    if shift + bits_usize > 32 {
        value |= u64::from(qweight[at + cols]) << (32 - shift);
    }
    (value & ((1u64 << bits) - 1)) as u16
}

/// Row-major `[rows, cols]` codes from packed words.
pub fn unpack_codes(qweight: &[u32], rows: usize, cols: usize, bits: u32) -> Vec<u8> {
    (0..rows).flat_map(|r| (0..cols).map(move |c| packed_code(qweight, cols, bits, r, c))).collect()
}

impl PackedLinear {
    /// Packs a LUT matrix (no scales or shift).
    pub fn from_lut(lut: &LutMatrix) -> Result<Self> {
        lut.validate("quantized matrix")?;
        let channels_per_table = lut.granularity.channels_per_table(lut.cols)?;
        Ok(Self {
            rows: lut.rows,
            cols: lut.cols,
            bits: lut.bits,
            vector_dim: 1,
            channels_per_table,
            qweight: pack_codes(&lut.codes, lut.rows, lut.cols, lut.bits),
            tables: lut.tables.clone(),
            input_groups: lut.input_groups.clone(),
            sparse: csr_to_columns(lut),
            scales: None,
            input_shift: None,
            incoherence: None,
            column_parts: Vec::new(),
        })
    }

    /// Packs vector look-up tables (no scales or shift).
    pub fn from_vector(v: &VectorLut) -> Result<Self> {
        let code_bits = v.entries.trailing_zeros();
        let bits = code_bits / v.dim as u32;
        let cols = v.cols;
        let packed = Self {
            rows: v.rows,
            cols,
            bits,
            vector_dim: v.dim,
            channels_per_table: v.channels_per_table,
            qweight: pack_wide_codes(&v.codes, v.rows / v.dim.max(1), cols, code_bits),
            tables: v.codebooks.clone(),
            input_groups: None,
            sparse: SparseColumns { col_ptr: vec![0; cols + 1], row_idx: Vec::new(), values: Vec::new() },
            scales: None,
            input_shift: None,
            incoherence: None,
            column_parts: Vec::new(),
        };
        packed.validate("vector-quantized matrix")?;
        Ok(packed)
    }

    /// Entries per table: `2^code_bits`.
    pub fn levels(&self) -> usize {
        1 << self.code_bits()
    }

    /// Bits per code: `bits · vector_dim`.
    pub fn code_bits(&self) -> u32 {
        self.bits * self.vector_dim as u32
    }

    /// Codes per column: one per vector of `vector_dim` rows.
    pub fn code_rows(&self) -> usize {
        self.rows / self.vector_dim.max(1)
    }

    /// Whether the layer has vector tables (codes of several weights).
    pub fn is_vector(&self) -> bool {
        self.vector_dim > 1
    }

    pub fn num_tables(&self) -> usize {
        self.cols / self.channels_per_table.max(1)
    }

    /// How the tables are shared, as the quantizers name it.
    pub fn granularity(&self) -> Granularity {
        match self.channels_per_table {
            1 => Granularity::Channel,
            n if n == self.cols => Granularity::Tensor,
            n => Granularity::Group(n),
        }
    }

    /// The LUT matrix these words hold (scales and shift are not part of it). Scalar tables
    /// only: a vector layer (`is_vector`) has no such form.
    pub fn to_lut(&self) -> LutMatrix {
        assert!(!self.is_vector(), "to_lut of a vector-table layer: callers check is_vector");
        let mut outliers = crate::quant::lut::SparseOutliers::none(self.rows);
        let mut entries: Vec<(u32, u32, f32)> = Vec::with_capacity(self.sparse.len());
        for c in 0..self.cols {
            for i in self.sparse.col_ptr[c] as usize..self.sparse.col_ptr[c + 1] as usize {
                entries.push((self.sparse.row_idx[i], c as u32, self.sparse.values[i]));
            }
        }
        entries.sort_by_key(|&(r, c, _)| (r, c));
        for &(r, c, v) in &entries {
            outliers.row_ptr[r as usize + 1] += 1;
            outliers.col_idx.push(c);
            outliers.values.push(v);
        }
        for r in 0..self.rows {
            outliers.row_ptr[r + 1] += outliers.row_ptr[r];
        }
        LutMatrix {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            granularity: self.granularity(),
            tables: self.tables.clone(),
            codes: unpack_codes(&self.qweight, self.rows, self.cols, self.bits),
            input_groups: self.input_groups.clone(),
            outliers,
        }
    }

    /// The layer's output columns `cols` as a layer of their own (what a block of channels costs
    /// on its own: `--allocate-per channels:N`). The range must hold whole tables, or the layer
    /// have one table for all its columns (copied into the part); seed 000's
    /// input shift stays (it is per input row); incoherence processing mixes columns and is
    /// refused.
    pub fn columns(&self, cols: std::ops::Range<usize>) -> Result<Self> {
        let bad = |reason: String| Err(LoadError::InvalidSetting(reason));
        let cpt = self.channels_per_table.max(1);
        // One table for the whole layer (k-means per tensor, a uniform grid with per-channel
        // scales) serves any columns: the part keeps a copy.
        let shared = cpt == self.cols;
        if cols.is_empty() || cols.end > self.cols || (!shared && (!cols.start.is_multiple_of(cpt) || !cols.len().is_multiple_of(cpt))) {
            return bad(format!(
                "columns {}..{} of a {}-column layer with {cpt} channels per table do not hold whole tables",
                cols.start, cols.end, self.cols
            ));
        }
        if self.incoherence.is_some() {
            return bad("a layer with incoherence processing mixes its columns: it cannot be split".into());
        }
        let take = |values: &[f32], width: usize| -> Vec<f32> {
            values.chunks_exact(width).flat_map(|row| row[cols.clone()].iter().copied()).collect()
        };
        let qweight = self.qweight.chunks_exact(self.cols).flat_map(|row| row[cols.clone()].iter().copied()).collect();
        let per_table = self.levels() * self.vector_dim;
        let tables = if shared { self.tables.clone() } else { self.tables[cols.start / cpt * per_table..cols.end / cpt * per_table].to_vec() };
        let s = &self.sparse;
        let (first, last) = (s.col_ptr[cols.start], s.col_ptr[cols.end]);
        let sparse = SparseColumns {
            col_ptr: s.col_ptr[cols.start..=cols.end].iter().map(|&p| p - first).collect(),
            row_idx: s.row_idx[first as usize..last as usize].to_vec(),
            values: s.values[first as usize..last as usize].to_vec(),
        };
        let input_groups = self.input_groups.as_ref().map(|g| InputGroupScales {
            size: g.size,
            scales: take(&g.scales, self.cols),
            zeros: g.zeros.as_ref().map(|z| take(z, self.cols)),
        });
        Ok(Self {
            rows: self.rows,
            cols: cols.len(),
            bits: self.bits,
            vector_dim: self.vector_dim,
            channels_per_table: if shared { cols.len() } else { cpt },
            qweight,
            tables,
            input_groups,
            sparse,
            scales: self.scales.as_ref().map(|v| v[cols.clone()].to_vec()),
            input_shift: self.input_shift.clone(),
            incoherence: None,
            column_parts: Vec::new(),
        })
    }

    /// A layer made of `parts` side by side (the same input rows, their output columns in
    /// order): the packed form of a layer whose blocks of channels got different widths. Its
    /// own fields are empty; `bits` is the widest part's.
    pub fn from_parts(parts: Vec<PackedLinear>) -> Result<Self> {
        let first = parts.first().ok_or_else(|| LoadError::InvalidSetting("a layer of column parts needs at least one part".into()))?;
        let cols = parts.iter().map(|p| p.cols).sum();
        let layer = Self {
            rows: first.rows,
            cols,
            bits: parts.iter().map(|p| p.bits).max().unwrap_or(first.bits),
            vector_dim: 1,
            channels_per_table: cols,
            qweight: Vec::new(),
            tables: Vec::new(),
            input_groups: None,
            sparse: SparseColumns { col_ptr: vec![0; cols + 1], row_idx: Vec::new(), values: Vec::new() },
            scales: None,
            input_shift: None,
            incoherence: None,
            column_parts: parts,
        };
        layer.validate("layer of column parts")?;
        Ok(layer)
    }

    /// Whether the layer is made of column parts ([`Self::from_parts`]).
    pub fn is_split(&self) -> bool {
        !self.column_parts.is_empty()
    }

    /// Checks every size, index and value against the shape; `what` names the layer in errors.
    /// A file parser calls this before anything reads the words.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: what.to_string(), reason });
        if self.rows == 0 || self.cols == 0 {
            return bad(format!("empty shape {}x{}", self.rows, self.cols));
        }
        if self.is_split() {
            return self.validate_parts(what);
        }
        if !(1..=8).contains(&self.bits) {
            return bad(format!("{} bits; lutlab supports 1 to 8", self.bits));
        }
        if let Some(reason) = vector_layout_problem(self.vector_dim, self.bits, self.rows) {
            return bad(reason);
        }
        if self.is_vector() && (self.input_groups.is_some() || self.incoherence.is_some()) {
            return bad("vector tables with input-group scales or incoherence processing: lutlab writes neither".into());
        }
        if self.channels_per_table == 0 || !self.cols.is_multiple_of(self.channels_per_table) {
            return bad(format!("{} channels per table do not divide {} columns", self.channels_per_table, self.cols));
        }
        let words = blocks(self.code_rows()).checked_mul(self.code_bits() as usize).and_then(|w| w.checked_mul(self.cols));
        if words != Some(self.qweight.len()) {
            return bad(format!("{} packed words, expected {:?} for {}x{} at {} bits", self.qweight.len(), words, self.rows, self.cols, self.bits));
        }
        let entries = self.num_tables() * self.levels() * self.vector_dim;
        if self.tables.len() != entries {
            return bad(format!("{} table entries, expected {entries}", self.tables.len()));
        }
        if let Some(i) = self.tables.iter().position(|v| !v.is_finite()) {
            return bad(format!("table entry {i} is not finite"));
        }
        if let Some(groups) = &self.input_groups {
            groups.validate(self.rows, self.cols, what)?;
        }
        if let Some(bad_pad) = self.padding_with_codes() {
            return bad(format!("padding row {bad_pad} holds non-zero codes"));
        }
        let s = &self.sparse;
        let columns_ok = s.col_ptr.len() == self.cols + 1
            && s.col_ptr.first() == Some(&0)
            && s.col_ptr.windows(2).all(|w| w[0] <= w[1])
            && s.col_ptr.last().map(|&n| n as usize) == Some(s.values.len())
            && s.row_idx.len() == s.values.len();
        if !columns_ok {
            return bad("the sparse part is not a valid compressed-sparse-column matrix of this shape".into());
        }
        if let Some(&r) = s.row_idx.iter().find(|&&r| r as usize >= self.rows) {
            return bad(format!("sparse row index {r} is outside the {} input rows", self.rows));
        }
        if let Some(i) = s.values.iter().position(|v| !v.is_finite()) {
            return bad(format!("sparse value {i} is not finite"));
        }
        if let Some(incoherence) = &self.incoherence {
            if self.input_shift.is_some() {
                return bad("an input shift and incoherence processing together: the shift would act in the rotated basis".into());
            }
            incoherence.validate(self.rows, self.cols, what)?;
        }
        for (name, values, len) in [("scales", &self.scales, self.cols), ("input shift", &self.input_shift, self.rows)] {
            if let Some(v) = values {
                if v.len() != len {
                    return bad(format!("{} {name}, expected {len}", v.len()));
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return bad(format!("{name} hold a non-finite value"));
                }
            }
        }
        Ok(())
    }

    /// A layer of column parts: each part valid and whole, the same rows, the columns adding up,
    /// nothing stored beside them.
    fn validate_parts(&self, what: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: what.to_string(), reason });
        for (i, part) in self.column_parts.iter().enumerate() {
            part.validate(&format!("{what}, column part {i}"))?;
            if part.input_shift.is_some() || part.incoherence.is_some() {
                return bad(format!("column part {i} has an input shift or incoherence processing: both belong to a whole layer"));
            }
            if part.is_split() || part.rows != self.rows {
                return bad(format!("column part {i} is {}x{}{}, the layer has {} rows", part.rows, part.cols, if part.is_split() { " of parts" } else { "" }, self.rows));
            }
        }
        let cols: usize = self.column_parts.iter().map(|p| p.cols).sum();
        if cols != self.cols {
            return bad(format!("the column parts hold {cols} columns, the layer {}", self.cols));
        }
        let empty = self.qweight.is_empty()
            && self.tables.is_empty()
            && self.input_groups.is_none()
            && self.sparse.is_empty()
            && self.scales.is_none()
            && self.input_shift.is_none()
            && self.incoherence.is_none();
        if !empty {
            return bad("a layer of column parts stores everything in its parts".into());
        }
        Ok(())
    }

    /// A padding row (past `rows`, in the last block) with a non-zero code, if any: a writer that
    /// is not lutlab's, or corruption. Kernels never read them, but the inverse must be exact.
    fn padding_with_codes(&self) -> Option<usize> {
        let (code_rows, code_bits) = (self.code_rows(), self.code_bits());
        (code_rows..blocks(code_rows) * BLOCK_ROWS)
            .find(|&r| (0..self.cols).any(|c| packed_wide_code(&self.qweight, self.cols, code_bits, r, c) != 0))
    }

    /// The dense part of weight `(r, c)`: its table entry, through its input group's scale and
    /// zero point when the layer has them (no sparse correction, no column scale).
    pub fn dense_value(&self, r: usize, c: usize) -> f32 {
        self.dense_value_with(&self.tables, self.input_groups.as_ref(), r, c)
    }

    /// [`Self::dense_value`] with other tables and input groups of the same shapes (rounded
    /// copies, say) in place of the layer's.
    pub fn dense_value_with(&self, tables: &[f32], input_groups: Option<&InputGroupScales>, r: usize, c: usize) -> f32 {
        let d = self.vector_dim;
        let code = usize::from(packed_wide_code(&self.qweight, self.cols, self.code_bits(), r / d, c));
        let entry = tables[(c / self.channels_per_table * self.levels() + code) * d + r % d];
        match input_groups {
            Some(groups) => groups.apply(entry, r / groups.size, c, self.cols),
            None => entry,
        }
    }

    /// The `[in, out]` weights the layer multiplies by: `scale_c · (table[code] + sparse)`, taken
    /// back through its incoherence processing when it has one. The input shift is not folded in
    /// (it acts on the input; see [`Self::reference_matmul`]).
    pub fn effective_weights(&self) -> Vec<f32> {
        if self.is_split() {
            let parts: Vec<Vec<f32>> = self.column_parts.iter().map(PackedLinear::effective_weights).collect();
            let mut w = Vec::with_capacity(self.rows * self.cols);
            for r in 0..self.rows {
                for (part, weights) in self.column_parts.iter().zip(&parts) {
                    w.extend_from_slice(&weights[r * part.cols..(r + 1) * part.cols]);
                }
            }
            return w;
        }
        let mut w = if self.is_vector() { self.vector_weights() } else { self.to_lut().dequantize() };
        if let Some(scales) = &self.scales {
            for row in w.chunks_exact_mut(self.cols) {
                row.iter_mut().zip(scales).for_each(|(v, s)| *v *= s);
            }
        }
        match &self.incoherence {
            Some(incoherence) => incoherence.effective_weights(&w, self.rows, self.cols),
            None => w,
        }
    }

    /// A vector layer's table values plus its sparse part, `[rows, cols]`.
    fn vector_weights(&self) -> Vec<f32> {
        let mut w: Vec<f32> = (0..self.rows).flat_map(|r| (0..self.cols).map(move |c| (r, c))).map(|(r, c)| self.dense_value(r, c)).collect();
        let s = &self.sparse;
        for c in 0..self.cols {
            for i in s.col_ptr[c] as usize..s.col_ptr[c + 1] as usize {
                w[s.row_idx[i] as usize * self.cols + c] += s.values[i];
            }
        }
        w
    }

    /// CPU reference of the LUT matmul kernels: `y = (x − shift) · W + bias` with `W` the
    /// [`Self::effective_weights`], for `m` rows of `x` (`[m, rows]`), in f64 accumulation.
    pub fn reference_matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let w = self.effective_weights();
        let mut y = vec![0f32; m * self.cols];
        for t in 0..m {
            let xs: Vec<f64> = (0..self.rows)
                .map(|r| f64::from(x[t * self.rows + r]) - self.input_shift.as_ref().map_or(0.0, |s| f64::from(s[r])))
                .collect();
            for c in 0..self.cols {
                let acc: f64 = (0..self.rows).map(|r| xs[r] * f64::from(w[r * self.cols + c])).sum();
                y[t * self.cols + c] = (acc + bias.map_or(0.0, |b| f64::from(b[c]))) as f32;
            }
        }
        y
    }

    /// Bytes of this layer in the file: words, f32 tables and group scales, sparse part, scales
    /// and shift.
    pub fn stored_bytes(&self) -> usize {
        if self.is_split() {
            return self.column_parts.iter().map(PackedLinear::stored_bytes).sum();
        }
        let groups = self.input_groups.as_ref().map_or(0, |g| g.scales.len() + g.zeros.as_ref().map_or(0, Vec::len));
        4 * (self.qweight.len()
            + self.tables.len()
            + groups
            + self.sparse.col_ptr.len()
            + 2 * self.sparse.len()
            + self.scales.as_ref().map_or(0, Vec::len)
            + self.input_shift.as_ref().map_or(0, Vec::len))
    }
}

/// What is wrong with vectors of `dim` rows at `bits` per weight over `rows` rows, if anything:
/// `dim` 1, 2 or 4, dividing `rows`, codes of at most 12 bits (2^12-entry tables).
pub fn vector_layout_problem(dim: usize, bits: u32, rows: usize) -> Option<String> {
    if !matches!(dim, 1 | 2 | 4) {
        return Some(format!("vector_dim {dim}; lutlab supports 1 (scalar tables), 2 and 4"));
    }
    if !rows.is_multiple_of(dim) {
        return Some(format!("vectors of {dim} rows do not divide {rows} rows"));
    }
    if dim > 1 && bits as usize * dim > 12 {
        return Some(format!("codes of {} bits ({bits} bits per weight in vectors of {dim}); vector tables hold at most 2^12 entries", bits as usize * dim));
    }
    None
}

/// The CSR-by-input-row outliers of a LUT matrix, regrouped by output column (rows ascending).
fn csr_to_columns(lut: &LutMatrix) -> SparseColumns {
    let o = &lut.outliers;
    let mut counts = vec![0u32; lut.cols + 1];
    for &c in &o.col_idx {
        counts[c as usize + 1] += 1;
    }
    for c in 0..lut.cols {
        counts[c + 1] += counts[c];
    }
    let mut next = counts.clone();
    let mut row_idx = vec![0u32; o.len()];
    let mut values = vec![0f32; o.len()];
    for r in 0..lut.rows {
        for i in o.row_ptr[r] as usize..o.row_ptr[r + 1] as usize {
            let slot = &mut next[o.col_idx[i] as usize];
            row_idx[*slot as usize] = r as u32;
            values[*slot as usize] = o.values[i];
            *slot += 1;
        }
    }
    SparseColumns { col_ptr: counts, row_idx, values }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::kmeans::rng::SplitMix64;
    use crate::quant::lut::SparseOutliers;

    fn random_lut(rng: &mut SplitMix64, rows: usize, cols: usize, bits: u32, granularity: Granularity, outliers: usize) -> LutMatrix {
        let levels = 1usize << bits;
        let tables = granularity.tables(cols).unwrap();
        let codes = (0..rows * cols).map(|_| (rng.next_u64() % levels as u64) as u8).collect();
        let table_values = (0..tables * levels).map(|_| rng.next_f64() as f32 - 0.5).collect();
        let mut positions: Vec<usize> = (0..outliers).map(|_| (rng.next_u64() % (rows * cols) as u64) as usize).collect();
        positions.sort_unstable();
        positions.dedup();
        let mut o = SparseOutliers::none(rows);
        for &p in &positions {
            o.row_ptr[p / cols + 1] += 1;
            o.col_idx.push((p % cols) as u32);
            o.values.push(rng.next_f64() as f32);
        }
        for r in 0..rows {
            o.row_ptr[r + 1] += o.row_ptr[r];
        }
        LutMatrix { rows, cols, bits, granularity, tables: table_values, codes, input_groups: None, outliers: o }
    }

    /// Property: packing then unpacking is the identity, for every bit width and odd shapes.
    #[test]
    fn pack_unpack_round_trips_over_random_shapes_and_bits() {
        let mut rng = SplitMix64::new(7);
        for case in 0..200 {
            let bits = 1 + (case % 8) as u32;
            let rows = 1 + (rng.next_u64() % 100) as usize;
            let cols = 1 + (rng.next_u64() % 9) as usize;
            let levels = 1u64 << bits;
            let codes: Vec<u8> = (0..rows * cols).map(|_| (rng.next_u64() % levels) as u8).collect();
            let packed = pack_codes(&codes, rows, cols, bits);
            assert_eq!(packed.len(), blocks(rows) * bits as usize * cols);
            assert_eq!(unpack_codes(&packed, rows, cols, bits), codes, "rows {rows} cols {cols} bits {bits}");
        }
    }

    #[test]
    fn three_bit_codes_cross_word_boundaries_as_in_squeezellm() {
        // Row 10's code sits at bits 30..33: two bits in word 0, one in word 1.
        let mut codes = vec![0u8; 32];
        codes[10] = 0b111;
        let packed = pack_codes(&codes, 32, 1, 3);
        assert_eq!(packed, vec![0b11 << 30, 0b1, 0]);
    }

    #[test]
    fn lut_round_trips_through_the_packed_form() {
        let mut rng = SplitMix64::new(3);
        for (bits, granularity) in [(2, Granularity::Tensor), (3, Granularity::Channel), (4, Granularity::Group(3)), (8, Granularity::Channel)] {
            let lut = random_lut(&mut rng, 45, 6, bits, granularity, 20);
            let packed = PackedLinear::from_lut(&lut).unwrap();
            packed.validate("test").unwrap();
            assert_eq!(packed.to_lut(), lut);
            assert_eq!(packed.effective_weights(), lut.dequantize());
        }
    }

    /// A block of columns on its own is the same weights (codes, tables, outliers, input groups,
    /// scales), and ranges that cut a group's table are refused.
    #[test]
    fn columns_are_the_same_weights_on_their_own() {
        let mut rng = SplitMix64::new(11);
        for granularity in [Granularity::Channel, Granularity::Group(2), Granularity::Tensor] {
            let mut lut = random_lut(&mut rng, 70, 8, 3, granularity, 40);
            let groups = 3usize;
            lut.input_groups = Some(InputGroupScales {
                size: 32,
                scales: (0..groups * 8).map(|i| 0.5 + i as f32 / 10.0).collect(),
                zeros: Some((0..groups * 8).map(|i| (i % 3) as f32).collect()),
            });
            let mut packed = PackedLinear::from_lut(&lut).unwrap();
            packed.scales = Some((0..8).map(|c| 1.0 + c as f32).collect());
            let whole = packed.effective_weights();
            for range in [0..2, 2..6, 6..8, 0..8] {
                let part = packed.columns(range.clone()).unwrap();
                part.validate("part").unwrap();
                let expected: Vec<f32> = whole.chunks_exact(8).flat_map(|row| row[range.clone()].to_vec()).collect();
                assert_eq!(part.effective_weights(), expected, "{granularity:?} {range:?}");
            }
            let refused = packed.columns(0..8).and_then(|p| p.columns(1..3));
            // A range that cuts a group's table is refused; one shared table serves any columns.
            assert!(matches!(granularity, Granularity::Channel | Granularity::Tensor) == refused.is_ok());
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut rng = SplitMix64::new(5);
        let packed = PackedLinear::from_lut(&random_lut(&mut rng, 40, 4, 3, Granularity::Channel, 5)).unwrap();
        let error = |p: PackedLinear| p.validate("h.0.mlp.c_fc").unwrap_err().to_string();
        let mut p = packed.clone();
        p.qweight.pop();
        assert!(error(p).contains("packed words"));
        let mut p = packed.clone();
        p.sparse.row_idx[0] = 40;
        assert!(error(p).contains("sparse row index 40"));
        let mut p = packed.clone();
        p.tables[1] = f32::NAN;
        assert!(error(p).contains("table entry 1"));
        let mut p = packed.clone();
        p.qweight[(blocks(40) * 3 - 1) * 4] |= 1 << 31; // row 63's code: padding
        assert!(error(p).contains("padding row"));
        let mut p = packed;
        p.scales = Some(vec![1.0; 3]);
        assert!(error(p).contains("3 scales, expected 4"));
    }

    #[test]
    fn reference_matmul_applies_shift_scale_and_bias() {
        let mut rng = SplitMix64::new(11);
        let mut packed = PackedLinear::from_lut(&random_lut(&mut rng, 33, 5, 4, Granularity::Tensor, 3)).unwrap();
        let x: Vec<f32> = (0..2 * 33).map(|_| rng.next_f64() as f32).collect();
        let shift: Vec<f32> = (0..33).map(|_| rng.next_f64() as f32).collect();
        let scales: Vec<f32> = (0..5).map(|i| 1.0 + i as f32).collect();
        let bias = [0.5f32; 5];
        packed.input_shift = Some(shift.clone());
        packed.scales = Some(scales.clone());
        let y = packed.reference_matmul(&x, 2, Some(&bias));
        let w = packed.to_lut().dequantize();
        for t in 0..2 {
            for c in 0..5 {
                let dot: f64 = (0..33).map(|r| f64::from(x[t * 33 + r] - shift[r]) * f64::from(w[r * 5 + c])).sum();
                let expected = dot * f64::from(scales[c]) + 0.5;
                assert!((f64::from(y[t * 5 + c]) - expected).abs() < 1e-5);
            }
        }
    }

    /// A random vector-table layer: `entries` codes per table, `[tables][entries][dim]` values.
    fn random_vector_lut(rng: &mut SplitMix64, rows: usize, cols: usize, dim: usize, bits: u32, channels_per_table: usize) -> VectorLut {
        let entries = 1usize << (bits as usize * dim);
        let codes = (0..rows / dim * cols).map(|_| (rng.next_u64() % entries as u64) as u16).collect();
        let codebooks = (0..cols / channels_per_table * entries * dim).map(|_| rng.next_f64() as f32 - 0.5).collect();
        VectorLut { rows, cols, dim, channels_per_table, codebooks, entries, codes }
    }

    /// Vector codes of up to 12 bits pack and unpack like scalar ones, and a packed vector layer
    /// stands for exactly the weights its `VectorLut` does.
    #[test]
    fn vector_tables_pack_to_the_weights_they_stand_for() {
        let mut rng = SplitMix64::new(3);
        for (dim, bits, rows, cols, per_table) in [(2, 2, 70, 5, 5), (2, 3, 64, 6, 1), (4, 2, 132, 4, 2), (4, 3, 36, 3, 3), (2, 1, 2, 1, 1)] {
            let v = random_vector_lut(&mut rng, rows, cols, dim, bits, per_table);
            let packed = PackedLinear::from_vector(&v).unwrap();
            assert_eq!((packed.code_bits(), packed.code_rows()), (bits * dim as u32, rows / dim));
            assert_eq!(packed.effective_weights(), v.dequantize(), "dim {dim} bits {bits}");
            let codes: Vec<u16> = (0..rows / dim).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| packed_wide_code(&packed.qweight, cols, packed.code_bits(), r, c)).collect();
            assert_eq!(codes, v.codes);
        }
    }

    #[test]
    fn vector_layouts_that_cannot_be_stored_are_named() {
        assert!(vector_layout_problem(3, 2, 12).unwrap().contains("vector_dim 3"));
        assert!(vector_layout_problem(4, 2, 10).unwrap().contains("do not divide 10 rows"));
        assert!(vector_layout_problem(4, 4, 16).unwrap().contains("codes of 16 bits"));
        assert_eq!(vector_layout_problem(4, 3, 16), None);
        let mut rng = SplitMix64::new(4);
        let mut p = PackedLinear::from_vector(&random_vector_lut(&mut rng, 8, 2, 2, 2, 2)).unwrap();
        p.tables.pop();
        assert!(p.validate("v").unwrap_err().to_string().contains("table entries, expected 32"));
    }
}
