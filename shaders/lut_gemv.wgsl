// LUT GEMV: y = scale ⊙ ((x − shift) · W) + bias for a few tokens (decode), reading the packed
// codes and tables directly. On the GPU a layer's code words lie column by column (`[cols,
// blocks, bits]`, see `lut_linear.rs::column_major`): one column's codes are one contiguous run.
//
// Workgroup (x, y, z) = (COLS output columns, one split of the input rows, one token). Its 256
// lanes are 8 slices of 32; slice y owns R neighbouring columns, and in each chunk of 32 packed
// blocks (1024 rows) lane x takes block x of every one of them. So for each column a slice reads
// 32 consecutive blocks, one contiguous run of 32·bits words (coalesced, whole cache lines),
// and its 32 lanes look up that one column's table together: lanes that want the same entry
// share a read and different entries lie in different banks, so the lookups never conflict. A
// lane's 32 inputs are read from workgroup memory once per chunk and used for its R columns.
// The 32 lanes' sums then meet in a tree in workgroup memory. With one split, the epilogue
// (sparse outliers, scale, bias) follows; with several, lut_gemv_reduce.wgsl finishes.
//
// The host fills in the code width (1..8), R, whether the workgroup's tables are copied to
// workgroup memory (when they fit, bits ≤ 6), and `lut_linear::gemv_decode`'s code: the lane's
// columns, the unrolled loads, lookups and multiply-adds of one block, the lane's sums.

const BITS: u32 = {{bits}}u;
const LEVELS: u32 = 1u << BITS;
const MASK: u32 = LEVELS - 1u;
const R: u32 = {{cols_per_lane}}u;
const SLICE: u32 = 32u;
const SLICES: u32 = 8u;
const COLS: u32 = SLICES * R;
const SHARED_TABLES: bool = {{shared_tables}};
const TABLE_SLOTS: u32 = select(1u, COLS * LEVELS, SHARED_TABLES);
// Blocks of a chunk; each block's 32 inputs are 8 vec4s, staged at a stride of 9 so that the
// lanes of a slice, each reading its own block, fall in different banks.
const CHUNK_BLOCKS: u32 = 32u;
const XS_STRIDE: u32 = 9u;

var<workgroup> xs: array<vec4<f32>, 288>;
var<workgroup> tables: array<f32, TABLE_SLOTS>;
var<workgroup> chunk_count: u32;

// Table entry `i`: an index into the workgroup's copy, or into `aux`.
fn lut(i: u32) -> f32 {
    if (SHARED_TABLES) { return tables[i]; }
    return aux[i];
}

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Parameters into registers once (loads from a read_write buffer are not hoisted for us).
    let rows = p[0];
    let cols = p[1];
    let channels_per_table = p[3];
    let blocks = p[4];
    let splits = p[10];
    let blocks_per_split = p[11];

    let tile = wg.x * COLS;
    let split = wg.y;
    let t = wg.z;
    let lane = lid.y * SLICE + lid.x;
    // This lane's first column; columns past the last read the last one's codes and are dropped.
    let first = tile + lid.y * R;

    if (SHARED_TABLES) {
        for (var i = lane; i < COLS * LEVELS; i += SLICE * SLICES) {
            let c = min(tile + i / LEVELS, cols - 1u);
            tables[i] = aux[c / channels_per_table * LEVELS + i % LEVELS];
        }
    }

    let k0 = split * blocks_per_split;
    let k_end = min(blocks, k0 + blocks_per_split);
    // The chunk count, made provably uniform for the barriers in the loop (browsers check).
    if (lane == 0u) { chunk_count = (k_end - min(k0, k_end) + CHUNK_BLOCKS - 1u) / CHUNK_BLOCKS; }
    let chunks = workgroupUniformLoad(&chunk_count);
{{columns}}
    for (var chunk = 0u; chunk < chunks; chunk++) {
        let kc = k0 + chunk * CHUNK_BLOCKS;
        // Stage the chunk's inputs (minus the shift; zero past the last row): a vec4 per lane.
        let r = kc * 32u + lane * 4u;
        var v = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if (r + e < rows) { v[e] = input(t, r + e); }
        }
        xs[lane / 8u * XS_STRIDE + lane % 8u] = v;
        workgroupBarrier();
        let k = kc + lid.x;
        if (k < k_end) {
            let xk = lid.x * XS_STRIDE;
{{decode}}
        }
        workgroupBarrier();
    }

    // The slice's 32 lane sums of each of its R columns, added in a tree.
    var sums: vec4<f32>;
{{sums}}    xs[lane] = sums;
    workgroupBarrier();
    for (var stride = SLICE / 2u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) { xs[lane] += xs[lane + stride]; }
        workgroupBarrier();
    }
    let c = first + lid.x;
    if (lid.x < R && c < cols) {
        let sum = xs[lid.y * SLICE][lid.x];
        if (splits > 1u) {
            y[(t * splits + split) * cols + c] = sum;
        } else {
            y[t * cols + c] = finish(sum, t, c);
        }
    }
}
