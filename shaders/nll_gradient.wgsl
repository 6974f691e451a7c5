// The next-token loss and its gradient with respect to the logits in one kernel, for Fisher's
// head (crates/lutlab-model/src/fused.rs, `token_nll_gradient`): per row of `[rows, v]` logits
// with target `t`, `nll = log Σ exp(x − max) − (x_t − max)` and
// `∂/∂x_j = scale · (exp(x_j − max) / Σ − [j = t])`.
// burn's autodiff takes ~20 launches for this, most of them passes over the logits (the largest
// tensor of a Fisher step); here it is three reads and one write of each row.
// The sums are taken as nll.wgsl takes them (two stages). A workgroup per row.
// `workgroup_reduce` and THREADS: workgroup_reduce.wgsl, appended.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> nll: array<f32>;
@group(0) @binding(3) var<storage, read_write> gradient: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<u32>;  // v, rows, workgroups per grid row, scale (f32 bits)

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let v = p[0];
    let row = wg.y * p[2] + wg.x;
    let scale = bitcast<f32>(p[3]);
    // A workgroup past the last row still takes part in the barriers; it reads and writes nothing.
    let count = select(0u, v, row < p[1]);
    let base = row * v;
    var m = -3.402823e38;
    for (var j = lid; j < count; j += THREADS) {
        m = max(m, logits[base + j]);
    }
    m = workgroup_reduce(m, lid, true);
    var total = 0.0;
    var run = 0.0;
    var in_run = 0u;
    for (var j = lid; j < count; j += THREADS) {
        run += exp(logits[base + j] - m);
        in_run++;
        if in_run == 16u {
            total += run;
            run = 0.0;
            in_run = 0u;
        }
    }
    total += run;
    total = workgroup_reduce(total, lid, false);
    var wanted = 0u;
    if row < p[1] {
        wanted = targets[row];
        if lid == 0u {
            nll[row] = log(total) - (logits[base + wanted] - m);
        }
    }
    let inverse = 1.0 / total;
    for (var j = lid; j < count; j += THREADS) {
        let softmax = exp(logits[base + j] - m) * inverse;
        gradient[base + j] = scale * select(softmax, softmax - 1.0, j == wanted);
    }
}
