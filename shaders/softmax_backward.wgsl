// The gradient of softmax.wgsl's masked softmax with respect to the scores, for Fisher's blocks
// (crates/lutlab-model/src/tracked_fused.rs): with y the probabilities the forward gave, per row
// ∂scores = scale · y ⊙ (∂y − Σ_j y_j ∂y_j) (the mask is a constant; a masked entry has y = 0).
// A workgroup per row; burn's autodiff takes ~10 launches for this, each a pass over the largest
// tensor of the attention.
// `workgroup_reduce` and THREADS: workgroup_reduce.wgsl, appended.

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;  // s, scale (f32 bits), rows, workgroups per grid row

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let s = p[0];
    let scale = bitcast<f32>(p[1]);
    let row = wg.y * p[3] + wg.x;
    let count = select(0u, s, row < p[2]);
    let base = row * s;
    var weighted = 0.0;
    for (var j = lid; j < count; j += THREADS) {
        weighted += y[base + j] * dy[base + j];
    }
    weighted = workgroup_reduce(weighted, lid, false);
    for (var j = lid; j < count; j += THREADS) {
        dscores[base + j] = scale * y[base + j] * (dy[base + j] - weighted);
    }
}
