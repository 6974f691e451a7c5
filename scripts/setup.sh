#!/usr/bin/env bash
# Installs what a fresh machine lacks for lutlab, idempotently (each step is skipped when done):
# Mesa's Vulkan drivers (lavapipe runs wgpu on the CPU when there is no GPU), Node.js (serves
# the page), npm and binaryen (wasm-opt, for the page's module). With LUTLAB_FOR_TESTS=1 also Chromium
# (the real-browser tests) and onnxruntime's CPU wheel in a virtual environment (the ONNX export's
# test). Sourced by scripts/play.sh and scripts/test.sh.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
command -v node >/dev/null || need_apt+=(nodejs)
# npm: binaryen's wasm-opt for scripts/build-web.sh comes from npm (below).
command -v npm >/dev/null || need_apt+=(npm)
if [ "${LUTLAB_FOR_TESTS:-0}" = 1 ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# binaryen 132 (wasm-opt), pinned in scripts/wasm-opt/package-lock.json: Debian's binaryen 108 turns
# wasm-bindgen's externref table into a funcref table, which Chromium refuses.
wasm_opt_dir="$(dirname "${BASH_SOURCE[0]}")/wasm-opt"
if [ ! -x "$wasm_opt_dir/node_modules/.bin/wasm-opt" ]; then
  echo "setup: installing binaryen (npm) for wasm-opt"
  (cd "$wasm_opt_dir" && npm ci --no-audit --no-fund --silent)
fi
# onnxruntime runs `lutlab export --onnx-qcdq`'s files in the tests, after onnx's checker
# (crates/lutlab-cli/tests/onnx.rs).
if [ "${LUTLAB_FOR_TESTS:-0}" = 1 ]; then
  venv="${LUTLAB_VENV:-$HOME/.cache/lutlab-venv}"
  if ! "$venv/bin/python" -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then
    echo "setup: installing onnxruntime and onnx (pip, in $venv)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime==1.30.0 onnx==1.23.1 numpy==2.4.6
  fi
  export LUTLAB_PYTHON="$venv/bin/python"
fi
# Vulkan loaders complain without it (harmless, but noisy in test output).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
