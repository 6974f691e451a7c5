"""The peer of GPU k-means (issue 6/10): scikit-learn's weighted KMeans called as SqueezeLLM's
nuq.py calls it, one output channel at a time, timed on a sample of the channels of a GPT-2
checkpoint and extrapolated to all its linear weights. Prints one JSON object.

    python3 scripts/bench_sklearn.py --model /tmp/gpt2-124m --channels 64
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sklearn.cluster import KMeans


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--channels", type=int, default=64, help="channels timed per linear kind")
    args = parser.parse_args()
    tensors = load_file(str(Path(args.model) / "model.safetensors"))
    kinds = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    rng = np.random.default_rng(0)
    total_seconds, total_channels, per_kind = 0.0, 0, {}
    for kind in kinds:
        names = [n for n in tensors if n.endswith(f"{kind}.weight")]
        w = tensors[names[0]].astype(np.float32)  # Conv1D [in, out]: a channel is a column
        sample = rng.choice(w.shape[1], size=min(args.channels, w.shape[1]), replace=False)
        start = time.perf_counter()
        for c in sample:
            x = w[:, c].astype(np.float64).reshape(-1, 1)
            weight = x.reshape(-1) ** 2 + 1e-3  # stands in for a Fisher diagonal; cost does not depend on it
            KMeans(n_clusters=2 ** args.bits, random_state=0, n_init="auto", max_iter=50).fit(x, sample_weight=weight)
        seconds = (time.perf_counter() - start) / len(sample)
        channels = w.shape[1] * len(names)
        per_kind[kind] = {"rows": int(w.shape[0]), "seconds_per_channel": seconds, "channels": channels}
        total_seconds += seconds * channels
        total_channels += channels
    print(json.dumps({"model": args.model, "bits": args.bits, "per_kind": per_kind,
                      "channels": total_channels, "extrapolated_seconds": total_seconds}))


if __name__ == "__main__":
    main()
