// What a visit costs over the wire (issue 22, item 3): a first visit, until the shipped model is
// ready, transfers at most 5 MB besides the model's weights; a second visit in the same browser
// revalidates (304s) and transfers next to nothing. Bytes are Playwright's request.sizes() of every
// finished request of the browser context (a dedicated worker's requests included), cross-checked
// with the page's resource timing. The figures go to tests/e2e/out/transfer.json (BENCHMARKS.md).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launchBrowser, openPage, startPage, stop, OUT } from './browser.mjs';

const FIRST_VISIT_LIMIT = 5e6; // bytes, everything but *.safetensors
const REVISIT_LIMIT = 20e3; // bytes: 304s are headers only (~300 bytes each)
const isWeights = (url) => new URL(url).pathname.endsWith('.safetensors');
// What the glue prints when it cannot stream-compile the module and downloads it whole instead.
const NO_STREAMING = /instantiateStreaming` failed/;

let browser, server, url;

before(async () => {
  ({ url, server } = await startPage());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stop(server);
});

/// Records every finished request of `context` with its sizes and status, and console messages
/// of its pages and their workers.
function recordTraffic(context) {
  const pending = [];
  const log = [];
  context.on('requestfinished', (request) => pending.push((async () => {
    const [sizes, response] = await Promise.all([request.sizes(), request.response()]);
    return {
      url: request.url(),
      status: response?.status(),
      encoding: (await response?.allHeaders())?.['content-encoding'] ?? null,
      body: sizes.responseBodySize,
      headers: sizes.responseHeadersSize,
    };
  })()));
  context.on('requestfailed', (request) => log.push(`requestfailed: ${request.url()} ${request.failure()?.errorText}`));
  context.on('page', (page) => {
    page.on('console', (m) => log.push(m.text()));
    page.on('worker', (worker) => worker.on('console', (m) => log.push(`worker: ${m.text()}`)));
  });
  return { log, requests: () => Promise.all(pending) };
}

/// Bytes over the wire (encoded body + response headers) by path.
function byPath(requests) {
  const rows = new Map();
  for (const r of requests) {
    const key = new URL(r.url).pathname;
    const row = rows.get(key) ?? { path: key, requests: 0, bytes: 0, body: 0, statuses: [], encoding: r.encoding };
    row.requests += 1;
    row.bytes += r.body + r.headers;
    row.body += r.body;
    row.statuses.push(r.status);
    rows.set(key, row);
  }
  return [...rows.values()].sort((a, b) => b.bytes - a.bytes);
}

const sum = (rows) => rows.reduce((total, r) => total + r.bytes, 0);
const mb = (n) => `${(n / 1e6).toFixed(3)} MB`;

/// Opens the page in `context` until the shipped model is loaded and the network is quiet.
async function visit(context) {
  const traffic = recordTraffic(context);
  const page = await openPage(context, url);
  await page.waitForLoadState('networkidle');
  return { page, traffic, rows: byPath(await traffic.requests()) };
}

test('first visit ≤ 5 MB besides the weights; a second visit only revalidates', { timeout: 600_000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  try {
    // Counts the glue's streaming compilations on the page's thread (a worker's are checked
    // through its console: the glue warns when it falls back).
    await context.addInitScript(() => {
      const streaming = WebAssembly.instantiateStreaming;
      window.wasmStreamed = 0;
      WebAssembly.instantiateStreaming = (...args) => streaming(...args).then((r) => { window.wasmStreamed += 1; return r; });
    });

    const first = await visit(context);
    // The page's own resource timing: a cross-check of the protocol's sizes, and the larger of the
    // two counts (Chromium reports no body size for a worker's script; requests made inside a
    // worker have their own timeline).
    const timing = await first.page.evaluate(() => performance.getEntriesByType('resource')
      .concat(performance.getEntriesByType('navigation'))
      .map((e) => ({ path: new URL(e.name).pathname, transferSize: e.transferSize })));
    const sizes = new Map(first.rows.map((r) => [r.path, r]));
    let compared = 0;
    for (const t of timing.filter((t) => t.transferSize > 0 && sizes.get(t.path)?.requests === 1)) {
      const row = sizes.get(t.path);
      if (row.body > 0) {
        assert.ok(Math.abs(t.transferSize - row.bytes) <= Math.max(1024, 0.02 * row.bytes),
          `${t.path}: resource timing says ${t.transferSize} bytes, the protocol ${row.bytes}`);
        compared += 1;
      }
      row.bytes = Math.max(row.bytes, t.transferSize);
    }
    assert.ok(compared >= 3, `only ${compared} responses had resource timing to compare`);
    const rest = first.rows.filter((r) => !isWeights(`http://x${r.path}`));
    const weights = first.rows.filter((r) => isWeights(`http://x${r.path}`));
    const table = first.rows.map((r) => `  ${r.path.padEnd(48)} ${mb(r.bytes).padStart(10)}  ${r.encoding ?? 'identity'} ${r.statuses.join(',')}`).join('\n');
    console.log(`first visit: ${mb(sum(rest))} besides the weights (${mb(sum(weights))} of weights)\n${table}`);
    assert.ok(rest.some((r) => r.path.endsWith('.wasm')), `the module was not among the requests:\n${table}`);
    assert.ok(weights.length > 0, `the weights were not among the requests:\n${table}`);
    assert.ok(sum(rest) <= FIRST_VISIT_LIMIT, `first visit transferred ${mb(sum(rest))} besides the weights (limit ${mb(FIRST_VISIT_LIMIT)}):\n${table}`);
    for (const r of rest.filter((r) => /\.(wasm|js|json|txt|html)$/.test(r.path) || r.path === '/')) {
      assert.ok(r.encoding === 'br' || r.encoding === 'gzip', `${r.path} went out without a content encoding`);
    }

    // The module streamed: compiled by the glue's instantiateStreaming (on this thread, or in a
    // worker that did not warn), and the served module, brotli and all, stream-compiles.
    const streamed = await first.page.evaluate(() => window.wasmStreamed);
    assert.ok(streamed >= 1 || first.page.workers().length > 0, 'the glue did not call WebAssembly.instantiateStreaming');
    assert.ok(!first.traffic.log.some((m) => NO_STREAMING.test(m)), `the glue fell back:\n${first.traffic.log.join('\n')}`);
    const exports = await first.page.evaluate(async () => {
      const module = await WebAssembly.compileStreaming(fetch('web/pkg/lutlab_wasm_bg.wasm'));
      return WebAssembly.Module.exports(module).length;
    });
    assert.ok(exports > 10, `the streamed module has ${exports} exports`);
    await first.page.close();

    const second = await visit(context);
    const again = second.rows.filter((r) => !isWeights(`http://x${r.path}`));
    const table2 = second.rows.map((r) => `  ${r.path.padEnd(48)} ${String(r.bytes).padStart(8)} B  ${r.statuses.join(',')}`).join('\n');
    console.log(`second visit: ${sum(again)} bytes besides the weights, ${sum(second.rows) - sum(again)} bytes for the weights\n${table2}`);
    for (const r of again) {
      assert.ok(r.statuses.every((s) => s === 304 || s === 200) && r.bytes <= 1024 * r.requests,
        `${r.path}: ${r.bytes} bytes with status ${r.statuses} on the second visit`);
    }
    assert.ok(sum(again) <= REVISIT_LIMIT, `second visit transferred ${sum(again)} bytes besides the weights:\n${table2}`);

    fs.mkdirSync(OUT, { recursive: true });
    fs.writeFileSync(path.join(OUT, 'transfer.json'), JSON.stringify({ first: first.rows, second: second.rows }, null, 1));
  } finally {
    await context.close();
  }
});
