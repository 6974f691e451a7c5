// A plain copy, vec4 at a time: the memory-bandwidth ceiling the GEMV kernels are measured against
// (each byte read once and written once).

@group(0) @binding(0) var<storage, read_write> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    // 2-D grid for arrays past 65,535 workgroups of 256.
    let i = id.x + id.y * groups.x * 256u;
    if (i < arrayLength(&src)) {
        dst[i] = src[i];
    }
}
