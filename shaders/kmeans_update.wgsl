// Weighted 1-D Lloyd k-means, pass 2 of 2 per iteration: one workgroup per run adds the partial
// sums of its items (kmeans_assign.wgsl), then decides, as the CPU reference's loop does:
//   - converged: the last assignment changed no code since the previous update (and that update
//     left no cluster empty), so the centroids are a fixed point; they are left as they are;
//   - stopped: `max_iter` updates are done;
//   - otherwise update: every non-empty cluster's centroid moves to its weighted mean
//     (c_j += D / W); if some cluster is empty the run waits in RESEED for the host, which moves
//     those centroids onto the worst-served points exactly as the CPU reference does (rare).
// It always writes the per-centroid objective terms of the centroids the assignment used, so a
// run that ends leaves the objective of its final centroids.

const UPDATE: u32 = 100u;

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
// Per run: first item, item count, state, updates done.
@group(0) @binding(1) var<storage, read_write> runs: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> centroids: array<f32>;
@group(0) @binding(3) var<storage, read> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> changed: array<atomic<u32>>;
// Per run and centroid: sum w (x - c_j)^2 over the cluster, for the centroids assigned with.
@group(0) @binding(5) var<storage, read_write> objective: array<f32>;

var<workgroup> run_sh: vec4<u32>;
var<workgroup> decision_sh: u32;
var<workgroup> empty_sh: atomic<u32>;
var<workgroup> red_w: array<f32, 256>;
var<workgroup> red_d: array<f32, 256>;
var<workgroup> red_q: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * params.grid_x;
    if (r >= params.n_runs) {
        return;
    }
    if (lid == 0u) {
        run_sh = runs[r];
        atomicStore(&empty_sh, 0u);
    }
    let run = workgroupUniformLoad(&run_sh);
    if (run.z > FRESH) {
        return;
    }
    let k = params.k;
    let lanes = WG / k;
    let j = lid / lanes;
    let s = lid % lanes;

    // Lane (j, s) adds items s, s + S, ... of the run, in order; then a tree over s.
    var acc_w = 0.0;
    var acc_d = 0.0;
    var acc_q = 0.0;
    if (j < k) {
        for (var i = s; i < run.y; i += lanes) {
            let p = ((run.x + i) * k + j) * 3u;
            acc_w += partials[p];
            acc_d += partials[p + 1u];
            acc_q += partials[p + 2u];
        }
    }
    red_w[lid] = acc_w;
    red_d[lid] = acc_d;
    red_q[lid] = acc_q;
    workgroupBarrier();
    var stride = 1u;
    while (stride * 2u < lanes) {
        stride *= 2u;
    }
    for (; stride > 0u; stride /= 2u) {
        if (j < k && s < stride && s + stride < lanes) {
            red_w[lid] += red_w[lid + stride];
            red_d[lid] += red_d[lid + stride];
            red_q[lid] += red_q[lid + stride];
        }
        workgroupBarrier();
    }

    if (lid == 0u) {
        let n_changed = atomicLoad(&changed[r]);
        atomicStore(&changed[r], 0u);
        var decision = UPDATE;
        if (run.z == ACTIVE && n_changed == 0u) {
            decision = CONVERGED;
        } else if (run.w >= params.max_iter) {
            decision = STOPPED;
        }
        decision_sh = decision;
    }
    let decision = workgroupUniformLoad(&decision_sh);

    if (j < k && s == 0u) {
        objective[r * k + j] = red_q[lid];
        if (decision == UPDATE) {
            let w = red_w[lid];
            if (w > 0.0) {
                centroids[r * k + j] = centroids[r * k + j] + red_d[lid] / w;
            } else {
                atomicOr(&empty_sh, 1u);
            }
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        if (decision == UPDATE) {
            let empty = atomicLoad(&empty_sh) != 0u;
            runs[r] = vec4<u32>(run.x, run.y, select(ACTIVE, RESEED, empty), run.w + 1u);
        } else {
            runs[r] = vec4<u32>(run.x, run.y, decision, run.w);
        }
    }
}
