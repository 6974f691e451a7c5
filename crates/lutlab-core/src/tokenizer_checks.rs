//! What the `tokenizers` crate would panic on instead of returning an error, refused first with
//! an error that names the problem. Each was found by fuzzing `TextTokenizer::from_files`
//! (`fuzz/`, issue 21); the inputs are in `tests/fixtures/fuzz_regressions/`.

use crate::error::Result;
use crate::tokenizer::tokenizer_error;
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

/// Checks a `tokenizer.json` before the crate reads it:
/// - it is JSON: the crate panics (`expect("Helper")`) on a syntax error inside the `decoder`
///   object, such as a file cut short there. Parsing to a `Value` decodes every string, so
///   nothing the crate's own parse could trip on is left;
/// - a BPE model's merges make tokens of its vocabulary ([`check_merges`]).
pub(crate) fn check_tokenizer_json(bytes: &[u8]) -> Result<()> {
    let json: Value = serde_json::from_slice(bytes)
        .map_err(|e| tokenizer_error(format!("tokenizer.json is not valid JSON (truncated or corrupt file?): {e}")))?;
    // A model with `vocab` and `merges` is read as BPE, with or without `"type": "BPE"`.
    let model = json.get("model");
    let vocab = model.and_then(|m| m.get("vocab")).and_then(Value::as_object);
    let merges = model.and_then(|m| m.get("merges")).and_then(Value::as_array);
    let (Some(vocab), Some(merges)) = (vocab, merges) else { return Ok(()) };
    let prefix = model.and_then(|m| m.get("continuing_subword_prefix")).and_then(Value::as_str).unwrap_or("");
    // Merges are `["a", "b"]` or the older `"a b"`; other forms the crate refuses itself.
    let pairs: Vec<(String, String)> = merges
        .iter()
        .filter_map(|merge| match merge {
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                _ => None,
            },
            Value::String(line) if !line.starts_with("#version") => {
                line.split_once(' ').filter(|(_, b)| !b.contains(' ')).map(|(a, b)| (a.to_string(), b.to_string()))
            }
            _ => None,
        })
        .collect();
    check_merges(&pairs, |token| vocab.contains_key(token), prefix, "tokenizer.json")
}

/// Every merge `(a, b)` must make a token of the vocabulary, `a` followed by `b` without its
/// `continuing_subword_prefix`. The crate's BPE builder checks that only after copying the two
/// into a buffer as long as the longest token, and panics (a slice out of range) when they are
/// longer, or when `b` is shorter than the prefix.
pub(crate) fn check_merges(merges: &[(String, String)], in_vocab: impl Fn(&str) -> bool, prefix: &str, file: &str) -> Result<()> {
    for (rank, (a, b)) in merges.iter().enumerate() {
        let Some(rest) = b.strip_prefix(prefix) else {
            return Err(tokenizer_error(format!(
                "{file}: merge {} (`{a}` `{b}`): `{b}` does not start with the continuing_subword_prefix `{prefix}`",
                rank + 1
            )));
        };
        let merged = format!("{a}{rest}");
        if in_vocab(a) && in_vocab(b) && !in_vocab(&merged) {
            return Err(tokenizer_error(format!(
                "{file}: merge {} (`{a}` `{b}`) makes `{merged}`, which is not in the vocabulary",
                rank + 1
            )));
        }
    }
    Ok(())
}

/// The crate reads a `TemplateProcessing` post-processor without the checks its builder makes,
/// and then panics while encoding when the template names a special token that its
/// `special_tokens` does not define. Checks every
/// template of the post-processor as loaded (the crate's own serialization of it, so whatever
/// form the file wrote it in).
pub(crate) fn check_post_processor(tokenizer: &Tokenizer) -> Result<()> {
    let Some(processor) = tokenizer.get_post_processor() else { return Ok(()) };
    check_templates(&serde_json::to_value(processor).map_err(tokenizer_error)?)
}

fn check_templates(json: &Value) -> Result<()> {
    match json {
        Value::Array(items) => items.iter().try_for_each(check_templates),
        Value::Object(object) => {
            if object.get("type").and_then(Value::as_str) == Some("TemplateProcessing") {
                check_template(object)?;
            }
            object.values().try_for_each(check_templates)
        }
        _ => Ok(()),
    }
}

fn check_template(template: &Map<String, Value>) -> Result<()> {
    let bad = |reason: String| Err(tokenizer_error(format!("tokenizer.json: post_processor: {reason}")));
    let empty = Map::new();
    let specials = template.get("special_tokens").and_then(Value::as_object).unwrap_or(&empty);
    let pieces = ["single", "pair"].into_iter().filter_map(|key| template.get(key)?.as_array()).flatten();
    for piece in pieces {
        if let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str)
            && !specials.contains_key(id)
        {
            return bad(format!("the template uses special token `{id}`, which its `special_tokens` does not define"));
        }
    }
    Ok(())
}
