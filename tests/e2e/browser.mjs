// Shared by the e2e tests: the page server, a local mimic of the Hugging Face hub, Chromium with
// SwiftShader's WebGPU, and the native CLI for reference figures.

import http from 'node:http';
import crypto from 'node:crypto';
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

/// A local mimic of huggingface.co for the page's hub client (@huggingface/hub), with CORS.
/// `repos`: repo id -> a directory (branch `main`) or `{ revisions: { main: dir, other: dir },
/// token }`; with `token` the repo is gated: every route answers 401 without `Authorization:
/// Bearer <token>`. Routes, as the hub serves them:
/// - `GET/HEAD /{repo}/resolve/{revision}/{file}`: ETag (the git oid, or for *.safetensors, LFS
///   files, X-Linked-Etag with their sha256 and X-Linked-Size), X-Repo-Commit, Content-Length,
///   Accept-Ranges; `Range: bytes=a-b` gives 206 with Content-Range; a matching If-None-Match
///   gives 304 (before Range, as RFC 9110 orders them); errors carry X-Error-Code.
/// - `GET /api/models/{repo}/tree/{revision}`: the revision's files as JSON.
/// It records every request in `log` ({ method, url, path, headers, status, bodyBytes }), counts
/// requests per path in `requests`, and can change a file's ETag (`changeEtag`), cut the next
/// downloads of a path after some bytes (`interruptNext`) or refuse a request header in CORS
/// preflights (`refuseInPreflight`).
export async function startHubMimic(repos) {
  const requests = new Map();
  const log = [];
  const etagSalt = new Map(); // "repo@revision/file" -> a suffix that changes the ETag
  const interruptions = new Map(); // path -> { bytes to send before the connection is cut, times }
  const refusedInPreflight = new Set(); // request headers left out of Access-Control-Allow-Headers
  const sha = (algorithm, data) => crypto.createHash(algorithm).update(data).digest('hex');
  const revisionsOf = (spec) => (typeof spec === 'string' ? { main: spec } : spec.revisions);
  const commitOf = (repo, revision) => sha('sha1', `${repo}@${revision}`);
  const filesOf = (dir) => fs.readdirSync(dir).filter((name) => fs.statSync(path.join(dir, name)).isFile());
  /// What the hub knows of a file: size, git oid, LFS sha256 (for *.safetensors), and its ETags.
  const describe = (repo, revision, dir, name) => {
    const bytes = fs.readFileSync(path.join(dir, name));
    const salt = etagSalt.get(`${repo}@${revision}/${name}`) ?? '';
    const oid = sha('sha1', Buffer.concat([Buffer.from(`blob ${bytes.length}\0`), bytes])) + salt;
    const lfs = name.endsWith('.safetensors') ? { oid: sha('sha256', bytes) + salt, size: bytes.length, pointerSize: 134 } : null;
    return { bytes, oid, lfs, etag: `"${oid}"`, linkedEtag: lfs && `"${lfs.oid}"` };
  };
  const cors = {
    'access-control-allow-origin': '*',
    'access-control-expose-headers': 'ETag, X-Linked-Etag, X-Linked-Size, X-Repo-Commit, Content-Range, Content-Length, Accept-Ranges, X-Error-Code, X-Error-Message, Link, X-Request-Id',
  };
  const fail = (res, status, code, message) => {
    res.writeHead(status, { ...cors, 'content-type': 'application/json', 'x-error-code': code, 'x-error-message': message })
      .end(JSON.stringify({ error: message }));
    return { status, bodyBytes: 0 };
  };

  const handle = (req, res, url) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...cors,
        'access-control-allow-methods': 'GET, HEAD, OPTIONS',
        'access-control-allow-headers': ['authorization', 'range', 'if-none-match', 'accept', 'content-type']
          .filter((name) => !refusedInPreflight.has(name)).join(', '),
        'access-control-max-age': '0',
      }).end();
      return { status: 204, bodyBytes: 0 };
    }
    const tree = url.pathname.match(/^\/api\/models\/([^/]+\/[^/]+|[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/);
    const resolve = url.pathname.match(/^\/([^/]+\/[^/]+|[^/]+)\/resolve\/([^/]+)\/([^/]+)$/);
    const [, repo, encodedRevision] = tree ?? resolve ?? [];
    const spec = repo && repos[repo];
    if (!spec) return fail(res, 404, 'RepoNotFound', `Repository not found: ${repo ?? url.pathname}`);
    if (spec.token && req.headers.authorization !== `Bearer ${spec.token}`) {
      return req.headers.authorization
        ? fail(res, 401, 'GatedRepo', 'Invalid credentials in Authorization header')
        : fail(res, 401, 'GatedRepo', `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
    }
    const revision = decodeURIComponent(encodedRevision);
    const dir = revisionsOf(spec)[revision];
    if (!dir) return fail(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    const commit = commitOf(repo, revision);
    if (tree) {
      const entries = filesOf(dir).map((name) => {
        const { bytes, oid, lfs } = describe(repo, revision, dir, name);
        return { type: 'file', oid, size: bytes.length, path: name, ...(lfs && { lfs }) };
      });
      const body = Buffer.from(JSON.stringify(entries));
      res.writeHead(200, { ...cors, 'content-type': 'application/json', 'content-length': body.length, 'x-repo-commit': commit }).end(body);
      return { status: 200, bodyBytes: body.length };
    }
    const name = decodeURIComponent(resolve[3]);
    if (!filesOf(dir).includes(name)) return fail(res, 404, 'EntryNotFound', `Entry not found: ${name}`);
    const { bytes, etag, linkedEtag } = describe(repo, revision, dir, name);
    const headers = {
      ...cors, etag, 'x-repo-commit': commit, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream',
      ...(linkedEtag && { 'x-linked-etag': linkedEtag, 'x-linked-size': String(bytes.length) }),
    };
    const ifNoneMatch = req.headers['if-none-match'];
    if (ifNoneMatch && ifNoneMatch.split(/\s*,\s*/).some((tag) => tag === etag || tag === linkedEtag || tag === '*')) {
      res.writeHead(304, headers).end();
      return { status: 304, bodyBytes: 0 };
    }
    let [begin, end, status] = [0, bytes.length - 1, 200];
    const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (range) {
      begin = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
      if (begin >= bytes.length || end < begin) {
        res.writeHead(416, { ...cors, 'content-range': `bytes */${bytes.length}` }).end();
        return { status: 416, bodyBytes: 0 };
      }
      status = 206;
      headers['content-range'] = `bytes ${begin}-${end}/${bytes.length}`;
    }
    const body = bytes.subarray(begin, end + 1);
    res.writeHead(status, { ...headers, 'content-length': body.length });
    if (req.method === 'HEAD') {
      res.end();
      return { status, bodyBytes: 0 };
    }
    const cut = interruptions.get(url.pathname);
    if (cut && body.length > cut.bytes) {
      if (--cut.times === 0) interruptions.delete(url.pathname);
      res.write(body.subarray(0, cut.bytes), () => setTimeout(() => res.destroy(), 50));
      return { status, bodyBytes: cut.bytes, interrupted: true };
    }
    res.end(body);
    return { status, bodyBytes: body.length };
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://hub');
    if (req.method !== 'OPTIONS') requests.set(url.pathname, (requests.get(url.pathname) ?? 0) + 1);
    log.push({ method: req.method, url: req.url, path: url.pathname, headers: { ...req.headers }, ...handle(req, res, url) });
  });
  return {
    url: await listen(server),
    requests,
    log,
    server,
    /// The bytes of `path`'s bodies sent so far (GET responses, probes and resumed ranges included).
    bodyBytes: (pathname) => log.filter((entry) => entry.path === pathname).reduce((sum, entry) => sum + entry.bodyBytes, 0),
    /// As if a new commit replaced `file` on `revision`: its ETag (and oid) change, its bytes do not.
    changeEtag: (repo, revision, file) => etagSalt.set(`${repo}@${revision}/${file}`, `${Date.now()}`),
    /// The next `times` GETs of `pathname` send `afterBytes` of their body, then the connection is cut.
    interruptNext: (pathname, afterBytes, times = 1) => interruptions.set(pathname, { bytes: afterBytes, times }),
    /// CORS preflights leave `header` out of the allowed request headers (or allow it again).
    refuseInPreflight: (header, refuse = true) => (refuse ? refusedInPreflight.add(header) : refusedInPreflight.delete(header)),
  };
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
  // The page runs our matmul and fused kernels on every adapter, SwiftShader's too
  // (crates/lutlab-model/src/device.rs); the CLI on lavapipe would pick burn's: the same here.
  const env = { ...process.env, LUTLAB_MATMUL: 'gemm', LUTLAB_FUSED: '1' };
  const out = execFileSync(bin, [...args, '--json'], { encoding: 'utf8', env });
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

/// The page (SwiftShader's WebGPU) against the CLI (lavapipe's Vulkan) on the same weights, text
/// and kernels: measured 6.5e-8 to 2.5e-7 for dense evaluation and at most 2.7e-7 for quantized and
/// packed models (2026-12-06; 1.6e-8 to 1.9e-7 when both ran burn's kernels; docs/AGREEMENT.md).
/// Both run f32 on the CPU; the bound leaves 4x for their different instruction scheduling.
export const PAGE_VS_CLI_REL = 1e-6;
