#!/usr/bin/env bash
# The main job: builds the page (Rust -> wasm) and serves it on localhost; open the printed URL in
# a browser with WebGPU. The page loads the shipped model and evaluates it on your GPU.
# Options go to the server: --port N (default 8080), --host ADDR.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
bash scripts/build-web.sh
exec node web/serve.mjs "$@"
