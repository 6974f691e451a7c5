// Weighted 1-D Lloyd k-means, pass 1 of 2 per iteration, for CPU adapters (lavapipe,
// SwiftShader): the same inputs and outputs as kmeans_assign.wgsl, but one invocation per item
// walks the item's (sorted) values in order, with no workgroup memory and no barrier.
//
// Why: CPU rasterisers run a workgroup's lanes in groups of 4 to 16 and switch between them at
// every barrier; the workgroup version's reductions (20+ barriers per 1024 values) made a Lloyd
// iteration over the bit slider's layer take ~1 s on lavapipe where the work is a few ms. On a
// sorted segment the codes rise with the values, so each centroid's values are one contiguous
// range: a lane writes the item's codes, then finds each centroid's range by binary search on
// them and sums it in value order. The host uses this pass only when every segment of the round
// is sorted.
//
// lavapipe (Mesa 22.3, LLVM 15) ended loops early when a `while (lo < hi)` binary search ran
// inside them (values skipped, sums lost, though a CPU emulation of the same WGSL was right):
// the binary searches here have fixed trip counts. Keep the control flow this simple.
//
// Per value x (weight w): the nearest centroid v (ties to the lower, of equal centroids the
// first, as kmeans_assign.wgsl), its code, and W += w, D += w (x - v), Q += w (x - v)^2.

const WG: u32 = 64u;
const SORTED_BIT: u32 = 0x80000000u;

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

// First index p >= base with centroids[p] >= x (base + k if none); the run's centroids
// centroids[base..base + k] are ascending.
fn lower_bound(x: f32, base: u32, k: u32) -> u32 {
    var lo = base;
    var hi = base + k;
    // A trip count known before the loop (k, a power of two, needs log2(k) + 1 halvings): with
    // a `while (lo < hi)` loop here, the loops that call this one ended early on lavapipe.
    let steps = firstLeadingBit(k) + 1u;
    for (var step = 0u; step < steps; step++) {
        if (lo < hi) {
            let mid = (lo + hi) / 2u;
            if (centroids[mid] < x) {
                lo = mid + 1u;
            } else {
                hi = mid;
            }
        }
    }
    return lo;
}

// The code of x: its nearest centroid (of the two around it, the lower on a tie), and of equal
// centroids the first.
fn code_of(x: f32, base: u32, k: u32) -> u32 {
    let p = lower_bound(x, base, k);
    var code = p;  // index (from base) of the nearest centroid
    if (p == base + k) {
        code = p - 1u;
    } else if (p > base) {
        let a = centroids[p - 1u];
        let b = centroids[p];
        code = select(p, p - 1u, x - a <= b - x);
    }
    // Of equal centroids the first (rare: only then a second search).
    if (code > base && centroids[code - 1u] == centroids[code]) {
        code = lower_bound(centroids[code], base, k);
    }
    return code - base;
}

// The code of the item's value i (stored by this invocation in step 1).
fn code_at(word0: u32, i: u32) -> u32 {
    return (codes[word0 + i / 4u] >> (8u * (i % 4u))) & 0xFFu;
}

fn put(item: u32, j: u32, s: vec3<f32>) {
    let p = (item * params.k + j) * 3u;
    partials[p] = s.x;
    partials[p + 1u] = s.y;
    partials[p + 2u] = s.z;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let item_id = (wid.x + wid.y * params.grid_x) * WG + lid;
    if (item_id >= params.n_items) {
        return;
    }
    let item = items[item_id];
    let run = item.x & ~SORTED_BIT;
    if (runs[run].z > FRESH) {
        return;
    }
    let first = item.y;
    let count = item.z;
    let word0 = item.w;
    let k = params.k;
    let base = run * k;

    // 1. Codes, word by word, counting the ones that changed.
    var n_changed = 0u;
    let words = (count + 3u) / 4u;
    for (var wd = 0u; wd < words; wd++) {
        var packed = 0u;
        for (var q = 0u; q < 4u; q++) {
            let i = min(wd * 4u + q, count - 1u);
            // Past the end: a copy of the last code (not counted as a change).
            packed = packed | (code_of(values[first + i], base, k) << (8u * q));
        }
        let old = codes[word0 + wd];
        if (old != packed) {
            codes[word0 + wd] = packed;
            for (var q = 0u; q < 4u; q++) {
                let real = wd * 4u + q < count;
                n_changed += select(0u, 1u, real && (((old ^ packed) >> (8u * q)) & 0xFFu) != 0u);
            }
        }
    }
    // 2. Sorted values: codes never fall, so code j's values are one range [start, end), found by
    //    binary search on the codes just written. Its sums go through four levels of up to 8
    //    (8 values, 8 sums of 8, ...): an error like a tree's (depth 32 for 4096 values), where a
    //    plain running sum drifted ~50x further from the CPU's f64 than the workgroup pass's
    //    trees, enough to flip near-ties and change a run's fixed point.
    var start = 0u;
    for (var j = 0u; j < k; j++) {
        var lo = start;
        var hi = count;
        for (var step = 0u; step < 13u; step++) {  // count <= 4096: 13 halvings (see lower_bound)
            if (lo < hi) {
                let mid = (lo + hi) / 2u;
                if (code_at(word0, mid) <= j) {
                    lo = mid + 1u;
                } else {
                    hi = mid;
                }
            }
        }
        let c = centroids[base + j];
        var l0 = vec3<f32>(0.0);
        var l1 = vec3<f32>(0.0);
        var l2 = vec3<f32>(0.0);
        var l3 = vec3<f32>(0.0);
        for (var i = start; i < lo; i++) {
            let x = values[first + i];
            let w = weights[first + i];
            let d = x - c;
            let wd = w * d;
            l0 += vec3<f32>(w, wd, wd * d);
            let n = i - start;
            if ((n & 7u) == 7u) {
                l1 += l0;
                l0 = vec3<f32>(0.0);
            }
            if ((n & 63u) == 63u) {
                l2 += l1;
                l1 = vec3<f32>(0.0);
            }
            if ((n & 511u) == 511u) {
                l3 += l2;
                l2 = vec3<f32>(0.0);
            }
        }
        put(item_id, j, ((l3 + l2) + l1) + l0);
        start = lo;
    }
    if (n_changed > 0u) {
        atomicAdd(&changed[run], n_changed);
    }
}
