// The page: wires the controls to lutlab's wasm API (web/pkg, built by scripts/build-web.sh).
// All model work happens in Rust; this file only moves bytes, shows progress and reports errors.

import init, { Lab, lastPanic } from './pkg/lutlab_wasm.js';
import { ProgressBar } from './progress.js';
import { shippedModel, hubModel, localModel, clearHubCache, DEFAULT_HUB } from './sources.js';
import { initGenerate } from './generate.js';

const $ = (id) => document.getElementById(id);
const hub = new URLSearchParams(location.search).get('hub') ?? DEFAULT_HUB;
const loadBar = new ProgressBar($('load-progress'));
const evalBar = new ProgressBar($('eval-progress'));
const quantBar = new ProgressBar($('quant-progress'));
const fisherBar = new ProgressBar($('fisher-progress'));
const WIKITEXT_VALID = 'data/wikitext-2/valid.txt';
const WIKITEXT_TEST = 'data/wikitext-2/test.txt';

let lab = null;
let modelLoaded = false;
let busy = false;
let dead = false;
let wikitext = null;
let quantized = null; // the last quantization report
let packedOnly = false; // the model came from a packed file: no original weights to quantize
let fisherReady = false;
let meansReady = false;
let calibration = null;

const EXPLAIN = {
  kmeans: 'k-means picks 2^bits values per table where the weights are dense, so each weight is stored as a short code into its table. '
    + 'Outliers: that percent of weights, the farthest from the bulk of each layer, is kept exactly in a sparse matrix (SqueezeLLM keeps 0.45%). '
    + 'Scaling divides each output channel by ± its spread first, so one table fits every channel; centering subtracts each layer\'s average input (step 2) and moves it into the bias.',
  rtn: 'Uniform quantization rounds each weight to the nearest point of an evenly spaced grid (integer) or of a small float format (eXmY: X exponent, Y mantissa bits), '
    + 'scaled per tensor, channel or group of 128 input rows. Absmax scales cover the largest weight; min. error searches the clipping range; '
    + 'HQO optimises scale and zero point together. A zero point shifts the grid to fit weights that are not centred on 0.',
};

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function refreshControls() {
  for (const id of ['load-shipped', 'load-hub', 'local-files']) $(id).disabled = busy || dead || !lab;
  $('run-eval').disabled = busy || dead || !modelLoaded;
  $('run-quantize').disabled = busy || dead || !modelLoaded || packedOnly;
  $('run-fisher').disabled = busy || dead || !modelLoaded || packedOnly;
  $('fisher-file').disabled = busy || dead || !modelLoaded || packedOnly;
  $('packed-file').disabled = busy || dead || !modelLoaded;
  $('download-packed').disabled = busy || dead || !quantized?.packed || packedOnly;
  $('download-fisher').disabled = busy || dead || !fisherReady;
  $('q-fisher').disabled = !fisherReady;
  $('run-means').disabled = busy || dead || !modelLoaded || packedOnly;
  $('q-centering').disabled = !meansReady;
  document.querySelector('input[name=which][value=quantized]').disabled = !quantized;
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
    for (const bar of [loadBar, evalBar, quantBar, fisherBar]) bar.fail();
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
  const summary = lab.loadModel(label, files);
  modelLoaded = true;
  packedOnly = false;
  meansReady = false;
  $('q-centering').checked = false;
  $('means-result').textContent = '';
  quantized = null;
  fisherReady = false;
  $('q-fisher').checked = false;
  $('fisher-result').textContent = '';
  document.querySelector('input[name=which][value=original]').checked = true;
  $('quant-result').textContent = '';
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
  const useQuantized = document.querySelector('input[name=which]:checked').value === 'quantized';
  const report = await lab.perplexity(tokens, optionalNumber('max-length'), optionalNumber('stride'), useQuantized,
    (done, total) => evalBar.count(done, total, 'tokens'));
  const original = packedOnly ? [`${$('model-status').dataset.loaded} (packed)`, quantized.bits_per_weight] : [`${$('model-status').dataset.loaded} (f32)`, 32];
  const [label, bits] = useQuantized ? [quantized.label, quantized.bits_per_weight] : original;
  addHistory({ model: label, text: what, bits_per_weight: bits, perplexity: report.perplexity,
    window: report.max_length, stride: report.stride, scored_tokens: report.scored });
  evalBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  const result = $('eval-result');
  result.textContent = `Perplexity ${report.perplexity.toFixed(3)} on ${what}: ${report.scored.toLocaleString()} tokens scored `
    + `(window ${report.max_length}, stride ${report.stride}) in ${report.seconds.toFixed(1)} s, ${Math.round(report.tokens_per_s)} tokens/s.`;
  result.dataset.perplexity = String(report.perplexity);
  result.dataset.report = JSON.stringify(report);
}

/// Every evaluation of the session, for the comparison table and its CSV.
const runs = [];

function addHistory(run) {
  runs.push(run);
  const row = document.createElement('tr');
  for (const cell of [`${run.model} · ${run.text}`, run.bits_per_weight.toFixed(3), run.perplexity.toFixed(3)]) {
    const td = document.createElement('td');
    td.textContent = cell;
    row.append(td);
  }
  $('history').tBodies[0].append(row);
  $('history').hidden = false;
  $('download-csv').hidden = false;
}

/// The session's runs as CSV (RFC 4180 quoting), one row per evaluation.
function runsCsv() {
  const columns = ['model', 'text', 'bits_per_weight', 'perplexity', 'window', 'stride', 'scored_tokens'];
  const quote = (value) => {
    const text = String(value);
    return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return [columns.join(','), ...runs.map((run) => columns.map((c) => quote(run[c])).join(','))].join('\n') + '\n';
}

function quantizeRequest() {
  const method = $('q-method').value;
  const request = { method, bits: Number($('q-bits').value), granularity: $('q-granularity').value };
  if (method === 'kmeans') {
    // Output-channel groups for tables; uniform scales group input rows, as Brevitas does.
    if ($('q-outliers').value !== '') request.outlier_percent = Number($('q-outliers').value);
    request.scaling = $('q-scaling').checked;
    request.centering = $('q-centering').checked;
  } else {
    Object.assign(request, { format: $('q-format').value, scale_stats: $('q-scale-stats').value, asym: $('q-asym').checked });
  }
  return request;
}

async function quantize() {
  quantBar.start('quantizing');
  const useFisher = $('q-method').value === 'kmeans' && $('q-fisher').checked;
  const report = await lab.quantize(quantizeRequest(), useFisher, $('q-gpu').checked, (done, total) => quantBar.count(done, total, 'weights'));
  quantized = report;
  quantBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  const worst = report.layers.reduce((a, b) => (b.mse > a.mse ? b : a));
  $('quant-result').textContent = `${report.label}: ${report.layers.length} layers, ${report.bits_per_weight.toFixed(3)} bits per weight; `
    + `largest error in ${worst.name} (mean squared error ${worst.mse.toExponential(2)}). ${sizeLine(report.packed)}`;
  $('quant-result').dataset.report = JSON.stringify(report);
  document.querySelector('input[name=which][value=quantized]').checked = true;
}

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(2)} MB`;

/// "Packed: 0.42 MB, 3.8× smaller than f16 (1.57 MB); runs through the LUT kernels."
function sizeLine(packed) {
  if (!packed) return 'Not packable (scales over input rows): evaluated as dequantized weights.';
  return `Packed: ${megabytes(packed.packed_bytes)}, ${packed.compression.toFixed(1)}× smaller than f16 (${megabytes(packed.f16_bytes)}); `
    + 'evaluated straight from the packed codes by the LUT kernels.';
}

function downloadPacked() {
  const { name, bytes } = lab.packedFile();
  save(bytes, name);
  $('quant-result').dataset.downloaded = name;
}

async function openPacked(file) {
  await nextFrame();
  const summary = lab.openPacked(file.name, new Uint8Array(await file.arrayBuffer()));
  packedOnly = true;
  fisherReady = false;
  $('q-fisher').checked = false;
  quantized = { label: summary.packed.method, bits_per_weight: summary.packed.bits_per_weight, packed: summary.packed };
  $('model-status').textContent = `Opened packed file ${file.name}: ${summary.packed.method}, ${summary.n_layer} layers, width ${summary.n_embd}. ${sizeLine(summary.packed)}`;
  $('model-status').dataset.loaded = file.name;
  $('model-status').dataset.packed = JSON.stringify(summary.packed);
  $('quant-result').textContent = '';
  document.querySelector('input[name=which][value=original]').checked = true;
}

/// The calibration text's tokens (WikiText-2 valid, fetched once).
async function calibrationTokens() {
  if (!calibration) {
    fisherBar.start(WIKITEXT_VALID);
    const response = await fetch(WIKITEXT_VALID);
    if (!response.ok) throw new Error(`${WIKITEXT_VALID}: HTTP ${response.status}`);
    calibration = await response.text();
  }
  fisherBar.start('tokenizing');
  await nextFrame();
  return lab.tokenize(calibration);
}

async function computeMeans() {
  const tokens = await calibrationTokens();
  fisherBar.start('mean activations');
  const report = await lab.inputMeans(tokens, optionalNumber('f-samples'), optionalNumber('f-seqlen'),
    (done, total) => fisherBar.count(done, total, 'windows'));
  fisherBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  meansReady = true;
  $('q-centering').checked = true;
  $('means-result').textContent = `Mean inputs of ${report.layers} linear layers from ${report.nsamples} windows of ${report.seqlen} tokens (for centering).`;
}

async function computeFisher() {
  const tokens = await calibrationTokens();
  fisherBar.start('Fisher');
  const report = await lab.fisher(tokens, optionalNumber('f-samples'), optionalNumber('f-seqlen'), 0,
    (done, total) => fisherBar.count(done, total, 'tokens'));
  fisherBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  fisherReady = true;
  $('q-fisher').checked = true;
  $('fisher-result').textContent = `Fisher information from ${report.nsamples} windows of ${report.seqlen} tokens of WikiText-2 valid `
    + `(mean loss ${report.mean_loss?.toFixed(3)}), ${Math.round(report.tokens_per_s)} tokens/s.`;
  $('fisher-result').dataset.report = JSON.stringify(report);
}

function save(bytes, name) {
  const blob = new Blob([bytes], { type: 'application/octet-stream' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

function downloadFisher() {
  save(lab.fisherFile(), `${($('model-status').dataset.loaded ?? 'model').replace(/[^\w.-]+/g, '-')}.fisher.safetensors`);
}

async function loadFisherFile(file) {
  lab.loadFisher(file.name, new Uint8Array(await file.arrayBuffer()));
  fisherReady = true;
  $('q-fisher').checked = true;
  $('fisher-result').textContent = `Fisher information loaded from ${file.name}.`;
}

function showMethodOptions() {
  const method = $('q-method').value;
  for (const el of document.querySelectorAll('.kmeans-only')) el.hidden = method !== 'kmeans';
  for (const el of document.querySelectorAll('.rtn-only')) el.hidden = method !== 'rtn';
  $('q-explain').textContent = EXPLAIN[method];
}

function wireControls() {
  $('q-method').onchange = showMethodOptions;
  showMethodOptions();
  $('run-quantize').onclick = () => action(quantize);
  $('run-fisher').onclick = () => action(computeFisher);
  $('download-fisher').onclick = () => downloadFisher();
  $('run-means').onclick = () => action(computeMeans);
  $('download-csv').onclick = () => save(new TextEncoder().encode(runsCsv()), 'lutlab-runs.csv');
  $('download-packed').onclick = () => action(async () => downloadPacked());
  $('packed-file').onchange = (event) => event.target.files[0] && action(() => openPacked(event.target.files[0]));
  $('fisher-file').onchange = (event) => event.target.files[0] && action(() => loadFisherFile(event.target.files[0]));
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
  initGenerate({ lab: () => lab, action, ready: () => modelLoaded && !busy && !dead });
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
