// Serves the lutlab page from the repository root: index.html, web/ (with the wasm build in
// web/pkg/), the shipped model and the WikiText-2 files. No dependencies; correct MIME types
// (browsers refuse to stream-compile `.wasm` served as anything but application/wasm).
// Text and wasm go out brotli- or gzip-encoded when the browser accepts it (build-web.sh's `.br`
// and `.gz` siblings when fresh, else compressed here once per file version); every response has a
// strong ETag, so a second visit revalidates (304, no body) instead of downloading again. Files
// keep their names (wasm-bindgen's glue and the model folders are fetched by fixed URLs), hence
// `cache-control: no-cache` (store, but ask first) rather than content-hashed names.
//
//   node web/serve.mjs [--port 8080] [--host 127.0.0.1]

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { COMPRESSIBLE, SUFFIX, compress, negotiate } from './compression.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SERVED = ['index.html', 'web/', 'models/', 'data/'];
const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.bpe': 'text/plain; charset=utf-8',
};

/// Maps a URL path to a file under `root`, or null when it is not one of the served paths.
function resolve(urlPath, root) {
  let relative;
  try {
    relative = decodeURIComponent(urlPath).replace(/^\/+/, '') || 'index.html';
  } catch {
    return null; // a malformed %-escape names no file
  }
  const file = path.resolve(root, relative);
  if (!file.startsWith(root + path.sep)) return null;
  const inside = path.relative(root, file).split(path.sep).join('/');
  return SERVED.some((p) => inside === p || (p.endsWith('/') && inside.startsWith(p))) ? file : null;
}

/// Per file path: the version (mtime, size) the entries below were computed from, the file's
/// content hash and its on-the-fly encodings (promises, so concurrent first requests share one).
const memo = new Map();

function memoFor(file, stat) {
  const version = `${stat.mtimeMs}:${stat.size}`;
  let entry = memo.get(file);
  if (!entry || entry.version !== version) {
    entry = { version, hash: null, encoded: new Map() };
    memo.set(file, entry);
  }
  return entry;
}

const tagOf = (bytesHash) => `"${bytesHash}"`;
const hashBytes = (bytes) => crypto.createHash('sha256').update(bytes).digest('base64url').slice(0, 27);

/// The strong ETag of a file's bytes (a content hash), read once per version.
function fileTag(file, stat) {
  const entry = memoFor(file, stat);
  entry.hash ??= new Promise((resolve, reject) => {
    const hash = crypto.createHash('sha256');
    fs.createReadStream(file).on('error', reject).on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(tagOf(hash.digest('base64url').slice(0, 27))));
  });
  return entry.hash;
}

/// What goes out for `file` in `encoding` (null: as it is): its ETag, length, and either the path
/// to stream from or the bytes. Each encoding has its own tag (the hash of the bytes sent).
async function representation(file, stat, encoding) {
  if (!encoding) return { etag: await fileTag(file, stat), size: stat.size, path: file };
  const sibling = file + SUFFIX[encoding];
  const siblingStat = await fs.promises.stat(sibling).catch(() => null);
  // A sibling older than its file is left from an earlier build: compress the new file instead.
  if (siblingStat?.isFile() && siblingStat.mtimeMs >= stat.mtimeMs) {
    return { etag: await fileTag(sibling, siblingStat), size: siblingStat.size, path: sibling };
  }
  const entry = memoFor(file, stat);
  if (!entry.encoded.has(encoding)) {
    const pending = fs.promises.readFile(file).then((bytes) => compress(bytes, encoding))
      .then((bytes) => ({ etag: tagOf(hashBytes(bytes)), size: bytes.length, bytes }));
    pending.catch(() => entry.encoded.delete(encoding)); // a failure is not memoized
    entry.encoded.set(encoding, pending);
  }
  return entry.encoded.get(encoding);
}

/// Whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 asks for it).
function matchesTag(ifNoneMatch, etag) {
  if (!ifNoneMatch) return false;
  const strip = (t) => t.trim().replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => t.trim() === '*' || strip(t) === etag);
}

/// A single `bytes=` range of a `size`-byte file: {start, end} (inclusive), 'unsatisfiable', or
/// null when the header is not one range we serve (then the whole file goes out, as RFC 9110 allows).
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start, end;
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2])); // the last N bytes
    end = size - 1;
    if (Number(m[2]) === 0) return 'unsatisfiable';
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (end < start && m[2] !== '') return null;
  }
  return start >= size ? 'unsatisfiable' : { start, end };
}

async function respond(req, res, root) {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end(`${req.method} is not served\n`);
    return;
  }
  const url = new URL(req.url, 'http://localhost');
  const file = resolve(url.pathname, root);
  const stat = file && await fs.promises.stat(file).catch(() => null);
  if (!stat?.isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${url.pathname}\n`);
    return;
  }
  const compressible = COMPRESSIBLE.has(path.extname(file));
  // A Range asks for bytes of the file itself, so ranged requests get it unencoded.
  const encoding = compressible && !req.headers.range ? negotiate(req.headers['accept-encoding']) : null;
  const body = await representation(file, stat, encoding);
  const headers = {
    'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-cache',
    etag: body.etag,
  };
  if (compressible) headers.vary = 'Accept-Encoding';
  if (encoding) headers['content-encoding'] = encoding;
  else headers['accept-ranges'] = 'bytes';

  if (matchesTag(req.headers['if-none-match'], body.etag)) {
    res.writeHead(304, headers).end();
    return;
  }
  let range = null;
  const ifRange = req.headers['if-range'];
  if (!encoding && req.headers.range && (!ifRange || ifRange === body.etag)) {
    range = parseRange(req.headers.range, body.size);
  }
  if (range === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'content-range': `bytes */${body.size}` }).end();
    return;
  }
  if (range) {
    headers['content-range'] = `bytes ${range.start}-${range.end}/${body.size}`;
    headers['content-length'] = range.end - range.start + 1;
  } else {
    headers['content-length'] = body.size;
  }
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === 'HEAD') res.end();
  else if (body.bytes) res.end(body.bytes);
  else fs.createReadStream(body.path, range ?? {}).pipe(res);
}

/// The page's server; `root` (tests) serves another tree laid out like the repository.
export function createServer({ root = ROOT } = {}) {
  return http.createServer((req, res) => {
    respond(req, res, path.resolve(root)).catch((e) => {
      console.error(`serve: ${req.method} ${req.url}: ${e.stack ?? e}`);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`could not serve ${req.url}: ${e.message}\n`);
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const host = arg('host', '127.0.0.1');
  const port = Number(arg('port', process.env.PORT ?? 8080));
  if (!fs.existsSync(path.join(ROOT, 'web/pkg/lutlab_wasm_bg.wasm'))) {
    console.error('web/pkg/ is missing: build it with scripts/build-web.sh (scripts/play.sh does)');
    process.exit(1);
  }
  createServer().listen(port, host, () => console.log(`lutlab playground: http://${host === '0.0.0.0' ? 'localhost' : host}:${port}/`));
}
