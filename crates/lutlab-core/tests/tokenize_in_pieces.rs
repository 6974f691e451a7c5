//! Long texts are tokenized in pieces on every core (`TextTokenizer::encode`): the pieces must give
//! exactly the ids of the whole text in one call, for the shipped GPT-2 and OPT tokenizers (byte-level
//! BPE, cut), and Llama's (sentencepiece-style, never cut).

use lutlab_core::tokenizer::{TextTokenizer, TokenizerFiles};
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn tokenizer(model: &str) -> TextTokenizer {
    let bytes = std::fs::read(repo(&format!("models/{model}/tokenizer.json"))).expect("tokenizer.json");
    TextTokenizer::from_files(&TokenizerFiles::Json(bytes)).expect("tokenizer loads")
}

/// Text made of fragments chosen to sit on every side of a cut: runs of mixed whitespace (tabs,
/// newlines, an ideographic space), contractions, digits, accents, special tokens.
fn awkward_text(fragments: usize) -> String {
    const PARTS: [&str; 20] = ["x", "word", " ", "\n", "\n\n", " \n ", "\t", "\u{3000}", "'s", "'t", "12", " 34", "é", "<|endoftext|>", "</s>", "!!", " ?", "  ", "日本", " ="];
    let mut state = 0x9E3779B97F4A7C15u64;
    (0..fragments)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            PARTS[(state % PARTS.len() as u64) as usize]
        })
        .collect()
}

#[test]
fn pieces_give_the_ids_of_the_whole_text() {
    let wikitext: String = std::fs::read_to_string(repo("data/wikitext-2/valid.txt")).expect("WikiText-2 valid");
    let wikitext = &wikitext[..wikitext.floor_char_boundary(1 << 20)];
    let awkward = awkward_text(20_000);
    for model in ["gpt2-tiny-wikitext", "opt-tiny-wikitext"] {
        let tokenizer = tokenizer(model);
        assert!(tokenizer.cuts_keep_tokens(), "{model}: byte-level BPE is cut into pieces");
        for (name, text) in [("WikiText-2", wikitext), ("awkward text", awkward.as_str())] {
            let whole = tokenizer.encode_in_one_piece(text).unwrap();
            for piece_bytes in [7, 64, 4096] {
                assert_eq!(tokenizer.encode_in_pieces(text, piece_bytes).unwrap(), whole, "{model}, {name}, pieces of {piece_bytes} bytes");
            }
            assert_eq!(tokenizer.encode(text).unwrap(), whole, "{model}, {name}");
        }
    }
}

#[test]
fn sentencepiece_tokenizers_stay_whole() {
    let tokenizer = tokenizer("llama-tiny-wikitext");
    assert!(!tokenizer.cuts_keep_tokens(), "Llama's normalizer prepends ▁ to every call's text: never cut");
    let text = awkward_text(2_000);
    assert_eq!(tokenizer.encode_in_pieces(&text, 64).unwrap(), tokenizer.encode_in_one_piece(&text).unwrap());
}
