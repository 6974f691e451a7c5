#!/usr/bin/env bash
# The Fisher-weighting question (issue 21, item 4): does weighting the per-channel k-means by the
# Fisher diagonal lower perplexity, and does the weighted objective it minimises hold on Fisher
# from other text? For each model:
#   - Fisher "A" from WikiText-2 train with each of $NS windows of $SEQLEN tokens;
#   - Fisher "B" from WikiText-2 valid ($NB windows): held out, never used to fit;
#   - per-channel k-means at 4 and 3 bits: plain, weighted by each A, by damped/clipped/sqrt
#     variants of the largest A and by B itself (B's in-sample optimum: a bound for the score);
#   - each result's perplexity on the first $EVAL_CHARS characters of WikiText-2 test (all of it
#     by default) and its errors Σ(w−q)², Σ F_A·(w−q)² (in sample) and Σ F_B·(w−q)² (held out),
#     from scripts/fisher_weighting.py score;
#   - scikit-learn's weighted KMeans per channel on the largest A (nuq.py's call), evaluated by
#     lutlab: the independent implementation on the same Fisher.
# Resumable: Fisher files and finished rows stay in $WORK (default /tmp/fw), so a run stopped by
# the device's 10-minute limit continues where it stopped when called again. Rows: $WORK/rows.jsonl.
#
# Device (carry [".carry/lutlab.xz", ".carry/train-head.txt.xz", ".gl"]; train-head is the first
# MB of WikiText-2 train, xz'd), full scale:   bash scripts/fisher_weighting.sh
# Here, on lavapipe, small scale (what BENCHMARKS.md reports for 2026-12-04):
#   LUTLAB=$CARGO_TARGET_DIR/release/lutlab TRAIN=../shared/data/wikitext-2/train.txt \
#   NS="16 32 128" NB=128 SEQLEN=64 EVAL_CHARS=40000 MICRO=4 bash scripts/fisher_weighting.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LUTLAB:-}" ]; then
  source scripts/device_env.sh
  xz -d -k -f .carry/train-head.txt.xz
  LUTLAB=.carry/lutlab TRAIN=${TRAIN:-.carry/train-head.txt}
fi
OUT=${OUT:-/tmp/fw-out}
WORK=${WORK:-/tmp/fw}
NS=${NS:-16 128 1024}
NB=${NB:-1024}
SEQLEN=${SEQLEN:-256}
MICRO=${MICRO:-8}
py=scripts/fisher_weighting.py
rows=$WORK/rows.jsonl
mkdir -p "$WORK" "$OUT" && touch "$rows"
trap 'cp "$rows" "$OUT/rows.jsonl"' EXIT
done_row() { grep -q "\"model\": \"$1\", \"bits\": $2, \"weighting\": \"$3\"" "$rows"; }
eval_text=data/wikitext-2/test.txt
if [ -n "${EVAL_CHARS:-}" ]; then
  eval_text=$WORK/test-head.txt
  python3 -c "import sys; sys.stdout.write(open('data/wikitext-2/test.txt').read()[:int(sys.argv[1])])" "$EVAL_CHARS" > "$eval_text"
fi

for model in ${MODELS:-gpt2-tiny-wikitext}; do
  dir=models/$model
  work=$WORK/$model
  mkdir -p "$work"
  fisher() {  # name, flags
    [ -s "$work/$1.safetensors" ] && return
    "$LUTLAB" fisher --model "$dir" --micro-batch "$MICRO" --seqlen "$SEQLEN" --out "$work/$1.safetensors" --json "${@:2}" > "$work/$1.json"
  }
  fisher "B$NB" --data data/wikitext-2/valid.txt --nsamples "$NB" --seed 2
  fishers=()
  for n in $NS; do fisher "A$n" --data "$TRAIN" --nsamples "$n" --seed 1; fishers+=("A$n"); done
  largest=${fishers[-1]}
  for v in damp:1 clip:99 sqrt; do
    name=$largest${v%%:*}
    [ -s "$work/$name.safetensors" ] || python3 $py variant "$work/$largest.safetensors" "$work/$name.safetensors" "$v"
    fishers+=("$name")
  done
  fishers+=("B$NB")

  record() {  # bits, weighting, dequantized dir, json with the perplexity
    local score
    score=$(python3 $py score "$dir" "$3" A="$work/$largest.safetensors" B="$work/B$NB.safetensors")
    python3 - "$model" "$1" "$2" "$4" "$score" >> "$rows" <<'PY'
import json, sys
model, bits, weighting, result, score = sys.argv[1:]
r = json.load(open(result))
ppl = r["eval"]["perplexity"] if "eval" in r else r["perplexity"]
print(json.dumps({"model": model, "bits": int(bits), "weighting": weighting, "perplexity": ppl, **json.loads(score)}))
PY
    tail -1 "$rows"
  }
  for bits in 4 3; do
    for weighting in plain "${fishers[@]}"; do
      done_row "$model" "$bits" "$weighting" && continue
      flags=(); [ "$weighting" = plain ] || flags=(--fisher "$work/$weighting.safetensors")
      rm -rf "$work/q"
      "$LUTLAB" quantize --model "$dir" --bits "$bits" --granularity channel "${flags[@]}" \
        --out "$work/q" --eval --data "$eval_text" --json > "$work/q.json"
      record "$bits" "$weighting" "$work/q" "$work/q.json"
    done
    if ! done_row "$model" "$bits" "sklearn-$largest"; then
      rm -rf "$work/sk"
      python3 $py sklearn "$dir" "$work/$largest.safetensors" "$bits" "$work/sk"
      "$LUTLAB" eval --model "$work/sk" --data "$eval_text" --json > "$work/sk.json"
      record "$bits" "sklearn-$largest" "$work/sk" "$work/sk.json"
    fi
  done
done
