"""The peer of GPU k-means (issue 6/10): scikit-learn's weighted KMeans called as SqueezeLLM's
nuq.py calls it, one output channel at a time, timed on a sample of the channels of a GPT-2
checkpoint and extrapolated to all its linear weights. Prints one JSON object.

    python3 scripts/bench_sklearn.py --model /tmp/gpt2-124m --channels 64 \
        [--fisher grads.safetensors] [--packed lutlab.safetensors]

--fisher: sample weights from a Fisher file (same names and shapes as the model, as nuq.py reads
SqueezeLLM's gradient checkpoint); without it, |w|² + 1e-3 stands in (the cost does not depend on
it). --packed: a per-channel `lutlab quantize --packed` result of the same model with the same
sample weights; its tables and codes are decoded (docs/FORMAT.md, section 3) for the timed
channels and its weighted objective Σ f·(w − table[code])² is compared with sklearn's inertia on
each of them: the "equal or lower objective" half of the goal.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
from sklearn.cluster import KMeans

KINDS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def decode_column(qweight, rows, cols, bits, c):
    """Codes of column c of a packed layer (FORMAT.md section 3), as an int array of `rows`."""
    codes = np.empty(rows, dtype=np.int64)
    mask = (1 << bits) - 1
    for r in range(rows):
        k, i = divmod(r, 32)
        j, s = divmod(i * bits, 32)
        v = int(qweight[(k * bits + j), c]) >> s
        if s + bits > 32:
            v |= int(qweight[(k * bits + j + 1), c]) << (32 - s)
        codes[r] = v & mask
    return codes


class Packed:
    """The per-channel tables and codes of a lutlab packed file."""

    def __init__(self, path):
        self.file = safe_open(path, framework="numpy")
        self.layers = json.loads(self.file.metadata()["layers"])

    def channel(self, layer, c):
        info = self.layers[layer]
        if info["channels_per_table"] != 1:
            raise SystemExit(f"{layer}: --packed needs per-channel tables")
        if f"{layer}.sparse_values" in self.file.keys() or f"{layer}.scales" in self.file.keys():
            raise SystemExit(f"{layer}: --packed needs plain k-means (no outliers, no scaling)")
        qweight = self.file.get_slice(f"{layer}.qweight")[:, c:c + 1]
        codes = decode_column(qweight, info["rows"], 1, info["bits"], 0)
        table = self.file.get_slice(f"{layer}.lut")[c:c + 1].astype(np.float64)[0]
        return table[codes]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64, help="channels timed per linear kind")
    parser.add_argument("--fisher")
    parser.add_argument("--packed")
    args = parser.parse_args()
    tensors = load_file(str(Path(args.model) / "model.safetensors"))
    fisher = load_file(args.fisher) if args.fisher else None
    packed = Packed(args.packed) if args.packed else None
    rng = np.random.default_rng(0)
    total_seconds, total_channels, per_kind = 0.0, 0, {}
    ratios = []
    for kind in KINDS:
        names = sorted(n for n in tensors if n.endswith(f"{kind}.weight"))
        name = names[0]
        w = tensors[name].astype(np.float32)  # Conv1D [in, out]: a channel is a column
        f = None
        if fisher is not None:
            key = name.removeprefix("transformer.")
            f = fisher.get(key, fisher.get(name))
            if f is None:
                raise SystemExit(f"{args.fisher} has no tensor {key}")
        sample = rng.choice(w.shape[1], size=min(args.channels, w.shape[1]), replace=False)
        seconds, inertia = 0.0, {}
        for c in sample:
            x = w[:, c].astype(np.float64).reshape(-1, 1)
            weight = f[:, c].astype(np.float64) if f is not None else x.reshape(-1) ** 2 + 1e-3
            start = time.perf_counter()
            km = KMeans(n_clusters=2 ** args.bits, random_state=0, n_init="auto", max_iter=50).fit(x, sample_weight=weight)
            seconds += time.perf_counter() - start
            inertia[int(c)] = (km.inertia_, weight)
        seconds /= len(sample)
        channels = w.shape[1] * len(names)
        entry = {"rows": int(w.shape[0]), "seconds_per_channel": seconds, "channels": channels, "layer": name}
        if packed is not None:
            layer = name.removeprefix("transformer.").removesuffix(".weight")
            kind_ratios = []
            for c, (sk, weight) in inertia.items():
                lut = packed.channel(layer, c)
                ours = float(np.sum(weight * (w[:, c].astype(np.float64) - lut) ** 2))
                kind_ratios.append(ours / sk if sk > 0 else 1.0)
            entry["objective_ratio_median"] = float(np.median(kind_ratios))
            entry["objective_ratio_max"] = float(np.max(kind_ratios))
            entry["objective_lower_or_equal_fraction"] = float(np.mean(np.array(kind_ratios) <= 1 + 1e-6))
            ratios += kind_ratios
        per_kind[kind] = entry
        total_seconds += seconds * channels
        total_channels += channels
    report = {"model": args.model, "bits": args.bits, "fisher": args.fisher, "per_kind": per_kind,
              "channels": total_channels, "extrapolated_seconds": total_seconds}
    if ratios:
        report["objective_ratio_mean"] = float(np.mean(ratios))
        report["objective_ratio_median"] = float(np.median(ratios))
        report["objective_lower_or_equal_fraction"] = float(np.mean(np.array(ratios) <= 1 + 1e-6))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
