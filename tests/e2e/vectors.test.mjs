// Vector look-up tables in the page (issue 20): "vectors of 2" reaches the quantizer, the page's
// perplexity equals the native CLI's for the same flags (both pack the model and run it through
// the vector LUT kernels), and the weight-pairs picture shows the codebook's 16 entries with a
// smaller error on its pairs than a scalar table of the same bits per weight; fitted on the GPU
// (WebGPU) each layer is the CPU's fit, or one of the same squared error (a near-tie).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { OUT, nativeQuantizedEval, startPage, stop, launchBrowser, openPage, evaluateInPage, shortText, relative, PAGE_VS_CLI_REL } from './browser.mjs';

let pageUrl;
let pageServer;
let browser;
const text = shortText();

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stop(pageServer);
});

const dataset = (page, selector) => page.$eval(selector, (el) => ({ ...el.dataset }));

test('vectors of 2 at 2 bits per weight: the page equals the CLI and draws the codebook', async () => {
  const page = await openPage(browser, pageUrl);
  await page.selectOption('#q-method', 'kmeans');
  await page.selectOption('#q-bits', '2');
  await page.selectOption('#q-granularity', 'tensor');
  await page.selectOption('#q-vectors', '2');
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 600_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  assert.match(quant.label, /vectors of 2/);
  assert.ok(quant.packed, 'vector tables pack in the page');

  await page.waitForSelector('#plot-vectors[data-state=drawn]', { timeout: 120_000 });
  const pairs = await dataset(page, '#plot-vectors');
  console.log(`weight pairs of the chosen layer: ${pairs.entries} entries, ${pairs.points} pairs drawn; error per weight vector ${pairs.vectorMse} vs scalar ${pairs.scalarMse}`);
  assert.equal(pairs.entries, '16', '2 bits per weight in pairs: 16 entries');
  assert.ok(Number(pairs.vectorMse) < Number(pairs.scalarMse), 'the codebook codes its pairs better than a scalar grid');
  // Codes of at most 12 bits: pairs allow 1 to 6 bits per weight on the slider.
  assert.equal(await page.getAttribute('#slider-bits', 'max'), '6');

  const report = await evaluateInPage(page, text);
  const cli = nativeQuantizedEval(text, ['--bits', '2', '--granularity', 'tensor', '--vector-dim', '2']);
  console.log(`vectors of 2, 2 bits: browser ${report.perplexity} vs native ${cli.eval.perplexity}; ${quant.bits_per_weight} bits/weight`);
  assert.ok(Math.abs(quant.bits_per_weight - cli.bits_per_weight) < 1e-9);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL, `${report.perplexity} vs ${cli.eval.perplexity}`);
  fs.mkdirSync(OUT, { recursive: true });
  await page.locator('#plot-vectors').screenshot({ path: path.join(OUT, 'vector-pairs.png') });
  await page.screenshot({ path: path.join(OUT, 'vectors.png'), fullPage: true });

  // "k-means on the GPU": the codebooks' assignment runs in WebGPU (vector_kmeans_assign.wgsl)
  // from the same k-means++ starts as the CPU fit above. Each layer is the CPU's exactly unless a
  // near-tie in f32 sent a restart to another local optimum (as natively, kmeans_gpu.rs), whose
  // squared error is then within 1e-3 of the CPU's.
  await page.check('#q-gpu');
  await page.evaluate(() => delete document.getElementById('quant-result').dataset.report);
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 600_000 });
  const onGpu = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  const cpuLayers = Object.fromEntries(quant.layers.map((l) => [l.name, l.mse]));
  const equal = onGpu.layers.filter((l) => l.mse === cpuLayers[l.name]).length;
  console.log(`vectors of 2 fitted on the GPU: ${equal} of ${onGpu.layers.length} layers equal the CPU fit; ${onGpu.label}`);
  for (const l of onGpu.layers) assert.ok(relative(l.mse, cpuLayers[l.name]) <= 1e-3, `${l.name}: ${l.mse} vs ${cpuLayers[l.name]}`);
  assert.ok(4 * equal >= 3 * onGpu.layers.length, `only ${equal} layers equal the CPU's fit`);
  await page.close();
});
