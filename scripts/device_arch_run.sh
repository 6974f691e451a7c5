#!/usr/bin/env bash
# Make lutlab's OPT/Llama test models and their transformers fixtures on a CUDA machine:
#   1. scripts/convert_llama2c.py   .carry/stories260K.bin -> models/llama2c-stories260k
#   2. scripts/train_arch_models.py models/opt-tiny-wikitext, models/llama-tiny-wikitext
#   3. scripts/make_arch_fixtures.py tests/models/* (random) and tests/fixtures/arch/*
# Needs .carry/stories260K.bin and .carry/train.txt (git-ignored, carried along).
# A short smoke test of the training on the GPU comes first (SMOKE=0 skips it); MINUTES sets
# each model's training time (default 3).  Logs and three tarballs go to $OUT (the lab's
# device tool brings them back): run.log, smoke.log, opt.tgz, llama.tgz, fixtures.tgz.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/lutlab-out}
mkdir -p "$OUT"
LOG="$OUT/run.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$LOG"
python3 -c "import torch, transformers, tokenizers, safetensors, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'safetensors', safetensors.__version__, 'numpy', numpy.__version__)" 2>&1 | tee -a "$LOG"

if [ "${SMOKE:-1}" = 1 ]; then
    S=/tmp/lutlab-arch-smoke
    rm -rf $S
    ( for a in opt llama; do
          python3 scripts/train_arch_models.py --arch $a --out $S/$a --steps 20 --warmup 5 \
              --eval-every 20 --log-every 10 --max-train-chars 1000000 || exit 1
      done ) > "$OUT/smoke.log" 2>&1 || { tail -40 "$OUT/smoke.log"; exit 3; }
    echo "smoke test ok" | tee -a "$LOG"
fi

python3 scripts/convert_llama2c.py --bin .carry/stories260K.bin --out models/llama2c-stories260k \
    2>&1 | tee -a "$LOG" || exit 4
for a in opt llama; do
    python3 scripts/train_arch_models.py --arch $a --train .carry/train.txt --minutes "${MINUTES:-3}" \
        2>&1 | tee -a "$LOG" || exit 5
done
python3 scripts/make_arch_fixtures.py 2>&1 | tee -a "$LOG"
rc=$?
tar czf "$OUT/opt.tgz" models/opt-tiny-wikitext
tar czf "$OUT/llama.tgz" models/llama-tiny-wikitext models/llama2c-stories260k
tar czf "$OUT/fixtures.tgz" tests/models tests/fixtures/arch
ls -la "$OUT" | tee -a "$LOG"
exit $rc
