// Shared by the weighted Lloyd k-means passes (kmeans_assign, kmeans_update and their sequential
// twins for CPU adapters; the host puts this file in front of each): the parameters and the run
// states, which `lutlab-gpu/src/kmeans.rs` mirrors.

struct Params {
    k: u32,
    n_items: u32,
    n_runs: u32,
    max_iter: u32,
    // Workgroups per row of a 2-D dispatch (the device's per-dimension limit).
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Run states (runs[r].z); the passes skip runs above FRESH.
const ACTIVE: u32 = 0u;     // iterating
const FRESH: u32 = 1u;      // iterating; the next update pass must not declare convergence
const CONVERGED: u32 = 2u;
const STOPPED: u32 = 3u;
const RESEED: u32 = 4u;     // a cluster emptied: waits for the host to re-seed it

