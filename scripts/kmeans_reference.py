#!/usr/bin/env python3
"""Independent k-means references for lutlab's LUT quantizers (issue 6).

Writes tests/fixtures/kmeans_reference.json with, on real tensors of the shipped model:

* per-channel tables: for a few output channels (columns of GPT-2's Conv1D [in, out] weights) of
  `h.0.mlp.c_fc.weight` and `h.1.attn.c_proj.weight`, the column values, their sample weights, and
  the objective (inertia) of scikit-learn's `KMeans` called as SqueezeLLM's `nuq.py` calls it
  (`n_clusters=16, random_state=0, n_init="auto", max_iter=50`, `fit(X, sample_weight=...)`), plus
  scikit-learn's best of 10 restarts and the exact optimum from the DP below;
* whole-tensor tables: for both tensors at 4 and 3 bits, the exact optimal weighted k-means
  objective from a pure-numpy dynamic programme (and nuq.py-style scikit-learn for comparison).

Sample weights are deterministic and stand in for Fisher values: float32(float64(w)**2 + 1e-3),
computed from the float32 value of each f16 weight. For columns they are written into the fixture;
for whole tensors the Rust test recomputes them with the same formula (same IEEE operations).

The DP is written from the definition, independently of lutlab's Rust code: over the sorted
distinct values (repeats merged, weights summed), D[m][j] = min_i D[m-1][i] + cost(i, j) with
cost from prefix sums; the leftmost optimal i is monotone in j, so each layer is solved by
divide and conquer. The script first checks that against the plain O(k n^2) DP on random data.

scikit-learn runs on float64 inputs (nuq.py passes float32; float64 gives a precise objective).
The objective of every method is recomputed here in float64 as sum w (x - c[label])^2.

Run: pip install numpy scikit-learn; python3 scripts/kmeans_reference.py  (CPU, about a minute).
"""

import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.cluster import KMeans

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/gpt2-tiny-wikitext/model.safetensors"
OUT = ROOT / "tests/fixtures/kmeans_reference.json"

COLUMNS = {
    "h.0.mlp.c_fc.weight": [0, 1, 17, 100, 255, 256, 400, 511],
    "h.1.attn.c_proj.weight": [0, 5, 31, 64, 100, 127],
}
K = 16


def read_safetensors(path):
    """name -> float32 array, parsing the header by hand (F16/BF16/F32 only)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = data[start:end]
        if info["dtype"] == "F16":
            arr = np.frombuffer(buf, dtype="<f2").astype(np.float32)
        elif info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4").astype(np.float32)
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        canonical = name[len("transformer.") :] if name.startswith("transformer.") else name
        tensors[canonical] = arr.reshape(info["shape"])
    return tensors


def sample_weights(x):
    return (x.astype(np.float64) ** 2 + 1e-3).astype(np.float32)


def objective(x, w, centers, labels):
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    return float(np.sum(w * (x - np.asarray(centers, dtype=np.float64)[labels]) ** 2))


def merge(x, w):
    """Sorted distinct values with positive summed weight."""
    uniq, inv = np.unique(x.astype(np.float64), return_inverse=True)
    wsum = np.bincount(inv.reshape(-1), weights=w.astype(np.float64).reshape(-1), minlength=len(uniq))
    keep = wsum > 0
    return uniq[keep], wsum[keep]


class Prefix:
    def __init__(self, x, w):
        d = x - np.sum(w * x) / np.sum(w)  # centred: avoids cancellation in Q - S^2/W
        self.p0 = np.concatenate([[0.0], np.cumsum(w)])
        self.p1 = np.concatenate([[0.0], np.cumsum(w * d)])
        self.p2 = np.concatenate([[0.0], np.cumsum(w * d * d)])

    def cost(self, i, j):
        """Cost of values i..j-1 around their weighted mean (numpy broadcasting over i, j)."""
        wt = self.p0[j] - self.p0[i]
        s = self.p1[j] - self.p1[i]
        q = self.p2[j] - self.p2[i]
        return np.maximum(q - s * s / wt, 0.0)


def optimal_dc(x, w, k):
    """Exact optimal weighted 1-D k-means objective, divide-and-conquer DP."""
    x, w = merge(x, w)
    n = len(x)
    if n <= k:
        return 0.0
    pre = Prefix(x, w)
    prev = np.full(n + 1, np.inf)
    prev[1:] = pre.cost(0, np.arange(1, n + 1))
    for m in range(2, k + 1):
        cur = np.full(n + 1, np.inf)
        jlo, jhi = m, n - (k - m)
        stack = [(jlo, jhi, m - 1, jhi - 1)]
        while stack:
            a, b, ilo, ihi = stack.pop()
            if a > b:
                continue
            mid = (a + b) // 2
            i = np.arange(ilo, min(ihi, mid - 1) + 1)
            v = prev[i] + pre.cost(i, mid)
            t = int(np.argmin(v))  # first minimum = leftmost optimal split
            cur[mid] = v[t]
            arg = int(i[t])
            stack.append((a, mid - 1, ilo, arg))
            stack.append((mid + 1, b, arg, ihi))
        prev = cur
    return float(prev[n])


def optimal_plain(x, w, k):
    """The same optimum by the plain O(k n^2) DP (self-check of optimal_dc)."""
    x, w = merge(x, w)
    n = len(x)
    if n <= k:
        return 0.0
    pre = Prefix(x, w)
    prev = np.full(n + 1, np.inf)
    prev[0] = 0.0
    for _ in range(k):
        cur = np.full(n + 1, np.inf)
        for j in range(1, n + 1):
            i = np.arange(0, j)
            cur[j] = np.min(prev[i] + pre.cost(i, j))
        prev = cur
    return float(prev[n])


def sklearn_fit(x, w, k=K, **kw):
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, random_state=0, **kw).fit(x.astype(np.float64).reshape(-1, 1), sample_weight=w.astype(np.float64))
    seconds = time.perf_counter() - t0
    return km, objective(x, w, km.cluster_centers_.reshape(-1), km.labels_), seconds


def self_check():
    rng = np.random.default_rng(0)
    for n, k in [(60, 3), (200, 5), (150, 16)]:
        x = rng.standard_normal(n).astype(np.float32)
        x[: n // 10] = x[n // 10 : 2 * (n // 10)]  # repeats, to exercise merging
        w = rng.exponential(size=n).astype(np.float32)
        a, b = optimal_dc(x, w, k), optimal_plain(x, w, k)
        assert abs(a - b) <= 1e-9 * max(1.0, b), (n, k, a, b)
    print("self-check: divide-and-conquer DP == plain DP on random data")


def main():
    self_check()
    tensors = read_safetensors(MODEL)
    columns = []
    for name, cols in COLUMNS.items():
        t = tensors[name]
        for c in cols:
            x = np.ascontiguousarray(t[:, c])
            w = sample_weights(x)
            km, sk_obj, sk_s = sklearn_fit(x, w, n_init="auto", max_iter=50)
            _, best10, _ = sklearn_fit(x, w, n_init=10, max_iter=300)
            opt = optimal_dc(x, w, K)
            columns.append(
                {
                    "tensor": name,
                    "shape": list(t.shape),
                    "column": c,
                    "values": [float(v) for v in x],
                    "sample_weights": [float(v) for v in w],
                    "sklearn_inertia": float(km.inertia_),
                    "sklearn_objective": sk_obj,
                    "sklearn_seconds": sk_s,
                    "sklearn_best_of_10_objective": best10,
                    "optimal_objective": opt,
                }
            )
            print(f"{name}[:, {c}]: sklearn {sk_obj:.6e}  best-of-10 {best10:.6e}  optimum {opt:.6e}")
    whole = []
    for name in COLUMNS:
        t = tensors[name]
        x = t.reshape(-1)
        w = sample_weights(x)
        for bits in (4, 3):
            t0 = time.perf_counter()
            opt = optimal_dc(x, w, 1 << bits)
            dp_s = time.perf_counter() - t0
            _, sk_obj, sk_s = sklearn_fit(x, w, k=1 << bits, n_init="auto", max_iter=50)
            whole.append(
                {
                    "tensor": name,
                    "shape": list(t.shape),
                    "bits": bits,
                    "count": int(x.size),
                    "distinct": int(len(np.unique(x))),
                    "sum_values": float(np.sum(x.astype(np.float64))),
                    "sum_sample_weights": float(np.sum(w.astype(np.float64))),
                    "optimal_objective": opt,
                    "optimal_seconds_numpy": dp_s,
                    "sklearn_objective": sk_obj,
                    "sklearn_seconds": sk_s,
                }
            )
            print(f"{name} whole tensor {bits}-bit: optimum {opt:.6e} ({dp_s:.1f} s numpy DP), nuq-style sklearn {sk_obj:.6e}")
    fixture = {
        "generator": "scripts/kmeans_reference.py",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "model": "models/gpt2-tiny-wikitext/model.safetensors",
        "sample_weight_formula": "float32(float64(w)**2 + 1e-3)",
        "k": 16,
        "sklearn_call": 'KMeans(n_clusters=16, random_state=0, n_init="auto", max_iter=50).fit(float64 X, sample_weight=...)',
        "columns": columns,
        "whole_tensors": whole,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
