// The page as a product (issue 22, items 1, 4 and 5): the lab runs in a Web Worker and the page
// stays responsive; the defaults are short and announce their time; a cancel answers within a
// second as a neutral "stopped" with earlier results kept; a lost GPU keeps the session and,
// reopened, gives the same perplexity.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPage, launchBrowser, openPage, evaluateInPage, shortText, stop } from './browser.mjs';

let server;
let pageUrl;
let browser;

before(async () => {
  ({ url: pageUrl, server } = await startPage());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stop(server);
});

/// Short windows: several evaluation batches on SwiftShader within seconds each.
async function shortWindows(page) {
  await page.fill('#max-length', '64');
  await page.fill('#stride', '64');
}

/// Seconds in an estimate line ("about 1 h 5 min", "about 2 min 10 s", "about 40 s").
function estimatedSeconds(text) {
  const m = /about (?:(\d+) h )?(?:(\d+) min ?)?(?:(\d+) s)? on this GPU/.exec(text);
  assert.ok(m, `no time estimate in "${text}"`);
  return 3600 * Number(m[1] ?? 0) + 60 * Number(m[2] ?? 0) + Number(m[3] ?? 0);
}

test("the wasm lab runs in a worker and the page's thread never works long", async () => {
  const page = await openPage(browser, pageUrl);
  const workers = page.workers();
  assert.equal(workers.length, 1, 'one dedicated worker');
  assert.match(workers[0].url(), /\/web\/worker\.js$/);
  // The page itself never fetches the wasm module: the worker does.
  const pageFetchedWasm = await page.evaluate(() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('.wasm')));
  assert.equal(pageFetchedWasm, false);
  // Long tasks of the page's thread (Long Tasks API, from the page's start: buffered) while the
  // model loads, and while the lab tokenizes all of WikiText-2 (1.3 MB; 0.4 s of wasm, which once
  // ran here) and evaluates. A long task is the thread's own work, so unlike a timer's delays it
  // does not grow when other processes take the CPU.
  await page.evaluate(() => {
    window.longTasks = [];
    new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => e.duration))).observe({ type: 'longtask', buffered: true });
  });
  // The observer sees a task of the page's own that is long (so the check below can fail).
  await page.evaluate(() => setTimeout(() => { const start = performance.now(); while (performance.now() - start < 300); }, 0));
  await page.waitForFunction(() => window.longTasks.some((d) => d >= 300));
  await page.evaluate(() => { window.longTasks = []; });
  await page.check('input[name=text][value=wikitext]');
  await page.waitForFunction(() => /^[\d,]{5,} windows/.test(document.getElementById('eval-estimate').textContent), null, { timeout: 300_000 });
  await page.check('input[name=text][value=wikitext-start]');
  await page.fill('#eval-windows', '1');
  await page.click('#run-eval');
  await page.waitForSelector('#eval-result[data-report]', { timeout: 300_000 });
  const longTasks = await page.evaluate(() => window.longTasks);
  const longest = Math.max(0, ...longTasks);
  console.log(`the page's thread: ${longTasks.length} long tasks, the longest ${longest.toFixed(0)} ms`);
  assert.ok(longest < 250, `the page's thread worked ${longest.toFixed(0)} ms at once`);
  await page.close();
});

test('the defaults are short, and every long step states its size and time before it starts', async () => {
  const page = await openPage(browser, pageUrl);
  await page.waitForFunction(() => /about .* on this GPU/.test(document.getElementById('eval-estimate').textContent), null, { timeout: 120_000 });
  const evalLine = await page.textContent('#eval-estimate');
  const calibrateLine = await page.textContent('#calibrate-estimate');
  console.log(`defaults: ${evalLine} | ${calibrateLine}`);
  assert.match(evalLine, /^2 windows of 256 tokens \(stride 128\), 383 tokens scored: about .* \(from a short probe of this GPU\)\.$/);
  assert.match(calibrateLine, /^4 windows of 64 tokens: Fisher about .* on this GPU/);
  const estimate = estimatedSeconds(evalLine);

  // The default evaluation: the first two windows of WikiText-2 test, as stated.
  await page.click('#run-eval');
  await page.waitForSelector('#eval-result[data-report]', { timeout: 300_000 });
  const report = JSON.parse(await page.getAttribute('#eval-result', 'data-report'));
  assert.equal(report.scored, 383); // 255 in the first window, 128 in the second
  assert.match(await page.textContent('#eval-result'), /on WikiText-2 test, first 2 windows: 383 tokens scored/);
  console.log(`default evaluation: estimated ${estimate} s, took ${report.seconds.toFixed(1)} s`);
  assert.ok(estimate / report.seconds < 5 && report.seconds / estimate < 5, `estimate ${estimate} s vs ${report.seconds} s`);
  // The estimate now comes from this run.
  await page.waitForFunction(() => /from the last run of this step/.test(document.getElementById('eval-estimate').textContent));

  // The full file is one click away, with its size and (long) time said first.
  await page.check('input[name=text][value=wikitext]');
  await page.waitForFunction(() => /^[\d,]{5,} windows/.test(document.getElementById('eval-estimate').textContent), null, { timeout: 120_000 });
  const full = await page.textContent('#eval-estimate');
  console.log(`all of WikiText-2 test: ${full}`);
  const [, windows, scored] = /^([\d,]+) windows of 256 tokens \(stride 128\), ([\d,]+) tokens scored/.exec(full);
  assert.ok(Number(windows.replaceAll(',', '')) > 2000);
  assert.ok(Number(scored.replaceAll(',', '')) > 290_000);
  assert.ok(estimatedSeconds(full) > 100 * estimate, 'the whole file takes far longer than two windows');
  await page.close();
});

test('a cancel answers within a second as a neutral "stopped", and earlier results stay', async () => {
  const page = await openPage(browser, pageUrl);
  await shortWindows(page);
  const first = await evaluateInPage(page, shortText(300));
  const firstLine = await page.textContent('#eval-result');

  await page.fill('#custom-text', shortText(6000));
  await page.click('#run-eval');
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById('eval-progress').textContent), null, { timeout: 120_000 });
  const asked = Date.now();
  await page.click('#eval-progress .cancel');
  await page.waitForFunction(() => document.getElementById('state-evaluate').dataset.state === 'stopped', null, { timeout: 60_000 });
  const latency = Date.now() - asked;
  console.log(`cancel to "stopped": ${latency} ms`);
  assert.ok(latency < 1000, `the cancel took ${latency} ms to show`);
  assert.equal(await page.textContent('#state-evaluate'), 'stopped · earlier result kept');
  assert.equal(await page.isHidden('#error'), true, 'a cancel is not an error');
  assert.match(await page.textContent('#eval-progress .label'), /stopped; earlier results kept/);
  assert.equal(await page.textContent('#eval-result'), firstLine);
  assert.equal(await page.locator('#history tbody tr').count(), 1);

  // The next step runs as soon as the stopped one's GPU batch is done, with the same figures.
  const again = await evaluateInPage(page, shortText(300));
  assert.equal(again.perplexity, first.perplexity);

  // A cancelled Fisher run is stopped the same way.
  await page.fill('#f-samples', '64');
  await page.click('#run-fisher');
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById('fisher-progress').textContent), null, { timeout: 120_000 });
  const askedFisher = Date.now();
  await page.click('#fisher-progress .cancel');
  await page.waitForFunction(() => document.getElementById('state-calibrate').dataset.state === 'stopped', null, { timeout: 60_000 });
  assert.ok(Date.now() - askedFisher < 1000);
  assert.equal(await page.isHidden('#error'), true);
  await page.close();
});

test('a lost GPU keeps the session; reopened, the same evaluation gives the same perplexity', async () => {
  const page = await openPage(browser, pageUrl);
  await shortWindows(page);
  const before = await evaluateInPage(page, shortText(300));
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  const quantLine = await page.textContent('#quant-result');
  const rowsBefore = await page.locator('#history tbody tr').count();

  // Lose the device in the middle of an evaluation, as a driver reset would.
  await page.fill('#custom-text', shortText(6000));
  await page.click('#run-eval');
  await page.waitForFunction(() => /tokens\/s/.test(document.getElementById('eval-progress').textContent), null, { timeout: 120_000 });
  await page.evaluate(() => window.lutlabTestHooks.loseGpu());
  await page.waitForSelector('#gpu-lost:not([hidden])', { timeout: 120_000 });
  const told = await page.textContent('#gpu-lost-text');
  console.log(`after the loss: ${told}`);
  assert.match(told, /^The GPU was lost.*destroyed.*Your runs, pictures and files are kept/is);
  assert.equal(await page.locator('#history tbody tr').count(), rowsBefore, 'the runs table is kept');
  assert.equal(await page.locator('#plot-error svg').count() > 0, true, 'the pictures are kept');
  assert.equal(await page.textContent('#quant-result'), quantLine, 'the quantization\'s report is kept');
  assert.equal(await page.isDisabled('#run-eval'), true, 'nothing runs on the lost GPU');

  await page.click('#reopen-gpu');
  await page.waitForFunction(() => document.getElementById('state-model').textContent.startsWith('reloaded'), null, { timeout: 120_000 });
  assert.equal(await page.isHidden('#gpu-lost'), true);
  const after = await evaluateInPage(page, shortText(300));
  console.log(`perplexity before the loss ${before.perplexity}, after reopening ${after.perplexity}`);
  assert.equal(after.perplexity, before.perplexity);
  assert.equal(await page.locator('#history tbody tr').count(), rowsBefore + 1);
  await page.close();
});
