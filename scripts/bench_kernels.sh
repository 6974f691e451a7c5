#!/usr/bin/env bash
# LUT GEMV against dense GEMV, the copy ceiling and PyTorch (cuBLAS) on the device, in one run;
# then the shipped model evaluated dense and packed. Carry .carry and .gl (see device_env.sh);
# JSON lands in $OUT.
set -euo pipefail
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
SHAPES=${SHAPES:-768x2304,768x3072,3072x768,4096x4096,4096x11008,11008x4096}
.carry/lutlab bench kernels --shapes "$SHAPES" --iters 500 | tee "$OUT/kernels.txt"
.carry/lutlab bench kernels --shapes "$SHAPES" --iters 500 --json > "$OUT/kernels.json"
python3 scripts/bench_peers.py --shapes "$SHAPES" --iters 500 | tee "$OUT/peers.json"

# The shipped model: dense f32, then 4-bit per-channel k-means packed through the LUT kernels.
.carry/lutlab eval --json > "$OUT/eval_dense_cold.json"
.carry/lutlab eval --json | tee "$OUT/eval_dense.json"
.carry/lutlab quantize --bits 4 --granularity channel --packed /tmp/q4.safetensors --json > "$OUT/quantize_q4.json"
.carry/lutlab eval --packed /tmp/q4.safetensors --json > "$OUT/eval_packed_cold.json"
.carry/lutlab eval --packed /tmp/q4.safetensors --json | tee "$OUT/eval_packed.json"
.carry/lutlab export --dequantized --packed /tmp/q4.safetensors --out /tmp/q4dense > /dev/null
.carry/lutlab eval --model /tmp/q4dense --json | tee "$OUT/eval_q4_dequantized.json"
