// f32 matrix product C[z] = A[z] · B[z] (A: [m, k], B: [k, n], C: [m, n] contiguous) for the
// model's dense matmuls (crates/lutlab-model/src/gemm.rs). A and B are read through strides, so
// transposed views (HF's `[out, in]` weights, `x.transpose()`) and attention's heads need no copy.
//
// A workgroup of 16 × 16 invocations computes a 128 × 128 tile of C, each invocation 8 × 8
// outputs held in registers: rows ty·4 + i and 64 + ty·4 + i, columns tx·4 + j and 64 + tx·4 + j,
// so that neighbouring invocations read neighbouring vec4s of workgroup memory (no bank
// conflicts). K goes by slices of {{slice}} (16 fits WebGPU's default 16 KiB of workgroup memory; 32,
// where the adapter gives 32 KiB, halves the barriers per multiply-add): each invocation loads
// its share of A's and B's slice into registers while the previous slice is multiplied, then
// stores it to workgroup memory (A transposed: both operands are then read along m and n).
// Every output sums its K in order, so the slice depth and the loads' width leave the result
// bit for bit the same.
//
// Loads go by quads, four values along the operand's contiguous index. {{a_k_fast}}: A's k
// index is the contiguous one (stride 1), so a slice is loaded two invocations per row; otherwise
// along m. {{b_n_fast}}: likewise for B along n, else along k. {{a_vec4}} / {{b_vec4}}: the
// operand is bound as vec4s (its contiguous extent and other strides multiples of 4), so a quad
// is one 16-byte load and one bounds check instead of four.
// {{upper_tiles}}: only the tiles on and above the diagonal are computed (a Gram matrix xᵀx, which
// the host mirrors: half the work). {{accumulate}}: C += A·B, into C's existing values.
//
// Split K: a product of few tiles and a long K (Fisher's per-sample `xᵀ·∂y` over 1024 positions at
// one window a pass) would leave most of the GPU idle, so the grid's z also splits K into `splits`
// chunks of `chunk` (a multiple of 16): workgroup z computes batch z / splits over chunk z % splits
// and writes its partial product to C's slot (z % splits) · batches + z / splits; the host sums
// the slots.

@group(0) @binding(0) var<storage, read_write> a: array<{{a_elem}}>;
@group(0) @binding(1) var<storage, read_write> b: array<{{b_elem}}>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
// m, n, k, A's strides (row, col, outer batch), B's strides (row, col, outer batch), matrices per
// outer batch (inner), A's and B's inner batch strides: batch z is (z / inner, z % inner); splits of
// K, the chunk of K each takes, batches.
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

const A_K_FAST: bool = {{a_k_fast}};
const B_N_FAST: bool = {{b_n_fast}};
const A_VEC4: bool = {{a_vec4}};
const B_VEC4: bool = {{b_vec4}};

const UPPER_TILES: bool = {{upper_tiles}};
const ACCUMULATE: bool = {{accumulate}};

const BK: u32 = {{slice}}u;
// Quads of each operand an invocation loads per slice (128 × BK values over 256 invocations).
const QUADS: u32 = BK / 8u;

var<workgroup> sa: array<vec4<f32>, BK * 32u>; // [BK k][128 m] as vec4s along m
var<workgroup> sb: array<vec4<f32>, BK * 32u>; // [BK k][128 n] as vec4s along n
var<workgroup> slice_count: u32;

// The operands' geometry, set once at the start of `main`.
var<private> m: u32;
var<private> n: u32;
var<private> k: u32;
var<private> a_base: u32;
var<private> a_row: u32;
var<private> a_col: u32;
var<private> b_base: u32;
var<private> b_row: u32;
var<private> b_col: u32;
var<private> m0: u32;
var<private> n0: u32;

// Element i of an operand, and the four from i on (i a multiple of 4 where it is bound as vec4s).
fn a_one(i: u32) -> f32 { return {{a_one}}; }
fn a_four(i: u32) -> vec4<f32> { return {{a_four}}; }
fn b_one(i: u32) -> f32 { return {{b_one}}; }
fn b_four(i: u32) -> vec4<f32> { return {{b_four}}; }

// Where quad q of invocation `li`'s share of a 128 × BK slice starts: (index along m or n, along
// k), the quad running along the contiguous index and neighbouring invocations reading
// neighbouring quads.
fn quad_at(li: u32, q: u32, mn_fast: bool) -> vec2<u32> {
    if mn_fast {
        return vec2<u32>((li % 32u) * 4u, li / 32u + 8u * q);
    }
    return vec2<u32>(li / 2u, (li % 2u) * (BK / 2u) + 4u * q);
}

// The index of value e of a quad starting at (mn, kk) of an operand (`base`, strides along m or n
// and along k; `extent` values along m or n), the quad running along m or n (`along_mn`) or along
// k; NONE outside the operand.
const NONE: u32 = 0xffffffffu;
fn element(mn: u32, kk: u32, e: u32, along_mn: bool, extent: u32, base: u32, stride_mn: u32, stride_k: u32) -> u32 {
    let i = select(mn, mn + e, along_mn);
    let j = select(kk + e, kk, along_mn);
    if i >= extent || j >= k {
        return NONE;
    }
    return base + i * stride_mn + j * stride_k;
}

// Quad q of A's slice from k0 on, zeros outside A. As vec4s, the contiguous extent is a multiple
// of 4: the quad is inside A whole or not at all.
fn load_a(li: u32, q: u32, k0: u32) -> vec4<f32> {
    let at = quad_at(li, q, !A_K_FAST);
    var v = vec4<f32>();
    for (var e = 0u; e < select(4u, 1u, A_VEC4); e++) {
        let i = element(m0 + at.x, k0 + at.y, e, !A_K_FAST, m, a_base, a_row, a_col);
        if i == NONE {
            continue;
        }
        if A_VEC4 { v = a_four(i); } else { v[e] = a_one(i); }
    }
    return v;
}

// Quad q of B's slice from k0 on, zeros outside B (as `load_a`).
fn load_b(li: u32, q: u32, k0: u32) -> vec4<f32> {
    let at = quad_at(li, q, B_N_FAST);
    var v = vec4<f32>();
    for (var e = 0u; e < select(4u, 1u, B_VEC4); e++) {
        let i = element(n0 + at.x, k0 + at.y, e, B_N_FAST, n, b_base, b_col, b_row);
        if i == NONE {
            continue;
        }
        if B_VEC4 { v = b_four(i); } else { v[e] = b_one(i); }
    }
    return v;
}

// A quad into workgroup memory ([k][m or n]): one vec4 where it runs along m or n, else four
// values down k.
fn stage(li: u32, q: u32, v: vec4<f32>, mn_fast: bool, into_a: bool) {
    let at = quad_at(li, q, mn_fast);
    if mn_fast {
        if into_a { sa[at.y * 32u + at.x / 4u] = v; } else { sb[at.y * 32u + at.x / 4u] = v; }
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        if into_a { sa[(at.y + e) * 32u + at.x / 4u][at.x % 4u] = v[e]; } else { sb[(at.y + e) * 32u + at.x / 4u][at.x % 4u] = v[e]; }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // A tile below the diagonal: the whole workgroup leaves (uniform: a constant and its id).
    if UPPER_TILES && wg.y > wg.x {
        return;
    }
    m = p[0];
    n = p[1];
    let k_total = p[2];
    a_row = p[3];
    a_col = p[4];
    b_row = p[6];
    b_col = p[7];
    let splits = p[12];
    let batch = wg.z / splits;
    let split = wg.z % splits;
    let outer = batch / p[9];
    let inner = batch % p[9];
    // This workgroup's K: k_first.. (the chunk's offset folded into the bases), `k` long.
    let k_first = split * p[13];
    k = min(k_total - min(k_total, k_first), p[13]);
    a_base = outer * p[5] + inner * p[10] + k_first * a_col;
    b_base = outer * p[8] + inner * p[11] + k_first * b_row;
    let c_base = (split * p[14] + batch) * m * n;
    m0 = wg.y * 128u;
    n0 = wg.x * 128u;
    let tx = lid.x;
    let ty = lid.y;
    let li = ty * 16u + tx;

    var acc0 = vec4<f32>(); var acc1 = vec4<f32>(); var acc2 = vec4<f32>(); var acc3 = vec4<f32>();
    var acc4 = vec4<f32>(); var acc5 = vec4<f32>(); var acc6 = vec4<f32>(); var acc7 = vec4<f32>();
    var acc8 = vec4<f32>(); var acc9 = vec4<f32>(); var acc10 = vec4<f32>(); var acc11 = vec4<f32>();
    var acc12 = vec4<f32>(); var acc13 = vec4<f32>(); var acc14 = vec4<f32>(); var acc15 = vec4<f32>();

    var ra: array<vec4<f32>, QUADS>;
    var rb: array<vec4<f32>, QUADS>;
    // The slice count, made provably uniform for the barriers in the loop (browsers check: a
    // value read from a read_write buffer is not uniform to them).
    if li == 0u {
        slice_count = (k + BK - 1u) / BK;
    }
    let slices = workgroupUniformLoad(&slice_count);
    // The first slice into registers.
    for (var q = 0u; q < QUADS; q++) {
        ra[q] = load_a(li, q, 0u);
        rb[q] = load_b(li, q, 0u);
    }
    for (var slice = 0u; slice < slices; slice++) {
        workgroupBarrier();
        for (var q = 0u; q < QUADS; q++) {
            stage(li, q, ra[q], !A_K_FAST, true);
            stage(li, q, rb[q], B_N_FAST, false);
        }
        workgroupBarrier();
        // The next slice's loads are in flight while this one is multiplied.
        if slice + 1u < slices {
            for (var q = 0u; q < QUADS; q++) {
                ra[q] = load_a(li, q, (slice + 1u) * BK);
                rb[q] = load_b(li, q, (slice + 1u) * BK);
            }
        }
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = sa[kk * 32u + ty];
            let a1 = sa[kk * 32u + 16u + ty];
            let b0 = sb[kk * 32u + tx];
            let b1 = sb[kk * 32u + 16u + tx];
            acc0 = fma(vec4<f32>(a0.x), b0, acc0); acc1 = fma(vec4<f32>(a0.x), b1, acc1);
            acc2 = fma(vec4<f32>(a0.y), b0, acc2); acc3 = fma(vec4<f32>(a0.y), b1, acc3);
            acc4 = fma(vec4<f32>(a0.z), b0, acc4); acc5 = fma(vec4<f32>(a0.z), b1, acc5);
            acc6 = fma(vec4<f32>(a0.w), b0, acc6); acc7 = fma(vec4<f32>(a0.w), b1, acc7);
            acc8 = fma(vec4<f32>(a1.x), b0, acc8); acc9 = fma(vec4<f32>(a1.x), b1, acc9);
            acc10 = fma(vec4<f32>(a1.y), b0, acc10); acc11 = fma(vec4<f32>(a1.y), b1, acc11);
            acc12 = fma(vec4<f32>(a1.z), b0, acc12); acc13 = fma(vec4<f32>(a1.z), b1, acc13);
            acc14 = fma(vec4<f32>(a1.w), b0, acc14); acc15 = fma(vec4<f32>(a1.w), b1, acc15);
        }
    }

    let r0 = m0 + ty * 4u;
    let r1 = m0 + 64u + ty * 4u;
    let c0 = n0 + tx * 4u;
    let c1 = n0 + 64u + tx * 4u;
    store(c_base, r0, c0, acc0); store(c_base, r0, c1, acc1);
    store(c_base, r0 + 1u, c0, acc2); store(c_base, r0 + 1u, c1, acc3);
    store(c_base, r0 + 2u, c0, acc4); store(c_base, r0 + 2u, c1, acc5);
    store(c_base, r0 + 3u, c0, acc6); store(c_base, r0 + 3u, c1, acc7);
    store(c_base, r1, c0, acc8); store(c_base, r1, c1, acc9);
    store(c_base, r1 + 1u, c0, acc10); store(c_base, r1 + 1u, c1, acc11);
    store(c_base, r1 + 2u, c0, acc12); store(c_base, r1 + 2u, c1, acc13);
    store(c_base, r1 + 3u, c0, acc14); store(c_base, r1 + 3u, c1, acc15);
}

// Four outputs of one row from column `col` on, those inside C.
fn store(base: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= m {
        return;
    }
    let at = base + row * n + col;
    for (var j = 0u; j < 4u; j++) {
        if col + j < n {
            if ACCUMULATE {
                c[at + j] += v[j];
            } else {
                c[at + j] = v[j];
            }
        }
    }
}
