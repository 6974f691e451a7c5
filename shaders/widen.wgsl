// A linear's weight as f32 `[in, out]` from the bytes its checkpoint stores (F32, F16 or BF16;
// `[in, out]` or HF's `[out, in]`), so a streamed model uploads what the file holds and the host
// neither widens nor transposes it (crates/lutlab-model/src/widen.rs). Widening is exact.
//
// {{dtype}}: 0 = F32, 1 = F16, 2 = BF16. {{out_in}}: the stored tensor is `[out, in]`.

@group(0) @binding(0) var<storage, read_write> stored: array<u32>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;   // [n_in, n_out]
@group(0) @binding(2) var<storage, read_write> p: array<u32>;   // n_in, n_out, invocations per grid row, first stored row, stored rows

// The weight arrives in pieces of whole stored rows (rows of `[out, in]` or of `[in, out]`);
// `stored` holds one piece and the kernel writes its part of `w`.

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
    let first = p[3];
    let rows = p[4];
    let t = id.y * p[2] + id.x;
    if OUT_IN {
        // Stored rows `first..first + rows` are output columns: thread `t` writes `w[i, first + j]`,
        // consecutive threads consecutive columns.
        if t >= n_in * rows {
            return;
        }
        let i = t / rows;
        let j = t % rows;
        w[i * n_out + first + j] = element(j * n_in + i);
    } else {
        // Stored rows are input rows: the piece is a contiguous run of `w`.
        if t >= rows * n_out {
            return;
        }
        w[first * n_out + t] = element(t);
    }
}
