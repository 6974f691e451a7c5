// Dense GEMV, the baseline beside the LUT GEMV: y = x · W for one token, W `[rows, cols]`
// row-major (GPT-2's Conv1D layout), stored as f32 or as f16 pairs. The same shape of work as
// lut_gemv.wgsl: a workgroup of 32 lanes × 8 slices of the rows; lanes read neighbouring words of
// a row (coalesced), slices meet in workgroup memory.
//
// {{f16}}: false — `w` holds f32 values, lane x owns one column.
//          true  — `w` holds two f16 per u32 (columns 2i and 2i+1, `unpack2x16float`), so it runs
//                  without the shader-f16 feature; lane x owns a pair of columns.

const F16: bool = {{f16}};
const LANES: u32 = 32u;
const SLICES: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // [rows]
@group(0) @binding(1) var<storage, read_write> w: array<u32>;   // f32 bits, or f16 pairs
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [cols]
@group(0) @binding(3) var<storage, read_write> p: array<u32>;   // rows, cols

var<workgroup> partial: array<vec2<f32>, 256>;

// A weight word as two f16 values, or as one f32 (second lane 0).
fn value(bits: u32) -> vec2<f32> {
    if (F16) { return unpack2x16float(bits); }
    return vec2<f32>(bitcast<f32>(bits), 0.0);
}

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let cols = p[1];
    let words_per_row = select(cols, cols / 2u, F16);
    let word = wg.x * LANES + lid.x;
    var acc = vec2<f32>(0.0);
    if (word < words_per_row) {
        // Four rows per step, so four loads are in flight at once.
        var r = lid.y;
        for (; r + 3u * SLICES < rows; r += 4u * SLICES) {
            let b0 = w[r * words_per_row + word];
            let b1 = w[(r + SLICES) * words_per_row + word];
            let b2 = w[(r + 2u * SLICES) * words_per_row + word];
            let b3 = w[(r + 3u * SLICES) * words_per_row + word];
            acc += x[r] * value(b0) + x[r + SLICES] * value(b1) + x[r + 2u * SLICES] * value(b2) + x[r + 3u * SLICES] * value(b3);
        }
        for (; r < rows; r += SLICES) {
            acc += x[r] * value(w[r * words_per_row + word]);
        }
    }
    partial[lid.y * LANES + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && word < words_per_row) {
        var sum = vec2<f32>(0.0);
        for (var s = 0u; s < SLICES; s++) {
            sum += partial[s * LANES + lid.x];
        }
        if (F16) {
            y[2u * word] = sum.x;
            y[2u * word + 1u] = sum.y;
        } else {
            y[word] = sum.x;
        }
    }
}
