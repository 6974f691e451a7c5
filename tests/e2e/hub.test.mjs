// The hub client (@huggingface/hub through web/hub.js) against the hub mimic: a revision other
// than main, the Cache API copy revalidated by ETag (304, no weight bytes again), a changed ETag
// downloading again, a cut download resumed by a Range request, a gated repository refused
// without its token and loaded with it, and the token in no URL, cache key or storage.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, SHIPPED, startPage, stop, startHubMimic, launchBrowser, openPage } from './browser.mjs';

const REPO = 'lutlab-test/tiny';
const GATED = 'lutlab-test/gated';
const TOKEN = 'hf_e2eSecretToken0123456789';
const LLAMA = path.join(ROOT, 'models/llama-tiny-wikitext');
const LLAMA_WEIGHTS = `/${REPO}/resolve/llama/model.safetensors`;
const WEIGHTS_SIZE = fs.statSync(path.join(LLAMA, 'model.safetensors')).size;

let pageServer;
let pageUrl;
let hub;
let browser;
let context;
let page;

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  hub = await startHubMimic({
    // main: GPT-2's layout (tokenizer.json, vocab.json, merges.txt); llama: another model.
    [REPO]: { revisions: { main: SHIPPED, llama: LLAMA } },
    [GATED]: { revisions: { main: LLAMA }, token: TOKEN },
  });
  browser = await launchBrowser();
  context = await browser.newContext();
  page = await openPage(context, `${pageUrl}/?hub=${encodeURIComponent(hub.url)}`);
});

after(async () => {
  await browser?.close();
  stop(hub?.server);
  stop(pageServer);
});

/// Submits the hub form and waits for the model (returns its label) or an error (throws it).
async function loadFromHub(repo, { revision = 'main', token = '' } = {}) {
  await page.fill('#hub-repo', repo);
  await page.fill('#hub-revision', revision);
  await page.fill('#hub-token', token);
  // A sentinel the page replaces only on success (its data-loaded must stay: a refused load keeps it).
  await page.evaluate(() => {
    document.getElementById('model-status').textContent = '';
    document.getElementById('error-close')?.click();
  });
  await page.click('#load-hub');
  await page.waitForFunction(
    () => document.getElementById('model-status').textContent.startsWith('Loaded') || !document.getElementById('error').hidden,
    null, { timeout: 120_000 },
  );
  const error = await page.evaluate(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; });
  if (error) {
    await page.evaluate(() => document.getElementById('error-close')?.click());
    throw new Error(error);
  }
  return page.getAttribute('#model-status', 'data-loaded');
}

async function reload() {
  await page.reload();
  await page.waitForSelector('#model-status[data-loaded]', { timeout: 120_000 });
}

/// The log entries of `pathname` since `from`.
const entriesOf = (pathname, from) => hub.log.slice(from).filter((entry) => entry.path === pathname && entry.method !== 'OPTIONS');

/// "N requests, B body bytes (weights W)" of the log since `from`, for BENCHMARKS.md.
function traffic(from) {
  const entries = hub.log.slice(from).filter((e) => e.method !== 'OPTIONS');
  const bytes = entries.reduce((sum, e) => sum + e.bodyBytes, 0);
  const weights = entries.filter((e) => e.path === LLAMA_WEIGHTS).reduce((sum, e) => sum + e.bodyBytes, 0);
  return `${entries.length} requests, ${bytes} body bytes (weights ${weights}), statuses ${entries.map((e) => e.status).join(' ')}`;
}

test('a revision other than main loads, then is revalidated, not downloaded again', async (t) => {
  let mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  assert.match(await page.textContent('#model-status'), /\(llama\)/, 'the llama branch, not main\'s GPT-2');
  assert.ok(hub.log.slice(mark).some((e) => e.path === `/api/models/${REPO}/tree/llama` && e.status === 200), 'listed through the API');
  const first = entriesOf(LLAMA_WEIGHTS, mark);
  const sent = first.reduce((sum, e) => sum + e.bodyBytes, 0);
  assert.ok(sent >= WEIGHTS_SIZE && sent <= WEIGHTS_SIZE + 1, `the weights once (and a 1-byte Range probe): ${sent} bytes`);
  assert.equal(hub.log.slice(mark).filter((e) => e.path.includes('/resolve/main/')).length, 0, 'nothing from main');
  t.diagnostic(`first load: ${traffic(mark)}`);

  await reload();
  mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  const again = entriesOf(LLAMA_WEIGHTS, mark);
  assert.ok(again.length >= 1, 'the stored copy was revalidated');
  assert.ok(again.every((e) => e.headers['if-none-match'] && e.status === 304), `revalidated with If-None-Match → 304: ${JSON.stringify(again.map((e) => e.status))}`);
  assert.equal(again.reduce((sum, e) => sum + e.bodyBytes, 0), 0, 'no weight bytes sent again');
  t.diagnostic(`after a reload: ${traffic(mark)}`);
});

test('a changed ETag downloads the file again; a cut download resumes with a Range request', async () => {
  hub.changeEtag(REPO, 'llama', 'model.safetensors');
  await reload();
  let mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  let entries = entriesOf(LLAMA_WEIGHTS, mark);
  assert.ok(entries.some((e) => e.headers['if-none-match'] && e.status === 206), 'the old ETag no longer matched');
  assert.ok(entries.some((e) => e.status === 200 && e.bodyBytes === WEIGHTS_SIZE), 'downloaded again in full');

  // The next ETag change, and the download cut after 1 MiB: the rest comes as a 206 range.
  hub.changeEtag(REPO, 'llama', 'model.safetensors');
  const cut = 1 << 20;
  hub.interruptNext(LLAMA_WEIGHTS, cut);
  await reload();
  mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  entries = entriesOf(LLAMA_WEIGHTS, mark);
  const interrupted = entries.find((e) => e.interrupted);
  assert.ok(interrupted && interrupted.bodyBytes === cut, 'the mimic cut the download');
  const resumed = entries.find((e) => e.headers.range === `bytes=${cut}-${WEIGHTS_SIZE - 1}`);
  assert.ok(resumed, `resumed from byte ${cut}: ${JSON.stringify(entries.map((e) => [e.status, e.headers.range]))}`);
  assert.equal(resumed.status, 206);
  assert.equal(resumed.bodyBytes, WEIGHTS_SIZE - cut);
  assert.ok(!entries.some((e) => e.status === 200 && !e.interrupted), 'nothing downloaded from the start again');
});

test('a download that keeps failing keeps its bytes, and the next load resumes from them', async () => {
  hub.changeEtag(REPO, 'llama', 'model.safetensors');
  const cut = 1 << 20;
  hub.interruptNext(LLAMA_WEIGHTS, cut, 4); // the first try and its 3 resumptions
  await reload();
  let mark = hub.log.length;
  await assert.rejects(loadFromHub(REPO, { revision: 'llama' }),
    new RegExp(`download stopped at ${4 * cut} of ${WEIGHTS_SIZE} bytes after 4 attempts: .*the next load resumes from there`));
  assert.equal(entriesOf(LLAMA_WEIGHTS, mark).filter((e) => e.interrupted).length, 4);

  await reload();
  mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  const entries = entriesOf(LLAMA_WEIGHTS, mark);
  const resumed = entries.find((e) => e.headers.range === `bytes=${4 * cut}-${WEIGHTS_SIZE - 1}`);
  assert.ok(resumed && resumed.status === 206 && resumed.bodyBytes === WEIGHTS_SIZE - 4 * cut,
    `resumed from the kept bytes: ${JSON.stringify(entries.map((e) => [e.status, e.headers.range, e.bodyBytes]))}`);
  assert.ok(!entries.some((e) => e.status === 200), 'nothing downloaded from the start again');
  const left = await page.evaluate(async () => (await (await caches.open('lutlab-hub-v2')).keys()).map((r) => r.url).filter((u) => u.endsWith('?partial')));
  assert.deepEqual(left, [], 'the kept bytes are dropped once the file is whole');
});

test('a hub whose CORS refuses If-None-Match is revalidated by its ETag (a 1-byte probe)', async () => {
  hub.refuseInPreflight('if-none-match');
  try {
    await reload();
    const mark = hub.log.length;
    assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
    const preflights = hub.log.slice(mark).filter((e) => e.method === 'OPTIONS' && e.path === LLAMA_WEIGHTS);
    assert.ok(preflights.some((e) => /if-none-match/.test(e.headers['access-control-request-headers'])), 'the conditional request was tried');
    const entries = entriesOf(LLAMA_WEIGHTS, mark);
    assert.ok(entries.every((e) => !e.headers['if-none-match'] && e.status === 206), JSON.stringify(entries.map((e) => e.status)));
    assert.equal(entries.reduce((sum, e) => sum + e.bodyBytes, 0), 1, 'only the probe\'s byte');
  } finally {
    hub.refuseInPreflight('if-none-match', false);
  }
});

test('a gated repository asks for a token, loads with it, and the token is kept nowhere', async () => {
  await assert.rejects(loadFromHub(GATED), /lutlab-test\/gated: access denied \(HTTP 401\); it is gated or private: enter an access token/);
  assert.equal(await page.getAttribute('#model-status', 'data-loaded'), `${REPO}@llama`, 'the loaded model stays');
  await assert.rejects(loadFromHub(GATED, { token: 'hf_wrong' }), /access denied \(HTTP 401\); the access token was refused/);
  assert.equal(await loadFromHub(GATED, { token: TOKEN }), GATED);
  const gated = hub.log.filter((e) => e.path.includes(GATED) && e.method !== 'OPTIONS');
  assert.ok(gated.some((e) => e.headers.authorization === `Bearer ${TOKEN}` && e.status === 200), 'sent as a Bearer header');
  assert.ok(gated.every((e) => e.headers.authorization === undefined || e.headers.authorization.startsWith('Bearer ')), 'only as Bearer');

  for (const e of hub.log) assert.ok(!e.url.includes(TOKEN), `not in a request URL: ${e.url}`);
  assert.ok(!page.url().includes(TOKEN), 'not in the page URL');
  const stored = await page.evaluate(async () => {
    const found = [];
    for (const name of await caches.keys()) {
      const cache = await caches.open(name);
      for (const request of await cache.keys()) {
        const response = await cache.match(request);
        found.push(`${name} ${request.url} ${JSON.stringify([...request.headers, ...response.headers])}`);
      }
    }
    return { cache: found, local: JSON.stringify({ ...localStorage }), session: JSON.stringify({ ...sessionStorage }) };
  });
  assert.ok(stored.cache.some((entry) => entry.includes(`/${GATED}/resolve/main/model.safetensors`)), `the gated repo's files are cached: ${stored.cache.join('\n')}`);
  for (const entry of stored.cache) assert.ok(!entry.includes(TOKEN), `not in the Cache API: ${entry}`);
  assert.ok(!stored.local.includes(TOKEN) && !stored.session.includes(TOKEN), 'not in localStorage or sessionStorage');

  // The cached copy of a gated file is not served without the token: its revalidation is refused.
  await reload();
  assert.equal(await page.inputValue('#hub-token'), '', 'the field does not survive a reload');
  await assert.rejects(loadFromHub(GATED), /access denied \(HTTP 401\)/);
});

test('"Forget downloads" empties the hub cache', async () => {
  await page.click('#clear-cache');
  await page.waitForFunction(() => /forgotten/.test(document.getElementById('model-status').textContent));
  const names = await page.evaluate(() => caches.keys());
  assert.ok(!names.some((name) => name.startsWith('lutlab-hub')), `no hub cache left: ${names}`);
  const mark = hub.log.length;
  assert.equal(await loadFromHub(REPO, { revision: 'llama' }), `${REPO}@llama`);
  const entries = entriesOf(LLAMA_WEIGHTS, mark);
  assert.ok(entries.every((e) => !e.headers['if-none-match']) && entries.some((e) => e.status === 200), 'downloaded afresh');
});
