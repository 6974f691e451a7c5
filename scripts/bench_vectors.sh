#!/usr/bin/env bash
# Vector look-up tables against scalar tables and the Hessian methods at about equal bits per
# weight (issue 20, item 3), on a shipped model (MODEL, default the GPT-2): perplexity on the
# whole WikiText-2 test file (window 256, stride 128) and bits/weight, every table counted. Every
# result packs, so each is evaluated packed, through the LUT kernels (the vector kernels for
# --vector-dim). Hessians: 128 windows x 256 tokens of WikiText-2 train (.carry/train-head.txt
# when carried, else valid), sequential as GPTQ computes them. ONLY: a regular expression over
# the row labels. Device: carry [".carry/lutlab.xz", ".carry/train-head.txt.xz", ".gl"].
set -o pipefail
source scripts/device_env.sh
L=${LUTLAB:-.carry/lutlab}
[ -f .carry/train-head.txt.xz ] && xz -d -k -f .carry/train-head.txt.xz
CAL=.carry/train-head.txt; [ -f "$CAL" ] || CAL=data/wikitext-2/valid.txt
EVAL="--eval --max-length 256 --stride 128"
HESS="--calibration-data $CAL --hessian-samples 128 --hessian-seqlen 256"
MODEL=${MODEL:-models/gpt2-tiny-wikitext}
FISHER_FILE="$OUT/fisher-$(basename "$MODEL").safetensors"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
run() { # label, args...
  local label=$1; shift
  [[ -z "$ONLY" || "$label" =~ $ONLY ]] || return 0
  local json
  json=$($L quantize --model "$MODEL" "$@" $EVAL --json 2>>"$OUT/vectors.err") || { echo "$label FAILED" | tee -a "$OUT/vectors.txt"; return; }
  python3 - "$label" "$json" <<'PY' | tee -a "$OUT/vectors.txt"
import json, sys
label, j = sys.argv[1], json.loads(sys.argv[2])
print(f"{label:<40} ppl {j['eval']['perplexity']:9.3f}  {j['bits_per_weight']:.3f} bits/weight  quantize {j['quantize_seconds']:.1f} s")
PY
  echo "$json" >> "$OUT/vectors.jsonl"
}
echo "model $MODEL" | tee -a "$OUT/vectors.txt"
$L fisher --model "$MODEL" --data "$CAL" --nsamples 128 --seqlen 256 --out "$FISHER_FILE" > /dev/null 2>>"$OUT/vectors.err"
for b in 2 3; do
  run "kmeans $b-bit tensor"             --bits $b --granularity tensor --restarts 3
  run "kmeans $b-bit channel"            --bits $b --granularity channel --restarts 3
  run "kmeans+fisher $b-bit channel"     --bits $b --granularity channel --restarts 3 --fisher "$FISHER_FILE"
  run "vectors of 2, $b-bit tensor"      --bits $b --granularity tensor --restarts 3 --vector-dim 2
  run "vectors of 2+fisher, $b-bit tensor" --bits $b --granularity tensor --restarts 3 --vector-dim 2 --fisher "$FISHER_FILE"
  [ $b = 2 ] && run "vectors of 4, $b-bit tensor" --bits $b --granularity tensor --restarts 3 --vector-dim 4
  run "gptq int $b-bit channel"          --method gptq --bits $b --granularity channel --asym $HESS
  run "kmeans+gptq $b-bit tensor"        --method gptq --grid kmeans --bits $b --granularity tensor --restarts 3 $HESS
  run "kmeans+gptq $b-bit channel"       --method gptq --grid kmeans --bits $b --granularity channel --restarts 3 $HESS
done
