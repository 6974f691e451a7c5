#!/usr/bin/env bash
# Runs every lutlab test: Rust unit and integration tests (GPU kernels on wgpu; lavapipe when
# there is no GPU), the wasm build of the page, and the page itself in Chromium (SwiftShader
# WebGPU) against the native CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
export LUTLAB_FOR_TESTS=1
source scripts/setup.sh

echo "== cargo build + test (release) =="
# One feature set for every native build: the e2e tests run this build's `lutlab` binary.
cargo build --release --workspace
cargo test --release --workspace

echo "== benchmark smoke run (every \`lutlab bench\` on lavapipe; no timing assertions) =="
lutlab="$CARGO_TARGET_DIR/release/lutlab"
"$lutlab" bench kernels --quick
"$lutlab" bench requantize --shape 128x512 --bits 4 --iters 1 --no-cpu
"$lutlab" bench pipeline --quick
"$lutlab" bench stream --model models/llama-tiny-wikitext --rounds 1
"$lutlab" bench tokenize --model models/gpt2-tiny-wikitext --data data/wikitext-2/valid.txt --rounds 1

echo "== wasm build =="
bash scripts/build-web.sh

echo "== browser tests =="
(cd tests/e2e && npm ci --no-audit --no-fund --silent && npm test)
echo "all tests passed"
