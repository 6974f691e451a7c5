#!/usr/bin/env bash
# Input (activation) quantization quality (issue 19, item 5): perplexity of the shipped models
# with weights W ∈ {16 (float), 8, 4} bits (rtn int, per channel, asymmetric) and inputs
# A ∈ {16, 8 static per tensor (8s), 8 dynamic per token (8d), 4 dynamic per token (4d)}
# (int, asymmetric), plain, with SmoothQuant (`--act-equalization fused`, α 0.5, and
# `--act-equalization layerwise`: every linear its own scales, any family), with the
# norm affine merge (`--ln-affine-merge`; these two for pre-norm families only) or with bias
# correction (`--bias-corr`). One JSON row per run in $WORK/rows.jsonl;
# scripts/bench_inputs.py prints the table BENCHMARKS.md shows.
#
# Here, on lavapipe, at small scale (what BENCHMARKS.md reports unless it says otherwise):
#   LUTLAB=$CARGO_TARGET_DIR/release/lutlab EVAL_CHARS=40000 bash scripts/bench_inputs.sh
# Device (carry [".carry/lutlab.xz", ".gl"]): bash scripts/bench_inputs.sh
# Resumable: rows already in $WORK/rows.jsonl are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/inputs}
source scripts/bench_rows.sh
SAMPLES=${SAMPLES:-32}

for model in ${MODELS:-gpt2-tiny-wikitext llama-tiny-wikitext opt-tiny-wikitext}; do
  dir=models/$model
  pre_norm=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(0 if c.get('do_layer_norm_before') is False else 1)" "$dir/config.json")
  # (weights, inputs, preparation): every input setting on the float model and at 4 bits, the
  # 8-bit ones at 8 bits, SmoothQuant wherever inputs are quantized, the norm merge at W4.
  for row in 16:16:plain 16:8s:plain 16:8d:plain 16:4d:plain \
             8:8s:plain 8:8s:smoothquant 8:8d:plain 8:8d:smoothquant \
             4:16:plain 4:16:smoothquant 4:16:lnmerge 4:8s:plain 4:8s:smoothquant 4:8s:lnmerge \
             4:8d:plain 4:8d:smoothquant 4:4d:plain 4:4d:smoothquant \
             8:8s:biascorr 4:16:biascorr 4:8s:biascorr 4:8d:biascorr \
             8:8s:layerwise 8:8d:layerwise 4:16:layerwise 4:8s:layerwise 4:8d:layerwise 4:4d:layerwise; do
    IFS=: read -r w a prep <<<"$row"
    key="$model W$w A$a $prep"
    grep -qF "\"key\": \"$key\"" "$rows" && continue
    case $prep in smoothquant|lnmerge) [ "$pre_norm" = 0 ] && continue ;; esac
    inputs=()
    case $a in
      8s) inputs=(--input-bit-width 8 --act-calibration-samples "$SAMPLES") ;;
      8d) inputs=(--input-bit-width 8 --input-scale-type dynamic --input-quant-granularity per_row) ;;
      4d) inputs=(--input-bit-width 4 --input-scale-type dynamic --input-quant-granularity per_row) ;;
    esac
    prep_flags=()
    case $prep in
      smoothquant) prep_flags=(--act-equalization fused --alpha 0.5 --calibration-samples "$SAMPLES") ;;
      layerwise) prep_flags=(--act-equalization layerwise --alpha 0.5 --calibration-samples "$SAMPLES") ;;
      lnmerge) prep_flags=(--ln-affine-merge) ;;
      biascorr) prep_flags=(--bias-corr --calibration-samples "$SAMPLES") ;;
    esac
    if [ "$w" = 16 ]; then
      out=$("$LUTLAB" eval --model "$dir" --data "$eval_text" "${inputs[@]}" --json)
      ppl=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['perplexity'])" "$out")
    else
      out=$("$LUTLAB" quantize --model "$dir" --method rtn --bits "$w" --granularity channel --asym "${prep_flags[@]}" --eval --data "$eval_text" "${inputs[@]}" --json)
      ppl=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['eval']['perplexity'])" "$out")
    fi
    echo "{\"key\": \"$key\", \"model\": \"$model\", \"w\": \"$w\", \"a\": \"$a\", \"prep\": \"$prep\", \"perplexity\": $ppl}" | tee -a "$rows"
  done
done
