//! The strided perplexity protocol scores every token but the first exactly once.

use lutlab_core::perplexity::{batches, strided_windows};

#[test]
fn every_token_after_the_first_is_scored_once() {
    for (n, max_length, stride) in [(256, 256, 128), (1000, 256, 128), (1001, 256, 128), (777, 100, 33), (50, 10, 9), (50, 10, 1)] {
        let windows = strided_windows(n, max_length, stride, "t").unwrap();
        let mut scored = vec![0u32; n];
        for w in &windows {
            assert!(w.len() <= max_length && w.begin < w.end && w.score_from > w.begin);
            for count in &mut scored[w.score_from..w.end] {
                *count += 1;
            }
        }
        assert_eq!(scored[0], 0);
        assert!(scored[1..].iter().all(|&c| c == 1), "n={n} max={max_length} stride={stride}");
        assert_eq!(windows.last().unwrap().end, n);
    }
}

#[test]
fn non_overlapping_windows_are_gptqs_protocol_tail_dropped() {
    // GPTQ: ⌊N / L⌋ windows of exactly L tokens; the 5 tokens after the last are not evaluated.
    let windows = strided_windows(55, 10, 10, "t").unwrap();
    assert_eq!(windows.len(), 5);
    assert!(windows.iter().all(|w| w.len() == 10));
    assert_eq!(windows.last().unwrap().end, 50);
}

#[test]
fn non_overlapping_windows_cannot_score_their_first_token() {
    // As in HF's loop: with stride == max_length a window's first token has no context inside it.
    let windows = strided_windows(50, 10, 10, "t").unwrap();
    let scored: usize = windows.iter().map(|w| w.scored()).sum();
    assert_eq!(scored, 50 - windows.len());
    assert!(windows.iter().all(|w| w.score_from == w.begin + 1));
}

#[test]
fn matches_hf_loop_for_a_known_case() {
    // HF: begin 0,128,256,...; trg_len = end - prev_end.
    let windows = strided_windows(600, 256, 128, "t").unwrap();
    let got: Vec<(usize, usize, usize)> = windows.iter().map(|w| (w.begin, w.end, w.score_from)).collect();
    assert_eq!(got, vec![(0, 256, 1), (128, 384, 256), (256, 512, 384), (384, 600, 512)]);
}

#[test]
fn batches_group_equal_shapes_only() {
    let windows = strided_windows(2000, 256, 128, "t").unwrap();
    let groups = batches(&windows, 4);
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), windows.len());
    for g in &groups {
        assert!(g.len() <= 4);
        assert!(g.iter().all(|w| w.len() == g[0].len() && w.first_scored_position() == g[0].first_scored_position()));
    }
    assert_eq!(groups[0].len(), 1, "the first window scores every position and runs alone");
}
