// GPTQ / LDLQ rounding of one batch of rows k0..k1 (rows are input features, in processing
// order), the sequential part of `hessian_rounding.rs`: each row's targets are rounded to the
// nearest entry of their channel's table, and the error `w − q` of each row is fed forward to the
// batch's later rows with QuIP's LDL coefficients (`H = (Ú + I) D (Ú + I)ᵀ`, row j > k gets
// Ú[k, j] · (w_k − q_k)). The rows after the batch get the batch's errors afterwards in one
// matmul (GPTQ's lazy batch update), which is why the errors are written out.
//
// One thread per output channel: channels are independent given H, so a thread owns its
// column's targets for the whole batch (no barriers) and consecutive threads touch consecutive
// addresses. It also sums its channel's share of the proxy loss: with `e = (Ú + I)ᵀ Δ` the
// targets' rounding errors, `Δᵀ H Δ = Σ_k D_k e_k²` exactly (the host removes the damping).

// Every binding is read_write: the host launches through cubecl, which binds them so.
@group(0) @binding(0) var<storage, read_write> targets: array<f32>;       // [n, m], updated
@group(0) @binding(1) var<storage, read_write> weights: array<f32>;       // [n, m], as given
@group(0) @binding(2) var<storage, read_write> coefficients: array<f32>;  // [n, n], Ú (upper part)
@group(0) @binding(3) var<storage, read_write> aux: array<f32>;           // tables | pivots √D | row sets
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;         // [n, m]
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;          // [m], accumulated
@group(0) @binding(6) var<storage, read_write> errors: array<f32>;        // [k1 − k0, m]
@group(0) @binding(7) var<storage, read_write> p: array<u32>;             // n, m, k0, k1, levels, channels per table, pivots at, row sets at

const NONE: u32 = 0xffffffffu;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = p[0];
    let m = p[1];
    let k0 = p[2];
    let k1 = p[3];
    let levels = p[4];
    let pivots_at = p[6];
    let sets_at = p[7];
    let c = id.x;
    if (c >= m) { return; }
    // Static input groups: row k rounds to its group's set of tables (m / channels per table
    // tables each), given as an f32 per row after the pivots.
    let tables_per_set = m / p[5];
    var loss_here = 0.0;
    for (var k = k0; k < k1; k++) {
        var row_set = 0u;
        if (sets_at != NONE) { row_set = u32(aux[sets_at + k]); }
        let table = (row_set * tables_per_set + c / p[5]) * levels;
        let t = targets[k * m + c];
        // The nearest entry; a tie goes to the smaller value (as the CPU reference).
        var best = aux[table];
        var code = 0u;
        var distance = abs(t - best);
        for (var l = 1u; l < levels; l++) {
            let v = aux[table + l];
            let d = abs(t - v);
            if (d < distance || (d == distance && v < best)) {
                best = v;
                code = l;
                distance = d;
            }
        }
        codes[k * m + c] = code;
        let pivot = aux[pivots_at + k];
        loss_here += pivot * pivot * (t - best) * (t - best);
        let error = weights[k * m + c] - best;
        errors[(k - k0) * m + c] = error;
        for (var j = k + 1u; j < k1; j++) {
            targets[j * m + c] += coefficients[k * n + j] * error;
        }
    }
    loss[c] += loss_here;
}
