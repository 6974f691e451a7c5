// LUT GEMV: y = scale ⊙ ((x − shift) · W) + bias for a few tokens (decode), reading the packed
// codes and tables directly (layout: docs/FORMAT.md, lutlab_core::quant::packed).
//
// Workgroup (x, y, z) = (32 output columns, one split of the input rows, one token). Its 256 lanes
// are 32 columns × 8 slices: lane x owns a column, so the 32 lanes of a slice read 32 neighbouring
// packed words (coalesced) and the same input value (a broadcast); slice j walks every 8th block
// of 32 rows of the split. The 8 partial sums meet in workgroup memory. With one split, lane y = 0
// then adds the column's sparse outliers, scale and bias and writes y; with several (narrow
// layers need them to fill a large GPU), it writes its partial sum and lut_gemv_reduce.wgsl
// finishes.
//
// The host fills {{bits}} (1..8) and {{shared_tables}}: the tables of the workgroup's columns are
// copied to workgroup memory when 32 · 2^bits entries fit the 2048 reserved (bits ≤ 6), and read
// from the storage buffer otherwise.

const BITS: u32 = {{bits}}u;
const LEVELS: u32 = 1u << BITS;
const MASK: u32 = LEVELS - 1u;
const COLS: u32 = 32u;
const SLICES: u32 = 8u;
const SHARED_TABLES: bool = {{shared_tables}};
const TABLE_SLOTS: u32 = 2048u;

var<workgroup> partial: array<f32, 256>;
var<workgroup> tables: array<f32, TABLE_SLOTS>;

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Parameters into registers once (loads from a read_write buffer are not hoisted for us).
    let rows = p[0];
    let cols = p[1];
    let channels_per_table = p[3];
    let blocks = p[4];
    let shift_at = p[7];
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
            tables[i] = aux[first_table * LEVELS + i];
        }
        workgroupBarrier();
    }
    let table_base = select(my_table * LEVELS, (my_table - first_table) * LEVELS, SHARED_TABLES);

    var acc = 0.0;
    if (live) {
        let x_row = t * rows;
        let k_end = min(blocks, (split + 1u) * blocks_per_split);
        var words: array<u32, 9>;
        for (var k = split * blocks_per_split + lid.y; k < k_end; k += SLICES) {
            for (var j = 0u; j < BITS; j++) {
                words[j] = qweight[(k * BITS + j) * cols + c];
            }
            words[BITS] = 0u;
            let r0 = k * 32u;
            let n = min(32u, rows - r0);
            for (var i = 0u; i < 32u; i++) {
                if (i < n) {
                    let bit = i * BITS;
                    let w = bit / 32u;
                    let s = bit % 32u;
                    // The high bits of a code that straddles two words (shifts of 32 are not allowed).
                    let high = select(0u, words[w + 1u] << ((32u - s) % 32u), s + BITS > 32u);
                    let code = ((words[w] >> s) | high) & MASK;
                    var wv: f32;
                    if (SHARED_TABLES) { wv = tables[table_base + code]; } else { wv = aux[table_base + code]; }
                    var xv = x[x_row + r0 + i];
                    if (shift_at != NONE) { xv -= aux[shift_at + r0 + i]; }
                    acc += xv * wv;
                }
            }
        }
    }
    partial[lane] = acc;
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
