#!/usr/bin/env bash
# Runs lutlab's benchmarks on the GPU device machine (no Rust there): a release `lutlab` built
# here travels xz-compressed in .carry/, and Vulkan's loader in .gl/ (see the device README).
#
# Here:   cargo build --release --workspace && mkdir -p .carry &&
#         strip -o .carry/lutlab $CARGO_TARGET_DIR/release/lutlab && xz -f .carry/lutlab
# Device: bash scripts/bench_device.sh      (carry .carry and .gl); JSON lines land in $OUT
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -d -k -f .carry/lutlab.xz && chmod +x .carry/lutlab
OUT=${OUT:-/tmp/lutlab-bench}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# Perplexity of the shipped model on WikiText-2 test and valid. The first run includes shader
# compilation; the second is the steady-state figure.
for run in cold warm; do
  .carry/lutlab eval --json | tee "$OUT/eval_test_$run.json"
done
.carry/lutlab eval --json --data data/wikitext-2/valid.txt | tee "$OUT/eval_valid.json"
