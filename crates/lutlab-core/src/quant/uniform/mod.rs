//! Uniform round-to-nearest weight quantizers: integers (symmetric, or asymmetric with a zero
//! point) and minifloats (eXmY, OCP and FNUZ), per tensor, per output channel or per group,
//! with scales from `stats`, `mse` or `hqo`, float or power-of-two — the weight options of
//! Brevitas' LLM example.
//!
//! A uniform code is a LUT too: each scale group gets a `2^bits`-entry table holding its
//! representable values (`scale * (q - zero_point)` for integers, `scale * value` for
//! minifloats), and each weight a code into it. Codes are `q - qmin` for integers (so tables
//! increase) and the format's own bit pattern for minifloats.
//!
//! Groups: [`UniformGranularity::InputGroup`] is what Brevitas (and GPTQ, AWQ, HQQ) call
//! per-group: `g` consecutive *input* rows within one output column of the `[in, out]` Conv1D
//! matrix. As a [`LutMatrix`] such a result is one shared table of the unscaled grid plus a
//! scale and zero point per group ([`InputGroupScales`], GPTQ's packed layout), which needs `g`
//! to be a multiple of 32 (see [`UniformResult::to_lut`]); tensor, channel and output-column
//! groups ([`UniformGranularity::OutputGroup`]) become a table per group.

pub mod format;
pub mod scale;

pub use format::{FloatVariant, MiniFloat, NumberFormat};
pub use scale::{ScaleStats, ScaleType, po2_ceil};

use super::lut::{Granularity, InputGroupScales, LutMatrix, SparseOutliers, INPUT_GROUP_MULTIPLE};
use crate::error::{LoadError, Result};
use format::Grid;
use std::fmt;
use std::str::FromStr;

/// Which weights share one scale (and zero point, and table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UniformGranularity {
    /// One scale for the whole matrix.
    Tensor,
    /// One scale per output channel (column).
    Channel,
    /// One scale per `g` consecutive output channels (the shared [`Granularity::Group`]).
    OutputGroup(usize),
    /// One scale per `g` consecutive input rows within each output channel (Brevitas'
    /// `per_group`, `group_dim` over the input features). Scales are laid out `[in / g, out]`.
    InputGroup(usize),
}

impl UniformGranularity {
    /// Number of scale groups of a `rows x cols` matrix; errors when a group size is 0 or does
    /// not divide its dimension.
    pub fn groups(self, rows: usize, cols: usize) -> Result<usize> {
        match self {
            UniformGranularity::Tensor => Ok(1),
            UniformGranularity::Channel => Ok(cols),
            UniformGranularity::OutputGroup(g) => Granularity::Group(g).tables(cols),
            UniformGranularity::InputGroup(0) => Err(LoadError::InvalidSetting("group size must be at least 1".into())),
            UniformGranularity::InputGroup(g) if !rows.is_multiple_of(g) => Err(LoadError::InvalidSetting(format!(
                "group size {g} does not divide the {rows} input rows (groups run along the input dimension \
                 within each output channel)"
            ))),
            UniformGranularity::InputGroup(g) => Ok(rows / g * cols),
        }
    }

    /// The scale group of weight `(row, col)`; assumes [`Self::groups`] succeeded.
    pub fn group_of(self, row: usize, col: usize, cols: usize) -> usize {
        match self {
            UniformGranularity::Tensor => 0,
            UniformGranularity::Channel => col,
            UniformGranularity::OutputGroup(g) => col / g.max(1),
            UniformGranularity::InputGroup(g) => row / g.max(1) * cols + col,
        }
    }

    /// Flat indices (`row * cols + col`) of group `group`, row-major.
    fn indices(self, group: usize, rows: usize, cols: usize, out: &mut Vec<usize>) {
        out.clear();
        match self {
            UniformGranularity::Tensor => out.extend(0..rows * cols),
            UniformGranularity::Channel => out.extend((0..rows).map(|r| r * cols + group)),
            UniformGranularity::OutputGroup(g) => {
                for r in 0..rows {
                    out.extend((group * g..(group + 1) * g).map(|c| r * cols + c));
                }
            }
            UniformGranularity::InputGroup(g) => {
                let (block, col) = (group / cols, group % cols);
                out.extend((block * g..(block + 1) * g).map(|r| r * cols + col));
            }
        }
    }

    /// The shared LUT granularity, where one exists.
    pub fn lut_granularity(self, rows: usize) -> Option<Granularity> {
        match self {
            UniformGranularity::Tensor => Some(Granularity::Tensor),
            UniformGranularity::Channel => Some(Granularity::Channel),
            UniformGranularity::OutputGroup(g) => Some(Granularity::Group(g)),
            UniformGranularity::InputGroup(g) if g == rows => Some(Granularity::Channel),
            UniformGranularity::InputGroup(_) => None,
        }
    }
}

impl From<Granularity> for UniformGranularity {
    fn from(g: Granularity) -> Self {
        match g {
            Granularity::Tensor => Self::Tensor,
            Granularity::Channel => Self::Channel,
            Granularity::Group(g) => Self::OutputGroup(g),
        }
    }
}

impl fmt::Display for UniformGranularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UniformGranularity::Tensor => f.write_str("tensor"),
            UniformGranularity::Channel => f.write_str("channel"),
            UniformGranularity::OutputGroup(g) => write!(f, "channel-group:{g}"),
            UniformGranularity::InputGroup(g) => write!(f, "group:{g}"),
        }
    }
}

impl FromStr for UniformGranularity {
    type Err = LoadError;
    /// `tensor`, `channel`, `group` (128 input rows, Brevitas' per-group), `group:G`, or
    /// `channel-group:G` (G consecutive output channels, the LUT kernels' grouping).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            LoadError::InvalidSetting(format!(
                "granularity `{s}`: use tensor, channel, group, group:G (G input rows per output channel) or \
                 channel-group:G (G output channels)"
            ))
        };
        match s.trim() {
            "tensor" => Ok(Self::Tensor),
            "channel" => Ok(Self::Channel),
            "group" => Ok(Self::InputGroup(128)),
            other => {
                if let Some(g) = other.strip_prefix("group:") {
                    g.parse().map(Self::InputGroup).map_err(|_| bad())
                } else if let Some(g) = other.strip_prefix("channel-group:") {
                    g.parse().map(Self::OutputGroup).map_err(|_| bad())
                } else {
                    Err(bad())
                }
            }
        }
    }
}

/// Every option of a uniform quantizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformSettings {
    /// 2 to 8.
    pub bits: u32,
    pub format: NumberFormat,
    /// Symmetric (signed grid, no zero point) or asymmetric (unsigned grid and a zero point;
    /// integers only).
    pub symmetric: bool,
    pub granularity: UniformGranularity,
    pub scale_stats: ScaleStats,
    pub scale_type: ScaleType,
    /// Asymmetric grids: round each zero point to an integer (GPTQ's and AutoGPTQ's quantizer,
    /// Brevitas' `--quantize-weight-zero-point`), so it is exactly a grid level; otherwise it is
    /// `−low / scale` unrounded.
    pub integer_zero_point: bool,
}

impl Default for UniformSettings {
    /// 4-bit asymmetric integers, groups of 128 input rows, min-max float scales.
    fn default() -> Self {
        Self {
            bits: 4,
            format: NumberFormat::Int,
            symmetric: false,
            granularity: UniformGranularity::InputGroup(128),
            scale_stats: ScaleStats::Stats,
            scale_type: ScaleType::Float,
            integer_zero_point: false,
        }
    }
}

impl UniformSettings {
    /// Table entries per group: `2^bits`.
    pub fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Checks every option on its own and against a `rows x cols` matrix.
    pub fn validate(&self, rows: usize, cols: usize) -> Result<()> {
        self.format.check_bits(self.bits)?;
        if !self.symmetric && matches!(self.format, NumberFormat::Float(_)) {
            return Err(LoadError::InvalidSetting(format!(
                "format {} is a sign-magnitude float and has no zero point: use symmetric quantization",
                self.format
            )));
        }
        self.scale_stats.check()?;
        if rows.checked_mul(cols).is_none() {
            return Err(LoadError::InvalidSetting(format!("a {rows}x{cols} matrix is too large")));
        }
        if rows == 0 || cols == 0 {
            return Err(LoadError::InvalidSetting(format!("cannot quantize an empty {rows}x{cols} matrix")));
        }
        self.granularity.groups(rows, cols)?;
        Ok(())
    }
}

/// A uniformly quantized `[in, out]` matrix: one `2^bits` table per scale group, a code per
/// weight, and the scales and zero points that generated the tables.
#[derive(Clone, Debug, PartialEq)]
pub struct UniformResult {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub granularity: UniformGranularity,
    /// `tables[group * 2^bits + code]`; group as [`UniformGranularity::group_of`].
    pub tables: Vec<f32>,
    /// `codes[row * cols + col]`.
    pub codes: Vec<u8>,
    /// One per group.
    pub scales: Vec<f32>,
    /// One per group, in units of the scale (`table = (q - zp) * scale`); 0 when symmetric.
    pub zero_points: Vec<f32>,
    /// The unscaled value of each code: the integer `q`, or the minifloat's value (so a group's
    /// table is `(grid[code] - zp) * scale`).
    pub grid: Vec<f32>,
}

impl UniformResult {
    pub fn levels(&self) -> usize {
        1 << self.bits
    }

    pub fn group_of(&self, row: usize, col: usize) -> usize {
        self.granularity.group_of(row, col, self.cols)
    }

    /// The `[in, out]` weights the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let levels = self.levels();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let code = usize::from(self.codes[r * self.cols + c]);
                out.push(self.tables[self.group_of(r, c) * levels + code]);
            }
        }
        out
    }

    /// The same result as the shared LUT type, for the packed format and LUT kernels. Tables
    /// there are per output column (or group of columns); input-row groups become the shared
    /// grid with a scale and zero point per group, which must then be a multiple of 32 rows.
    pub fn to_lut(&self) -> Result<LutMatrix> {
        let per_channel = matches!(self.granularity.lut_granularity(self.rows), Some(Granularity::Channel));
        let (granularity, tables, input_groups) = match (self.granularity.lut_granularity(self.rows), self.granularity) {
            // A scale (and zero point) per channel is stored as such, one input group spanning
            // every row, not as a 2^bits-entry table per channel: what the bits-per-weight
            // report counts is what the file holds.
            _ if per_channel => {
                let size = self.rows.next_multiple_of(INPUT_GROUP_MULTIPLE);
                (Granularity::Tensor, self.grid.clone(), Some(input_group_scales(size, &self.scales, &self.zero_points)?))
            }
            (Some(granularity), _) => (granularity, self.tables.clone(), None),
            (None, UniformGranularity::InputGroup(size)) => {
                (Granularity::Tensor, self.grid.clone(), Some(input_group_scales(size, &self.scales, &self.zero_points)?))
            }
            (None, other) => return Err(LoadError::InvalidSetting(format!("granularity {other} has no look-up-table form"))),
        };
        let lut = LutMatrix {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            granularity,
            tables,
            codes: self.codes.clone(),
            input_groups,
            outliers: SparseOutliers::none(self.rows),
        };
        lut.validate("uniform quantizer output")?;
        Ok(lut)
    }
}

/// Scales and zero points laid out `[rows / size, cols]` (one per input group and output column)
/// as a LUT's input groups; zero points that are all 0 (symmetric grids) are not stored.
pub fn input_group_scales(size: usize, scales: &[f32], zero_points: &[f32]) -> Result<InputGroupScales> {
    if !size.is_multiple_of(INPUT_GROUP_MULTIPLE) {
        return Err(LoadError::InvalidSetting(format!(
            "groups of {size} input rows have no packed form: the packed format and LUT kernels take groups of a \
             multiple of {INPUT_GROUP_MULTIPLE} rows (GPTQ's usual 32, 64, 128)"
        )));
    }
    let zeros = zero_points.iter().any(|&z| z != 0.0).then(|| zero_points.to_vec());
    Ok(InputGroupScales { size, scales: scales.to_vec(), zeros })
}

/// The unscaled value of each code of `settings`' grid (see [`UniformResult::grid`]).
pub fn grid_levels(settings: &UniformSettings) -> Result<Vec<f32>> {
    let grid = Grid::new(settings.format, settings.bits, settings.symmetric)?;
    Ok((0..settings.levels()).map(|code| grid.table_value(code as u8, 1.0, 0.0)).collect())
}

/// Quantizes a row-major `[rows, cols]` (`[in, out]`) matrix with round-to-nearest.
pub fn quantize_uniform(
    weights: &[f32],
    rows: usize,
    cols: usize,
    settings: &UniformSettings,
) -> Result<UniformResult> {
    settings.validate(rows, cols)?;
    if weights.len() != rows * cols {
        return Err(LoadError::InvalidSetting(format!("{} weights given for a {rows}x{cols} matrix", weights.len())));
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
        return Err(LoadError::InvalidSetting(format!(
            "weight {i} (row {}, column {}) is {}: only finite weights can be quantized",
            i / cols,
            i % cols,
            weights[i]
        )));
    }
    let grid = Grid::new(settings.format, settings.bits, settings.symmetric)?;
    let levels = 1usize << settings.bits;
    let groups = settings.granularity.groups(rows, cols)?;
    let mut codes = vec![0u8; rows * cols];
    let mut tables = Vec::with_capacity(groups * levels);
    let mut scales = Vec::with_capacity(groups);
    let mut zero_points = Vec::with_capacity(groups);
    let params = group_params(weights, rows, cols, settings, &grid, groups)?;
    // Row by row, rows split over the cores.
    crate::parallel::for_row_chunks(&mut codes, cols, |first, chunk| {
        for (r, row) in chunk.chunks_exact_mut(cols).enumerate() {
            let at = (first + r) * cols;
            for (c, code) in row.iter_mut().enumerate() {
                let p = &params[settings.granularity.group_of(first + r, c, cols)];
                *code = grid.encode(weights[at + c], p.scale, p.zero_point);
            }
        }
    });
    for p in &params {
        // Minifloat tables are indexed by bit pattern; NaN/Inf patterns (never produced) hold 0.
        tables.extend((0..levels).map(|code| grid.table_value(code as u8, p.scale, p.zero_point)));
        scales.push(p.scale);
        zero_points.push(p.zero_point);
    }
    Ok(UniformResult {
        rows,
        cols,
        bits: settings.bits,
        granularity: settings.granularity,
        tables,
        codes,
        scales,
        zero_points,
        grid: (0..levels).map(|code| grid.table_value(code as u8, 1.0, 0.0)).collect(),
    })
}

/// Every group's scale and zero point. Groups are independent, so natively the searching
/// methods (`mse`, `hqo`) split them over threads; the result does not depend on the split.
fn group_params(
    weights: &[f32],
    rows: usize,
    cols: usize,
    settings: &UniformSettings,
    grid: &Grid,
    groups: usize,
) -> Result<Vec<scale::GroupParams>> {
    let work = |range: std::ops::Range<usize>| {
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        range
            .map(|group| {
                settings.granularity.indices(group, rows, cols, &mut indices);
                values.clear();
                values.extend(indices.iter().map(|&i| weights[i]));
                let mut p = scale::estimate(&values, grid, settings.symmetric, settings.scale_stats, settings.scale_type);
                if settings.integer_zero_point {
                    p.zero_point = p.zero_point.round_ties_even() + 0.0;
                }
                p
            })
            .collect::<Vec<_>>()
    };
    // A search per group, or a large matrix (a 3072 × 768 layer's channels, each gathered down
    // the rows): on every core.
    let searching = matches!(settings.scale_stats, ScaleStats::Mse | ScaleStats::Hqo);
    if searching || weights.len() >= crate::parallel::MIN_PARALLEL {
        return Ok(crate::parallel::map_ranges(groups, work).into_iter().flatten().collect());
    }
    Ok(work(0..groups))
}
