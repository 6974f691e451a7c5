// Downloads with progress (bytes and speed): the shipped models' files, and the reading of any
// response body (the hub's cached copies in web/hub.js, local files) with the same progress.

export class MissingFile extends Error {
  constructor(url, status) {
    super(status === 401 || status === 403
      ? `${url}: access denied (HTTP ${status}); the repository may be gated or private`
      : `${url}: not found (HTTP ${status})`);
    this.status = status;
  }
}

/// Fetches `url` into a Uint8Array. `onBytes(received, total|null)` is called as chunks arrive.
export async function fetchBytes(url, { onBytes = () => {}, signal } = {}) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
    throw new Error(`${url}: could not be reached${offline ? ' (the browser is offline)' : ''}: ${e.message}`);
  }
  if (!response.ok) throw new MissingFile(url, response.status);
  // Under a Content-Encoding (web/serve.mjs compresses text), Content-Length counts the encoded
  // bytes, not the decoded ones read below: the total is then unknown.
  const encoded = response.headers.get('content-encoding');
  const total = encoded && encoded !== 'identity' ? null : Number(response.headers.get('content-length')) || null;
  return readBody(response, total, onBytes);
}

/// Reads a response body into one Uint8Array, reporting `onBytes(received, total)` per chunk.
export async function readBody(response, total, onBytes) {
  const chunks = [];
  let received = 0;
  const reader = response.body.getReader();
  onBytes(0, total);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onBytes(received, total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

/// `url`'s bytes, or null when the server says it has no such file (404).
export async function fetchIfExists(url, options) {
  try {
    return await fetchBytes(url, options);
  } catch (e) {
    if (e instanceof MissingFile && e.status === 404) return null;
    throw e;
  }
}
