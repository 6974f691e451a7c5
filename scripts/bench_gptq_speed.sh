#!/usr/bin/env bash
# Issue 18's speed comparison: GPTQ (4-bit, per channel, asymmetric) of every linear of a GPT-2
# 124M-shaped model (random weights, the shipped tokenizer) with 128 x 1024 calibration windows,
# Hessians included, by lutlab (`quantize --method gptq`, sequential; quantize_seconds) and by a
# straightforward PyTorch GPTQ (scripts/bench_gptq_peer.py) on the same GPU. Two ratios: against
# `quantize_seconds` (tokenizing the text and uploading the model included) and against
# `sequential_seconds`, which starts where the peer's clock starts (after both).
# Device: carry [".carry/lutlab.xz", ".carry/train-head.txt.xz", ".gl"].
set -o pipefail
source scripts/device_env.sh
L=${LUTLAB:-.carry/lutlab}
# GPTQ's factorization and row loop on the GPU (`--gpu`); ON_GPU= for the CPU's f64 reference.
ON_GPU=${ON_GPU---gpu}
[ -f .carry/train-head.txt.xz ] && xz -d -k -f .carry/train-head.txt.xz
CAL=.carry/train-head.txt; [ -f "$CAL" ] || CAL=data/wikitext-2/valid.txt
M=/tmp/gpt2-124m; make_gpt2_124m $M
N=${NSAMPLES:-128}; S=${SEQLEN:-1024}
[ -n "${NO_PEER:-}" ] || python3 scripts/bench_gptq_peer.py $M $CAL $N $S | tee "$OUT/peer.json"
# FACTORS: where the GPU rounder factors each Hessian (LUTLAB_GPTQ_FACTOR), one run each, in order;
# "default" leaves the binary's choice.
for f in ${FACTORS:-default}; do
  tag=""; [ "$f" != default ] && tag="-$f"
  LUTLAB_GPTQ_FACTOR=$([ "$f" != default ] && echo $f) LUTLAB_PROFILE=${LUTLAB_PROFILE:-} timeout ${LUTLAB_TIMEOUT:-450} /usr/bin/time -v $L quantize $ON_GPU --model $M --method gptq --bits 4 --granularity ${GRANULARITY:-channel} --asym --calibration-data $CAL \
    --hessian-samples $N --hessian-seqlen $S --packed /tmp/q$tag.lut --json > "$OUT/lutlab$tag.json" 2> "$OUT/lutlab$tag.time"
  [ -n "${NO_PEER:-}" ] || python3 - "$OUT" "$tag" <<'PY'
import json, sys
out, tag = sys.argv[1], sys.argv[2]
peer = json.load(open(f"{out}/peer.json"))
ours = json.loads(open(f"{out}/lutlab{tag}.json").read().splitlines()[-1])
print(f"PyTorch GPTQ {peer['seconds']:.1f} s, lutlab{tag} {ours['quantize_seconds']:.1f} s: lutlab {peer['seconds'] / ours['quantize_seconds']:.2f}x PyTorch's speed")
# The same clock as PyTorch's: the sequential loop alone (tokenizing and the model's upload before).
if ours.get("sequential_seconds"):
    s = ours["sequential_seconds"]
    print(f"same clock as PyTorch's (the loop alone): lutlab{tag} {s:.2f} s, {peer['seconds'] / s:.2f}x")
PY
  grep -E "Elapsed|Maximum resident|profile" "$OUT/lutlab$tag.time" | cut -c1-900
done
# KERNEL_PROFILE=1: one more run under cubecl's per-kernel profile (it waits for every kernel),
# summed by scripts/cubecl_profile.py into $OUT/profile_gptq.txt.
if [ -n "${KERNEL_PROFILE:-}" ]; then
  dir=/tmp/profile-gptq; mkdir -p $dir; repo=$PWD
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s/cubecl.log"\n' "$dir" > "$dir/cubecl.toml"
  start=$(date +%s.%N)
  (cd $dir && timeout ${LUTLAB_TIMEOUT:-450} $repo/$L quantize $ON_GPU --model $M --method gptq --bits 4 --granularity ${GRANULARITY:-channel} --asym \
    --calibration-data $repo/$CAL --hessian-samples $N --hessian-seqlen $S --packed /tmp/qp.lut --json > $dir/run.json 2>/dev/null)
  end=$(date +%s.%N)
  python3 scripts/cubecl_profile.py "$dir/cubecl.log" --wall "$(python3 -c "print($end - $start)")" > "$OUT/profile_gptq.txt"
  head -30 "$OUT/profile_gptq.txt" | tail -28
fi
