// The page in a real browser: Chromium with SwiftShader's WebGPU. Each test asserts real numbers
// against the native CLI, or the exact message a user sees.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  SHIPPED, OUT, nativeQuantizedEval, nativePackedEval, safetensorsHeader, lutlab, tempDir, readSafetensors, startPage, stop, startHubMimic, launchBrowser, openPage, evaluateInPage, nativeEval, shortText,
  relative, PAGE_VS_CLI_REL,
} from './browser.mjs';

const HUB_REPO = 'lutlab-test/gpt2-tiny';

/// Every tensor of a safetensors file: name -> its dtype, shape and bytes.
function tensorBytes(file) {
  const bytes = fs.readFileSync(file);
  const header = safetensorsHeader(file);
  const data = bytes.subarray(8 + Number(bytes.readBigUInt64LE(0)));
  return new Map(Object.entries(header).filter(([name]) => name !== '__metadata__')
    .map(([name, { dtype, shape, data_offsets: [begin, end] }]) => [name, Buffer.concat([Buffer.from(`${dtype}${shape}`), data.subarray(begin, end)])]));
}
let pageUrl;
let pageServer;
let hub;
let browser;
let native;
const text = shortText();

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  hub = await startHubMimic({ [HUB_REPO]: SHIPPED });
  browser = await launchBrowser();
  native = nativeEval(text);
});

after(async () => {
  await browser?.close();
  stop(hub?.server);
  stop(pageServer);
});


test('the shipped model evaluates in the browser as it does natively', async () => {
  const start = Date.now();
  const page = await openPage(browser, pageUrl);
  assert.match(await page.textContent('#model-status'), /Loaded shipped gpt2-tiny-wikitext \(gpt2\): 4 layers/);
  const report = await evaluateInPage(page, text);
  console.log(`page load to model ready ${page.loadedAfterMs} ms; load to result ${Date.now() - start} ms`);
  console.log(`browser ${report.perplexity} vs native ${native.perplexity} (relative ${relative(report.perplexity, native.perplexity).toExponential(2)}); `
    + `${report.scored} tokens in ${report.seconds.toFixed(2)} s in the browser`);
  assert.equal(report.scored, native.scored);
  assert.ok(relative(report.perplexity, native.perplexity) < PAGE_VS_CLI_REL);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'page.png'), fullPage: true });
  await page.close();
});

test('k-means 4-bit quantization in the page matches the native CLI', async () => {
  const page = await openPage(browser, pageUrl);
  await page.selectOption('#q-method', 'kmeans');
  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-granularity', 'channel');
  assert.equal(await page.isChecked('#q-gpu'), false, 'k-means runs on the CPU reference by default');
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  const report = await evaluateInPage(page, text); // the quantized model is selected after quantizing
  const cli = nativeQuantizedEval(text, ['--method', 'kmeans', '--bits', '4', '--granularity', 'channel']);
  console.log(`k-means 4-bit channel: browser ${report.perplexity} vs native ${cli.eval.perplexity}; `
    + `${quant.bits_per_weight.toFixed(3)} bits/weight, quantized in ${quant.seconds.toFixed(1)} s in the browser`);
  assert.equal(quant.layers.length, 16);
  assert.ok(Math.abs(quant.bits_per_weight - cli.bits_per_weight) < 1e-9);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);
  assert.ok(report.perplexity > native.perplexity, 'quantization costs some perplexity');
  // 4-bit codes + 16 f16 table entries per 128-row column: 5.5 bits a weight, 2.9x smaller than f16.
  assert.ok(Math.abs(quant.packed.compression - 16 / 5.5) < 0.01, `compression ${quant.packed.compression}`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'quantized.png'), fullPage: true });

  // Download the packed file: it parses, and the CLI evaluates it through its LUT kernels to the
  // perplexity the page measured.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-packed')]);
  assert.match(download.suggestedFilename(), /^shipped-gpt2-tiny-wikitext-kmeans-4-bit-channel-[\d.]+MB\.lutlab\.safetensors$/);
  const packedFile = path.join(tempDir(), download.suggestedFilename());
  await download.saveAs(packedFile);
  const header = safetensorsHeader(packedFile);
  assert.equal(header.__metadata__.format, 'lutlab-packed');
  assert.equal(header['h.0.mlp.c_fc.qweight'].dtype, 'U32');
  // Honest sizes: the whole file the page reported before the download is what was saved, and it
  // is smaller than the shipped f16 checkpoint (dense tensors stay f16, format version 4).
  const fileBytes = fs.statSync(packedFile).size;
  const shippedBytes = fs.statSync(path.join(SHIPPED, 'model.safetensors')).size;
  console.log(`packed file ${fileBytes} bytes vs shipped model.safetensors ${shippedBytes} bytes; ${quant.packed.explanation}`);
  assert.equal(quant.packed.file_bytes, fileBytes, 'the page reports the whole file');
  assert.equal(quant.packed.original_bytes, shippedBytes, 'the original is the safetensors file the page loaded');
  assert.ok(fileBytes < shippedBytes, `the 4-bit file (${fileBytes} bytes) is smaller than the f16 checkpoint (${shippedBytes})`);
  assert.equal(header['wte.weight'].dtype, 'F16');
  assert.equal(header.__metadata__.format_version, '4');
  const mb = (bytes) => (bytes / 1e6).toFixed(1).replace('.', '\\.');
  assert.match(await page.textContent('#quant-result'), new RegExp(`Packed file: ${mb(fileBytes)} MB vs the original checkpoint's ${mb(shippedBytes)} MB`));
  assert.equal(quant.packed.explanation, '5.50 bits per weight: 4.00 for the 4-bit codes + 1.50 for the tables (16 f16 entries per output channel of only 128–512 inputs)');
  assert.equal(await page.getAttribute('#export-status', 'data-bytes'), String(fileBytes));
  // Determinism: the CLI with the same settings writes the same tensors, byte for byte (both run
  // the CPU k-means reference); only the free-text metadata (model source, label) may differ.
  const cliFile = path.join(tempDir(), 'cli.lutlab.safetensors');
  lutlab(['quantize', '--model', SHIPPED, '--method', 'kmeans', '--bits', '4', '--granularity', 'channel', '--packed', cliFile]);
  const [pageTensors, cliTensors] = [packedFile, cliFile].map(tensorBytes);
  assert.deepEqual([...pageTensors.keys()].sort(), [...cliTensors.keys()].sort());
  for (const [name, bytes] of pageTensors) assert.ok(bytes.equals(cliTensors.get(name)), `${name}: page and CLI bytes differ`);
  const cliPacked = nativePackedEval(text, packedFile);
  console.log(`packed file ${download.suggestedFilename()}: page ${report.perplexity} vs lutlab eval --packed ${cliPacked.perplexity}`);
  assert.ok(relative(report.perplexity, cliPacked.perplexity) < PAGE_VS_CLI_REL);

  // Open it again in the page, with no original weights: the same perplexity.
  await page.setInputFiles('#packed-file', packedFile);
  await page.waitForFunction(() => document.getElementById('model-status').textContent.startsWith('Opened packed file'));
  assert.equal(await page.isDisabled('#run-quantize'), true, 'a packed file cannot be quantized again');
  const reopened = await evaluateInPage(page, text);
  assert.ok(relative(reopened.perplexity, report.perplexity) < 1e-6);

  // A corrupted packed file is refused with a message, and the page keeps what it had.
  const corrupted = path.join(tempDir(), 'corrupted.lutlab.safetensors');
  const bytes = fs.readFileSync(packedFile);
  fs.writeFileSync(corrupted, bytes.subarray(0, bytes.length - 1000));
  await page.setInputFiles('#packed-file', corrupted);
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /corrupted\.lutlab\.safetensors: not a valid safetensors file/);
  assert.equal(await page.getAttribute('#model-status', 'data-loaded'), download.suggestedFilename());
  await page.screenshot({ path: path.join(OUT, 'packed-reopened.png'), fullPage: true });
  assert.ok(relative((await evaluateInPage(page, text)).perplexity, report.perplexity) < 1e-6, 'the page still works');

  // The session's comparison table as CSV: the quantized run and the two packed-file runs.
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#download-csv')]);
  const lines = fs.readFileSync(await csv.path(), 'utf8').trim().split('\n');
  assert.equal(lines[0], 'model,method,bits,granularity,options,inputs,text,bits_per_weight,file_bytes,perplexity,window,stride,scored_tokens');
  assert.equal(lines.length, 4);
  assert.match(lines[1], new RegExp(`^kmeans 4-bit channel,kmeans,4,channel,,,your text,5\\.5,${quant.packed.file_bytes},90\\.44`));
  assert.match(lines[3], /\(packed\),kmeans,4,,opened from a packed file,,your text,5\.5,\d+,90\.44/);
  await page.close();
});

test('Fisher in the page equals the CLI; a CLI Fisher file drives weighted k-means in the page', async () => {
  const page = await openPage(browser, pageUrl);
  await page.fill('#f-samples', '2');
  await page.fill('#f-seqlen', '64');
  await page.click('#run-fisher');
  await page.waitForSelector('#fisher-result[data-report]', { timeout: 300_000 });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-fisher')]);
  const pageFile = path.join(tempDir(), 'page.fisher.safetensors');
  await download.saveAs(pageFile);
  const cliFile = path.join(tempDir(), 'cli.fisher.safetensors');
  lutlab(['fisher', '--nsamples', '2', '--seqlen', '64', '--seed', '0', '--out', cliFile]);
  const [mine, theirs] = [readSafetensors(pageFile), readSafetensors(cliFile)];
  assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort());
  let worst = 0;
  for (const [name, a] of mine) {
    const b = theirs.get(name);
    let diff = 0, norm = 0;
    for (let i = 0; i < a.length; i++) { diff += (a[i] - b[i]) ** 2; norm += b[i] ** 2; }
    worst = Math.max(worst, Math.sqrt(diff / norm));
  }
  console.log(`Fisher page vs CLI: worst relative error in norm ${worst.toExponential(2)} over ${mine.size} tensors`);
  assert.ok(worst < 1e-3);

  await page.setInputFiles('#fisher-file', cliFile);
  await page.waitForFunction(() => document.getElementById('fisher-result').textContent.includes('loaded from'));
  await page.selectOption('#q-method', 'kmeans');
  await page.selectOption('#q-bits', '3');
  await page.selectOption('#q-granularity', 'tensor');
  assert.equal(await page.isChecked('#q-fisher'), true);
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  assert.match(quant.label, /Fisher-weighted 3-bit tensor/);
  const report = await evaluateInPage(page, text);
  const cli = nativeQuantizedEval(text, ['--method', 'kmeans', '--bits', '3', '--fisher', cliFile]);
  console.log(`Fisher-weighted k-means 3-bit: browser ${report.perplexity} vs native ${cli.eval.perplexity}`);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);
  await page.close();
});

test('seed 000 scaling and centering in the page match the CLI, through the LUT kernels', async () => {
  const page = await openPage(browser, pageUrl);
  await page.fill('#f-samples', '2');
  await page.fill('#f-seqlen', ''); // the CLI's window: the model's context
  await page.click('#run-means');
  await page.waitForFunction(() => document.getElementById('means-result').textContent.startsWith('Mean inputs'), null, { timeout: 300_000 });
  assert.equal(await page.isChecked('#q-centering'), true);
  await page.check('#q-scaling');
  await page.selectOption('#q-bits', '3');
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  assert.match(quant.label, /scaled centered 3-bit tensor/);
  const report = await evaluateInPage(page, text);
  const cli = nativeQuantizedEval(text, ['--bits', '3', '--scaling', '--centering', '--calibration-samples', '2']);
  console.log(`scaled + centered 3-bit: browser ${report.perplexity} vs native ${cli.eval.perplexity}`);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'scaled-centered.png'), fullPage: true });
  await page.close();
});

test('local files load (vocab.json + merges.txt tokenizer) and give the same perplexity', async () => {
  const page = await openPage(browser, pageUrl);
  const files = ['config.json', 'model.safetensors', 'vocab.json', 'merges.txt'].map((f) => path.join(SHIPPED, f));
  await page.setInputFiles('#local-files', files);
  // Reading and uploading the files takes a while on a loaded CI machine (SwiftShader): 2 minutes, as openPage allows.
  await page.waitForFunction(() => document.getElementById('model-status').dataset.loaded?.startsWith('local files'), null, { timeout: 120_000 });
  const report = await evaluateInPage(page, text);
  assert.ok(relative(report.perplexity, native.perplexity) < PAGE_VS_CLI_REL);
  await page.close();
});

test('a truncated model.safetensors is reported on the page (dismissable) and the loaded model stays, badge and bar included', async () => {
  const page = await openPage(browser, pageUrl);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lutlab-broken-'));
  for (const f of ['config.json', 'tokenizer.json']) fs.copyFileSync(path.join(SHIPPED, f), path.join(dir, f));
  const weights = fs.readFileSync(path.join(SHIPPED, 'model.safetensors'));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), weights.subarray(0, weights.length >> 1));
  await page.setInputFiles('#local-files', ['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => path.join(dir, f)));
  await page.waitForSelector('#error:not([hidden])');
  const message = await page.textContent('#error');
  assert.match(message, /model\.safetensors: not a valid safetensors file/);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'broken-file.png') });
  assert.equal(await page.getAttribute('#model-status', 'data-loaded'), 'shipped gpt2-tiny-wikitext');
  assert.equal(await page.isEnabled('#run-eval'), true);
  // The badge and the bar show the model in use, not the rejected file; the error can be dismissed.
  assert.equal(await page.getAttribute('#state-model', 'data-state'), 'done');
  assert.equal(await page.textContent('#state-model'), 'kept shipped gpt2-tiny-wikitext');
  assert.match(await page.textContent('#load-progress .label'), /not loaded; shipped gpt2-tiny-wikitext stays loaded/);
  assert.equal(await page.getAttribute('#load-progress', 'data-state'), 'done');
  await page.click('#error-close');
  assert.equal(await page.isHidden('#error'), true);
  assert.equal(await page.isHidden('#error-close'), true);
  // The tab has an icon, and the GPU line names an adapter even where the browser leaves the name empty.
  assert.match(await page.getAttribute('link[rel=icon]', 'href'), /^data:image\/svg\+xml/);
  const gpu = await page.textContent('#gpu-status');
  assert.match(gpu, /^GPU: \S.* · largest binding \d+ MiB$/);
  assert.doesNotMatch(gpu, /unnamed adapter/, 'SwiftShader leaves the name empty but gives its vendor and architecture');
  await page.close();
});

test('a hub repository loads once, then comes from the browser cache', async () => {
  const context = await browser.newContext();
  const page = await openPage(context, `${pageUrl}/?hub=${encodeURIComponent(hub.url)}`);
  const weightsPath = `/${HUB_REPO}/resolve/main/model.safetensors`;
  for (let load = 0; load < 2; load++) {
    if (load === 1) {
      await page.reload();
      await page.waitForSelector('#model-status[data-loaded]');
    }
    await page.fill('#hub-repo', HUB_REPO);
    await page.click('#load-hub');
    await page.waitForFunction((repo) => document.getElementById('model-status').dataset.loaded === repo, HUB_REPO, { timeout: 60_000 });
    const downloads = hub.log.filter((e) => e.path === weightsPath && e.bodyBytes > 1).length; // not the 1-byte probe
    assert.equal(downloads, 1, `load ${load}: model.safetensors downloaded once in all`);
  }
  const report = await evaluateInPage(page, text);
  assert.ok(relative(report.perplexity, native.perplexity) < PAGE_VS_CLI_REL);

  await page.fill('#hub-repo', 'lutlab-test/no-such-model');
  await page.click('#load-hub');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /no-such-model\/resolve\/main\/config\.json: not found \(HTTP 404\)/);
  await context.close();
});
