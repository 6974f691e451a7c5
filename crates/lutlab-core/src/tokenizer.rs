//! GPT-2's byte-level BPE through the `tokenizers` crate, from `tokenizer.json` or from
//! `vocab.json` + `merges.txt`.

use crate::error::{LoadError, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// GPT-2's only special token (id 50256).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The tokenizer files a model directory may hold.
#[derive(Clone, Debug)]
pub enum TokenizerFiles {
    /// A `tokenizer.json`.
    Json(Vec<u8>),
    /// `vocab.json` and `merges.txt` (GPT-2's original `encoder.json` / `vocab.bpe`).
    VocabMerges { vocab: Vec<u8>, merges: Vec<u8> },
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

fn tokenizer_error(reason: impl ToString) -> LoadError {
    LoadError::Tokenizer { reason: reason.to_string() }
}

impl TextTokenizer {
    pub fn from_files(files: &TokenizerFiles) -> Result<Self> {
        let inner = match files {
            TokenizerFiles::Json(bytes) => Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(format!("tokenizer.json: {e}")))?,
            TokenizerFiles::VocabMerges { vocab, merges } => from_vocab_merges(vocab, merges)?,
        };
        Ok(Self { inner })
    }

    /// Token ids of `text` with the tokenizer's special tokens (Llama's and OPT's BOS in front;
    /// GPT-2's adds none), as transformers' `tokenizer(text)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, true).map_err(tokenizer_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of one token of the vocabulary (special tokens included), if it is there.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tokenizer_error)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Builds the same tokenizer HF's GPT-2 `tokenizer.json` describes: BPE with a byte-level
/// pre-tokenizer (no prefix space) and byte-level decoding.
fn from_vocab_merges(vocab: &[u8], merges: &[u8]) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab =
        serde_json::from_slice(vocab).map_err(|e| tokenizer_error(format!("vocab.json: {e}")))?;
    let merges = std::str::from_utf8(merges).map_err(|e| tokenizer_error(format!("merges.txt: {e}")))?;
    let merges = merges
        .lines()
        .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(tokenizer_error(format!("merges.txt: line `{line}` is not two tokens"))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tokenizer_error)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    // As in HF's GPT-2 tokenizer.json, the literal text `<|endoftext|>` is the special token 50256.
    tokenizer.add_special_tokens([AddedToken::from(END_OF_TEXT, true)]).map_err(tokenizer_error)?;
    Ok(tokenizer)
}
