#!/usr/bin/env bash
# Runs one cross-crate test binary, built here (release, stripped, xz'd into .carry/tests/NAME.xz),
# on the device GPU through Vulkan. The binary finds the repository through the path it was built
# in (CARGO_MANIFEST_DIR), so that path is made to point at this copy.
# Device: run with carry [".carry/tests/NAME.xz", ".gl"] (one binary per run: the tree is capped at 64 MiB).
set -eo pipefail
name=$1; shift
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
built_in=${BUILT_IN:-/work/main}
if [ "$(pwd)" != "$built_in" ] && [ ! -e "$built_in" ]; then mkdir -p "$(dirname "$built_in")" && ln -s "$(pwd)" "$built_in"; fi
xz -d -k -f ".carry/tests/$name.xz" && chmod +x ".carry/tests/$name"
nvidia-smi --query-gpu=name --format=csv,noheader
".carry/tests/$name" --test-threads=1 --nocapture "$@"
