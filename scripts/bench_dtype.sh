#!/usr/bin/env bash
# Half precision on the device (issue 17, item 3): `lutlab eval --dtype f32|f16`, each a fresh
# process, JSON rows in $OUT:
#   1. a GPT-2 124M-shaped model (random weights; the real checkpoint is not reachable from the
#      device) on WikiText-2 test at window 1024 (GPTQ's protocol), cold then warm;
#   2. a Llama-2-7B-shaped model (scripts/make_llama7b_shaped.py, random f16 weights) on the first
#      140,000 characters of WikiText-2 test at window 2048, resident (--no-stream) and streamed,
#      with peak GPU memory (nvidia-smi every 200 ms) and GNU time's peak host memory.
#
# Device (carry [".carry/lutlab.xz", ".gl"]): bash scripts/bench_dtype.sh   (PART=1 or PART=2 for one)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
LUTLAB=.carry/lutlab
if [ "${PART:-1}" = 1 ] || [ -z "${PART:-}" ]; then
  model=/tmp/gpt2-124m
  [ -f "$model/model.safetensors" ] || make_gpt2_124m "$model"
  for round in cold warm; do
    for dtype in f32 f16; do
      "$LUTLAB" eval --model "$model" --max-length 1024 --stride 1024 --dtype "$dtype" --json \
        | python3 -c "import json,sys; r=json.load(sys.stdin); r['round']='$round'; print(json.dumps(r))" | tee -a "$OUT/dtype.jsonl"
    done
  done
fi
if [ "${PART:-2}" = 2 ] || [ -z "${PART:-}" ]; then
  model=/tmp/l7b
  [ -d "$model" ] || python3 scripts/make_llama7b_shaped.py --out "$model" > "$OUT/make.log" 2>&1
  python3 -c "open('/tmp/t32.txt','w').write(open('data/wikitext-2/test.txt').read()[:140000])"
  for mode in --no-stream --stream; do
    for dtype in f32 f16; do
      name="7b${mode}-$dtype"
      /usr/bin/time -v "$LUTLAB" eval --model "$model" $mode --data /tmp/t32.txt --max-length 2048 --stride 2048 --dtype "$dtype" --json > "$OUT/$name.json" 2> "$OUT/$name.time" &
      pid=$!; peak=0
      while kill -0 $pid 2>/dev/null; do
        m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1); [ "$m" -gt "$peak" ] && peak=$m; sleep 0.2
      done
      echo "$name gpu_peak_mib $peak $(grep -E 'Maximum resident' "$OUT/$name.time")"; cat "$OUT/$name.json"
    done
  done
fi
