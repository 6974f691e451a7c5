#!/usr/bin/env python3
"""The Fisher-weighting question (issue 21, item 4): helpers for scripts/fisher_weighting.sh.

    python3 scripts/fisher_weighting.py variant  IN.safetensors OUT.safetensors damp:0.1|clip:99|sqrt
    python3 scripts/fisher_weighting.py score    MODEL_DIR DEQUANT_DIR NAME=FISHER.safetensors ...
    python3 scripts/fisher_weighting.py sklearn  MODEL_DIR FISHER.safetensors BITS OUT_DIR

`variant` writes a modified Fisher file (same names and shapes): `damp:L` adds L times each
layer's mean Fisher value to every entry (the weights move towards plain k-means), `clip:P`
clips each layer at its P-th percentile (a few huge values stop owning a table), `sqrt` takes
the square root (a softer weighting).

`score` prints one JSON object: for a dequantized checkpoint (`lutlab quantize --out`) and the
original model, the quantization error of the blocks' linear weights summed over every layer,
plain Σ(w−q)² and Σ F·(w−q)² for each named Fisher file. With a Fisher from held-out text this
is the out-of-sample value of the objective the weighted k-means minimised in-sample.

`sklearn` is the independent reference of the weighted per-channel k-means: scikit-learn's
`KMeans(n_clusters=2^BITS, n_init="auto", random_state=0)` fitted with `sample_weight=F` on every
output channel of every linear, as SqueezeLLM's nuq.py calls it, written as a dequantized
checkpoint (OUT_DIR/model.safetensors, f32, config and tokenizer files copied) for `lutlab eval`.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def linear_names(fisher):
    """The Fisher file's tensors are the blocks' linear weights (lutlab fisher writes only those)."""
    return sorted(n for n, t in fisher.items() if t.ndim == 2)


def key_of(tensors, name):
    """The key of `name` in `tensors`, allowing for a prefix one side has and the other not
    (GPT-2 checkpoints store `transformer.h.0...`, lutlab may write `h.0...`)."""
    if name in tensors:
        return name
    found = [k for k in tensors if k.endswith("." + name) or name.endswith("." + k)]
    if len(found) != 1:
        raise SystemExit(f"{name}: {len(found)} matching tensors")
    return found[0]


def lookup(tensors, name):
    return tensors[key_of(tensors, name)]


def variant(src, dst, how):
    fisher = load_file(src)
    out = {}
    for name, f in fisher.items():
        f = f.astype(np.float64)
        if how.startswith("damp:"):
            f = f + float(how[5:]) * f.mean()
        elif how.startswith("clip:"):
            f = np.minimum(f, np.percentile(f, float(how[5:])))
        elif how == "sqrt":
            f = np.sqrt(f)
        else:
            raise SystemExit(f"unknown variant {how!r} (damp:L, clip:P, sqrt)")
        out[name] = f.astype(np.float32)
    save_file(out, dst)


def score(model_dir, dequant_dir, fishers):
    original = load_file(str(Path(model_dir) / "model.safetensors"))
    quantized = load_file(str(Path(dequant_dir) / "model.safetensors"))
    loaded = {name: load_file(path) for name, path in fishers}
    names = linear_names(next(iter(loaded.values())))
    result = {"plain": 0.0, **{name: 0.0 for name in loaded}}
    for n in names:
        w = lookup(original, n).astype(np.float64)
        q = lookup(quantized, n).astype(np.float64)
        if w.shape != q.shape:
            raise SystemExit(f"{n}: shape {w.shape} in the model, {q.shape} dequantized")
        d2 = (w - q) ** 2
        result["plain"] += float(d2.sum())
        for name, fisher in loaded.items():
            result[name] += float((lookup(fisher, n).astype(np.float64) * d2).sum())
    print(json.dumps(result))


def channels_axis(config):
    """Output channels' axis of a stored weight: GPT-2's Conv1D is [in, out], HF Linear [out, in]."""
    return 1 if config.get("model_type") == "gpt2" else 0


def sklearn_kmeans(model_dir, fisher_path, bits, out_dir):
    from sklearn.cluster import KMeans

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text())
    axis = channels_axis(config)
    weights = {n: t.astype(np.float32) for n, t in load_file(str(model_dir / "model.safetensors")).items()}
    fisher = load_file(fisher_path)
    for n in linear_names(fisher):
        key = key_of(weights, n)
        w = weights[key]
        f = fisher[n]
        wc, fc = (w.T, f.T) if axis == 1 else (w, f)  # rows = output channels
        q = np.empty_like(wc)
        for c in range(wc.shape[0]):
            x = wc[c].astype(np.float64).reshape(-1, 1)
            km = KMeans(n_clusters=2**bits, n_init="auto", random_state=0, max_iter=50)
            km.fit(x, sample_weight=fc[c].astype(np.float64))
            q[c] = km.cluster_centers_[km.labels_, 0].astype(np.float32)
        weights[key] = np.ascontiguousarray(q.T if axis == 1 else q)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_dir / "model.safetensors"))
    for f in model_dir.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, out_dir / f.name)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "variant":
        variant(*args)
    elif command == "score":
        score(args[0], args[1], [a.split("=", 1) for a in args[2:]])
    elif command == "sklearn":
        sklearn_kmeans(args[0], args[1], int(args[2]), args[3])
    else:
        raise SystemExit(__doc__)
