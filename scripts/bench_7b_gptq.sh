#!/usr/bin/env bash
# Issue 18's 7B goal, measured on part of the model: GPTQ (4-bit, per channel) of a Llama-2-7B-
# shaped model (random f16 weights, scripts/make_llama7b_shaped.py) with BLOCKS of its 32 blocks
# (default 4: every block of a 7B model has the same shapes and costs the same), streamed
# (`--stream`: GPTQ's sequential loop, one block on the GPU at a time), NSAMPLES x 2048
# calibration windows (default 128, GPTQ's), LUTLAB_PROFILE=1 splitting the GPU phase (block
# forwards and x·xᵀ sums) from the host phase (factorizations and rounding). The 32-block time
# is projected as (32 / BLOCKS) x the measured one.
# Device: carry [".carry/lutlab.xz", ".gl"].
set -o pipefail
source scripts/device_env.sh
L=${LUTLAB:-.carry/lutlab}
# GPTQ's factorization and row loop on the GPU (`--gpu`); ON_GPU= for the CPU's f64 reference.
ON_GPU=${ON_GPU---gpu}
BLOCKS=${BLOCKS:-4}; N=${NSAMPLES:-128}
M=/tmp/llama7b-$BLOCKS
python3 scripts/make_llama7b_shaped.py --out $M --layers $BLOCKS > "$OUT/make.log" 2>&1 || { tail "$OUT/make.log"; exit 1; }
CAL=data/wikitext-2/valid.txt
LUTLAB_PROFILE=1 timeout ${LUTLAB_TIMEOUT:-540} /usr/bin/time -v $L quantize $ON_GPU --model $M --stream --method gptq --bits 4 --granularity channel \
  --calibration-data $CAL --hessian-samples $N --hessian-seqlen 2048 --packed /tmp/q7b.lut --json > "$OUT/lutlab.json" 2> "$OUT/lutlab.err"
echo "exit $?"
grep -E "Elapsed|Maximum resident" "$OUT/lutlab.err"
grep -iE "GPU:|host:|sequential" "$OUT/lutlab.err" | tail -8
python3 - "$OUT" "$BLOCKS" <<'PY'
import json, sys
out, blocks = sys.argv[1], int(sys.argv[2])
r = json.loads(open(f"{out}/lutlab.json").read().splitlines()[-1])
s = r["quantize_seconds"]
print(f"GPTQ of {blocks} Llama-7B-shaped blocks: {s:.1f} s; projected to 32 blocks: {s * 32 / blocks / 60:.1f} min; {r['bits_per_weight']:.3f} bits/weight")
PY
