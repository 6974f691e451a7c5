// GPTQ in the page: Hessians computed on the GPU in step 2, then GPTQ and LDLQ-RG round onto the
// same uniform grid as round-to-nearest with a lower proxy loss tr(ΔW H ΔWᵀ) on every layer, and
// the result is packed and evaluated through the LUT kernels.

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

async function quantizeWith(page, method) {
  await page.selectOption('#q-method', method);
  await page.selectOption('#q-bits', '3');
  await page.selectOption('#q-granularity', 'channel');
  await page.setChecked('#q-asym', true);
  await page.evaluate(() => document.getElementById('quant-result').removeAttribute('data-report'));
  await page.click('#run-quantize');
  await page.waitForFunction(
    () => document.getElementById('quant-result').dataset.report || !document.getElementById('error').hidden, null, { timeout: 300_000 },
  );
  const error = await page.evaluate(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; });
  if (error) throw new Error(`page error: ${error}`);
  return JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
}

test('Hessians in the page drive GPTQ and LDLQ-RG below round-to-nearest on every layer', async () => {
  const page = await openPage(browser, pageUrl);
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
  const gptq = await quantizeWith(page, 'gptq');
  const rg = await quantizeWith(page, 'ldlq-rg');
  assert.match(gptq.label, /^gptq int asym 3-bit channel/);
  for (const [i, layer] of rtn.layers.entries()) {
    assert.ok(Number.isFinite(layer.proxy_loss), `${layer.name}: round-to-nearest reports its proxy loss once Hessians exist`);
    assert.ok(gptq.layers[i].proxy_loss < layer.proxy_loss, `${layer.name}: GPTQ ${gptq.layers[i].proxy_loss} vs RTN ${layer.proxy_loss}`);
    assert.ok(rg.layers[i].proxy_loss < layer.proxy_loss, `${layer.name}: LDLQ-RG ${rg.layers[i].proxy_loss} vs RTN ${layer.proxy_loss}`);
  }
  assert.ok(rg.packed, 'per-channel results pack');
  assert.match(await page.textContent('#quant-result'), /Proxy loss/);
  // The picture: one line per method over the layers.
  assert.equal(await page.getAttribute('#plot-proxy', 'data-state'), 'drawn');
  assert.equal(await page.getAttribute('#plot-proxy', 'data-series'), '3');
  fs.mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'hessian-methods.png'), fullPage: true });
  const report = await evaluateInPage(page, shortText());
  console.log(`ldlq-rg 3-bit in the page: perplexity ${report.perplexity}`);
  assert.ok(Number.isFinite(report.perplexity) && report.perplexity > 1);
  await page.close();
});
