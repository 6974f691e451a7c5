#!/usr/bin/env bash
# The model's f32 matmul on our kernel (shaders/gemm.wgsl) against burn's, and the fused norms
# and softmax (shaders/norm.wgsl, softmax.wgsl; on by default on GPUs) against burn's separate
# kernels (LUTLAB_FUSED=0), in one device run:
#   1. `bench model-ops`: both at GPT-2 124M's evaluation shapes, 512 x 4096 x 11008, an HF
#      `[out, in]` weight (Bᵀ) and a Hessian's xᵀx (Aᵀ);
#   2. dense evaluation of a GPT-2 124M-shaped model (window 1024, 100,000 characters of
#      WikiText-2 test), cold, warm (second process) and warmed (`--warm-up`, as PyTorch is timed),
#      fused norms/softmax/loss on and off, LUTLAB_MATMUL=burn vs =gemm, and PyTorch;
#   3. GPTQ of the same model (scripts/bench_gptq_speed.sh's command, NSAMPLES windows of 1024,
#      default 128) with each matmul, beside PyTorch's GPTQ (scripts/bench_gptq_peer.py);
#   4. `bench kernels` GEMM rows (LUT GEMM = dequantize + the model's matmul) at 4096 x 11008;
#   5. Fisher of the same model (8 windows of 1024, micro-batch 1 and 4, `--warm-up` as
#      scripts/fisher_peer.py warms up) with each matmul (ours runs inside autodiff graphs through
#      tracked_gemm), beside PyTorch.
# Device: carry [".carry/lutlab.xz", ".gl"]. JSON rows in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
L=.carry/lutlab
M=/tmp/gpt2-124m; [ -f "$M/model.safetensors" ] || make_gpt2_124m "$M"
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
tag() { python3 -c "import json,sys; r=json.loads(sys.stdin.readlines()[-1]); r.update(dict(a.split('=',1) for a in sys.argv[1:])); print(json.dumps(r))" "$@"; }
PARTS=${PARTS:-"ops eval gptq kernels fisher"}
for part in $PARTS; do case $part in
ops)
  for mm in burn gemm; do LUTLAB_MATMUL=$mm $L bench model-ops --iters 50 > "$OUT/model-ops-$mm.txt"; done
  cat "$OUT/model-ops-gemm.txt" | grep -E "model's|burn's|SimpleUnit|attention" ;;
eval)
  # cold: a fresh process; warm: the next one (driver caches warm); warmed: --warm-up, the text
  # evaluated once untimed in the same process first, as scripts/eval_peer.py times PyTorch.
  for fused in 0 1; do for mm in burn gemm; do for round in cold warm warmed; do
    LUTLAB_FUSED=$fused LUTLAB_MATMUL=$mm $L eval --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 $([ $round = warmed ] && echo --warm-up) --json 2>>"$OUT/errors.txt" | tag fused=$fused matmul=$mm round=$round | tee -a "$OUT/eval.jsonl"
  done; done; done
  python3 scripts/eval_peer.py --model $M --data /tmp/test100k.txt --max-length 1024 --stride 1024 | tee "$OUT/eval_peer.json" ;;
gptq)
  N=${NSAMPLES:-128}
  python3 scripts/bench_gptq_peer.py $M data/wikitext-2/valid.txt $N 1024 | tee "$OUT/gptq_peer.json"
  for mm in burn gemm; do
    LUTLAB_FUSED=1 LUTLAB_MATMUL=$mm LUTLAB_PROFILE=1 $L quantize --gpu --model $M --method gptq --bits 4 --granularity channel --asym --calibration-data data/wikitext-2/valid.txt \
      --hessian-samples $N --hessian-seqlen 1024 --packed /tmp/q.lut --json 2> "$OUT/gptq-$mm.err" | tag matmul=$mm | tee -a "$OUT/gptq.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('gptq', '$mm', r['quantize_seconds'])"
    grep -E "GPU:|host:" "$OUT/gptq-$mm.err" | tail -4
  done ;;
kernels)
  for mm in burn gemm; do LUTLAB_MATMUL=$mm $L bench kernels --shapes 4096x11008,768x3072 --bits 4 --iters 200 --gemm-tokens 512 > "$OUT/kernels-$mm.txt" 2>&1; grep -iE "gemm|matmul|model" "$OUT/kernels-$mm.txt"; done ;;
fisher)
  head -c 400000 data/wikitext-2/valid.txt > /tmp/valid400k.txt
  for mb in 1 4; do for mm in burn gemm; do
    LUTLAB_MATMUL=$mm $L fisher --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --micro-batch $mb --warm-up --out /tmp/f.safetensors --json 2>>"$OUT/errors.txt" | tag matmul=$mm | tee -a "$OUT/fisher.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('fisher', 'mb=$mb', '$mm', round(r['tokens_per_s']), 'tokens/s')"
  done; done
  python3 scripts/fisher_peer.py --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 | tee "$OUT/fisher_peer.json" ;;
esac; done
