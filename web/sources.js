// The three places a model comes from: the shipped model served with the page, a Hugging Face
// repository at a revision (through @huggingface/hub, kept in the Cache API: web/hub.js), or
// local files. Each returns the object `Lab.loadModel` takes: { config, safetensors: [{name,
// bytes}], tokenizerJson | vocab + merges } (all Uint8Array), plus a label.

import { fetchBytes, fetchIfExists, readBody } from './fetch.js';
import { HubRepo } from './hub.js';

export { clearHubCache } from './hub.js';

/// The small models served with the page (folders under models/), the first the default.
export const SHIPPED_MODELS = ['gpt2-tiny-wikitext', 'opt-tiny-wikitext', 'llama-tiny-wikitext'];
export const DEFAULT_HUB = 'https://huggingface.co';

/// Gathers a model laid out as a Hugging Face repository. `get(name)` fetches a file, `has(name)`
/// says whether the repository has it (it may fetch it: `get` is then served from memory).
/// `onConfig(bytes)` may refuse the model (by rejecting) before its weights are fetched;
/// `shardFiles(indexBytes)` names the shards of a sharded checkpoint (both ask the lab's worker).
async function gatherModel(where, { get, has }, { onConfig, shardFiles }) {
  const config = await get('config.json');
  await onConfig?.(config);
  let safetensors;
  if (await has('model.safetensors')) {
    safetensors = [{ name: 'model.safetensors', bytes: await get('model.safetensors') }];
  } else if (await has('model.safetensors.index.json')) {
    safetensors = [];
    for (const name of await shardFiles(await get('model.safetensors.index.json'))) safetensors.push({ name, bytes: await get(name) });
  } else {
    throw new Error(`${where}: has neither model.safetensors nor model.safetensors.index.json`);
  }
  if (await has('tokenizer.json')) return { config, safetensors, tokenizerJson: await get('tokenizer.json') };
  if (!(await has('vocab.json')) || !(await has('merges.txt'))) {
    throw new Error(`${where}: has no tokenizer.json and no vocab.json + merges.txt`);
  }
  // OPT's repositories: the BOS and special tokens are in tokenizer_config.json.
  const tokenizerConfig = (await has('tokenizer_config.json')) ? await get('tokenizer_config.json') : undefined;
  return { config, safetensors, vocab: await get('vocab.json'), merges: await get('merges.txt'), tokenizerConfig };
}

/// One of SHIPPED_MODELS by name. The page's own server has no listing: a file exists when
/// fetching it succeeds.
export async function shippedModel(callbacks, name = SHIPPED_MODELS[0]) {
  const { onFile, onBytes } = callbacks;
  if (!SHIPPED_MODELS.includes(name)) throw new Error(`"${name}" is not a shipped model (${SHIPPED_MODELS.join(', ')})`);
  const base = `models/${name}/`;
  const fetched = new Map();
  const tryGet = async (file) => {
    if (!fetched.has(file)) {
      onFile(file);
      fetched.set(file, await fetchIfExists(base + file, { onBytes }));
    }
    return fetched.get(file);
  };
  const get = async (file) => (await tryGet(file)) ?? (await fetchBytes(base + file, { onBytes }));
  const has = async (file) => (await tryGet(file)) !== null;
  return { label: `shipped ${name}`, files: await gatherModel(base, { get, has }, callbacks) };
}

/// `repo` like "openai-community/gpt2" at `revision` (branch, tag or commit; default main);
/// `hub` is the hub's origin (a local mimic in tests); `accessToken` (may be empty) is for gated
/// repositories and is only ever sent as an Authorization header. The label names the revision
/// unless it is main.
export async function hubModel(repo, hub, { revision = 'main', accessToken = '' } = {}, callbacks) {
  const { onFile, onBytes } = callbacks;
  if (!/^[\w.-]+(\/[\w.-]+)?$/.test(repo)) throw new Error(`"${repo}" is not a repository id like openai-community/gpt2`);
  revision = revision.trim() || 'main';
  if (/\s|\.\.|^\/|\/$/.test(revision)) throw new Error(`"${revision}" is not a branch, tag or commit name`);
  const source = new HubRepo({ hubUrl: hub, repo, revision, accessToken: accessToken.trim() });
  let listing;
  const get = (file) => {
    onFile(file);
    return source.file(file, onBytes);
  };
  // config.json first, so that a model the GPU cannot hold is refused before anything else.
  const has = async (file) => (listing ??= await source.listFiles()).has(file);
  const where = `${repo} at ${revision}`;
  return { label: revision === 'main' ? repo : `${repo}@${revision}`, files: await gatherModel(where, { get, has }, callbacks) };
}

/// Local files (a FileList or File[] from a picker or a drop), named as in a model repository.
export async function localModel(fileList, { onFile, onBytes, onConfig, shardFiles }) {
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
  await onConfig?.(config);
  let safetensors;
  if (files.has('model.safetensors')) {
    safetensors = [{ name: 'model.safetensors', bytes: await read('model.safetensors') }];
  } else {
    const index = await need('model.safetensors.index.json', 'or model.safetensors: the weights');
    safetensors = [];
    for (const name of await shardFiles(index)) safetensors.push({ name, bytes: await need(name, 'a shard named by the index') });
  }
  const tokenizerJson = await read('tokenizer.json');
  const label = `local files (${[...files.keys()].join(', ')})`;
  if (tokenizerJson) return { label, files: { config, safetensors, tokenizerJson } };
  const vocab = await need('vocab.json', 'or tokenizer.json: the tokenizer');
  const merges = await need('merges.txt', 'with vocab.json: the tokenizer');
  const tokenizerConfig = await read('tokenizer_config.json');
  return { label, files: { config, safetensors, vocab, merges, tokenizerConfig } };
}
