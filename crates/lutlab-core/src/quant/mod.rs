//! Weight quantizers and the one format they all produce: look-up tables (LUTs).
//!
//! Every quantizer, non-uniform (k-means) or uniform (integer, minifloat), turns a weight matrix
//! into `2^bits`-entry tables and a `bits`-wide code per weight: a uniform grid is just a table
//! whose entries are evenly spaced. One packed format and one LUT matmul kernel then serve all.
//! Outliers that no table should absorb are kept exactly in a sparse matrix beside the codes.
//!
//! Layout: weights are GPT-2 Conv1D `[in, out]` row-major; an *output channel* is a column.

pub mod allocate;
pub mod bias_correction;
pub mod head;
pub mod hessian;
pub mod incoherence;
pub mod inputs;
pub mod kmeans;
pub mod lut;
pub mod mixed;
pub mod model;
pub mod request;
pub mod transforms;
pub mod outliers;
pub mod packed;
pub mod uniform;
pub mod vector;

pub use kmeans::{
    KmeansInit, KmeansOutput, KmeansSettings, LloydSettings, lloyd_1d, lloyd_1d_from, optimal_1d, quantize_kmeans,
    quantize_kmeans_report, quantize_optimal,
};
pub use lut::{Granularity, LutMatrix, SparseOutliers};
pub use model::{quantize_layer_rounded_by, quantize_model, Calibration, HessianGrid, InputMeans, LayerSelection, LayerTransform, Method, QuantizedLayer, QuantizedModel};
pub use request::QuantizeRequest;
pub use packed::{PackedLinear, SparseColumns};
pub use outliers::{OutlierSelection, OutlierSettings, quantize_dense_and_sparse, select_outliers};
pub use uniform::{
    FloatVariant, MiniFloat, NumberFormat, ScaleStats, ScaleType, UniformGranularity, UniformResult, UniformSettings,
    quantize_uniform,
};
