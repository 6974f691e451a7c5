#!/usr/bin/env python3
"""Train the small GPT-2 that lutlab ships: models/gpt2-tiny-wikitext.

Architecture: GPT-2's exactly (GPT2LMHeadModel, gelu_new, pre-LN, learned
positions, tied embeddings, GPT-2's 50257-token byte-level BPE), scaled down:
n_layer=4, n_head=4, n_embd=128, n_positions=256.  Trained from scratch on the
WikiText-2 (raw) *train* split only; test/valid are never trained on (valid is
used only to pick the best checkpoint).

Data: the whole train.txt read as one UTF-8 string, encoded with
models/gpt2-tiny-wikitext/tokenizer.json (built by scripts/make_tokenizer.py),
random contiguous windows of 257 tokens (256 inputs + 256 shifted targets).
Optimiser: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only), linear
warmup then cosine decay to 10%, bf16 autocast, grad-clip 1.0.

The run is time-bounded: the first --calib-steps steps are timed and the total
step count is then fixed so that training takes about --minutes; the step count
used is printed and written to training_log.json, and passing it back with
--steps reproduces the run's schedule exactly (same seed => same batches).

Output (float16, safetensors; the tied lm_head is not stored, keys keep HF's
`transformer.` prefix and Conv1D [in, out] layout):
    <out>/config.json, <out>/generation_config.json, <out>/model.safetensors,
    <out>/training_log.json

Device command (see scripts/README.md; train.txt travels in the git-ignored .carry/):
    PYTHONUNBUFFERED=1 python3 scripts/train_shipped_model.py \
        --train .carry/train.txt --valid data/wikitext-2/valid.txt \
        --out models/gpt2-tiny-wikitext --minutes 4
"""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel


def encode_file(tok, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return tok.encode(text).ids


@torch.no_grad()
def eval_loss(model, ids, ctx, batch):
    """Mean next-token loss over non-overlapping windows of ctx+1 tokens."""
    model.eval()
    n = (len(ids) - 1) // ctx
    total, count = 0.0, 0
    for s in range(0, n, batch):
        rows = [ids[i * ctx: i * ctx + ctx + 1] for i in range(s, min(n, s + batch))]
        t = torch.stack(rows)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=t[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), t[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += t[:, 1:].numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default=".carry/train.txt")
    ap.add_argument("--valid", default="data/wikitext-2/valid.txt")
    ap.add_argument("--tokenizer", default="models/gpt2-tiny-wikitext/tokenizer.json")
    ap.add_argument("--out", default="models/gpt2-tiny-wikitext")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (0: calibrate to --minutes)")
    ap.add_argument("--calib-steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed_all(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = torch.device("cuda")
    t_start = time.time()

    tok = Tokenizer.from_file(args.tokenizer)
    assert tok.encode("Hello world").ids == [15496, 995]
    train_ids = encode_file(tok, args.train)
    valid_ids = encode_file(tok, args.valid)
    print(f"train tokens {len(train_ids)}  valid tokens {len(valid_ids)}  "
          f"(tokenized in {time.time() - t_start:.1f}s)")
    train = torch.tensor(train_ids, dtype=torch.long, device=dev)
    valid = torch.tensor(valid_ids, dtype=torch.long, device=dev)

    ctx = 256
    config = GPT2Config(
        vocab_size=50257, n_positions=ctx, n_embd=128, n_layer=4, n_head=4,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout,
        tie_word_embeddings=True, bos_token_id=50256, eos_token_id=50256,
    )
    model = GPT2LMHeadModel(config).to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params} ({n_params / 1e6:.2f}M, incl. tied embeddings)")

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    offs = torch.arange(ctx + 1, device=dev)
    hi = len(train_ids) - (ctx + 1)

    total_steps = args.steps if args.steps > 0 else None
    budget_s = args.minutes * 60.0

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        T = total_steps if total_steps else 10 ** 9
        prog = min(1.0, (step - args.warmup) / max(1, T - args.warmup))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))

    best = {"val_loss": float("inf"), "step": -1, "state": None}
    history = []
    recent = []
    step = 0
    torch.cuda.synchronize()
    t0 = time.time()
    while True:
        if total_steps is not None and step >= total_steps:
            break
        if time.time() - t0 > budget_s * 1.15:  # hard safety stop
            print("hard time stop")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = torch.randint(0, hi, (args.batch,), device=dev, generator=gen)
        win = train[starts[:, None] + offs]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=win[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        recent.append(loss.detach())

        if total_steps is None and step == args.calib_steps:
            torch.cuda.synchronize()
            per = (time.time() - t0) / step
            # leave ~8% for periodic validation
            total_steps = max(step + 1, int(budget_s * 0.92 / per))
            print(f"calibration: {per * 1000:.1f} ms/step -> total_steps {total_steps}")

        if step % args.log_every == 0 or step == total_steps:
            tl = torch.stack(recent).mean().item()
            recent = []
            print(f"step {step:6d}/{total_steps}  lr {lr_at(step - 1):.2e}  train_loss {tl:.4f}  "
                  f"elapsed {time.time() - t0:.0f}s")
            history.append({"step": step, "train_loss": tl})
        if step % args.eval_every == 0 or step == total_steps:
            vl = eval_loss(model, valid, ctx, 64)
            print(f"step {step:6d}  valid_loss {vl:.4f}  valid_ppl {math.exp(vl):.2f}")
            history.append({"step": step, "valid_loss": vl})
            if vl < best["val_loss"]:
                best = {"val_loss": vl, "step": step,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    torch.cuda.synchronize()
    train_s = time.time() - t0
    final_train_loss = [h["train_loss"] for h in history if "train_loss" in h][-1]
    print(f"trained {step} steps in {train_s:.0f}s; best valid loss {best['val_loss']:.4f} at step {best['step']}")

    model.load_state_dict(best["state"])
    model.eval()
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    model.generation_config.bos_token_id = 50256
    model.generation_config.eos_token_id = 50256
    model.generation_config.pad_token_id = 50256
    os.makedirs(args.out, exist_ok=True)
    model.half().save_pretrained(args.out, safe_serialization=True)

    from safetensors import safe_open
    with safe_open(os.path.join(args.out, "model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_slice(k)
            print(f"  {k} {t.get_dtype()} {t.get_shape()}")
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"model.safetensors: {size} bytes")

    log = {
        "seed": args.seed, "steps": step, "batch": args.batch, "context": ctx, "lr": args.lr,
        "min_lr_frac": args.min_lr_frac, "warmup": args.warmup, "weight_decay": args.weight_decay,
        "dropout": args.dropout, "train_tokens": len(train_ids), "tokens_seen": step * args.batch * ctx,
        "train_seconds": round(train_s, 1), "final_train_loss": final_train_loss,
        "best_step": best["step"], "best_valid_loss_bf16": best["val_loss"],
        "params": n_params, "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "history": history,
        "command": "python3 scripts/train_shipped_model.py --train .carry/train.txt "
                   f"--out {args.out} --steps {step} --seed {args.seed}",
    }
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
        f.write("\n")
    print(f"done in {time.time() - t_start:.0f}s total")


if __name__ == "__main__":
    main()
