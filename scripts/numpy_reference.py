#!/usr/bin/env python3
"""An independent float64 numpy forward pass of the shipped GPT-2 and OPT models (issue 21).

Written from the architectures' definitions, not from lutlab's or transformers' code: every
weight is read from model.safetensors with safetensors' numpy API and upcast from float16 to
float64 (exact), and the whole forward (embeddings, LayerNorm, attention, activation, tied head,
log-softmax) runs in float64. Token ids come from the model's tokenizer.json through the
`tokenizers` package (the same library the transformers fixtures used).

Sub-commands:

perplexity
    HF's strided perplexity protocol (as scripts/make_reference_fixtures.py and
    crates/lutlab-core/src/perplexity.rs define it): windows of --max-length tokens every
    --stride tokens over the first --max-tokens ids of the file; each window scores only the
    tokens after the previous window's end (the first window: all but its first token). Prints
    the float64 NLL sum, the scored count and the perplexity, optionally writes them as JSON
    (--json) and the per-token NLL as .npy (--per-token) for comparisons. --lse-sum
    f32-sequential keeps the float64 forward but sums the softmax denominator as burn's GPU
    reduction does (float32, one accumulator, vocabulary order): it reproduces lutlab's
    same-sign gap to transformers (issue 21; see Model.nll).

        python3 scripts/numpy_reference.py perplexity --model models/gpt2-tiny-wikitext \
            --data data/wikitext-2/test.txt --max-tokens 16384

centering
    The mean input of every linear layer of the model (seed 000's centering statistics) over
    the calibration windows that tests/activations.rs uses: 6 windows of n_positions tokens of
    valid.txt at the starts of lutlab's sampler (SplitMix64, seed 0, ported below). Writes
    tests/fixtures/centering_reference.safetensors: `starts` (int64 [W]), `ids` (int64 [W, T],
    the token ids the means were computed on) and one float64 vector per linear, keyed as
    lutlab names the layers (`h.{i}.attn.c_attn`, ..., `model.decoder.layers.{i}.fc1`, ...).

        python3 scripts/numpy_reference.py centering --model models/gpt2-tiny-wikitext \
            --data data/wikitext-2/valid.txt --out tests/fixtures/centering_reference.safetensors

What it found (issue 21, item 2): lutlab's perplexity is below transformers' because burn's
`log_softmax` (crates/lutlab-model/src/eval.rs, `scored_nll`) sums exp(logit - max) over the
vocabulary with cubek's one-thread-per-row reduction in float32, one accumulator, no
vectorization on the odd 50,257-wide axis: terms below half an ulp of the running sum are
dropped, so the denominator is low by the probability mass of the rare tokens. On test.txt's
first 16,384 ids (max_length 256, stride 128), NLL sums: this script in float64 71362.45406,
transformers (fixture prefix) 71362.45276, this script with --lse-sum f32-sequential 71361.04545,
`lutlab eval` (lavapipe) 71361.04608. OPT on valid.txt[:100000]: float64 ppl 66.676348,
transformers 66.676342; f32-sequential 66.671005, lutlab 66.671006 (H200) / 66.671010 (lavapipe).

Requirements: numpy, safetensors, tokenizers (pip). CPU only; the test file's 16k-token prefix
takes about a minute and a half on two cores, the centering fixture a few seconds.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


# ----------------------------------------------------------------------------- model


class Model:
    """Float64 weights of a GPT-2 or OPT checkpoint and its forward pass."""

    def __init__(self, path):
        with open(os.path.join(path, "config.json")) as f:
            self.cfg = json.load(f)
        raw = load_file(os.path.join(path, "model.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in raw.items()}
        self.family = self.cfg["model_type"]
        if self.family == "gpt2":
            self.n_embd = self.cfg["n_embd"]
            self.n_head = self.cfg["n_head"]
            self.n_layer = self.cfg["n_layer"]
            self.n_positions = self.cfg["n_positions"]
            self.eps = self.cfg["layer_norm_epsilon"]
            assert self.cfg["activation_function"] == "gelu_new"
            assert not self.cfg.get("scale_attn_by_inverse_layer_idx", False)
            assert not self.cfg.get("reorder_and_upcast_attn", False)
            self.wte = self.w["transformer.wte.weight"]
            self.head = self.w.get("lm_head.weight", self.wte)
        elif self.family == "opt":
            self.n_embd = self.cfg["hidden_size"]
            self.n_head = self.cfg["num_attention_heads"]
            self.n_layer = self.cfg["num_hidden_layers"]
            self.n_positions = self.cfg["max_position_embeddings"]
            self.eps = 1e-5  # OPT's LayerNorms use PyTorch's default epsilon
            assert self.cfg["do_layer_norm_before"], "post-LN OPT (350m) is not written here"
            assert self.cfg["word_embed_proj_dim"] == self.n_embd, "projected OPT is not written here"
            assert self.cfg["activation_function"] == "relu"
            self.wte = self.w["model.decoder.embed_tokens.weight"]
            self.head = self.w.get("lm_head.weight", self.wte)
        else:
            raise SystemExit(f"unsupported model_type {self.family}")
        self.head_dim = self.n_embd // self.n_head

    # Names of the linears in lutlab's order within a block (ModelConfig::block_linears).
    def linear_names(self, i):
        if self.family == "gpt2":
            return [f"h.{i}.attn.c_attn", f"h.{i}.attn.c_proj", f"h.{i}.mlp.c_fc", f"h.{i}.mlp.c_proj"]
        p = f"model.decoder.layers.{i}"
        return [f"{p}.self_attn.q_proj", f"{p}.self_attn.k_proj", f"{p}.self_attn.v_proj",
                f"{p}.self_attn.out_proj", f"{p}.fc1", f"{p}.fc2"]

    def layer_norm(self, x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def conv1d(self, x, prefix):  # GPT-2's Conv1D: weight [in, out]
        return x @ self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def nn_linear(self, x, prefix):  # torch.nn.Linear: weight [out, in]
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def attention(self, q, k, v):
        """Causal softmax attention of [B, T, C] projections (q not yet scaled)."""
        b, t, c = q.shape
        h, d = self.n_head, self.head_dim
        split = lambda z: z.reshape(b, t, h, d).transpose(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)  # [B, H, T, T]
        s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(-1, keepdims=True)
        return (p @ v).transpose(0, 2, 1, 3).reshape(b, t, c)

    def hidden(self, ids, observe=None):
        """Final hidden states [B, T, C] of token ids [B, T] (positions 0..T-1 in every row);
        observe(name, x) sees the input of every linear."""
        ids = np.asarray(ids)
        b, t = ids.shape
        obs = observe or (lambda name, x: None)
        if self.family == "gpt2":
            x = self.wte[ids] + self.w["transformer.wpe.weight"][:t]
            for i in range(self.n_layer):
                p = f"transformer.h.{i}"
                names = self.linear_names(i)
                a = self.layer_norm(x, p + ".ln_1")
                obs(names[0], a)
                qkv = self.conv1d(a, p + ".attn.c_attn")
                c = self.n_embd
                att = self.attention(qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:])
                obs(names[1], att)
                x = x + self.conv1d(att, p + ".attn.c_proj")
                m = self.layer_norm(x, p + ".ln_2")
                obs(names[2], m)
                f = self.conv1d(m, p + ".mlp.c_fc")
                f = 0.5 * f * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (f + 0.044715 * f ** 3)))  # gelu_new
                obs(names[3], f)
                x = x + self.conv1d(f, p + ".mlp.c_proj")
            return self.layer_norm(x, "transformer.ln_f")
        # OPT: learned positions offset by 2 (positions are 2..T+1 for an all-ones mask).
        x = self.wte[ids] + self.w["model.decoder.embed_positions.weight"][2:t + 2]
        for i in range(self.n_layer):
            p = f"model.decoder.layers.{i}"
            names = self.linear_names(i)
            a = self.layer_norm(x, p + ".self_attn_layer_norm")
            for n in names[:3]:
                obs(n, a)
            q = self.nn_linear(a, p + ".self_attn.q_proj")
            k = self.nn_linear(a, p + ".self_attn.k_proj")
            v = self.nn_linear(a, p + ".self_attn.v_proj")
            att = self.attention(q, k, v)
            obs(names[3], att)
            x = x + self.nn_linear(att, p + ".self_attn.out_proj")
            m = self.layer_norm(x, p + ".final_layer_norm")
            obs(names[4], m)
            f = np.maximum(self.nn_linear(m, p + ".fc1"), 0.0)
            obs(names[5], f)
            x = x + self.nn_linear(f, p + ".fc2")
        return self.layer_norm(x, "model.decoder.final_layer_norm")

    def nll(self, hidden, targets, lse_sum="f64"):
        """-log softmax(hidden · headᵀ)[target] for hidden [N, C] and targets [N].

        lse_sum "f64": the log-sum-exp in float64 (the reference). "f32-sequential": the
        logits rounded to float32 and exp(logit - max) summed in float32 by one accumulator in
        vocabulary order, as a GPU reduction with one thread per row and no vectorization does
        (burn's default `sum_dim` on an odd vocabulary such as GPT-2's 50,257); every exp term
        below half an ulp of the running sum is lost, so the sum, the log-sum-exp and the NLL
        come out low."""
        logits = hidden @ self.head.T
        tgt = logits[np.arange(len(targets)), targets]
        if lse_sum == "f32-sequential":
            l32 = logits.astype(np.float32)
            shifted = l32 - l32.max(-1, keepdims=True)
            seq = np.cumsum(np.exp(shifted), axis=-1, dtype=np.float32)[:, -1]  # sequential adds
            return (np.log(seq.astype(np.float64)) - shifted[np.arange(len(targets)), targets]).astype(np.float64)
        mx = logits.max(-1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(-1))
        return lse - tgt


# ----------------------------------------------------------------------------- protocol


def windows(n, max_length, stride):
    """[(begin, end, score_from)]: HF's strided protocol (every token 1..n-1 scored once)."""
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + max_length, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            return out
        begin += stride


def strided_nll(model, ids, max_length, stride, batch=8, lse_sum="f64"):
    """Per-token float64 NLL of every scored token, in order."""
    ids = np.asarray(ids, dtype=np.int64)
    wins = windows(len(ids), max_length, stride)
    out = []
    i = 0
    while i < len(wins):
        b0, e0, s0 = wins[i]
        j = i
        while j < len(wins) and j - i < batch and wins[j][1] - wins[j][0] == e0 - b0 \
                and wins[j][2] - wins[j][0] == s0 - b0:
            j += 1
        group = wins[i:j]
        x = np.stack([ids[b:e] for b, e, _ in group])
        h = model.hidden(x)
        p0 = s0 - 1 - b0  # position whose logits predict the first target
        sel = h[:, p0:e0 - b0 - 1].reshape(-1, h.shape[-1])
        tgt = np.concatenate([ids[s:e] for _, e, s in group])
        out.append(model.nll(sel, tgt, lse_sum))
        i = j
    nll = np.concatenate(out)
    assert len(nll) == len(ids) - 1
    return nll


def encode(model_path, data_path, max_chars=0):
    """The file's ids: read whole as one UTF-8 string (its first max_chars characters if set)."""
    tok = Tokenizer.from_file(os.path.join(model_path, "tokenizer.json"))
    with open(data_path, encoding="utf-8") as f:
        text = f.read()
    return tok.encode(text[:max_chars] if max_chars else text).ids


# ----------------------------------------------------------------------------- calibration


def sample_starts(n_tokens, nsamples, seqlen, seed):
    """lutlab_model::sample_starts: SplitMix64 from `seed`, Lemire's multiply-shift draw from
    0..=n_tokens-seqlen."""
    mask = (1 << 64) - 1
    state = seed
    choices = n_tokens - seqlen + 1
    starts = []
    for _ in range(nsamples):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        starts.append((z * choices) >> 64)
    return starts


def input_means(model, windows_ids):
    sums, count = {}, 0
    def observe(name, x):
        s = x.reshape(-1, x.shape[-1]).sum(0)
        sums[name] = sums.get(name, 0.0) + s
    model.hidden(windows_ids, observe)
    count = windows_ids.shape[0] * windows_ids.shape[1]
    return {k: v / count for k, v in sums.items()}


# ----------------------------------------------------------------------------- commands


def cmd_perplexity(args):
    model = Model(args.model)
    ids = encode(args.model, args.data, args.max_chars)
    if args.max_tokens:
        ids = ids[:args.max_tokens]
    nll = strided_nll(model, ids, args.max_length, args.stride, lse_sum=args.lse_sum)
    s = float(nll.sum())
    res = {"model": args.model, "data": args.data, "num_tokens": len(ids), "scored": len(nll),
           "max_length": args.max_length, "stride": args.stride, "nll_sum": s,
           "perplexity": math.exp(s / len(nll)), "dtype": "float64", "lse_sum": args.lse_sum}
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    if args.per_token:
        np.save(args.per_token, nll)


def cmd_centering(args):
    model = Model(args.model)
    ids = np.asarray(encode(args.model, args.data), dtype=np.int64)
    seqlen = args.seqlen or model.n_positions
    starts = sample_starts(len(ids), args.nsamples, seqlen, args.seed)
    win = np.stack([ids[s:s + seqlen] for s in starts])
    means = input_means(model, win)
    out = {"starts": np.asarray(starts, dtype=np.int64), "ids": win}
    out.update({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in means.items()})
    meta = {"model": args.model, "data": args.data, "seed": str(args.seed), "seqlen": str(seqlen),
            "nsamples": str(args.nsamples), "dtype": "float64",
            "made_by": "scripts/numpy_reference.py centering"}
    save_file(out, args.out, metadata=meta)
    print(f"{len(means)} layers, starts {starts}, written to {args.out} "
          f"({os.path.getsize(args.out)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("perplexity")
    p.add_argument("--model", default="models/gpt2-tiny-wikitext")
    p.add_argument("--data", default="data/wikitext-2/test.txt")
    p.add_argument("--max-tokens", type=int, default=16384, help="0: the whole text")
    p.add_argument("--max-chars", type=int, default=0,
                   help="tokenize only the text's first characters (0: all; the arch fixtures use 100000)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--lse-sum", choices=["f64", "f32-sequential"], default="f64",
                   help="how the softmax denominator is summed (see Model.nll)")
    p.add_argument("--json")
    p.add_argument("--per-token")
    c = sub.add_parser("centering")
    c.add_argument("--model", default="models/gpt2-tiny-wikitext")
    c.add_argument("--data", default="data/wikitext-2/valid.txt")
    c.add_argument("--nsamples", type=int, default=6)
    c.add_argument("--seqlen", type=int, default=0, help="default: the model's n_positions")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default="tests/fixtures/centering_reference.safetensors")
    args = ap.parse_args()
    {"perplexity": cmd_perplexity, "centering": cmd_centering}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
