// GPTQ in the page: Hessians computed on the GPU in step 2, then GPTQ (on the CPU and in WebGPU)
// and LDLQ-RG round onto the same uniform grid as round-to-nearest with a lower proxy loss
// tr(ΔW H ΔWᵀ) on every layer, and the result is packed and evaluated through the LUT kernels.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { OUT, startPage, stop, launchBrowser, openPage, evaluateInPage, shortText } from './browser.mjs';

let pageUrl;
let pageServer;
let browser;

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  stop(pageServer);
});

async function quantizeWith(page, method, { incoherence = false } = {}) {
  await page.selectOption('#q-method', method);
  await page.selectOption('#q-bits', '3');
  await page.selectOption('#q-granularity', 'channel');
  // The uniform grid's zero point (not offered for k-means tables); QuIP's processing wants a
  // symmetric grid.
  if (await page.isVisible('#q-asym')) await page.setChecked('#q-asym', !incoherence);
  await page.setChecked('#q-incoherence', incoherence);
  await page.evaluate(() => document.getElementById('quant-result').removeAttribute('data-report'));
  await page.click('#run-quantize');
  await page.waitForFunction(
    () => document.getElementById('quant-result').dataset.report || !document.getElementById('error').hidden, null, { timeout: 300_000 },
  );
  const error = await page.evaluate(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; });
  if (error) throw new Error(`page error: ${error}`);
  return JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
}

test('Hessians in the page drive every Hessian method (GPTQ and LDLQ-RG below round-to-nearest on every layer) and picture incoherence processing', async () => {
  const page = await openPage(browser, pageUrl);
  // The Quantize step offers the widths the layer slider ranges over.
  const widths = await page.$$eval('#q-bits option', (options) => options.map((o) => Number(o.value)));
  const slider = await page.$eval('#slider-bits', (s) => [Number(s.min), Number(s.max)]);
  assert.deepEqual(widths, Array.from({ length: slider[1] - slider[0] + 1 }, (_, i) => slider[0] + i));
  // Without Hessians a GPTQ-style method is refused by name.
  await page.selectOption('#q-method', 'gptq');
  await page.click('#run-quantize');
  await page.waitForFunction(() => !document.getElementById('error').hidden, null, { timeout: 60_000 });
  assert.match(await page.textContent('#error'), /Hessian/);

  await page.fill('#f-samples', '8');
  await page.fill('#f-seqlen', '128');
  await page.click('#run-hessians');
  await page.waitForFunction(() => document.getElementById('hessians-result').textContent.startsWith('Hessians of'), null, { timeout: 300_000 });
  const rtn = await quantizeWith(page, 'rtn');
  // An integer grid takes 2 to 8 bits: the slider starts at 2 and says why it differs from the menu.
  await page.waitForFunction(() => document.getElementById('slider-bits').min === '2', null, { timeout: 60_000 });
  assert.equal(await page.$eval('#slider-bits', (s) => s.max), '8');
  assert.match(await page.textContent('#slider-range'), /The slider covers 2 to 8 bits, not the Bits menu's 1 to 8: its grid needs at least 2 bits/);
  const gptq = await quantizeWith(page, 'gptq');
  // The same GPTQ rounded in WebGPU (f32; GpuRounder) instead of the CPU reference (f64): every
  // layer's proxy loss within 1e-3 of the CPU's (the bound of tests/hessian_rounding_gpu.rs),
  // and not all bit-equal, which they would be had the page quietly run the CPU path (the GPU
  // takes the loss from its own f32 errors).
  assert.ok(await page.isVisible('#q-gpu'), 'GPTQ offers the GPU');
  await page.setChecked('#q-gpu', true);
  const gptqGpu = await quantizeWith(page, 'gptq');
  await page.setChecked('#q-gpu', false);
  let differ = 0;
  for (const [i, layer] of gptq.layers.entries()) {
    const gpu = gptqGpu.layers[i].proxy_loss;
    assert.ok(Math.abs(gpu - layer.proxy_loss) <= 1e-3 * layer.proxy_loss, `${layer.name}: GPTQ on the GPU ${gpu} vs the CPU ${layer.proxy_loss}`);
    if (gpu !== layer.proxy_loss) differ += 1;
  }
  assert.ok(differ > 0, 'the GPU rounding ran (its proxy losses are its own)');
  console.log(`GPTQ 3-bit per channel, page GPU vs CPU: ${differ} of ${gptq.layers.length} proxy losses differ in their last bits, largest relative ${Math.max(...gptq.layers.map((l, i) => Math.abs(gptqGpu.layers[i].proxy_loss - l.proxy_loss) / l.proxy_loss)).toExponential(2)}`);
  const rg = await quantizeWith(page, 'ldlq-rg');
  assert.match(gptq.label, /^gptq int asym 3-bit channel/);
  for (const [i, layer] of rtn.layers.entries()) {
    assert.ok(Number.isFinite(layer.proxy_loss), `${layer.name}: round-to-nearest reports its proxy loss once Hessians exist`);
    assert.ok(gptq.layers[i].proxy_loss < layer.proxy_loss, `${layer.name}: GPTQ ${gptq.layers[i].proxy_loss} vs RTN ${layer.proxy_loss}`);
    assert.ok(rg.layers[i].proxy_loss < layer.proxy_loss, `${layer.name}: LDLQ-RG ${rg.layers[i].proxy_loss} vs RTN ${layer.proxy_loss}`);
  }
  assert.ok(rg.packed, 'per-channel results pack');
  // The result line names the layer the heatmap shows largest, by the heatmap's measure.
  assert.equal(await page.getAttribute('#quant-result', 'data-worst'), await page.getAttribute('#plot-error', 'data-largest'));
  assert.match(await page.textContent('#quant-result'), /largest squared error Σ \(w − q\)² in \S+ \(.*, as in the heatmap\)/);
  // The layer histogram says how many weights fall outside its range.
  assert.ok(Number(await page.getAttribute('#plot-histogram', 'data-tails')) > 0);
  assert.match(await page.textContent('#plot-histogram'), /\d+ weights below and \d+ above the range shown/);
  // The error heatmap's legend speaks the cells' notation (1e-3, not 1m).
  const labels = await page.$$eval('#plot-error text, #plot-error tspan', (els) => els.map((e) => e.textContent.trim()));
  assert.ok(labels.some((t) => /^\d(\.\d)?e[-+]\d+$/.test(t)), `e-notation in the heatmap: ${labels.join(' | ')}`);
  assert.ok(!labels.some((t) => /^[\d.]+\s?[µmkMG]$/.test(t)), `no SI prefixes in the heatmap: ${labels.join(' | ')}`);
  assert.match(await page.textContent('#quant-result'), /Proxy loss/);
  // The picture: one line per method over the layers.
  assert.equal(await page.getAttribute('#plot-proxy', 'data-state'), 'drawn');
  assert.equal(await page.getAttribute('#plot-proxy', 'data-series'), '3');

  // QuIP's incoherence processing pictured for the chosen layer: every weight is counted, and
  // the rotated weights have no outliers. (The Hessian's diagonal need not flatten: the
  // rescaling can concentrate the spectrum on one direction, which the rotation then spreads
  // over every input.)
  await page.waitForFunction(() => document.getElementById('plot-rotation').dataset.state === 'drawn', null, { timeout: 60_000 });
  const spectrum = await page.evaluate(() => ({ ...document.getElementById('plot-spectrum').dataset }));
  const rotation = await page.evaluate(() => ({ ...document.getElementById('plot-rotation').dataset }));
  assert.equal(spectrum.state, 'drawn');
  // μ_H is reported but not compared: this layer's eigenvectors are already about as spread as a
  // random rotation leaves them (μ ≈ 4 of at most √128 ≈ 11 either way).
  assert.ok(Number(spectrum.muAfter) > 0 && Number(spectrum.muBefore) > 0);
  const layer = await page.inputValue('#layer-select');
  const shape = (await page.textContent(`#layer-select option[value="${layer}"]`)).match(/\((\d+)×(\d+)\)/);
  assert.equal(Number(rotation.counted), Number(shape[1]) * Number(shape[2]), 'every weight in the histogram');
  // Rotated weights are nearly Gaussian: the largest of N sits near √(2 ln N) RMS, whatever the
  // layer had before (the shipped tiny model has no outliers to speak of: 4.7 RMS before).
  const gaussianPeak = Math.sqrt(2 * Math.log(Number(rotation.counted)));
  assert.ok(Number(rotation.peakAfter) < gaussianPeak + 1, `largest |w|/RMS ${rotation.peakBefore} → ${rotation.peakAfter} (Gaussian ≈ ${gaussianPeak})`);

  // The other Hessian methods of the menu, each reporting a proxy loss per layer and packing:
  // LDLQ (with incoherence processing, run through the rotations), greedy passes, LDLbal-ADMM
  // and GPTQ onto k-means tables; the last two below round-to-nearest on every layer.
  for (const [method, options] of [['ldlq', { incoherence: true }], ['greedy', {}], ['ldlbal-admm', {}], ['gptq-kmeans', {}]]) {
    const report = await quantizeWith(page, method, options);
    assert.ok(report.layers.every((l) => Number.isFinite(l.proxy_loss)), `${method}: proxy loss per layer`);
    assert.ok(report.packed, `${method}: packs`);
    if (options.incoherence) assert.match(report.label, /incoherence/);
    if (method === 'gptq-kmeans') assert.match(report.label, /kmeans/);
    if (method === 'ldlbal-admm' || method === 'gptq-kmeans') {
      for (const [i, l] of report.layers.entries()) assert.ok(l.proxy_loss < rtn.layers[i].proxy_loss, `${method} ${l.name}: ${l.proxy_loss} vs RTN ${rtn.layers[i].proxy_loss}`);
    }
  }

  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'hessian-methods.png'), fullPage: true });
  const report = await evaluateInPage(page, shortText());
  console.log(`k-means + GPTQ 3-bit in the page: perplexity ${report.perplexity}`);
  assert.ok(Number.isFinite(report.perplexity) && report.perplexity > 1);
  await page.close();
});
