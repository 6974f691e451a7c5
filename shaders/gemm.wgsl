// f32 matrix product C[z] = A[z] · B[z] (A: [m, k], B: [k, n], C: [m, n] contiguous) for the
// model's dense matmuls (crates/lutlab-model/src/gemm.rs). A and B are read through strides, so
// transposed views (HF's `[out, in]` weights, `x.transpose()`) and attention's heads need no copy.
//
// A workgroup of 16 × 16 invocations computes a 128 × 128 tile of C, each invocation 8 × 8
// outputs held in registers: rows ty·4 + i and 64 + ty·4 + i, columns tx·4 + j and 64 + tx·4 + j,
// so that neighbouring invocations read neighbouring vec4s of workgroup memory (no bank
// conflicts). K goes by slices of 16: each invocation loads 8 values of A's and 8 of B's slice into
// registers while the previous slice is multiplied, then stores them to workgroup memory (A
// transposed: both operands are then read along m and n). 16 KiB of workgroup memory, WebGPU's
// limit: the deeper the slice, the fewer barriers per multiply-add.
//
// {{a_k_fast}}: A's k index is the contiguous one (stride 1), so a slice is loaded two
// invocations per row; otherwise along m. {{b_n_fast}}: likewise for B along n, else along k.
// {{upper_tiles}}: only the tiles on and above the diagonal are computed (a Gram matrix xᵀx, which
// the host mirrors: half the work). {{accumulate}}: C += A·B, into C's existing values.
//
// Split K: a product of few tiles and a long K (Fisher's per-sample `xᵀ·∂y` over 1024 positions at
// one window a pass) would leave most of the GPU idle, so the grid's z also splits K into `splits`
// chunks of `chunk` (a multiple of 16): workgroup z computes batch z / splits over chunk z % splits
// and writes its partial product to C's slot (z % splits) · batches + z / splits; the host sums
// the slots.

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
// m, n, k, A's strides (row, col, outer batch), B's strides (row, col, outer batch), matrices per
// outer batch (inner), A's and B's inner batch strides: batch z is (z / inner, z % inner); splits of
// K, the chunk of K each takes, batches.
@group(0) @binding(3) var<storage, read_write> p: array<u32>;

const A_K_FAST: bool = {{a_k_fast}};
const B_N_FAST: bool = {{b_n_fast}};

const UPPER_TILES: bool = {{upper_tiles}};
const ACCUMULATE: bool = {{accumulate}};

const BK: u32 = 16u;

var<workgroup> sa: array<vec4<f32>, 512>; // [16 k][128 m] as vec4s along m
var<workgroup> sb: array<vec4<f32>, 512>; // [16 k][128 n] as vec4s along n
var<workgroup> slice_count: u32;

// Where invocation `li` loads value j (of 8) of a 128 × 16 slice: (index along m or n, along k),
// neighbouring invocations reading neighbouring elements along the contiguous index.
fn slot(li: u32, j: u32, mn_fast: bool) -> vec2<u32> {
    if mn_fast {
        return vec2<u32>((li % 32u) * 4u + j % 4u, li / 32u + 8u * (j / 4u));
    }
    return vec2<u32>(li / 2u, (li % 2u) * 8u + j);
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // A tile below the diagonal: the whole workgroup leaves (uniform: a constant and its id).
    if UPPER_TILES && wg.y > wg.x {
        return;
    }
    let m = p[0];
    let n = p[1];
    let k_total = p[2];
    // The strides in registers: read once, not at every load.
    let a_row = p[3];
    let a_col = p[4];
    let b_row = p[6];
    let b_col = p[7];
    let splits = p[12];
    let batch = wg.z / splits;
    let split = wg.z % splits;
    let outer = batch / p[9];
    let inner = batch % p[9];
    // This workgroup's K: k_first.. (the chunk's offset folded into the bases), `k` long.
    let k_first = split * p[13];
    let k = min(k_total - min(k_total, k_first), p[13]);
    let a_base = outer * p[5] + inner * p[10] + k_first * a_col;
    let b_base = outer * p[8] + inner * p[11] + k_first * b_row;
    let c_base = (split * p[14] + batch) * m * n;
    let m0 = wg.y * 128u;
    let n0 = wg.x * 128u;
    let tx = lid.x;
    let ty = lid.y;
    let li = ty * 16u + tx;

    var acc0 = vec4<f32>(); var acc1 = vec4<f32>(); var acc2 = vec4<f32>(); var acc3 = vec4<f32>();
    var acc4 = vec4<f32>(); var acc5 = vec4<f32>(); var acc6 = vec4<f32>(); var acc7 = vec4<f32>();
    var acc8 = vec4<f32>(); var acc9 = vec4<f32>(); var acc10 = vec4<f32>(); var acc11 = vec4<f32>();
    var acc12 = vec4<f32>(); var acc13 = vec4<f32>(); var acc14 = vec4<f32>(); var acc15 = vec4<f32>();

    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    // The slice count, made provably uniform for the barriers in the loop (browsers check: a
    // value read from a read_write buffer is not uniform to them).
    if li == 0u {
        slice_count = (k + BK - 1u) / BK;
    }
    let slices = workgroupUniformLoad(&slice_count);
    // The first slice into registers.
    for (var j = 0u; j < 8u; j++) {
        let s = slot(li, j, !A_K_FAST);
        if m0 + s.x < m && s.y < k {
            ra[j] = a[a_base + (m0 + s.x) * a_row + s.y * a_col];
        }
        let t = slot(li, j, B_N_FAST);
        if n0 + t.x < n && t.y < k {
            rb[j] = b[b_base + t.y * b_row + (n0 + t.x) * b_col];
        }
    }
    for (var slice = 0u; slice < slices; slice++) {
        workgroupBarrier();
        for (var j = 0u; j < 8u; j++) {
            let s = slot(li, j, !A_K_FAST);
            sa[s.y * 32u + s.x / 4u][s.x % 4u] = ra[j];
            let t = slot(li, j, B_N_FAST);
            sb[t.y * 32u + t.x / 4u][t.x % 4u] = rb[j];
        }
        workgroupBarrier();
        // The next slice's loads are in flight while this one is multiplied.
        let k0 = (slice + 1u) * BK;
        if slice + 1u < slices {
            for (var j = 0u; j < 8u; j++) {
                ra[j] = 0.0;
                rb[j] = 0.0;
                let s = slot(li, j, !A_K_FAST);
                if m0 + s.x < m && k0 + s.y < k {
                    ra[j] = a[a_base + (m0 + s.x) * a_row + (k0 + s.y) * a_col];
                }
                let t = slot(li, j, B_N_FAST);
                if n0 + t.x < n && k0 + t.y < k {
                    rb[j] = b[b_base + (k0 + t.y) * b_row + (n0 + t.x) * b_col];
                }
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
    store(c_base, r0, c0, acc0, m, n); store(c_base, r0, c1, acc1, m, n);
    store(c_base, r0 + 1u, c0, acc2, m, n); store(c_base, r0 + 1u, c1, acc3, m, n);
    store(c_base, r0 + 2u, c0, acc4, m, n); store(c_base, r0 + 2u, c1, acc5, m, n);
    store(c_base, r0 + 3u, c0, acc6, m, n); store(c_base, r0 + 3u, c1, acc7, m, n);
    store(c_base, r1, c0, acc8, m, n); store(c_base, r1, c1, acc9, m, n);
    store(c_base, r1 + 1u, c0, acc10, m, n); store(c_base, r1 + 1u, c1, acc11, m, n);
    store(c_base, r1 + 2u, c0, acc12, m, n); store(c_base, r1 + 2u, c1, acc13, m, n);
    store(c_base, r1 + 3u, c0, acc14, m, n); store(c_base, r1 + 3u, c1, acc15, m, n);
}

// Four outputs of one row from column `col` on, those inside C.
fn store(base: u32, row: u32, col: u32, v: vec4<f32>, m: u32, n: u32) {
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
