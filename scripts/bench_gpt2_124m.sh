#!/usr/bin/env bash
# GPT-2 124M-shaped model (random weights: the real checkpoint is not reachable from the device)
# on the device: k-means of every linear weight on the GPU against sklearn (extrapolated from a
# sample of channels), then packed vs dense evaluation. Carry .carry (lutlab, xz) and .gl.
set -euo pipefail
source scripts/device_env.sh
M=/tmp/gpt2-124m
make_gpt2_124m "$M"
.carry/lutlab quantize --model "$M" --gpu --bits 4 --granularity channel --packed /tmp/q4-124m.safetensors --json > "$OUT/quantize_gpu_124m.json"
.carry/lutlab quantize --model "$M" --gpu --bits 4 --granularity tensor --packed /tmp/q4t-124m.safetensors --json > "$OUT/quantize_gpu_tensor_124m.json"
python3 scripts/bench_sklearn.py --model "$M" --channels 64 | tee "$OUT/sklearn_124m.json"
head -c 200000 data/wikitext-2/test.txt > /tmp/test200k.txt
.carry/lutlab eval --model "$M" --data /tmp/test200k.txt --json | tee "$OUT/eval_dense_124m.json"
.carry/lutlab eval --packed /tmp/q4-124m.safetensors --data /tmp/test200k.txt --json | tee "$OUT/eval_packed_124m.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
q = json.load(open(f"{out}/quantize_gpu_124m.json"))
s = json.load(open(f"{out}/sklearn_124m.json"))
print(json.dumps({"gpu_kmeans_seconds": q["quantize_seconds"], "sklearn_seconds": s["extrapolated_seconds"],
                  "speedup": s["extrapolated_seconds"] / q["quantize_seconds"]}))
PY
