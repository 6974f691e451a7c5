#!/usr/bin/env bash
# Runs every lutlab test: Rust unit and integration tests (GPU kernels on wgpu, lavapipe when
# there is no GPU), and the wasm32 build of the browser crates.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

echo "== cargo test (release) =="
cargo test --release --workspace

echo "== wasm32 build =="
RUSTFLAGS='--cfg getrandom_backend="wasm_js"' cargo build --release --target wasm32-unknown-unknown -p lutlab-model
echo "all tests passed"
