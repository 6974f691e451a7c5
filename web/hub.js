// Files of a Hugging Face repository at a revision, through @huggingface/hub (web/vendor/hub.mjs,
// loaded on first use): the file listing, each file's download info (size, ETag) and its download,
// kept in the Cache API under hub + repo + revision + file with the ETag it had. Every later load
// revalidates with If-None-Match; a 304 or an unchanged ETag reuses the stored bytes, a changed
// ETag downloads again. The access token goes only into the library's `Authorization: Bearer`
// header: it is in no URL, no cache key and no stored header.

import { MissingFile, readBody } from './fetch.js';

export const HUB_CACHE = 'lutlab-hub-v2';
const OLD_CACHES = ['lutlab-hub-v1']; // unvalidated copies from before the ETags
const ETAG_HEADER = 'x-lutlab-etag';
/// Range requests tried after a download is cut, before giving up.
const RESUME_ATTEMPTS = 3;

/// Browser fetch without the HTTP cache: the Cache API copy and its ETag are the only cache, so
/// the browser neither answers from a stale entry nor adds conditional headers of its own.
const uncachedFetch = (input, init = {}) => fetch(input, { ...init, cache: 'no-store' });

/// The same, asking for a 304 when the file's ETag is still `etag`.
function conditionalFetch(etag) {
  return (input, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set('If-None-Match', etag);
    return uncachedFetch(input, { ...init, headers });
  };
}

export class HubRepo {
  /// `hubUrl`: the hub's origin (a local mimic in tests); `revision`: a branch, tag or commit;
  /// `accessToken`: an `hf_…` token for gated or private repositories, or empty.
  constructor({ hubUrl, repo, revision = 'main', accessToken = '' }) {
    this.hubUrl = hubUrl.replace(/\/$/, '');
    this.repo = repo;
    this.revision = revision || 'main';
    // The library refuses other tokens with a TypeError; say it here, in the form's words.
    if (accessToken && !accessToken.startsWith('hf_')) throw new Error('an access token starts with "hf_" (huggingface.co/settings/tokens)');
    this.credentials = accessToken ? { accessToken } : {};
  }

  async #library() {
    this.lib ??= await import('./vendor/hub.mjs');
    return this.lib;
  }

  async #cache() {
    if (!('caches' in globalThis)) return null;
    if (this.cache === undefined) {
      for (const name of OLD_CACHES) await caches.delete(name);
      this.cache = await caches.open(HUB_CACHE);
    }
    return this.cache;
  }

  /// Where the file lives on the hub; also its key in the Cache API (no token in it).
  resolveUrl(name) {
    return `${this.hubUrl}/${this.repo}/resolve/${encodeURIComponent(this.revision)}/${name}`;
  }

  #params(extra) {
    return { repo: this.repo, revision: this.revision, hubUrl: this.hubUrl, ...this.credentials, ...extra };
  }

  /// The paths of the files at the revision's top level (where models keep theirs).
  async listFiles() {
    const { listFiles } = await this.#library();
    const names = new Set();
    try {
      for await (const entry of listFiles(this.#params({ fetch: uncachedFetch }))) {
        if (entry.type === 'file') names.add(entry.path);
      }
    } catch (e) {
      throw this.#explain(e, `${this.hubUrl}/api/models/${this.repo}/tree/${this.revision}`);
    }
    return names;
  }

  /// The file's bytes: the stored copy when the hub says it is unchanged, else downloaded (with
  /// progress, resumed by Range requests when the connection is cut). `onBytes(received, total)`.
  async file(name, onBytes = () => {}) {
    const { fileDownloadInfo } = await this.#library();
    const cache = await this.#cache();
    const key = this.resolveUrl(name);
    const stored = await cache?.match(key);
    const storedEtag = stored?.headers.get(ETAG_HEADER);
    const askInfo = (fetch) => fileDownloadInfo(this.#params({ path: name, fetch }));
    let info;
    try {
      try {
        info = await askInfo(storedEtag ? conditionalFetch(storedEtag) : uncachedFetch);
      } catch (e) {
        if (stored && e.statusCode === 304) return readStored(stored, onBytes);
        // A network-level failure may be a CORS preflight that refuses If-None-Match: ask again
        // as the library does on its own, and compare the ETags here.
        if (!storedEtag || !unreachable(e)) throw e;
        info = await askInfo(uncachedFetch);
      }
    } catch (e) {
      // Offline or the hub unreachable: the stored copy is the best there is.
      if (stored && unreachable(e)) return readStored(stored, onBytes);
      throw this.#explain(e, key);
    }
    if (!info) throw new MissingFile(key, 404);
    if (stored && info.etag === storedEtag) {
      // The hub ignored If-None-Match but sent the same ETag: its probe was a single byte.
      return readStored(stored, onBytes);
    }
    const bytes = await this.#download(name, info, onBytes);
    await cache?.put(key, new Response(bytes, {
      headers: { 'content-length': String(bytes.length), [ETAG_HEADER]: info.etag },
    }));
    return bytes;
  }

  /// Streams the file through the library's blob. When the stream breaks, the rest comes from
  /// `blob.slice(received)`, a `Range: bytes=received-` request: the hub (and any server the
  /// library accepts, since its download info reads the size from a Range probe's Content-Range)
  /// serves ranges. After RESUME_ATTEMPTS failed resumptions the bytes received are kept in the
  /// cache beside the file's key with its ETag, and the next load resumes from there if the ETag
  /// is the same. (A reload in the middle of a download loses them: the Cache API stores whole
  /// responses, and rewriting a growing prefix as it arrives would copy the file many times.)
  /// Xet transfer is off: the resolve URL streams the same bytes in one response, the path the
  /// tests can check against the mimic.
  async #download(name, info, onBytes) {
    const { downloadFile } = await this.#library();
    const blob = await downloadFile(this.#params({ path: name, downloadInfo: info, xet: false, fetch: uncachedFetch }));
    const cache = await this.#cache();
    const partialKey = `${this.resolveUrl(name)}?partial`;
    const bytes = new Uint8Array(info.size);
    let received = 0;
    const partial = await cache?.match(partialKey);
    if (partial?.headers.get(ETAG_HEADER) === info.etag) {
      const kept = new Uint8Array(await partial.arrayBuffer());
      if (kept.length < info.size) {
        bytes.set(kept);
        received = kept.length;
      }
    }
    let failures = 0;
    onBytes(received, info.size);
    while (received < info.size) {
      try {
        const reader = (received === 0 ? blob : blob.slice(received)).stream().getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (received + value.length > info.size) {
            throw Object.assign(new Error(`more bytes than the ${info.size} the hub announced`), { corrupt: true });
          }
          bytes.set(value, received);
          received += value.length;
          onBytes(received, info.size);
        }
        if (received < info.size) throw new Error(`the response ended at byte ${received}`);
      } catch (e) {
        const reason = e?.message ?? String(e);
        if (e?.corrupt || ++failures > RESUME_ATTEMPTS) {
          const keep = !e?.corrupt && received > 0 && cache;
          if (keep) await cache.put(partialKey, new Response(bytes.subarray(0, received), { headers: { [ETAG_HEADER]: info.etag } }));
          else await cache?.delete(partialKey);
          throw new Error(`${this.resolveUrl(name)}: download stopped at ${received} of ${info.size} bytes `
            + `after ${failures} attempts: ${reason}${keep ? '; the bytes received are kept and the next load resumes from there' : ''}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 250 * failures));
      }
    }
    await cache?.delete(partialKey);
    return bytes;
  }

  /// The library's errors in words that say what to do.
  #explain(e, url) {
    const status = e?.statusCode;
    if (status === undefined) {
      if (unreachable(e)) {
        const offline = typeof navigator !== 'undefined' && navigator.onLine === false;
        return new Error(`${url}: could not be reached${offline ? ' (the browser is offline)' : ''}: ${e.message}`);
      }
      return e;
    }
    const said = String(e.message ?? '').replace(/\. URL: .*$/, '');
    if (status === 401 || status === 403) {
      const what = this.credentials.accessToken
        ? 'the access token was refused or has no access to it'
        : 'it is gated or private: enter an access token (huggingface.co/settings/tokens) of an account with access';
      return Object.assign(new Error(`${this.repo}: access denied (HTTP ${status}); ${what}. The hub said: ${said}`), { status });
    }
    if (status === 404 && /revision|rev id/i.test(said)) {
      return Object.assign(new Error(`${this.repo} has no revision "${this.revision}" (HTTP 404): ${said}`), { status });
    }
    if (status === 404) return new MissingFile(url, 404);
    return Object.assign(new Error(`${url}: HTTP ${status}: ${said}`), { status });
  }
}

/// A request that got no answer (offline, DNS, refused connection, CORS): fetch's TypeError,
/// worded per browser.
function unreachable(e) {
  return e instanceof TypeError && /fetch|network|load failed/i.test(e.message);
}

function readStored(response, onBytes) {
  return readBody(response, Number(response.headers.get('content-length')) || null, onBytes);
}

/// Forgets every hub download kept in the Cache API.
export async function clearHubCache() {
  if (!('caches' in globalThis)) return;
  for (const name of [HUB_CACHE, ...OLD_CACHES]) await caches.delete(name);
}
