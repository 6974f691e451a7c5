#!/usr/bin/env python3
"""Independent reference fixtures for lutlab, computed with Hugging Face transformers.

Loads models/gpt2-tiny-wikitext with GPT2LMHeadModel in float32 (the stored
float16 weights are upcast exactly), eager attention, TF32 disabled, on CUDA,
and the tokenizer with `tokenizers.Tokenizer.from_file(<model>/tokenizer.json)`.
Writes into tests/fixtures/:

reference_logits.safetensors
    p{i}.input_ids  int64 [T]        for the three PROMPTS below (batch of 1 each)
    p{i}.logits_head f32 [T, 4096]   logits[:, :4096]
    p{i}.logsumexp  f32 [T]          logsumexp over the full 50257-token vocab
    p{i}.argmax     int64 [T]        argmax over the full vocab
    batch.input_ids int64 [2, 16]    valid.txt token stream [1000:1016] and [5000:5016]
    batch.logits_head f32 [2, 16, 4096], batch.logsumexp f32 [2, 16], batch.argmax int64 [2, 16]

reference_perplexity.json
    Strided perplexity (HF "perplexity of fixed-length models"): the file is read
    whole as one UTF-8 string and encoded to N ids; max_length=256, stride=128;
    windows begin at 0, stride, 2*stride, ...; window = ids[b : min(b+256, N)];
    only the tokens after the previous window's end are targets (first window:
    all but its first token); stop after the window that reaches N. Every token
    1..N-1 is scored exactly once. NLL = -log_softmax(f32 logits) gathered,
    summed in float64.  Full test.txt, prefixes ids[:2048] and ids[:16384], and
    full valid.txt (key "valid").  "hf_eval_tokens_per_s" is the scored tokens per
    second of the full test.txt evaluation at 8 windows a batch (f32, eager,
    no TF32, CUDA-synchronised, after one warm-up pass).

reference_tokens.json
    Tokenizer ids for a list of strings (byte-level BPE edge cases).

Device command (after scripts/train_shipped_model.py, see scripts/README.md):
    PYTHONUNBUFFERED=1 python3 scripts/make_reference_fixtures.py \
        --model models/gpt2-tiny-wikitext --out tests/fixtures
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

PROMPTS = [
    "Hello world",
    "The tower is 324 metres tall , about the same height as an 81 @-@ storey building",
    " = Robert <unk> = \n",
]
HEAD = 4096

TOKEN_STRINGS = [
    "Hello world! It's 2026 — naïve café <|endoftext|>",
    "Hello world",
    " Hello world",
    "  two leading spaces",
    "\n = Valkyria Chronicles III = \n\n",
    " The tower is 324 metres ( 1 @,@ 063 ft ) tall , about 81 @-@ storey",
    " 3 @.@ 14159 and 1234567890 and 2026",
    "they're we've I'll she'd it's DON'T",
    "tabs\tand\r\nwindows newlines\n\n\n",
    "trailing spaces   ",
    "emoji 🙂 and CJK 日本語 and Ωmega",
    "<|endoftext|>",
    "a<|endoftext|>b",
    "",
]


def disable_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def load_model(path, dev):
    try:
        model = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model = model.to(dev).eval()
    assert next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied"
    return model


def encode_file(tok, path):
    with open(path, encoding="utf-8") as f:
        return tok.encode(f.read()).ids


def windows(n, max_length, stride):
    """[(begin, end, trg_len)] of the HF strided protocol."""
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + max_length, n)
        out.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            return out
        begin += stride


@torch.no_grad()
def strided_nll(model, ids, max_length=256, stride=128, batch=8, dev="cuda"):
    n = len(ids)
    data = torch.tensor(ids, dtype=torch.long, device=dev)
    wins = windows(n, max_length, stride)
    nll_sum = torch.zeros((), dtype=torch.float64, device=dev)
    count = 0
    i = 0
    while i < len(wins):
        # batch consecutive windows of equal length
        L = wins[i][1] - wins[i][0]
        j = i
        while j < len(wins) and j - i < batch and wins[j][1] - wins[j][0] == L:
            j += 1
        group = wins[i:j]
        x = torch.stack([data[b:e] for b, e, _ in group])
        logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)  # [B, L, V]
        for k, (b, e, trg) in enumerate(group):
            trg = min(trg, L - 1)  # first window: all but the first token
            pred = logp[k, L - 1 - trg: L - 1]           # positions predicting targets
            tgt = x[k, L - trg:]
            nll_sum -= pred.gather(-1, tgt[:, None]).squeeze(-1).double().sum()
            count += trg
        i = j
    assert count == n - 1, (count, n)
    s = nll_sum.item()
    return {"num_tokens": n, "scored": count, "nll_sum": s, "perplexity": math.exp(s / count)}


@torch.no_grad()
def logits_fixture(model, ids_2d, dev):
    x = torch.tensor(ids_2d, dtype=torch.long, device=dev)
    logits = model(input_ids=x).logits.float()
    return (x.cpu(), logits[..., :HEAD].contiguous().cpu(),
            torch.logsumexp(logits, dim=-1).cpu(), logits.argmax(dim=-1).cpu())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/gpt2-tiny-wikitext")
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--test", default="data/wikitext-2/test.txt")
    ap.add_argument("--valid", default="data/wikitext-2/valid.txt")
    args = ap.parse_args()
    disable_tf32()
    dev = torch.device("cuda")
    os.makedirs(args.out, exist_ok=True)

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    assert tok.encode("Hello world").ids == [15496, 995]
    model = load_model(args.model, dev)
    print(f"transformers {transformers.__version__} torch {torch.__version__} "
          f"attn {model.config._attn_implementation}")

    # --- tokens
    toks = [{"text": s, "ids": tok.encode(s).ids} for s in TOKEN_STRINGS]
    for t in toks:
        t["decoded_roundtrip"] = tok.decode(t["ids"], skip_special_tokens=False) == t["text"]
    with open(os.path.join(args.out, "reference_tokens.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "models/gpt2-tiny-wikitext/tokenizer.json",
                   "tokenizers": __import__("tokenizers").__version__,
                   "note": "<|endoftext|> is an added special token (id 50256) and is matched in raw text",
                   "text": toks[0]["text"], "ids": toks[0]["ids"], "cases": toks},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")

    # --- logits
    tensors = {}
    for i, p in enumerate(PROMPTS):
        ids = tok.encode(p).ids
        x, head, lse, am = logits_fixture(model, [ids], dev)
        tensors[f"p{i}.input_ids"] = x[0]
        tensors[f"p{i}.logits_head"] = head[0]
        tensors[f"p{i}.logsumexp"] = lse[0]
        tensors[f"p{i}.argmax"] = am[0]
        print(f"p{i}: {len(ids)} tokens, argmax {am[0].tolist()}")
    valid_ids = encode_file(tok, args.valid)
    rows = [valid_ids[1000:1016], valid_ids[5000:5016]]
    x, head, lse, am = logits_fixture(model, rows, dev)
    tensors["batch.input_ids"] = x
    tensors["batch.logits_head"] = head
    tensors["batch.logsumexp"] = lse
    tensors["batch.argmax"] = am
    # consistency: a batched row equals the same row alone
    _, h1, l1, _ = logits_fixture(model, [rows[1]], dev)
    print("batch-vs-single max|diff| logits", (h1[0] - head[1]).abs().max().item(),
          "lse", (l1[0] - lse[1]).abs().max().item())
    save_file(tensors, os.path.join(args.out, "reference_logits.safetensors"),
              metadata={"model": args.model, "head": str(HEAD), "dtype": "float32",
                        "attn": "eager", "tf32": "off", "transformers": transformers.__version__,
                        "torch": torch.__version__})

    # --- perplexity
    test_ids = encode_file(tok, args.test)
    strided_nll(model, test_ids[:4096], dev=dev)  # warm-up
    torch.cuda.synchronize()
    t0 = time.time()
    full = strided_nll(model, test_ids, dev=dev)
    torch.cuda.synchronize()
    dt = time.time() - t0
    tps = full["scored"] / dt
    print(f"test: N={full['num_tokens']} ppl {full['perplexity']:.4f}  ({dt:.2f}s, {tps:.0f} tok/s)")
    prefixes = []
    for P in (2048, 16384):
        r = strided_nll(model, test_ids[:P], dev=dev)
        prefixes.append(r)
        print(f"test[:{P}] ppl {r['perplexity']:.4f}")
    val = strided_nll(model, valid_ids, dev=dev)
    print(f"valid: N={val['num_tokens']} ppl {val['perplexity']:.4f}")
    # sanity: a batch of 1 gives the same sum
    r1 = strided_nll(model, test_ids[:16384], batch=1, dev=dev)
    print("batch1-vs-batch8 prefix nll diff", r1["nll_sum"] - prefixes[1]["nll_sum"])

    out = {
        "model": "models/gpt2-tiny-wikitext", "data": "data/wikitext-2/test.txt",
        "max_length": 256, "stride": 128,
        "num_tokens": full["num_tokens"], "first_ids": test_ids[:32],
        "scored": full["scored"], "nll_sum": full["nll_sum"], "perplexity": full["perplexity"],
        "prefixes": prefixes,
        "valid": {"data": "data/wikitext-2/valid.txt", "first_ids": valid_ids[:32], **val},
        "hf_eval_tokens_per_s": tps,
        "hf_eval_note": ("scored tokens / wall seconds for the full test.txt strided evaluation, "
                         "8 windows a batch, float32, eager attention, TF32 off, CUDA-synchronised, "
                         f"on {torch.cuda.get_device_name(0)}; includes log_softmax + gather"),
        "dtype": "float32 (float16 weights upcast)", "attn_implementation": "eager", "tf32": False,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "tokenizers": __import__("tokenizers").__version__,
    }
    with open(os.path.join(args.out, "reference_perplexity.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("fixtures written")


if __name__ == "__main__":
    main()
