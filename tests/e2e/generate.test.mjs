// Generation in the page (Chromium, SwiftShader's WebGPU): the original and the 4-bit quantized
// model continue a prompt side by side, and each text equals what `lutlab generate` writes
// natively for the same model and the packed file downloaded from the page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SHIPPED, OUT, lutlab, tempDir, startPage, stop, launchBrowser, openPage } from './browser.mjs';

const PROMPT = 'The game was released in';
const NEW_TOKENS = 16;
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

/// Runs the page's generation with `settings` and returns its report, or throws the page's error.
async function generateInPage(page, prompt, { mode = 'greedy', temperature, topK, seed, newTokens = NEW_TOKENS } = {}) {
  await page.fill('#gen-prompt', prompt);
  await page.check(`input[name=gen-mode][value=${mode}]`);
  if (mode === 'sampled') {
    await page.fill('#gen-temperature', String(temperature));
    await page.fill('#gen-top-k', String(topK));
    await page.fill('#gen-seed', String(seed));
  }
  await page.fill('#gen-max-new', String(newTokens));
  await page.evaluate(() => { delete document.getElementById('generate').dataset.report; document.getElementById('error').hidden = true; });
  await page.waitForSelector('#run-generate:not([disabled])');
  await page.click('#run-generate');
  await page.waitForFunction(
    () => document.getElementById('generate').dataset.report || !document.getElementById('error').hidden,
    null, { timeout: 300_000 },
  );
  const error = await page.evaluate(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; });
  if (error) throw new Error(`page error: ${error}`);
  return JSON.parse(await page.getAttribute('#generate', 'data-report'));
}

function nativeGenerate(modelArgs, extra = []) {
  return lutlab(['generate', ...modelArgs, '--prompt', PROMPT, '--max-new-tokens', String(NEW_TOKENS), ...extra]);
}

test('the page continues a prompt with both models exactly as lutlab generate does', async () => {
  const page = await openPage(browser, pageUrl);

  // Before quantizing: the original alone, and a message saying what the other side needs.
  const alone = await generateInPage(page, PROMPT, { newTokens: 2 });
  assert.equal(alone.quantized, null);
  assert.match(alone.message, /Nothing is quantized yet/);
  await assert.rejects(generateInPage(page, ''), /the prompt is empty/);

  await page.selectOption('#q-method', 'kmeans');
  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-granularity', 'channel');
  await page.click('#run-quantize');
  await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });

  const greedy = await generateInPage(page, PROMPT);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-packed')]);
  const packedFile = path.join(tempDir(), download.suggestedFilename());
  await download.saveAs(packedFile);

  const nativeOriginal = nativeGenerate(['--model', SHIPPED]);
  const nativeQuantized = nativeGenerate(['--packed', packedFile]);
  for (const [side, native] of [['original', nativeOriginal], ['quantized', nativeQuantized]]) {
    const mine = greedy[side];
    console.log(`${side} (${mine.label}): page ${mine.tokens_per_s.toFixed(2)} tokens/s, native ${native.tokens_per_s.toFixed(2)} tokens/s`
      + `\n  page:   ${JSON.stringify(mine.text)}\n  native: ${JSON.stringify(native.text)}`);
    assert.deepEqual(greedy.prompt_tokens, native.prompt_tokens);
    assert.equal(mine.tokens.length, NEW_TOKENS);
    assert.deepEqual(mine.tokens, native.tokens, `${side}: greedy tokens in the page and natively`);
    assert.equal(mine.text, native.text);
  }
  assert.equal(greedy.original.label, 'original (f32)');
  assert.match(greedy.quantized.label, /kmeans 4-bit channel/);
  assert.equal(await page.textContent('#gen-original figcaption'), 'original (f32)');
  assert.equal(await page.textContent('#gen-quantized .gen-text'), PROMPT + greedy.quantized.text);
  fs.mkdirSync(OUT, { recursive: true });
  await page.locator('#generate').screenshot({ path: path.join(OUT, 'generate-greedy.png') });

  // Sampling: the same seed draws the same tokens in the page and natively.
  const sampled = await generateInPage(page, PROMPT, { mode: 'sampled', temperature: 0.8, topK: 40, seed: 5 });
  const nativeSampled = nativeGenerate(['--packed', packedFile], ['--temperature', '0.8', '--top-k', '40', '--seed', '5']);
  console.log(`sampled (${sampled.sampling}): page ${JSON.stringify(sampled.quantized.text)}`);
  assert.equal(sampled.sampling, 'sampled at temperature 0.8, top-40, seed 5');
  assert.deepEqual(sampled.quantized.tokens, nativeSampled.tokens);

  await page.locator('#generate').screenshot({ path: path.join(OUT, 'generate-sampled.png') });

  // Cancel stops a long generation before its next token, and says so: a neutral "stopped",
  // not an error.
  await page.fill('#gen-max-new', '200');
  await page.evaluate(() => { document.getElementById('error').hidden = true; });
  await page.click('#run-generate');
  await page.click('#cancel-generate');
  await page.waitForSelector('#generate-progress[data-state=stopped]', { timeout: 60_000 });
  assert.match(await page.textContent('#generate-progress .label'), /^generating: stopped; earlier results kept\.$/);
  assert.equal(await page.isHidden('#error'), true, 'a cancel is not an error');
  await page.waitForFunction(() => !document.getElementById('run-generate').disabled, null, { timeout: 60_000 });

  // A packed file opened on its own: its text alone (through the LUT kernels), and why.
  await page.setInputFiles('#packed-file', packedFile);
  await page.waitForFunction(() => document.getElementById('model-status').textContent.startsWith('Opened packed file'));
  const packedAlone = await generateInPage(page, PROMPT, { newTokens: 3 });
  assert.equal(packedAlone.original, null);
  assert.match(packedAlone.message, /Only a packed file is open/);
  assert.deepEqual(packedAlone.quantized.tokens, nativeQuantized.tokens.slice(0, 3));
  await page.close();
});
