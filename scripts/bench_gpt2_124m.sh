#!/usr/bin/env bash
# GPT-2 124M-shaped model (random weights: the real checkpoint is not reachable from the device)
# on the device: k-means of every linear weight on the GPU against sklearn (extrapolated from a
# sample of channels), then packed vs dense evaluation. Carry .carry (lutlab, xz) and .gl.
set -euo pipefail
source scripts/device_env.sh
M=/tmp/gpt2-124m
make_gpt2_124m "$M"
head -c 400000 data/wikitext-2/valid.txt > /tmp/valid400k.txt
# Sample weights for both sides: a Fisher diagonal of this model (8 windows of 1024 tokens).
.carry/lutlab fisher --model "$M" --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --out /tmp/g124.safetensors --json > "$OUT/fisher_124m.json"
# Per-channel k-means with 1, 3 and 10 k-means++ restarts (sklearn's n_init="auto" is 1), f32
# tables so that the objective comparison sees the tables as fitted.
for r in 1 3 10; do
  .carry/lutlab quantize --model "$M" --gpu --bits 4 --granularity channel --restarts $r --fisher /tmp/g124.safetensors \
    --packed /tmp/q4-r$r.safetensors --table-dtype f32 --json > "$OUT/quantize_gpu_124m_r$r.json"
  python3 scripts/bench_sklearn.py --model "$M" --channels 64 --fisher /tmp/g124.safetensors --packed /tmp/q4-r$r.safetensors > "$OUT/sklearn_124m_r$r.json"
  python3 - "$OUT" $r <<'PY'
import json, sys
out, r = sys.argv[1], sys.argv[2]
q = json.loads(open(f"{out}/quantize_gpu_124m_r{r}.json").read().strip().splitlines()[-1])
s = json.load(open(f"{out}/sklearn_124m_r{r}.json"))
print(json.dumps({"restarts": int(r), "gpu_kmeans_seconds": q["quantize_seconds"], "sklearn_seconds": s["extrapolated_seconds"],
                  "speedup": s["extrapolated_seconds"] / q["quantize_seconds"], "objective_ratio_mean": s["objective_ratio_mean"],
                  "objective_lower_or_equal_fraction": s["objective_lower_or_equal_fraction"]}))
PY
done
cp /tmp/q4-r10.safetensors /tmp/q4-124m.safetensors
.carry/lutlab quantize --model "$M" --gpu --bits 4 --granularity tensor --packed /tmp/q4t-124m.safetensors --json > "$OUT/quantize_gpu_tensor_124m.json"
head -c 200000 data/wikitext-2/test.txt > /tmp/test200k.txt
.carry/lutlab eval --model "$M" --data /tmp/test200k.txt --json | tee "$OUT/eval_dense_124m.json"
.carry/lutlab eval --packed /tmp/q4-124m.safetensors --data /tmp/test200k.txt --json | tee "$OUT/eval_packed_124m.json"
