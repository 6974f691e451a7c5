#!/usr/bin/env python3
"""Reference diagonal Fisher information of the shipped model, computed with PyTorch + transformers.

The protocol (the same as lutlab's `lutlab_model::fisher`, and SqueezeLLM's gradient script):
for each calibration window x (a row of token ids, batch of one),
    loss = GPT2LMHeadModel(input_ids=x, labels=x).loss      # mean next-token cross-entropy
    loss.backward()
    F[w] += grad(w) ** 2                                     # elementwise, per linear weight
for the four linear weights of every block (`h.{i}.attn.c_attn.weight`, `h.{i}.attn.c_proj.weight`,
`h.{i}.mlp.c_fc.weight`, `h.{i}.mlp.c_proj.weight`), in HF's Conv1D layout [in, out].

The windows are FIXED: `tests/fixtures/fisher_windows.json` holds their token ids (and the
start positions lutlab's seeded sampler drew them from in data/wikitext-2/valid.txt), written by
    cargo test --release -p lutlab-tests --test fisher -- --ignored write_fisher_windows_fixture
so this script needs no tokenizer and samples nothing.

The model is loaded in float32 (the stored float16 weights upcast exactly), eager attention,
dropout off (`eval()`), TF32 off; squared gradients are accumulated in float64 and stored as f32.

Output `tests/fixtures/fisher_reference.safetensors` (kept small: the full linear Fisher of the
shipped model is 3.1 MB in f32):
    transformer.h.{i}.{layer}.weight  f32 [in, out]  full Fisher of the blocks in --full-blocks
                                                     (SqueezeLLM-style names, `transformer.` prefix)
    norm.h.{i}.{layer}.weight         f32 [1]        Frobenius norm of the Fisher of EVERY tensor
    losses                            f32 [nsamples] each window's loss
  metadata: format "lutlab-fisher-reference", model, windows, nsamples, seqlen, full_blocks,
  device, torch, transformers.

Device command (repo root, PyTorch 2.11 / transformers 5.17 on the lab's GPU machine; CPU works too):
    PYTHONUNBUFFERED=1 python3 scripts/fisher_reference.py \
        --model models/gpt2-tiny-wikitext --windows tests/fixtures/fisher_windows.json \
        --out tests/fixtures/fisher_reference.safetensors
"""
import argparse
import json
import math

import torch
import transformers
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

LINEARS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


def disable_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def load_model(path, dev):
    try:
        model = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
    model = model.to(dev).eval()  # eval(): no dropout; gradients still flow
    assert next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied"
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/gpt2-tiny-wikitext")
    ap.add_argument("--windows", default="tests/fixtures/fisher_windows.json")
    ap.add_argument("--out", default="tests/fixtures/fisher_reference.safetensors")
    ap.add_argument("--full-blocks", default="first,last",
                    help="blocks whose full Fisher is stored: comma-separated indices, 'first', 'last' or 'all'")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    disable_tf32()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    with open(args.windows, encoding="utf-8") as f:
        windows = json.load(f)
    ids = torch.tensor(windows["tokens"], dtype=torch.long)
    nsamples, seqlen = ids.shape
    assert nsamples == windows["nsamples"] and seqlen == windows["seqlen"], (ids.shape, windows["nsamples"], windows["seqlen"])

    model = load_model(args.model, dev)
    n_layer = model.config.n_layer
    assert ids.max().item() < model.config.vocab_size and seqlen <= model.config.n_positions
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {}
    for i, block in enumerate(model.transformer.h):
        for layer in LINEARS:
            module = block.get_submodule(layer)
            module.weight.requires_grad_(True)
            weights[f"h.{i}.{layer}.weight"] = module.weight
    fisher = {name: torch.zeros(w.shape, dtype=torch.float64, device=dev) for name, w in weights.items()}

    losses = []
    for k in range(nsamples):
        x = ids[k : k + 1].to(dev)
        for w in weights.values():
            w.grad = None
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        assert math.isfinite(loss.item()), f"sample {k}: loss {loss.item()}"
        losses.append(loss.item())
        for name, w in weights.items():
            fisher[name] += w.grad.double() ** 2
        print(f"sample {k}: start {windows['starts'][k]}, loss {loss.item():.6f}")

    full = set()
    for part in args.full_blocks.split(","):
        part = part.strip()
        if part == "all":
            full.update(range(n_layer))
        elif part == "first":
            full.add(0)
        elif part == "last":
            full.add(n_layer - 1)
        elif part:
            full.add(int(part))
    tensors = {"losses": torch.tensor(losses, dtype=torch.float32)}
    for name, value in fisher.items():
        assert torch.isfinite(value).all(), name
        tensors[f"norm.{name}"] = value.norm().reshape(1).float()
        if int(name.split(".")[1]) in full:
            tensors[f"transformer.{name}"] = value.float().contiguous().cpu()
        print(f"{name}: shape {list(value.shape)}, norm {value.norm().item():.6e}, max {value.max().item():.6e}")
    metadata = {
        "format": "lutlab-fisher-reference",
        "model": args.model,
        "windows": args.windows,
        "nsamples": str(nsamples),
        "seqlen": str(seqlen),
        "full_blocks": ",".join(str(b) for b in sorted(full)),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mean_loss": repr(sum(losses) / len(losses)),
    }
    save_file({k: v.cpu() for k, v in tensors.items()}, args.out, metadata=metadata)
    print(f"wrote {args.out}: {nsamples} windows of {seqlen} tokens, mean loss {sum(losses) / len(losses):.6f}, "
          f"full blocks {sorted(full)}")


if __name__ == "__main__":
    main()
