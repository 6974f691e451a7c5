#!/usr/bin/env bash
# Builds web/vendor/hub.mjs: the parts of @huggingface/hub the page uses (listing, download info,
# downloads), bundled with esbuild into one browser ES module so the page imports it without a
# bundler at run time. The package ships ES modules but imports @huggingface/xetchunk-wasm by
# bare name, which a browser cannot resolve; esbuild inlines what is reachable and drops the rest.
# Pinned versions (the bundled dependencies' versions are printed and written to the licence file).
set -euo pipefail
HUB_VERSION=2.17.5
ESBUILD_VERSION=0.28.2
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --save-exact "@huggingface/hub@$HUB_VERSION" "esbuild@$ESBUILD_VERSION" >/dev/null
cat > entry.mjs <<'JS'
export { listFiles, fileDownloadInfo, downloadFile, HubApiError } from './node_modules/@huggingface/hub/dist/browser/index.mjs';
JS
# The package's browser build (dist/browser/, what its "browser" field names; the "exports" map
# hides it from bare imports, so the entry names the file).
npx --no-install esbuild entry.mjs --bundle --format=esm --platform=browser --target=es2022 --minify \
  --legal-comments=eof --banner:js="/* @huggingface/hub $HUB_VERSION (MIT), bundled by scripts/vendor-hub.sh */" \
  --outfile="$root/web/vendor/hub.mjs"
# The licences of every package esbuild put into the file, one after the other.
npx --no-install esbuild entry.mjs --bundle --format=esm --platform=browser --target=es2022 --minify \
  --metafile=meta.json --outfile=bundle-check.mjs >/dev/null 2>&1
node - "$root/web/vendor/LICENSE-huggingface-hub" <<'JS'
const fs = require('fs');
const meta = JSON.parse(fs.readFileSync('meta.json', 'utf8'));
const packages = [...new Set(Object.keys(meta.inputs)
  .map((f) => f.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1]).filter(Boolean))].sort();
let text = '';
for (const name of packages) {
  const dir = `node_modules/${name}`;
  const { version, license } = JSON.parse(fs.readFileSync(`${dir}/package.json`, 'utf8'));
  const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  text += `==== ${name} ${version} (${license}) ====\n\n`
    + (file ? fs.readFileSync(`${dir}/${file}`, 'utf8').trim() : `No licence file in the package; package.json says "${license}".`) + '\n\n';
  console.log(`bundled: ${name} ${version} ${license}${file ? '' : ' (no licence file)'}`);
}
fs.writeFileSync(process.argv[2], text);
JS
ls -l "$root/web/vendor/hub.mjs"
