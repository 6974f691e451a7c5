#!/usr/bin/env bash
# Allocating per block of output channels against per layer (issue 20, item 1's
# `--allocate-per channels:N`): on each shipped model, per-channel Fisher-weighted k-means at
# widths {2,3,4,5,6,8}, the automatic allocation under 2.5 … 5 bits per weight per layer, per
# block of 64 channels and per block of 16, every result packed (blocks of mixed widths as column
# parts, format version 6) and evaluated through the LUT kernels. Also the vector tables' k-means
# on the CPU and on the GPU (`--gpu`: the assignment in WGSL), timed on the same layers.
#
# Device (carry [".carry/lutlab.xz", ".gl"]): bash scripts/bench_allocate_per.sh
# Here, on lavapipe, small: LUTLAB=$CARGO_TARGET_DIR/release/lutlab EVAL_CHARS=40000 NSAMPLES=32 SEQLEN=128 \
#   MODELS=gpt2-tiny-wikitext bash scripts/bench_allocate_per.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/allocate-per}
source scripts/bench_rows.sh
OUT=${OUT:-$WORK}
CALIBRATION=${CALIBRATION:-data/wikitext-2/valid.txt}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-256}
mkdir -p "$OUT"
trap 'cp "$rows" "$OUT/allocate-per-rows.jsonl"' EXIT
for model in ${MODELS:-gpt2-tiny-wikitext llama-tiny-wikitext opt-tiny-wikitext}; do
  dir=models/$model
  work=$WORK/$model
  mkdir -p "$work"
  fisher=$work/fisher.safetensors
  [ -s "$fisher" ] || "$LUTLAB" fisher --model "$dir" --data "$CALIBRATION" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --out "$fisher" --json > "$work/fisher.json"
  for bpw in 2.5 3 3.5 4 4.5 5; do
    for per in layers channels:64 channels:16; do
      name="$per-$bpw"
      grep -q "\"model\": \"$model\", \"name\": \"$name\"" "$rows" && continue
      start=$(date +%s.%N)
      "$LUTLAB" quantize --model "$dir" --granularity channel --fisher "$fisher" --budget "${bpw}bpw" --allocate-per "$per" \
        --packed "$work/q.safetensors" --eval --data "$eval_text" --json > "$work/out.json"
      python3 - "$model" "$name" "$work/out.json" "$work/q.safetensors" "$start" >> "$rows" <<'PY'
import json, struct, sys, time
model, name, path, packed, start = sys.argv[1:]
r = json.load(open(path))
b = open(packed, "rb").read(8)
header = json.loads(open(packed, "rb").read(8 + struct.unpack("<Q", b)[0])[8:])
layers = json.loads(header["__metadata__"]["layers"])
print(json.dumps({"model": model, "name": name, "file_bytes": r["file_bytes"], "bits_per_weight": r["sizes"]["bits_per_weight"],
                  "perplexity": r["eval"]["perplexity"], "estimated_loss": r["allocation"]["estimated_loss"],
                  "units": len(r["allocation"]["layers"]), "split_layers": sum("parts" in l for l in layers.values()),
                  "format_version": header["__metadata__"]["format_version"], "seconds": time.time() - float(start)}))
PY
      tail -1 "$rows"
    done
  done
  # Vector tables' k-means, CPU against GPU (one run each, same settings, quantize only).
  for gpu in "" --gpu; do
    name="vectors4${gpu}"
    grep -q "\"model\": \"$model\", \"name\": \"$name\"" "$rows" && continue
    "$LUTLAB" quantize --model "$dir" --vector-dim 4 --bits 2 --granularity tensor --restarts 3 $gpu \
      --packed "$work/v.safetensors" --json > "$work/v.json"
    python3 -c "
import json, sys
r = json.load(open(sys.argv[3]))
print(json.dumps({'model': sys.argv[1], 'name': sys.argv[2], 'seconds': r['quantize_seconds'], 'bits_per_weight': r['sizes']['bits_per_weight']}))" \
      "$model" "$name" "$work/v.json" >> "$rows"
    tail -1 "$rows"
  done
done
