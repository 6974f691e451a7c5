#!/usr/bin/env bash
# The scalar LUT GEMV loading its code words as vec2/vec4s (the default for even code widths)
# against one u32 at a time (LUTLAB_GEMV_VEC4=0), alternating ROUNDS times in one device run:
# `lutlab bench kernels` (GPU timestamps, L2-cold: it rotates over enough copies of each layer)
# at SHAPES and 2, 3 (always one word at a time: the control) and 4 bits.
# Device: carry [".carry/lutlab.xz", ".gl"]. Rows in $OUT/gemv-words.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
SHAPES=${SHAPES:-4096x11008,11008x4096,4096x4096}
for round in $(seq ${ROUNDS:-2}); do
  for vec in 1 0; do
    LUTLAB_GEMV_VEC4=$vec .carry/lutlab bench kernels --shapes "$SHAPES" --bits 2,3,4 --iters 500 --json 2>/dev/null | tail -1 \
      | python3 -c "
import json, sys
for k in json.loads(sys.stdin.read())['kernels']:
    k.update(vec4_words=$vec, round=$round); print(json.dumps(k))" >> "$OUT/gemv-words.jsonl"
  done
done
python3 - "$OUT/gemv-words.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    k = json.loads(line)
    if "gemm" not in k["kernel"] and "model" not in k["kernel"]:
        print(k["round"], "vec" if k["vec4_words"] else "u32", k["kernel"], k.get("rows", ""), k.get("cols", ""), round(k["micros"], 2), k.get("gb_per_s", ""))
PY
