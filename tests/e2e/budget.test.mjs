// Mixed precision under a size budget in the page (issue 20, item 4): the page's allocation at
// 3 bits per weight is the CLI's `--budget 3bpw` (same width for every layer, same perplexity),
// the widths heatmap shows it, and the budget slider re-allocates the same candidates: at 5 bits
// per weight more bits go to the layers and the estimated loss falls. After evaluating the
// original and the allocation, the perplexity chart draws the expected perplexity at every budget.

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

const widthsShown = async (page) => JSON.parse(await page.getAttribute('#plot-widths', 'data-widths'));

test('a 3 bits-per-weight budget allocates as the CLI does, and the slider re-allocates', async () => {
  const page = await openPage(browser, pageUrl);
  await page.selectOption('#q-method', 'rtn');
  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-granularity', 'channel');
  await page.fill('#q-budget', '3');
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 600_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  assert.ok(quant.allocation, 'the report carries the allocation');
  await page.waitForSelector('#plot-widths[data-state=drawn]', { timeout: 60_000 });

  const cli = nativeQuantizedEval(text, ['--method', 'rtn', '--bits', '4', '--granularity', 'channel', '--budget', '3bpw']);
  const byName = (layers) => Object.fromEntries(layers.map((l) => [l.name, l.bits]));
  assert.deepEqual(byName(quant.allocation.layers), byName(cli.allocation.layers), 'the same width for every layer');
  assert.deepEqual(await widthsShown(page), byName(quant.allocation.layers), 'the heatmap shows the allocation');
  assert.ok(Math.abs(quant.bits_per_weight - cli.bits_per_weight) < 1e-9);
  assert.ok(quant.bits_per_weight <= 3, `${quant.bits_per_weight} bits per weight`);

  // The original on the same text: the f32 baseline that the expected curve is scaled from.
  await page.check('input[name=which][value=original]');
  const original = await evaluateInPage(page, text);
  await page.check('input[name=which][value=quantized]');
  const report = await evaluateInPage(page, text);
  console.log(`budget 3 bpw: browser ${report.perplexity} vs native ${cli.eval.perplexity}; ${quant.bits_per_weight} bits/weight; widths ${JSON.stringify(byName(quant.allocation.layers))}`);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL, `${report.perplexity} vs ${cli.eval.perplexity}`);

  // The expected perplexity over the slider's range: calibrated by this one evaluation, so it
  // passes through it; it falls as the budget grows and stays above the original.
  await page.waitForSelector('#plot-ppl[data-expected]', { timeout: 60_000 });
  const expected = JSON.parse(await page.getAttribute('#plot-ppl', 'data-expected'));
  console.log(`expected: κ ${expected.kappa}, ${expected.points.map((p) => `${p.bits_per_weight.toFixed(3)}:${p.perplexity.toFixed(2)}`).join(' ')}`);
  assert.equal(expected.evaluations, 1);
  assert.ok(expected.kappa > 0, `κ ${expected.kappa}`);
  const here = expected.points.filter((p) => Math.abs(p.bits_per_weight - quant.bits_per_weight) < 1e-9);
  assert.ok(here.length > 0 && here.every((p) => relative(p.perplexity, report.perplexity) < 1e-9), 'the curve passes through the evaluation');
  for (let i = 1; i < expected.points.length; i++) {
    assert.ok(expected.points[i].bits_per_weight >= expected.points[i - 1].bits_per_weight - 1e-12);
    assert.ok(expected.points[i].perplexity <= expected.points[i - 1].perplexity * (1 + 1e-12), 'more bits, no higher expectation');
  }
  assert.ok(expected.points.every((p) => p.perplexity >= original.perplexity), 'never below the original');
  assert.ok(expected.points.at(-1).bits_per_weight > 4.5 && expected.points[0].bits_per_weight < 2.5, 'the whole feasible range');

  // The slider: 5 bits per weight re-allocates without quantizing; no layer loses bits.
  const before3 = await widthsShown(page);
  await page.$eval('#budget-slider', (el) => { el.value = '5'; el.dispatchEvent(new Event('input')); });
  await page.waitForFunction(() => document.getElementById('budget-readout').textContent.startsWith('5 bits per weight'), null, { timeout: 60_000 });
  const after5 = await widthsShown(page);
  console.log(`at 5 bpw: ${await page.textContent('#budget-readout')}`);
  const loss5 = Number(await page.getAttribute('#budget-readout', 'data-loss'));
  assert.ok(loss5 < quant.allocation.estimated_loss, `a larger budget, a smaller estimate: ${loss5} vs ${quant.allocation.estimated_loss}`);
  const bits = (widths) => Object.values(widths).reduce((a, b) => a + b, 0);
  assert.ok(bits(after5) > bits(before3), 'more bits allocated');
  fs.mkdirSync(OUT, { recursive: true });
  await page.locator('#budget-panel').screenshot({ path: path.join(OUT, 'budget.png') });
  await page.locator('#plot-ppl').screenshot({ path: path.join(OUT, 'budget-expected.png') });
  await page.close();
});
