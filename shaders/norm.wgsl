// LayerNorm (`{{layer_norm}}`: with mean and beta) or RMSNorm of each row of x `[rows, n]` in one
// kernel (crates/lutlab-model/src/fused.rs): a workgroup per row, statistics in f32 as burn's
// separate kernels compute them (the biased variance of the row, after its mean); under autodiff
// its gradient is norm_backward.wgsl's. burn runs the same as ~9 launches, each a pass over x.
// `row_statistics`: norm_statistics.wgsl; `workgroup_reduce` and THREADS: workgroup_reduce.wgsl;
// both appended.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;  // RMSNorm: a placeholder, unread
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
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
    let inv = statistics.y;
    for (var i = lid; i < count; i += THREADS) {
        var v = (x[base + i] - mean) * inv * gamma[i];
        if LAYER_NORM {
            v += beta[i];
        }
        y[base + i] = v;
    }
}
