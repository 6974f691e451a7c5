// Weighted 1-D Lloyd k-means, pass 2 of 2 per iteration, for CPU adapters: the decisions and
// outputs of kmeans_update.wgsl (see there), but one invocation per run adds its items' partial
// sums in item order, with no workgroup memory and no barrier (barriers are what CPU rasterisers
// are slow at; see kmeans_assign_seq.wgsl).

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
// Per run: first item, item count, state, updates done.
@group(0) @binding(1) var<storage, read_write> runs: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> centroids: array<f32>;
@group(0) @binding(3) var<storage, read> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> changed: array<atomic<u32>>;
// Per run and centroid: sum w (x - c_j)^2 over the cluster, for the centroids assigned with.
@group(0) @binding(5) var<storage, read_write> objective: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * params.grid_x) * WG + lid;
    if (r >= params.n_runs) {
        return;
    }
    let run = runs[r];
    if (run.z > FRESH) {
        return;
    }
    let k = params.k;
    let n_changed = atomicLoad(&changed[r]);
    atomicStore(&changed[r], 0u);
    let converged = run.z == ACTIVE && n_changed == 0u;
    let update = !converged && run.w < params.max_iter;

    var empty = false;
    for (var j = 0u; j < k; j++) {
        var s = vec3<f32>(0.0);
        for (var i = 0u; i < run.y; i++) {
            let p = ((run.x + i) * k + j) * 3u;
            s += vec3<f32>(partials[p], partials[p + 1u], partials[p + 2u]);
        }
        objective[r * k + j] = s.z;
        if (update) {
            if (s.x > 0.0) {
                centroids[r * k + j] = centroids[r * k + j] + s.y / s.x;
            } else {
                empty = true;
            }
        }
    }
    if (update) {
        runs[r] = vec4<u32>(run.x, run.y, select(ACTIVE, RESEED, empty), run.w + 1u);
    } else {
        runs[r] = vec4<u32>(run.x, run.y, select(STOPPED, CONVERGED, converged), run.w);
    }
}
