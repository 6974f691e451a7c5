// "See the difference in words": the original and the quantized model continue one prompt side by
// side, greedily or by seeded sampling, with the same kernels the perplexity uses. Fills
// <section id="generate">; main.js hands over the lab and its one-action-at-a-time runner.

import { ProgressBar } from './progress.js';

const DEFAULT_PROMPT = 'The game was released in';

const MARKUP = `
  <h2>See the difference in words</h2>
  <p class="explain">Both models continue your prompt, one token at a time. <b>Greedy</b> takes the most likely next
    token, so the two texts part ways exactly where quantization changed the model's first choice. <b>Sampled</b>
    draws each token at random from the model's probabilities (temperature: below 1 sharper, above 1 flatter; top-k:
    only the k most likely tokens); the same seed gives both models the same random draws.</p>
  <label for="gen-prompt">Prompt</label>
  <textarea id="gen-prompt" rows="2"></textarea>
  <div class="text-choice" role="radiogroup" aria-label="How to choose each token">
    <label><input type="radio" name="gen-mode" value="greedy" checked> greedy</label>
    <label><input type="radio" name="gen-mode" value="sampled"> sampled</label>
  </div>
  <div class="settings">
    <label>Temperature <input id="gen-temperature" type="number" min="0.05" max="5" step="0.05" value="0.8" disabled></label>
    <label>Top-k <input id="gen-top-k" type="number" min="0" step="1" value="40" disabled title="0: every token"></label>
    <label>Seed <input id="gen-seed" type="number" min="0" step="1" value="0" disabled></label>
    <label>New tokens <input id="gen-max-new" type="number" min="1" max="256" step="1" value="24"></label>
  </div>
  <button id="run-generate" disabled>Generate</button>
  <button id="cancel-generate" class="secondary" disabled>Cancel</button>
  <div id="generate-progress" class="progress" hidden><div class="bar"><span></span></div><p class="label"></p></div>
  <p id="generate-message" class="status" aria-live="polite"></p>
  <div id="generate-outputs" class="gen-outputs" hidden>
    <figure class="gen-output" id="gen-original"><figcaption></figcaption><p class="gen-text"></p><small></small></figure>
    <figure class="gen-output" id="gen-quantized"><figcaption></figcaption><p class="gen-text"></p><small></small></figure>
  </div>`;

// Layout of this section only (the page's stylesheet belongs to the page).
const STYLE = `
  #generate .gen-outputs { display: grid; grid-template-columns: repeat(auto-fit, minmax(16rem, 1fr)); gap: 1rem; margin-top: 0.8rem; }
  #generate .gen-output { margin: 0; border: 1px solid #dde2ea; border-radius: 6px; padding: 0.5rem 0.8rem; min-height: 6rem; }
  #generate figcaption { font-weight: 600; }
  #generate .gen-text { white-space: pre-wrap; line-height: 1.5; }
  #generate .gen-prompt { color: #5b6577; }
  #generate .gen-diverged { background: #fff3c4; }
  #generate small { color: #5b6577; font-variant-numeric: tabular-nums; }
  #generate #cancel-generate { background: white; color: var(--accent); }
  #generate #cancel-generate:disabled { color: #b9c3d6; }
  #generate textarea { font: inherit; }
  #generate .gen-outputs[hidden] .gen-output { display: grid; place-items: center; color: #5b6577; border-style: dashed; font-size: 0.9rem; }
  #generate .gen-outputs[hidden] .gen-output > * { display: none; }
  #generate .gen-outputs[hidden] #gen-original::before { content: "The original model's continuation"; }
  #generate .gen-outputs[hidden] #gen-quantized::before { content: "The quantized model's continuation"; }`;

/// Builds the section and wires it. `lab()`: the page's Lab (null until it opens); `action(work)`:
/// main.js's runner (one action at a time, errors shown on the page); `ready()`: whether a model
/// is loaded and nothing else runs.
export function initGenerate({ lab, action, ready }) {
  let section = document.getElementById('generate');
  if (!section) {
    section = document.createElement('section');
    section.id = 'generate';
    document.querySelector('main')?.append(section);
  }
  section.innerHTML = MARKUP;
  // Inside another step's section (the page's layout may nest it), a sub-heading.
  if (section.parentElement?.closest('section')) {
    const heading = section.querySelector('h2');
    heading.replaceWith(Object.assign(document.createElement('h3'), { textContent: heading.textContent }));
  }
  section.setAttribute('aria-label', 'See the difference in words');
  const style = document.createElement('style');
  style.textContent = STYLE;
  document.head.append(style);
  const $ = (id) => section.querySelector(`#${id}`);
  $('gen-prompt').value = DEFAULT_PROMPT;
  const bar = new ProgressBar($('generate-progress'));
  let running = false;

  const sampled = () => section.querySelector('input[name=gen-mode]:checked').value === 'sampled';
  const setIf = (element, disabled) => { if (element.disabled !== disabled) element.disabled = disabled; };
  const refresh = () => {
    setIf($('run-generate'), running || !ready());
    setIf($('cancel-generate'), !running);
    for (const id of ['gen-temperature', 'gen-top-k', 'gen-seed']) setIf($(id), !sampled());
  };
  for (const radio of section.querySelectorAll('input[name=gen-mode]')) radio.onchange = refresh;
  // main.js toggles its controls whenever work starts or ends, or a model arrives: follow along.
  new MutationObserver((records) => {
    if (records.some((r) => !section.contains(r.target))) refresh();
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['disabled'] });

  const settings = () => {
    const request = { max_new_tokens: Number($('gen-max-new').value) };
    if (!Number.isInteger(request.max_new_tokens) || request.max_new_tokens < 1) throw new Error('New tokens: give a whole number of at least 1.');
    if (sampled()) {
      Object.assign(request, { temperature: Number($('gen-temperature').value), top_k: Number($('gen-top-k').value), seed: Number($('gen-seed').value) });
      if (!Number.isInteger(request.top_k) || request.top_k < 0) throw new Error('Top-k: give a whole number (0 for every token).');
      if (!Number.isInteger(request.seed) || request.seed < 0) throw new Error('Seed: give a whole number of 0 or more.');
    }
    return request;
  };

  async function generate() {
    const prompt = $('gen-prompt').value;
    const request = settings();
    running = true;
    refresh();
    try {
      bar.start('generating');
      delete section.dataset.report;
      const report = await lab().generate(prompt, request, (done, total) => bar.count(done, total, 'tokens'));
      bar.complete(`done: ${report.sampling}`);
      show(prompt, report);
      section.dataset.report = JSON.stringify(report);
    } catch (e) {
      bar.fail(e?.kind === 'cancelled');
      throw e;
    } finally {
      running = false;
      refresh();
    }
  }

  function show(prompt, report) {
    $('generate-message').textContent = report.message ?? '';
    $('generate-outputs').hidden = false;
    const both = report.original && report.quantized;
    // Highlight from the first token the models disagree on (whole tokens: the shared tokens'
    // text, when it is a prefix of the quantized text; else the shared characters).
    const shared = both ? report.shared_text ?? '' : '';
    const agreeChars = !both ? Infinity
      : report.quantized.text.startsWith(shared) ? shared.length : commonPrefix(report.original.text, report.quantized.text);
    fill($('gen-original'), prompt, report.original, Infinity, 'original (f32): not loaded');
    fill($('gen-quantized'), prompt, report.quantized, agreeChars, 'quantized: nothing yet');
    if (both) {
      const agree = report.shared_tokens;
      const n = report.quantized.tokens.length;
      const tokens = (k) => (k === 1 ? 'token' : `${k} tokens`);
      $('generate-message').textContent = agree === n && agree === report.original.tokens.length
        ? `The two models wrote the same ${n} tokens.`
        : agree === 0 ? 'The quantized model chose a different first token.'
          : `The two models agree on the first ${tokens(agree)}; the highlight marks where the quantized model's text departs.`;
    }
  }

  function fill(figure, prompt, continuation, agreeChars, missing) {
    const [caption, text, note] = [figure.querySelector('figcaption'), figure.querySelector('.gen-text'), figure.querySelector('small')];
    text.replaceChildren();
    if (!continuation) {
      caption.textContent = missing;
      note.textContent = '';
      return;
    }
    caption.textContent = continuation.label;
    const span = (content, className) => Object.assign(document.createElement('span'), { textContent: content, className });
    text.append(span(prompt, 'gen-prompt'), span(continuation.text.slice(0, agreeChars), ''));
    if (agreeChars < continuation.text.length) text.append(span(continuation.text.slice(agreeChars), 'gen-diverged'));
    note.textContent = `${continuation.tokens.length} tokens in ${continuation.seconds.toFixed(1)} s, `
      + `${continuation.tokens_per_s.toFixed(1)} tokens/s${continuation.note ? ` · ${continuation.note}` : ''}`;
  }

  $('run-generate').onclick = () => action(generate);
  $('cancel-generate').onclick = () => lab()?.cancel();
  refresh();
}

/// How many leading elements (tokens, or characters) two sequences share.
function commonPrefix(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i += 1;
  return i;
}
