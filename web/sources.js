// The three places a model comes from: the shipped model served with the page, a Hugging Face
// repository (through the hub's resolve/main/ URLs, kept in the Cache API), or local files.
// Each returns the object `Lab.loadModel` takes: { config, safetensors: [{name, bytes}],
// tokenizerJson | vocab + merges } (all Uint8Array), plus a label.

import { fetchBytes, fetchFirst, readBody } from './fetch.js';
import { shardFiles } from './pkg/lutlab_wasm.js';

/// The small models served with the page (folders under models/), the first the default.
export const SHIPPED_MODELS = ['gpt2-tiny-wikitext', 'opt-tiny-wikitext', 'llama-tiny-wikitext'];
export const DEFAULT_HUB = 'https://huggingface.co';
const CACHE_NAME = 'lutlab-hub-v1';

/// Fetches a model laid out as a Hugging Face repository under `base` (ending in '/').
/// `onFile(name)` announces each file; `onBytes(received, total)` follows its download;
/// `onConfig(bytes)` may refuse the model (by throwing) before its weights are fetched.
async function fetchModel(base, { cache, onFile, onBytes, onConfig }) {
  const get = async (name) => {
    onFile(name);
    return (await fetchBytes(base + name, { cache, onBytes })).bytes;
  };
  const first = async (names) => {
    for (const name of names) {
      onFile(name);
      const found = await fetchFirst([base + name], { cache, onBytes });
      if (found) return { name, bytes: found.bytes };
    }
    return null;
  };
  const config = await get('config.json');
  onConfig?.(config);
  let safetensors;
  const single = await first(['model.safetensors']);
  if (single) {
    safetensors = [single];
  } else {
    const index = await first(['model.safetensors.index.json']);
    if (!index) throw new Error(`${base}: has neither model.safetensors nor model.safetensors.index.json`);
    safetensors = [];
    for (const name of shardFiles(index.bytes)) safetensors.push({ name, bytes: await get(name) });
  }
  const tokenizer = await first(['tokenizer.json']);
  if (tokenizer) return { config, safetensors, tokenizerJson: tokenizer.bytes };
  const vocab = await first(['vocab.json']);
  const merges = await first(['merges.txt']);
  if (!vocab || !merges) throw new Error(`${base}: has no tokenizer.json and no vocab.json + merges.txt`);
  // OPT's repositories: the BOS and special tokens are in tokenizer_config.json.
  const tokenizerConfig = await first(['tokenizer_config.json']);
  return { config, safetensors, vocab: vocab.bytes, merges: merges.bytes, tokenizerConfig: tokenizerConfig?.bytes };
}

/// One of SHIPPED_MODELS by name.
export async function shippedModel(callbacks, name = SHIPPED_MODELS[0]) {
  if (!SHIPPED_MODELS.includes(name)) throw new Error(`"${name}" is not a shipped model (${SHIPPED_MODELS.join(', ')})`);
  return { label: `shipped ${name}`, files: await fetchModel(`models/${name}/`, { ...callbacks, cache: null }) };
}

/// `repo` like "openai-community/gpt2"; `hub` is the hub's origin (a local mimic in tests).
export async function hubModel(repo, hub, callbacks) {
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(repo)) throw new Error(`"${repo}" is not a repository id like openai-community/gpt2`);
  const cache = 'caches' in globalThis ? await caches.open(CACHE_NAME) : null;
  const base = `${hub.replace(/\/$/, '')}/${repo}/resolve/main/`;
  return { label: repo, files: await fetchModel(base, { ...callbacks, cache }) };
}

/// Forgets every hub download kept in the Cache API.
export async function clearHubCache() {
  if ('caches' in globalThis) await caches.delete(CACHE_NAME);
}

/// Local files (a FileList or File[] from a picker or a drop), named as in a model repository.
export async function localModel(fileList, { onFile, onBytes, onConfig }) {
  const files = new Map([...fileList].map((f) => [f.name, f]));
  const read = async (name) => {
    const file = files.get(name);
    if (!file) return null;
    onFile(name);
    return readBody(new Response(file), file.size, onBytes);
  };
  const need = async (name, why) => {
    const bytes = await read(name);
    if (!bytes) throw new Error(`${name} is missing from the chosen files (${why})`);
    return bytes;
  };
  const config = await need('config.json', 'the model configuration');
  onConfig?.(config);
  let safetensors;
  if (files.has('model.safetensors')) {
    safetensors = [{ name: 'model.safetensors', bytes: await read('model.safetensors') }];
  } else {
    const index = await need('model.safetensors.index.json', 'or model.safetensors: the weights');
    safetensors = [];
    for (const name of shardFiles(index)) safetensors.push({ name, bytes: await need(name, 'a shard named by the index') });
  }
  const tokenizerJson = await read('tokenizer.json');
  const label = `local files (${[...files.keys()].join(', ')})`;
  if (tokenizerJson) return { label, files: { config, safetensors, tokenizerJson } };
  const vocab = await need('vocab.json', 'or tokenizer.json: the tokenizer');
  const merges = await need('merges.txt', 'with vocab.json: the tokenizer');
  const tokenizerConfig = await read('tokenizer_config.json');
  return { label, files: { config, safetensors, vocab, merges, tokenizerConfig } };
}
