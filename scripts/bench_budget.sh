#!/usr/bin/env bash
# Mixed precision under a budget (issue 20, item 2): perplexity against packed file size on the
# shipped models for
#   (a) uniform widths (every layer at --bits B),
#   (b) the automatic allocation (`--budget`, Fisher estimate), with the uniform and rule points'
#       bytes of quantized layers and at 2.5 … 5 bits per weight,
#   (c) llama.cpp-style rules (`--layer-bits`: +1 bit for the attention value/output
#       projections, the MLP's down projection and the first and last blocks),
# all per-channel Fisher-weighted k-means, every result evaluated packed (LUT kernels); and
# the estimate checked against what it estimates: each layer alone at 2 bits (the rest at
# 8 bits, near lossless), its measured perplexity damage beside its Fisher estimate, and the
# Spearman rank correlation of the two (scripts/bench_budget.py).
#
# Device (carry [".carry/lutlab.xz", ".gl"]): bash scripts/bench_budget.sh
# Here, on lavapipe, at small scale (what BENCHMARKS.md reports unless it says otherwise):
#   LUTLAB=$CARGO_TARGET_DIR/release/lutlab EVAL_CHARS=40000 MODELS=gpt2-tiny-wikitext bash scripts/bench_budget.sh
# Resumable: rows already in $WORK/rows.jsonl are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/budget}
source scripts/bench_rows.sh
OUT=${OUT:-$WORK}
CALIBRATION=${CALIBRATION:-data/wikitext-2/valid.txt}
NSAMPLES=${NSAMPLES:-128}
SEQLEN=${SEQLEN:-256}
mkdir -p "$OUT"
trap 'cp "$rows" "$OUT/budget-rows.jsonl"' EXIT

for model in ${MODELS:-gpt2-tiny-wikitext llama-tiny-wikitext opt-tiny-wikitext}; do
  dir=models/$model
  work=$WORK/$model
  mkdir -p "$work"
  fisher=$work/fisher.safetensors
  [ -s "$fisher" ] || "$LUTLAB" fisher --model "$dir" --data "$CALIBRATION" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --out "$fisher" --json > "$work/fisher.json"
  # The rules' layers for this family, and the last block.
  read -r priority <<<"$(python3 - "$dir/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
n = c.get("n_layer") or c.get("num_hidden_layers")
t = c["model_type"]
if t == "gpt2":
    names, block = ["attn.c_attn", "attn.c_proj", "mlp.c_proj"], "h.{}."
elif t == "opt":
    names, block = ["v_proj", "out_proj", "fc2"], "layers.{}."
else:
    names, block = ["v_proj", "o_proj", "down_proj"], "layers.{}."
print(" ".join(names + [block.format(0), block.format(n - 1)]))
PY
)"
  run() {  # name, kind, flags...: quantize, pack, evaluate, one row
    local name=$1 kind=$2
    grep -q "\"model\": \"$model\", \"name\": \"$name\"" "$rows" && return
    "$LUTLAB" quantize --model "$dir" --granularity channel --fisher "$fisher" "${@:3}" \
      --packed "$work/q.safetensors" --eval --data "$eval_text" --json > "$work/$name.json"
    python3 scripts/bench_budget.py row "$model" "$name" "$kind" "$work/$name.json" >> "$rows"
    tail -1 "$rows"
  }
  # Uniform widths, run as a budget with one candidate width so that they report their estimate.
  for b in 2 3 4 5; do run "uniform-$b" uniform --bits "$b" --budget 15.9bpw --widths "$b"; done
  for b in 2 3 4; do
    rules=$(for p in $priority; do printf '%s=%s,' "$p" $((b + 1)); done)
    run "rules-$b" rules --bits "$b" --layer-bits "${rules%,}"
  done
  # The automatic allocation with each baseline's bytes of quantized layers (its bits per weight,
  # everything stored counted; the files then differ only by the allocation's metadata, ~2 kB),
  # and on a grid of widths.
  for base in uniform-2 uniform-3 uniform-4 uniform-5 rules-2 rules-3 rules-4; do
    bpw=$(python3 -c "import json,sys; print(repr(json.load(open(sys.argv[1]))['sizes']['bits_per_weight'] + 1e-9))" "$work/$base.json")
    run "auto-at-$base" auto --budget "${bpw}bpw"
  done
  for bpw in 2.5 3 3.5 4 4.5 5; do run "auto-$bpw" auto --budget "${bpw}bpw"; done

  # The estimate against the measured damage: each layer alone at 2 bits, the rest at 8.
  run "all-8" reference --bits 8
  layers=$(python3 -c "import json,sys; print(' '.join(l['name'] for l in json.load(open(sys.argv[1]))['layers']))" "$work/all-8.json")
  for layer in $layers; do run "alone-$layer" alone --bits 8 --layer-bits "$layer=2"; done
done
python3 scripts/bench_budget.py summary "$rows" | tee "$OUT/budget-summary.md"
