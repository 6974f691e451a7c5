// Shared by the LUT kernels (lut_gemv, lut_gemv_reduce; the host puts this file in
// front of each): the bindings, and the epilogue that adds a column's sparse outliers, scale and
// bias. Layout of the packed weight: docs/FORMAT.md, lutlab_core::quant::packed.

const NONE: u32 = 0xffffffffu;

// Every binding is read_write: the host launches through cubecl, which binds them so.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;        // [m, rows]
// [cols, blocks, bits] (reduce: f32 partial sums); the scalar GEMV may bind it as vec2s or vec4s of
// words (`lut_linear::gemv_code_width`).
@group(0) @binding(1) var<storage, read_write> qweight: array<{{code_word}}>;
@group(0) @binding(2) var<storage, read_write> aux: array<f32>;      // tables | sparse values | scales | shift | bias
@group(0) @binding(3) var<storage, read_write> index: array<u32>;    // sparse col_ptr | row_idx
@group(0) @binding(4) var<storage, read_write> y: array<f32>;        // [m, cols], or GEMV partials [m, splits, cols]
@group(0) @binding(5) var<storage, read_write> p: array<u32>;        // parameters, see `lut_linear.rs`

// Input `r` of token `t`, minus the layer's input shift.
fn input(t: u32, r: u32) -> f32 {
    var v = x[t * p[0] + r];
    if (p[7] != NONE) { v -= aux[p[7] + r]; }
    return v;
}

// The scale and zero point of column c in the input group of packed block k (p[12] blocks of 32
// rows per group; p[13], p[14]: where the group scales and zeros start in aux, zeros optional).
fn group_scale(k: u32, c: u32) -> f32 {
    return aux[p[13] + (k / p[12]) * p[1] + c];
}
fn group_zero(k: u32, c: u32) -> f32 {
    if (p[14] == NONE) { return 0.0; }
    return aux[p[14] + (k / p[12]) * p[1] + c];
}

// The epilogue: `dense` (the LUT part of column c for token t) plus the sparse outliers, times the
// column's scale, plus its bias.
fn finish(dense: f32, t: u32, c: u32) -> f32 {
    let sparse_values_at = p[5];
    let scales_at = p[6];
    let bias_at = p[8];
    let row_idx_at = p[9];
    var sum = dense;
    for (var i = index[c]; i < index[c + 1u]; i++) {
        sum += input(t, index[row_idx_at + i]) * aux[sparse_values_at + i];
    }
    if (scales_at != NONE) { sum *= aux[scales_at + c]; }
    if (bias_at != NONE) { sum += aux[bias_at + c]; }
    return sum;
}
