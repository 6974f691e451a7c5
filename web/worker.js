// The wasm module and the GPU live here, in a dedicated Web Worker, so parsing a model, CPU
// k-means and the waits on the GPU never block the page. The page talks to it through
// lab-client.js with typed messages:
//
//   page → worker  { type: 'open' }                       open the GPU
//                  { type: 'call', id, method, args }     a Lab method or a free function
//                  { type: 'cancel' }                     stop the running work at its next step
//                  { type: 'lose-device' }                tests: destroy the GPU device now
//   worker → page  { type: 'opened', device, maxBindingBytes } | { type: 'failed', error }
//                  { type: 'lost', error }                the GPU device was lost (any time)
//                  { type: 'progress', id, done, total }
//                  { type: 'result', id, value } | { type: 'error', id, error: { kind, message } }
//
// An error's `kind` is its type, never guessed from the wording: `cancelled` and `gpu-lost` from
// the `name` Rust gives the error (lab.rs `work_error`), `crashed` when the module trapped (a
// Rust panic: its state is gone, so the page starts a new worker), else `error`.

import init, { Lab, lastPanic, checkConfigFits, shardFiles } from './pkg/lutlab_wasm.js';

const FREE_FUNCTIONS = { checkConfigFits, shardFiles };
/// Arguments that stand for a progress callback: `(done, total)` goes back as a message.
const PROGRESS = '__lutlab_progress__';

let lab = null;
let crashed = null; // the panic's message once the module trapped

function describe(e) {
  if (e instanceof WebAssembly.RuntimeError) {
    crashed = lastPanic() ?? e.message;
    return { kind: 'crashed', message: crashed };
  }
  const kind = { Cancelled: 'cancelled', GpuLost: 'gpu-lost' }[e?.name] ?? 'error';
  return { kind, message: e?.message ?? String(e) };
}

/// Blobs (the page keeps a model's files as Blobs, to reload them after a lost GPU) become the
/// Uint8Arrays the wasm API takes, at any depth of plain objects and arrays.
async function materialize(value, id) {
  if (value === PROGRESS) return (done, total) => postMessage({ type: 'progress', id, done, total });
  if (value instanceof Blob) return new Uint8Array(await value.arrayBuffer());
  if (Array.isArray(value)) return Promise.all(value.map((v) => materialize(v, id)));
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const entries = await Promise.all(Object.entries(value).map(async ([k, v]) => [k, await materialize(v, id)]));
    return Object.fromEntries(entries);
  }
  return value;
}

/// Large byte results move to the page instead of being copied.
function transferables(value) {
  if (value instanceof Uint8Array || value instanceof Uint32Array) return [value.buffer];
  if (value?.bytes instanceof Uint8Array) return [value.bytes.buffer];
  return [];
}

async function call({ id, method, args }) {
  if (crashed) {
    postMessage({ type: 'error', id, error: { kind: 'crashed', message: crashed } });
    return;
  }
  try {
    const free = FREE_FUNCTIONS[method];
    if (!free && typeof lab?.[method] !== 'function') throw new Error(`the lab has no method \`${method}\``);
    const resolved = await materialize(args, id);
    const value = await (free ? free(...resolved) : lab[method](...resolved));
    postMessage({ type: 'result', id, value }, transferables(value));
  } catch (e) {
    postMessage({ type: 'error', id, error: describe(e) });
  }
}

self.onmessage = async ({ data }) => {
  switch (data.type) {
    case 'open':
      try {
        await init();
        lab = await Lab.open();
        // A loss is news even while nothing runs (a driver reset, another tab's GPU crash).
        lab.webgpuDevice?.lost.then((info) => postMessage({ type: 'lost', error: { kind: 'gpu-lost', message: `the GPU was lost (${info.reason}): ${info.message || 'no reason given'}` } }));
        postMessage({ type: 'opened', device: lab.device, maxBindingBytes: lab.maxBindingBytes });
      } catch (e) {
        postMessage({ type: 'failed', error: describe(e) });
      }
      break;
    case 'call':
      await call(data);
      break;
    case 'cancel':
      lab?.cancel();
      break;
    case 'lose-device':
      lab?.loseDevice();
      break;
    default:
      console.warn(`lutlab worker: unknown message type ${data.type}`);
  }
};
