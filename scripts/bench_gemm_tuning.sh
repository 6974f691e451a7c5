#!/usr/bin/env bash
# The model's f32 matmul (shaders/gemm.wgsl) under each tuning, in one device run: K slices of 16
# and 32 (LUTLAB_GEMM_SLICE), operands read as scalars or, where aligned, as vec4s
# (LUTLAB_GEMM_VEC4). The products are the same bits under every tuning (tests/gemm.rs); only the
# speed differs.
#   1. `bench model-ops`: each shape under every tuning (rows "K slices of S, vec4|scalar loads");
#   2. GPT-2 124M-shaped Fisher (8 × 1024, micro-batch 1, --warm-up) and dense evaluation (window
#      1024, 100,000 characters of WikiText-2 test, --warm-up) under each tuning, PyTorch beside;
#   3. GPTQ of the same model (128 × 1024 windows, 4-bit per channel, --gpu) under TUNINGS_GPTQ,
#      PyTorch's GPTQ beside (scripts/bench_gptq_peer.py).
# Device: carry [".carry/lutlab.xz", ".carry/train-head.txt.xz", ".gl"]. Results in $OUT/tuning.tar.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
L=.carry/lutlab
M=/tmp/gpt2-124m; [ -f "$M/model.safetensors" ] || make_gpt2_124m "$M"
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
head -c 400000 data/wikitext-2/valid.txt > /tmp/valid400k.txt
[ -f .carry/train-head.txt.xz ] && xz -d -k -f .carry/train-head.txt.xz
CAL=.carry/train-head.txt; [ -f "$CAL" ] || CAL=data/wikitext-2/valid.txt
tag() { python3 -c "import json,sys; r=json.loads(sys.stdin.readlines()[-1]); r.update(dict(a.split('=',1) for a in sys.argv[1:])); print(json.dumps(r))" "$@"; }
# A device call returns at most 8 files: the results gather in $RES, tarred into $OUT after each part.
RES=/tmp/tuning-results; mkdir -p $RES
keep() { tar cf "$OUT/tuning.tar" -C $RES .; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $RES/gpu.txt
TUNINGS=${TUNINGS:-"16:0 16:1 32:0 32:1"}
PARTS=${PARTS:-"ops fisher eval gptq"}
for part in $PARTS; do case $part in
ops)
  $L bench model-ops --iters 50 > "$RES/model-ops.txt" 2>&1
  grep -E "model's" "$RES/model-ops.txt" ;;
fisher)
  for t in $TUNINGS; do
    LUTLAB_GEMM_SLICE=${t%:*} LUTLAB_GEMM_VEC4=${t#*:} $L fisher --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --micro-batch 1 --warm-up --out /tmp/f.safetensors --json 2>>"$RES/errors.txt" \
      | tag tuning=$t | tee -a "$RES/fisher.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('fisher', '$t', round(r['tokens_per_s']), 'tokens/s')"
  done
  python3 scripts/fisher_peer.py --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 | tee "$RES/fisher_peer.json" ;;
eval)
  for t in $TUNINGS; do
    LUTLAB_GEMM_SLICE=${t%:*} LUTLAB_GEMM_VEC4=${t#*:} $L eval --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 --warm-up --json 2>>"$RES/errors.txt" \
      | tag tuning=$t | tee -a "$RES/eval.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('eval', '$t', r.get('tokens_per_s'), r.get('perplexity'))"
  done
  python3 scripts/eval_peer.py --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 | tee "$RES/eval_peer.json" ;;
gptq)
  python3 scripts/bench_gptq_peer.py $M $CAL 128 1024 | tee "$RES/gptq_peer.json"
  for t in ${TUNINGS_GPTQ:-16:0 32:1}; do
    LUTLAB_GEMM_SLICE=${t%:*} LUTLAB_GEMM_VEC4=${t#*:} LUTLAB_PROFILE=1 timeout 300 $L quantize --gpu --model $M --method gptq --bits 4 --granularity channel --asym --calibration-data $CAL \
      --hessian-samples 128 --hessian-seqlen 1024 --packed /tmp/q.lut --json 2> "$RES/gptq-$t.err" | tag tuning=$t | tee -a "$RES/gptq.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('gptq', '$t', r['quantize_seconds'])"
    grep -E "GPU:|host:" "$RES/gptq-$t.err" | tail -3
  done ;;
esac; keep; done
