// Accessibility of the page (issue 22, item 8). axe-core's WCAG 2.x A/AA rules and its best
// practices run on the whole page once the shipped model is ready, again once a quick
// quantization and a one-window evaluation have drawn their pictures, and with an error shown; then the page is driven by keyboard alone: Tab from the top
// reaches every step's primary control in document order, each stop has an accessible name
// (Chromium's own, through the DevTools protocol) and a visible focus ring, Tab wraps around the
// page and Shift+Tab walks back (no trap), the bit slider moves with the arrow keys, and the
// error's dismiss button works with Enter and with Space.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startPage, stop, launchBrowser, openPage, evaluateInPage, shortText } from './browser.mjs';

const require = createRequire(import.meta.url);

/// The rules: every WCAG 2.0/2.1/2.2 A and AA rule axe has, and its best practices (landmarks,
/// heading order, one <h1>, ...).
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];

/// Findings that could not be fixed, each with its reason: `{ rule, target: RegExp, why }`.
/// Empty: every finding on the page has been fixed. Keep it short; README ("Accessibility") lists it.
const ALLOWED = [];

/// Each step's primary control, in the order a keyboard user meets them.
const PRIMARY_CONTROLS = ['load-shipped', 'run-fisher', 'run-quantize', 'run-eval', 'download-packed'];

let pageUrl;
let pageServer;
let browser;
let page;
let cdp;
const timings = [];

/// Runs `work`, logging how long it took under `step` (the settings are meant to be quick).
async function timed(step, work) {
  const start = Date.now();
  const result = await work();
  timings.push(`  ${step}: ${((Date.now() - start) / 1000).toFixed(1)} s`);
  return result;
}

before(async () => {
  ({ url: pageUrl, server: pageServer } = await startPage());
  browser = await launchBrowser();
  page = await openPage(browser, pageUrl);
  cdp = await page.context().newCDPSession(page);
});

after(async () => {
  console.log(`step timings in the browser (SwiftShader):\n${timings.join('\n')}`);
  await browser?.close();
  stop(pageServer);
});

/// axe's violations on the whole page, less the allowed ones, as readable lines.
async function axeViolations() {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: require.resolve('axe-core') });
  const { violations } = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags } }), AXE_TAGS);
  const lines = [];
  for (const v of violations) {
    for (const node of v.nodes) {
      const target = node.target.join(' ');
      if (ALLOWED.some((a) => a.rule === v.id && a.target.test(target))) continue;
      lines.push(`${v.id} (${v.impact}): ${v.help} — ${target}: ${node.failureSummary.replace(/\s+/g, ' ')}`);
    }
  }
  return lines;
}

/// The focused element as the keyboard user meets it: its id (or markup), Chromium's
/// accessible role and name, and whether a focus ring is drawn around it.
async function focused() {
  const { result } = await cdp.send('Runtime.evaluate', { expression: 'document.activeElement' });
  const about = await page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body || el === document.documentElement) return null;
    const style = getComputedStyle(el);
    const ring = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2 && style.outlineColor !== 'rgba(0, 0, 0, 0)')
      || style.boxShadow !== 'none';
    return { id: el.id, markup: el.outerHTML.slice(0, 100), ring, focusVisible: el.matches(':focus-visible') };
  });
  if (!about) return null;
  const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { objectId: result.objectId, fetchRelatives: false });
  await cdp.send('Runtime.releaseObject', { objectId: result.objectId });
  const node = nodes.find((n) => !n.ignored) ?? nodes[0];
  return { ...about, key: about.id || about.markup, role: node?.role?.value, name: (node?.name?.value ?? '').trim() };
}

/// Puts the keyboard's starting point at the top of the page (a click on the page's margin).
async function startAtTop() {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.mouse.click(2, 2);
}

/// Presses Tab from the top until the focus comes back to the first stop, recording every stop.
async function tabAround(limit = 400) {
  await startAtTop();
  const stops = [];
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press('Tab');
    const now = await focused();
    if (!now) continue; // the focus left the document (the browser's own UI) between rounds
    if (stops.length > 0 && now.key === stops[0].key) return { stops, wrapped: true };
    stops.push(now);
  }
  return { stops, wrapped: false };
}

/// Presses Tab (from where the focus is) until `predicate(focused)` holds; fails past `limit`.
async function tabTo(predicate, what, limit = 400) {
  for (let i = 0; i < limit; i++) {
    await page.keyboard.press('Tab');
    const now = await focused();
    if (now && predicate(now)) return now;
  }
  throw new Error(`Tab never reached ${what}`);
}

/// Whether some alert on the page shows a message.
const alertShown = () => page.evaluate(() => [...document.querySelectorAll('[role=alert]')]
  .some((e) => e.checkVisibility() && e.textContent.trim() !== ''));

test('axe finds no violations once the shipped model is ready', async () => {
  assert.deepEqual(await axeViolations(), []);
});

test('axe finds no violations once a quantization and an evaluation have drawn their pictures', async () => {
  // Round to nearest, one scale per tensor: a second on SwiftShader, and it shows the uniform options too.
  await page.selectOption('#q-method', 'rtn');
  await page.selectOption('#q-bits', '4');
  await page.selectOption('#q-granularity', 'tensor');
  await timed('quantize (round to nearest, 4 bits, per tensor)', async () => {
    await page.click('#run-quantize');
    await page.waitForSelector('#quant-result[data-report]', { timeout: 300_000 });
  });
  await page.waitForSelector('#plot-error[data-state=drawn] svg');
  await page.waitForSelector('#plot-histogram[data-state=drawn] svg');
  // The finished bar says so to assistive technology.
  assert.equal(await page.getAttribute('#quant-progress [role=progressbar]', 'aria-valuenow'), '100');
  // The quantized model on one window of a short text: the perplexity chart and the table of runs.
  await page.fill('#max-length', '64');
  await timed('evaluate, 1 window of 64 tokens', () => evaluateInPage(page, shortText(400)));
  await page.waitForSelector('#plot-ppl[data-state=drawn] svg');
  // Every drawn picture is one image named by what it shows.
  const charts = await page.$$eval('figure.plot[data-state=drawn] .chart', (els) => els.map((c) => [c.getAttribute('role'), c.getAttribute('aria-label')]));
  assert.ok(charts.length >= 3, `${charts.length} pictures drawn`); // error heatmap, layer histogram, perplexity
  for (const [role, label] of charts) {
    assert.equal(role, 'img');
    assert.ok(label && label.length > 10, `a drawn chart is named: ${label}`);
  }
  assert.match(await page.getAttribute('#plot-error .chart', 'aria-label'), /quantization error.*largest: \S+/i);
  assert.deepEqual(await timed('axe', axeViolations), []);
});

test('Tab reaches every step by name, with a visible focus ring, and wraps around (no trap)', async () => {
  const { stops, wrapped } = await tabAround();
  const listing = stops.map((s) => `${s.key} [${s.role} "${s.name}"]`).join('\n');
  assert.ok(wrapped, `Tab came back to the first control after ${stops.length} stops:\n${listing}`);
  assert.ok(stops.length >= 30, `only ${stops.length} stops:\n${listing}`);
  const positions = PRIMARY_CONTROLS.map((id) => stops.findIndex((s) => s.id === id));
  for (const [i, id] of PRIMARY_CONTROLS.entries()) assert.ok(positions[i] >= 0, `Tab never reaches #${id}:\n${listing}`);
  assert.deepEqual([...positions].sort((a, b) => a - b), positions, `primary controls in document order: ${PRIMARY_CONTROLS.join(', ')}`);
  for (const stop of stops) {
    assert.ok(stop.name, `${stop.key} (${stop.role}) has no accessible name`);
    assert.ok(stop.focusVisible && stop.ring, `${stop.key} shows no focus ring`);
  }
  // Fields are told apart by name alone (two "Window" boxes once were): a screen reader's list of fields is usable.
  const fields = stops.filter((s) => ['textbox', 'spinbutton', 'combobox', 'slider'].includes(s.role)).map((s) => s.name);
  assert.deepEqual(fields.filter((name, i) => fields.indexOf(name) !== i), [], 'fields sharing a name');
  // Shift+Tab walks the same stops backwards.
  const from = positions[2];
  await page.focus(`#${PRIMARY_CONTROLS[2]}`);
  for (let back = 1; back <= 3; back++) {
    await page.keyboard.press('Shift+Tab');
    assert.equal((await focused())?.key, stops[from - back].key, `Shift+Tab step ${back} from #${PRIMARY_CONTROLS[2]}`);
  }
});

test('the bit slider moves with the arrow keys and re-quantizes the layer', async () => {
  await startAtTop();
  const slider = await tabTo((f) => f.id === 'slider-bits', 'the bit slider');
  assert.equal(slider.role, 'slider');
  const start = Number(await page.inputValue('#slider-bits'));
  for (const [key, bits] of [['ArrowRight', start + 1], ['ArrowLeft', start]]) {
    await page.keyboard.press(key);
    await page.waitForFunction((b) => {
      const r = document.getElementById('slider-readout');
      return (r.dataset.bits === String(b) && r.dataset.state === 'done') || r.dataset.state === 'failed';
    }, bits, { timeout: 300_000 });
    assert.equal(await page.getAttribute('#slider-readout', 'data-state'), 'done', await page.textContent('#slider-readout'));
    assert.equal(await page.textContent('#slider-value'), String(bits));
  }
});

test('an error can be dismissed from the keyboard, with Enter and with Space', async () => {
  for (const key of ['Enter', 'Space']) {
    // Text under a checkpoint's name: the page refuses it and says so.
    await page.setInputFiles('#local-files', { name: 'model.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('not a model\n') });
    await page.waitForFunction(() => [...document.querySelectorAll('[role=alert]')].some((e) => e.checkVisibility() && e.textContent.trim()), null, { timeout: 60_000 });
    if (key === 'Enter') assert.deepEqual(await axeViolations(), [], 'with an error shown');
    await startAtTop();
    const dismiss = await tabTo((f) => f.role === 'button' && /dismiss|close/i.test(f.name), 'the error\'s dismiss button');
    assert.ok(dismiss.ring, 'the dismiss button shows a focus ring');
    await page.keyboard.press(key);
    assert.equal(await alertShown(), false, `${key} on "${dismiss.name}" dismisses the error`);
  }
  // The refused file changed nothing: the shipped model stays loaded.
  assert.ok(await page.getAttribute('#model-status', 'data-loaded'));
});
