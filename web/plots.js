// The page's pictures, drawn with Observable Plot (web/vendor/, global `Plot`) from numbers the
// wasm module computes (crates/lutlab-wasm/src/plots.rs). Each draw replaces the figure's chart
// and records what it drew in `data-` attributes (the e2e tests read them).

/* global Plot, d3 */

const ACCENT = '#e4572e';
const BAR = '#8fa8dc';

function chartOf(figure) {
  return figure.querySelector('.chart');
}

/// Width the chart may take: its figure's, so the page reflows at any width.
function widthOf(figure) {
  return Math.max(260, Math.floor(chartOf(figure).clientWidth || figure.clientWidth || 600));
}

function show(figure, svg, signature) {
  const chart = chartOf(figure);
  chart.replaceChildren(svg);
  labelChart(figure, chart);
  redrawn.set(figure, widthOf(figure));
  figure.dataset.state = 'drawn';
  figure.dataset.signature = signature;
}

/// Assistive technology gets a drawn chart as one image named by what it shows: the figure's
/// `data-label` (else its caption) and, for a heatmap, its largest cell. Plot names its groups of
/// marks with `aria-label` ("cell", "rule") but no role, which ARIA does not allow on a <g>: they
/// become groups (inside the image they stay out of the accessibility tree; tests select by them).
function labelChart(figure, chart) {
  const what = figure.dataset.label ?? figure.querySelector('figcaption')?.textContent.trim() ?? 'chart';
  chart.setAttribute('role', 'img');
  chart.setAttribute('aria-label', figure.dataset.largest ? `${what}; largest: ${figure.dataset.largest}` : what);
  for (const group of chart.querySelectorAll('g[aria-label]:not([role])')) group.setAttribute('role', 'group');
}

/// Empties a figure, showing why (its `data-empty` text unless `message` says otherwise).
export function clearPlot(figure, message) {
  drawings.delete(figure);
  const note = document.createElement('p');
  note.className = 'plot-empty';
  note.textContent = message ?? figure.dataset.empty ?? '';
  chartOf(figure).replaceChildren(note);
  chartOf(figure).removeAttribute('role'); // the note is read as text
  chartOf(figure).removeAttribute('aria-label');
  figure.dataset.state = 'empty';
  delete figure.dataset.signature;
}

// When the window's width changes, each drawn picture is drawn again at its figure's new width
// (same data, same signature), so a narrowed or rotated screen gets readable axes and legends.
const drawings = new Map(); // figure -> () => draws it again
const redrawn = new Map(); // figure -> the width it was drawn at
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [figure, draw] of drawings) {
      if (figure.isConnected && redrawn.get(figure) !== widthOf(figure)) draw();
    }
  }, 150);
});

/// Keeps `draw` as the way to draw `figure` again, then draws it.
function remember(figure, draw) {
  drawings.set(figure, draw);
  draw();
}

/// A short, stable fingerprint of numbers (FNV-1a over their text), to tell drawings apart.
function fingerprint(values) {
  let h = 0x811c9dc5;
  for (const ch of values.join(',')) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h.toString(16);
}

/// The matrices of a block in the order the cells list them (the model's own order: GPT-2's
/// c_attn … c_proj, Llama's q_proj … down_proj), and a short tick label for each: the name
/// without its `attn.`/`self_attn.`/`mlp.` part where that stays unique (GPT-2 has two c_proj).
function matrixAxis(cells) {
  const matrices = [...new Set(cells.map((c) => c.matrix))];
  const short = (m) => m.replace(/^(self_attn|attn|mlp)\./, '');
  const unique = new Set(matrices.map(short)).size === matrices.length;
  return { domain: matrices, tickFormat: unique ? short : (m) => m };
}

/// WCAG relative luminance of a CSS colour (0: black, 1: white).
function luminance(colour) {
  const { r, g, b } = d3.rgb(colour);
  const linear = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
}

const DARK_TEXT = '#1d2330';
const DARK_LUMINANCE = luminance(DARK_TEXT);

/// The label colour with the higher contrast on `background`: dark text on light cells, white on dark.
function labelColour(background) {
  const l = luminance(background);
  return (l + 0.05) / (DARK_LUMINANCE + 0.05) >= 1.05 / (l + 0.05) ? DARK_TEXT : 'white';
}

function heatmap(figure, cells, { label, shortLabel, scheme }) {
  const positive = cells.filter((c) => c.value > 0);
  figure.dataset.largest = cells.reduce((a, b) => (b.value > a.value ? b : a), cells[0] ?? {}).name ?? '';
  if (positive.length === 0) {
    clearPlot(figure, 'Every value is zero: nothing to compare.');
    return;
  }
  const blocks = [...new Set(cells.map((c) => c.block))].sort((a, b) => a - b);
  const width = widthOf(figure);
  // One colour scale for the cells and their labels, so each label can pick its contrast.
  const color = { type: 'log', scheme, domain: d3.extent(positive, (c) => c.value) };
  const scale = Plot.scale({ color });
  const svg = Plot.plot({
    width,
    height: Math.min(420, 60 + 26 * blocks.length),
    marginLeft: 50,
    padding: 0.05,
    x: { label: 'matrix', ...matrixAxis(cells) },
    y: { label: 'block', domain: blocks },
    // The legend in the cells' notation (e-notation), not SI prefixes.
    color: { ...color, legend: true, label: width < 560 && shortLabel ? shortLabel : label, tickFormat: '.0e' },
    marks: [
      Plot.cell(positive, { x: 'matrix', y: 'block', fill: 'value', tip: true, title: (c) => `${c.name}: ${c.value.toExponential(3)}` }),
      Plot.text(positive, {
        x: 'matrix', y: 'block', text: (c) => c.value.toExponential(1), fill: (c) => labelColour(scale.apply(c.value)),
        fontSize: 11, fontVariant: 'tabular-nums',
      }),
    ],
  });
  show(figure, svg, fingerprint(cells.map((c) => c.value)));
}

/// Heatmap of the mean Fisher value per weight over blocks × matrices.
export function drawSensitivity(figure, cells) {
  remember(figure, () => drawSensitivityNow(figure, cells));
}

function drawSensitivityNow(figure, cells) {
  heatmap(figure, cells, { label: 'mean Fisher information per weight (squared gradient, log scale)', shortLabel: 'mean Fisher per weight (log scale)', scheme: 'viridis' });
}

/// Heatmap of the bits each layer gets under a size budget (`cells`: `{ name, block, matrix,
/// value: bits }`), one colour per width.
export function drawWidths(figure, cells, candidates) {
  remember(figure, () => drawWidthsNow(figure, cells, candidates));
}

/// `candidates`: every width the allocation chose from, so a width keeps its colour as the
/// slider moves.
function drawWidthsNow(figure, cells, candidates) {
  if (cells.length === 0) {
    clearPlot(figure);
    return;
  }
  const blocks = [...new Set(cells.map((c) => c.block))].sort((a, b) => a - b);
  const width = widthOf(figure);
  const svg = Plot.plot({
    width,
    height: Math.min(420, 60 + 26 * blocks.length),
    marginLeft: 50,
    padding: 0.05,
    x: { label: 'matrix', ...matrixAxis(cells) },
    y: { label: 'block', domain: blocks },
    color: { type: 'ordinal', scheme: 'blues', domain: [...new Set([...candidates, ...cells.map((c) => c.value)])].sort((a, b) => a - b), legend: true, label: 'bits' },
    marks: [
      Plot.cell(cells, { x: 'matrix', y: 'block', fill: 'value', title: (c) => `${c.name}: ${c.value} bits` }),
      Plot.text(cells, { x: 'matrix', y: 'block', text: (c) => String(c.value), fill: DARK_TEXT, stroke: 'white', strokeWidth: 3, paintOrder: 'stroke', fontSize: 12 }),
    ],
  });
  figure.dataset.widths = JSON.stringify(Object.fromEntries(cells.map((c) => [c.name, c.value])));
  show(figure, svg, fingerprint(cells.map((c) => c.value)));
}

/// Heatmap of each layer's quantization error (Fisher-weighted when `map.weighted`).
export function drawError(figure, map) {
  remember(figure, () => drawErrorNow(figure, map));
}

function drawErrorNow(figure, map) {
  const label = map.weighted ? `Σ F·(w − q)² per layer, ${map.label} (log scale)` : `Σ (w − q)² per layer, ${map.label} (no Fisher; log scale)`;
  const shortLabel = map.weighted ? 'Σ F·(w − q)² per layer (log scale)' : 'Σ (w − q)² per layer (log scale)';
  heatmap(figure, map.cells, { label, shortLabel, scheme: 'reds' });
}

/// The proxy loss tr(ΔW H ΔWᵀ) of every layer, one line per quantization (`runs`: `{ label,
/// layers: [{ name, proxy_loss }] }`), on a log scale.
export function drawProxyLoss(figure, runs) {
  remember(figure, () => drawProxyLossNow(figure, runs));
}

function drawProxyLossNow(figure, runs) {
  const points = runs.flatMap((run) => run.layers.map((l, i) => ({ label: run.label, layer: l.name, index: i, proxy: l.proxy_loss })));
  if (points.length === 0) {
    clearPlot(figure);
    return;
  }
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 260,
    marginLeft: 64,
    grid: true,
    x: { label: 'layer (model order) →', tickFormat: (i) => points.find((p) => p.index === i)?.layer.replace(/^.*?(\d+)\./, '$1.') ?? '' , ticks: 8 },
    y: { label: '↑ proxy loss tr(ΔW H ΔWᵀ) (log scale)', type: 'log', tickFormat: '.1e' },
    color: { legend: true },
    marks: [
      Plot.line(points, { x: 'index', y: 'proxy', stroke: 'label', marker: 'circle', tip: true, title: (p) => `${p.label}\n${p.layer}: ${p.proxy.toExponential(3)}` }),
    ],
  });
  show(figure, svg, fingerprint(points.map((p) => p.proxy)));
  figure.dataset.series = String(runs.length);
}

/// One output channel up close (`picture.channel_view` of `Lab.layerPicture` or
/// `Lab.requantizeLayer`): a dot per weight before (top strip) and after quantization (bottom
/// strip), the values its table offers as dashed rules, outliers ringed. Every weight is shown.
/// The caption's `.detail` gets the channel's error by the heatmap's measure.
export function drawChannel(figure, picture) {
  remember(figure, () => drawChannelNow(figure, picture));
}

/// A fixed spread in [0.15, 0.85) per input row, so the strips' dots do not sit on one line.
const jitter = (row) => 0.15 + 0.7 * (((row * 2654435761) >>> 0) % 1000) / 1000;

function drawChannelNow(figure, picture) {
  const view = picture.channel_view;
  const outliers = new Set(view.outlier_rows);
  const points = view.before.map((w, row) => ({ row, w, strip: 1 + jitter(row) }));
  const after = (view.after ?? []).map((w, row) => ({ row, w, strip: jitter(row), before: view.before[row] }));
  const values = [...new Set(after.filter((p) => !outliers.has(p.row)).map((p) => p.w))].sort((a, b) => a - b);
  const table = view.table ?? [];
  const domain = d3.extent([...view.before, ...(view.after ?? []), ...table]);
  const ringed = [...points, ...after].filter((p) => outliers.has(p.row));
  const marks = [
    Plot.ruleX(table, { stroke: '#1d2330', strokeDasharray: '3,3', strokeOpacity: 0.8 }),
    Plot.dot(points, { x: 'w', y: 'strip', r: 1.8, fill: BAR, fillOpacity: 0.8, title: (p) => `input row ${p.row}: ${p.w.toPrecision(4)}` }),
    Plot.dot(after, { x: 'w', y: 'strip', r: 1.8, fill: ACCENT, fillOpacity: 0.8, title: (p) => `input row ${p.row}: ${p.before.toPrecision(4)} → ${p.w.toPrecision(4)}` }),
    Plot.dot(ringed, { x: 'w', y: 'strip', r: 4.5, stroke: '#a8321a', strokeWidth: 1.5, title: (p) => `input row ${p.row}: outlier, kept exactly` }),
  ];
  const counts = view.after
    ? `${values.length} distinct value${values.length === 1 ? '' : 's'} after quantization`
      + (table.length ? ` of the table's ${table.length}` : '') + (outliers.size ? `, ${outliers.size} outlier${outliers.size === 1 ? '' : 's'} kept exactly` : '')
    : 'not quantized yet';
  const svg = Plot.plot({
    width: widthOf(figure),
    height: view.after ? 200 : 130,
    marginLeft: 52,
    subtitle: `${picture.name}, output channel ${view.channel}: all ${view.before.length} weights shown; ${counts}`,
    x: { domain, label: 'weight value →', grid: false },
    y: { domain: view.after ? [0, 2] : [1, 2], ticks: view.after ? [0.5, 1.5] : [1.5], tickFormat: (t) => (t > 1 ? 'before' : 'after'), label: null },
    marks,
  });
  const measure = view.weighted ? 'Fisher-weighted error Σ F·(w − q)²' : 'squared error Σ (w − q)²';
  const detail = figure.querySelector('figcaption .detail');
  if (detail) {
    detail.textContent = view.error == null ? `Output channel ${view.channel}, not quantized yet.`
      : `Output channel ${view.channel}: ${measure} ${view.error.toExponential(2)} (the heatmap's measure, this channel only).`
        + (view.notes.length ? ` ${view.notes.map((n) => `Note: ${n}.`).join(' ')}` : '');
  }
  Object.assign(figure.dataset, {
    channel: String(view.channel), table: JSON.stringify(table), quantized: JSON.stringify(values),
    outliers: String(outliers.size), error: view.error ?? '', weighted: String(view.weighted),
  });
  show(figure, svg, fingerprint([picture.name, view.channel, ...view.before.slice(0, 16), ...(view.after ?? []), ...table]));
}

/// One layer's weights before (bars, coloured by Fisher) and after (line) quantization, with the
/// chosen channel's table as dashed rules. `picture` comes from `Lab.layerPicture` or
/// `Lab.requantizeLayer`.
export function drawHistogram(figure, picture) {
  remember(figure, () => drawHistogramNow(figure, picture));
}

function drawHistogramNow(figure, picture) {
  const { edges } = picture;
  const domain = [edges[0], edges[edges.length - 1]];
  const bins = picture.before.map((count, i) => ({ x1: edges[i], x2: edges[i + 1], count, fisher: picture.fisher_mean?.[i] }));
  const marks = [
    Plot.rectY(bins, {
      x1: 'x1', x2: 'x2', y: 'count', inset: 0,
      fill: picture.fisher_mean ? (d) => (d.fisher > 0 ? d.fisher : null) : BAR,
      title: (d) => `${d.x1.toPrecision(3)} … ${d.x2.toPrecision(3)}: ${d.count} weights`
        + (d.fisher > 0 ? `, mean Fisher ${d.fisher.toExponential(2)}` : ''),
    }),
    Plot.ruleY([0]),
  ];
  if (picture.after) {
    const after = picture.after.map((count, i) => ({ x: (edges[i] + edges[i + 1]) / 2, count }));
    marks.push(Plot.lineY(after, { x: 'x', y: 'count', curve: 'step', stroke: ACCENT, strokeWidth: 1.5 }));
  }
  if (picture.centroids) {
    const inside = picture.centroids.filter((c) => c >= domain[0] && c <= domain[1]);
    marks.push(Plot.ruleX(inside, { stroke: '#1d2330', strokeDasharray: '3,3', strokeOpacity: 0.7 }));
  }
  // Weights beyond the drawn range (the rarest 0.05 % at each end) are counted, not hidden.
  const tails = picture.below + picture.above;
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 260,
    marginLeft: 52,
    subtitle: tails > 0 ? `${picture.below} weights below and ${picture.above} above the range shown (${(100 * tails / (picture.rows * picture.cols)).toFixed(2)} %)` : undefined,
    x: { domain, label: 'weight value →', grid: false },
    y: { type: 'sqrt', label: '↑ weights per bin (√ scale)', grid: true },
    color: picture.fisher_mean ? { type: 'log', scheme: 'viridis', legend: true, label: 'mean Fisher information in the bin' } : undefined,
    marks,
  });
  figure.dataset.tails = tails;
  figure.dataset.bits = picture.bits ?? '';
  figure.dataset.mse = picture.mse ?? '';
  show(figure, svg, fingerprint([picture.name, picture.bits, ...(picture.after ?? []), ...(picture.centroids ?? [])]));
}

/// QuIP's incoherence processing on one layer (`Lab.incoherencePicture`): its Hessian's
/// eigenvalues and diagonal (`spectrumFigure`) and its weights (`rotationFigure`), before and
/// after, each normalised (by the mean, by the RMS) so the shapes compare.
export function drawIncoherence(spectrumFigure, rotationFigure, picture) {
  remember(spectrumFigure, () => drawSpectrumNow(spectrumFigure, picture));
  remember(rotationFigure, () => drawRotationNow(rotationFigure, picture));
}

function drawSpectrumNow(figure, picture) {
  const series = (side, label) => [
    ...picture[side].eigenvalues.map((v, i) => ({ kind: 'eigenvalues', series: `eigenvalues, ${label}`, rank: i + 1, v })),
    ...picture[side].diagonal.map((v, i) => ({ kind: 'diagonal', series: `diagonal, ${label}`, rank: i + 1, v })),
  ];
  // A log axis has no room for zero or (rounding-)negative eigenvalues: they are left out and counted.
  const all = [...series('before', 'before'), ...series('after', 'after')];
  const points = all.filter((p) => p.v > 0);
  const { before, after } = picture;
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 260,
    marginLeft: 56,
    grid: true,
    subtitle: `${picture.name}: eigenvector incoherence μ_H ${before.mu_h.toFixed(1)} → ${after.mu_h.toFixed(1)}`
      + (points.length < all.length ? ` (${all.length - points.length} values ≤ 0 not shown)` : ''),
    x: { label: 'rank (largest first) →', type: 'log' },
    y: { label: '↑ value / mean (log scale)', type: 'log', tickFormat: '~g' },
    color: { legend: true, domain: ['eigenvalues, before', 'eigenvalues, after', 'diagonal, before', 'diagonal, after'], range: [BAR, ACCENT, '#3b5b92', '#a8321a'] },
    marks: [
      Plot.line(points.filter((p) => p.kind === 'eigenvalues'), { x: 'rank', y: 'v', stroke: 'series', strokeWidth: 1.5 }),
      Plot.dot(points.filter((p) => p.kind === 'diagonal'), { x: 'rank', y: 'v', stroke: 'series', r: 1.5 }),
    ],
  });
  figure.dataset.muBefore = before.mu_h;
  figure.dataset.muAfter = after.mu_h;
  show(figure, svg, fingerprint([picture.name, before.mu_h, after.mu_h, ...before.diagonal.slice(0, 8)]));
}

function drawRotationNow(figure, picture) {
  const { edges, before, after } = picture;
  const bins = before.weights.map((count, i) => ({ x1: edges[i], x2: edges[i + 1], count }));
  const line = after.weights.map((count, i) => ({ x: (edges[i] + edges[i + 1]) / 2, count }));
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 260,
    marginLeft: 52,
    subtitle: `largest |w| / RMS ${before.peak.toFixed(1)} → ${after.peak.toFixed(1)}; weight incoherence μ_W ${before.mu_w.toFixed(1)} → ${after.mu_w.toFixed(1)}`,
    x: { domain: [edges[0], edges[edges.length - 1]], label: 'weight / RMS →' },
    y: { type: 'symlog', label: '↑ weights per bin (log scale)', grid: true, ticks: [0, 1, 10, 100, 1e3, 1e4, 1e5, 1e6].filter((t) => t <= Math.max(...before.weights, ...after.weights) * 2), tickFormat: '~s' },
    marks: [
      Plot.rectY(bins, { x1: 'x1', x2: 'x2', y: 'count', inset: 0, fill: BAR, title: (d) => `${d.x1.toFixed(2)} … ${d.x2.toFixed(2)}: ${d.count} weights before` }),
      Plot.lineY(line, { x: 'x', y: 'count', curve: 'step', stroke: ACCENT, strokeWidth: 1.5 }),
      Plot.ruleY([0]),
    ],
  });
  figure.dataset.peakBefore = before.peak;
  figure.dataset.peakAfter = after.peak;
  figure.dataset.counted = after.weights.reduce((a, b) => a + b, 0);
  show(figure, svg, fingerprint([picture.name, before.peak, after.peak, ...after.weights]));
}

/// SmoothQuant's picture: a layer's input channel ranges before and after smoothing.
export function drawActivations(figure, picture) {
  remember(figure, () => drawActivationsNow(figure, picture));
}

function drawActivationsNow(figure, picture) {
  const points = (values, series) => values.map((v, channel) => ({ channel, v, series })).filter((p) => p.v > 0);
  const peak = (values) => Math.max(...values) / (values.reduce((a, b) => a + b, 0) / values.length);
  const [before, after] = [peak(picture.before), peak(picture.after)];
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 240,
    marginLeft: 52,
    grid: true,
    subtitle: `${picture.layer}: largest channel / mean channel ${before.toFixed(1)} → ${after.toFixed(1)} (α = ${picture.alpha})`,
    x: { label: 'input channel →' },
    y: { label: '↑ max |x| (log scale)', type: 'log', tickFormat: '~g' },
    color: { legend: true, domain: ['measured', 'after SmoothQuant'], range: [BAR, ACCENT] },
    marks: [
      Plot.line(points(picture.before, 'measured'), { x: 'channel', y: 'v', stroke: 'series', strokeWidth: 1 }),
      Plot.line(points(picture.after, 'after SmoothQuant'), { x: 'channel', y: 'v', stroke: 'series', strokeWidth: 1 }),
    ],
  });
  figure.dataset.peakBefore = before;
  figure.dataset.peakAfter = after;
  show(figure, svg, fingerprint([picture.layer, picture.alpha, ...picture.after.slice(0, 8)]));
}

/// Where the sparse outliers of one layer sit: a dot per weight kept exactly.
export function drawOutliers(figure, picture) {
  remember(figure, () => drawOutliersNow(figure, picture));
}

function drawOutliersNow(figure, picture) {
  const n = picture.outlier_rows.length;
  figure.dataset.outliers = String(n);
  if (n === 0) {
    clearPlot(figure, picture.bits ? `No sparse outliers in ${picture.name}: set Outliers % above 0 and quantize again.` : undefined);
    figure.dataset.outliers = '0';
    return;
  }
  const points = picture.outlier_rows.map((row, i) => ({ row, col: picture.outlier_cols[i] }));
  const width = widthOf(figure);
  const svg = Plot.plot({
    width,
    height: Math.max(180, Math.min(320, Math.round((width * picture.rows) / picture.cols) + 60)),
    marginLeft: 52,
    x: { domain: [0, picture.cols], label: `output channel (of ${picture.cols}) →` },
    y: { domain: [picture.rows, 0], label: `↓ input row (of ${picture.rows})` },
    marks: [
      Plot.frame({ stroke: '#dde2ea' }),
      Plot.dot(points, { x: 'col', y: 'row', r: 1.6, fill: ACCENT, title: (d) => `row ${d.row}, channel ${d.col}` }),
    ],
  });
  show(figure, svg, fingerprint([picture.name, n]));
  figure.dataset.outliers = String(n);
}

/// Vector tables (`--vector-dim`): one table's weight pairs as dots, its codebook entries as
/// crosses with their Voronoi cells (the region each entry codes), and dashed lines where a scalar
/// table of the same bits per weight would cut the plane: its cells are the rectangles of a
/// product grid, the vector codebook's follow the cloud. `picture.vectors` from the wasm
/// (lutlab_core::plot_data::vectors).
export function drawVectors(figure, picture) {
  remember(figure, () => drawVectorsNow(figure, picture));
}

function drawVectorsNow(figure, picture) {
  const v = picture.vectors;
  if (!v) {
    figure.dataset.entries = '0';
    clearPlot(figure, picture.bits ? `${picture.name} has scalar tables: choose "vectors of 2" (or 4) and quantize again to see vector tables.` : undefined);
    return;
  }
  const pair = (flat) => Array.from({ length: flat.length / 2 }, (_, i) => ({ x: flat[2 * i], y: flat[2 * i + 1], i }));
  const points = pair(v.points).map((p) => ({ ...p, code: v.codes[p.i] }));
  const entries = pair(v.entries);
  // The scalar table's cell edges: midpoints between neighbouring levels, on both axes.
  const cuts = v.scalar_levels.slice(1).map((l, i) => (l + v.scalar_levels[i]) / 2);
  const xs = d3.extent([...points.map((p) => p.x), ...entries.map((e) => e.x)]);
  const ys = d3.extent([...points.map((p) => p.y), ...entries.map((e) => e.y)]);
  const width = Math.min(widthOf(figure), 560);
  const shared = v.channels_per_table === 1 ? `output channel ${picture.channel}'s table` : `table ${v.table} (${v.channels_per_table} channels)`;
  const coordinates = v.dim === 2 ? 'each dot a pair of neighbouring input rows' : 'each dot the first two of 4 neighbouring input rows (a projection)';
  const svg = Plot.plot({
    width,
    height: Math.round(width * 0.8),
    marginLeft: 56,
    subtitle: `${picture.name}, ${shared}: ${points.length} vectors drawn, ${coordinates}; ${entries.length} entries`,
    x: { domain: xs, label: 'weight of row 2k →' },
    y: { domain: ys, label: '↑ weight of row 2k + 1' },
    color: { type: 'categorical', scheme: 'tableau10' },
    marks: [
      Plot.frame({ stroke: '#dde2ea' }),
      Plot.dot(points, { x: 'x', y: 'y', r: 1.4, fill: (p) => p.code % 10, fillOpacity: 0.55 }),
      Plot.voronoiMesh(entries, { x: 'x', y: 'y', stroke: '#1d2330', strokeOpacity: 0.55 }),
      Plot.ruleX(cuts, { stroke: ACCENT, strokeDasharray: '4,3', strokeOpacity: 0.8 }),
      Plot.ruleY(cuts, { stroke: ACCENT, strokeDasharray: '4,3', strokeOpacity: 0.8 }),
      Plot.dot(entries, { x: 'x', y: 'y', symbol: 'times', r: 4, stroke: '#1d2330', strokeWidth: 1.8, title: (e) => `entry ${e.i}: (${e.x.toPrecision(3)}, ${e.y.toPrecision(3)})` }),
    ],
  });
  const detail = figure.querySelector('figcaption .detail');
  if (detail) {
    detail.textContent = `On these vectors the codebook's squared error per weight is ${v.vector_mse.toExponential(2)}, a scalar table's `
      + `${v.scalar_mse.toExponential(2)} (${(v.scalar_mse / v.vector_mse).toFixed(2)}× as large).`;
  }
  Object.assign(figure.dataset, { entries: String(entries.length), points: String(points.length), vectorMse: String(v.vector_mse), scalarMse: String(v.scalar_mse) });
  show(figure, svg, fingerprint([picture.name, v.table, ...v.entries.slice(0, 16)]));
}

/// Perplexity against bits per weight (or packed file size) for the session's runs: a line per
/// method and setting, the original's perplexity as a dashed rule.
/// `expected` (optional): the size-budget candidates' expected perplexity, `{ points: [{
/// bits_per_weight, file_bytes, perplexity }], kappa, evaluations, text }`, drawn dotted.
export function drawPerplexity(figure, runs, xAxis = 'bits', expected = undefined) {
  const session = [...runs]; // the runs so far (the page's array grows)
  remember(figure, () => drawPerplexityNow(figure, session, xAxis, expected));
}

function drawPerplexityNow(figure, runs, xAxis, expected) {
  const bySize = xAxis === 'size';
  const quantized = runs.filter((r) => r.series && (bySize ? r.file_bytes > 0 : true));
  // The f32 baseline: the original with f32 inputs (an original with quantized inputs is a row of
  // the table, not a line of this picture of weight size).
  const originals = runs.filter((r) => !r.series && !r.inputs);
  if (quantized.length === 0) {
    clearPlot(figure);
    return;
  }
  const x = bySize ? (r) => r.file_bytes / 1e6 : (r) => r.bits_per_weight;
  const points = quantized.map((r) => ({ ...r, x: x(r), line: `${r.series} · ${r.text}` }))
    .sort((a, b) => a.line.localeCompare(b.line) || a.x - b.x);
  const baselines = [...new Map(originals.map((r) => [r.text, r])).values()];
  const curve = (expected?.points ?? []).filter((p) => Number.isFinite(x(p)));
  if (expected) figure.dataset.expected = JSON.stringify(expected);
  else delete figure.dataset.expected;
  // One perplexity alone (a single run, no baseline) gives a zero-height axis: open it by ±2%.
  const ys = [...points, ...baselines, ...curve].map((r) => r.perplexity);
  const [yMin, yMax] = d3.extent(ys);
  const yDomain = yMax - yMin > 1e-9 * Math.abs(yMax) ? undefined : [0.98 * yMin, 1.02 * yMax];
  const svg = Plot.plot({
    width: widthOf(figure),
    height: 280,
    marginLeft: 56,
    grid: true,
    x: { label: bySize ? 'packed file size (MB) →' : 'bits per weight (codes, tables, outliers) →', nice: true, tickFormat: '.4~r' },
    y: { label: '↑ perplexity (lower is better)', nice: true, zero: false, domain: yDomain, tickFormat: '.4~r' },
    color: { legend: true },
    marks: [
      Plot.ruleY(baselines, { y: 'perplexity', stroke: '#5b6577', strokeDasharray: '5,4' }),
      Plot.text(baselines, { y: 'perplexity', frameAnchor: 'right', dy: -7, text: (r) => `original f32 · ${r.text}: ${r.perplexity.toFixed(2)}`, fill: '#5b6577' }),
      Plot.line(points, { x: 'x', y: 'perplexity', stroke: 'line', marker: 'circle', tip: true,
        title: (r) => `${r.model}\n${r.bits_per_weight.toFixed(3)} bits/weight · perplexity ${r.perplexity.toFixed(3)}` }),
      // The budget's expected perplexity: the estimate of each allocation, scaled by κ.
      Plot.line(curve, { x, y: 'perplexity', stroke: '#b45309', strokeDasharray: '2,3', strokeWidth: 2 }),
      Plot.text(curve.slice(Math.floor(curve.length / 3), Math.floor(curve.length / 3) + 1), { x, y: 'perplexity', dx: 6, dy: -10, textAnchor: 'start', fill: '#b45309',
        text: () => `expected under the budget slider: f32 · exp(κ · estimate), κ = ${expected.kappa.toPrecision(3)} from ${expected.evaluations} evaluation${expected.evaluations > 1 ? 's' : ''}` }),
    ],
  });
  show(figure, svg, fingerprint([...points, ...curve].map((p) => `${p.x ?? x(p)}:${p.perplexity}`)));
}
