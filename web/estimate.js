// Time estimates shown before a long step starts: the work (token positions the model reads)
// times this GPU's seconds per position. The first figure comes from a short probe when a model
// loads; every finished run of a step then replaces the guess for that step with its own rate.

import { duration } from './progress.js';

/// Cost per token position of each step relative to a forward pass, used until the step itself
/// has run once: Fisher adds the backward pass (about twice the forward), the Hessians add one
/// x xᵀ per linear input, the means one sum per linear input.
const RELATIVE_COST = { forward: 1, fisher: 3, hessians: 2, means: 1.2 };

export class SpeedBook {
  constructor() {
    this.rates = new Map(); // step -> seconds per position, measured on this GPU with this model
  }

  /// A new model or GPU: earlier rates no longer apply.
  reset() {
    this.rates.clear();
  }

  record(step, seconds, positions) {
    if (positions > 0 && seconds > 0) this.rates.set(step, seconds / positions);
  }

  /// `{ seconds, measured }` for `positions` of `step`, or null before anything was measured:
  /// the step's own last rate, else the probe's forward rate times the step's relative cost.
  estimate(step, positions) {
    if (this.rates.has(step)) return { seconds: this.rates.get(step) * positions, measured: true };
    if (!this.rates.has('probe')) return null;
    return { seconds: this.rates.get('probe') * RELATIVE_COST[step] * positions, measured: false };
  }

  /// Seconds one forward window of `length` tokens takes (0 before anything was measured).
  windowSeconds(length) {
    return (this.rates.get('forward') ?? this.rates.get('probe') ?? 0) * length;
  }
}

/// "about 2 min 10 s on this GPU" (or "…, from its last run"), "time unknown until …".
export function estimateText(estimate) {
  if (!estimate) return 'time on this GPU: measured when the model has loaded';
  const basis = estimate.measured ? 'from the last run of this step' : 'from a short probe of this GPU';
  return `about ${duration(Math.max(1, estimate.seconds))} on this GPU (${basis})`;
}
