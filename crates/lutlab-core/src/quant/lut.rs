//! The quantized form of one weight matrix: tables, codes and sparse outliers.

use crate::error::{LoadError, Result};

/// Which weights share one table. Tables always cover whole output channels (columns of the
/// `[in, out]` matrix), so a matmul kernel picks a table per output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// One table for the whole matrix.
    Tensor,
    /// One table per output channel.
    Channel,
    /// One table per group of this many consecutive output channels.
    Group(usize),
}

impl Granularity {
    /// Output channels per table for a matrix of `out` columns; errors when a group size does not
    /// divide the channels.
    pub fn channels_per_table(self, out: usize) -> Result<usize> {
        match self {
            Granularity::Tensor => Ok(out),
            Granularity::Channel => Ok(1),
            Granularity::Group(0) => Err(LoadError::InvalidSetting("group size must be at least 1".into())),
            Granularity::Group(g) if !out.is_multiple_of(g) => Err(LoadError::InvalidSetting(format!(
                "group size {g} does not divide the {out} output channels"
            ))),
            Granularity::Group(g) => Ok(g),
        }
    }

    pub fn tables(self, out: usize) -> Result<usize> {
        Ok(out / self.channels_per_table(out)?)
    }
}

impl std::str::FromStr for Granularity {
    type Err = LoadError;
    /// `tensor`, `channel`, `group` (128 channels) or `group:G`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tensor" => Ok(Self::Tensor),
            "channel" => Ok(Self::Channel),
            "group" => Ok(Self::Group(128)),
            _ => s
                .strip_prefix("group:")
                .and_then(|g| g.parse().ok())
                .map(Self::Group)
                .ok_or_else(|| LoadError::InvalidSetting(format!("granularity `{s}`: use tensor, channel, group or group:G"))),
        }
    }
}

/// Weights kept (nearly) exactly, in compressed sparse rows over the `[in, out]` matrix. Each
/// value is the *correction* `w - table[code]` at its position, so dense + sparse reconstructs
/// the original weight to f32 rounding and a kernel simply adds the two products.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseOutliers {
    /// `row_ptr[r]..row_ptr[r + 1]` index the outliers of input row `r`; `rows + 1` entries.
    pub row_ptr: Vec<u32>,
    pub col_idx: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseOutliers {
    /// No outliers in a matrix of `rows` input rows.
    pub fn none(rows: usize) -> Self {
        Self { row_ptr: vec![0; rows + 1], col_idx: Vec::new(), values: Vec::new() }
    }
    pub fn len(&self) -> usize {
        self.values.len()
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Input rows per group of [`InputGroupScales`] must be a multiple of this: the packed format's
/// blocks of 32 rows (`quant::packed::BLOCK_ROWS`), so a kernel applies one scale per block.
pub const INPUT_GROUP_MULTIPLE: usize = 32;

/// A scale and zero point per output channel and group of `size` consecutive input rows (GPTQ's
/// and AWQ's `groupsize`): weight `(r, c)` is `(table[code] − zero) · scale` with the group's
/// `scale = scales[g · cols + c]`, `zero = zeros[g · cols + c]` (0 without zeros), `g = r / size`.
/// The tables then hold the unscaled grid (the integers `q`, or a minifloat's values), shared.
#[derive(Clone, Debug, PartialEq)]
pub struct InputGroupScales {
    pub size: usize,
    /// `[⌈rows / size⌉, cols]` row-major.
    pub scales: Vec<f32>,
    /// Same layout, in units of the grid (`None`: symmetric, all 0).
    pub zeros: Option<Vec<f32>>,
}

impl InputGroupScales {
    /// The value of table entry `entry` at group `g`, column `c` of a `cols`-wide matrix.
    pub fn apply(&self, entry: f32, g: usize, c: usize, cols: usize) -> f32 {
        let at = g * cols + c;
        let zero = self.zeros.as_ref().map_or(0.0, |z| z[at]);
        (entry - zero) * self.scales[at]
    }

    /// Checks the sizes and values against a `rows x cols` matrix; `what` names it.
    pub fn validate(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: what.to_string(), reason });
        if self.size == 0 || !self.size.is_multiple_of(INPUT_GROUP_MULTIPLE) {
            return bad(format!(
                "input groups of {} rows: packed groups must be a positive multiple of {INPUT_GROUP_MULTIPLE} rows",
                self.size
            ));
        }
        let expected = rows.div_ceil(self.size) * cols;
        for (name, values) in [("group scales", Some(&self.scales)), ("group zeros", self.zeros.as_ref())] {
            let Some(values) = values else { continue };
            if values.len() != expected {
                return bad(format!("{} {name}, expected {expected} ({} groups of {} rows x {cols} columns)", values.len(), rows.div_ceil(self.size), self.size));
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return bad(format!("{name}: entry {i} is not finite"));
            }
        }
        Ok(())
    }

    /// Bits to store the scales and zeros as f16.
    pub fn storage_bits(&self) -> u64 {
        16 * (self.scales.len() + self.zeros.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// A weight matrix as LUTs. `codes[r * cols + c]` indexes `tables[t * 2^bits ..]` with
/// `t = c / channels_per_table`; `input_groups`, when present, scales and shifts that entry per
/// group of input rows; `outliers` adds exact corrections at a few positions.
#[derive(Clone, Debug, PartialEq)]
pub struct LutMatrix {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub granularity: Granularity,
    pub tables: Vec<f32>,
    pub codes: Vec<u8>,
    pub input_groups: Option<InputGroupScales>,
    pub outliers: SparseOutliers,
}

impl LutMatrix {
    pub fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Table index of output column `col`.
    pub fn table_of(&self, col: usize) -> usize {
        let per_table = self.granularity.channels_per_table(self.cols).unwrap_or(self.cols);
        col / per_table
    }

    /// The values channel `col`'s codes stand for in input group `group` (its table through the
    /// group's scale and zero point; without input groups, its table).
    pub fn channel_values(&self, col: usize, group: usize) -> Vec<f32> {
        let levels = self.levels();
        let table = &self.tables[self.table_of(col) * levels..(self.table_of(col) + 1) * levels];
        match &self.input_groups {
            Some(groups) => table.iter().map(|&entry| groups.apply(entry, group, col, self.cols)).collect(),
            None => table.to_vec(),
        }
    }

    /// Checks that codes, tables and outliers agree with the shape; `what` names the matrix.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |reason: String| Err(LoadError::BadConfig { file: what.to_string(), reason });
        if !(1..=8).contains(&self.bits) {
            return bad(format!("{} bits; lutlab supports 1 to 8", self.bits));
        }
        let tables = self.granularity.tables(self.cols)?;
        if self.tables.len() != tables * self.levels() {
            return bad(format!("{} table entries, expected {}", self.tables.len(), tables * self.levels()));
        }
        if self.codes.len() != self.rows * self.cols {
            return bad(format!("{} codes for a {}x{} matrix", self.codes.len(), self.rows, self.cols));
        }
        if let Some(&code) = self.codes.iter().find(|&&c| usize::from(c) >= self.levels()) {
            return bad(format!("code {code} does not fit {} bits", self.bits));
        }
        let o = &self.outliers;
        let csr_ok = o.row_ptr.len() == self.rows + 1
            && o.row_ptr.windows(2).all(|w| w[0] <= w[1])
            && o.row_ptr.last().map(|&n| n as usize) == Some(o.values.len())
            && o.col_idx.len() == o.values.len()
            && o.col_idx.iter().all(|&c| (c as usize) < self.cols);
        if !csr_ok {
            return bad("outliers are not a valid CSR matrix of its shape".into());
        }
        if let Some(groups) = &self.input_groups {
            groups.validate(self.rows, self.cols, what)?;
        }
        Ok(())
    }

    /// The `[in, out]` weights this matrix stands for (the CPU reference of every LUT kernel).
    pub fn dequantize(&self) -> Vec<f32> {
        let levels = self.levels();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let code = usize::from(self.codes[r * self.cols + c]);
                let entry = self.tables[self.table_of(c) * levels + code];
                out.push(match &self.input_groups {
                    Some(groups) => groups.apply(entry, r / groups.size, c, self.cols),
                    None => entry,
                });
            }
        }
        let o = &self.outliers;
        for r in 0..self.rows.min(o.row_ptr.len().saturating_sub(1)) {
            for i in o.row_ptr[r] as usize..o.row_ptr[r + 1] as usize {
                out[r * self.cols + o.col_idx[i] as usize] += o.values[i];
            }
        }
        out
    }
}

impl LutMatrix {
    /// Bits to store this matrix packed: codes, f16 tables, f16 group scales and zeros, and the
    /// sparse part (f32 value and u32 column per outlier, u32 row pointers).
    pub fn storage_bits(&self) -> u64 {
        let codes = (self.rows * self.cols) as u64 * u64::from(self.bits);
        let tables = self.tables.len() as u64 * 16;
        let groups = self.input_groups.as_ref().map_or(0, InputGroupScales::storage_bits);
        let sparse = if self.outliers.is_empty() { 0 } else { self.outliers.len() as u64 * 64 + self.outliers.row_ptr.len() as u64 * 32 };
        codes + tables + groups + sparse
    }
}
