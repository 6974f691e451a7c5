//! Splitting work on a large output buffer over the CPU's cores (natively; the browser's one
//! thread runs it in one piece). Used where a streamed model converts and transposes a block's
//! weights each time the block is used, which single-threaded took longer than the GPU's work.

/// Below this many elements one thread does it: spawning costs more than it saves.
pub const MIN_PARALLEL: usize = 1 << 20;

/// Calls `f(first_row, rows)` on `out` cut into runs of whole rows of `row_len` elements, in
/// parallel. `f` must write only its own rows.
pub fn for_row_chunks<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let row_len = row_len.max(1);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let rows = out.len() / row_len;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows);
        if threads > 1 && out.len() >= MIN_PARALLEL {
            let per = rows.div_ceil(threads);
            std::thread::scope(|scope| {
                for (i, chunk) in out.chunks_mut(per * row_len).enumerate() {
                    let f = &f;
                    scope.spawn(move || f(i * per, chunk));
                }
            });
            return;
        }
    }
    // The browser's one thread: the row length and the threshold only matter above.
    let _ = (row_len, MIN_PARALLEL);
    f(0, out);
}

/// `f` on `0..total` cut into one contiguous range per core (natively; one range in the
/// browser), results in range order. For independent work whose outputs are not rows of one
/// buffer (the Hessian methods' output channels).
pub fn map_ranges<T: Send>(total: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(total);
        if threads > 1 {
            let per = total.div_ceil(threads);
            return std::thread::scope(|scope| {
                let handles: Vec<_> = (0..total)
                    .step_by(per)
                    .map(|start| {
                        let f = &f;
                        scope.spawn(move || f(start..(start + per).min(total)))
                    })
                    .collect();
                // A worker only panics on a bug; re-raise it here rather than lose its part.
                handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
            });
        }
    }
    vec![f(0..total)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_row_is_visited_once_with_its_index() {
        for n in [10usize, 3 << 20] {
            let mut out = vec![0usize; n * 4];
            super::for_row_chunks(&mut out, 4, |first, rows| {
                for (i, row) in rows.chunks_mut(4).enumerate() {
                    row.iter_mut().for_each(|v| *v += first + i);
                }
            });
            assert!(out.chunks(4).enumerate().all(|(i, row)| row.iter().all(|&v| v == i)));
        }
    }

    #[test]
    fn ranges_cover_the_total_in_order() {
        for total in [1usize, 7, 1000] {
            let parts = super::map_ranges(total, |r| r.collect::<Vec<_>>());
            assert_eq!(parts.concat(), (0..total).collect::<Vec<_>>());
        }
    }
}
