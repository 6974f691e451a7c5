#!/usr/bin/env bash
# Issue 23, item 1: burn's shader compilers on the device, measured in one run. The same lutlab
# built twice: `.carry/lutlab` (WGSL through naga, what every build ships) and
# `.carry/lutlab-vk` (`cargo build --release -p lutlab-cli --features vulkan`: cubecl's SPIR-V
# compiler, picked on Vulkan adapters with the memory model, which gives f16 matmuls cooperative
# matrices; our WGSL kernels do not run on it, so that build is for dense paths only). Each runs
#   1. `bench model-ops`: the model's matmul in f32 and with f16 operands, and cubek's routines,
#      at GPT-2 124M's evaluation shapes and 512 × 4096 × 11008;
#   2. dense evaluation of a GPT-2 124M-shaped model (window 1024, GPTQ's protocol, 100,000
#      characters of WikiText-2 test) in f32 and f16, warm (second of two runs);
#   3. Fisher (per-sample squared gradients, 8 windows of 1024, 4 per pass);
# beside PyTorch eager on the same model and text (scripts/eval_peer.py, scripts/fisher_peer.py).
# JSON rows in $OUT.
#
# Here:   build both (see above), then strip + xz each into .carry/ (lutlab.xz, lutlab-vk.xz).
# Device (carry [".carry/lutlab.xz", ".carry/lutlab-vk.xz", ".gl"]): bash scripts/bench_backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
xz -d -k -f .carry/lutlab-vk.xz && chmod +x .carry/lutlab-vk
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
model=/tmp/gpt2-124m
[ -f "$model/model.safetensors" ] || make_gpt2_124m "$model"
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
tag() { python3 -c "import json,sys; r=json.loads(sys.stdin.readlines()[-1]); r.update(dict(a.split('=',1) for a in sys.argv[1:])); print(json.dumps(r))" "$@"; }
for build in lutlab lutlab-vk; do
  ".carry/$build" bench model-ops --iters 50 --json > "$OUT/model-ops-$build.json" || echo "model-ops failed on $build" | tee -a "$OUT/errors.txt"
  for dtype in f32 f16; do
    for round in cold warm; do
      ".carry/$build" eval --model "$model" --data /tmp/test100k.txt --max-length 1024 --stride 1024 --dtype "$dtype" --json 2>>"$OUT/errors.txt" \
        | tag build=$build round=$round | tee -a "$OUT/eval.jsonl" || echo "eval $dtype failed on $build" | tee -a "$OUT/errors.txt"
    done
  done
  for round in cold warm; do
    ".carry/$build" fisher --model "$model" --data data/wikitext-2/valid.txt --seqlen 1024 --nsamples 8 --micro-batch 4 --out /tmp/f.safetensors --json 2>>"$OUT/errors.txt" \
      | tag build=$build round=$round | tee -a "$OUT/fisher.jsonl" || echo "fisher failed on $build" | tee -a "$OUT/errors.txt"
  done
done
python3 scripts/eval_peer.py --model "$model" --data /tmp/test100k.txt --max-length 1024 --stride 1024 > "$OUT/eval_peer.json"
python3 scripts/fisher_peer.py --model "$model" --data data/wikitext-2/valid.txt --nsamples 8 --seqlen 1024 > "$OUT/fisher_peer.json"
