#!/usr/bin/env bash
# Builds the page's wasm: lutlab-wasm for wasm32, then wasm-bindgen's JS glue into web/pkg/.
# Installs the wasm32 target and wasm-bindgen-cli (at the exact version of the wasm-bindgen
# crate in Cargo.lock: the CLI and the crate must match) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"

rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "build-web: installing wasm-bindgen-cli $version"
  cargo install wasm-bindgen-cli --version "$version" --force --quiet
fi

# getrandom's browser backend (crypto.getRandomValues) is opted into by this cfg.
RUSTFLAGS='--cfg getrandom_backend="wasm_js"' \
  cargo build --release --target wasm32-unknown-unknown -p lutlab-wasm
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/lutlab_wasm.wasm"
echo "build-web: web/pkg/lutlab_wasm_bg.wasm $(du -h web/pkg/lutlab_wasm_bg.wasm | cut -f1)"
