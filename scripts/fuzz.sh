#!/usr/bin/env bash
# Long fuzzing of lutlab's file parsers (issue 21, item 5): each target in fuzz/ runs under
# libFuzzer (cargo-fuzz) for RUNS executions, one after another, starting from and adding to the
# corpus fuzz/corpus/<target>/, which is then minimized (`cargo fuzz cmin`). The corpus is
# committed as fuzz/corpus.tar.xz (0.2 MB instead of 4.5 MB of small files in every copy of the
# tree, the device's 64 MiB included): unpacked here when missing, packed again at the end.
# Run it once per change of a parser, not in CI; put the summary it prints in BENCHMARKS.md.
#
#   bash scripts/fuzz.sh                    # every target, 1,000,000 executions each
#   RUNS=10000 bash scripts/fuzz.sh packed_file
#
# A crash, panic, timeout or out-of-memory leaves its input in fuzz/artifacts/<target>/ and the
# script goes on with the next target, failing at the end. Reproduce one with
# `cargo +nightly fuzz run -s none -a <target> fuzz/artifacts/<target>/<file>` in fuzz/, fix the
# parser, and copy the input to tests/fixtures/fuzz_regressions/ with a test (tests/properties.rs).
#
# Environment: RUNS (default 1000000), MINIMIZE (1: cmin the corpus after the run; default 1),
# CARGO_TARGET_DIR (default ~/.cache/lutlab-fuzz: the instrumented build stays out of the
# repository), NICE (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-1000000}
MINIMIZE=${MINIMIZE:-1}
NICE=${NICE:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-fuzz}
# The native readers take paths: their scratch files go to a RAM disk where there is one.
base=/tmp
if [ -d /dev/shm ] && [ -w /dev/shm ]; then base=/dev/shm; fi
SCRATCH=$(mktemp -d "$base/lutlab-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export TMPDIR=$SCRATCH

ALL_TARGETS=(safetensors_checkpoint packed_file tokenizer_files config_json)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

rustup toolchain list | grep '^nightly' > /dev/null || { echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Per target: the largest input libFuzzer makes (seeds are 1-12 KB) and the dictionaries it
# mutates with.
max_len() { case $1 in config_json) echo 4096 ;; *) echo 16384 ;; esac; }
dicts() {
  case $1 in
    safetensors_checkpoint) echo safetensors ;;
    packed_file) echo "safetensors packed config" ;;
    tokenizer_files) echo tokenizer ;;
    config_json) echo config ;;
  esac
}

# -s none: the targets are safe Rust (no memory errors for ASan to find), so no sanitizer and
# ~2x the executions; -a: debug assertions and overflow checks, so an overflow is a crash.
FLAGS=(-s none -a)
cd fuzz
[ -d corpus ] || tar -xJf corpus.tar.xz
nice -n "$NICE" cargo +nightly fuzz build "${FLAGS[@]}"

LOGS=$CARGO_TARGET_DIR/fuzz-logs
mkdir -p "$LOGS"
summary=()
failed=0
for target in "${TARGETS[@]}"; do
  dict=$LOGS/$target.dict
  for d in $(dicts "$target"); do cat "dict/$d.dict"; done > "$dict"
  mkdir -p "corpus/$target" "artifacts/$target"
  log=$LOGS/$target.log
  echo "== $target: $RUNS executions (log: $log)"
  start=$(date +%s)
  status=ok
  # One process (no -jobs/-workers): the runs count is then exact, and the machine's other
  # work keeps its cores. -timeout: an input slower than 10 s is a hang.
  nice -n "$NICE" cargo +nightly fuzz run "${FLAGS[@]}" "$target" "corpus/$target" -- \
    -runs="$RUNS" -max_len="$(max_len "$target")" -dict="$dict" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 > "$log" 2>&1 || status=FAILED
  wall=$(( $(date +%s) - start ))
  runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
  if [ "$status" != ok ]; then
    failed=1
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 || true
  elif [ "$MINIMIZE" = 1 ]; then
    # cmin keeps the smallest inputs that together reach every edge the corpus reaches
    # (-use_counters=0: edges, not hit counts, which would keep ~3x the files).
    nice -n "$NICE" cargo +nightly fuzz cmin "${FLAGS[@]}" "$target" "corpus/$target" -- \
      -max_len="$(max_len "$target")" -timeout=10 -use_counters=0 > "$LOGS/$target.cmin.log" 2>&1
  fi
  files=$(find "corpus/$target" -type f | wc -l)
  kb=$(( $(du -sb "corpus/$target" | cut -f1) / 1024 ))
  summary+=("| \`$target\` | $runs | ${wall} s | $files files, $kb KB | cov $cov, ft $ft | $status |")
  echo "   $runs runs in $wall s, cov $cov ft $ft, corpus $files files ($kb KB): $status"
done

echo
echo "fuzzed $(date -u +%Y-%m-%d) on $(nproc) cores, $(rustc +nightly --version)"
echo "| target | executions | wall | corpus after cmin | coverage (cov, ft) | result |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
# Sorted names and fixed owners and times: the archive changes only when the corpus does.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - corpus | xz -9e -T0 > corpus.tar.xz
cd "$ROOT"
exit $failed
