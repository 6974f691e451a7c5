// The page's evaluation speed with a given build of web/pkg/ (BENCHMARKS.md, "A light first load":
// opt-levels compared): serves the page with PKG_DIR in place of web/pkg/, loads the shipped model
// in Chromium (SwiftShader WebGPU) and evaluates the first CHARS characters of WikiText-2 test RUNS
// times, then quantizes RUNS times with the page's default (4-bit k-means per channel on the CPU:
// the module's own code, which its opt-level does touch). Prints the module's size, the time until
// the model was ready, each run's tokens/s and each quantization's seconds.
//
//   node tests/e2e/eval-speed.mjs PKG_DIR [CHARS=1200] [RUNS=3]

import fs from 'node:fs';
import path from 'node:path';
import { createServer } from '../../web/serve.mjs';
import { ROOT, evaluateInPage, launchBrowser, listen, openPage, shortText, stop, tempDir } from './browser.mjs';

const [pkg, chars = '1200', runs = '3'] = process.argv.slice(2);
if (!pkg || !fs.existsSync(path.join(pkg, 'lutlab_wasm_bg.wasm'))) {
  console.error('usage: node tests/e2e/eval-speed.mjs PKG_DIR [CHARS] [RUNS] (PKG_DIR: a build-web.sh output)');
  process.exit(2);
}

// The repository's tree through links, with web/pkg/ replaced.
const root = tempDir();
for (const name of ['index.html', 'models', 'data']) fs.symlinkSync(path.join(ROOT, name), path.join(root, name));
fs.mkdirSync(path.join(root, 'web'));
for (const name of fs.readdirSync(path.join(ROOT, 'web')).filter((n) => n !== 'pkg')) {
  fs.symlinkSync(path.join(ROOT, 'web', name), path.join(root, 'web', name));
}
fs.symlinkSync(path.resolve(pkg), path.join(root, 'web/pkg'));

const server = createServer({ root });
const browser = await launchBrowser();
try {
  const page = await openPage(browser, await listen(server));
  const text = shortText(Number(chars));
  const speeds = [];
  for (let i = 0; i < Number(runs); i++) speeds.push((await evaluateInPage(page, text)).tokens_per_s);
  // The module's own CPU work: the page's default quantization (4-bit k-means per channel, on the CPU).
  const quantizeSeconds = [];
  for (let i = 0; i < Number(runs); i++) {
    await page.evaluate(() => delete document.getElementById('quant-result').dataset.report);
    await page.click('#run-quantize');
    await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
    quantizeSeconds.push(JSON.parse(await page.getAttribute('#quant-result', 'data-report')).seconds);
  }
  const sorted = [...speeds].sort((a, b) => a - b);
  const size = fs.statSync(path.join(pkg, 'lutlab_wasm_bg.wasm')).size;
  console.log(JSON.stringify({
    pkg, wasm_bytes: size, ready_ms: page.loadedAfterMs,
    tokens_per_s: speeds.map((s) => Math.round(s)), median: Math.round(sorted[Math.floor(sorted.length / 2)]),
    cpu_kmeans_s: quantizeSeconds.map((s) => Number(s.toFixed(2))),
  }));
} finally {
  await browser.close();
  stop(server);
  fs.rmSync(root, { recursive: true, force: true });
}
