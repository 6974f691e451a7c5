// Fisher's accumulation in one pass over a micro-batch's per-sample gradients `[B, n]`
// (crates/lutlab-model/src/fused.rs, `add_squares`): `acc[i] += Σ_b grad[b, i]²` in place, and
// each workgroup's share of every sample's sum of squares (`shares[b, group]`, summed by the
// host's next op; the sums find the sample whose gradient is not finite). burn's ops take four
// launches: the squares written out, read back by two reductions and by the addition.
// `workgroup_reduce` and THREADS: workgroup_reduce.wgsl, appended.

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<storage, read_write> shares: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<u32>;  // n, groups, workgroups per grid row

const B: u32 = {{samples}}u;
// Elements per invocation: a workgroup covers THREADS · PER_THREAD consecutive elements.
const PER_THREAD: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    let n = p[0];
    let group = wg.y * p[2] + wg.x;
    // A workgroup past the last group still takes part in the barriers; it reads and writes nothing.
    let end = select(0u, n, group < p[1]);
    let first = group * THREADS * PER_THREAD;
    var own: array<f32, B>;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * THREADS + lid;
        if i < end {
            var total = 0.0;
            for (var b = 0u; b < B; b++) {
                let g = grad[b * n + i];
                own[b] += g * g;
                total += g * g;
            }
            acc[i] += total;
        }
    }
    for (var b = 0u; b < B; b++) {
        let sum = workgroup_reduce(own[b], lid, false);
        if lid == 0u && group < p[1] {
            shares[b * p[1] + group] = sum;
        }
    }
}
