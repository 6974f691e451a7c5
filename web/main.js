// The page: wires the controls to lutlab's wasm API (web/pkg, built by scripts/build-web.sh).
// All model work happens in Rust; this file only moves bytes, shows progress and reports errors.

import init, { Lab, lastPanic } from './pkg/lutlab_wasm.js';
import { ProgressBar } from './progress.js';
import { shippedModel, hubModel, localModel, clearHubCache, DEFAULT_HUB } from './sources.js';

const $ = (id) => document.getElementById(id);
const hub = new URLSearchParams(location.search).get('hub') ?? DEFAULT_HUB;
const loadBar = new ProgressBar($('load-progress'));
const evalBar = new ProgressBar($('eval-progress'));
const WIKITEXT_TEST = 'data/wikitext-2/test.txt';

let lab = null;
let modelLoaded = false;
let busy = false;
let dead = false;
let wikitext = null;

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function refreshControls() {
  for (const id of ['load-shipped', 'load-hub', 'local-files']) $(id).disabled = busy || dead || !lab;
  $('run-eval').disabled = busy || dead || !modelLoaded;
  $('cancel').disabled = !busy || dead;
}

/// Runs one user action: one at a time, errors shown on the page. A trap in the wasm module
/// (a Rust panic, typically a lost GPU or an allocation it refused) ends the session with a
/// message, since the module's state is gone.
async function action(work) {
  if (busy || dead) return;
  busy = true;
  showError('');
  refreshControls();
  try {
    await work();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      dead = true;
      showError(`lutlab stopped: ${lastPanic() ?? e.message}\nThe GPU may have run out of memory or been lost. Reload the page to start again.`);
    } else {
      showError(e?.message ?? String(e));
    }
    for (const bar of [loadBar, evalBar]) bar.fail();
  } finally {
    busy = false;
    refreshControls();
  }
}

const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

async function loadFrom(source) {
  const { label, files } = await source({
    onFile: (name) => loadBar.start(name),
    onBytes: (received, total) => loadBar.bytes(received, total),
  });
  loadBar.finish('checking the weights and uploading them to the GPU…');
  await nextFrame(); // let the page paint before the synchronous parse
  const summary = lab.loadModel(files);
  modelLoaded = true;
  const params = (summary.parameters / 1e6).toFixed(1);
  $('model-status').textContent = `Loaded ${label}: ${summary.n_layer} layers, ${summary.n_head} heads, width ${summary.n_embd}, context ${summary.n_positions}, ${params}M parameters.`;
  $('model-status').dataset.loaded = label;
  loadBar.complete('model ready');
}

async function evaluationText() {
  if (document.querySelector('input[name=text]:checked').value === 'custom') return { what: 'your text', text: $('custom-text').value };
  if (!wikitext) {
    evalBar.start(WIKITEXT_TEST);
    const response = await fetch(WIKITEXT_TEST);
    if (!response.ok) throw new Error(`${WIKITEXT_TEST}: HTTP ${response.status}`);
    wikitext = await response.text();
  }
  return { what: 'WikiText-2 test', text: wikitext };
}

const optionalNumber = (id) => ($(id).value === '' ? undefined : Number($(id).value));

async function evaluate() {
  const { what, text } = await evaluationText();
  evalBar.start('tokenizing');
  await nextFrame();
  const tokens = lab.tokenize(text);
  evalBar.start('perplexity');
  const report = await lab.perplexity(tokens, optionalNumber('max-length'), optionalNumber('stride'),
    (done, total) => evalBar.count(done, total, 'tokens'));
  evalBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  const result = $('eval-result');
  result.textContent = `Perplexity ${report.perplexity.toFixed(3)} on ${what}: ${report.scored.toLocaleString()} tokens scored `
    + `(window ${report.max_length}, stride ${report.stride}) in ${report.seconds.toFixed(1)} s, ${Math.round(report.tokens_per_s)} tokens/s.`;
  result.dataset.perplexity = String(report.perplexity);
  result.dataset.report = JSON.stringify(report);
}

function wireControls() {
  $('load-shipped').onclick = () => action(() => loadFrom(shippedModel));
  $('hub-form').onsubmit = (event) => {
    event.preventDefault();
    const repo = $('hub-repo').value.trim();
    action(() => loadFrom((callbacks) => hubModel(repo, hub, callbacks)));
  };
  $('clear-cache').onclick = (event) => {
    event.preventDefault();
    clearHubCache().then(() => ($('model-status').textContent = 'Hub downloads forgotten.'));
  };
  $('local-files').onchange = (event) => action(() => loadFrom((callbacks) => localModel(event.target.files, callbacks)));
  const zone = $('drop-zone');
  zone.ondragover = (event) => { event.preventDefault(); zone.classList.add('dragging'); };
  zone.ondragleave = () => zone.classList.remove('dragging');
  zone.ondrop = (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    action(() => loadFrom((callbacks) => localModel(event.dataTransfer.files, callbacks)));
  };
  for (const radio of document.querySelectorAll('input[name=text]')) {
    radio.onchange = () => ($('custom-text').hidden = radio.value !== 'custom' || !radio.checked);
  }
  $('custom-text').ondrop = async (event) => {
    const file = event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    $('custom-text').value = await file.text();
  };
  $('run-eval').onclick = () => action(evaluate);
  $('cancel').onclick = () => lab?.cancel();
}

async function start() {
  wireControls();
  refreshControls();
  if (!navigator.gpu) {
    $('gpu-status').textContent = 'This browser has no WebGPU.';
    showError('lutlab needs WebGPU: use a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled (and a page served over https or localhost).');
    return;
  }
  await init();
  try {
    lab = await Lab.open();
  } catch (e) {
    $('gpu-status').textContent = 'No usable GPU.';
    showError(`WebGPU is present but no GPU could be opened: ${e.message}`);
    return;
  }
  $('gpu-status').textContent = `GPU: ${lab.device} · largest binding ${(lab.maxBindingBytes / 2 ** 20).toFixed(0)} MiB`;
  refreshControls();
  await action(() => loadFrom(shippedModel));
}

start();
