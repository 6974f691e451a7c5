// Time estimates shown before a long step starts. A window of L tokens costs a + b·L seconds on
// this GPU: a fixed part (kernel launches, the per-window read-back; it dominates short windows on
// a software GPU) and a part per token. A probe of two short windows when a model loads measures
// a and b; each finished run of a step then scales that model by what the step really took (so
// Fisher's backward pass, or the memory traffic of long windows, is learned, not guessed).

import { duration } from './progress.js';

/// A step's cost relative to a forward pass, used until the step itself has run once: Fisher
/// adds the backward pass (about twice the forward), the Hessians one x xᵀ per linear input.
const RELATIVE_COST = { forward: 1, fisher: 3, hessians: 2, means: 1.2 };

export class SpeedBook {
  constructor() {
    this.reset();
  }

  /// A new model or GPU: earlier measurements no longer apply.
  reset() {
    this.window = null; // { a, b }: seconds of one forward window of L tokens, a + b·L
    this.scale = new Map(); // step -> measured seconds over the model's prediction
  }

  /// The probe: one forward window of `short` tokens took `shortSeconds`, one of `long` tokens
  /// `longSeconds`.
  probe(short, shortSeconds, long, longSeconds) {
    const b = Math.max(0, (longSeconds - shortSeconds) / (long - short));
    this.window = { a: Math.max(0, shortSeconds - b * short), b };
  }

  predicted(windows, length) {
    return windows * (this.window.a + this.window.b * length);
  }

  /// A finished run of `step`: `windows` windows of `length` tokens in `seconds`.
  record(step, seconds, windows, length) {
    if (this.window && windows > 0 && seconds > 0) this.scale.set(step, seconds / this.predicted(windows, length));
  }

  /// `{ seconds, measured }` for `windows` windows of `length` tokens of `step`, or null before
  /// the probe.
  estimate(step, windows, length) {
    if (!this.window) return null;
    const measured = this.scale.has(step);
    return { seconds: (measured ? this.scale.get(step) : RELATIVE_COST[step]) * this.predicted(windows, length), measured };
  }

  /// Seconds one forward window of `length` tokens takes (0 before the probe).
  windowSeconds(length) {
    return this.window ? (this.scale.get('forward') ?? 1) * this.predicted(1, length) : 0;
  }
}

/// "about 2 min 10 s on this GPU (from …)", or what the estimate waits for.
export function estimateText(estimate) {
  if (!estimate) return 'time on this GPU: measuring it…';
  const basis = estimate.measured ? 'from the last run of this step' : 'from a short probe of this GPU';
  return `about ${duration(Math.max(1, estimate.seconds))} on this GPU (${basis})`;
}
