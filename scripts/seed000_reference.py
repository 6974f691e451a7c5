#!/usr/bin/env python3
"""Independent reference for seed 000's *scaling* (docs/SEED000.md) on real tensors.

Seed 000 (smpanaro/apple-silicon-4bit-quant, `ClusterFriendlyLinear._cluster_based_scales` and
`_update_scales`) gives every output channel of a linear layer the scale

    s_c = flip_c * std(W_c),   std unbiased (torch.Tensor.std, ddof = 1), stored as float32,
    flip_c = -1 if |min(centroids_c)| > max(centroids_c) else +1,

where centroids_c are the optimal weighted 1-D k-means centroids (`kmeans1d.cluster(row, 2**nbits,
weights=fisher_row)`, an exact DP) of that channel's weights with its Fisher values as weights
(ones without weighting). The weight is then divided by s_c before whole-tensor k-means.

This script recomputes that from the definition, in numpy only, for a few matrices of the shipped
model (GPT-2 Conv1D layout [in, out]: an output channel is a column), with the Fisher diagonal of
tests/fixtures/fisher_reference.safetensors (PyTorch, blocks 0 and 3) where given, and writes
tests/fixtures/seed000_scales.json. The k-means is a plain O(k n^2) dynamic programme over the
sorted points of positive weight (points of weight 0 are left out; a column whose weights are all
0 gets flip +1, which is what the reference's all-NaN centroids give), written here from the
definition and checked against brute force on small random data first.

Run: python3 scripts/seed000_reference.py   (numpy only; a few seconds)
"""

import itertools
import json
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/gpt2-tiny-wikitext/model.safetensors"
FISHER = ROOT / "tests/fixtures/fisher_reference.safetensors"
OUT = ROOT / "tests/fixtures/seed000_scales.json"

# (layer, Fisher weighting?, bits)
CASES = [
    ("h.0.attn.c_attn", True, 4),
    ("h.3.mlp.c_proj", True, 4),
    ("h.1.attn.c_proj", False, 4),
    ("h.2.mlp.c_fc", False, 3),
]


def read_safetensors(path):
    """name -> float32 array (F16/F32), header parsed by hand; `transformer.` prefix dropped."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = {"F16": "<f2", "F32": "<f4"}.get(info["dtype"])
        if dtype is None:
            continue
        arr = np.frombuffer(data[a:b], dtype=dtype).astype(np.float32).reshape(info["shape"])
        out[name.removeprefix("transformer.")] = arr
    return out


def kmeans_extremes(x, w, k):
    """(lowest, highest) centroid of the optimal weighted k-means of 1-D x into k clusters."""
    keep = w > 0
    x, w = x[keep].astype(np.float64), w[keep].astype(np.float64)
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    n = len(x)
    if len(np.unique(x)) <= k:
        return x[0], x[-1]
    mean = np.sum(w * x) / np.sum(w)
    d = x - mean
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cs = np.concatenate([[0.0], np.cumsum(w * d)])
    cq = np.concatenate([[0.0], np.cumsum(w * d * d)])
    i = np.arange(n + 1)[:, None]
    j = np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        W = cw[j] - cw[i]
        S = cs[j] - cs[i]
        cost = np.maximum(cq[j] - cq[i] - S * S / W, 0.0)
    cost[~(i < j)] = np.inf  # cost[i, j]: points i..j-1 as one cluster
    D = cost[0].copy()  # D[j]: best cost of the first j points in 1 cluster
    back = []
    for _ in range(1, k):
        total = D[:, None] + cost  # split at i: first i points in m clusters, i..j-1 in one
        arg = np.argmin(total, axis=0)
        D = total[arg, np.arange(n + 1)]
        back.append(arg)
    # Backtrack the ends of the last and first clusters.
    ends = [n]
    for arg in reversed(back):
        ends.append(arg[ends[-1]])
    ends.append(0)
    bounds = ends[::-1]  # 0 = b0 < b1 < ... < bk = n
    lo = slice(bounds[0], bounds[1])
    hi = slice(bounds[-2], bounds[-1])
    centroid = lambda s: np.sum(w[s] * x[s]) / np.sum(w[s])
    return centroid(lo), centroid(hi)


def brute_force_extremes(x, w, k):
    keep = w > 0
    x, w = x[keep].astype(np.float64), w[keep].astype(np.float64)
    order = np.argsort(x)
    x, w = x[order], w[order]
    n = len(x)
    best = None
    for cuts in itertools.combinations(range(1, n), k - 1):
        b = (0,) + cuts + (n,)
        total, cents = 0.0, []
        for a, c in zip(b, b[1:]):
            m = np.sum(w[a:c] * x[a:c]) / np.sum(w[a:c])
            total += np.sum(w[a:c] * (x[a:c] - m) ** 2)
            cents.append(m)
        if best is None or total < best[0] - 1e-15:
            best = (total, cents[0], cents[-1])
    return best[1], best[2]


def self_check():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n, k = rng.integers(5, 11), rng.integers(2, 5)
        x = rng.standard_normal(n) ** 3
        w = rng.exponential(size=n)
        a = kmeans_extremes(x, w, k)
        b = brute_force_extremes(x, w, k)
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), (trial, a, b)


def scales(weight, fisher, bits):
    rows, cols = weight.shape
    k = 2**bits
    std = np.std(weight.astype(np.float64), axis=0, ddof=1).astype(np.float32)
    out, margins = [], []
    for c in range(cols):
        w = fisher[:, c] if fisher is not None else np.ones(rows)
        if not np.any(w > 0):
            flip, margin = 1.0, float("inf")
        else:
            lo, hi = kmeans_extremes(weight[:, c], w, k)
            flip = -1.0 if abs(lo) > hi else 1.0
            margin = abs(abs(lo) - hi) / max(abs(lo), abs(hi))
        s = np.float32(flip) * std[c]
        out.append(float(s) if std[c] > 0 and np.isfinite(std[c]) else 1.0)
        margins.append(margin)
    return out, margins


def main():
    self_check()
    model = read_safetensors(MODEL)
    fisher = read_safetensors(FISHER)
    layers = []
    for name, weighted, bits in CASES:
        weight = model[f"{name}.weight"]
        f = fisher[f"{name}.weight"] if weighted else None
        if f is not None:
            assert f.shape == weight.shape
        s, margins = scales(weight, f, bits)
        negative = sum(v < 0 for v in s)
        print(f"{name}: {weight.shape}, fisher={weighted}, bits={bits}: {negative}/{len(s)} negative, "
              f"smallest sign margin {min(margins):.3e}")
        layers.append({
            "name": name,
            "rows": weight.shape[0],
            "cols": weight.shape[1],
            "bits": bits,
            "fisher": f"tests/fixtures/fisher_reference.safetensors:transformer.{name}.weight" if weighted else None,
            "scales": s,
            "sign_margins": margins,
        })
    OUT.write_text(json.dumps({
        "format": "lutlab-seed000-scales",
        "script": "scripts/seed000_reference.py",
        "model": "models/gpt2-tiny-wikitext",
        "numpy": np.__version__,
        "definition": "s_c = (-1 if |c_min| > c_max else 1) * std(W[:, c], ddof=1) as float32; "
                      "c_min/c_max: lowest/highest centroid of the optimal weighted 1-D k-means "
                      "(2^bits clusters) of column c with its Fisher values (or ones)",
        "layers": layers,
    }, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
