#!/usr/bin/env bash
# Where Fisher's time goes on the device (issues 17, 23), in one call, parts in this order
# (PARTS, default "gpt2 kernels llama7b profile"; also "ops" and "stream"):
#   gpt2     the GPT-2 124M-shaped Fisher (8 windows of 1024, WikiText-2 valid, --warm-up) at
#            micro-batch 1 and 4 (MICRO_BATCHES) with the fused kernels (the GPU default: norms, softmax, GELU
#            under autodiff, the head's loss gradient) and with burn's ops (LUTLAB_FUSED=0),
#            beside PyTorch eager f32 (scripts/fisher_peer.py) in the same call;
#   kernels  `lutlab bench kernels` with the dispatch floor beside PyTorch's (SHAPES);
#   llama7b  one 2048-token window of the Llama-2-7B-shaped Fisher at micro-batch 1 per BPP value
#            (blocks per pass; "default" = the CLI's), with its phases, peak GPU and host memory
#            (scripts/bench_7b.sh; PHASE_TIMEOUT, default 200 s a run);
#   profile  the GPT-2 Fisher once with cubecl's per-kernel profile (scripts/cubecl_profile.py)
#            and once with LUTLAB_PROFILE=1's phases.
#   ops      `lutlab bench model-ops` (our matmul and burn's at evaluation's and Fisher's block
#            backward shapes, attention);
#   stream   `lutlab bench stream` over the Llama-2-7B-shaped checkpoint (made if missing): a
#            streamed block's read and upload, with the host's share (LUTLAB_PROFILE=1).
# Carry .carry/lutlab.xz and .gl.
set -o pipefail
PARTS=" ${PARTS:-gpt2 kernels llama7b profile} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
source scripts/device_env.sh >/dev/null 2>&1
O=$OUT
L=$PWD/.carry/lutlab
M=/tmp/gpt2-124m; make_gpt2_124m $M > /dev/null 2>&1
head -c 400000 data/wikitext-2/valid.txt > /tmp/valid400k.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$O/gpu.txt"
if part gpt2; then
  for fused in 1 0; do
    for mb in ${MICRO_BATCHES:-1 4}; do
      LUTLAB_FUSED=$fused $L fisher --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --micro-batch $mb --warm-up \
        --out /tmp/f$fused.safetensors --json 2>>"$O/errors.txt" | tee -a "$O/fisher.jsonl" \
        | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('fisher fused=$fused mb=$mb', round(r['tokens_per_s']), 'tokens/s, loss', r['mean_loss'], 'peak', r['peak_reserved_bytes'])"
    done
  done
  python3 scripts/fisher_peer.py --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 | tee "$O/fisher_peer.json"
fi
if part kernels; then
  SHAPES=${SHAPES:-768x2304,4096x4096,4096x11008,11008x4096}
  $L bench kernels --shapes "$SHAPES" --bits 2,4 --iters 500 --json > "$O/kernels.json" 2>/dev/null
  python3 scripts/bench_peers.py --shapes "$SHAPES" --iters 500 > "$O/peers.json"
  python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
ours = json.loads(open(f"{o}/kernels.json").read().strip().splitlines()[-1])["kernels"]
peers = json.load(open(f"{o}/peers.json"))["kernels"]
for side, rows in (("ours", ours), ("", peers)):
    for k in rows:
        if "gemm" not in k["kernel"] and "model" not in k["kernel"]:
            print(side, k["kernel"], k.get("rows", ""), k.get("cols", ""), round(k["micros"], 2))
PY
fi
if part llama7b; then
  for bpp in ${BPP:-default}; do
    extra=""; [ "$bpp" != default ] && extra="--blocks-per-pass $bpp"
    OUT=$O/llama7b-bpp$bpp NSAMPLES=1 MICRO=1 SKIP_QUANTIZE=1 SKIP_EVAL=1 SKIP_PEERS=1 PHASE_TIMEOUT=${PHASE_TIMEOUT:-200} \
      FISHER_EXTRA="$extra" LUTLAB_PROFILE=1 bash scripts/bench_7b.sh > /dev/null 2>&1
    grep -E "phase|profile" "$O/llama7b-bpp$bpp/bench7b.log" | cut -c1-1200
  done
fi
if part ops; then
  $L bench model-ops --iters 20 2>&1 | tee "$O/model-ops.txt" | grep -v "unavailable"
fi
if part stream; then
  [ -f /tmp/llama7b/config.json ] || python3 scripts/make_llama7b_shaped.py --out /tmp/llama7b > /dev/null
  LUTLAB_PROFILE=1 $L bench stream --model /tmp/llama7b --rounds 2 2>&1 | tee "$O/stream.txt"
fi
if part profile; then
  dir=/tmp/profile-fisher; mkdir -p $dir
  printf '[profiling.logger]\nlevel = "basic"\nfile = "%s/cubecl.log"\n' "$dir" > "$dir/cubecl.toml"
  start=$(date +%s.%N)
  (cd $dir && $L fisher --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --out /tmp/f.safetensors --json > $dir/run.json 2>/dev/null)
  end=$(date +%s.%N)
  python3 scripts/cubecl_profile.py "$dir/cubecl.log" --wall "$(python3 -c "print($end - $start)")" > "$O/profile_fisher_gpt2.txt"
  head -40 "$O/profile_fisher_gpt2.txt" | tail -38
  LUTLAB_PROFILE=1 $L fisher --model $M --data /tmp/valid400k.txt --seqlen 1024 --nsamples 8 --out /tmp/f.safetensors --json 2>&1 | tee "$O/phases_fisher_gpt2.txt" | cut -c1-1200
fi
