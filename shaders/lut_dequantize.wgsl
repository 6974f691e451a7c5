// LUT dequantization, the first half of the LUT GEMM (many tokens: prefill, evaluation): writes
// the layer's effective dense weight W[r, c] = scale_c · (table_c[code] + sparse outlier) (with
// input groups, the table entry e becomes (e − zero) · group scale first), which
// burn's tuned matmul then multiplies. A GEMM is bound by arithmetic, so one pass that reads the
// codes once per call and writes f32 costs little beside the multiply, while the GEMV (a few
// tokens, bound by memory) multiplies straight from the codes (lut_gemv.wgsl).
//
// One thread per (column, packed block of 32 rows): consecutive threads take consecutive columns,
// so the written rows are coalesced; each thread reads its block's words, which lie together (the
// GPU keeps them column by column, `[cols, blocks, bits]`). The thread then adds the column's sparse outliers that fall in its block. Layout:
// docs/FORMAT.md, lutlab_core::quant::packed. The host fills the code width and DIM, the weights
// per code: 1 for scalar tables; 2 or 4 for vector tables, whose code `i` of a block stands for
// DIM consecutive rows and picks DIM consecutive table values (so a block spans 32·DIM rows).

const BITS: u32 = {{bits}}u;
const DIM: u32 = {{dim}}u;
const MASK: u32 = (1u << BITS) - 1u;
const NONE: u32 = 0xffffffffu;

// Every binding is read_write: the host launches through cubecl, which binds them so.
@group(0) @binding(0) var<storage, read_write> qweight: array<u32>;  // [cols, blocks, bits]
@group(0) @binding(1) var<storage, read_write> aux: array<f32>;      // tables | sparse values | scales | shift | bias
@group(0) @binding(2) var<storage, read_write> index: array<u32>;    // sparse col_ptr | row_idx
@group(0) @binding(3) var<storage, read_write> w: array<f32>;        // [rows, cols]
@group(0) @binding(4) var<storage, read_write> p: array<u32>;        // parameters, see `lut_linear.rs`

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let rows = p[0];
    let cols = p[1];
    let channels_per_table = p[3];
    let sparse_values_at = p[5];
    let scales_at = p[6];
    let row_idx_at = p[9];
    let group_scales_at = p[13];
    let group_zeros_at = p[14];
    let c = id.x;
    let k = id.y;
    if (c >= cols) { return; }
    let table = c / channels_per_table * (MASK + 1u) * DIM;
    var scale = 1.0;
    if (scales_at != NONE) { scale = aux[scales_at + c]; }
    // This block's input group: its weights are (entry − zero) · group scale.
    var group_scale = 1.0;
    var group_zero = 0.0;
    if (group_scales_at != NONE) {
        let g = (k / p[12]) * cols + c;
        group_scale = aux[group_scales_at + g];
        if (group_zeros_at != NONE) { group_zero = aux[group_zeros_at + g]; }
    }
    let base = (c * p[4] + k) * BITS;
    let v0 = k * 32u;
    let n = min(32u, rows / DIM - v0);
    for (var i = 0u; i < n; i++) {
        let bit = i * BITS;
        let word = bit / 32u;
        let s = bit % 32u;
        var code = qweight[base + word] >> s;
        if (s + BITS > 32u) {
            code |= qweight[base + word + 1u] << (32u - s);
        }
        let entry = table + (code & MASK) * DIM;
        for (var e = 0u; e < DIM; e++) {
            w[((v0 + i) * DIM + e) * cols + c] = ((aux[entry + e] - group_zero) * group_scale) * scale;
        }
    }
    // The same thread wrote these elements just above: no other thread touches them.
    let r0 = v0 * DIM;
    for (var j = index[c]; j < index[c + 1u]; j++) {
        let r = index[row_idx_at + j];
        if (r >= r0 && r < r0 + n * DIM) {
            w[r * cols + c] += aux[sparse_values_at + j] * scale;
        }
    }
}
