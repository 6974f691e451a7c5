// LUT GEMM: y = scale ⊙ ((x − shift) · W) + bias for many tokens (prefill, evaluation), reading
// the packed codes and tables directly (layout: docs/FORMAT.md, lutlab_core::quant::packed).
//
// One workgroup computes a 64-token × 64-column tile; each of its 256 threads a 4 × 4 block.
// The input rows go 32 at a time, one packed block: the threads stage the tile's inputs
// (minus the shift) and decode the tile's 32 × 64 codes through the tables into workgroup memory,
// so every code is looked up once per 64 tokens, then all threads multiply from there. Both tiles
// fill WebGPU's 16 KiB of workgroup memory, so the tables are read from the storage buffer (each
// entry is read by many threads of a tile and stays in cache). The epilogue adds the sparse
// outliers, scale and bias.
//
// The host fills {{bits}} (1..8).

const BITS: u32 = {{bits}}u;
const MASK: u32 = (1u << BITS) - 1u;
const TILE: u32 = 64u;
const DEPTH: u32 = 32u;
const NONE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;        // [m, rows]
@group(0) @binding(1) var<storage, read_write> qweight: array<u32>;  // [blocks · bits, cols]
@group(0) @binding(2) var<storage, read_write> aux: array<f32>;      // tables | sparse values | scales | shift | bias
@group(0) @binding(3) var<storage, read_write> index: array<u32>;    // sparse col_ptr | row_idx
@group(0) @binding(4) var<storage, read_write> y: array<f32>;        // [m, cols]
@group(0) @binding(5) var<storage, read_write> p: array<u32>;        // parameters, see `Params` on the host

fn rows() -> u32 { return p[0]; }
fn cols() -> u32 { return p[1]; }
fn tokens() -> u32 { return p[2]; }
fn channels_per_table() -> u32 { return p[3]; }
fn blocks() -> u32 { return p[4]; }
fn sparse_values_at() -> u32 { return p[5]; }
fn scales_at() -> u32 { return p[6]; }
fn shift_at() -> u32 { return p[7]; }
fn bias_at() -> u32 { return p[8]; }
fn row_idx_at() -> u32 { return p[9]; }

var<workgroup> xs: array<f32, 2048>;  // [DEPTH][TILE]: xs[i * TILE + token]
var<workgroup> ws: array<f32, 2048>;  // [DEPTH][TILE]: ws[i * TILE + column]

fn input(t: u32, r: u32) -> f32 {
    var v = x[t * rows() + r];
    if (shift_at() != NONE) { v -= aux[shift_at() + r]; }
    return v;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c0 = wg.x * TILE;
    let t0 = wg.y * TILE;
    let lane = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;

    // The column this thread decodes, and which quarter of the 32 rows.
    let dc = c0 + lane % TILE;
    let quarter = lane / TILE;
    let table = min(dc, cols() - 1u) / channels_per_table() * (MASK + 1u);

    for (var k = 0u; k < blocks(); k++) {
        let r0 = k * DEPTH;
        // Stage inputs: consecutive lanes read consecutive rows of one token.
        for (var j = 0u; j < 8u; j++) {
            let idx = lane + j * 256u;
            let t = t0 + idx / DEPTH;
            let i = idx % DEPTH;
            var v = 0.0;
            if (t < tokens() && r0 + i < rows()) { v = input(t, r0 + i); }
            xs[i * TILE + idx / DEPTH] = v;
        }
        // Decode 8 codes of one column: rows 8·quarter .. 8·quarter + 8 of the block.
        for (var j = 0u; j < 8u; j++) {
            let i = quarter * 8u + j;
            var v = 0.0;
            if (dc < cols() && r0 + i < rows()) {
                let bit = i * BITS;
                let w = bit / 32u;
                let s = bit % 32u;
                let base = k * BITS * cols() + dc;
                var code = qweight[base + w * cols()] >> s;
                if (s + BITS > 32u) {
                    code |= qweight[base + (w + 1u) * cols()] << (32u - s);
                }
                v = aux[table + (code & MASK)];
            }
            ws[i * TILE + lane % TILE] = v;
        }
        workgroupBarrier();
        for (var i = 0u; i < DEPTH; i++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var q = 0u; q < 4u; q++) {
                a[q] = xs[i * TILE + lid.y * 4u + q];
                b[q] = ws[i * TILE + lid.x * 4u + q];
            }
            for (var u = 0u; u < 4u; u++) {
                for (var v = 0u; v < 4u; v++) {
                    acc[u][v] += a[u] * b[v];
                }
            }
        }
        workgroupBarrier();
    }

    for (var u = 0u; u < 4u; u++) {
        let t = t0 + lid.y * 4u + u;
        for (var v = 0u; v < 4u; v++) {
            let c = c0 + lid.x * 4u + v;
            if (t < tokens() && c < cols()) {
                var sum = acc[u][v];
                for (var i = index[c]; i < index[c + 1u]; i++) {
                    sum += input(t, index[row_idx_at() + i]) * aux[sparse_values_at() + i];
                }
                if (scales_at() != NONE) { sum *= aux[scales_at() + c]; }
                if (bias_at() != NONE) { sum += aux[bias_at() + c]; }
                y[t * cols() + c] = sum;
            }
        }
    }
}
