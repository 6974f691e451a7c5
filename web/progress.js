// A progress bar with a label: bytes with speed for downloads, counts with rate and time left
// for GPU work.

const MB = 1024 * 1024;

export class ProgressBar {
  constructor(root) {
    this.root = root;
    this.fill = root.querySelector('.bar span');
    this.label = root.querySelector('.label');
  }

  start(what) {
    this.what = what;
    this.started = performance.now();
    this.root.hidden = false;
    this.active = true;
    this.set(0, `${what}…`);
  }

  set(fraction, text) {
    this.fill.style.width = `${Math.min(100, Math.max(0, fraction * 100)).toFixed(1)}%`;
    this.label.textContent = text;
  }

  seconds() {
    return Math.max(1e-3, (performance.now() - this.started) / 1000);
  }

  /// Download progress: "name 12.3 / 14.5 MB · 8.1 MB/s".
  bytes(received, total) {
    const speed = received / MB / this.seconds();
    const size = total ? `${(received / MB).toFixed(1)} / ${(total / MB).toFixed(1)} MB` : `${(received / MB).toFixed(1)} MB`;
    this.set(total ? received / total : 0, `${this.what} ${size} · ${speed.toFixed(1)} MB/s`);
  }

  /// Work progress: "perplexity 1,024 / 8,192 tokens · 310 tokens/s · 22 s left".
  count(done, total, unit) {
    const rate = done / this.seconds();
    const left = rate > 0 ? `${Math.ceil((total - done) / rate)} s left` : '';
    this.set(total ? done / total : 0,
      `${this.what} ${done.toLocaleString()} / ${total.toLocaleString()} ${unit} · ${Math.round(rate).toLocaleString()} ${unit}/s · ${left}`);
  }

  finish(text) {
    this.set(1, text);
  }

  /// The work is over: later failures no longer concern this bar.
  complete(text) {
    this.finish(text);
    this.active = false;
  }

  /// Marks unfinished work as stopped (the error itself is shown elsewhere).
  fail() {
    if (this.active) this.label.textContent += ' stopped.';
    this.active = false;
  }
}
