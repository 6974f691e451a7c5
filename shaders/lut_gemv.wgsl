// LUT GEMV: y = scale ⊙ ((x − shift) · W) + bias for a few tokens (decode), reading the packed
// codes and tables directly (layout: docs/FORMAT.md, lutlab_core::quant::packed).
//
// Workgroup (x, y, z) = (32 output columns, one split of the input rows, one token). Its 256 lanes
// are 32 columns × 8 slices: lane x owns a column, so the 32 lanes of a slice read 32 neighbouring
// packed words (coalesced) and the same staged input (a broadcast); slice j walks every 8th block
// of 32 rows of the split. The 8 partial sums meet in workgroup memory. With one split, lane y = 0
// then adds the column's sparse outliers, scale and bias and writes y; with several (narrow
// layers need them to fill a large GPU), it writes its partial sum and lut_gemv_reduce.wgsl
// finishes.
//
// The host fills {{bits}} (1..8) and {{shared_tables}}: the tables of the workgroup's columns are
// copied to workgroup memory when 32 tables fit (bits ≤ 6), and read from the storage buffer
// otherwise. The input is staged in workgroup memory 1024 values at a time.

const BITS: u32 = {{bits}}u;
const LEVELS: u32 = 1u << BITS;
const MASK: u32 = LEVELS - 1u;
const COLS: u32 = 32u;
const SLICES: u32 = 8u;
const SHARED_TABLES: bool = {{shared_tables}};
// A table per lane at a stride of LEVELS + 1 (odd): lanes of different tables never fall in the
// same memory bank for the same code. 32 tables of 64 entries (6 bits) fit.
const TABLE_STRIDE: u32 = LEVELS + 1u;
const TABLE_SLOTS: u32 = 32u * 65u;
// Blocks per chunk of the input staged in workgroup memory (1024 values as 256 vec4s).
const CHUNK_BLOCKS: u32 = 32u;

var<workgroup> partial: array<f32, 256>;
var<workgroup> tables: array<f32, TABLE_SLOTS>;
var<workgroup> xs: array<vec4<f32>, 256>;
var<workgroup> chunk_count: u32;

// Table entry `i` of this workgroup's columns.
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

    let c0 = wg.x * COLS;
    let c = c0 + lid.x;
    let split = wg.y;
    let t = wg.z;
    let lane = lid.y * COLS + lid.x;
    let live = c < cols;
    let first_table = c0 / channels_per_table;
    let my_table = min(c, cols - 1u) / channels_per_table;

    if (SHARED_TABLES) {
        let last_table = (min(c0 + COLS, cols) - 1u) / channels_per_table;
        let entries = (last_table - first_table + 1u) * LEVELS;
        for (var i = lane; i < entries; i += COLS * SLICES) {
            tables[i / LEVELS * TABLE_STRIDE + i % LEVELS] = aux[first_table * LEVELS + i];
        }
    }
    let table_base = select(my_table * LEVELS, (my_table - first_table) * TABLE_STRIDE, SHARED_TABLES);

    let k0 = split * blocks_per_split;
    let k_end = min(blocks, k0 + blocks_per_split);
    // The chunk count, made provably uniform for the barriers in the loop (browsers check).
    if (lane == 0u) { chunk_count = (k_end - min(k0, k_end) + CHUNK_BLOCKS - 1u) / CHUNK_BLOCKS; }
    let chunks = workgroupUniformLoad(&chunk_count);

    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    for (var chunk = 0u; chunk < chunks; chunk++) {
        let kc = k0 + chunk * CHUNK_BLOCKS;
        // Stage the chunk's inputs (minus the shift; zero past the last row).
        let r = kc * 32u + lane * 4u;
        var v = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if (r + e < rows) { v[e] = input(t, r + e); }
        }
        xs[lane] = v;
        workgroupBarrier();
        if (live && kc + CHUNK_BLOCKS <= k_end) {
            // A whole chunk: each lane's 4 blocks, all their words loaded first (host-written).
{{decode_chunk}}
        } else if (live) {
            for (var k = kc + lid.y; k < min(kc + CHUNK_BLOCKS, k_end); k += SLICES) {
                let xk = (k - kc) * 8u;
                // The host writes out the block's `bits` word loads and its 32 codes' shifts,
                // masks, table lookups and multiply-adds with literal constants (no arrays to
                // index, nothing left to unroll), into four accumulators.
{{decode_block}}
            }
        }
        workgroupBarrier();
    }
    partial[lane] = (acc0 + acc1) + (acc2 + acc3);
    workgroupBarrier();
    if (lid.y == 0u && live) {
        var sum = 0.0;
        for (var s = 0u; s < SLICES; s++) {
            sum += partial[s * COLS + lid.x];
        }
        if (splits > 1u) {
            y[(t * splits + split) * cols + c] = sum;
        } else {
            y[t * cols + c] = finish(sum, t, c);
        }
    }
}
