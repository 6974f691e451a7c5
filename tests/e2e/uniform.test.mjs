// Uniform (round-to-nearest) quantization in the page: Brevitas' choices (format, scale estimation
// and type, zero point) reach the quantizer, and the page's perplexity equals the native CLI's for
// the same flags.

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

/// Quantizes with the page's uniform controls and evaluates; returns the page's report.
async function quantizeUniform(page, { bits, granularity, format, scaleStats, scaleType, asym }) {
  await page.selectOption('#q-method', 'rtn');
  await page.selectOption('#q-bits', String(bits));
  await page.selectOption('#q-granularity', granularity);
  await page.selectOption('#q-format', format);
  await page.selectOption('#q-scale-stats', scaleStats);
  await page.selectOption('#q-scale-type', scaleType);
  await page.setChecked('#q-asym', asym);
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
  await page.evaluate(() => document.getElementById('quant-result').removeAttribute('data-report'));
  return { quant, eval: await evaluateInPage(page, text) };
}

test('uniform int4 asymmetric, min-error power-of-two scales, equals the CLI', async () => {
  const page = await openPage(browser, pageUrl);
  const { quant, eval: report } = await quantizeUniform(page, {
    bits: 4, granularity: 'channel', format: 'int', scaleStats: 'mse', scaleType: 'po2', asym: true,
  });
  const cli = nativeQuantizedEval(text, ['--method', 'rtn', '--bits', '4', '--granularity', 'channel',
    '--scale-stats', 'mse', '--scale-type', 'po2', '--asym']);
  console.log(`rtn int4 asym mse po2: browser ${report.perplexity} vs native ${cli.eval.perplexity}; ${quant.bits_per_weight} bits/weight`);
  assert.equal(quant.label, 'rtn int 4-bit channel asym mse po2');
  assert.equal(quant.layers.length, 16);
  assert.ok(Math.abs(quant.bits_per_weight - cli.bits_per_weight) < 1e-9);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'uniform.png'), fullPage: true });
  await page.close();
});

test('uniform FP8 e4m3 FNUZ with a percentile scale equals the CLI; e4m3 at 4 bits is refused', async () => {
  const page = await openPage(browser, pageUrl);
  const { quant, eval: report } = await quantizeUniform(page, {
    bits: 8, granularity: 'channel', format: 'e4m3fnuz', scaleStats: 'percentile:99.9', scaleType: 'float', asym: false,
  });
  const cli = nativeQuantizedEval(text, ['--method', 'rtn', '--bits', '8', '--granularity', 'channel',
    '--format', 'e4m3fnuz', '--scale-stats', 'percentile:99.9']);
  console.log(`rtn e4m3fnuz percentile: browser ${report.perplexity} vs native ${cli.eval.perplexity}`);
  assert.match(quant.label, /^rtn e4m3fnuz 8-bit channel sym percentile:99\.9$/);
  assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL);

  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-format', 'e4m3');
  await page.click('#run-quantize');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /e4m3 .*does not fit 4-bit/);
  await page.close();
});
