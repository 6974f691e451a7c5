//! Weight quantizers and the one format they all produce: look-up tables (LUTs).
//!
//! Every quantizer, non-uniform (k-means) or uniform (integer, minifloat), turns a weight matrix
//! into `2^bits`-entry tables and a `bits`-wide code per weight: a uniform grid is just a table
//! whose entries are evenly spaced. One packed format and one LUT matmul kernel then serve all.
//! Outliers that no table should absorb are kept exactly in a sparse matrix beside the codes.
//!
//! Layout: weights are GPT-2 Conv1D `[in, out]` row-major; an *output channel* is a column.

pub mod lut;

pub use lut::{Granularity, LutMatrix, SparseOutliers};
