// The negative log-likelihood of each row's target under its logits `[rows, v]` in one kernel
// (crates/lutlab-model/src/fused.rs): `log Σ exp(x − max) − (x_target − max)`, for evaluation;
// with `{{gradient}}` (Fisher's head) also the gradient of `scale ·` the rows' sum with respect
// to the logits, `scale · (exp(x_j − max) / Σ − [j = target])`. A workgroup per row; each
// invocation sums its share of the vocabulary in two stages, as burn's ops do (eval.rs,
// `token_nll`), so a 50,257-entry row loses no more to f32 rounding (Kahan's compensation would
// not do: compilers that reassociate, lavapipe's, remove it). burn's ops take ~8 launches for
// the loss and autodiff ~20 for its gradient, each a pass over the logits.
// `workgroup_reduce` and THREADS: workgroup_reduce.wgsl, appended.

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> nll: array<f32>;
@group(0) @binding(3) var<storage, read_write> gradient: array<f32>;  // the loss alone: a placeholder, unwritten
@group(0) @binding(4) var<storage, read_write> p: array<u32>;  // v, rows, workgroups per grid row, scale (f32 bits)

const GRADIENT: bool = {{gradient}};

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let v = p[0];
    let row = wg.y * p[2] + wg.x;
    // A workgroup past the last row still takes part in the barriers; it reads and writes nothing.
    let count = select(0u, v, row < p[1]);
    let base = row * v;
    var m = -3.402823e38;
    for (var j = lid; j < count; j += THREADS) {
        m = max(m, logits[base + j]);
    }
    m = workgroup_reduce(m, lid, true);
    // Two stages: runs of 16 terms, then the runs (each invocation's share of a 50,257-entry row
    // is ~785 terms): f32 error grows with the length of each sum, not of the row.
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
    if GRADIENT {
        let scale = bitcast<f32>(p[3]);
        let inverse = 1.0 / total;
        for (var j = lid; j < count; j += THREADS) {
            let softmax = exp(logits[base + j] - m) * inverse;
            gradient[base + j] = scale * select(softmax, softmax - 1.0, j == wanted);
        }
    }
}
