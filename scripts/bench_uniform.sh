#!/usr/bin/env bash
# The uniform (RTN) perplexity table of issue 8 on the device: int 2/3/4/8 sym/asym x per-channel /
# group-128 x stats/mse (STATS="stats mse hqo" adds HQO everywhere; EXTRA=0 skips the 4-bit HQO
# and minifloat rows), and minifloats. Set-up as in scripts/bench_device.sh.
set -uo pipefail
L=.carry/lutlab
row() { $L quantize --method rtn --eval --json "$@" 2>/dev/null |
  python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['method']}|$*|{d['bits_per_weight']:.3f}|{d['eval']['perplexity']:.3f}\")"; }
for bits in 2 3 4 8; do
  for sym in "" "--asym"; do
    for g in channel group:128; do
      for s in ${STATS:-stats mse}; do row --bits $bits $sym --granularity $g --scale-stats $s; done
    done
  done
done
[ "${EXTRA:-1}" = 0 ] && exit 0
for sym in "" "--asym"; do row --bits 4 $sym --granularity channel --scale-stats hqo; done
row --bits 8 --format e4m3 --granularity channel
row --bits 4 --format e2m1 --granularity channel
row --bits 4 --format e2m1 --granularity group:32
