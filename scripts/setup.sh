#!/usr/bin/env bash
# Installs what a fresh machine lacks for lutlab, idempotently (each step is skipped when done):
# Mesa's Vulkan drivers (lavapipe runs wgpu on the CPU when there is no GPU), Node.js (serves
# the page) and binaryen (wasm-opt, for the page's module). With LUTLAB_FOR_TESTS=1 also Chromium
# (the real-browser tests). Sourced by scripts/play.sh and scripts/test.sh.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
command -v node >/dev/null || need_apt+=(nodejs)
# wasm-opt, which scripts/build-web.sh runs on the page's module (Debian's binaryen 108 reads
# every wasm feature rustc emits by default).
command -v wasm-opt >/dev/null || need_apt+=(binaryen)
if [ "${LUTLAB_FOR_TESTS:-0}" = 1 ]; then
  command -v npm >/dev/null || need_apt+=(npm)
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Vulkan loaders complain without it (harmless, but noisy in test output).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
