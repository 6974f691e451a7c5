// The gradient of norm.wgsl's LayerNorm (`{{layer_norm}}`) or RMSNorm with respect to its input,
// for Fisher's blocks (crates/lutlab-model/src/tracked_fused.rs), γ and β being constants there.
// With x̂ = (x − mean)·r, r = 1/√(var + eps) (RMSNorm: mean 0, var the mean square) and
// g = ∂y ⊙ γ: ∂x = r · (g − mean(g) − x̂ · mean(g ⊙ x̂)), RMSNorm without the mean(g) term.
// The row's statistics are computed again from x as the forward computed them. A workgroup per
// row; burn's autodiff takes ~15 launches for this, each a pass over x or ∂y.
// `row_statistics`: norm_statistics.wgsl; `workgroup_reduce` and THREADS: workgroup_reduce.wgsl;
// both appended.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;     // n, eps (f32 bits), rows, workgroups per grid row

const LAYER_NORM: bool = {{layer_norm}};

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let n = p[0];
    let eps = bitcast<f32>(p[1]);
    let row = wg.y * p[3] + wg.x;
    // A workgroup past the last row still takes part in the barriers; it reads and writes nothing.
    let count = select(0u, n, row < p[2]);
    let base = row * n;
    let statistics = row_statistics(base, count, n, eps, lid);
    let mean = statistics.x;
    let r = statistics.y;
    var g_sum = 0.0;
    var gx_sum = 0.0;
    for (var i = lid; i < count; i += THREADS) {
        let g = dy[base + i] * gamma[i];
        g_sum += g;
        gx_sum += g * (x[base + i] - mean) * r;
    }
    var g_mean = 0.0;
    if LAYER_NORM {
        g_mean = workgroup_reduce(g_sum, lid, false) / f32(n);
    }
    let gx_mean = workgroup_reduce(gx_sum, lid, false) / f32(n);
    for (var i = lid; i < count; i += THREADS) {
        let g = dy[base + i] * gamma[i];
        let normalized = (x[base + i] - mean) * r;
        dx[base + i] = r * (g - g_mean - normalized * gx_mean);
    }
}
