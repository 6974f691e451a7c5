// The page on the shipped OPT and Llama models: each loads (`?model=NAME`), evaluates the same
// text to the native CLI's perplexity, quantizes with Fisher-weighted 4-bit per-channel k-means
// (Fisher from one short window in the page, the same Fisher file given to the CLI) and
// evaluates the quantized model to the CLI's figure, and its packed download evaluates natively
// to the page's figure. The one decoder block serves all of it in wasm as natively.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  ROOT, OUT, startPage, stop, launchBrowser, openPage, evaluateInPage, nativeEval, nativeQuantizedEval, nativePackedEval,
  shortText, tempDir, startHubMimic,
  relative, PAGE_VS_CLI_REL,
} from './browser.mjs';

let pageUrl;
let pageServer;
let browser;
const text = shortText(1200);

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  browser = await launchBrowser();
  fs.mkdirSync(OUT, { recursive: true });
});

after(async () => {
  await browser?.close();
  stop(pageServer);
});

for (const [name, family] of [['opt-tiny-wikitext', 'opt'], ['llama-tiny-wikitext', 'llama']]) {
  test(`the shipped ${family} model: evaluate, Fisher, quantize, evaluate, download, as the CLI does`, async () => {
    const modelDir = path.join(ROOT, 'models', name);
    const page = await openPage(browser, `${pageUrl}?model=${name}`);
    const status = await page.textContent('#model-status');
    assert.match(status, new RegExp(`Loaded shipped ${name} \\(${family}\\): 4 layers`));
    if (family === 'llama') assert.match(status, /6 heads \(2 key\/value\)/);

    const dense = await evaluateInPage(page, text);
    const cliDense = nativeEval(text, modelDir);
    console.log(`${name} f32: browser ${dense.perplexity} vs native ${cliDense.perplexity}`);
    assert.ok(relative(dense.perplexity, cliDense.perplexity) < PAGE_VS_CLI_REL, `${dense.perplexity} vs ${cliDense.perplexity}`);

    // Fisher on one short window, saved for the CLI.
    await page.fill('#f-samples', '1');
    await page.fill('#f-seqlen', '32');
    await page.click('#run-fisher');
    await page.waitForSelector('#fisher-result[data-report]', { timeout: 300_000 });
    // The sensitivity heatmap: a cell for every linear of every block.
    const layers = family === 'llama' ? 7 * 4 : 6 * 4;
    await page.waitForSelector('#plot-sensitivity[data-state=drawn] svg');
    assert.equal(await page.$$eval('#plot-sensitivity svg g[aria-label=cell] rect', (r) => r.length), layers);
    const dir = tempDir();
    const [fisherDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-fisher')]);
    const fisherFile = path.join(dir, 'fisher.safetensors');
    await fisherDownload.saveAs(fisherFile);

    await page.selectOption('#q-method', 'kmeans');
    await page.selectOption('#q-bits', '4');
    await page.selectOption('#q-granularity', 'channel');
    await page.setChecked('#q-fisher', true);
    await page.click('#run-quantize');
    await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
    const quant = JSON.parse(await page.getAttribute('#quant-result', 'data-report'));
    assert.equal(quant.layers.length, layers);
    const report = await evaluateInPage(page, text);
    const cli = nativeQuantizedEval(text, ['--model', modelDir, '--method', 'kmeans', '--bits', '4', '--granularity', 'channel', '--fisher', fisherFile]);
    console.log(`${name} kmeans 4-bit: browser ${report.perplexity} vs native ${cli.eval.perplexity}`);
    assert.ok(relative(report.perplexity, cli.eval.perplexity) < PAGE_VS_CLI_REL, `${report.perplexity} vs ${cli.eval.perplexity}`);

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-packed')]);
    const packedFile = path.join(dir, 'packed.safetensors');
    await download.saveAs(packedFile);
    const packed = nativePackedEval(text, packedFile, modelDir);
    assert.ok(relative(packed.perplexity, report.perplexity) < PAGE_VS_CLI_REL, `${packed.perplexity} vs ${report.perplexity}`);
    await page.screenshot({ path: path.join(OUT, `family-${family}.png`), fullPage: true });
    await page.close();
  });
}

test('a model too large for the GPU is refused by name from its config, before its weights are fetched', async () => {
  // Llama 3 8B's shape: the 128,256 × 4,096 embedding is 2.1 GB as f32, past SwiftShader's 1 GiB bindings.
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    model_type: 'llama', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32,
    num_key_value_heads: 8, max_position_embeddings: 8192, vocab_size: 128256, rms_norm_eps: 1e-5,
    rope_theta: 500000.0, tie_word_embeddings: false,
  }));
  const hub = await startHubMimic({ 'lutlab-test/llama-8b-shaped': dir });
  try {
    const page = await openPage(browser, `${pageUrl}?hub=${encodeURIComponent(hub.url)}`);
    await page.fill('#hub-repo', 'lutlab-test/llama-8b-shaped');
    await page.click('#load-hub');
    await page.waitForSelector('#error:not([hidden])');
    const message = await page.textContent('#error');
    assert.match(message, /too large for this GPU/);
    assert.match(message, /model\.embed_tokens\.weight|lm_head\.weight/);
    assert.equal(hub.requests.get('/lutlab-test/llama-8b-shaped/resolve/main/model.safetensors'), undefined, 'weights were not fetched');
    assert.equal(await page.getAttribute('#model-status', 'data-loaded'), 'shipped gpt2-tiny-wikitext', 'the loaded model stays');
    await page.close();
  } finally {
    stop(hub.server);
  }
});
