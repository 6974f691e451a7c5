// The page's handle on lutlab: the Lab of crates/lutlab-wasm, running in a Web Worker
// (web/worker.js) so the page stays responsive. Every method returns a Promise; a function among
// the arguments is a progress callback `(done, total)`. Calls run one at a time, in order.
//
// A cancel answers at once: the running call rejects with a `LabError` of kind `cancelled` the
// moment the user asks, while the worker stops at its next step (the end of the GPU batch in
// flight); the next call waits for that, and `draining` says so meanwhile.

/// Why a call did not return: `kind` is `cancelled`, `gpu-lost` (the device is gone), `crashed`
/// (the wasm module trapped), or `error` (bad input or settings; the lab is fine).
export class LabError extends Error {
  constructor({ kind, message }) {
    super(message);
    this.name = 'LabError';
    this.kind = kind;
  }

  /// The worker's lab is unusable: a new one has to be opened (LabClient.open).
  get fatal() {
    return this.kind === 'gpu-lost' || this.kind === 'crashed';
  }
}

const PROGRESS = '__lutlab_progress__';

/// The wasm API, as crates/lutlab-wasm exports it (Lab methods and free functions).
const METHODS = [
  'loadModel', 'openPacked', 'tokenize', 'perplexity', 'fisher', 'hessians', 'inputMeans', 'fisherFile', 'loadFisher',
  'quantize', 'packedFile', 'layerList', 'sensitivityMap', 'errorMap', 'layerPicture', 'incoherencePicture',
  'requantizeLayer', 'generate', 'checkConfigFits', 'shardFiles', 'evaluationPlan', 'smoothing', 'allocateBudget',
  'useGpuKernels',
];

export class LabClient {
  /// Starts a worker and opens the GPU in it; rejects with a LabError when there is none.
  /// `onLost(error)` is called once if the GPU is lost, whether or not a call is running.
  static async open(onLost) {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const opened = await new Promise((resolve) => {
      worker.onmessage = ({ data }) => resolve(data);
      worker.onerror = (event) => resolve({ type: 'failed', error: { kind: 'crashed', message: `the lab's worker failed to start: ${event.message ?? 'unknown error'}` } });
      worker.postMessage({ type: 'open' });
    });
    if (opened.type !== 'opened') {
      worker.terminate();
      throw new LabError(opened.error);
    }
    return new LabClient(worker, opened, onLost);
  }

  constructor(worker, { device, maxBindingBytes }, onLost) {
    Object.assign(this, { worker, device, maxBindingBytes, onLost });
    this.pending = new Map(); // id -> { resolve, reject, onProgress }
    this.nextId = 1;
    this.queue = Promise.resolve(); // settles when the worker is free for the next call
    this.running = null; // { id, reject } of the call the worker is doing
    this.draining = false; // a cancelled call still finishing its GPU batch
    this.lost = null; // the LabError that made this lab unusable
    worker.onmessage = ({ data }) => this.receive(data);
    worker.onerror = (event) => this.fail(new LabError({ kind: 'crashed', message: `the lab's worker stopped: ${event.message ?? 'unknown error'}` }));
    for (const method of METHODS) this[method] = (...args) => this.call(method, args);
  }

  call(method, args) {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId++;
    const callbacks = args.filter((a) => typeof a === 'function');
    const message = { type: 'call', id, method, args: args.map((a) => (typeof a === 'function' ? PROGRESS : a)) };
    const result = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, onProgress: callbacks[0] }));
    // The worker's own completion (a cancelled call's result arrives later than its rejection).
    const done = new Promise((settle) => { this.pending.get(id).settle = settle; });
    const previous = this.queue;
    this.queue = previous.then(() => done);
    previous.then(() => {
      if (this.lost || this.pending.get(id)?.answered) {
        this.settle(id, this.lost); // lost, or cancelled before it started
        return;
      }
      this.running = { id };
      this.worker.postMessage(message);
    });
    return result;
  }

  /// Stops everything asked of the lab: every call's promise rejects now; the running one stops
  /// in the worker at its next step, the queued ones never start.
  cancel() {
    if (this.running) {
      this.worker.postMessage({ type: 'cancel' });
      this.draining = true;
    }
    for (const entry of this.pending.values()) {
      if (entry.answered) continue;
      entry.answered = true;
      entry.reject(new LabError({ kind: 'cancelled', message: 'stopped' }));
    }
  }

  /// For tests: destroys the GPU device now, as a driver reset would, even mid-call (it does not
  /// wait in the queue).
  loseDevice() {
    this.worker.postMessage({ type: 'lose-device' });
  }

  receive(data) {
    if (data.type === 'lost') {
      this.lost ??= new LabError(data.error);
      this.onLost?.(this.lost);
      return;
    }
    const entry = this.pending.get(data.id);
    if (!entry) return;
    if (data.type === 'progress') {
      if (!entry.answered) entry.onProgress?.(data.done, data.total);
      return;
    }
    const error = data.type === 'error' ? new LabError(data.error) : null;
    if (error?.fatal) this.lost = error;
    this.settle(data.id, error, data.value);
  }

  settle(id, error, value) {
    const entry = this.pending.get(id);
    this.pending.delete(id);
    if (this.running?.id === id) {
      this.running = null;
      this.draining = false;
    }
    if (!entry.answered) {
      if (error) entry.reject(error);
      else entry.resolve(value);
    }
    entry.settle?.();
  }

  /// The worker died: every call in flight or queued rejects with `error`.
  fail(error) {
    this.lost ??= error;
    for (const id of [...this.pending.keys()]) this.settle(id, this.lost);
  }

  /// Ends the worker (and its GPU device); the page opens a new client to go on.
  terminate() {
    this.onLost = null;
    this.fail(new LabError({ kind: 'crashed', message: 'the lab was closed' }));
    this.worker.terminate();
  }
}
