// Weighted 1-D Lloyd k-means, pass 1 of 2 per iteration: assignment and per-chunk partial sums.
//
// One workgroup per *item*: a chunk of at most 4096 consecutive values of one run's segment (a
// run = one table being fitted from its own initial centroids; restarts of a table are runs
// sharing a segment). For every value x (weight w) of the chunk it
//   1. assigns the nearest centroid of the run (centroids are kept ascending: binary search):
//      smallest |x - c_j| in f32, ties to the lower index (so of equal centroids only the first
//      gets points), like the CPU reference;
//   2. stores the code (4 codes per u32 word) and counts codes that changed since the last pass;
//   3. sums, per centroid j, over the chunk's values coded j:  W = sum w,  D = sum w (x - c_j),
//      Q = sum w (x - c_j)^2, and writes them to partials[item][j].
// The update pass (kmeans_update.wgsl) adds the partials of a run's items: c_j += D / W is the
// weighted mean of cluster j, and sum_j Q is the objective of the current centroids. Summing
// offsets from the current centroid rather than w x keeps f32 sums accurate to the cluster's
// width instead of the values' magnitude.
//
// WebGPU has no float atomics, so the per-centroid sums are reductions in workgroup memory in a
// fixed order: the same input gives the same bits on every run. Two ways, per item:
//   - sorted segment (the host says so; quantization always sorts): codes rise along the tile,
//     so each centroid's values are one contiguous run: a segmented scan (9 steps for 1024
//     values, whatever k) leaves each run's total at its end, which adds it to its centroid;
//   - any order: lane (j, s), s < S = 256 / k, sums the values coded j among every S-th code word
//     of a tile, then a tree over s (k compares per value: fine for k <= 16, slower for 8 bits).

const WG: u32 = 256u;
const TILE_WORDS: u32 = 256u;  // one code word (4 values) per invocation
const TILE: u32 = 1024u;
// Items' run field: the run index, and this bit when the segment is sorted ascending.
const SORTED_BIT: u32 = 0x80000000u;
// Code of a padding slot past the chunk's end in the sorted path (above every real code).
const NONE: u32 = 0xFFFFu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
// Per item: run (| SORTED_BIT), first value (index into values), value count, first code word.
@group(0) @binding(3) var<storage, read> items: array<vec4<u32>>;
// Per run: first item, item count, state, updates done.
@group(0) @binding(4) var<storage, read> runs: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> centroids: array<f32>;
@group(0) @binding(6) var<storage, read_write> codes: array<u32>;
// Per item and centroid: W, D, Q.
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;
// Per run: codes changed since the previous pass (reset by the update pass).
@group(0) @binding(8) var<storage, read_write> changed: array<atomic<u32>>;

var<workgroup> item_sh: vec4<u32>;
var<workgroup> live_sh: u32;
var<workgroup> c_sh: array<f32, 256>;
// Any-order path: the tile's weights, offsets (a_sh, b_sh) and code words (code_sh[..256]).
// Sorted path: the scan's entries, two per invocation: W, D, Q in a_sh[e], a_sh[512 + e],
// b_sh[e] and the code in code_sh[e].
var<workgroup> a_sh: array<f32, 1024>;
var<workgroup> b_sh: array<f32, 1024>;
var<workgroup> code_sh: array<u32, 512>;
// Any-order path: the tree over slices. Sorted path: per-centroid totals of the item.
var<workgroup> red_w: array<f32, 256>;
var<workgroup> red_d: array<f32, 256>;
var<workgroup> red_q: array<f32, 256>;
var<workgroup> changed_sh: atomic<u32>;

// First index p with c_sh[p] >= x (k if none); c_sh is ascending.
fn lower_bound(x: f32, k: u32) -> u32 {
    var lo = 0u;
    var hi = k;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (c_sh[mid] < x) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The centroid nearest x: of the two around it, the lower on a tie. With ascending centroids this
// is the smallest |x - c_j| in f32 (x - a and b - x are exactly the f32 |x - a| and |x - b|), and
// its code, lower_bound of that value, is the first of equal centroids.
fn nearest(x: f32, k: u32) -> f32 {
    let p = lower_bound(x, k);
    if (p == 0u) {
        return c_sh[0];
    }
    if (p == k) {
        return c_sh[k - 1u];
    }
    let a = c_sh[p - 1u];
    let b = c_sh[p];
    return select(b, a, x - a <= b - x);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item_id = wid.x + wid.y * params.grid_x;
    if (item_id >= params.n_items) {
        return;
    }
    if (lid == 0u) {
        let it = items[item_id];
        item_sh = it;
        live_sh = select(0u, 1u, runs[it.x & ~SORTED_BIT].z <= FRESH);
        atomicStore(&changed_sh, 0u);
    }
    let live = workgroupUniformLoad(&live_sh);
    if (live == 0u) {
        return;
    }
    let item = workgroupUniformLoad(&item_sh);
    let run = item.x & ~SORTED_BIT;
    let sorted = (item.x & SORTED_BIT) != 0u;
    let first = item.y;
    let count = item.z;
    let word0 = item.w;
    let k = params.k;
    for (var j = lid; j < k; j += WG) {
        c_sh[j] = centroids[run * k + j];
    }
    red_w[lid] = 0.0;
    red_d[lid] = 0.0;
    red_q[lid] = 0.0;
    workgroupBarrier();

    // Any-order path: lane of this invocation, centroid j and slice s of S.
    let lanes = WG / k;
    let j = lid / lanes;
    let s = lid % lanes;
    var acc_w = 0.0;
    var acc_d = 0.0;
    var acc_q = 0.0;
    var my_changed = 0u;

    let n_tiles = (count + TILE - 1u) / TILE;
    for (var t = 0u; t < n_tiles; t++) {
        // Assignment: this invocation codes the 4 values of word `word`.
        let word = t * TILE_WORDS + lid;
        var key: array<u32, 4>;
        var wq: array<f32, 4>;
        var dq: array<f32, 4>;
        var packed = 0u;
        for (var q = 0u; q < 4u; q++) {
            let i = word * 4u + q;
            key[q] = NONE;
            wq[q] = 0.0;
            dq[q] = 0.0;
            if (i < count) {
                let x = values[first + i];
                let v = nearest(x, k);
                key[q] = lower_bound(v, k);
                wq[q] = weights[first + i];
                dq[q] = x - v;
                packed = packed | (key[q] << (8u * q));
            }
        }
        if (word * 4u < count) {
            let old = codes[word0 + word];
            if (old != packed) {
                codes[word0 + word] = packed;
                let diff = old ^ packed;
                for (var q = 0u; q < 4u; q++) {
                    if (((diff >> (8u * q)) & 0xFFu) != 0u) {
                        my_changed += 1u;
                    }
                }
            }
        }

        if (sorted) {
            // This invocation's values: a head run (code key[0]), a tail run (code key[3]) and
            // in between codes no other invocation has, added to their totals directly.
            let c0 = key[0];
            let c3 = key[3];
            var hw = 0.0;
            var hd = 0.0;
            var hq = 0.0;
            var tw = 0.0;
            var td = 0.0;
            var tq = 0.0;
            for (var q = 0u; q < 4u; q++) {
                let w = wq[q];
                let wd = w * dq[q];
                let wdd = wd * dq[q];
                if (key[q] == c0) {
                    hw += w;
                    hd += wd;
                    hq += wdd;
                } else if (key[q] == c3) {
                    tw += w;
                    td += wd;
                    tq += wdd;
                } else {
                    red_w[key[q]] += w;
                    red_d[key[q]] += wd;
                    red_q[key[q]] += wdd;
                }
            }
            let e0 = 2u * lid;
            let e1 = e0 + 1u;
            a_sh[e0] = hw;
            a_sh[512u + e0] = hd;
            b_sh[e0] = hq;
            code_sh[e0] = c0;
            a_sh[e1] = tw;
            a_sh[512u + e1] = td;
            b_sh[e1] = tq;
            code_sh[e1] = c3;
            workgroupBarrier();
            // Inclusive segmented scan over the 512 entries (codes ascending, so equal codes at
            // distance o are one run): afterwards each run's last entry holds its total.
            let k0 = c0;
            let k1 = c3;
            for (var o = 1u; o < 512u; o *= 2u) {
                var add0 = vec3<f32>(0.0);
                var add1 = vec3<f32>(0.0);
                if (e0 >= o && code_sh[e0 - o] == k0) {
                    add0 = vec3<f32>(a_sh[e0 - o], a_sh[512u + e0 - o], b_sh[e0 - o]);
                }
                if (e1 >= o && code_sh[e1 - o] == k1) {
                    add1 = vec3<f32>(a_sh[e1 - o], a_sh[512u + e1 - o], b_sh[e1 - o]);
                }
                workgroupBarrier();
                a_sh[e0] += add0.x;
                a_sh[512u + e0] += add0.y;
                b_sh[e0] += add0.z;
                a_sh[e1] += add1.x;
                a_sh[512u + e1] += add1.y;
                b_sh[e1] += add1.z;
                workgroupBarrier();
            }
            // Each run's last entry adds its total to its centroid (one writer per code).
            if (k0 != NONE && k0 != k1) {
                red_w[k0] += a_sh[e0];
                red_d[k0] += a_sh[512u + e0];
                red_q[k0] += b_sh[e0];
            }
            if (k1 != NONE && (e1 == 511u || code_sh[e1 + 1u] != k1)) {
                red_w[k1] += a_sh[e1];
                red_d[k1] += a_sh[512u + e1];
                red_q[k1] += b_sh[e1];
            }
            workgroupBarrier();
        } else {
            for (var q = 0u; q < 4u; q++) {
                a_sh[lid * 4u + q] = wq[q];
                b_sh[lid * 4u + q] = dq[q];
            }
            code_sh[lid] = packed;
            workgroupBarrier();
            // Lane (j, s) takes the words s, s + S, ... of this tile, in order.
            let words = min(TILE_WORDS, (count - t * TILE + 3u) / 4u);
            if (j < k) {
                for (var wd = s; wd < words; wd += lanes) {
                    let pk = code_sh[wd];
                    for (var q = 0u; q < 4u; q++) {
                        if (((pk >> (8u * q)) & 0xFFu) == j) {
                            let w = a_sh[wd * 4u + q];
                            let d = b_sh[wd * 4u + q];
                            let wdv = w * d;
                            acc_w += w;
                            acc_d += wdv;
                            acc_q += wdv * d;
                        }
                    }
                }
            }
            workgroupBarrier();
        }
    }

    atomicAdd(&changed_sh, my_changed);
    if (sorted) {
        workgroupBarrier();
        if (lid < k) {
            let p = (item_id * k + lid) * 3u;
            partials[p] = red_w[lid];
            partials[p + 1u] = red_d[lid];
            partials[p + 2u] = red_q[lid];
        }
    } else {
        // Tree over the S slices of each centroid (S need not be a power of two).
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
        if (j < k && s == 0u) {
            let p = (item_id * k + j) * 3u;
            partials[p] = red_w[lid];
            partials[p + 1u] = red_d[lid];
            partials[p + 2u] = red_q[lid];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        let n = atomicLoad(&changed_sh);
        if (n > 0u) {
            atomicAdd(&changed[run], n);
        }
    }
}
