// Vector-table GEMV: y = scale ⊙ ((x − shift) · W) + bias for a few tokens, where each code of a
// column stands for DIM consecutive input rows and picks DIM consecutive values of its column's
// codebook (layout: docs/FORMAT.md §13, lutlab_core::quant::packed). lut_common.wgsl (bindings,
// epilogue) goes first; lut_gemv_reduce.wgsl finishes a GEMV run in several splits.
//
// Workgroup (x, y, z) = (32 output columns, one split of the code blocks, one token): lane x owns
// a column and walks its words (the GPU keeps them column by column, `[cols, blocks, bits]`),
// slice y takes every 8th block of 32 codes, and the 8 partial sums meet in workgroup memory. The codebooks stay in the storage buffer: a vector table has up to 2^12 entries of
// DIM values, too many to stage per column. The host fills {{bits}} (the code width, bits per
// weight × DIM, up to 12) and {{dim}}.

const CODE_BITS: u32 = {{bits}}u;
const DIM: u32 = {{dim}}u;
const LEVELS: u32 = 1u << CODE_BITS;
const MASK: u32 = LEVELS - 1u;
const COLS: u32 = 32u;
const SLICES: u32 = 8u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let cols = p[1];
    let channels_per_table = p[3];
    let blocks = p[4];
    let splits = p[10];
    let blocks_per_split = p[11];
    let c = wg.x * COLS + lid.x;
    let split = wg.y;
    let t = wg.z;
    let vectors = rows / DIM;

    var acc = 0.0;
    if (c < cols) {
        let table = c / channels_per_table * LEVELS * DIM;
        let k_end = min(blocks, (split + 1u) * blocks_per_split);
        for (var k = split * blocks_per_split + lid.y; k < k_end; k += SLICES) {
            let base = (c * blocks + k) * CODE_BITS;
            let n = min(32u, vectors - k * 32u);
            for (var i = 0u; i < n; i++) {
                let bit = i * CODE_BITS;
                let word = bit / 32u;
                let s = bit % 32u;
                var code = qweight[base + word] >> s;
                if (s + CODE_BITS > 32u) {
                    code |= qweight[base + word + 1u] << (32u - s);
                }
                let entry = table + (code & MASK) * DIM;
                let r = (k * 32u + i) * DIM;
                for (var e = 0u; e < DIM; e++) {
                    acc += input(t, r + e) * aux[entry + e];
                }
            }
        }
    }
    let lane = lid.y * COLS + lid.x;
    partial[lane] = acc;
    workgroupBarrier();
    if (lid.y == 0u && c < cols) {
        var sum = 0.0;
        for (var s = 0u; s < SLICES; s++) {
            sum += partial[s * COLS + lid.x];
        }
        if (splits > 1u) {
            y[(t * splits + split) * cols + c] = sum;
        } else {
            y[t * cols + c] = finish(sum, t, c);
        }
    }
}
