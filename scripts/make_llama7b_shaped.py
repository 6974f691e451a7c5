#!/usr/bin/env python3
"""A Llama-2-7B-shaped Hugging Face folder with random f16 weights, for the 7B device benchmark
(scripts/bench_7b.sh): the real checkpoint is not reachable from the device.

    python3 scripts/make_llama7b_shaped.py --out /tmp/llama7b [--layers 32] [--seed 0]

Writes config.json (Llama-2-7B's shape: hidden 4096, intermediate 11008, 32 heads, no GQA,
vocab 32000, context 4096), the weights as safetensors shards of about 4 layers each
(model-0000k-of-0000N.safetensors, HF tensor names, [out, in] linears) with
model.safetensors.index.json, and the tokenizer of models/llama-tiny-wikitext. That tokenizer is
a 4096-token BPE: every id it produces is < 4096 < 32000, so it works unchanged with this
model's 32000-row embedding (the other rows are simply never looked up); bos 1 / eos 2 agree.

Linear and embedding weights are normal(0, 0.02), drawn with torch (on CUDA when available, else
the CPU: the two give different values for the same seed), cast to float16; norm weights are
ones. No transformers model is built: the shards are written tensor by tensor in the safetensors
format (8-byte header length, JSON header, raw little-endian data) straight from each freshly
drawn tensor, which is freed before the next, so the host holds at most one tensor (the
[32000, 4096] embedding or head: 250 MiB in f16, 500 MiB of f32 while drawn) at a time.
"""
import argparse
import json
import math
import shutil
import struct
import sys
import time
from pathlib import Path

import torch

HIDDEN, INTER, HEADS, VOCAB = 4096, 11008, 32, 32000
SOURCE_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "llama-tiny-wikitext"


def config(layers):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": HIDDEN // HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,  # transformers 4's key; 5 reads rope_parameters (lutlab reads either)
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
    }


def layer_tensors(i):
    """(name, shape, kind) of block i, kind "normal" or "ones"."""
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (HIDDEN,), "ones"),
        (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN), "normal"),
        (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN), "normal"),
        (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN), "normal"),
        (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN), "normal"),
        (p + "post_attention_layernorm.weight", (HIDDEN,), "ones"),
        (p + "mlp.gate_proj.weight", (INTER, HIDDEN), "normal"),
        (p + "mlp.up_proj.weight", (INTER, HIDDEN), "normal"),
        (p + "mlp.down_proj.weight", (HIDDEN, INTER), "normal"),
    ]


def shard_plan(layers, per_shard):
    """Lists of (name, shape, kind), one per shard: the embedding with the first layers, the final
    norm and the head with the last."""
    groups = [list(range(s, min(s + per_shard, layers))) for s in range(0, layers, per_shard)] or [[]]
    shards = []
    for k, group in enumerate(groups):
        tensors = []
        if k == 0:
            tensors.append(("model.embed_tokens.weight", (VOCAB, HIDDEN), "normal"))
        for i in group:
            tensors += layer_tensors(i)
        if k == len(groups) - 1:
            tensors.append(("model.norm.weight", (HIDDEN,), "ones"))
            tensors.append(("lm_head.weight", (VOCAB, HIDDEN), "normal"))
        shards.append(tensors)
    return shards


def draw(shape, kind, device, generator):
    """One f16 tensor on the CPU, contiguous."""
    if kind == "ones":
        return torch.ones(shape, dtype=torch.float16)
    t = torch.empty(shape, dtype=torch.float32, device=device)
    t.normal_(0.0, 0.02, generator=generator)
    out = t.to(torch.float16).cpu().contiguous()
    del t
    return out


def write_shard(path, tensors, device, generator):
    """Writes one safetensors file tensor by tensor; returns its data bytes."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        nbytes = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data aligned to 8 bytes, as the safetensors writer pads
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape, kind in tensors:
            t = draw(shape, kind, device, generator)
            assert t.dtype == torch.float16 and tuple(t.shape) == shape, name
            f.write(memoryview(t.numpy()).cast("B"))
            del t
    return offset


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers-per-shard", type=int, default=4)
    args = p.parse_args()
    if sys.byteorder != "little":
        raise SystemExit("safetensors data is little-endian; this writer assumes a little-endian host")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()

    plan = shard_plan(args.layers, args.layers_per_shard)
    n = len(plan)
    weight_map, total_bytes, params = {}, 0, 0
    for k, tensors in enumerate(plan, start=1):
        name = f"model-{k:05d}-of-{n:05d}.safetensors"
        total_bytes += write_shard(out / name, tensors, device, generator)
        for tname, shape, _ in tensors:
            weight_map[tname] = name
            params += math.prod(shape)
        print(f"{name}: {len(tensors)} tensors, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if device == "cuda":
        torch.cuda.empty_cache()

    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config(args.layers), indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (SOURCE_TOKENIZER / f).exists():
            shutil.copy(SOURCE_TOKENIZER / f, out / f)
        elif f != "special_tokens_map.json":
            raise SystemExit(f"{SOURCE_TOKENIZER / f} is missing")
    print(json.dumps({"out": str(out), "layers": args.layers, "shards": n, "parameters": params,
                      "bytes": total_bytes, "gib": total_bytes / 2**30, "device": device,
                      "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
