// GPT-2's GELU (`gelu_new`, the tanh approximation) of each element, or with `{{backward}}` its
// gradient `∂y · gelu'(x)` for Fisher's blocks (crates/lutlab-model/src/fused.rs and
// tracked_fused.rs): one launch where burn's ops take 7 forward and ~14 backward, each a pass
// over the MLP's widest tensor. With u = k·(x + c·x³), k = √(2/π), c = 0.044715:
// gelu(x) = x·(1 + tanh u)/2 = x·σ(2u) and gelu'(x) = σ(2u) + 2x·σ(2u)·σ(−2u)·k·(1 + 3c·x²),
// written with σ so that neither tail cancels (1 + tanh u loses every digit at x = −5 in f32).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> dy: array<f32>;   // the forward's: a placeholder, unread
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;    // elements, workgroups per grid row

const BACKWARD: bool = {{backward}};
const K: f32 = 0.7978845608028654;
const C: f32 = 0.044715;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wg.y * p[1] + wg.x) * 256u + lid.x;
    if i >= p[0] {
        return;
    }
    let v = x[i];
    // σ(2u) and σ(−2u) from one exponential; u clamped where σ is 0 or 1 in f32 anyway.
    let e = exp(-2.0 * clamp(K * (v + C * v * v * v), -15.0, 15.0));
    let s = 1.0 / (1.0 + e);
    if BACKWARD {
        out[i] = dy[i] * (s + 2.0 * v * s * (e * s) * K * (1.0 + 3.0 * C * v * v));
    } else {
        out[i] = v * s;
    }
}
