#!/usr/bin/env bash
# Issue 23's suite (issue 10's, extended) on the device: lutlab and its peers in one run on one
# GPU, then the ratios against the goals (scripts/bench_ratios.py → ratios.md and ratios.json).
# Carry .carry (lutlab, xz) and .gl (see device_env.sh). NSAMPLES (Fisher windows of the GPT-2
# 124M-shaped pipeline, default 128, the issue's) and EVAL_TOKENS (default: all of WikiText-2
# test) size the pipeline. PARTS picks what runs (default all: "cli kernels pipeline profile
# ratios"; `cli` first, so that its first round is the first lutlab process on the machine),
# so that a device command stays under its time limit: run the parts in turn with the same OUT.
# Every figure lands in $RES; $OUT/suite.tar holds them after each part (a device call returns
# at most 8 files).
set -euo pipefail
PARTS=" ${PARTS:-cli kernels pipeline profile ratios} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
source scripts/device_env.sh
RES=${RES:-/tmp/suite-results}; mkdir -p "$RES"
keep() { tar cf "$OUT/suite.tar" -C "$RES" .; }
NSAMPLES=${NSAMPLES:-128}
EVAL_ARGS=(); [ -n "${EVAL_TOKENS:-}" ] && EVAL_ARGS=(--eval-tokens "$EVAL_TOKENS")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
M=/tmp/gpt2-124m
[ -f "$M/model.safetensors" ] || make_gpt2_124m "$M"
SHAPES=${SHAPES:-4096x11008,11008x4096,4096x4096}

# The GPT-2 124M-shaped pipeline as a user runs it (the pipeline's settings: k-means on the GPU
# with one restart as sklearn's n_init="auto", evaluation windows of 1024 at stride 512, every
# token of test): separate CLI commands, each a fresh process,
# two rounds: "cold" (the first lutlab processes on this machine: every shader compiled; the
# NVIDIA driver then keeps them on disk) and "warm" (the next processes). Wall clock per command
# beside its own `seconds`.
if part cli; then
  for round in cold warm; do
    for step in fisher quantize eval; do
      case $step in
        fisher) cmd=(fisher --model "$M" --data data/wikitext-2/valid.txt --seqlen 1024 --nsamples "$NSAMPLES" --micro-batch 1 --out /tmp/cli-fisher.safetensors --json) ;;
        quantize) cmd=(quantize --gpu --restarts 1 --model "$M" --method kmeans --bits 4 --granularity channel --fisher /tmp/cli-fisher.safetensors --packed /tmp/cli-packed.lut --json) ;;
        eval) cmd=(eval --model "$M" --packed /tmp/cli-packed.lut --data data/wikitext-2/test.txt --max-length 1024 --json) ;;
      esac
      start=$(date +%s.%N)
      .carry/lutlab "${cmd[@]}" 2>>"$RES/errors.txt" | tail -1 > /tmp/cli-step.json
      end=$(date +%s.%N)
      python3 - "$round" "$step" "$start" "$end" /tmp/cli-step.json <<'PY' | tee -a "$RES/cli.jsonl"
import json, sys
r = json.loads(open(sys.argv[5]).read())
keys = ("seconds", "quantize_seconds", "tokens_per_s", "perplexity", "scored_tokens")
print(json.dumps({"round": sys.argv[1], "step": sys.argv[2], "wall_seconds": float(sys.argv[4]) - float(sys.argv[3]), **{k: r[k] for k in keys if k in r}}))
PY
    done
  done
  keep
fi

# Kernels: GEMV (1 token, L2-cold: each layer rotated over copies larger than L2) and GEMM (512
# tokens), ours at 2, 3 and 4 bits, and PyTorch's.
if part kernels; then
  .carry/lutlab bench kernels --shapes "$SHAPES" --bits 2,3,4 --gemm-tokens 512 --iters 500 --json > "$RES/kernels.json"
  python3 scripts/bench_peers.py --shapes "$SHAPES" --iters 500 --gemm-tokens 512 > "$RES/peers.json"
  keep
fi

if part pipeline; then
# Each pipeline runs twice and the second is kept: the first process on a fresh machine compiles
# every shader (the driver caches them on disk), which cost the packed evaluation 3x once.
# The whole pipeline, shipped model (defaults: 128 Fisher windows of 256 tokens, all of test).
for run in warm-up kept; do
  .carry/lutlab bench pipeline --micro-batch 8 --json > "$RES/pipeline_shipped.json"
done
# GPT-2 124M-shaped: Fisher (one window per pass, the issue's memory bound) → 4-bit per-channel
# k-means (1 restart) → pack → packed eval, and the dense evaluation beside it.
for run in warm-up kept; do
  .carry/lutlab bench pipeline --model "$M" --seqlen 1024 --nsamples "$NSAMPLES" --micro-batch 1 \
    "${EVAL_ARGS[@]}" --save /tmp/pipeline-124m --json > "$RES/pipeline_124m.json"
done

# Peers on the same model and text (window 1024, stride 512 as the pipeline's evaluation).
python3 scripts/fisher_peer.py --model "$M" --data data/wikitext-2/valid.txt --nsamples "$NSAMPLES" --seqlen 1024 > "$RES/fisher_peer_124m.json"
python3 scripts/eval_peer.py --model "$M" --data data/wikitext-2/test.txt --tokens "${EVAL_TOKENS:-0}" --max-length 1024 > "$RES/eval_peer_124m.json"
python3 scripts/bench_sklearn.py --model "$M" --channels 64 --fisher /tmp/pipeline-124m/fisher.safetensors \
  --packed /tmp/pipeline-124m/packed.safetensors > "$RES/sklearn_124m.json"
keep
fi

# Where the time goes: cubecl's per-kernel profile (it waits for each kernel, so these runs are
# slower than the timed ones above; the shares are what count), summed by scripts/cubecl_profile.py.
profile() {  # NAME, then the lutlab arguments
  local name=$1 dir="/tmp/profile-$1"; shift
  mkdir -p "$dir"
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s/cubecl.log"\n' "$dir" > "$dir/cubecl.toml"
  local lutlab="$PWD/.carry/lutlab" start end
  start=$(date +%s.%N)
  (cd "$dir" && "$lutlab" "$@" > "$dir/run.json")
  end=$(date +%s.%N)
  python3 scripts/cubecl_profile.py "$dir/cubecl.log" --wall "$(python3 -c "print($end - $start)")" > "$RES/profile_$name.txt"
}
if part profile; then
head -c 100000 data/wikitext-2/test.txt > /tmp/test100k.txt
profile fisher_124m fisher --model "$M" --seqlen 1024 --nsamples 2 --out /tmp/profile-g.safetensors --json
profile eval_dense_124m eval --model "$M" --data /tmp/test100k.txt --json
profile eval_packed_124m eval --model "$M" --packed /tmp/pipeline-124m/packed.safetensors --data /tmp/test100k.txt --json
keep
fi

if part ratios; then python3 scripts/bench_ratios.py "$RES" | tee "$RES/ratios.md"; keep; fi
