#!/usr/bin/env python3
"""What PyTorch + scikit-learn would take on a Llama-2-7B-shaped checkpoint (scripts/bench_7b.sh,
made by scripts/make_llama7b_shaped.py), measured on a few decoder layers and projected to the
whole model, since the whole model in f32 with its gradients does not fit the one-layer-at-a-time
budget this script keeps. Prints ONE JSON object; every projection is spelled out in it.

    python3 scripts/bench_7b_peers.py --model /tmp/llama7b --seqlen 2048 \
        [--layers-timed 2] [--channels 64] [--reps 3] [--parts fisher,eval,kmeans]

fisher_torch: transformers' own LlamaDecoderLayer (config from DIR/config.json, SDPA attention,
causal through SDPA's is_causal with attention_mask=None; a causal mask is passed instead if a
quick check finds the layer not causal) in float32 on CUDA, with layer k's weights from the
shards, requires_grad on its 7 linear weights: one forward + backward on a [1, seqlen, 4096]
random input (rotary embeddings from LlamaRotaryEmbedding, gradients of the weights and of the
input, as inside a full model), then each weight gradient squared and added to an f32
accumulator, as SqueezeLLM's per-sample (batch 1) Fisher does. Plus the LM head + cross-entropy
forward/backward in f32 ([seqlen, 4096] x [4096, 32000], gradient of the hidden states only: the
head is not quantized). Per window = n_layers x layer + head; projected for --fisher-windows
(128) windows. The same in bfloat16 autocast (weights, gradients and accumulators stay f32) is
the second figure. TF32 stays at PyTorch's default (off) unless --tf32.

eval_torch: the same layer in float16, forward under no_grad, plus the f16 head and an f32
cross-entropy (as scripts/eval_peer.py scores); per window = n_layers x layer + head, projected
for --eval-windows (16) windows of seqlen tokens (32768 tokens at 2048).

kmeans_sklearn: scripts/bench_sklearn.py's approach (SqueezeLLM's nuq.py: sklearn's weighted
KMeans, one output channel at a time) on --channels random output channels (rows of HF's
[out, in] weight) of layer 0's q_proj (4096 values each) and down_proj (11008 each), sample weight
|w|² + 1e-3 standing in for the Fisher (the cost does not depend on it); projected to every
channel of the 7 linears of every layer: q, k, v, o (4096 channels of 4096) and gate, up (11008
channels of 4096) at q_proj's per-channel time, down (4096 channels of 11008) at down_proj's.

Weight loading from disk is timed separately and not counted in any projection; nor are the
embedding lookup, the final norm, or the Python loop around the layers.
"""
import argparse
import gc
import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

import transformers
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

DEV = "cuda"
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def log(msg):
    print(f"[bench_7b_peers] {msg}", file=sys.stderr, flush=True)


def sync():
    torch.cuda.synchronize()


def free():
    gc.collect()
    torch.cuda.empty_cache()


class Checkpoint:
    """Tensors of a (sharded) safetensors model directory, read one at a time."""

    def __init__(self, directory):
        self.dir = Path(directory)
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            self.map = json.loads(index.read_text())["weight_map"]
        else:
            with safe_open(str(self.dir / "model.safetensors"), framework="pt") as f:
                self.map = {k: "model.safetensors" for k in f.keys()}

    def get(self, name, framework="pt"):
        with safe_open(str(self.dir / self.map[name]), framework=framework) as f:
            return f.get_tensor(name)

    def layer(self, i):
        prefix = f"model.layers.{i}."
        return {k[len(prefix):]: self.get(k) for k in self.map if k.startswith(prefix)}


def timed(fn, reps):
    """Median seconds of `reps` calls after one warm-up, synchronized."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


class Layer:
    """One transformers LlamaDecoderLayer on the GPU, called whatever its forward's signature."""

    def __init__(self, config):
        self.config = config
        self.hidden = config.hidden_size
        init = inspect.signature(LlamaDecoderLayer.__init__).parameters
        with torch.device(DEV):
            self.module = LlamaDecoderLayer(config, **({"layer_idx": 0} if "layer_idx" in init else {}))
        self.module.train(False)  # dropout off (attention_dropout is 0 anyway); autograd unaffected
        params = inspect.signature(self.module.forward).parameters
        any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.accepts = lambda name: name in params or any_kw
        # transformers >= 4.45 takes the rotary (cos, sin) from the model as position_embeddings
        # (required from 4.48, when the attention lost its own rotary_emb); older versions compute
        # them inside the attention from position_ids.
        self.rotary = None
        if "position_embeddings" in params or not hasattr(self.module.self_attn, "rotary_emb"):
            self.rotary = modeling_llama.LlamaRotaryEmbedding(config=config, device=DEV)
        self.mask_mode = None  # None: attention_mask=None and SDPA's is_causal; "bool" / "float": a 4-D mask
        self._cache = {}

    def load(self, state, dtype):
        self.module.to(dtype)
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        missing = [k for k in missing if "rotary" not in k]
        if missing or unexpected:
            raise SystemExit(f"layer state mismatch: missing {missing}, unexpected {unexpected}")

    def weights(self):
        mods = dict(self.module.named_modules())
        return [mods[n].weight for n in LINEARS]

    def _extras(self, x):
        length = x.shape[1]
        autocast = autocast_on()
        key = (length, x.dtype, self.mask_mode, autocast)
        if key not in self._cache:
            pos = torch.arange(length, device=DEV).unsqueeze(0)
            cos_sin = None
            if self.rotary is not None:
                with torch.no_grad():
                    cos_sin = self.rotary(x, pos)
            mask = None
            if self.mask_mode is not None:
                keep = torch.ones(length, length, dtype=torch.bool, device=DEV).tril()[None, None]
                if self.mask_mode == "bool":
                    mask = keep
                else:
                    dtype = torch.bfloat16 if autocast else x.dtype
                    mask = torch.zeros(keep.shape, dtype=dtype, device=DEV).masked_fill(~keep, torch.finfo(dtype).min)
            self._cache = {key: (pos, cos_sin, mask)}
        return self._cache[key]

    def __call__(self, x):
        pos, cos_sin, mask = self._extras(x)
        kw = {}
        if self.accepts("attention_mask"):
            kw["attention_mask"] = mask
        if self.accepts("position_ids"):
            kw["position_ids"] = pos
        if cos_sin is not None:
            kw["position_embeddings"] = cos_sin
        if self.accepts("use_cache"):
            kw["use_cache"] = False
        out = self.module(x, **kw)
        return out[0] if isinstance(out, (tuple, list)) else out

    def _causal(self, dtype, autocast):
        """Whether changing the last position leaves the earlier outputs (almost) unchanged."""
        g = torch.Generator(device=DEV).manual_seed(1)
        x = torch.randn(1, 16, self.hidden, device=DEV, dtype=dtype, generator=g)
        x2 = x.clone()
        x2[:, -1] = torch.randn(self.hidden, device=DEV, dtype=dtype, generator=g)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y1, y2 = self(x).float(), self(x2).float()
        before = (y1[:, :-1] - y2[:, :-1]).abs().max().item()
        last = (y1[:, -1] - y2[:, -1]).abs().max().item()
        return before <= 1e-3 * last, before, last

    def ensure_causal(self, dtype, autocast=False):
        """Picks the first of is_causal / bool mask / additive mask that makes the layer causal,
        leaves it set and returns it with a description."""
        for mode in (None, "bool", "float"):
            self.mask_mode = mode
            self._cache = {}
            ok, before, last = self._causal(dtype, autocast)
            if ok:
                return mode, {None: "attention_mask=None (SDPA is_causal)", "bool": "4-D bool mask",
                              "float": "4-D additive mask"}[mode]
            log(f"attention not causal with mask mode {mode}: earlier outputs moved {before:.3g} (last {last:.3g})")
        raise SystemExit("could not make LlamaDecoderLayer causal")


def autocast_on():
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_enabled()


def forward_signature():
    return "LlamaDecoderLayer.forward" + str(inspect.signature(LlamaDecoderLayer.forward))


def head_f32_step(h, w, targets):
    logits = h @ w.t()
    loss = F.cross_entropy(logits.float(), targets)
    (gh,) = torch.autograd.grad(loss, h)
    return gh


def fisher_part(ckpt, config, args, n_layers):
    layer = Layer(config)
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(1, args.seqlen, config.hidden_size, device=DEV, generator=g).requires_grad_(True)
    gout = torch.randn(1, args.seqlen, config.hidden_size, device=DEV, generator=g)
    modes = [("float32", False), ("bfloat16_autocast", True)]
    results = {m: {"layer_seconds": [], "layer_peak_allocated_bytes": []} for m, _ in modes}
    load_seconds, how, mask_mode = 0.0, {}, {}
    for i in range(args.layers_timed):
        t0 = time.perf_counter()
        state = ckpt.layer(i)
        layer.load(state, torch.float32)
        del state
        load_seconds += time.perf_counter() - t0
        weights = layer.weights()
        for p in layer.module.parameters():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        acc = [torch.zeros_like(w) for w in weights]
        for name, autocast in modes:
            if i == 0:
                mask_mode[name], how[name] = layer.ensure_causal(torch.float32, autocast)
            layer.mask_mode = mask_mode[name]

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    out = layer(x)
                grads = torch.autograd.grad(out, weights + [x], grad_outputs=gout.to(out.dtype))
                for a, gr in zip(acc, grads[:-1]):
                    a.add_(gr.float().square())

            free()
            torch.cuda.reset_peak_memory_stats()
            seconds, _ = timed(step, args.reps)
            r = results[name]
            r["layer_seconds"].append(seconds)
            r["layer_peak_allocated_bytes"].append(torch.cuda.max_memory_allocated())
            if i == 0:
                # What one layer's saved activations take (a full model keeps n_layers of them).
                free()
                m0 = torch.cuda.memory_allocated()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    out = layer(x)
                r["layer_saved_activation_bytes"] = torch.cuda.memory_allocated() - m0
                del out
            log(f"fisher {name} layer {i}: {seconds:.4f} s")
        del acc, weights
    layer_weight_bytes = sum(w.numel() for w in layer.weights()) * 4
    rotary_how = ("position_embeddings=(cos, sin) from LlamaRotaryEmbedding(config)" if layer.rotary is not None
                  else "computed inside the attention from position_ids")
    del layer
    free()

    w = ckpt.get("lm_head.weight").to(DEV, torch.float32)
    h = torch.randn(args.seqlen, config.hidden_size, device=DEV, generator=g).requires_grad_(True)
    targets = torch.randint(0, config.vocab_size, (args.seqlen,), device=DEV, generator=g)
    for name, autocast in modes:
        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                return head_f32_step(h, w, targets)
        free()
        torch.cuda.reset_peak_memory_stats()
        seconds, _ = timed(step, args.reps)
        r = results[name]
        r["head_seconds"] = seconds
        r["head_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        log(f"fisher {name} head: {seconds:.4f} s")
    del w, h, targets
    free()

    total_params = sum(int(np.prod(v)) for v in shapes(ckpt).values())
    linear_params = layer_weight_bytes // 4 * n_layers
    for name, _ in modes:
        r = results[name]
        layer_s = float(np.mean(r["layer_seconds"]))
        r["layer_seconds_mean"] = layer_s
        r["seconds_per_window"] = n_layers * layer_s + r["head_seconds"]
        r["windows"] = args.fisher_windows
        r["projected_seconds"] = args.fisher_windows * r["seconds_per_window"]
        r["tokens_per_s"] = args.seqlen / r["seconds_per_window"]
        r["attention"] = how[name]
        # Rough: all weights in f32 + f32 gradients and accumulators of the linears + every
        # layer's saved activations + the head's peak (logits and their gradient).
        r["full_model_f32_memory_estimate_bytes"] = (
            total_params * 4 + 2 * linear_params * 4 + n_layers * r["layer_saved_activation_bytes"]
            + r["head_peak_allocated_bytes"])
    return {
        "engine": "transformers LlamaDecoderLayer, eager PyTorch, batch 1 (per-sample Fisher)",
        "seqlen": args.seqlen, "n_layers": n_layers, "layers_timed": args.layers_timed, "reps": args.reps,
        "tf32": torch.backends.cuda.matmul.allow_tf32, "forward_signature": forward_signature(),
        "rotary": rotary_how,
        "layer_load_seconds": load_seconds,
        "float32": results["float32"], "bfloat16_autocast": results["bfloat16_autocast"],
        "projection": (f"seconds_per_window = {n_layers} x one decoder layer's forward + backward (gradients of its 7 linear "
                       "weights and of its input) + square-and-add of the 7 weight gradients into f32 accumulators, "
                       "+ the LM head matmul and cross-entropy forward/backward (gradient of the hidden states only); "
                       f"projected_seconds = {args.fisher_windows} windows x seconds_per_window; layer time is the mean over "
                       f"the first {args.layers_timed} layers of each one's median of {args.reps} runs after a warm-up. "
                       "Not counted: embedding, final norm, weight loading. Memory: layer_peak_allocated_bytes is torch's "
                       "peak for one f32 layer (weights, gradients, accumulators, activations); "
                       "full_model_f32_memory_estimate_bytes is a rough sum, not a measurement."),
    }


def eval_part(ckpt, config, args, n_layers):
    layer = Layer(config)
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(1, args.seqlen, config.hidden_size, device=DEV, dtype=torch.float16, generator=g)
    seconds, peaks = [], []
    how = None
    for i in range(args.layers_timed):
        state = ckpt.layer(i)
        layer.load(state, torch.float16)
        del state
        for p in layer.module.parameters():
            p.requires_grad_(False)
        if i == 0:
            _, how = layer.ensure_causal(torch.float16)

        def step():
            with torch.no_grad():
                return layer(x)

        free()
        torch.cuda.reset_peak_memory_stats()
        s, _ = timed(step, args.reps)
        seconds.append(s)
        peaks.append(torch.cuda.max_memory_allocated())
        log(f"eval f16 layer {i}: {s:.4f} s")
    del layer
    free()

    w = ckpt.get("lm_head.weight").to(DEV, torch.float16)
    h = torch.randn(args.seqlen, config.hidden_size, device=DEV, dtype=torch.float16, generator=g)
    targets = torch.randint(0, config.vocab_size, (args.seqlen,), device=DEV, generator=g)

    def head():
        with torch.no_grad():
            logits = (h @ w.t()).float()
            return F.cross_entropy(logits, targets, reduction="sum").item()

    free()
    torch.cuda.reset_peak_memory_stats()
    head_s, _ = timed(head, args.reps)
    head_peak = torch.cuda.max_memory_allocated()
    log(f"eval f16 head: {head_s:.4f} s")
    del w, h, targets
    free()
    layer_s = float(np.mean(seconds))
    per_window = n_layers * layer_s + head_s
    tokens = args.eval_windows * args.seqlen
    return {
        "engine": "transformers LlamaDecoderLayer, eager PyTorch, float16, no_grad, batch 1",
        "seqlen": args.seqlen, "n_layers": n_layers, "layers_timed": args.layers_timed, "reps": args.reps,
        "attention": how, "layer_seconds": seconds, "layer_seconds_mean": layer_s,
        "layer_peak_allocated_bytes": peaks, "head_seconds": head_s, "head_peak_allocated_bytes": head_peak,
        "seconds_per_window": per_window, "windows": args.eval_windows, "tokens": tokens,
        "projected_seconds": args.eval_windows * per_window, "tokens_per_s": tokens / (args.eval_windows * per_window),
        "projection": (f"seconds_per_window = {n_layers} x one f16 decoder layer's forward + the f16 LM head matmul and "
                       f"an f32 cross-entropy over {args.seqlen} positions; projected_seconds = {args.eval_windows} windows "
                       f"(stride = window = {args.seqlen}) x seconds_per_window; tokens_per_s = {tokens} / projected_seconds. "
                       "Not counted: embedding, final norm, weight loading, tokenization."),
    }


def shapes(ckpt):
    out = {}
    files = sorted(set(ckpt.map.values()))
    for f in files:
        with safe_open(str(ckpt.dir / f), framework="numpy") as s:
            for k in s.keys():
                out[k] = tuple(s.get_slice(k).get_shape())
    return out


def kmeans_part(ckpt, config, args, n_layers):
    from sklearn.cluster import KMeans
    import sklearn

    rng = np.random.default_rng(0)
    timed_kinds = {}
    for kind in ("self_attn.q_proj", "mlp.down_proj"):
        name = f"model.layers.0.{kind}.weight"
        w = ckpt.get(name, framework="numpy").astype(np.float32)  # [out, in]: a channel is a row
        sample = rng.choice(w.shape[0], size=min(args.channels, w.shape[0]), replace=False)
        seconds = 0.0
        for c in sample:
            x = w[c].astype(np.float64).reshape(-1, 1)
            weight = x.reshape(-1) ** 2 + 1e-3
            t0 = time.perf_counter()
            KMeans(n_clusters=2 ** args.bits, n_init="auto", max_iter=50, random_state=0).fit(x, sample_weight=weight)
            seconds += time.perf_counter() - t0
        timed_kinds[kind] = {"rows": int(w.shape[1]), "channels_timed": len(sample),
                             "ms_per_channel": 1e3 * seconds / len(sample), "layer": name}
        log(f"kmeans {kind}: {timed_kinds[kind]['ms_per_channel']:.2f} ms per channel")
        del w
    hid, inter = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (getattr(config, "head_dim", None) or hid // config.num_attention_heads)
    # (output channels, values per channel, which timed kind stands for it)
    table = {
        "q_proj": (hid, hid, "self_attn.q_proj"), "k_proj": (kv, hid, "self_attn.q_proj"),
        "v_proj": (kv, hid, "self_attn.q_proj"), "o_proj": (hid, hid, "self_attn.q_proj"),
        "gate_proj": (inter, hid, "self_attn.q_proj"), "up_proj": (inter, hid, "self_attn.q_proj"),
        "down_proj": (hid, inter, "mlp.down_proj"),
    }
    per_kind, total, channels = {}, 0.0, 0
    for kind, (ch, rows, src) in table.items():
        ms = timed_kinds[src]["ms_per_channel"]
        s = ms / 1e3 * ch * n_layers
        per_kind[kind] = {"channels_per_layer": ch, "rows": rows, "ms_per_channel": ms, "timed_on": src,
                          "projected_seconds": s}
        total += s
        channels += ch * n_layers
    return {
        "engine": f"sklearn {sklearn.__version__} KMeans(n_clusters={2 ** args.bits}, n_init='auto', max_iter=50), "
                  "one output channel at a time, float64, sample_weight |w|^2+1e-3",
        "cpu_count": os.cpu_count(), "timed": timed_kinds, "per_kind": per_kind, "channels": channels,
        "projected_seconds": total,
        "projection": (f"each kind's ms_per_channel (measured on {args.channels} random channels of layer 0's q_proj for "
                       "the 4096-value rows of q, k, v, o, gate, up, and of down_proj for its 11008-value rows) x its "
                       f"output channels x {n_layers} layers, summed."),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--layers-timed", type=int, default=2)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--reps", type=int, default=3, help="timed runs per layer after one warm-up (median)")
    p.add_argument("--fisher-windows", type=int, default=128)
    p.add_argument("--eval-windows", type=int, default=16)
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the f32 Fisher (default: off)")
    p.add_argument("--parts", default="fisher,eval,kmeans")
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if parts & {"fisher", "eval"} and not torch.cuda.is_available():
        raise SystemExit("fisher/eval parts need CUDA")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    try:
        config = LlamaConfig.from_pretrained(args.model, attn_implementation="sdpa")
    except TypeError:
        config = LlamaConfig.from_pretrained(args.model)
    try:
        config._attn_implementation = "sdpa"  # a property with a setter in transformers >= 4.36
    except AttributeError:
        pass
    n_layers = config.num_hidden_layers
    ckpt = Checkpoint(args.model)
    args.layers_timed = min(args.layers_timed, n_layers)

    report = {
        "model": args.model, "seqlen": args.seqlen, "n_layers": n_layers,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }
    t0 = time.perf_counter()
    if "fisher" in parts:
        report["fisher_torch"] = fisher_part(ckpt, config, args, n_layers)
        free()
    if "eval" in parts:
        report["eval_torch"] = eval_part(ckpt, config, args, n_layers)
        free()
    if "kmeans" in parts:
        report["kmeans_sklearn"] = kmeans_part(ckpt, config, args, n_layers)
    report["script_seconds"] = time.perf_counter() - t0
    print(json.dumps(report))


if __name__ == "__main__":
    main()
