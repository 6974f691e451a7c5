#!/usr/bin/env bash
# Session 26's device call: the suite's CLI round first on a fresh machine (truly cold), then GPTQ
# (this session's binary with PyTorch beside it, then the binary before, both profiled).
set -x
for f in .carry/lutlab.xz .carry/lutlab-old.xz; do xz -d -k -f "$f"; done
chmod +x .carry/lutlab .carry/lutlab-old
PARTS="cli" bash scripts/bench_suite.sh
mkdir -p $OUT/gptq-new $OUT/gptq-old
OUT=$OUT/gptq-new LUTLAB_PROFILE=1 bash scripts/bench_gptq_speed.sh
OUT=$OUT/gptq-old NO_PEER=1 LUTLAB=.carry/lutlab-old LUTLAB_PROFILE=1 bash scripts/bench_gptq_speed.sh
