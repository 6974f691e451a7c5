//! GPT-2's byte-level BPE through the `tokenizers` crate, from `tokenizer.json` or from
//! `vocab.json` + `merges.txt`.

use crate::error::{LoadError, Result};
use crate::tokenizer_checks as checks;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// GPT-2's only special token (id 50256).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The tokenizer files a model directory may hold.
#[derive(Clone, Debug)]
pub enum TokenizerFiles {
    /// A `tokenizer.json`.
    Json(Vec<u8>),
    /// `vocab.json` and `merges.txt` (GPT-2's original `encoder.json` / `vocab.bpe`), with the
    /// `tokenizer_config.json` beside them when there is one: OPT's repositories ship no
    /// `tokenizer.json`, and theirs says to put `</s>` in front of every text (`add_bos_token`).
    VocabMerges { vocab: Vec<u8>, merges: Vec<u8>, config: Option<Vec<u8>> },
}

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

pub(crate) fn tokenizer_error(reason: impl ToString) -> LoadError {
    LoadError::Tokenizer { reason: reason.to_string() }
}

impl TextTokenizer {
    pub fn from_files(files: &TokenizerFiles) -> Result<Self> {
        let inner = match files {
            TokenizerFiles::Json(bytes) => {
                checks::check_tokenizer_json(bytes)?;
                let tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| tokenizer_error(format!("tokenizer.json: {e}")))?;
                checks::check_post_processor(&tokenizer)?;
                tokenizer
            }
            TokenizerFiles::VocabMerges { vocab, merges, config } => from_vocab_merges(vocab, merges, config.as_deref())?,
        };
        Ok(Self { inner })
    }

    /// Token ids of `text` with the tokenizer's special tokens (Llama's and OPT's BOS in front;
    /// GPT-2's adds none), as transformers' `tokenizer(text)` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_in_pieces(text, PIECE_BYTES)
    }

    /// [`Self::encode`] in one call to the tokenizer: one thread for the whole text (the
    /// reference the pieces are tested against).
    pub fn encode_in_one_piece(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, true)
    }

    /// One call to the tokenizer, with or without its special tokens.
    fn ids(&self, text: &str, special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode_fast(text, special_tokens).map_err(tokenizer_error)?.get_ids().to_vec())
    }

    /// [`Self::encode`] with the text cut into pieces of about `piece_bytes` tokenized on every
    /// core, where the cuts provably leave every token as the whole text gives it (a calibration
    /// file of 3 MB took a second on one thread); else in one piece.
    pub fn encode_in_pieces(&self, text: &str, piece_bytes: usize) -> Result<Vec<u32>> {
        // The browser's one thread gains nothing from pieces.
        let pieces = match self.cuts_keep_tokens() && !cfg!(target_arch = "wasm32") {
            true => pieces_at_word_starts(text, piece_bytes, &self.special_texts()),
            false => vec![text],
        };
        if pieces.len() < 2 {
            return self.encode_in_one_piece(text);
        }
        // The special tokens go in front of the first piece only, so they must all be in front.
        let first = self.ids(pieces[0], true)?;
        if !first.ends_with(&self.ids(pieces[0], false)?) {
            return self.encode_in_one_piece(text);
        }
        let rest = crate::parallel::map_ranges(pieces.len() - 1, |range| range.map(|i| self.ids(pieces[i + 1], false)).collect::<Result<Vec<_>>>());
        let mut ids = first;
        for part in rest {
            part?.into_iter().for_each(|piece| ids.extend(piece));
        }
        Ok(ids)
    }

    /// Whether cutting the text just before the last whitespace character of a run that a
    /// non-whitespace character ends changes no token: true for GPT-2's byte-level BPE (OPT's
    /// too) without a normalizer or a prefix space, whose pre-tokenizer regex then ends a token
    /// there either way (`\s+(?!\S)` takes the run but its last character, which starts the next
    /// token), and whose special tokens hold no whitespace and strip none around them. (A run
    /// that a special token ends is one token: the special token splits the text first, so
    /// [`pieces_at_word_starts`] does not cut there.)
    pub fn cuts_keep_tokens(&self) -> bool {
        use tokenizers::pre_tokenizers::PreTokenizerWrapper;
        let byte_level = matches!(self.inner.get_pre_tokenizer(), Some(PreTokenizerWrapper::ByteLevel(b)) if !b.add_prefix_space && b.use_regex);
        let specials_whole = self.inner.get_added_vocabulary().get_added_tokens_decoder().values().all(|t| !t.lstrip && !t.rstrip && !t.content.chars().any(char::is_whitespace));
        byte_level && self.inner.get_normalizer().is_none() && specials_whole
    }

    /// The texts of the special tokens, which are matched in the text before anything else.
    fn special_texts(&self) -> Vec<String> {
        self.inner.get_added_vocabulary().get_added_tokens_decoder().values().map(|t| t.content.clone()).collect()
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

/// The size of the pieces [`TextTokenizer::encode`] cuts a long text into.
const PIECE_BYTES: usize = 1 << 16;

/// `text` cut into pieces of at least `piece_bytes` (the last may be shorter), each cut just
/// before the last whitespace character of a run that a non-whitespace character follows, one
/// that does not start any of `specials`.
fn pieces_at_word_starts<'t>(text: &'t str, piece_bytes: usize, specials: &[String]) -> Vec<&'t str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while text.len() - start > piece_bytes {
        let from = text.ceil_char_boundary(start + piece_bytes);
        let mut chars = text[from..].char_indices().peekable();
        let cut = std::iter::from_fn(|| chars.next().map(|(i, c)| (i, c, chars.peek().map(|&(_, n)| n))))
            .find(|&(i, c, next)| {
                let rest = &text[from + i + c.len_utf8()..];
                c.is_whitespace() && next.is_some_and(|n| !n.is_whitespace()) && !specials.iter().any(|s| rest.starts_with(s.as_str()))
            })
            .map(|(i, _, _)| from + i);
        let Some(cut) = cut.filter(|&cut| cut > start) else { break };
        pieces.push(&text[start..cut]);
        start = cut;
    }
    pieces.push(&text[start..]);
    pieces
}

/// Builds the same tokenizer HF's GPT-2 `tokenizer.json` describes: BPE with a byte-level
/// pre-tokenizer (no prefix space) and byte-level decoding. With a `tokenizer_config.json`, its
/// bos/eos/unk/pad tokens are special (matched as whole tokens in text, as transformers' slow
/// `GPT2Tokenizer` does) and `add_bos_token: true` puts the BOS in front of every text.
fn from_vocab_merges(vocab: &[u8], merges: &[u8], config: Option<&[u8]>) -> Result<Tokenizer> {
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
    checks::check_merges(&merges, |token| vocab.contains_key(token), "", "merges.txt")?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tokenizer_error)?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    // As in HF's GPT-2 tokenizer.json, the literal text `<|endoftext|>` is the special token 50256.
    tokenizer.add_special_tokens([AddedToken::from(END_OF_TEXT, true)]).map_err(tokenizer_error)?;
    if let Some(config) = config {
        apply_tokenizer_config(&mut tokenizer, config)?;
    }
    Ok(tokenizer)
}

/// The parts of a `tokenizer_config.json` that change token ids: special tokens, and a BOS put
/// in front of every text (`add_bos_token`).
fn apply_tokenizer_config(tokenizer: &mut Tokenizer, config: &[u8]) -> Result<()> {
    let json: serde_json::Value = serde_json::from_slice(config).map_err(|e| tokenizer_error(format!("tokenizer_config.json: {e}")))?;
    // A token is written as a string or as `{"content": ...}`.
    let token = |key: &str| match json.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v) => v.get("content").and_then(|c| c.as_str()).map(str::to_string),
        None => None,
    };
    let specials: Vec<String> = ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|key| token(key))
        .filter(|t| tokenizer.token_to_id(t).is_some())
        .collect();
    tokenizer.add_special_tokens(specials.iter().map(|t| AddedToken::from(t.clone(), true))).map_err(tokenizer_error)?;
    if json.get("add_bos_token").and_then(serde_json::Value::as_bool) == Some(true) {
        let bos = token("bos_token").ok_or_else(|| tokenizer_error("tokenizer_config.json: add_bos_token without a bos_token"))?;
        let id = tokenizer
            .token_to_id(&bos)
            .ok_or_else(|| tokenizer_error(format!("tokenizer_config.json: bos_token `{bos}` is not in vocab.json")))?;
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
            .map_err(tokenizer_error)?
            .special_tokens(vec![(bos.clone(), id)])
            .build()
            .map_err(tokenizer_error)?;
        tokenizer.with_post_processor(Some(template));
    }
    Ok(())
}
