#!/usr/bin/env bash
# Train models/gpt2-tiny-wikitext and compute tests/fixtures on a CUDA machine.
# Needs .carry/train.txt (WikiText-2 raw train split; git-ignored, carried along)
# and the tokenizer files from scripts/make_tokenizer.py.  Results are also
# copied flat under $OUT when that variable is set (the lab's device tool).
set -o pipefail
export PYTHONUNBUFFERED=1
M=models/gpt2-tiny-wikitext
OUT=${OUT:-/tmp/lutlab-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# 1. smoke test of both scripts (30 steps, throw-away output) so that a bug
#    shows up before the real run spends its minutes
S=/tmp/lutlab-smoke
mkdir -p $S && cp $M/tokenizer.json $S/
python3 scripts/train_shipped_model.py --out $S --steps 30 --warmup 10 --eval-every 30 --log-every 10 \
    > "$OUT/smoke.log" 2>&1 &&
python3 scripts/make_reference_fixtures.py --model $S --out $S/fixtures >> "$OUT/smoke.log" 2>&1 ||
    { tail -40 "$OUT/smoke.log"; exit 3; }
echo "smoke test ok"

# 2. the real run: ~4 minutes of training, then the HF reference fixtures
python3 scripts/train_shipped_model.py --train .carry/train.txt --out $M --minutes "${MINUTES:-4}" 2>&1 \
    | tee "$OUT/train.log" && cp $M/model.safetensors "$OUT/"
python3 scripts/make_reference_fixtures.py --model $M --out tests/fixtures 2>&1 | tee "$OUT/fixtures.log"
rc=$?
tar cf "$OUT/bundle.tar" $M/config.json $M/generation_config.json $M/training_log.json \
    tests/fixtures/reference_logits.safetensors tests/fixtures/reference_perplexity.json \
    tests/fixtures/reference_tokens.json
exit $rc
