#!/usr/bin/env bash
# Installs what a fresh machine lacks for lutlab: Mesa's Vulkan drivers (lavapipe runs wgpu on the
# CPU when there is no GPU). Idempotent: each step is skipped when already done. Sourced by
# scripts/play.sh and scripts/test.sh.
set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
# libvulkan1 + a Vulkan driver: lavapipe (CPU) ships in mesa-vulkan-drivers.
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
for pkg in "${LUTLAB_EXTRA_APT[@]:-}"; do
  [ -n "$pkg" ] && { dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg"); }
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
