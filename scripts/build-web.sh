#!/usr/bin/env bash
# Builds the page's wasm: lutlab-wasm for wasm32 under Cargo's `web` profile (LTO, stripped; native
# builds keep `release`), wasm-bindgen's JS glue, binaryen's wasm-opt, then brotli and gzip copies
# (`.br`, `.gz`) that web/serve.mjs sends to browsers that accept them; all into web/pkg/.
# Installs the wasm32 target and wasm-bindgen-cli (at the exact version of the wasm-bindgen
# crate in Cargo.lock: the CLI and the crate must match) when they are missing; wasm-opt comes
# from scripts/setup.sh (npm's `binaryen`, scripts/wasm-opt/).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lutlab-target}"

rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "build-web: installing wasm-bindgen-cli $version"
  cargo install wasm-bindgen-cli --version "$version" --force --quiet
fi

wasm_opt=scripts/wasm-opt/node_modules/.bin/wasm-opt
[ -x "$wasm_opt" ] || {
  echo "build-web: $wasm_opt is missing: run scripts/setup.sh (or: cd scripts/wasm-opt && npm ci)" >&2
  exit 1
}

profile=web
# Where the page's files go; another folder serves measurements of other opt-levels (BENCHMARKS.md).
out="${LUTLAB_WEB_OUT:-web/pkg}"
# The profile's opt-level (CARGO_PROFILE_WEB_OPT_LEVEL overrides it, as Cargo does); wasm-opt
# optimises for the same goal (-Os, -Oz or -O3).
opt_level="${CARGO_PROFILE_WEB_OPT_LEVEL:-$(awk '/^\[profile\.web\]/ { f = 1; next } /^\[/ { f = 0 }
  f && $1 == "opt-level" { gsub(/[^0-9sz]/, "", $3); print $3 }' Cargo.toml)}"

# getrandom's browser backend (crypto.getRandomValues) is opted into by this cfg.
RUSTFLAGS='--cfg getrandom_backend="wasm_js"' \
  cargo build --profile "$profile" --target wasm32-unknown-unknown -p lutlab-wasm
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile/lutlab_wasm.wasm"

# Everything after cargo depends only on its output and the steps below: skip it when web/pkg/ was
# made from this very output (a second run of this script is then a no-op).
stamp="$(stat -c '%Y %s' "$wasm") $opt_level $(cat "$0" web/compression.mjs | sha256sum | cut -c1-16)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out/lutlab_wasm_bg.wasm.br" ]; then
  echo "build-web: $out is up to date ($(du -h "$out/lutlab_wasm_bg.wasm" | cut -f1), br $(du -h "$out/lutlab_wasm_bg.wasm.br" | cut -f1))"
  exit 0
fi

# Built in a folder of this run's own beside the cargo output (two runs at once must not mix their
# files: a `.br` of one build beside the module of another breaks the page), then moved into
# web/pkg/ file by file (renames), so a page served from web/pkg/ never reads a half-written module.
staging="$(mktemp -d "$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile/pkg.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
wasm-bindgen --target web --no-typescript --out-dir "$staging" "$wasm"
# The module's wasm features, named because `strip` drops the section that lists them: those rustc
# enables by default for wasm32-unknown-unknown (Rust >= 1.87), and SIMD, which dependencies
# (gemm's kernels) enable per function. wasm-opt writes no `name` section (no -g).
"$wasm_opt" "-O$opt_level" --strip-debug --strip-producers --enable-simd \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$staging/lutlab_wasm_bg.wasm" -o "$staging/lutlab_wasm_bg.opt.wasm"
mv "$staging/lutlab_wasm_bg.opt.wasm" "$staging/lutlab_wasm_bg.wasm"
node web/compression.mjs "$staging/lutlab_wasm_bg.wasm" "$staging/lutlab_wasm.js"
mkdir -p "$out"
rm -f "$out/.stamp"
for f in lutlab_wasm_bg.wasm lutlab_wasm.js lutlab_wasm_bg.wasm.br lutlab_wasm_bg.wasm.gz lutlab_wasm.js.br lutlab_wasm.js.gz; do
  mv -f "$staging/$f" "$out/$f"
done
echo "$stamp" > "$out/.stamp"
echo "build-web: $out/lutlab_wasm_bg.wasm $(du -h "$out/lutlab_wasm_bg.wasm" | cut -f1), br $(du -h "$out/lutlab_wasm_bg.wasm.br" | cut -f1) (opt-level $opt_level)"
