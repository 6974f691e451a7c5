// A progress bar with a label: bytes with speed for downloads, counts with rate and time left
// for GPU work, and an optional cancel button (a `.cancel` button inside the bar's root) that is
// live only while the bar's work runs. The root keeps its space when idle (style.css), so
// starting work does not shift the page.

const MB = 1024 * 1024;

/// "42 s", "3 min 5 s", "9 h 55 min" (past an hour the seconds are noise).
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export class ProgressBar {
  /// `onCancel`: what the cancel button does (e.g. `() => lab.cancel()`).
  constructor(root, onCancel) {
    this.root = root;
    this.fill = root.querySelector('.bar span');
    this.label = root.querySelector('.label');
    this.cancelButton = root.querySelector('.cancel');
    // The bar itself is the progressbar (not the root: a progressbar's children are
    // presentational, so the cancel button inside would be hidden from assistive technology),
    // named by its label; the label is not a live region, which would speak every tick.
    this.bar = root.querySelector('.bar');
    this.label.id ||= `${root.id}-label`;
    this.bar.setAttribute('role', 'progressbar');
    this.bar.setAttribute('aria-labelledby', this.label.id);
    this.bar.setAttribute('aria-valuemin', '0');
    this.bar.setAttribute('aria-valuemax', '100');
    if (this.cancelButton) {
      this.cancelButton.onclick = () => {
        this.cancelButton.disabled = true;
        this.label.textContent += ' cancelling…';
        onCancel?.();
      };
    }
  }

  /// Starts a bar for `what`; `estimate` (seconds, optional) gives the time left until the
  /// first count arrives. The label ticks every 250 ms (elapsed time, time left) even while a
  /// long GPU batch keeps the counts still.
  start(what, { estimate } = {}) {
    this.what = what;
    this.estimate = estimate;
    this.last = null;
    this.started = performance.now();
    clearInterval(this.ticker);
    this.ticker = setInterval(() => this.last && this.render(), 250);
    this.root.hidden = false;
    this.active = true;
    this.root.dataset.state = 'running';
    if (this.cancelButton) this.cancelButton.disabled = false;
    this.set(0, `${what}…`);
  }

  set(fraction, text) {
    const percent = Math.min(100, Math.max(0, fraction * 100));
    this.fill.style.width = `${percent.toFixed(1)}%`;
    this.bar.setAttribute('aria-valuenow', percent.toFixed(0));
    this.label.textContent = text;
  }

  seconds() {
    return Math.max(1e-3, (performance.now() - this.started) / 1000);
  }

  /// Download progress: "name 12.3 / 14.5 MB · 8.1 MB/s".
  bytes(received, total) {
    const speed = received / MB / this.seconds();
    const size = total ? `${(received / MB).toFixed(1)} / ${(total / MB).toFixed(1)} MB` : `${(received / MB).toFixed(1)} MB`;
    const left = total && speed > 0 ? ` · ${duration((total - received) / MB / speed)} left` : '';
    this.set(total ? received / total : 0, `${this.what} ${size} · ${speed.toFixed(1)} MB/s${left}`);
  }

  /// Work progress: "perplexity 1,024 / 8,192 tokens · 310 tokens/s · 22 s left · 3 s elapsed".
  count(done, total, unit) {
    this.last = { done, total, unit };
    this.render();
  }

  render() {
    const { done, total, unit } = this.last;
    const elapsed = this.seconds();
    const rate = done / elapsed;
    let left = 'estimating time left…';
    if (rate > 0) left = `${duration((total - done) / rate)} left`;
    else if (this.estimate) left = `about ${duration(Math.max(0, this.estimate - elapsed))} left (estimated)`;
    this.set(total ? done / total : 0,
      `${this.what} ${done.toLocaleString()} / ${total.toLocaleString()} ${unit} · ${Math.round(rate).toLocaleString()} ${unit}/s · ${left} · ${duration(elapsed)} elapsed`);
  }

  finish(text) {
    this.set(1, text);
  }

  /// The work is over: later failures no longer concern this bar.
  complete(text) {
    this.finish(text);
    this.stop('done');
  }

  /// Marks unfinished work as failed (the error itself is shown elsewhere), or with `stopped`
  /// as stopped by the user: a neutral end, not an error.
  fail(stopped) {
    if (this.active) {
      this.label.textContent = stopped ? `${this.what}: stopped; earlier results kept.` : `${this.label.textContent} stopped.`;
      this.stop(stopped ? 'stopped' : 'failed');
    }
  }

  stop(state) {
    clearInterval(this.ticker);
    this.last = null;
    this.active = false;
    this.root.dataset.state = state;
    if (this.cancelButton) this.cancelButton.disabled = true;
  }
}
