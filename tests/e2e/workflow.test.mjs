// The whole workflow of the page on the shipped model, as a learner would walk it: load →
// baseline → Fisher → quantize 4-bit per channel (Fisher-weighted, dense-and-sparse) → evaluate
// (against the CLI on the same Fisher file) → download (the CLI evaluates the file) → the bit
// slider re-quantizes one layer and the pictures change. Screenshots of every step land in
// tests/e2e/out/workflow-*.png; the time of each step is logged.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  OUT, startPage, stop, launchBrowser, openPage, evaluateInPage, nativeEval, nativeQuantizedEval, nativePackedEval,
  safetensorsHeader, shortText, tempDir,
  relative, PAGE_VS_CLI_REL,
} from './browser.mjs';

let pageUrl;
let pageServer;
let browser;
const text = shortText();
const timings = [];

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  browser = await launchBrowser();
  fs.mkdirSync(OUT, { recursive: true });
});

after(async () => {
  console.log(`step timings in the browser (SwiftShader):\n${timings.map(([step, ms]) => `  ${step}: ${(ms / 1000).toFixed(1)} s`).join('\n')}`);
  await browser?.close();
  stop(pageServer);
});

/// Runs `work`, logging how long it took under `step`.
async function timed(step, work) {
  const start = Date.now();
  const result = await work();
  timings.push([step, Date.now() - start]);
  return result;
}

const shot = (page, name) => page.screenshot({ path: path.join(OUT, `workflow-${name}.png`), fullPage: true });
const dataset = (page, selector) => page.$eval(selector, (el) => ({ ...el.dataset }));
/// A step's state once it has settled (the page marks it after the Worker's last answer).
const stepState = async (page, step) => {
  await page.waitForFunction((id) => document.getElementById(id).dataset.state !== 'running', `state-${step}`, { timeout: 60_000 });
  return page.$eval(`#state-${step}`, (el) => el.dataset.state);
};

/// Moves the bit slider with the keyboard and waits for the re-quantized layer.
async function slide(page, key, bits) {
  await page.focus('#slider-bits');
  await page.keyboard.press(key);
  await page.waitForFunction((b) => {
    const r = document.getElementById('slider-readout');
    return (r.dataset.bits === String(b) && r.dataset.state === 'done') || r.dataset.state === 'failed';
  }, bits, { timeout: 300_000 });
  const readout = await dataset(page, '#slider-readout');
  assert.equal(readout.state, 'done', await page.textContent('#slider-readout'));
  return readout;
}

test('the workflow: load, calibrate, quantize, evaluate, export, and the bit slider', async () => {
  const page = await timed('load the page and the shipped model', () => openPage(browser, pageUrl));
  assert.equal(await stepState(page, 'model'), 'done');
  assert.match(await page.textContent('#model-status'), /7\.\dM parameters: [\d.]+ MB as f32/);
  // Before quantization the layer view shows the original weights, and says why there is no more.
  await page.waitForSelector('#plot-histogram[data-state=drawn] svg');
  assert.match(await page.textContent('#slider-readout'), /not quantized yet/);
  assert.equal(await page.isDisabled('#slider-bits'), true, 'nothing to re-quantize yet');
  await shot(page, '1-model');

  // The f32 baseline on the same text as the CLI.
  const baseline = await timed('evaluate the original (f32)', () => evaluateInPage(page, text));
  const native = nativeEval(text);
  assert.ok(relative(baseline.perplexity, native.perplexity) < PAGE_VS_CLI_REL);

  // Calibrate: Fisher on two windows; the sensitivity heatmap appears with one cell per layer.
  await page.fill('#f-samples', '2');
  await page.fill('#f-seqlen', '64');
  await timed('Fisher (2 windows of 64 tokens)', async () => {
    await page.click('#run-fisher');
    await page.waitForSelector('#fisher-result[data-report]', { timeout: 300_000 });
  });
  assert.equal(await stepState(page, 'calibrate'), 'done');
  await page.waitForSelector('#plot-sensitivity[data-state=drawn] svg');
  assert.equal(await page.$$eval('#plot-sensitivity svg g[aria-label=cell] rect', (r) => r.length), 16);
  const [fisherDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-fisher')]);
  const fisherFile = path.join(tempDir(), 'page.fisher.safetensors');
  await fisherDownload.saveAs(fisherFile);
  await shot(page, '2-calibrate');

  // Quantize: Fisher-weighted k-means, 4 bits, a table per output channel, 0.45% outliers.
  await page.selectOption('#q-method', 'kmeans');
  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-granularity', 'channel');
  await page.fill('#q-outliers', '0.45');
  assert.equal(await page.isChecked('#q-fisher'), true, 'Fisher weighting is on once Fisher exists');
  const quant = await timed('quantize (k-means 4-bit per channel, CPU)', async () => {
    await page.click('#run-quantize');
    await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
    return JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  });
  assert.match(quant.label, /^kmeans Fisher-weighted 4-bit channel \+0\.45% outliers$/);
  assert.equal(quant.layers.length, 16);
  assert.ok(quant.layers.every((l) => l.outliers > 0), 'every layer keeps some outliers');
  await page.waitForSelector('#plot-error[data-state=drawn] svg');
  await page.waitForSelector('#plot-histogram[data-bits="4"]', { timeout: 60_000 }); // the layer view redraws after the result line
  const picture4 = await dataset(page, '#plot-histogram');
  assert.equal(picture4.bits, '4');
  assert.ok(Number((await dataset(page, '#plot-outliers')).outliers) > 0, 'the outlier picture shows the sparse weights');
  await shot(page, '3-quantize');

  // Evaluate: the page's quantized model against the CLI's, with the same Fisher file.
  const report = await timed('evaluate the quantized model (LUT kernels)', () => evaluateInPage(page, text));
  const cli = nativeQuantizedEval(text, ['--method', 'kmeans', '--bits', '4', '--granularity', 'channel', '--fisher', fisherFile, '--outlier-percent', '0.45']);
  console.log(`workflow: f32 ${baseline.perplexity.toFixed(4)}; quantized page ${report.perplexity} vs CLI ${cli.eval.perplexity}; `
    + `${quant.bits_per_weight.toFixed(3)} bits/weight; packed ${quant.packed.packed_bytes} bytes`);
  assert.ok(Math.abs(quant.bits_per_weight - cli.bits_per_weight) < 1e-9);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);
  assert.ok(report.perplexity > baseline.perplexity && report.perplexity < 1.15 * baseline.perplexity,
    `4-bit per channel costs a little perplexity: ${report.perplexity} vs ${baseline.perplexity}`);
  assert.match(await page.textContent('#eval-baseline'), /f32 original on the same text: [\d.]+; quantization costs [\d.]+% perplexity/);
  assert.equal(await page.$$eval('#history tbody tr', (rows) => rows.length), 2);
  await page.waitForSelector('#plot-ppl[data-state=drawn] svg');
  await shot(page, '4-evaluate');

  // Export: the packed file parses and the CLI evaluates it to the page's perplexity.
  const [download] = await timed('download the packed file', () => Promise.all([page.waitForEvent('download'), page.click('#download-packed')]));
  const packedFile = path.join(tempDir(), download.suggestedFilename());
  await download.saveAs(packedFile);
  const header = safetensorsHeader(packedFile);
  assert.equal(header.__metadata__.format, 'lutlab-packed');
  assert.equal(fs.statSync(packedFile).size > quant.packed.packed_bytes, true, 'the file holds at least the packed layers');
  const cliPacked = nativePackedEval(text, packedFile);
  assert.ok(relative(report.perplexity, cliPacked.perplexity) < PAGE_VS_CLI_REL);
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#download-csv')]);
  const lines = fs.readFileSync(await csv.path(), 'utf8').trim().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[2], /^kmeans Fisher-weighted 4-bit channel \+0\.45% outliers,kmeans,4,channel,Fisher-weighted; outliers 0\.45%,,your text,[\d.]+,\d+,/);
  await shot(page, '5-export');

  // The bit slider: down to 3 and 2 bits and back to 4; the picture and the error follow, and the
  // evaluated model stays as it was. SwiftShader is a software GPU, where the k-means shaders
  // are slower than the CPU reference: the page says so and the slider starts on the CPU reference.
  assert.match(await page.textContent('#slider-note'), /software GPU/);
  assert.equal(await page.isChecked('#slider-gpu'), false);
  const at3 = await timed('slider 4 → 3 bits', () => slide(page, 'ArrowLeft', 3));
  const picture3 = await dataset(page, '#plot-histogram');
  assert.equal(picture3.bits, '3');
  assert.notEqual(picture3.signature, picture4.signature, 'the histogram was redrawn');
  assert.ok(Number(picture3.mse) > Number(picture4.mse), `3 bits err more than 4: ${picture3.mse} vs ${picture4.mse}`);
  assert.match(await page.textContent('#slider-readout'), /at 3 bits: mean squared error [\d.e+-]+, Fisher-weighted error/);
  // The channel view at 3 bits (k-means, a table per channel): the channel's quantized weights
  // take at most 8 values, all of them drawn table entries; a channel's outliers are kept exactly.
  const channelView = async () => {
    const view = await dataset(page, '#plot-channel');
    const table = JSON.parse(view.table);
    const values = JSON.parse(view.quantized);
    assert.equal(table.length, 8, `3 bits: 8 table entries drawn (${view.table})`);
    assert.ok(values.length >= 2 && values.length <= 8, `channel ${view.channel}: ${values.length} distinct quantized values`);
    for (const v of values) assert.ok(table.includes(v), `channel ${view.channel}: ${v} is not among the drawn entries ${view.table}`);
    assert.equal(await page.$$eval('#plot-channel svg g[aria-label=rule] line', (l) => l.length), 8, 'one rule per entry');
    assert.match(await page.textContent('#plot-channel figcaption'), /Output channel \d+: Fisher-weighted error Σ F·\(w − q\)² [\d.]+e[-+]\d+/);
    return view;
  };
  const channel0 = await channelView();
  assert.equal(channel0.channel, '0');
  // Another channel (typed, then one ArrowUp): another picture with its own table.
  await page.fill('#layer-channel', '4');
  await page.focus('#layer-channel');
  await page.keyboard.press('ArrowUp');
  await page.waitForFunction(() => document.getElementById('plot-channel').dataset.channel === '5'
    && document.getElementById('slider-readout').dataset.state !== 'running', null, { timeout: 300_000 });
  const channel5 = await channelView();
  assert.notEqual(channel5.signature, channel0.signature, 'the channel view was redrawn');
  assert.notEqual(channel5.table, channel0.table, 'each channel has its own table');
  assert.equal((await dataset(page, '#plot-histogram')).mse, picture3.mse, 'the layer is the same 3-bit one');
  // The slider's range is the Bits menu's (k-means takes every width it offers), with no note.
  const offered = await page.$$eval('#q-bits option', (options) => options.map((o) => Number(o.value)));
  const range = await page.$eval('#slider-bits', (s) => [Number(s.min), Number(s.max)]);
  assert.deepEqual(range, [offered[0], offered[offered.length - 1]]);
  assert.equal(await page.textContent('#slider-range'), '');
  await page.fill('#layer-channel', '0');
  await page.waitForFunction(() => document.getElementById('plot-channel').dataset.channel === '0'
    && document.getElementById('slider-readout').dataset.state !== 'running', null, { timeout: 300_000 });
  const at2 = await timed('slider 3 → 2 bits', () => slide(page, 'ArrowLeft', 2));
  assert.ok(Number((await dataset(page, '#plot-histogram')).mse) > Number(picture3.mse));
  await page.keyboard.press('ArrowRight'); // 3: queued behind nothing, or replaced by the next move
  const at4 = await timed('slider 2 → 4 bits', () => slide(page, 'ArrowRight', 4));
  assert.equal((await dataset(page, '#plot-histogram')).mse, picture4.mse, 'back at 4 bits: the layer as the model has it');
  console.log(`slider on ${await page.$eval('#layer-select', (s) => s.value)} (${at3.engine}): 3 bits ${at3.ms} ms, 2 bits ${at2.ms} ms, `
    + `4 bits ${at4.ms} ms; with drawing ${at3.totalMs} / ${at2.totalMs} / ${at4.totalMs} ms`);
  assert.equal(at3.engine, 'cpu');
  await shot(page, '6-slider');
  assert.ok(relative((await evaluateInPage(page, text)).perplexity, report.perplexity) < 1e-9, 'the slider is a preview only');

  // Laptop width: the whole page once more, to look at (the pictures redraw at the new width).
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.evaluate(() => window.dispatchEvent(new Event('resize')));
  await page.waitForTimeout(500);
  await shot(page, '6b-laptop');

  // Narrow screens: the same page at phone width.
  await page.setViewportSize({ width: 420, height: 900 });
  await page.evaluate(() => window.dispatchEvent(new Event('resize')));
  await page.screenshot({ path: path.join(OUT, 'workflow-7-narrow.png'), fullPage: false });
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), true, 'no sideways scrolling');
  await page.waitForTimeout(500);
  await shot(page, '8-narrow-full');
  await page.close();
});
