#!/usr/bin/env bash
# Runs lutlab's benchmarks on the GPU device machine (carry .carry and .gl; see device_env.sh).
# Device: bash scripts/bench_device.sh; JSON lines land in $OUT
set -euo pipefail
source scripts/device_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# Perplexity of the shipped model on WikiText-2 test and valid. The first run includes shader
# compilation; the second is the steady-state figure.
for run in cold warm; do
  .carry/lutlab eval --json | tee "$OUT/eval_test_$run.json"
done
.carry/lutlab eval --json --data data/wikitext-2/valid.txt | tee "$OUT/eval_valid.json"
