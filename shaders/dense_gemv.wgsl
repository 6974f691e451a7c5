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

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let cols = p[1];
    let words_per_row = select(cols, cols / 2u, F16);
    let word = wg.x * LANES + lid.x;
    var acc = vec2<f32>(0.0);
    if (word < words_per_row) {
        for (var r = lid.y; r < rows; r += SLICES) {
            let bits = w[r * words_per_row + word];
            if (F16) {
                acc += x[r] * unpack2x16float(bits);
            } else {
                acc.x += x[r] * bitcast<f32>(bits);
            }
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
