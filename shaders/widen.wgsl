// A linear's weight as f32 `[in, out]` from the bytes its checkpoint stores (F32, F16 or BF16;
// `[in, out]` or HF's `[out, in]`), so a streamed model uploads what the file holds and the host
// neither widens nor transposes it (crates/lutlab-model/src/widen.rs). Widening is exact.
//
// {{dtype}}: 0 = F32, 1 = F16, 2 = BF16. {{out_in}}: the stored tensor is `[out, in]`.

@group(0) @binding(0) var<storage, read_write> stored: array<u32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;   // [n_in, n_out]
@group(0) @binding(2) var<storage, read_write> p: array<u32>;   // n_in, n_out, invocations per grid row

const DTYPE: u32 = {{dtype}}u;
const OUT_IN: bool = {{out_in}};

// Stored element `i` as f32.
fn element(i: u32) -> f32 {
    if DTYPE == 0u {
        return bitcast<f32>(stored[i]);
    }
    let word = stored[i / 2u];
    let bits = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    if DTYPE == 1u {
        return unpack2x16float(bits).x;
    }
    return bitcast<f32>(bits << 16u);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n_in = p[0];
    let n_out = p[1];
    let at = id.y * p[2] + id.x;
    if at >= n_in * n_out {
        return;
    }
    let i = at / n_out;
    let o = at % n_out;
    w[at] = element(select(at, o * n_in + i, OUT_IN));
}
