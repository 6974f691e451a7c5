// Content encodings for web/serve.mjs (Node only, not loaded by the page): which files are worth
// compressing, which encoding a request's Accept-Encoding allows, and brotli/gzip through
// node:zlib. Run as a script it writes `.br` and `.gz` beside each file given (build-web.sh does,
// for the wasm and its glue), so the server need not compress the 5 MB module on a first request.
//
//   node web/compression.mjs FILE...

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

/// Text and code compress 3-10x; images and the weights (dense floats) barely at all, so they go out
/// as they are.
export const COMPRESSIBLE = new Set(['.html', '.js', '.mjs', '.css', '.json', '.txt', '.md', '.svg', '.wasm', '.bpe']);

/// Our preference when the browser accepts several: brotli 11 is 35 % smaller than gzip 9 on the wasm
/// (2.40 vs 3.70 MB).
const PREFERRED = ['br', 'gzip'];
export const SUFFIX = { br: '.br', gzip: '.gz' };

/// The best encoding of PREFERRED that `acceptEncoding` allows (q > 0, by name or `*`), or null
/// for the file as it is (no header, `identity`, or only q=0 entries).
export function negotiate(acceptEncoding) {
  const quality = new Map();
  for (const part of (acceptEncoding ?? '').split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    if (!name) continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const value = q ? Number(q.slice(2)) : 1;
    quality.set(name, Number.isFinite(value) ? value : 0);
  }
  let best = null;
  for (const encoding of PREFERRED) {
    const q = quality.get(encoding) ?? quality.get('*') ?? 0;
    if (q > 0 && (best === null || q > best.q)) best = { encoding, q };
  }
  return best?.encoding ?? null;
}

const brotli = promisify(zlib.brotliCompress);
const gzip = promisify(zlib.gzip);

/// `bytes` in `encoding`. `best`: the slowest, smallest settings (brotli 11, gzip 9), for files
/// compressed once at build time; otherwise brotli 9 (a few seconds on the wasm, memoized by the
/// server), gzip 9.
export function compress(bytes, encoding, { best = false } = {}) {
  if (encoding === 'br') {
    return brotli(bytes, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: best ? zlib.constants.BROTLI_MAX_QUALITY : 9,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
      },
    });
  }
  if (encoding === 'gzip') return gzip(bytes, { level: 9 });
  throw new Error(`unknown content encoding "${encoding}" (known: ${PREFERRED.join(', ')})`);
}

/// Writes FILE.br and FILE.gz beside each file (replacing older ones); returns their sizes.
export async function precompress(files) {
  const sizes = [];
  for (const file of files) {
    const bytes = await fs.promises.readFile(file);
    const entry = { file, identity: bytes.length };
    for (const encoding of PREFERRED) {
      const encoded = await compress(bytes, encoding, { best: true });
      await fs.promises.writeFile(file + SUFFIX[encoding], encoded);
      entry[encoding] = encoded.length;
    }
    sizes.push(entry);
  }
  return sizes;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error('usage: node web/compression.mjs FILE...');
    process.exit(2);
  }
  const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
  for (const { file, identity, br, gzip: gz } of await precompress(files)) {
    console.log(`precompressed ${path.relative(process.cwd(), file)}: ${mb(identity)} -> br ${mb(br)}, gzip ${mb(gz)}`);
  }
}
