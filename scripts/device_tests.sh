#!/usr/bin/env bash
# The GPU test suite on the device's GPU (issue 21, item 2): every GPU test file (fixtures against
# transformers, LUT kernels, Fisher, Hessians, packed evaluation, families, streaming) compiled
# into one binary (tests/device.rs), because the device has no Rust and its tree is capped at
# 64 MiB. Run for every change that touches kernels or the model, and record the result in
# BENCHMARKS.md ("The GPU tests on the device").
#
#   here:    bash scripts/device_tests.sh build      (release build, stripped, .carry/tests/device.xz)
#   device:  bash scripts/device_tests.sh run [FILTER...]
#            with carry [".carry/tests/device.xz", ".gl"] (9.1 MB + 0.4 MB beside the 57.2 MB of
#            tracked files, under the 64 MiB cap)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  build)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"
    bin=$(cargo test --release --workspace --features lutlab-tests/device --test device --no-run --message-format=json \
      | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
    mkdir -p .carry/tests
    strip -o .carry/tests/device "$bin"
    xz -9e -T0 -f .carry/tests/device
    ls -l .carry/tests/device.xz
    ;;
  run)
    shift
    # --nocapture: the tests print each measured error beside its bound.
    exec bash scripts/device_gpu_test.sh device "$@"
    ;;
  *) echo "usage: $0 build | run [FILTER...]" >&2; exit 2 ;;
esac
