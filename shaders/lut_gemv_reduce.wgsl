// Finishes a LUT GEMV that ran in several splits of the input rows (lut_gemv.wgsl): for each
// token and column, the sum of the splits' partials (binding 1 holds them as f32 bits, `[m,
// splits, cols]`), then the epilogue of lut_common.wgsl (prepended by the host).

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let cols = p[1];
    let splits = p[10];
    let c = id.x;
    let t = id.y;
    if (c < cols) {
        var sum = 0.0;
        for (var s = 0u; s < splits; s++) {
            sum += bitcast<f32>(qweight[(t * splits + s) * cols + c]);
        }
        y[t * cols + c] = finish(sum, t, c);
    }
}
