#!/usr/bin/env bash
# Llama-2-7B-shaped model (random f16 weights, scripts/make_llama7b_shaped.py: the real checkpoint
# is not reachable from the device) end to end on the device: `lutlab fisher` (seqlen 2048),
# per-channel 4-bit `lutlab quantize --gpu` with that Fisher, `lutlab eval` of the packed model on
# about 32k tokens of WikiText-2 test, then the PyTorch + sklearn peers measured on a few layers
# and projected (scripts/bench_7b_peers.py). Each phase runs under /usr/bin/time -v (peak RSS) and
# `timeout $PHASE_TIMEOUT`, with nvidia-smi's used memory polled every 200 ms (peak GPU).
# Carry .carry (lutlab, xz) and .gl.
#
# Environment: MODEL (/tmp/llama7b), NSAMPLES (2), MICRO (1), FISHER_EXTRA (extra fisher flags), RESTARTS (1), QUANT_EXTRA (extra
# quantize flags, split on spaces), EVAL_CHARS (110000: ~32k tokens of the 4096-id BPE),
# PEERS_EXTRA (extra bench_7b_peers.py flags), PHASE_TIMEOUT (560 s), SKIP_FISHER / SKIP_QUANTIZE /
# SKIP_EVAL / SKIP_PEERS=1, NO_FISHER=1
# (quantize without Fisher weights). Disk: model 13.5 GB + Fisher (f32 linears) ~26 GB + packed ~3.5 GB.
# Out ($OUT): bench7b.log, PHASE.json, gpu_PHASE.csv, time_PHASE.txt, summary.txt, summary.json.
set -o pipefail
source scripts/device_env.sh
MODEL=${MODEL:-/tmp/llama7b}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-560}
LOG=$OUT/bench7b.log
ROWS=$OUT/summary_rows.txt
: > "$ROWS"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

{
  echo "=== bench_7b $(date -u +%FT%TZ) MODEL=$MODEL NSAMPLES=${NSAMPLES:-2} MICRO=${MICRO:-2} RESTARTS=${RESTARTS:-1} QUANT_EXTRA=${QUANT_EXTRA:-} PHASE_TIMEOUT=$PHASE_TIMEOUT"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>&1
  echo "--- df -h"; df -h / /tmp "$OUT" 2>&1
  echo "--- free -g"; free -g
  echo "--- nproc $(nproc)"
  python3 -c "import torch, transformers, sklearn; print('torch', torch.__version__, 'transformers', transformers.__version__, 'sklearn', sklearn.__version__)" 2>&1
} >> "$LOG"

# `time -v` where GNU time is installed, else a Python stand-in writing the same two lines.
timev() {  # time file, command...
  local file=$1; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$file" "$@"
  else
    python3 - "$file" "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.time()
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(f"\tMaximum resident set size (kbytes): {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
    f.write(f"\tElapsed (wall clock) time (seconds): {time.time() - t0:.2f}\n\tExit status: {rc}\n")
sys.exit(rc)
PY
  fi
}

# Runs one phase: stdout to $OUT/NAME.json, stderr to the log; adds a summary row.
phase() {  # name, command...
  local name=$1; shift
  log "phase $name: $*"
  local idle=0
  if command -v nvidia-smi >/dev/null; then
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpu_$name.csv" &
  else
    : > "$OUT/gpu_$name.csv"; sleep 1000000 &
  fi
  local smi=$!
  local t0 t1 rc
  t0=$(date +%s.%N)
  timev "$OUT/time_$name.txt" timeout -k 15 "$PHASE_TIMEOUT" "$@" > "$OUT/$name.json" 2>> "$LOG"
  rc=$?
  t1=$(date +%s.%N)
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  local wall rss gpu
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
  rss=$(awk -F': ' '/Maximum resident set size/{printf "%.2f", $2 / 1048576}' "$OUT/time_$name.txt" 2>/dev/null)
  gpu=$(awk 'BEGIN{m=0} /^ *[0-9]+/{if ($1 + 0 > m) m = $1 + 0} END{print m}' "$OUT/gpu_$name.csv")
  grep -E "Maximum resident set size|Elapsed|Exit status" "$OUT/time_$name.txt" >> "$LOG" 2>/dev/null
  local status=ok
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && status="timeout($PHASE_TIMEOUT s)"
  [ "$rc" != 0 ] && [ "$status" = ok ] && status="rc=$rc"
  log "phase $name: $status, ${wall} s wall, peak RSS ${rss:-?} GiB, peak GPU ${gpu} MiB (idle ${idle} MiB)"
  { echo "--- $name.json"; tail -c 4000 "$OUT/$name.json"; echo; } >> "$LOG"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "${rss:-?}" "$gpu" "$idle" "$status" >> "$ROWS"
  return "$rc"
}

skipped() {  # name, why
  log "phase $1: skipped ($2)"
  printf '%s\t-\t-\t-\t-\t%s\n' "$1" "skipped: $2" >> "$ROWS"
}

# The checkpoint (once; it stays in $MODEL between runs on a warm machine).
if [ -f "$MODEL/config.json" ] && [ -f "$MODEL/model.safetensors.index.json" ]; then
  log "checkpoint $MODEL exists: $(du -sh "$MODEL" | cut -f1)"
else
  phase make python3 scripts/make_llama7b_shaped.py --out "$MODEL" || { log "could not make $MODEL"; }
  df -h "$MODEL" >> "$LOG" 2>&1
fi

FISHER=$MODEL-fisher.safetensors
PACKED=$MODEL-4bit.safetensors

if [ "${SKIP_FISHER:-0}" = 1 ]; then
  skipped fisher SKIP_FISHER
else
  rm -f "$FISHER"
  phase fisher .carry/lutlab fisher --model "$MODEL" --data data/wikitext-2/valid.txt --nsamples "${NSAMPLES:-2}" \
    --seqlen 2048 --micro-batch "${MICRO:-1}" ${FISHER_EXTRA:-} --out "$FISHER" --json || rm -f "$FISHER"  # no partial file
fi

if [ "${SKIP_QUANTIZE:-0}" = 1 ]; then
  skipped quantize SKIP_QUANTIZE
elif [ ! -f "$FISHER" ] && [ "${NO_FISHER:-0}" != 1 ]; then
  skipped quantize "no $FISHER (fisher failed or skipped without one; NO_FISHER=1 quantizes unweighted)"
else
  rm -f "$PACKED"
  WEIGHTS=(--fisher "$FISHER"); [ "${NO_FISHER:-0}" = 1 ] && WEIGHTS=()
  # shellcheck disable=SC2086  # QUANT_EXTRA is a list of flags
  phase quantize .carry/lutlab quantize --model "$MODEL" "${WEIGHTS[@]}" --granularity channel --bits 4 --gpu \
    --restarts "${RESTARTS:-1}" --packed "$PACKED" --json ${QUANT_EXTRA:-} || rm -f "$PACKED"
fi

if [ "${SKIP_EVAL:-0}" = 1 ]; then
  skipped eval SKIP_EVAL
elif [ ! -f "$PACKED" ]; then
  skipped eval "no $PACKED (quantize failed or skipped without one)"
else
  # The first EVAL_CHARS characters (not bytes: the text must stay valid UTF-8) of WikiText-2
  # test, about 32k tokens; lutlab's JSON reports the exact `tokens` and `scored`.
  python3 -c "import sys; open(sys.argv[2], 'w', encoding='utf-8').write(open(sys.argv[1], encoding='utf-8').read()[:int(sys.argv[3])])" \
    data/wikitext-2/test.txt "$OUT/test32k.txt" "${EVAL_CHARS:-110000}"
  phase eval .carry/lutlab eval --packed "$PACKED" --model "$MODEL" --data "$OUT/test32k.txt" \
    --max-length 2048 --stride 2048 --json
fi

if [ "${SKIP_PEERS:-0}" = 1 ]; then
  skipped peers SKIP_PEERS
else
  # shellcheck disable=SC2086
  phase peers python3 scripts/bench_7b_peers.py --model "$MODEL" --seqlen 2048 ${PEERS_EXTRA:-}
fi

{ echo "--- df -h"; df -h / /tmp 2>&1; echo "--- free -g"; free -g; } >> "$LOG"

# The table, and lutlab beside the peers' projections where both sides ran.
{
  printf '%-9s %10s %13s %13s %13s  %s\n' phase wall_s peak_rss_GiB peak_gpu_MiB idle_gpu_MiB status
  while IFS=$'\t' read -r name wall rss gpu idle status; do
    printf '%-9s %10s %13s %13s %13s  %s\n' "$name" "$wall" "$rss" "$gpu" "$idle" "$status"
  done < "$ROWS"
} > "$OUT/summary.txt"
python3 - "$OUT" >> "$OUT/summary.txt" 2>> "$LOG" <<'PY'
import json, sys
out = sys.argv[1]

def load(name):
    try:
        return json.loads(open(f"{out}/{name}.json").read().strip().splitlines()[-1])
    except Exception:
        return None

f, q, e, p = load("fisher"), load("quantize"), load("eval"), load("peers")
s = {}
if f:
    s["lutlab_fisher"] = {"seconds": f.get("seconds"), "nsamples": f.get("nsamples"), "tokens_per_s": f.get("tokens_per_s"),
                          "seconds_per_window": f["seconds"] / f["nsamples"] if f.get("seconds") and f.get("nsamples") else None,
                          "peak_reserved_bytes": f.get("peak_reserved_bytes")}
if q:
    s["lutlab_quantize"] = {"quantize_seconds": q.get("quantize_seconds"), "bits_per_weight": q.get("bits_per_weight"),
                            "packed_bytes": q.get("packed_bytes")}
if e:
    s["lutlab_eval"] = {k: e.get(k) for k in ("perplexity", "tokens", "scored", "seconds", "tokens_per_s")}
if p:
    for k in ("fisher_torch", "eval_torch", "kmeans_sklearn"):
        if k not in p:
            continue
        v = p[k]
        if k == "fisher_torch":
            s[k] = {m: {x: v[m].get(x) for x in ("seconds_per_window", "projected_seconds", "tokens_per_s", "layer_peak_allocated_bytes")}
                    for m in ("float32", "bfloat16_autocast")}
        elif k == "eval_torch":
            s[k] = {x: v.get(x) for x in ("seconds_per_window", "projected_seconds", "tokens", "tokens_per_s")}
        else:
            s[k] = {"projected_seconds": v.get("projected_seconds"),
                    "ms_per_channel": {kind: t["ms_per_channel"] for kind, t in v.get("timed", {}).items()}}
ratios = {}
try:
    ratios["fisher_speedup_vs_torch_f32_per_window"] = s["fisher_torch"]["float32"]["seconds_per_window"] / s["lutlab_fisher"]["seconds_per_window"]
except Exception:
    pass
try:
    ratios["kmeans_speedup_vs_sklearn"] = s["kmeans_sklearn"]["projected_seconds"] / s["lutlab_quantize"]["quantize_seconds"]
except Exception:
    pass
try:
    ratios["eval_tokens_per_s_ratio_vs_torch_f16"] = s["lutlab_eval"]["tokens_per_s"] / s["eval_torch"]["tokens_per_s"]
except Exception:
    pass
s["ratios"] = ratios
open(f"{out}/summary.json", "w").write(json.dumps(s, indent=1) + "\n")
print()
print(json.dumps(s, indent=1))
PY
tee -a "$LOG" < "$OUT/summary.txt"
