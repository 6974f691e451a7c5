// Shared by the e2e tests: the page server, a local mimic of the Hugging Face hub, Chromium with
// SwiftShader's WebGPU, and the native CLI for reference figures.

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { createServer } from '../../web/serve.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHIPPED = path.join(ROOT, 'models/gpt2-tiny-wikitext');
export const OUT = path.join(ROOT, 'tests/e2e/out');

// Chromium's WebGPU on the CPU (no GPU here): SwiftShader's Vulkan behind Dawn.
const CHROMIUM_FLAGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader', '--use-angle=swiftshader', '--disable-background-networking',
  '--disable-component-update', '--no-first-run',
];

export function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`)));
}

/// Stops a server now, keep-alive connections included, so the test process can exit.
export function stop(server) {
  server?.closeAllConnections();
  server?.close();
}

export async function startPage() {
  const server = createServer();
  return { url: await listen(server), server };
}

/// Serves `/{repo}/resolve/main/{file}` like huggingface.co for the repos in `repos`
/// (repo id -> directory), with CORS, and counts requests per path.
export async function startHubMimic(repos) {
  const requests = new Map();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://hub');
    requests.set(url.pathname, (requests.get(url.pathname) ?? 0) + 1);
    const match = url.pathname.match(/^\/(.+)\/resolve\/main\/([^/]+)$/);
    const dir = match && repos[match[1]];
    const file = dir && path.join(dir, match[2]);
    const headers = { 'access-control-allow-origin': '*' };
    if (!file || !fs.existsSync(file)) {
      res.writeHead(404, headers).end('Entry not found');
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': fs.statSync(file).size }).end(fs.readFileSync(file));
  });
  return { url: await listen(server), requests, server };
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS });
}

/// Opens the page and waits until the shipped model is loaded (the page loads it at start).
export async function openPage(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.consoleLog = [];
  page.on('console', (m) => page.consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLog.push(`pageerror: ${e.message}`));
  const start = Date.now();
  await page.goto(url);
  try {
    await page.waitForSelector('#model-status[data-loaded]', { timeout: 120_000 });
    page.loadedAfterMs = Date.now() - start;
  } catch (e) {
    throw new Error(`${e.message}\npage error: ${await page.textContent('#error')}\nconsole:\n${page.consoleLog.join('\n')}`);
  }
  return page;
}

/// Evaluates `text` in the page and returns the report object.
export async function evaluateInPage(page, text, { timeout = 300_000 } = {}) {
  await page.check('input[name=text][value=custom]');
  await page.fill('#custom-text', text);
  await page.evaluate(() => delete document.getElementById('eval-result').dataset.report);
  await page.click('#run-eval');
  await page.waitForFunction(
    () => document.getElementById('eval-result').dataset.report || !document.getElementById('error').hidden,
    null, { timeout },
  );
  const error = await page.evaluate(() => { const e = document.getElementById('error'); return e.hidden ? null : e.textContent; });
  if (error) throw new Error(`page error: ${error}\nconsole:\n${page.consoleLog.join('\n')}`);
  return JSON.parse(await page.getAttribute('#eval-result', 'data-report'));
}

/// Runs the native CLI with `args` plus `--json` and returns its JSON report.
export function lutlab(args) {
  const target = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), '.cache/lutlab-target');
  const bin = process.env.LUTLAB_BIN ?? path.join(target, 'release/lutlab');
  const out = execFileSync(bin, [...args, '--json'], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}

/// A fresh temporary directory.
export function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'lutlab-e2e-'));
}

/// `lutlab <args> --data <text written to a file>`.
function nativeCli(args, text) {
  const file = path.join(tempDir(), 'text.txt');
  fs.writeFileSync(file, text);
  return lutlab([...args, '--data', file]);
}

/// The JSON header of a safetensors file.
export function safetensorsHeader(file) {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  return JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
}

/// The f32 tensors of a safetensors file: name -> Float32Array.
export function readSafetensors(file) {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const data = bytes.subarray(8 + headerLength);
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const copy = new Uint8Array(data.subarray(begin, end));
    tensors.set(name, new Float32Array(copy.buffer));
  }
  return tensors;
}

/// The native CLI's report on the same text (`lutlab eval --json`).
export function nativeEval(text, modelDir = SHIPPED) {
  return nativeCli(['eval', '--model', modelDir], text);
}

/// `lutlab quantize ... --eval` on the same text: the quantized model's report.
export function nativeQuantizedEval(text, quantizeArgs) {
  return nativeCli(['quantize', ...quantizeArgs, '--eval'], text);
}

/// `lutlab eval --packed FILE` on the same text.
export function nativePackedEval(text, packedFile, modelDir = SHIPPED) {
  return nativeCli(['eval', '--packed', packedFile, '--model', modelDir], text);
}

/// The first `chars` characters of WikiText-2 test: several evaluation windows of the shipped model.
export function shortText(chars = 1200) {
  return fs.readFileSync(path.join(ROOT, 'data/wikitext-2/test.txt'), 'utf8').slice(0, chars);
}

/// Relative difference of two perplexities.
export const relative = (a, b) => Math.abs(a - b) / Math.abs(b);

/// The page (SwiftShader's WebGPU) against the CLI (lavapipe's Vulkan) on the same weights and
/// text: measured 1.6e-8 to 8.7e-8 for dense evaluation and at most 1.9e-7 for quantized and
/// packed models (docs/AGREEMENT.md). Both run f32 on the CPU; the bound leaves 5x for their
/// different instruction scheduling.
export const PAGE_VS_CLI_REL = 1e-6;
