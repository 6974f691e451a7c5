// The kernels lutlab runs on GPUs (our matmul, shaders/gemm.wgsl; the fused norms, softmax and
// loss, shaders/norm.wgsl, softmax.wgsl, nll.wgsl) are off on CPU adapters, SwiftShader's
// included, so the page's other tests never have the browser compile them. This one switches
// them on (Lab.useGpuKernels): Chromium's WebGPU must compile them, and the shipped GPT-2's
// perplexity must be the one burn's kernels give.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPage, launchBrowser, openPage, evaluateInPage, shortText, relative, stop } from './browser.mjs';

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

test("the GPU kernels compile in the browser and give burn's perplexity", async () => {
  const page = await openPage(browser, pageUrl);
  await page.fill('#max-length', '128');
  await page.fill('#stride', '128');
  const text = shortText(1200);
  const burns = await evaluateInPage(page, text);
  await page.evaluate(() => window.lutlabTestHooks.lab().useGpuKernels(true));
  const ours = await evaluateInPage(page, text);
  await page.evaluate(() => window.lutlabTestHooks.lab().useGpuKernels(false));
  const rel = relative(ours.perplexity, burns.perplexity);
  console.log(`GPU kernels ${ours.perplexity} (${ours.seconds.toFixed(2)} s), burn's ${burns.perplexity} (${burns.seconds.toFixed(2)} s): relative ${rel.toExponential(2)}`);
  assert.equal(ours.scored, burns.scored);
  // The fused kernels sum in another order than burn's (tests/fused.rs: logits within 2.6e-5,
  // perplexity within 1e-7 of transformers' either way).
  assert.ok(rel < 1e-6, `perplexity ${ours.perplexity} on the GPU kernels, ${burns.perplexity} on burn's`);
  assert.ok(!page.consoleLog.some((line) => /error/i.test(line)), page.consoleLog.join('\n'));
});
