// The row statistics norm.wgsl and norm_backward.wgsl share (appended to each by
// crates/lutlab-model/src/fused.rs, WGSL having no include): of x's row at `base` (`count`
// values, 0 past the last row), its mean (0 for RMSNorm) and r = 1/√(var + eps), the biased
// variance after the mean (RMSNorm: the mean square), in f32 as burn's separate kernels compute
// them. Every invocation of the workgroup calls it.
fn row_statistics(base: u32, count: u32, n: u32, eps: f32, lid: u32) -> vec2<f32> {
    var mean = 0.0;
    if LAYER_NORM {
        var s = 0.0;
        for (var i = lid; i < count; i += THREADS) {
            s += x[base + i];
        }
        mean = workgroup_reduce(s, lid, false) / f32(n);
    }
    var s2 = 0.0;
    for (var i = lid; i < count; i += THREADS) {
        let d = x[base + i] - mean;
        s2 += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(workgroup_reduce(s2, lid, false) / f32(n) + eps));
}
