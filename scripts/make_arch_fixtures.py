#!/usr/bin/env python3
"""Reference fixtures for lutlab's generic decoder (OPT, Llama, Qwen2, Mistral), from transformers.

Models (name -> folder):
    llama2c-stories260k   models/llama2c-stories260k   (scripts/convert_llama2c.py; no tokenizer)
    opt-tiny-wikitext     models/opt-tiny-wikitext     (scripts/train_arch_models.py --arch opt)
    llama-tiny-wikitext   models/llama-tiny-wikitext   (scripts/train_arch_models.py --arch llama)
and four tiny RANDOM-init models that this script makes (torch.manual_seed fixed, CPU, float32,
no tokenizer) and saves with save_pretrained to tests/models/<name>/:
    opt-postln-proj   OPTForCausalLM, do_layer_norm_before=False (no final LayerNorm),
                      word_embed_proj_dim 32 != hidden 64 (project_in/project_out), as opt-350m
    llama3-rope       LlamaForCausalLM, GQA 4/2, rope_theta 500000, llama3 rope scaling (factor 8,
                      low 1, high 4, original_max_position_embeddings 64), tied head; its
                      config.json is written in the Hub's form (top-level "rope_theta" and
                      "rope_scaling", as Llama 3.x repositories have it), see HUB_STYLE_CONFIG
    qwen2-bias        Qwen2ForCausalLM, q/k/v biases, GQA 4/2, rope_theta 1e6, tied head
    mistral           MistralForCausalLM, sliding_window null, one KV head (MQA), head_dim 24 with
                      hidden 64 and 4 heads (q_proj 96 wide, as Mistral-Nemo's head_dim != hidden/heads),
                      untied head
The random weights are redrawn at O(1) scale (matrices N(0, 1/fan_in), norm weights 1 + N(0, 0.1²),
biases N(0, 0.1²)) so that attention and logits are far from uniform.

Each model is loaded in float32 (float16 weights upcast exactly), eager attention, TF32 off, on
CUDA, and written as

tests/fixtures/arch/<name>.safetensors
    p{i}.input_ids  int64 [T]              i = 0, 1, 2; T about 7, about 33, min(context, 128)
    p{i}.logits     f32   [T, min(V, 512)]    the first 512 logits of each position (the full
                                           vocabulary is covered by logsumexp and argmax)
    p{i}.logsumexp  f32   [T]              over the full vocabulary
    p{i}.argmax     int64 [T]              over the full vocabulary
  The ids: for models with a tokenizer, `Tokenizer.from_file(tokenizer.json).encode(PROMPTS[i])`
  with special tokens (so they begin with BOS), p2 cut to T ids; for the others, fixed random ids
  (torch.Generator seeded with ID_SEED + i) whose first id is set to the config's bos_token_id.

tests/fixtures/arch/<name>.json
    name, folder, architecture, model_type, config (config.json as stored), params, tensors
    ({key: [dtype, shape]} of model.safetensors, in file order), ids_source, prompts, head,
    lengths, load settings and versions; for the two trained models also
    "perplexity": on data/wikitext-2/valid.txt's first 100000 characters (read as a UTF-8 string,
        encoded ONCE with add_special_tokens=True: one BOS at the start), for f32 and f16
        (model.half()) weights:
        "strided": HF's strided protocol exactly as scripts/make_reference_fixtures.py defines it
                   (max_length = 256 = the context, stride 128, every token 1..N-1 scored once):
                   num_tokens, scored, nll_sum (float64), perplexity, bits_per_char;
        "nonoverlap": GPTQ's protocol, stride = max_length: windows ids[k*256:(k+1)*256] for
                   k < N // 256 (the tail is dropped), each scoring its 255 tokens after the first:
                   windows, scored, nll_sum, perplexity (= exp(nll_sum / scored), which equals
                   GPTQ's exp(sum_k mean_loss_k * 256 / (windows * 256))).
    "tokens": [{text, ids, tokens, decoded, auto_tokenizer_equal}] for TOKEN_STRINGS of
        scripts/make_reference_fixtures.py plus EXTRA_STRINGS, encoded with special tokens.

Device command (after the two scripts above; see scripts/device_arch_run.sh):
    PYTHONUNBUFFERED=1 python3 scripts/make_arch_fixtures.py
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference_fixtures import TOKEN_STRINGS, strided_nll  # noqa: E402

HEAD = 512  # 4096 in the first run; the committed files were cut to their first 512 columns
ID_SEED = 20260
MODEL_SEED = 1234
PPL_CHARS = 100000

PROMPTS = [
    "The tower is 324 metres tall",
    " The tower is 324 metres ( 1 @,@ 063 ft ) tall , about the same height as an 81 @-@ storey "
    "building , and the tallest structure in Paris .",
    None,  # p2: valid.txt[P2_START:P2_START + 4000], cut to T ids
]
P2_START = 5000

EXTRA_STRINGS = [
    "   three leading spaces",
    "\n\nleading newlines",
    " \n \n",
    "Ünïcödé ñ ß Ωμέγα — “quotes” … ﬁ",
    "<s> and </s> and <unk> are Llama's specials",
    "\u2581a literal metaspace\u2581",
    " = = = Gameplay = = = \n",
    "12345678901234567890 , 3 @.@ 5 million",
]

RANDOM_MODELS = ["opt-postln-proj", "llama3-rope", "qwen2-bias", "mistral"]
TRAINED = {"opt-tiny-wikitext", "llama-tiny-wikitext"}
HUB_STYLE_CONFIG = {"llama3-rope"}


def disable_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def random_config(name):
    from transformers import LlamaConfig, MistralConfig, OPTConfig, Qwen2Config
    if name == "opt-postln-proj":
        return OPTConfig(
            vocab_size=512, hidden_size=64, word_embed_proj_dim=32, num_hidden_layers=2,
            ffn_dim=128, num_attention_heads=4, max_position_embeddings=128,
            do_layer_norm_before=False, activation_function="relu", enable_bias=True,
            layer_norm_elementwise_affine=True, dropout=0.0, attention_dropout=0.0,
            pad_token_id=1, bos_token_id=2, eos_token_id=2, tie_word_embeddings=True,
            architectures=["OPTForCausalLM"])
    if name == "llama3-rope":
        return LlamaConfig(
            vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
            max_position_embeddings=512, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 64},
            attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
            bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"])
    if name == "qwen2-bias":
        return Qwen2Config(
            vocab_size=448, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
            max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
            use_sliding_window=False, sliding_window=None, tie_word_embeddings=True,
            bos_token_id=1, eos_token_id=2, architectures=["Qwen2ForCausalLM"])
    if name == "mistral":
        return MistralConfig(
            vocab_size=320, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=24, hidden_act="silu",
            max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
            sliding_window=None, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
            architectures=["MistralForCausalLM"])
    raise ValueError(name)


def to_hub_style(path):
    """Rewrite config.json's rope_parameters as the Hub's top-level rope_theta + rope_scaling."""
    p = os.path.join(path, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    out = {}
    for k, v in cfg.items():
        out[k] = v
        if k == "rms_norm_eps":
            out["rope_theta"] = rp["rope_theta"]
            out["rope_scaling"] = {k2: v2 for k2, v2 in rp.items() if k2 != "rope_theta"}
    with open(p, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


def make_random_model(name, out_dir):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(MODEL_SEED)
    cfg = random_config(name)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(MODEL_SEED + RANDOM_MODELS.index(name))
    seen = set()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.data_ptr() in seen:  # tied
                continue
            seen.add(p.data_ptr())
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
            elif "norm" in pname and pname.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if name in HUB_STYLE_CONFIG:
        to_hub_style(out_dir)
    # the folder must reload to the very same model (hub-style config included)
    re = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    x = torch.randint(0, cfg.vocab_size, (1, 100), generator=g)
    with torch.no_grad():
        d = (model(input_ids=x).logits - re(input_ids=x).logits).abs().max().item()
    assert d == 0.0, (name, d)
    for (k1, v1), (k2, v2) in zip(model.named_buffers(), re.named_buffers()):
        assert k1 == k2 and torch.equal(v1, v2), (k1, k2)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: random {type(model).__name__}, {n} params -> {out_dir} "
          f"({os.path.getsize(os.path.join(out_dir, 'model.safetensors'))} bytes)")


def load(path, dev):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model = model.to(dev).eval()
    assert next(model.parameters()).dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    return model


@torch.no_grad()
def logits_fixture(model, ids, dev):
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    logits = model(input_ids=x).logits.float()[0]
    head = min(HEAD, logits.shape[-1])
    return (x[0].cpu(), logits[:, :head].contiguous().cpu(),
            torch.logsumexp(logits, dim=-1).cpu(), logits.argmax(dim=-1).cpu())


@torch.no_grad()
def nonoverlap_nll(model, ids, max_length, dev, batch=8):
    """GPTQ's protocol: windows ids[k*L:(k+1)*L], k < N // L, each scoring its last L-1 tokens."""
    n_win = len(ids) // max_length
    data = torch.tensor(ids[:n_win * max_length], dtype=torch.long, device=dev).view(n_win, max_length)
    nll = torch.zeros((), dtype=torch.float64, device=dev)
    for s in range(0, n_win, batch):
        x = data[s:s + batch]
        logp = torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)
        nll -= logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).double().sum()
    scored = n_win * (max_length - 1)
    s = nll.item()
    return {"num_tokens": len(ids), "max_length": max_length, "stride": max_length, "windows": n_win,
            "dropped_tail": len(ids) - n_win * max_length, "scored": scored, "nll_sum": s,
            "perplexity": math.exp(s / scored)}


def perplexities(model, ids, n_chars, ctx, dev):
    out = {}
    st = strided_nll(model, ids, max_length=ctx, stride=ctx // 2, dev=dev)
    st = {"max_length": ctx, "stride": ctx // 2, **st,
          "bits_per_char": st["nll_sum"] / math.log(2) / n_chars}
    out["strided"] = st
    out["nonoverlap"] = nonoverlap_nll(model, ids, ctx, dev)
    return out


def safetensors_index(path):
    from safetensors import safe_open
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        res = {}
        for k in f.keys():
            sl = f.get_slice(k)
            res[k] = [sl.get_dtype(), list(sl.get_shape())]
        return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama2c", default="models/llama2c-stories260k")
    ap.add_argument("--opt", default="models/opt-tiny-wikitext")
    ap.add_argument("--llama", default="models/llama-tiny-wikitext")
    ap.add_argument("--random-dir", default="tests/models")
    ap.add_argument("--out", default="tests/fixtures/arch")
    ap.add_argument("--valid", default="data/wikitext-2/valid.txt")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ppl-chars", type=int, default=PPL_CHARS)
    args = ap.parse_args()

    import tokenizers
    import transformers
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    disable_tf32()
    dev = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    with open(args.valid, encoding="utf-8") as f:
        valid_text = f.read()

    for name in RANDOM_MODELS:
        make_random_model(name, os.path.join(args.random_dir, name))

    models = [("llama2c-stories260k", args.llama2c), ("opt-tiny-wikitext", args.opt),
              ("llama-tiny-wikitext", args.llama)]
    models += [(n, os.path.join(args.random_dir, n)) for n in RANDOM_MODELS]
    summary = {}
    for name, path in models:
        model = load(path, dev)
        cfg = model.config
        with open(os.path.join(path, "config.json")) as f:
            raw_cfg = json.load(f)
        ctx = cfg.max_position_embeddings
        V = cfg.vocab_size
        tok_path = os.path.join(path, "tokenizer.json")
        tok = Tokenizer.from_file(tok_path) if os.path.exists(tok_path) else None
        lengths = [7, 33, min(ctx, 128)]
        seqs, prompts = [], []
        if tok is not None:
            for i, p in enumerate(PROMPTS):
                if p is None:
                    p = valid_text[P2_START:P2_START + 4000]
                ids = tok.encode(p).ids
                assert ids[0] == cfg.bos_token_id, (ids[:3], cfg.bos_token_id)
                if i == 2:
                    ids = ids[:lengths[2]]
                    assert len(ids) == lengths[2]
                    p = {"valid_txt_chars": [P2_START, P2_START + 4000], "ids_cut_to": lengths[2]}
                seqs.append(ids)
                prompts.append(p)
            ids_source = "tokenizer.json encode(prompt) with special tokens"
        else:
            for i, T in enumerate(lengths):
                g = torch.Generator().manual_seed(ID_SEED + i)
                ids = torch.randint(0, V, (T,), generator=g).tolist()
                if cfg.bos_token_id is not None and cfg.bos_token_id < V:
                    ids[0] = cfg.bos_token_id
                seqs.append(ids)
            ids_source = (f"torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed("
                          f"{ID_SEED} + i)), first id set to bos_token_id")
        tensors = {}
        for i, ids in enumerate(seqs):
            x, head, lse, am = logits_fixture(model, ids, dev)
            tensors[f"p{i}.input_ids"] = x
            tensors[f"p{i}.logits"] = head
            tensors[f"p{i}.logsumexp"] = lse
            tensors[f"p{i}.argmax"] = am
        save_file(tensors, os.path.join(args.out, f"{name}.safetensors"),
                  metadata={"model": path, "head": str(min(HEAD, V)), "dtype": "float32",
                            "attn": "eager", "tf32": "off", "transformers": transformers.__version__,
                            "torch": torch.__version__})
        index = safetensors_index(path)
        facts = {
            "name": name, "folder": path, "architecture": type(model).__name__,
            "model_type": cfg.model_type, "config": raw_cfg,
            "params": sum(p.numel() for p in model.parameters()),
            "stored_dtype": sorted({v[0] for v in index.values()}),
            "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
            "vocab_size": V, "context": ctx, "head": min(HEAD, V),
            "lengths": [len(s) for s in seqs], "ids_source": ids_source,
            "prompts": prompts if tok is not None else None,
            "tensors": index,
            "load": "AutoModelForCausalLM.from_pretrained(dtype=float32, attn_implementation='eager'), "
                    "TF32 off, batch of 1 per prompt",
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
            "transformers": transformers.__version__, "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
        }
        print(f"\n== {name}: {facts['architecture']} V={V} ctx={ctx} params={facts['params']} "
              f"lengths={facts['lengths']}")
        print("   keys[:20]:", list(index)[:20])
        print("   argmax p0:", tensors["p0.argmax"].tolist())

        if name in TRAINED:
            text = valid_text[:args.ppl_chars]
            ids = tok.encode(text).ids
            assert ids[0] == cfg.bos_token_id and ids.count(cfg.bos_token_id) == 1 + text.count(
                "<|endoftext|>" if cfg.model_type == "opt" else "<s>")
            ppl = {"data": args.valid, "chars": len(text), "num_tokens": len(ids),
                   "first_ids": ids[:32], "encode": "tokenizer.json encode(text) with special tokens"}
            ppl["float32"] = perplexities(model, ids, len(text), ctx, dev)
            model.half()
            ppl["float16"] = perplexities(model, ids, len(text), ctx, dev)
            model.float()
            facts["perplexity"] = ppl
            for dt in ("float32", "float16"):
                print(f"   valid[:{len(text)}] {dt}: strided ppl {ppl[dt]['strided']['perplexity']:.4f}"
                      f"  nonoverlap ppl {ppl[dt]['nonoverlap']['perplexity']:.4f}")
            at = AutoTokenizer.from_pretrained(path)
            cases = []
            for s in TOKEN_STRINGS + EXTRA_STRINGS:
                e = tok.encode(s)
                cases.append({"text": s, "ids": e.ids, "tokens": e.tokens,
                              "decoded": tok.decode(e.ids, skip_special_tokens=False),
                              "auto_tokenizer_equal": at(s)["input_ids"] == e.ids})
            bad = [c["text"] for c in cases if not c["auto_tokenizer_equal"]]
            print(f"   tokens: {len(cases)} cases; AutoTokenizer ({type(at).__name__}) differs on {bad}")
            facts["tokens"] = cases
            summary[name] = {k: ppl[k]["strided"]["perplexity"] for k in ("float32", "float16")}
        with open(os.path.join(args.out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(facts, f, indent=1, ensure_ascii=False)
            f.write("\n")
        del model
    print("\nfixtures written to", args.out, "; valid perplexities:", summary)


if __name__ == "__main__":
    main()
