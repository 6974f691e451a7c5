// The page: wires the controls of the five steps (Model → Calibrate → Quantize → Evaluate →
// Export) to lutlab's wasm API (web/pkg, built by scripts/build-web.sh), which runs in a Web Worker
// behind lab-client.js: every lab call returns a Promise. All model work and the
// numbers behind the pictures happen in Rust; this file moves bytes, shows progress, keeps the
// session's runs and reports errors. Pictures: plots.js; the bit slider: slider.js.

import { LabClient } from './lab-client.js';
import { ProgressBar } from './progress.js';
import { shippedModel, hubModel, localModel, clearHubCache, DEFAULT_HUB } from './sources.js';
import { initGenerate } from './generate.js';
import { clearPlot, drawActivations, drawError, drawPerplexity, drawProxyLoss, drawSensitivity, drawWidths } from './plots.js';
import { LayerView } from './slider.js';
import { SpeedBook, estimateText } from './estimate.js';

const $ = (id) => document.getElementById(id);
const hub = new URLSearchParams(location.search).get('hub') ?? DEFAULT_HUB;
/// `?model=NAME` picks the shipped model loaded at start (and in the menu).
const shippedChoice = () => $('shipped-model').value;
const cancel = () => lab?.cancel();
const loadBar = new ProgressBar($('load-progress'));
const evalBar = new ProgressBar($('eval-progress'), cancel);
const quantBar = new ProgressBar($('quant-progress'), cancel);
const fisherBar = new ProgressBar($('fisher-progress'), cancel);
const WIKITEXT_VALID = 'data/wikitext-2/valid.txt';
const WIKITEXT_TEST = 'data/wikitext-2/test.txt';

let lab = null; // a LabClient: the wasm Lab in its worker
/// What a new worker needs to carry on after the GPU was lost: the model's files (as Blobs, which
/// the browser may keep on disk), an opened packed file and the Fisher information.
const kept = { model: null, packed: null, fisher: null };
let modelLoaded = false;
let busy = false;
let dead = false;
/// The WikiText-2 files by path (fetched once), and their tokens under the loaded model's
/// tokenizer (counted once per model).
const texts = new Map();
const tokensOf = new Map();
/// This GPU's speed with this model, for the estimates shown before long steps.
const speed = new SpeedBook();
let modelContext = 0;
let quantized = null; // the last quantization: its report and the request that made it
let packedOnly = false; // the model came from a packed file: no original weights to quantize
let fisherReady = false;
let meansReady = false;
let hessiansReady = false;
/// This session's quantizations with a proxy loss per layer (since the Hessians were computed).
let proxyRuns = [];
const layerView = new LayerView({ lab: () => lab, onFatal: (e) => fatal(e), isBusy: () => busy || dead });

const EXPLAIN = {
  kmeans: 'k-means picks 2^bits values per table where the weights are dense, so each weight is stored as a short code into its table.',
  rtn: 'Uniform quantization rounds each weight to the nearest point of an evenly spaced grid (integer) or of a small float format, '
    + 'scaled per tensor, channel or group of 128 input rows.',
  gptq: 'GPTQ rounds the inputs one at a time onto the same uniform grid and spreads each rounding error over the inputs not yet '
    + 'rounded, through the layer\'s Hessian, so the layer\'s output moves as little as possible (needs the Hessians of step 2).',
  ldlq: 'LDLQ (QuIP) feeds each rounding error forward through the Hessian\'s LDL factors: the same result as GPTQ, '
    + 'written another way (needs the Hessians of step 2).',
  'ldlq-rg': 'LDLQ-RG (QuIP) is the same feedback written with the Hessian\'s LDL factors, inputs ordered by their energy, then one '
    + 'greedy pass over the weights (needs the Hessians of step 2).',
  greedy: 'Greedy passes start from round-to-nearest and move one weight at a time to the grid value that lowers the layer\'s '
    + 'output error most, sweeping the inputs in turn (needs the Hessians of step 2).',
  'ldlbal-admm': 'LDLbal-ADMM (QuIP) finds a feedback matrix whose columns are bounded (by ADMM), rounds with it, then runs '
    + 'greedy passes: a hedge against the worst case of plain LDLQ (needs the Hessians of step 2).',
  'gptq-kmeans': 'k-means fits each table to the weights (weighted by each input\'s energy H_kk, or by Fisher), then GPTQ rounds '
    + 'onto those tables with error feedback: the best of both (needs the Hessians of step 2).',
};

/// Methods that round with the Hessians (`gptq-kmeans` is GPTQ onto k-means tables).
const HESSIAN_METHODS = new Set(['gptq', 'ldlq', 'ldlq-rg', 'greedy', 'ldlbal-admm', 'gptq-kmeans']);
// The methods with a WebGPU path (GpuRounder takes GPTQ/LDLQ feedback without greedy passes).
const GPU_METHODS = new Set(['kmeans', 'gptq', 'ldlq', 'gptq-kmeans']);

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
  $('error-close').hidden = !message;
}

/// The workflow's step badges: `state` is one of todo, running, done, failed (a CSS class).
function setStep(step, state, text) {
  const badge = $(`state-${step}`);
  badge.textContent = text;
  badge.dataset.state = state;
  badge.title = text; // the whole text where a narrow badge cuts it short
}

function refreshControls() {
  for (const id of ['shipped-model', 'load-shipped', 'load-hub', 'local-files']) $(id).disabled = busy || dead || !lab;
  $('run-eval').disabled = busy || dead || !modelLoaded;
  $('run-quantize').disabled = busy || dead || !modelLoaded || packedOnly;
  $('run-fisher').disabled = busy || dead || !modelLoaded || packedOnly;
  $('fisher-file').disabled = busy || dead || !modelLoaded || packedOnly;
  $('packed-file').disabled = busy || dead || !modelLoaded;
  $('download-packed').disabled = busy || dead || !quantized?.report.packed || packedOnly;
  $('download-fisher').disabled = busy || dead || !fisherReady;
  $('download-csv').disabled = runs.length === 0;
  $('q-fisher').disabled = !fisherReady;
  $('run-means').disabled = busy || dead || !modelLoaded || packedOnly;
  $('run-hessians').disabled = busy || dead || !modelLoaded || packedOnly;
  $('q-centering').disabled = !meansReady;
  document.querySelector('input[name=which][value=quantized]').disabled = !quantized;
  layerView.refresh({ modelLoaded: modelLoaded && !packedOnly, quantized: Boolean(quantized) && !packedOnly });
}

/// The GPU was lost or the wasm module trapped (a Rust panic, e.g. an allocation the GPU refused):
/// that lab's state is gone. Everything the page holds stays (the runs, their table and CSV, the
/// pictures, the model's files); the user reopens the GPU to go on.
function fatal(e) {
  if (dead && !$('gpu-lost').hidden) return; // the loss is already told (its own words come first)
  dead = true;
  const message = e?.message ?? String(e);
  const what = e?.kind === 'gpu-lost' ? message.replace(/^t/, 'T') : `The GPU work stopped: ${message}`;
  $('gpu-lost-text').textContent = `${what.replace(/\.?$/, '.')} Your runs, pictures and files are kept; `
    + 'reopening the GPU reloads the model (and Fisher information); quantizations, means and Hessians are computed again.';
  $('gpu-lost').hidden = false;
  $('gpu-status').textContent = 'GPU lost.';
  refreshControls();
}

/// Opens a new lab (a new worker and GPU device) and reloads what the page kept into it.
async function reopenGpu() {
  $('reopen-gpu').disabled = true;
  try {
    lab?.terminate();
    lab = null;
    lab = await LabClient.open(fatal);
    await showGpu();
    dead = false;
    $('gpu-lost').hidden = true;
    quantized = null;
    meansReady = hessiansReady = false;
    $('q-centering').checked = false;
    layerView.setHessians(false);
    proxyRuns = [];
    if (kept.model) {
      await action(async () => {
        loadBar.start('reloading the model into the new GPU');
        await nextFrame();
        await installModel(kept.model.label, kept.model.files);
        if (kept.packed) await openPacked(kept.packed);
        if (kept.fisher && !packedOnly) await loadFisherFile(kept.fisher, 'kept from before the GPU was lost');
        return `reloaded ${kept.model.label}`;
      }, 'model');
    }
  } catch (e) {
    fatal(e);
  } finally {
    $('reopen-gpu').disabled = false;
    refreshControls();
  }
}

/// Runs one user action of workflow step `step`: one at a time, errors shown on the page, the
/// step's badge following along. Results of other steps are untouched when it fails.
async function action(work, step) {
  if (busy || dead) return;
  busy = true;
  await layerView.idle(); // a slider move in flight finishes first
  showError('');
  refreshControls();
  const before = step && $(`state-${step}`).dataset.state;
  if (step) setStep(step, 'running', 'running…');
  try {
    const summary = await work();
    if (step) setStep(step, 'done', summary ?? 'done');
  } catch (e) {
    const cancelled = e?.kind === 'cancelled';
    if (e?.fatal) {
      fatal(e);
    } else if (!cancelled) {
      showError(e?.message ?? String(e));
    }
    const loaded = $('model-status').dataset.loaded;
    if (step === 'model' && before === 'done' && loaded) {
      // A rejected file changes nothing: the badge and the bar keep showing the model in use.
      setStep('model', 'done', `kept ${loaded}`);
      loadBar.complete(`${cancelled ? 'stopped' : 'not loaded'}; ${loaded} stays loaded`);
    } else if (step) {
      // A cancel is the user's choice, not a failure: a neutral "stopped", earlier results kept.
      setStep(step, cancelled ? 'stopped' : 'failed', `${cancelled ? 'stopped' : 'failed'}${before === 'done' ? ' · earlier result kept' : ''}`);
    }
    for (const bar of [loadBar, evalBar, quantBar, fisherBar]) bar.fail(cancelled);
  } finally {
    busy = false;
    refreshControls();
  }
}

const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
const megabytes = (bytes) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;

async function loadFrom(source) {
  const { label, files } = await source({
    onFile: (name) => loadBar.start(name),
    onBytes: (received, total) => loadBar.bytes(received, total),
    onConfig: (config) => lab.checkConfigFits(config, lab.maxBindingBytes),
    shardFiles: (index) => lab.shardFiles(index),
  });
  loadBar.finish('checking the weights and uploading them to the GPU…');
  const blobs = asBlobs(files);
  const summary = await installModel(label, blobs);
  kept.model = { label, files: blobs };
  kept.packed = null;
  kept.fisher = null;
  return summary;
}

/// A model's files with every byte array as a Blob: the page keeps them for a new GPU after a lost
/// one without holding a second copy in its own memory.
function asBlobs(files) {
  const blob = (bytes) => (bytes instanceof Uint8Array ? new Blob([bytes]) : bytes);
  return Object.fromEntries(Object.entries(files).map(([key, value]) => [
    key, Array.isArray(value) ? value.map((shard) => ({ ...shard, bytes: blob(shard.bytes) })) : blob(value),
  ]));
}

/// Loads model files into the lab (a rejected model leaves the one in use) and resets the steps
/// after it: their results belonged to the previous model.
async function installModel(label, files) {
  const summary = await lab.loadModel(label, files);
  modelLoaded = true;
  packedOnly = false;
  meansReady = false;
  $('q-centering').checked = false;
  $('means-result').textContent = '';
  clearPlot($('plot-activations'));
  hessiansReady = false;
  layerView.setHessians(false);
  $('hessians-result').textContent = '';
  proxyRuns = [];
  clearPlot($('plot-proxy'));
  quantized = null;
  fisherReady = false;
  $('q-fisher').checked = false;
  $('fisher-result').textContent = '';
  document.querySelector('input[name=which][value=original]').checked = true;
  $('quant-result').textContent = '';
  for (const id of ['plot-sensitivity', 'plot-error', 'plot-proxy']) clearPlot($(id));
  setStep('calibrate', 'todo', 'optional');
  setStep('quantize', 'todo', 'to do');
  const params = (summary.parameters / 1e6).toFixed(1);
  const heads = summary.n_kv_head < summary.n_head ? `${summary.n_head} heads (${summary.n_kv_head} key/value)` : `${summary.n_head} heads`;
  $('model-status').textContent = `Loaded ${label} (${summary.model_type}): ${summary.n_layer} layers, ${heads}, width ${summary.n_embd}, `
    + `context ${summary.n_positions}, ${params}M parameters: ${megabytes(summary.parameters * 4)} as f32, ${megabytes(summary.parameters * 2)} as f16.`;
  modelContext = summary.n_positions;
  tokensOf.clear();
  $('model-status').dataset.loaded = label;
  loadBar.complete('model ready');
  layerView.setLayers(await lab.layerList());
  $('budget-panel').hidden = true;
  updateEstimates();
  probeSpeed();
  return `${params}M parameters`;
}

/// The tokens of a text file served with the page (fetched once, tokenized once per model);
/// `bar`, when given, shows both steps.
async function fileTokens(file, bar) {
  if (!texts.has(file)) {
    bar?.start(file);
    const response = await fetch(file);
    if (!response.ok) throw new Error(`${file}: HTTP ${response.status}`);
    texts.set(file, await response.text());
  }
  if (!tokensOf.has(file)) {
    bar?.start('tokenizing');
    tokensOf.set(file, await lab.tokenize(texts.get(file)));
  }
  return tokensOf.get(file);
}

const allWikitextTokens = (bar) => fileTokens(WIKITEXT_TEST, bar);

/// Tokens that make the first `count` windows of the evaluation's window and stride.
async function firstWindowsTokens(count) {
  const { max_length, stride } = await lab.evaluationPlan(undefined, optionalNumber('max-length'), optionalNumber('stride'));
  return (Math.max(1, count) - 1) * stride + max_length;
}

const textChoice = () => document.querySelector('input[name=text]:checked').value;

/// The evaluation's text as tokens, and its name for the runs table.
async function evaluationText() {
  if (textChoice() === 'custom') {
    evalBar.start('tokenizing');
    return { what: 'your text', tokens: await lab.tokenize($('custom-text').value) };
  }
  const tokens = await allWikitextTokens(evalBar);
  if (textChoice() === 'wikitext') return { what: 'WikiText-2 test', tokens };
  const windows = Math.max(1, Number($('eval-windows').value) || 1);
  return { what: `WikiText-2 test, first ${windows} window${windows === 1 ? '' : 's'}`, tokens: tokens.slice(0, await firstWindowsTokens(windows)) };
}

/// The lines under Evaluate and Calibrate: what the step will run and for about how long.
async function updateEstimates() {
  if (!modelLoaded || dead) return;
  try {
    let tokenCount;
    let about = '';
    if (textChoice() === 'custom') {
      // About four characters per token in English text under GPT-2-style tokenizers.
      tokenCount = Math.ceil($('custom-text').value.length / 4);
      about = 'about ';
    } else if (textChoice() === 'wikitext') {
      tokenCount = (await allWikitextTokens()).length;
    } else {
      tokenCount = await firstWindowsTokens(Number($('eval-windows').value) || 1);
    }
    const plan = await lab.evaluationPlan(tokenCount, optionalNumber('max-length'), optionalNumber('stride'));
    $('eval-estimate').textContent = `${plan.windows.toLocaleString()} window${plan.windows === 1 ? '' : 's'} of ${plan.max_length} tokens (stride ${plan.stride}), `
      + `${about}${plan.scored.toLocaleString()} tokens scored: ${estimateText(speed.estimate('forward', plan.windows, plan.max_length))}.`;
  } catch (e) {
    if (e?.fatal) return;
    $('eval-estimate').textContent = e?.message ?? String(e);
  }
  const [samples, length] = calibrationWindows();
  const short = (step) => estimateText(speed.estimate(step, samples, length)).replace(/ on this GPU.*/, '');
  $('calibrate-estimate').textContent = `${samples} window${samples === 1 ? '' : 's'} of ${length} tokens: `
    + `Fisher ${estimateText(speed.estimate('fisher', samples, length))}; means ${short('means')}; Hessians ${short('hessians')}.`;
}

/// The calibration's windows as the inputs ask, `[count, length]` (an empty count: the steps'
/// default of 16 is assumed; an empty length: the model's context).
const calibrationWindows = () => [optionalNumber('f-samples') ?? 16, optionalNumber('f-seqlen') ?? modelContext];

/// A few words of English for the probe of this GPU's speed when a model loads.
const PROBE_TEXT = 'The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in Paris. '
  + 'Its base is square, measuring 125 metres on each side.';
const PROBE_TOKENS = 64;

/// Times forward passes over two short windows (16 and 64 tokens), so estimates exist before any
/// long step has run. It runs behind the model's load, not in it: a step asked for meanwhile
/// waits for it (seconds on a software GPU, milliseconds on a real one).
async function probeSpeed() {
  speed.reset();
  const long = Math.min(PROBE_TOKENS, modelContext);
  const short = Math.min(PROBE_TOKENS / 4, long / 2);
  try {
    const tokens = await lab.tokenize(PROBE_TEXT.repeat(4)); // 150 to 200 tokens under any tokenizer here
    if (tokens.length < long || short < 2) return;
    const seconds = async (length) => (await lab.perplexity(tokens.slice(0, length), length, length, false)).seconds;
    speed.probe(short, await seconds(short), long, await seconds(long));
    updateEstimates();
  } catch (e) {
    // Without a probe the estimates wait for the first run; a lost GPU is the next step's news;
    // a cancel of the step queued behind the probe stops the probe too.
    if (!e?.fatal && e?.kind !== 'cancelled') console.warn(`speed probe: ${e?.message ?? e}`);
  }
}

const optionalNumber = (id) => ($(id).value === '' ? undefined : Number($(id).value));

/// Original perplexities by text and window, for "the f32 baseline beside" a quantized result.
const baselines = new Map();
const baselineKey = (text, report) => `${text}|${report.max_length}|${report.stride}`;

async function evaluate() {
  const { what, tokens } = await evaluationText();
  const plan = await lab.evaluationPlan(tokens.length, optionalNumber('max-length'), optionalNumber('stride'));
  evalBar.start('perplexity', { estimate: speed.estimate('forward', plan.windows, plan.max_length)?.seconds });
  const useQuantized = document.querySelector('input[name=which]:checked').value === 'quantized';
  // On a slow GPU a batch is one window, so that a cancel frees the GPU within one window.
  const windowsPerBatch = speed.windowSeconds(plan.max_length) > 0.5 ? 1 : undefined;
  const inputs = inputSettings();
  const calibration = inputs?.scale_type === 'static' ? await calibrationTokens() : undefined;
  const report = await lab.perplexity(tokens, optionalNumber('max-length'), optionalNumber('stride'), useQuantized,
    (done, total) => evalBar.count(done, total, 'tokens'), windowsPerBatch, inputs, calibration, optionalNumber('f-samples'), optionalNumber('f-seqlen'));
  speed.record('forward', report.seconds, plan.windows, plan.max_length);
  updateEstimates();
  addRun(useQuantized || packedOnly ? quantizedRun() : originalRun(), { what, report });
  evalBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  const result = $('eval-result');
  result.textContent = `Perplexity ${report.perplexity.toFixed(3)} on ${what}: ${report.scored.toLocaleString()} tokens scored `
    + `(window ${report.max_length}, stride ${report.stride}${report.inputs ? `; inputs ${report.inputs}` : ''}) in ${report.seconds.toFixed(1)} s, ${Math.round(report.tokens_per_s)} tokens/s.`;
  result.dataset.perplexity = String(report.perplexity);
  result.dataset.report = JSON.stringify(report);
  const key = baselineKey(what, report);
  if (!useQuantized && !packedOnly && !report.inputs) baselines.set(key, report.perplexity);
  const base = baselines.get(key);
  $('eval-baseline').textContent = !useQuantized && !report.inputs ? 'This is the f32 baseline: quantized models on the same text and window are compared with it.'
    : base === undefined ? 'Evaluate the original model on the same text and window to see the f32 baseline beside this.'
      : `f32 original on the same text: ${base.toFixed(3)}; quantization costs ${(100 * (report.perplexity / base - 1)).toFixed(2)}% perplexity.`;
  return `perplexity ${report.perplexity.toFixed(2)}`;
}

/// Every evaluation of the session, for the comparison table, its CSV and the trade-off plot.
const runs = [];

function originalRun() {
  return { model: `${$('model-status').dataset.loaded} (f32)`, method: 'f32', bits: 32, granularity: '', options: '', bits_per_weight: 32, file_bytes: '', series: null };
}

/// The current quantization as a row: its settings in words, its size.
function quantizedRun() {
  const { report, request } = quantized;
  const bits = request?.bits ?? Number(/(\d+)-bit/.exec(report.label)?.[1] ?? NaN);
  return {
    model: packedOnly ? `${$('model-status').dataset.loaded} (packed)` : report.label,
    method: request?.method ?? report.label.split(' ')[0],
    bits,
    granularity: request?.granularity ?? '',
    options: request ? optionsOf(request, report) : 'opened from a packed file',
    bits_per_weight: report.bits_per_weight,
    file_bytes: report.packed?.file_bytes ?? report.packed?.packed_bytes ?? '',
    // A size-budget quantization: its summed estimate, which calibrates the expected curve.
    estimate: report.allocation?.estimated_loss,
    candidates: report.allocation ? candidatesId : undefined,
    // The line it belongs to in the trade-off plot: the label without its bit width.
    series: report.label.replace(/ \d+-bit/, ''),
  };
}

function optionsOf(request, report) {
  const smoothing = request.act_equalization && `SmoothQuant ${request.act_equalization} α ${request.alpha}`;
  if (request.method === 'rtn') {
    return [request.format, request.scale_stats, request.scale_type === 'po2' && 'po2 scales', request.asym ? 'zero point' : 'symmetric',
      request.embeddings && 'embeddings', smoothing]
      .filter(Boolean).join('; ');
  }
  return [
    smoothing,
    /Fisher-weighted/.test(report.label) && 'Fisher-weighted',
    request.outlier_percent !== undefined && `outliers ${request.outlier_percent}%`,
    request.scaling && 'scaling',
    request.centering && 'centering',
    request.gpu && (request.method === 'kmeans' ? 'k-means on GPU' : 'rounded on GPU'),
    request.embeddings && 'embeddings',
  ].filter(Boolean).join('; ');
}

/// The Activations settings as the lab's InputQuantRequest, or undefined when inputs stay f32.
function inputSettings() {
  if ($('a-bits').value === '') return undefined;
  const [scaleType, granularity] = $('a-scales').value.split(':');
  const format = $('a-format').value;
  return {
    bits: Number($('a-bits').value),
    format,
    quant_type: format === 'int' && $('a-zero-point').checked ? 'asym' : 'sym',
    scale_type: scaleType,
    granularity,
    group_size: 64,
  };
}

/// SmoothQuant's picture of the layer chosen under "One layer up close".
async function drawSmoothing() {
  const layer = $('layer-select').value;
  if (!meansReady || !layer || packedOnly) {
    clearPlot($('plot-activations'));
    return;
  }
  try {
    drawActivations($('plot-activations'), await lab.smoothing(layer, Number($('a-alpha').value)));
  } catch (e) {
    if (e?.fatal) throw e;
    clearPlot($('plot-activations'), e?.message ?? String(e));
  }
}

function addRun(settings, { what, report }) {
  const inputs = report.inputs ?? '';
  // Quantized inputs make a run of their own: a separate line beside the weight-only one.
  const series = settings.series && inputs ? `${settings.series} · ${inputs}` : settings.series;
  const run = { ...settings, series, inputs, text: what, perplexity: report.perplexity, window: report.max_length, stride: report.stride, scored_tokens: report.scored };
  runs.push(run);
  const row = document.createElement('tr');
  const size = run.file_bytes ? megabytes(run.file_bytes) : '—';
  for (const cell of [run.model, run.method, run.bits, run.granularity, run.options, run.inputs || 'f32', run.text, run.bits_per_weight.toFixed(3), size, run.perplexity.toFixed(3)]) {
    const td = document.createElement('td');
    td.textContent = cell;
    row.append(td);
  }
  $('history').tBodies[0].append(row);
  $('history-wrap').hidden = false;
  redrawPerplexity();
  setStep('export', 'todo', 'ready');
}

/// The session's runs as CSV (RFC 4180 quoting), one row per evaluation.
function runsCsv() {
  const columns = ['model', 'method', 'bits', 'granularity', 'options', 'inputs', 'text', 'bits_per_weight', 'file_bytes', 'perplexity', 'window', 'stride', 'scored_tokens'];
  const quote = (value) => {
    const text = String(value);
    return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return [columns.join(','), ...runs.map((run) => columns.map((c) => quote(run[c])).join(','))].join('\n') + '\n';
}

function quantizeRequest() {
  const choice = $('q-method').value;
  const method = choice === 'gptq-kmeans' ? 'gptq' : choice;
  const request = { method, bits: Number($('q-bits').value), granularity: $('q-granularity').value, embeddings: $('q-embeddings').checked };
  if (HESSIAN_METHODS.has(choice)) {
    request.incoherence = $('q-incoherence').checked;
    if (['gptq', 'ldlq', 'gptq-kmeans'].includes(choice)) request.act_order = $('q-act-order').checked;
  }
  if (choice === 'gptq-kmeans') {
    request.grid = 'kmeans';
  } else if (method === 'kmeans') {
    // Output-channel groups for tables; uniform scales group input rows, as Brevitas does.
    if ($('q-outliers').value !== '') request.outlier_percent = Number($('q-outliers').value);
    if ($('q-vectors').value !== '1') request.vector_dim = Number($('q-vectors').value);
    request.scaling = $('q-scaling').checked;
    request.centering = $('q-centering').checked;
  } else {
    Object.assign(request, {
      format: $('q-format').value, scale_stats: $('q-scale-stats').value,
      scale_type: $('q-scale-type').value, asym: $('q-asym').checked,
    });
    // The Hessian methods round onto the same uniform grid, which they call `grid`.
    if (method !== 'rtn') request.grid = request.format;
  }
  if ($('q-budget').value !== '') request.budget = `${Number($('q-budget').value)}bpw`;
  if ($('a-smooth').value !== '') {
    request.act_equalization = $('a-smooth').value;
    request.alpha = Number($('a-alpha').value);
  }
  return request;
}

async function quantize() {
  quantBar.start('quantizing');
  const useFisher = $('q-method').value === 'kmeans' && $('q-fisher').checked;
  const onGpu = $('q-gpu').checked && GPU_METHODS.has($('q-method').value);
  const request = quantizeRequest();
  const report = await lab.quantize(request, useFisher, onGpu, (done, total) => quantBar.count(done, total, 'weights'));
  quantized = { report, request: { ...request, gpu: onGpu } };
  quantBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  // The result line and the error heatmap name the same measure: Fisher-weighted when Fisher is known.
  const errors = await lab.errorMap();
  const worst = errors.cells.reduce((a, b) => (b.value > a.value ? b : a));
  const measure = errors.weighted ? 'Fisher-weighted error Σ F·(w − q)²' : 'squared error Σ (w − q)²';
  const proxy = report.layers.every((l) => l.proxy_loss != null)
    ? ` Proxy loss tr(ΔW H ΔWᵀ) summed over layers: ${report.layers.reduce((sum, l) => sum + l.proxy_loss, 0).toExponential(3)}.` : '';
  $('quant-result').textContent = `${report.label}: ${report.layers.length} layers, ${report.bits_per_weight.toFixed(3)} bits per weight; `
    + `largest ${measure} in ${worst.name} (${worst.value.toExponential(2)}, as in the heatmap).${proxy} ${sizeLine(report.packed)}`;
  $('quant-result').dataset.report = JSON.stringify(report);
  $('quant-result').dataset.worst = worst.name;
  document.querySelector('input[name=which][value=quantized]').checked = true;
  drawError($('plot-error'), errors);
  if (report.layers.every((l) => l.proxy_loss != null)) {
    proxyRuns = [...proxyRuns.filter((r) => r.label !== report.label), { label: report.label, layers: report.layers }];
    drawProxyLoss($('plot-proxy'), proxyRuns);
  }
  layerView.quantized(request.bits);
  showBudget(report);
  return `${report.bits_per_weight.toFixed(2)} bits/weight`;
}

/// After a size-budget quantization: the slider over the feasible range and the heatmap of the
/// allocated widths; moving the slider re-allocates the same candidates (`Lab.allocateBudget`).
function showBudget(report) {
  $('budget-panel').hidden = !report.allocation;
  if (!report.allocation) return;
  const [lo, hi] = report.feasible;
  const slider = $('budget-slider');
  [slider.min, slider.max] = [lo.toFixed(2), (Math.floor(hi * 100) / 100).toFixed(2)];
  slider.value = String(Number($('q-budget').value));
  drawAllocation(report.allocation);
  traceBudgetCurve(report).catch((e) => console.warn('the expected-perplexity curve:', e));
  // Moves queue: while one allocation runs, only the latest position waits.
  let running = false;
  let waiting = false;
  slider.oninput = async () => {
    if (running) {
      waiting = true;
      return;
    }
    running = true;
    do {
      waiting = false;
      try {
        drawAllocation(await lab.allocateBudget(Number(slider.value)));
        delete $('budget-readout').dataset.error;
      } catch (e) {
        $('budget-readout').textContent = String(e.message ?? e);
        $('budget-readout').dataset.error = 'true';
      }
    } while (waiting);
    running = false;
  };
}

/// The expected perplexity over the budget slider's range (issue 20, item 4): at budgets across
/// the feasible range, the allocation of the current candidates and its summed estimate, drawn as
/// ppl_f32 · exp(κ · estimate). The Fisher estimate is a second-order sum whose scale against
/// log-perplexity is not known in advance (BENCHMARKS.md, "Mixed precision"), so κ is fitted, by
/// least squares through the origin of ln(ppl / ppl_f32) against the estimate, to this session's
/// evaluations of these candidates: one evaluation calibrates the curve, the next ones test it.
let budgetCurve = null;
let candidatesId = 0;

async function traceBudgetCurve(report) {
  const id = ++candidatesId;
  budgetCurve = null;
  const [lo, hi] = report.feasible;
  const own = report.allocation;
  const points = [{ estimate: own.estimated_loss, layerBytes: own.layer_bytes }];
  for (let i = 0; i <= 12; i++) {
    const allocation = await lab.allocateBudget(lo + ((hi - lo) * i) / 12);
    points.push({ estimate: allocation.estimated_loss, layerBytes: allocation.layer_bytes });
  }
  if (id !== candidatesId) return; // a newer quantization replaced these candidates
  const layers = layerView.layers ?? new Map();
  const weights = own.layers.reduce((n, l) => n + (layers.get(l.name) ? layers.get(l.name).rows * layers.get(l.name).cols : 0), 0);
  points.sort((a, b) => a.layerBytes - b.layerBytes);
  budgetCurve = { id, points, weights, bitsPerWeight: report.bits_per_weight, fileBytes: report.packed?.file_bytes, layerBytes: own.layer_bytes };
  redrawPerplexity();
}

/// The expected curve in the trade-off plot's units, once an evaluation calibrates it.
function expectedCurve() {
  const curve = budgetCurve;
  const measured = runs.filter((r) => curve && r.candidates === curve.id && r.estimate > 0 && !r.inputs);
  const last = measured.at(-1);
  const base = last && baselines.get(`${last.text}|${last.window}|${last.stride}`);
  if (base === undefined || !(curve.weights > 0)) return undefined;
  const same = measured.filter((r) => r.text === last.text && r.window === last.window && r.stride === last.stride);
  const kappa = same.reduce((n, r) => n + r.estimate * Math.log(r.perplexity / base), 0) / same.reduce((n, r) => n + r.estimate ** 2, 0);
  const points = curve.points.map((p) => ({
    bits_per_weight: curve.bitsPerWeight + (8 * (p.layerBytes - curve.layerBytes)) / curve.weights,
    file_bytes: curve.fileBytes ? curve.fileBytes + p.layerBytes - curve.layerBytes : undefined,
    estimate: p.estimate,
    perplexity: base * Math.exp(kappa * p.estimate),
  }));
  return { points, kappa, evaluations: same.length, text: last.text };
}

function redrawPerplexity() {
  drawPerplexity($('plot-ppl'), runs, $('ppl-x').value, expectedCurve());
}

function drawAllocation(allocation) {
  const layers = layerView.layers ?? new Map();
  const cells = allocation.layers.filter((l) => layers.get(l.name)).map((l) => ({ name: l.name, block: layers.get(l.name).block, matrix: layers.get(l.name).matrix, value: l.bits }));
  const counts = {};
  for (const l of allocation.layers) counts[l.bits] = (counts[l.bits] ?? 0) + 1;
  const weights = allocation.layers.reduce((n, l) => n + (layers.get(l.name) ? layers.get(l.name).rows * layers.get(l.name).cols : 0), 0);
  const bpw = weights ? (8 * allocation.layer_bytes) / weights : NaN;
  $('budget-readout').textContent = `${allocation.budget}: ${Object.entries(counts).map(([b, n]) => `${n} at ${b} bits`).join(', ')}; `
    + `${bpw.toFixed(3)} bits per weight stored, estimated loss ${allocation.estimated_loss.toExponential(3)} (${allocation.estimate})`
    + (allocation.relative_gap != null ? `, within ${(100 * allocation.relative_gap).toPrecision(2)} % of the optimum` : '') + '.';
  $('budget-readout').dataset.loss = String(allocation.estimated_loss);
  drawWidths($('plot-widths'), cells, allocation.widths);
}

/// "Packed file: 13.5 MB vs the original checkpoint's 14.5 MB (0.93×) ... Quantized layers: 5.50 bits
/// per weight: 4.00 for the 4-bit codes + 1.50 for the tables (...)": the whole file the download
/// saves, what its bits per weight are made of (the figures of `lutlab quantize`).
function sizeLine(packed) {
  if (!packed) return 'Not packable (scales over input rows): evaluated as dequantized weights.';
  const original = packed.original_bytes
    ? ` vs the original checkpoint's ${megabytes(packed.original_bytes)} (${(packed.file_bytes / packed.original_bytes).toFixed(2)}× its size)` : '';
  return `Packed file: ${megabytes(packed.file_bytes)}${original}; of it ${megabytes(packed.dense_bytes)} dense (embeddings, norms, biases) `
    + `and ${megabytes(packed.packed_bytes)} quantized layers, ${packed.compression.toFixed(1)}× smaller than as f16. `
    + `Quantized layers: ${packed.explanation}. Evaluated straight from the packed codes by the LUT kernels.`;
}

async function downloadPacked() {
  const { name, bytes } = await lab.packedFile();
  save(bytes, name);
  $('quant-result').dataset.downloaded = name;
  const packed = quantized?.report?.packed;
  const original = packed?.original_bytes ? `, ${(bytes.length / packed.original_bytes).toFixed(2)}× the original checkpoint's ${megabytes(packed.original_bytes)}` : '';
  $('export-status').textContent = `Saved ${name} (${megabytes(bytes.length)}: ${bytes.length.toLocaleString('en')} bytes${original}).`;
  $('export-status').dataset.bytes = String(bytes.length);
  return 'packed file saved';
}

async function openPacked(file) {
  const summary = await lab.openPacked(file.name, file);
  kept.packed = file;
  packedOnly = true;
  fisherReady = false;
  $('q-fisher').checked = false;
  quantized = { report: { label: summary.packed.method, bits_per_weight: summary.packed.bits_per_weight, packed: summary.packed }, request: null };
  $('model-status').textContent = `Opened packed file ${file.name}: ${summary.packed.method}, ${summary.n_layer} layers, width ${summary.n_embd}. ${sizeLine(summary.packed)}`;
  $('model-status').dataset.loaded = file.name;
  $('model-status').dataset.packed = JSON.stringify(summary.packed);
  $('quant-result').textContent = '';
  document.querySelector('input[name=which][value=original]').checked = true;
  for (const id of ['plot-sensitivity', 'plot-error']) clearPlot($(id), 'A packed file alone has no original weights to compare with.');
  layerView.setLayers([]);
  updateEstimates();
  probeSpeed();
  return 'packed file';
}

/// The calibration text's tokens (WikiText-2 valid).
const calibrationTokens = () => fileTokens(WIKITEXT_VALID, fisherBar);

async function computeMeans() {
  const tokens = await calibrationTokens();
  fisherBar.start('mean activations', { estimate: speed.estimate('means', ...calibrationWindows())?.seconds });
  const report = await lab.inputMeans(tokens, optionalNumber('f-samples'), optionalNumber('f-seqlen'),
    (done, total) => fisherBar.count(done, total, 'windows'));
  fisherBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  speed.record('means', report.seconds, report.nsamples, report.seqlen);
  updateEstimates();
  meansReady = true;
  $('q-centering').checked = true;
  await drawSmoothing();
  $('means-result').textContent = `Mean inputs of ${report.layers} linear layers from ${report.nsamples} windows of ${report.seqlen} tokens (for centering).`;
  return calibrationSummary();
}

async function computeHessians() {
  const tokens = await calibrationTokens();
  fisherBar.start('Hessians', { estimate: speed.estimate('hessians', ...calibrationWindows())?.seconds });
  const report = await lab.hessians(tokens, optionalNumber('f-samples'), optionalNumber('f-seqlen'),
    (done, total) => fisherBar.count(done, total, 'blocks'));
  fisherBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  speed.record('hessians', report.seconds, report.nsamples, report.seqlen);
  updateEstimates();
  hessiansReady = true;
  // Proxy losses measured with earlier Hessians do not compare with new ones.
  proxyRuns = [];
  clearPlot($('plot-proxy'));
  $('hessians-result').textContent = `Hessians of ${report.hessians} linear inputs from ${report.nsamples} windows of ${report.seqlen} tokens `
    + '(for GPTQ, LDLQ and the other Hessian methods, and every method\'s proxy loss).';
  layerView.setHessians(true);
  return calibrationSummary();
}

const calibrationSummary = () => [fisherReady && 'Fisher', meansReady && 'means', hessiansReady && 'Hessians'].filter(Boolean).join(' + ');

async function computeFisher() {
  const tokens = await calibrationTokens();
  fisherBar.start('Fisher', { estimate: speed.estimate('fisher', ...calibrationWindows())?.seconds });
  const report = await lab.fisher(tokens, optionalNumber('f-samples'), optionalNumber('f-seqlen'), 0,
    (done, total) => fisherBar.count(done, total, 'tokens'));
  fisherBar.complete(`done in ${report.seconds.toFixed(1)} s`);
  speed.record('fisher', report.seconds, report.nsamples, report.seqlen);
  updateEstimates();
  fisherReady = true;
  // Kept as a file, so a new GPU after a lost one starts with it.
  kept.fisher = new Blob([await lab.fisherFile()]);
  $('q-fisher').checked = true;
  $('fisher-result').textContent = `Fisher information from ${report.nsamples} windows of ${report.seqlen} tokens of WikiText-2 valid `
    + `(mean loss ${report.mean_loss?.toFixed(3)}), ${Math.round(report.tokens_per_s)} tokens/s.`;
  $('fisher-result').dataset.report = JSON.stringify(report);
  await fisherArrived();
  return calibrationSummary();
}

/// New Fisher information recolours the pictures that use it.
async function fisherArrived() {
  drawSensitivity($('plot-sensitivity'), await lab.sensitivityMap());
  if (quantized && !packedOnly) drawError($('plot-error'), await lab.errorMap());
  layerView.redraw();
}

function save(bytes, name) {
  const blob = new Blob([bytes], { type: 'application/octet-stream' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function downloadFisher() {
  const name = `${($('model-status').dataset.loaded ?? 'model').replace(/[^\w.-]+/g, '-')}.fisher.safetensors`;
  save(await lab.fisherFile(), name);
  $('export-status').textContent = `Saved ${name}.`;
}

async function loadFisherFile(file, from = `loaded from ${file.name}`) {
  await lab.loadFisher(file.name ?? 'fisher.safetensors', file);
  kept.fisher = file;
  fisherReady = true;
  $('q-fisher').checked = true;
  $('fisher-result').textContent = `Fisher information ${from}.`;
  await fisherArrived();
  return calibrationSummary();
}

function showMethodOptions() {
  const method = $('q-method').value;
  for (const el of document.querySelectorAll('.kmeans-only')) el.hidden = method !== 'kmeans';
  for (const el of document.querySelectorAll('.rtn-only')) el.hidden = method === 'kmeans' || method === 'gptq-kmeans';
  for (const el of document.querySelectorAll('.hessian-only')) el.hidden = !HESSIAN_METHODS.has(method);
  for (const el of document.querySelectorAll('.gpu-option')) el.hidden = !GPU_METHODS.has(method);
  $('q-act-order').disabled = !['gptq', 'ldlq', 'gptq-kmeans'].includes(method);
  $('q-explain').textContent = EXPLAIN[method];
}

/// The adapter as wgpu names it, or where the browser leaves the name empty (as it does for
/// privacy; wgpu then says "unnamed adapter"), its vendor and architecture from `GPUAdapterInfo`.
async function adapterName(device) {
  if (!device.startsWith('unnamed adapter')) return device;
  const info = (await navigator.gpu.requestAdapter())?.info ?? {};
  const named = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
  return named ? device.replace('unnamed adapter', named) : device;
}

async function showGpu() {
  $('gpu-status').textContent = `GPU: ${await adapterName(lab.device)} · largest binding ${(lab.maxBindingBytes / 2 ** 20).toFixed(0)} MiB`;
  // On a software GPU the k-means shaders are slower than the CPU reference: the slider starts on the CPU.
  if (/swiftshader|llvmpipe|lavapipe|\bCpu\b/i.test(lab.device)) layerView.softwareGpu(lab.device);
}

function wireControls() {
  $('error-close').onclick = () => showError('');
  $('reopen-gpu').onclick = reopenGpu;
  $('q-method').onchange = showMethodOptions;
  showMethodOptions();
  $('run-quantize').onclick = () => action(quantize, 'quantize');
  $('run-fisher').onclick = () => action(computeFisher, 'calibrate');
  $('download-fisher').onclick = () => action(async () => downloadFisher());
  $('run-means').onclick = () => action(computeMeans, 'calibrate');
  $('run-hessians').onclick = () => action(computeHessians, 'calibrate');
  $('download-csv').onclick = () => {
    save(new TextEncoder().encode(runsCsv()), 'lutlab-runs.csv');
    $('export-status').textContent = `Saved lutlab-runs.csv (${runs.length} runs).`;
  };
  $('download-packed').onclick = () => action(async () => downloadPacked(), 'export');
  $('packed-file').onchange = (event) => event.target.files[0] && action(() => openPacked(event.target.files[0]), 'model');
  $('fisher-file').onchange = (event) => event.target.files[0] && action(() => loadFisherFile(event.target.files[0]), 'calibrate');
  $('load-shipped').onclick = () => action(() => loadFrom((callbacks) => shippedModel(callbacks, shippedChoice())), 'model');
  $('hub-form').onsubmit = (event) => {
    event.preventDefault();
    const repo = $('hub-repo').value.trim();
    const revision = $('hub-revision').value.trim() || 'main';
    // Read at submit and held only by this load: never stored, never put in a URL.
    const accessToken = $('hub-token').value.trim();
    action(() => loadFrom((callbacks) => hubModel(repo, hub, { revision, accessToken }, callbacks)), 'model');
  };
  $('clear-cache').onclick = (event) => {
    event.preventDefault();
    clearHubCache().then(() => ($('model-status').textContent = 'Hub downloads forgotten.'));
  };
  $('local-files').onchange = (event) => action(() => loadFrom((callbacks) => localModel(event.target.files, callbacks)), 'model');
  const zone = $('drop-zone');
  zone.ondragover = (event) => { event.preventDefault(); zone.classList.add('dragging'); };
  zone.ondragleave = () => zone.classList.remove('dragging');
  zone.ondrop = (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    action(() => loadFrom((callbacks) => localModel(event.dataTransfer.files, callbacks)), 'model');
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
  $('run-eval').onclick = () => action(evaluate, 'evaluate');
  for (const id of ['eval-windows', 'max-length', 'stride', 'f-samples', 'f-seqlen']) $(id).addEventListener('input', () => updateEstimates());
  for (const radio of document.querySelectorAll('input[name=text]')) radio.addEventListener('change', () => updateEstimates());
  let typing = null;
  $('custom-text').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(updateEstimates, 300);
  });
  $('ppl-x').onchange = redrawPerplexity;
  $('a-alpha').oninput = () => drawSmoothing().catch(fatal);
  $('layer-select').addEventListener('change', () => drawSmoothing().catch(fatal));
  layerView.wire();
  for (const figure of document.querySelectorAll('figure.plot')) clearPlot(figure);
}

async function start() {
  const requested = new URLSearchParams(location.search).get('model');
  if (requested && [...$('shipped-model').options].some((o) => o.value === requested)) $('shipped-model').value = requested;
  wireControls();
  initGenerate({ lab: () => lab, action, ready: () => modelLoaded && !busy && !dead });
  refreshControls();
  if (!navigator.gpu) {
    $('gpu-status').textContent = 'This browser has no WebGPU.';
    showError('lutlab needs WebGPU: use a recent Chrome, Edge or Safari, or Firefox with WebGPU enabled (and a page served over https or localhost).');
    return;
  }
  try {
    lab = await LabClient.open(fatal);
  } catch (e) {
    $('gpu-status').textContent = 'No usable GPU.';
    showError(`WebGPU is present but no GPU could be opened: ${e.message}`);
    return;
  }
  await showGpu();
  refreshControls();
  await action(() => loadFrom((callbacks) => shippedModel(callbacks, shippedChoice())), 'model');
}

// For the e2e tests: lose the GPU as a driver reset would.
window.lutlabTestHooks = { loseGpu: () => lab?.loseDevice(), lab: () => lab };

start();
