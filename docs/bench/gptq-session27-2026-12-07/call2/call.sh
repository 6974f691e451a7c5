#!/usr/bin/env bash
# Session 27, call 2: GPTQ beside PyTorch with its timeline (LUTLAB_PROFILE=2 spans, in
# new/lutlab.time), then the binary before (session 26's) beside it.
for f in .carry/lutlab.xz .carry/lutlab-old.xz; do xz -d -k -f "$f"; done
chmod +x .carry/lutlab .carry/lutlab-old
mkdir -p $OUT/new $OUT/old
OUT=$OUT/new LUTLAB_PROFILE=2 bash scripts/bench_gptq_speed.sh 2>&1 | grep -v "^span"
OUT=$OUT/old NO_PEER=1 LUTLAB=.carry/lutlab-old LUTLAB_PROFILE=1 bash scripts/bench_gptq_speed.sh 2>&1
for d in new old; do echo "$d $(tail -1 $OUT/$d/lutlab.json | python3 -c "import sys,json; print(json.load(sys.stdin)['quantize_seconds'])")"; done
