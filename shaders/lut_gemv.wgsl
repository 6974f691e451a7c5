// LUT GEMV: y = scale ⊙ ((x − shift) · W) + bias for a few tokens (decode), reading the packed
// codes and tables directly (layout: docs/FORMAT.md, lutlab_core::quant::packed).
//
// One workgroup = 32 output columns × 8 slices of the input rows, for one token (workgroup y).
// Lane x owns a column; the 32 lanes of a slice read 32 neighbouring packed words (coalesced) and
// the same x value (a broadcast). Each slice walks every 8th block of 32 rows; the 8 partial sums
// meet in workgroup memory, then lane y = 0 adds the column's sparse outliers, scale and bias.
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

// Every binding is read_write: the host launches through cubecl, which binds them so.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;        // [m, rows]
@group(0) @binding(1) var<storage, read_write> qweight: array<u32>;  // [blocks · bits, cols]
@group(0) @binding(2) var<storage, read_write> aux: array<f32>;      // tables | sparse values | scales | shift | bias
@group(0) @binding(3) var<storage, read_write> index: array<u32>;    // sparse col_ptr | row_idx
@group(0) @binding(4) var<storage, read_write> y: array<f32>;        // [m, cols]
@group(0) @binding(5) var<storage, read_write> p: array<u32>;        // parameters, see `Params` on the host

fn rows() -> u32 { return p[0]; }
fn cols() -> u32 { return p[1]; }
fn channels_per_table() -> u32 { return p[3]; }
fn blocks() -> u32 { return p[4]; }
fn sparse_values_at() -> u32 { return p[5]; }
fn scales_at() -> u32 { return p[6]; }   // 0xffffffff: no scales
fn shift_at() -> u32 { return p[7]; }    // 0xffffffff: no shift
fn bias_at() -> u32 { return p[8]; }     // 0xffffffff: no bias
fn row_idx_at() -> u32 { return p[9]; }
const NONE: u32 = 0xffffffffu;

var<workgroup> partial: array<f32, 256>;
var<workgroup> tables: array<f32, TABLE_SLOTS>;

fn input(t: u32, r: u32) -> f32 {
    var v = x[t * rows() + r];
    if (shift_at() != NONE) { v -= aux[shift_at() + r]; }
    return v;
}

@compute @workgroup_size(32, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c0 = wg.x * COLS;
    let c = c0 + lid.x;
    let t = wg.y;
    let lane = lid.y * COLS + lid.x;
    let live = c < cols();
    let first_table = c0 / channels_per_table();
    let my_table = min(c, cols() - 1u) / channels_per_table();

    if (SHARED_TABLES) {
        let last_table = (min(c0 + COLS, cols()) - 1u) / channels_per_table();
        let entries = (last_table - first_table + 1u) * LEVELS;
        for (var i = lane; i < entries; i += COLS * SLICES) {
            tables[i] = aux[first_table * LEVELS + i];
        }
        workgroupBarrier();
    }
    let table_base = select(my_table * LEVELS, (my_table - first_table) * LEVELS, SHARED_TABLES);

    var acc = 0.0;
    if (live) {
        var words: array<u32, 9>;
        for (var k = lid.y; k < blocks(); k += SLICES) {
            for (var j = 0u; j < BITS; j++) {
                words[j] = qweight[(k * BITS + j) * cols() + c];
            }
            words[BITS] = 0u;
            let r0 = k * 32u;
            let n = min(32u, rows() - r0);
            for (var i = 0u; i < n; i++) {
                let bit = i * BITS;
                let w = bit / 32u;
                let s = bit % 32u;
                // The high bits of a code that straddles two words (shifts of 32 are not allowed).
                let high = select(0u, words[w + 1u] << ((32u - s) % 32u), s + BITS > 32u);
                let code = ((words[w] >> s) | high) & MASK;
                var wv: f32;
                if (SHARED_TABLES) { wv = tables[table_base + code]; } else { wv = aux[table_base + code]; }
                acc += input(t, r0 + i) * wv;
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
        for (var i = index[c]; i < index[c + 1u]; i++) {
            sum += input(t, index[row_idx_at() + i]) * aux[sparse_values_at() + i];
        }
        if (scales_at() != NONE) { sum *= aux[scales_at() + c]; }
        if (bias_at() != NONE) { sum += aux[bias_at() + c]; }
        y[t * cols() + c] = sum;
    }
}
