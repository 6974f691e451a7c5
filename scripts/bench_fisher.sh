#!/usr/bin/env bash
# Fisher on the device (issue 5): `lutlab fisher` on the shipped model (128 × 256, micro-batch 1
# and 8) and on a GPT-2 124M-shaped model at seqlen 1024, with the GPU memory it takes two ways:
# burn's pool reservation (`peak_reserved_bytes`) and nvidia-smi's used memory polled every
# 50 ms (minus the idle baseline); beside it the PyTorch peer (scripts/fisher_peer.py).
# Carry .carry and .gl (see device_env.sh); JSON lands in $OUT.
set -euo pipefail
source scripts/device_env.sh
make_gpt2_124m /tmp/gpt2-124m
head -c 400000 data/wikitext-2/valid.txt > /tmp/valid400k.txt

# Runs a command while polling nvidia-smi; prints the command's JSON with the polled peak added.
with_smi_peak() {  # name, command...
  local name=$1; shift
  local base; base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 > "$OUT/smi_$name.txt" &
  local poll=$!
  "$@" > "$OUT/$name.json"
  kill $poll; wait $poll 2>/dev/null || true
  python3 - "$OUT/$name.json" "$OUT/smi_$name.txt" "$base" "$name" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
used = [int(l) for l in open(sys.argv[2]) if l.strip().isdigit()]
r["smi_peak_mib_over_idle"] = max(used) - int(sys.argv[3]) if used else None
r["name"] = sys.argv[4]
print(json.dumps({k: r.get(k) for k in ("name", "tokens_per_s", "seconds", "peak_reserved_bytes", "peak_allocated_bytes", "smi_peak_mib_over_idle")}))
PY
}
with_smi_peak shipped_mb1 .carry/lutlab fisher --out /tmp/g1.safetensors --micro-batch 1 --json
with_smi_peak shipped_mb8 .carry/lutlab fisher --out /tmp/g8.safetensors --micro-batch 8 --json
with_smi_peak gpt2_124m_1024 .carry/lutlab fisher --model /tmp/gpt2-124m --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --out /tmp/g124.safetensors --json
with_smi_peak torch_gpt2_124m_1024 python3 scripts/fisher_peer.py --model /tmp/gpt2-124m --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8
