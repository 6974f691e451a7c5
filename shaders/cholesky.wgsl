// One step of the blocked Cholesky factorization `A = L Lᵀ` of GPTQ's Hessians on the GPU
// (crates/lutlab-model/src/hessian_rounding.rs), in place on the row-major `[n, n]` matrix `a`,
// for the diagonal block of rows and columns k0..k0 + b (b ≤ 64) once the updates of the blocks
// before it are in:
//
// {{panel}} = false: one workgroup factors the diagonal block (A11 = L11 L11ᵀ) in workgroup memory
//   and writes L11 over its lower triangle and its pivots L11[i, i] to `pivots`: 0 where a pivot
//   is not positive (or not a number), which the host finds when it reads the pivots back once,
//   after the last block (the steps after a failed one compute values nobody reads).
// {{panel}} = true: each invocation one row r ≥ k0 + b of the panel below it: L21[r] = A21[r] L11⁻ᵀ
//   by forward substitution (x_j = (a_rj − Σ_{k<j} x_k L11[j, k]) / L11[j, j]), L11 read from
//   workgroup memory.
//
// The trailing update A22 −= L21 L21ᵀ is a matmul on the host's side. No read-back between the
// steps: the factorization is queued whole.

@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> pivots: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: array<u32>; // n, k0, b

const PANEL: bool = {{panel}};
const B: u32 = 64u;

// L11 (or A11 as it is factored), column-major: [column][row], so that invocations (rows) reading
// one column touch consecutive words. 16 KiB, WebGPU's least workgroup memory.
var<workgroup> t: array<f32, 4096>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = p[0];
    let k0 = p[1];
    let b = p[2];
    let i = lid.x;
    // The block's lower triangle into workgroup memory.
    for (var j = 0u; j < B; j++) {
        if i < b && j <= i {
            t[j * B + i] = a[(k0 + i) * n + k0 + j];
        }
    }
    workgroupBarrier();
    if PANEL {
        solve_row(n, k0, b, k0 + b + wg.x * B + i);
    } else {
        factor_block(n, k0, b, i);
    }
}

// Right-looking: column j's pivot, the column below it divided by it, the rest of the triangle
// less its outer product. The loops run to the constant B, so every barrier is in uniform control
// flow (browsers check), the work guarded by j < b.
fn factor_block(n: u32, k0: u32, b: u32, i: u32) {
    for (var j = 0u; j < B; j++) {
        if i == j && j < b {
            let d = t[j * B + j];
            let positive = d > 0.0; // false for NaN too
            pivots[k0 + j] = select(0.0, sqrt(d), positive);
            t[j * B + j] = select(1.0, sqrt(d), positive);
        }
        workgroupBarrier();
        if i > j && i < b {
            t[j * B + i] /= t[j * B + j];
        }
        workgroupBarrier();
        // Row i of the rest: every row's L[·, j] is in before any is read.
        if i > j && i < b {
            let lij = t[j * B + i];
            for (var k = j + 1u; k <= i; k++) {
                t[k * B + i] -= lij * t[j * B + k];
            }
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < B; j++) {
        if i < b && j <= i {
            a[(k0 + i) * n + k0 + j] = t[j * B + i];
        }
    }
}

fn solve_row(n: u32, k0: u32, b: u32, r: u32) {
    if r >= n {
        return;
    }
    let row = r * n + k0;
    for (var j = 0u; j < B; j++) {
        if j < b {
            var x = a[row + j];
            for (var k = 0u; k < j; k++) {
                x -= a[row + k] * t[k * B + j];
            }
            a[row + j] = x / t[j * B + j];
        }
    }
}
