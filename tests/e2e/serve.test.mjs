// web/serve.mjs without a browser: content negotiation (br, gzip, identity), Vary, ETag and 304,
// precompressed siblings (fresh ones used, stale ones not), HEAD, ranges of a large file, and
// paths outside the served set. The server runs over a temporary tree laid out like the repository.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { createServer } from '../../web/serve.mjs';
import { negotiate } from '../../web/compression.mjs';
import { listen, stop, tempDir } from './browser.mjs';

let root, server, base;
// Text that compresses (a tokenizer-like JSON), and weights that do not (random bytes, 3 MB).
const json = JSON.stringify(Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`token${i}`, i])));
const weights = crypto.randomBytes(3 << 20);

function write(relative, bytes) {
  const file = path.join(root, relative);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, bytes);
  return file;
}

before(async () => {
  root = tempDir();
  write('index.html', '<!doctype html><title>t</title>' + '<p>page</p>'.repeat(500));
  write('web/app.js', 'export const x = 1;\n'.repeat(2000));
  write('models/m/tokenizer.json', json);
  write('models/m/model.safetensors', weights);
  write('web/logo.png', crypto.randomBytes(5000));
  write('secret.txt', 'not served');
  server = createServer({ root });
  base = await listen(server);
});

after(() => {
  stop(server);
  fs.rmSync(root, { recursive: true, force: true });
});

/// One raw request (node's http, so nothing is decoded or cached on the way).
function request(urlPath, headers = {}, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${urlPath}`, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const decode = (res) => ({
  br: zlib.brotliDecompressSync,
  gzip: zlib.gunzipSync,
}[res.headers['content-encoding']] ?? ((b) => b))(res.body);

test('negotiate: the best of br and gzip the header allows, null for identity', () => {
  assert.equal(negotiate('gzip, deflate, br, zstd'), 'br');
  assert.equal(negotiate('gzip, deflate'), 'gzip');
  assert.equal(negotiate('br;q=0.5, gzip;q=1.0'), 'gzip');
  assert.equal(negotiate('*'), 'br');
  assert.equal(negotiate('*, br;q=0'), 'gzip');
  assert.equal(negotiate('identity'), null);
  assert.equal(negotiate('br;q=0, gzip;q=0'), null);
  assert.equal(negotiate(undefined), null);
  assert.equal(negotiate(''), null);
});

test('text goes out in the best accepted encoding, with Vary and the encoded length', async () => {
  for (const [accept, expected] of [['gzip, deflate, br', 'br'], ['gzip', 'gzip']]) {
    const res = await request('/models/m/tokenizer.json', { 'accept-encoding': accept });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], expected);
    assert.equal(res.headers.vary, 'Accept-Encoding');
    assert.equal(Number(res.headers['content-length']), res.body.length);
    assert.ok(res.body.length < json.length / 3, `${expected}: ${res.body.length} bytes of ${json.length}`);
    assert.equal(decode(res).toString(), json);
  }
});

test('identity when the request accepts no encoding we have', async () => {
  for (const headers of [{}, { 'accept-encoding': 'identity' }, { 'accept-encoding': 'br;q=0, gzip;q=0' }, { 'accept-encoding': 'deflate' }]) {
    const res = await request('/models/m/tokenizer.json', headers);
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], undefined, JSON.stringify(headers));
    assert.equal(res.headers.vary, 'Accept-Encoding');
    assert.equal(res.body.toString(), json);
  }
});

test('weights and images are never encoded', async () => {
  for (const file of ['/models/m/model.safetensors', '/web/logo.png']) {
    const res = await request(file, { 'accept-encoding': 'gzip, deflate, br' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-encoding'], undefined, file);
    assert.equal(res.headers.vary, undefined, file);
  }
  const res = await request('/models/m/model.safetensors', { 'accept-encoding': 'br' });
  assert.ok(res.body.equals(weights));
});

test('strong ETag per encoding; If-None-Match gives 304 without a body; a changed file a new tag', async () => {
  const tags = {};
  for (const accept of ['br', 'gzip', 'identity']) {
    const res = await request('/web/app.js', { 'accept-encoding': accept });
    assert.match(res.headers.etag, /^"[A-Za-z0-9_-]{20,}"$/);
    tags[accept] = res.headers.etag;
    const again = await request('/web/app.js', { 'accept-encoding': accept, 'if-none-match': res.headers.etag });
    assert.equal(again.status, 304, accept);
    assert.equal(again.body.length, 0);
    assert.equal(again.headers.etag, res.headers.etag);
    assert.equal(again.headers['cache-control'], 'no-cache');
    const other = await request('/web/app.js', { 'accept-encoding': accept, 'if-none-match': '"something-else", W/"x"' });
    assert.equal(other.status, 200);
  }
  assert.equal(new Set(Object.values(tags)).size, 3, JSON.stringify(tags));

  const file = write('web/changing.js', 'export const v = 1;\n'.repeat(100));
  const first = await request('/web/changing.js', { 'accept-encoding': 'br' });
  fs.writeFileSync(file, 'export const v = 2;\n'.repeat(100));
  fs.utimesSync(file, new Date(), new Date(Date.now() + 2000)); // a new mtime even on coarse clocks
  const second = await request('/web/changing.js', { 'accept-encoding': 'br', 'if-none-match': first.headers.etag });
  assert.equal(second.status, 200);
  assert.notEqual(second.headers.etag, first.headers.etag);
  assert.match(decode(second).toString(), /v = 2/);
});

test('a fresh precompressed sibling is served as it is; a stale one is ignored', async () => {
  const file = write('web/pkg/glue.js', 'export const real = true;\n'.repeat(100));
  const sibling = write('web/pkg/glue.js.br', zlib.brotliCompressSync('export const fromSibling = true;\n'));
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(sibling, later, later);
  const fresh = await request('/web/pkg/glue.js', { 'accept-encoding': 'br' });
  assert.equal(fresh.headers['content-encoding'], 'br');
  assert.equal(decode(fresh).toString(), 'export const fromSibling = true;\n');

  const earlier = new Date(Date.now() - 60_000);
  fs.utimesSync(sibling, earlier, earlier);
  const stale = await request('/web/pkg/glue.js', { 'accept-encoding': 'br' });
  assert.equal(decode(stale).toString(), fs.readFileSync(file, 'utf8'));
});

test('HEAD has GET\'s headers and no body', async () => {
  for (const [file, accept] of [['/models/m/tokenizer.json', 'br'], ['/models/m/model.safetensors', 'br'], ['/index.html', 'identity']]) {
    const get = await request(file, { 'accept-encoding': accept });
    const head = await request(file, { 'accept-encoding': accept }, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    for (const name of ['content-type', 'content-length', 'content-encoding', 'etag', 'vary', 'accept-ranges']) {
      assert.equal(head.headers[name], get.headers[name], `${file} ${name}`);
    }
  }
});

test('ranges of a large file: 206 with the bytes asked for, suffix ranges, 416 past the end', async () => {
  const size = weights.length;
  const res = await request('/models/m/model.safetensors', { range: 'bytes=1000-1999' });
  assert.equal(res.status, 206);
  assert.equal(res.headers['content-range'], `bytes 1000-1999/${size}`);
  assert.equal(res.headers['accept-ranges'], 'bytes');
  assert.ok(res.body.equals(weights.subarray(1000, 2000)));

  const open = await request('/models/m/model.safetensors', { range: `bytes=${size - 10}-` });
  assert.ok(open.body.equals(weights.subarray(size - 10)));
  const suffix = await request('/models/m/model.safetensors', { range: 'bytes=-8' });
  assert.equal(suffix.headers['content-range'], `bytes ${size - 8}-${size - 1}/${size}`);
  assert.ok(suffix.body.equals(weights.subarray(size - 8)));

  const past = await request('/models/m/model.safetensors', { range: `bytes=${size}-` });
  assert.equal(past.status, 416);
  assert.equal(past.headers['content-range'], `bytes */${size}`);

  // A HEAD with a range (what a client asks to learn the length) and a stale If-Range.
  const head = await request('/models/m/model.safetensors', { range: 'bytes=0-7' }, 'HEAD');
  assert.equal(head.status, 206);
  assert.equal(head.headers['content-length'], '8');
  const stale = await request('/models/m/model.safetensors', { range: 'bytes=0-7', 'if-range': '"old"' });
  assert.equal(stale.status, 200);
  assert.equal(stale.body.length, size);

  // A range of a compressible file is of its own bytes, not of an encoding.
  const text = await request('/models/m/tokenizer.json', { range: 'bytes=0-9', 'accept-encoding': 'br' });
  assert.equal(text.status, 206);
  assert.equal(text.headers['content-encoding'], undefined);
  assert.equal(text.body.toString(), json.slice(0, 10));
});

test('paths outside the served set are 404, malformed ones too; other methods 405', async () => {
  for (const p of ['/secret.txt', '/../secret.txt', '/web/../secret.txt', '/%2e%2e/secret.txt', '/models/../secret.txt', '/%E0%A4%A', '/web/missing.js', '/web/']) {
    const res = await request(p, { 'accept-encoding': 'br' });
    assert.equal(res.status, 404, p);
  }
  assert.equal((await request('/', {})).status, 200);
  assert.equal((await request('/index.html', {}, 'POST')).status, 405);
});
