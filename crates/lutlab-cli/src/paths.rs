//! Default locations of the shipped model and data: relative to the working directory when run
//! from the repository, else relative to the repository the binary was built from.

use std::path::PathBuf;

pub const SHIPPED_MODEL: &str = "models/gpt2-tiny-wikitext";
pub const WIKITEXT_TEST: &str = "data/wikitext-2/test.txt";
/// Default calibration text (Fisher, centering). WikiText-2's train split is not shipped; the
/// validation split is the calibration text, and the test split stays for evaluation only.
pub const WIKITEXT_VALID: &str = "data/wikitext-2/valid.txt";

pub fn repo_path(relative: &str) -> PathBuf {
    let here = PathBuf::from(relative);
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}
