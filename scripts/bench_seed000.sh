#!/usr/bin/env bash
# Seed 000's table on the shipped model (issue 6): whole-tensor k-means at 4 and 3 bits, plain,
# Fisher-weighted, + scaling, + centering, + dense-and-sparse (SqueezeLLM's 0.45% + 0.05%), each
# packed and evaluated through the LUT kernels on WikiText-2 test. Carry .carry and .gl (see
# device_env.sh); JSON lands in $OUT.
set -euo pipefail
source scripts/device_env.sh
.carry/lutlab fisher --out /tmp/grads.safetensors --json > "$OUT/fisher.json"
# BITS="4 3" and GRANULARITIES="tensor" by default; e.g. GRANULARITIES="channel group:128".
for gran in ${GRANULARITIES:-tensor}; do
for bits in ${BITS:-4 3}; do
  run() {  # name, extra flags
    local out="$OUT/seed000_${bits}bit_${gran/:/}_$1.json"
    .carry/lutlab quantize --gpu --bits "$bits" --granularity "$gran" --packed "/tmp/q.safetensors" --eval --json "${@:2}" > "$out"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r['method'], round(r['bits_per_weight'],3), round(r['eval']['perplexity'],4), round(r['quantize_seconds'],2))" \
      "$out" "$1"
  }
  run plain
  run weighted --fisher /tmp/grads.safetensors
  run scaled --fisher /tmp/grads.safetensors --scaling
  run centered --fisher /tmp/grads.safetensors --scaling --centering
  run sparse --fisher /tmp/grads.safetensors --scaling --centering --outlier-percent 0.45 --sensitive 0.05
done
done
