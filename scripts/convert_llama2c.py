#!/usr/bin/env python3
"""Convert llama2.c's stories260K.bin (legacy export) into a Hugging Face Llama folder.

Input: a llama2.c checkpoint in the *legacy* (version 0) layout that run.c reads:
    header: 7 int32  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
            (vocab_size < 0 means the classifier is NOT shared with the embedding)
    then float32 arrays, C order, in this order (torch's [out, in] for the matrices):
        token_embedding [vocab, dim]
        rms_att         [L, dim]
        wq              [L, n_heads*hd, dim]
        wk              [L, n_kv_heads*hd, dim]
        wv              [L, n_kv_heads*hd, dim]
        wo              [L, dim, n_heads*hd]
        rms_ffn         [L, dim]
        w1              [L, hidden, dim]      (gate)
        w2              [L, dim, hidden]      (down)
        w3              [L, hidden, dim]      (up)
        rms_final       [dim]
        freq_cis_real   [seq_len, hd/2]       (unused by run.c; checked against theta 10000)
        freq_cis_imag   [seq_len, hd/2]
        wcls            [vocab, dim]          (only if unshared)

Output (--out, default models/llama2c-stories260k): config.json (LlamaForCausalLM),
generation_config.json, model.safetensors (float32, HF names), README.md, LICENSE.

RoPE: llama2.c rotates interleaved pairs (x[2j], x[2j+1]) of each head; HF's Llama
rotates halves (x[j], x[j+hd/2]).  As transformers' convert_llama_weights_to_hf.py does,
the rows of wq and wk are permuted within each head so that HF's rotate_half sees the
same pairs:  w.view(n_heads, hd//2, 2, dim).transpose(1, 2).reshape(n_heads*hd, dim).
q·k is unchanged by the same permutation of q's and k's coordinates, so attention
scores, and everything after them, are equal.

Verification (always run): a direct port of run.c's forward (one token at a time with a
KV cache, interleaved RoPE with the unpermuted weights, float64 numpy) is compared with
the HF model's float32 logits (eager attention, CPU) on a few fixed token sequences;
the script stops if max |diff| > 1e-4 (expected ~1e-6).

Device/any-machine command (numpy, torch, transformers, safetensors):
    python3 scripts/convert_llama2c.py --bin .carry/stories260K.bin \
        --out models/llama2c-stories260k
"""
import argparse
import json
import os
import struct

import numpy as np


def read_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // n_heads
    kv_dim = n_kv * hd
    data = np.frombuffer(raw, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = data[pos:pos + n].reshape(shape).astype(np.float32)
        pos += n
        return a

    w = {}
    w["tok"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, n_heads * hd, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, n_heads * hd)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    w["freq_cis_real"] = take(seq_len, hd // 2)
    w["freq_cis_imag"] = take(seq_len, hd // 2)
    if not shared:
        w["wcls"] = take(vocab, dim)
    assert pos == data.size, f"{data.size - pos} floats left over: not a legacy llama2.c file?"
    cfg = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
               n_kv_heads=n_kv, vocab_size=vocab, seq_len=seq_len, shared_classifier=shared)
    return cfg, w


def check_freqs(cfg, w):
    """The stored freq_cis tables must be theta=10000 RoPE (run.c recomputes them)."""
    hd = cfg["dim"] // cfg["n_heads"]
    freqs = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    ang = np.outer(np.arange(cfg["seq_len"], dtype=np.float64), freqs)
    er = np.abs(np.cos(ang) - w["freq_cis_real"]).max()
    ei = np.abs(np.sin(ang) - w["freq_cis_imag"]).max()
    print(f"freq_cis vs theta=10000: max|diff| cos {er:.2e} sin {ei:.2e}")
    assert er < 1e-3 and ei < 1e-3


def runc_forward(cfg, w, tokens):
    """run.c's forward(), one position at a time, in float64. Returns logits [T, vocab]."""
    dim, hidden, L = cfg["dim"], cfg["hidden_dim"], cfg["n_layers"]
    nh, nkv = cfg["n_heads"], cfg["n_kv_heads"]
    hs = dim // nh
    kv_dim = dim * nkv // nh
    kv_mul = nh // nkv
    f = {k: v.astype(np.float64) for k, v in w.items()}
    wcls = f["wcls"] if "wcls" in f else f["tok"]

    def rmsnorm(x, weight):
        ss = np.dot(x, x) / x.size + 1e-5
        return weight * (x / np.sqrt(ss))

    key_cache = np.zeros((L, len(tokens), kv_dim))
    value_cache = np.zeros((L, len(tokens), kv_dim))
    out = []
    for pos, token in enumerate(tokens):
        x = f["tok"][token].copy()
        for l in range(L):
            xb = rmsnorm(x, f["rms_att"][l])
            q = f["wq"][l] @ xb
            k = f["wk"][l] @ xb
            v = f["wv"][l] @ xb
            for i in range(0, dim, 2):
                head_dim = i % hs
                freq = 1.0 / (10000.0 ** (head_dim / hs))
                val = pos * freq
                fcr, fci = np.cos(val), np.sin(val)
                for vec in ((q, k) if i < kv_dim else (q,)):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i] = v0 * fcr - v1 * fci
                    vec[i + 1] = v0 * fci + v1 * fcr
            key_cache[l, pos] = k
            value_cache[l, pos] = v
            xb = np.zeros(dim)
            for h in range(nh):
                qh = q[h * hs:(h + 1) * hs]
                kvh = h // kv_mul
                ks = key_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                vs = value_cache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                att = ks @ qh / np.sqrt(hs)
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * hs:(h + 1) * hs] = att @ vs
            x = x + f["wo"][l] @ xb
            xb = rmsnorm(x, f["rms_ffn"][l])
            hb = f["w1"][l] @ xb
            hb2 = f["w3"][l] @ xb
            hb = hb * (1.0 / (1.0 + np.exp(-hb))) * hb2
            x = x + f["w2"][l] @ hb
        x = rmsnorm(x, f["rms_final"])
        out.append(wcls @ x)
    return np.stack(out)


def permute_rows(wl, n_heads, rows, cols):
    """transformers' convert_llama_weights_to_hf permute(): interleaved -> half rotary."""
    return wl.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def hf_state_dict(cfg, w):
    dim, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hd = dim // nh
    sd = {"model.embed_tokens.weight": w["tok"]}
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = w["rms_att"][l]
        sd[p + "self_attn.q_proj.weight"] = permute_rows(w["wq"][l], nh, nh * hd, dim)
        sd[p + "self_attn.k_proj.weight"] = permute_rows(w["wk"][l], nkv, nkv * hd, dim)
        sd[p + "self_attn.v_proj.weight"] = w["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][l]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn"][l]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][l]
        sd[p + "mlp.down_proj.weight"] = w["w2"][l]
        sd[p + "mlp.up_proj.weight"] = w["w3"][l]
    sd["model.norm.weight"] = w["rms_final"]
    if not cfg["shared_classifier"]:
        sd["lm_head.weight"] = w["wcls"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


# fixed sequences for the check (token ids < 512; 1 = <s> in llama2.c's tokenizers)
CHECK_SEQS = [
    [1],
    [1, 403, 407, 261, 378, 270, 259, 312],
    list(range(1, 65)),
]

README = """# llama2c-stories260k

Andrej Karpathy's `stories260K` checkpoint from llama2.c (a 260K-parameter Llama trained
on TinyStories), converted to a Hugging Face `LlamaForCausalLM` folder by
`scripts/convert_llama2c.py` from the legacy `stories260K.bin` (run.c's format).

- dim {dim}, hidden {hidden_dim}, {n_layers} layers, {n_heads} heads, {n_kv_heads} KV heads
  (GQA, head_dim {hd}), vocab {vocab_size}, context {seq_len}, RMSNorm eps 1e-5, RoPE theta
  10000, SwiGLU, classifier {tied}.
- Weights are float32, exactly the values in the .bin; only the rows of `q_proj`/`k_proj`
  are permuted within each head (llama2.c rotates interleaved pairs, Hugging Face rotates
  halves), as transformers' `convert_llama_weights_to_hf.py` does.
- The conversion is checked: the HF model's float32 logits equal a direct numpy port of
  run.c's forward on fixed token sequences (max |diff| {maxdiff:.1e}).
- **No tokenizer.** llama2.c pairs this model with a 512-token sentencepiece model
  (`tok512.model`/`tok512.bin`) that is not shipped here; tests use token ids directly.
  In that tokenizer 1 = `<s>` (BOS) and 2 = `</s>` (EOS), as recorded in config.json.

Licence: MIT, Copyright (c) 2023 Andrej Karpathy (see LICENSE in this folder).
"""

LICENSE = """MIT License

Copyright (c) 2023 Andrej

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.

(llama2.c, https://github.com/karpathy/llama2.c; the stories260K weights are
distributed with that project.)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".carry/stories260K.bin")
    ap.add_argument("--out", default="models/llama2c-stories260k")
    args = ap.parse_args()

    import torch
    import transformers
    from safetensors.numpy import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg, w = read_llama2c(args.bin)
    print("llama2.c header:", cfg)
    check_freqs(cfg, w)
    hd = cfg["dim"] // cfg["n_heads"]

    hf_cfg = LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["dim"],
        intermediate_size=cfg["hidden_dim"], num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
        head_dim=hd, hidden_act="silu", max_position_embeddings=cfg["seq_len"],
        rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=cfg["shared_classifier"], bos_token_id=1, eos_token_id=2,
        pad_token_id=None, initializer_range=0.02, use_cache=True,
        architectures=["LlamaForCausalLM"],
    )
    sd = hf_state_dict(cfg, w)
    os.makedirs(args.out, exist_ok=True)

    # build the model, load the weights strictly, save with transformers' own serializer
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf_cfg).to(torch.float32)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()},
                                                strict=False)
    missing = [k for k in missing if not (cfg["shared_classifier"] and k == "lm_head.weight")]
    assert not missing and not unexpected, (missing, unexpected)
    if cfg["shared_classifier"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(args.out, safe_serialization=True)

    # reload from disk as a user would, float32, eager, CPU
    model = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    from safetensors import safe_open
    with safe_open(os.path.join(args.out, "model.safetensors"), "np") as f:
        keys = list(f.keys())
        for k in keys:
            assert np.array_equal(f.get_tensor(k), sd[k]), k
    print(f"model.safetensors: {len(keys)} tensors, bit-equal to the converted arrays; first 20:",
          keys[:20])

    maxdiff = 0.0
    for seq in CHECK_SEQS:
        ref = runc_forward(cfg, w, seq)
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([seq])).logits[0].double().numpy()
        d = np.abs(ref - hf).max()
        maxdiff = max(maxdiff, d)
        print(f"T={len(seq):3d}: max|HF - run.c| = {d:.3e}  (|logits| max {np.abs(ref).max():.2f}),"
              f" argmax equal {np.array_equal(ref.argmax(-1), hf.argmax(-1))}")
    # without the permutation the check must fail (guards against a vacuous comparison)
    bad = hf_state_dict(cfg, w)
    for l in range(cfg["n_layers"]):
        bad[f"model.layers.{l}.self_attn.q_proj.weight"] = w["wq"][l]
        bad[f"model.layers.{l}.self_attn.k_proj.weight"] = w["wk"][l]
    m2 = LlamaForCausalLM(hf_cfg).to(torch.float32)
    m2.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bad.items()},
                       strict=False)
    m2.eval()
    with torch.no_grad():
        hf_bad = m2(input_ids=torch.tensor([CHECK_SEQS[2]])).logits[0].double().numpy()
    d_bad = np.abs(runc_forward(cfg, w, CHECK_SEQS[2]) - hf_bad).max()
    print(f"(unpermuted q/k would differ by {d_bad:.3e})")
    assert maxdiff < 1e-4, maxdiff
    assert d_bad > 1e-2

    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(hd=hd, maxdiff=maxdiff,
                              tied="tied to the embedding" if cfg["shared_classifier"] else "untied",
                              **cfg))
    with open(os.path.join(args.out, "LICENSE"), "w") as f:
        f.write(LICENSE)
    with open(os.path.join(args.out, "conversion.json"), "w") as f:
        json.dump({"source": os.path.basename(args.bin), "llama2c_header": cfg,
                   "check_max_abs_diff": maxdiff, "check_sequences": CHECK_SEQS,
                   "unpermuted_max_abs_diff": d_bad,
                   "transformers": transformers.__version__, "torch": torch.__version__},
                  f, indent=1)
        f.write("\n")
    print("converted ->", args.out)


if __name__ == "__main__":
    main()
