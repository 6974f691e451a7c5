#!/usr/bin/env bash
# The Hessian methods' quality table (issue 18) on a shipped model (MODEL, default the GPT-2):
# perplexity on the whole WikiText-2 test file (window 256, stride 128) and bits/weight for RTN,
# GPTQ, GPTQ+act-order, LDLQ-RG, QuIP's incoherence processing + LDLQ-RG, ldlbal-admm, k-means and
# k-means+GPTQ at 4, 3 and 2 bits, per channel (asymmetric, min-max; incoherence: QuIP's qfn b)
# and with groups of GROUP inputs (default 128; a divisor of every linear's inputs). Every result
# that packs is evaluated packed, through the LUT kernels. ONLY: a regular expression over the
# row labels to run a subset. Hessians: 128 windows x 256 tokens of WikiText-2 train
# (.carry/train.txt when carried, else valid), sequential as GPTQ computes them.
# Device: run with carry [".carry/lutlab.xz", ".carry/train-head.txt.xz", ".gl"]; locally it works too.
set -o pipefail
source scripts/device_env.sh
L=${LUTLAB:-.carry/lutlab}
# (the first 3 MB of the train split, as .carry/train-head.txt.xz: the device tree is capped at 64 MiB)
[ -f .carry/train-head.txt.xz ] && xz -d -k -f .carry/train-head.txt.xz
CAL=.carry/train-head.txt; [ -f "$CAL" ] || CAL=data/wikitext-2/valid.txt
EVAL="--eval --max-length 256 --stride 128"
HESS="--calibration-data $CAL --hessian-samples 128 --hessian-seqlen 256"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
MODEL=${MODEL:-models/gpt2-tiny-wikitext}
G=${GROUP:-128}
run() { # label, args...
  local label=$1; shift
  [[ -z "$ONLY" || "$label" =~ $ONLY ]] || return 0
  local t0=$(date +%s.%N)
  local json
  json=$($L quantize --model "$MODEL" "$@" $EVAL --json 2>>"$OUT/quality.err") || { echo "$label FAILED" | tee -a "$OUT/quality.txt"; return; }
  local t1=$(date +%s.%N)
  python3 - "$label" "$json" "$t0" "$t1" <<'PY' | tee -a "$OUT/quality.txt"
import json, sys
label, j, t0, t1 = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{label:<44} ppl {j['eval']['perplexity']:9.3f}  {j['bits_per_weight']:.3f} bits/weight  quantize {j['quantize_seconds']:.1f} s  total {t1 - t0:.1f} s")
PY
  echo "$json" >> "$OUT/quality.jsonl"
}
echo "model $MODEL, groups of $G inputs" | tee -a "$OUT/quality.txt"
$L eval --model "$MODEL" --max-length 256 --stride 128 --json > "$OUT/float.json" && python3 -c "import json;print('float                                        ppl', round(json.load(open('$OUT/float.json'))['perplexity'],3))" | tee -a "$OUT/quality.txt"
for b in 4 3 2; do
  for g in channel group:$G; do
    run "rtn $b-bit $g"              --method rtn  --bits $b --granularity $g --asym
    run "gptq $b-bit $g"             --method gptq --bits $b --granularity $g --asym $HESS
    run "gptq act-order $b-bit $g"   --method gptq --bits $b --granularity $g --asym --act-order $([ $g = channel ] || echo --static-groups) $HESS
    run "ldlq-rg $b-bit $g"          --method ldlq-rg --bits $b --granularity $g --asym $([ $g = channel ] || echo --static-groups) $HESS
    run "rescale+proj+ldlq-rg $b-bit $g" --method ldlq-rg --pre-rescale --pre-proj --bits $b --granularity $g --asym $([ $g = channel ] || echo --static-groups) $HESS
  done
  run "incoherence+ldlq-rg $b-bit channel" --method ldlq-rg --incoherence --bits $b --granularity channel $HESS
  run "ldlbal-admm $b-bit channel"   --method ldlbal-admm --bits $b --granularity channel --asym $HESS
  # GPTQ's own quantizer (integer zero points), for the comparison with a PyTorch GPTQ.
  run "rtn int-zp $b-bit channel"    --method rtn  --bits $b --granularity channel --asym --quantize-zero-point
  run "gptq int-zp $b-bit channel"   --method gptq --bits $b --granularity channel --asym --quantize-zero-point $HESS
  run "kmeans $b-bit channel"        --method kmeans --bits $b --granularity channel --restarts 3
  run "kmeans+gptq $b-bit channel"   --method gptq --grid kmeans --bits $b --granularity channel --restarts 3 $HESS
done
