// Serves the lutlab page from the repository root: index.html, web/ (with the wasm build in
// web/pkg/), the shipped model and the WikiText-2 files. No dependencies; correct MIME types
// (browsers refuse to stream-compile `.wasm` served as anything but application/wasm).
//
//   node web/serve.mjs [--port 8080] [--host 127.0.0.1]

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
};

/// Maps a URL path to a file under ROOT, or null when it is not one of the served paths.
function resolve(urlPath) {
  const relative = decodeURIComponent(urlPath).replace(/^\/+/, '') || 'index.html';
  const file = path.resolve(ROOT, relative);
  if (!file.startsWith(ROOT + path.sep)) return null;
  const inside = path.relative(ROOT, file).split(path.sep).join('/');
  return SERVED.some((p) => inside === p || (p.endsWith('/') && inside.startsWith(p))) ? file : null;
}

export function createServer() {
  return http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const file = resolve(url.pathname);
    fs.stat(file ?? '', (err, stat) => {
      if (!file || err || !stat.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${url.pathname}\n`);
        return;
      }
      res.writeHead(200, {
        'content-type': MIME[path.extname(file)] ?? 'application/octet-stream',
        'content-length': stat.size,
        'cache-control': 'no-cache',
      });
      fs.createReadStream(file).pipe(res);
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
