// The workgroup reduction the row kernels share (norm.wgsl, softmax.wgsl, nll.wgsl; appended to
// each by crates/lutlab-model/src/fused.rs, WGSL having no include): a workgroup of THREADS
// invocations per row.

const THREADS: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

// Every invocation's `v` combined by max (`is_max`) or sum (all invocations call it). Each
// invocation combines the 64 partial values itself, in the same order: two barriers instead of
// a tree's seven (barriers are what CPU adapters pay for), and every invocation agrees.
fn workgroup_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    var total = partial[0];
    for (var i = 1u; i < THREADS; i++) {
        total = select(total + partial[i], max(total, partial[i]), is_max);
    }
    workgroupBarrier();
    return total;
}
