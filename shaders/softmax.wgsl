// Attention's probabilities in one kernel (crates/lutlab-model/src/fused.rs): each row of the
// scores `[rows, s]` scaled, plus its row of the additive mask `[t, s]` (row r takes mask row
// r mod t: the mask is shared by every batch and head), then softmax, with the row's maximum
// subtracted first. A workgroup per row, for the paths that take no gradient; burn runs the same
// as 7 launches, each a pass over the largest tensor of the attention.
// `workgroup_reduce` and THREADS: workgroup_reduce.wgsl, appended.

@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
@group(0) @binding(1) var<storage, read_write> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;  // s, t, scale (f32 bits), rows, workgroups per grid row

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let s = p[0];
    let t = p[1];
    let scale = bitcast<f32>(p[2]);
    let row = wg.y * p[4] + wg.x;
    let count = select(0u, s, row < p[3]);
    let base = row * s;
    let mask_base = (row % t) * s;
    var m = -3.402823e38;
    for (var j = lid; j < count; j += THREADS) {
        m = max(m, scores[base + j] * scale + mask[mask_base + j]);
    }
    m = workgroup_reduce(m, lid, true);
    var total = 0.0;
    for (var j = lid; j < count; j += THREADS) {
        total += exp(scores[base + j] * scale + mask[mask_base + j] - m);
    }
    let inv = 1.0 / workgroup_reduce(total, lid, false);
    for (var j = lid; j < count; j += THREADS) {
        y[base + j] = exp(scores[base + j] * scale + mask[mask_base + j] - m) * inv;
    }
}
