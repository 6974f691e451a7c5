//! Helpers shared by the fuzz targets: one fuzz input can stand for several files, and the
//! native readers that take a path get the input written to a scratch file.

use std::path::PathBuf;

/// Separates the files of one input (shards of a checkpoint; `vocab.json`, `merges.txt` and
/// `tokenizer_config.json`). A NUL-delimited marker: no JSON or text file holds one by chance,
/// and `dict/*.dict` gives it to libFuzzer so mutations can add and remove files.
pub const NEXT_FILE: &[u8] = b"\0--next-file--\0";

/// The files of one input, at most `max` (the last keeps any further markers).
pub fn split_files(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut files = Vec::new();
    let mut rest = data;
    while files.len() + 1 < max {
        match rest.windows(NEXT_FILE.len()).position(|w| w == NEXT_FILE) {
            Some(at) => {
                files.push(&rest[..at]);
                rest = &rest[at + NEXT_FILE.len()..];
            }
            None => break,
        }
    }
    files.push(rest);
    files
}

/// Writes `bytes` to the scratch file `name` of this process (under `$TMPDIR`; `scripts/fuzz.sh`
/// points it at a RAM disk) and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lutlab-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file");
    path
}
