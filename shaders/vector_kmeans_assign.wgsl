// Weighted k-means in 2 or 4 dimensions (vector look-up tables, issue 20): the assignment, the
// O(n·k·d) part of a Lloyd iteration. One invocation per point scans its run's k centres and
// writes the nearest (the first of equal distances, as the CPU reference) and its distance
// Σ_i w_i (x_i − c_i)². The update, O(n·d), runs on the host in f64 exactly as the reference does
// (lutlab_core::quant::vector::Lloyd), so the two fits differ only in this pass's f32 compares.
// No workgroup memory and no barriers: every lane of a workgroup reads the same centre at the same
// time (a broadcast from cache on GPUs), and CPU adapters (lavapipe, SwiftShader) run it without
// switching lane groups.

struct Params {
    dim: u32,
    k: u32,
    n_items: u32,
    grid_x: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
// [points][dim]: every table's points, table after table.
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
// [runs][k][dim].
@group(0) @binding(3) var<storage, read> centres: array<f32>;
// Per item (up to WG points of one run): run, first point, point count, first output slot.
@group(0) @binding(4) var<storage, read> items: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> codes: array<u32>;
@group(0) @binding(6) var<storage, read_write> distances: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item_id = wid.x + wid.y * params.grid_x;
    if (item_id >= params.n_items) {
        return;
    }
    let item = items[item_id];
    if (lid >= item.z) {
        return;
    }
    let dim = params.dim;
    let k = params.k;
    let p = item.y + lid;
    // Coordinates past `dim` stay 0 with weight 0, so one vec4 serves d = 2 and 4.
    var x = vec4<f32>(0.0);
    var w = vec4<f32>(0.0);
    for (var i = 0u; i < dim; i++) {
        x[i] = points[p * dim + i];
        w[i] = weights[p * dim + i];
    }
    let base = item.x * k * dim;
    var best = 0u;
    var best_d = 0.0;
    for (var j = 0u; j < k; j++) {
        var c = vec4<f32>(0.0);
        for (var i = 0u; i < dim; i++) {
            c[i] = centres[base + j * dim + i];
        }
        let e = x - c;
        let d = dot(w, e * e);
        if (j == 0u || d < best_d) {
            best = j;
            best_d = d;
        }
    }
    codes[item.w + lid] = best;
    distances[item.w + lid] = best_d;
}
