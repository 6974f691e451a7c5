//! The tokenizer loader, `TextTokenizer::from_files`, as the page and the CLI call it: the input
//! is a `tokenizer.json`, or `vocab.json`, `merges.txt` and optionally `tokenizer_config.json`
//! split at `NEXT_FILE`. A tokenizer that loads must then encode and decode a text (what
//! loading a model does next) without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lutlab_core::{TextTokenizer, TokenizerFiles};
use lutlab_fuzz::split_files;

/// Special tokens of the shipped families, whitespace, bytes of several UTF-8 lengths.
const TEXT: &str = "<|endoftext|>Hello world, <s> it's 1998!\n\n\t  </s>ünïcödé 漢字 🦀<unk>";

fuzz_target!(|data: &[u8]| {
    let files = match split_files(data, 3).as_slice() {
        [json] => TokenizerFiles::Json(json.to_vec()),
        [vocab, merges, rest @ ..] => {
            TokenizerFiles::VocabMerges { vocab: vocab.to_vec(), merges: merges.to_vec(), config: rest.first().map(|c| c.to_vec()) }
        }
        [] => unreachable!("split_files returns at least one file"),
    };
    let Ok(tokenizer) = TextTokenizer::from_files(&files) else { return };
    let size = tokenizer.vocab_size() as u32;
    let _ = tokenizer.token_id("<|endoftext|>");
    if let Ok(ids) = tokenizer.encode(TEXT) {
        let _ = tokenizer.decode(&ids);
    }
    // Ids at and past the end of the vocabulary, as a model's sampling could produce them.
    let _ = tokenizer.decode(&[0, size.saturating_sub(1), size, u32::MAX]);
});
