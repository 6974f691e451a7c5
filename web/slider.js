// "One layer up close": pick a layer and an output channel, see that channel's weights before and
// after quantization on its table, then the whole layer's histogram and its sparse outliers; the bit slider re-quantizes just that layer (on the GPU
// unless unticked) and redraws. Slider moves queue: while one runs, only the latest position
// waits, so dragging never piles up work.

import { clearPlot, drawChannel, drawHistogram, drawIncoherence, drawOutliers, drawVectors } from './plots.js';

const $ = (id) => document.getElementById(id);
const DEFAULT_LAYER = /mlp\.c_fc$/; // GPT-2's 768×3072 matrix: the slider's benchmark shape

export class LayerView {
  /// `lab()`: the page's Lab; `onFatal(e)`: the wasm module trapped; `isBusy()`: another step runs.
  constructor({ lab, onFatal, isBusy }) {
    Object.assign(this, { lab, onFatal, isBusy });
    this.modelBits = null; // bits of the current quantization, where the slider rests
    this.hessians = false; // whether the session has Hessians (the incoherence pictures need them)
    this.inFlight = null;
    this.pending = false;
  }

  wire() {
    $('layer-select').onchange = () => {
      this.redraw();
      this.drawIncoherence();
    };
    // Arrow keys and typing step the channel; each step redraws (only the latest waits).
    $('layer-channel').oninput = () => this.redraw();
    $('slider-bits').oninput = () => {
      $('slider-value').textContent = $('slider-bits').value;
      this.move();
    };
  }

  /// The model's layers, `[{name, rows, cols}]` from `Lab.layerList` (none for a packed file).
  setLayers(layers) {
    const select = $('layer-select');
    select.replaceChildren(...layers.map((l) => new Option(`${l.name} (${l.rows}×${l.cols})`, l.name)));
    const preferred = layers.find((l) => DEFAULT_LAYER.test(l.name)) ?? layers[0];
    if (preferred) select.value = preferred.name;
    this.layers = new Map(layers.map((l) => [l.name, l]));
    this.modelBits = null;
    this.setWidths([...$('q-bits').options].map((o) => Number(o.value))); // nothing quantized: the menu's range
    if (layers.length === 0) {
      for (const id of ['plot-channel', 'plot-histogram', 'plot-outliers', 'plot-vectors']) clearPlot($(id), 'A packed file alone has no original weights to show.');
      return;
    }
    this.redraw();
  }

  /// Hessians computed (`true`) or gone with a new model (`false`).
  setHessians(ready) {
    this.hessians = ready;
    if (ready) {
      this.drawIncoherence();
    } else {
      for (const id of ['plot-spectrum', 'plot-rotation']) clearPlot($(id));
    }
  }

  /// The chosen layer's Hessian and weights before and after QuIP's incoherence processing.
  async drawIncoherence() {
    const name = $('layer-select').value;
    if (!this.hessians || !name || !this.lab()) return;
    try {
      drawIncoherence($('plot-spectrum'), $('plot-rotation'), await this.lab().incoherencePicture(name, 0));
    } catch (e) {
      this.failed(e);
    }
  }

  refresh({ modelLoaded, quantized }) {
    $('layer-select').disabled = !modelLoaded;
    $('layer-channel').disabled = !modelLoaded;
    $('slider-bits').disabled = !quantized;
    $('slider-gpu').disabled = !quantized;
  }

  /// The GPU is emulated on the CPU (e.g. SwiftShader), where the k-means shaders, though they
  /// take a CPU-friendly path there, are still several times slower than the CPU reference
  /// (lavapipe, 768×3072 at 4 bits: 3.6 s against 0.8 s): the slider starts on the CPU reference
  /// and says so.
  softwareGpu(device) {
    $('slider-gpu').checked = false;
    $('slider-note').textContent = `${device} is a software GPU, where the k-means shaders run several times slower `
      + 'than the CPU reference: the slider runs the CPU reference (same result); tick "on the GPU" to use the shaders anyway.';
  }

  /// A new quantization at `bits`: the slider rests there and the pictures show it.
  quantized(bits) {
    this.modelBits = bits;
    $('slider-bits').value = String(bits);
    $('slider-value').textContent = String(bits);
    this.redraw();
  }

  /// Resolves when no slider move runs (the page's other steps wait for it).
  async idle() {
    while (this.inFlight) await this.inFlight;
  }

  channel(name) {
    const cols = this.layers?.get(name)?.cols ?? 1;
    const channel = Math.min(cols - 1, Math.max(0, Math.floor(Number($('layer-channel').value) || 0)));
    $('layer-channel').max = String(cols - 1);
    return channel;
  }

  /// Shows the chosen layer as the current quantization left it (or at the slider's bits when
  /// the slider has moved away from them).
  async redraw() {
    const name = $('layer-select').value;
    if (!name || !this.lab()) return;
    const sliderBits = Number($('slider-bits').value);
    if (this.modelBits !== null && sliderBits !== this.modelBits) {
      this.move();
      return;
    }
    try {
      this.draw(await this.lab().layerPicture(name, this.channel(name)));
      $('slider-readout').textContent = this.describe(this.picture, null);
    } catch (e) {
      this.failed(e);
    }
  }

  draw(picture) {
    this.picture = picture;
    drawChannel($('plot-channel'), picture);
    drawHistogram($('plot-histogram'), picture);
    drawOutliers($('plot-outliers'), picture);
    drawVectors($('plot-vectors'), picture);
    if (picture.widths) this.setWidths(picture.widths);
  }

  /// The slider ranges over the widths the quantization's settings allow (`widths`, from the
  /// wasm); where they differ from the Bits menu's, one line says why.
  setWidths(widths) {
    const slider = $('slider-bits');
    [slider.min, slider.max] = [String(widths[0]), String(widths[widths.length - 1])];
    const offered = [...$('q-bits').options].map((o) => Number(o.value));
    const same = offered.length === widths.length && offered.every((b, i) => b === widths[i]);
    const span = widths.length === 1 ? bitsText(widths[0]) : `${widths[0]} to ${widths[widths.length - 1]} bits`;
    const why = widths.length === 1 ? 'its number format fixes the width' : `its grid needs at least ${bitsText(widths[0])}`;
    $('slider-range').textContent = same ? ''
      : `The slider covers ${span}, not the Bits menu's ${offered[0]} to ${offered[offered.length - 1]}: ${why}.`;
  }

  /// Re-quantizes the layer at the slider's bits; a move during a run waits (latest only).
  move() {
    if (this.inFlight) {
      this.pending = true;
      return;
    }
    if (this.isBusy()) {
      $('slider-readout').textContent = 'Another step is running: the slider waits for it to finish.';
      return;
    }
    this.inFlight = this.requantize().finally(() => {
      this.inFlight = null;
      if (this.pending) {
        this.pending = false;
        this.move();
      }
    });
  }

  async requantize() {
    const name = $('layer-select').value;
    const bits = Number($('slider-bits').value);
    const readout = $('slider-readout');
    readout.dataset.state = 'running';
    readout.textContent = `Re-quantizing ${name} at ${bitsText(bits)}…`;
    const started = performance.now();
    try {
      const picture = await this.lab().requantizeLayer(name, bits, this.channel(name), $('slider-gpu').checked);
      this.draw(picture);
      const totalMs = performance.now() - started;
      Object.assign(readout.dataset, { bits: String(bits), ms: picture.ms.toFixed(1), totalMs: totalMs.toFixed(1), engine: picture.engine, state: 'done' });
      readout.textContent = this.describe(picture, totalMs);
    } catch (e) {
      this.failed(e);
    }
  }

  describe(picture, totalMs) {
    const parts = [];
    if (picture.bits) {
      parts.push(`${picture.name} at ${bitsText(picture.bits)}: mean squared error ${picture.mse.toExponential(2)}`
        + (picture.weighted_error !== null && picture.weighted_error !== undefined ? `, Fisher-weighted error ${picture.weighted_error.toExponential(2)}` : '')
        + `; ${picture.tables} table${picture.tables === 1 ? '' : 's'}, showing output channel ${picture.channel}'s.`);
    }
    if (totalMs !== null) {
      parts.push(`Re-quantized in ${picture.ms.toFixed(0)} ms on the ${picture.engine.toUpperCase()} (${totalMs.toFixed(0)} ms with drawing); `
        + 'a preview: the model you evaluate keeps its settings.');
    }
    parts.push(...picture.notes.map((n) => `Note: ${n}.`));
    return parts.join(' ');
  }

  failed(e) {
    if (e?.fatal) {
      this.onFatal(e);
      return;
    }
    const readout = $('slider-readout');
    readout.dataset.state = 'failed';
    readout.textContent = `Could not show this layer: ${e?.message ?? e}`;
  }
}

/// "1 bit", "4 bits".
function bitsText(bits) {
  return bits === 1 ? '1 bit' : `${bits} bits`;
}
