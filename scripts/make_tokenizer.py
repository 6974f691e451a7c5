#!/usr/bin/env python3
"""Build the GPT-2 byte-level BPE tokenizer files for models/gpt2-tiny-wikitext.

Inputs:  data/gpt2-tokenizer/encoder.json (= GPT-2 vocab.json)
         data/gpt2-tokenizer/vocab.bpe    (= GPT-2 merges.txt)
Outputs: models/gpt2-tiny-wikitext/{vocab.json, merges.txt, tokenizer.json,
         tokenizer_config.json, special_tokens_map.json}

The tokenizer.json has the same pipeline as Hugging Face's gpt2 tokenizer.json:
BPE model, ByteLevel pre-tokenizer (add_prefix_space=False), ByteLevel
post-processor (trim_offsets=False), ByteLevel decoder, and the special added
token <|endoftext|> = 50256.

Run (locally, no GPU; needs `pip install tokenizers`):
    python3 scripts/make_tokenizer.py
"""
import json
import os
import shutil

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "data", "gpt2-tokenizer")
DST = os.path.join(ROOT, "models", "gpt2-tiny-wikitext")
EOT = "<|endoftext|>"


def main():
    os.makedirs(DST, exist_ok=True)
    vocab = os.path.join(DST, "vocab.json")
    merges = os.path.join(DST, "merges.txt")
    shutil.copyfile(os.path.join(SRC, "encoder.json"), vocab)
    shutil.copyfile(os.path.join(SRC, "vocab.bpe"), merges)

    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT, special=True)])
    assert tok.token_to_id(EOT) == 50256
    assert tok.get_vocab_size() == 50257, tok.get_vocab_size()
    ids = tok.encode("Hello world").ids
    assert ids == [15496, 995], ids
    assert tok.decode(ids) == "Hello world"
    tok.save(os.path.join(DST, "tokenizer.json"))

    with open(os.path.join(DST, "tokenizer_config.json"), "w") as f:
        json.dump({
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "bos_token": EOT,
            "eos_token": EOT,
            "unk_token": EOT,
            "model_max_length": 256,
            "added_tokens_decoder": {"50256": {"content": EOT, "special": True, "lstrip": False,
                                                "rstrip": False, "normalized": True, "single_word": False}},
        }, f, indent=2)
        f.write("\n")
    with open(os.path.join(DST, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}, f, indent=2)
        f.write("\n")
    print("ok:", ids)


if __name__ == "__main__":
    main()
