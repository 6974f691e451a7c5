#!/usr/bin/env bash
# The main job: evaluates the shipped GPT-2 model's perplexity on WikiText-2 test on the GPU.
# Extra arguments go to `lutlab eval` (e.g. --model DIR --data FILE --json).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo run --release -q -p lutlab-cli -- eval "$@"
