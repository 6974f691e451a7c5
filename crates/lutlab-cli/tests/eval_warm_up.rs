//! `lutlab eval --warm-up` (issue 23's speed comparisons): the text is evaluated once untimed and
//! the timed second run reports the same perplexity to the last bit.

mod common;

use common::{lutlab_json, repo};

#[test]
fn warm_up_changes_the_timing_not_the_result() {
    let dir = std::env::temp_dir().join(format!("lutlab-warm-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo("data/wikitext-2/test.txt")).unwrap();
    let data = dir.join("text.txt");
    std::fs::write(&data, &text[..3000]).unwrap();
    let eval = |extra: &[&str]| lutlab_json(&[&["eval", "--data", data.to_str().unwrap(), "--max-length", "128", "--json"], extra].concat());
    let (cold, warmed) = (eval(&[]), eval(&["--warm-up"]));
    eprintln!("seconds: first run {}, after a warm-up {}", cold["seconds"], warmed["seconds"]);
    for key in ["nll_sum", "perplexity", "scored", "tokens"] {
        assert_eq!(cold[key], warmed[key], "{key}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
