// LUT GEMM: y = scale ⊙ ((x − shift) · W) + bias for many tokens (prefill, evaluation), reading
// the packed codes and tables directly. The host prepends lut_common.wgsl (bindings, epilogue).
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
var<workgroup> xs: array<f32, 2048>;  // [DEPTH][TILE]: xs[i * TILE + token]
var<workgroup> ws: array<f32, 2048>;  // [DEPTH][TILE]: ws[i * TILE + column]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let cols = p[1];
    let tokens = p[2];
    let channels_per_table = p[3];
    let c0 = wg.x * TILE;
    let t0 = wg.y * TILE;
    let lane = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;

    // The column this thread decodes, and which quarter of the 32 rows.
    let dc = c0 + lane % TILE;
    let quarter = lane / TILE;
    let table = min(dc, cols - 1u) / channels_per_table * (MASK + 1u);

    // The block count, made provably uniform for the barriers in the loop (WGSL's uniformity rules
    // treat values read from a read_write buffer as non-uniform; browsers enforce them). It
    // passes through ws[0]: the two tiles fill WebGPU's 16 KiB of workgroup memory exactly.
    if (lane == 0u) { ws[0] = bitcast<f32>(p[4]); }
    let nblocks = bitcast<u32>(workgroupUniformLoad(&ws[0]));
    for (var k = 0u; k < nblocks; k++) {
        let r0 = k * DEPTH;
        // Stage inputs: consecutive lanes read consecutive rows of one token.
        for (var j = 0u; j < 8u; j++) {
            let idx = lane + j * 256u;
            let t = t0 + idx / DEPTH;
            let i = idx % DEPTH;
            var v = 0.0;
            if (t < tokens && r0 + i < rows) { v = input(t, r0 + i); }
            xs[i * TILE + idx / DEPTH] = v;
        }
        // Decode 8 codes of one column: rows 8·quarter .. 8·quarter + 8 of the block.
        for (var j = 0u; j < 8u; j++) {
            let i = quarter * 8u + j;
            var v = 0.0;
            if (dc < cols && r0 + i < rows) {
                let bit = i * BITS;
                let w = bit / 32u;
                let s = bit % 32u;
                let base = k * BITS * cols + dc;
                var code = qweight[base + w * cols] >> s;
                if (s + BITS > 32u) {
                    code |= qweight[base + (w + 1u) * cols] << (32u - s);
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
            if (t < tokens && c < cols) {
                y[t * cols + c] = finish(acc[u][v], t, c);
            }
        }
    }
}
