#!/usr/bin/env python3
"""An independent packer, written from docs/FORMAT.md alone (not from lutlab's code): makes a tiny
random GPT-2, packs its linear layers into a `lutlab-packed` version-1 file, and writes the dense
model the packed file stands for (docs/FORMAT.md §4-§6: table value + sparse corrections, then
scales, and the input shift folded into the bias). tests/packer_oracle.rs checks that lutlab reads
the file to exactly these weights and runs it through its LUT kernels to the dense model's logits.

The layers cover the format's cases: 3 bits (codes crossing u32 words), 4 and 5 bits, padding
rows (48 inputs: the second block of 32 is half padding), one table per output channel, per
group of channels and per matrix, F16 and F32 tables, a sparse part, scales and an input shift.

It then writes the same model as a version-4 file (`v4/`, docs/FORMAT.md §2): `wte` rounded to
f16 and one bias drawn exact in bf16 but not in f16, every dense tensor stored in the smallest
dtype that holds it exactly (F16, else BF16, else F32), chosen here by the document's rule, with
a safetensors writer of its own (numpy has no bfloat16).

    python3 scripts/pack_reference.py tests/fixtures/packer_oracle
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

CONFIG = {
    "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_head": 4, "n_embd": 48,
    "n_positions": 32, "vocab_size": 96, "n_inner": 192, "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new", "tie_word_embeddings": True,
}
C, F, V, P = CONFIG["n_embd"], CONFIG["n_inner"], CONFIG["vocab_size"], CONFIG["n_positions"]
rng = np.random.default_rng(2026)


def pack_codes(codes, bits):
    """§3: per column, blocks of 32 rows, each block `bits` u32 words read as one little-endian
    bit string, code i at bits i*bits ... (padding rows code 0)."""
    rows, cols = codes.shape
    blocks = (rows + 31) // 32
    words = np.zeros((blocks * bits, cols), dtype=np.uint32)
    for c in range(cols):
        for k in range(blocks):
            string = 0
            for i in range(32):
                r = 32 * k + i
                if r < rows:
                    string |= int(codes[r, c]) << (i * bits)
            for j in range(bits):
                words[k * bits + j, c] = (string >> (32 * j)) & 0xFFFFFFFF
    return words


def pack_layer(name, w, bits, channels_per_table, table_dtype, sparse_share=0.0, scaled=False):
    """A uniform table per group of `channels_per_table` output columns (min..max of its
    weights), nearest-entry codes, the largest errors kept as sparse corrections; returns the
    packed tensors and the dense weight and bias-shift they stand for."""
    rows, cols = w.shape
    levels = 2 ** bits
    tables = []
    codes = np.zeros((rows, cols), dtype=np.int64)
    for t in range(cols // channels_per_table):
        block = w[:, t * channels_per_table:(t + 1) * channels_per_table]
        table = np.linspace(block.min(), block.max(), levels).astype(table_dtype).astype(np.float32)
        tables.append(table)
        codes[:, t * channels_per_table:(t + 1) * channels_per_table] = np.abs(block[:, :, None] - table[None, None, :]).argmin(axis=2)
    lut = np.stack(tables)
    value = lut[np.arange(cols)[None, :] // channels_per_table, codes]  # §4
    tensors = {f"{name}.qweight": pack_codes(codes, bits), f"{name}.lut": lut.astype(table_dtype)}
    if sparse_share > 0:
        # §5: compressed sparse columns, rows ascending; value = w - table value there.
        error = np.abs(w - value)
        keep = error >= np.quantile(error, 1 - sparse_share)
        col_ptr, row_idx, values = [0], [], []
        for c in range(cols):
            for r in np.nonzero(keep[:, c])[0]:
                row_idx.append(r)
                values.append(w[r, c] - value[r, c])
            col_ptr.append(len(row_idx))
        tensors[f"{name}.sparse_col_ptr"] = np.array(col_ptr, dtype=np.uint32)
        tensors[f"{name}.sparse_row_idx"] = np.array(row_idx, dtype=np.uint32)
        tensors[f"{name}.sparse_values"] = np.array(values, dtype=np.float32)
        value = value + np.where(keep, w - value, 0).astype(np.float32)
    shift = np.zeros(rows, dtype=np.float32)
    if scaled:
        # §6: y = s ⊙ ((x − μ) · W) + b  ==  x · (s ⊙ W) + (b − μ · (s ⊙ W)).
        s = rng.uniform(0.5, 1.5, cols).astype(np.float32)
        shift = rng.normal(0, 0.1, rows).astype(np.float32)
        tensors[f"{name}.scales"] = s
        tensors[f"{name}.input_shift"] = shift
        value = (value * s[None, :]).astype(np.float32)
    meta = {"rows": rows, "cols": cols, "bits": bits, "channels_per_table": channels_per_table}
    return tensors, meta, value.astype(np.float32), (shift.astype(np.float64) @ value.astype(np.float64)).astype(np.float32)


def bf16_bits(values):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def smallest_exact_dtype(values):
    """§2, version 4: F16 if every value is exactly an f16 (bit for bit), else BF16 if every value
    is exactly a bf16 (its low 16 bits are zero), else F32."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if np.array_equal(values.astype(np.float16).astype(np.float32).view(np.uint32), values.view(np.uint32)):
        return "F16"
    if not np.any(values.view(np.uint32) & 0xFFFF):
        return "BF16"
    return "F32"


def write_safetensors(path, tensors, metadata):
    """A safetensors file by hand: `tensors` maps name -> (dtype, array); F16 and F32 arrays are
    written little-endian as they are, BF16 arrays (float32 values exact in bf16) as their top
    16 bits."""
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name, (dtype, values) in sorted(tensors.items()):
        if dtype == "BF16":
            raw = bf16_bits(values).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(values, dtype={"F16": "<f2", "F32": "<f4", "U32": "<u4"}[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


def write_version_4(out, packed, dense, layers, metadata):
    """The same packed layers with 16-bit dense tensors: `wte` rounded to f16, and
    `h.1.attn.c_proj.bias` (a linear left dense) drawn ~1e-6 and rounded to bf16, which f16's
    subnormals cannot hold. Writes `out/v4/packed.safetensors` and the dense model it stands for."""
    # Neither tensor is touched by a packed layer's input shift, so the dense model holds them as
    # the file does.
    tiny = rng.normal(0, 1e-6, C).astype(np.float32)
    changed = {"wte.weight": dense["wte.weight"].astype(np.float16).astype(np.float32),
               "h.1.attn.c_proj.bias": (bf16_bits(tiny).astype(np.uint32) << 16).view(np.float32)}
    dense, packed = {**dense, **changed}, {**packed, **changed}
    tensors = {}
    for name, values in packed.items():
        if name in dense:  # a dense tensor: the smallest exact dtype
            tensors[name] = (smallest_exact_dtype(values), values)
        else:  # a packed layer's tensor, as version 1 stores it
            tensors[name] = ({np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.uint32): "U32"}[values.dtype], values)
    dtypes = {name: dtype for name, (dtype, _) in tensors.items() if name in dense}
    assert dtypes["wte.weight"] == "F16" and dtypes["h.1.attn.c_proj.bias"] == "BF16" and dtypes["ln_f.weight"] == "F32", dtypes
    (out / "v4" / "dense").mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "v4" / "packed.safetensors", tensors, {**metadata, "format_version": "4", "layers": json.dumps(layers)})
    save_file(dense, str(out / "v4" / "dense" / "model.safetensors"))
    (out / "v4" / "dense" / "config.json").write_text(json.dumps(CONFIG, indent=1) + "\n")


def main(out):
    out = Path(out)
    dense = {"wte.weight": rng.normal(0, 0.5, (V, C)), "wpe.weight": rng.normal(0, 0.1, (P, C)),
             "ln_f.weight": rng.normal(1, 0.1, C), "ln_f.bias": rng.normal(0, 0.1, C)}
    shapes = {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, F), "mlp.c_proj": (F, C)}
    for i in range(CONFIG["n_layer"]):
        for ln in ("ln_1", "ln_2"):
            dense[f"h.{i}.{ln}.weight"] = rng.normal(1, 0.1, C)
            dense[f"h.{i}.{ln}.bias"] = rng.normal(0, 0.1, C)
        for linear, shape in shapes.items():
            dense[f"h.{i}.{linear}.weight"] = rng.normal(0, 0.2, shape)
            dense[f"h.{i}.{linear}.bias"] = rng.normal(0, 0.1, shape[1])
    dense = {k: v.astype(np.float32) for k, v in dense.items()}
    # (layer, bits, channels_per_table, table dtype, sparse share, scales + input shift)
    plan = [("h.0.attn.c_attn", 3, 1, np.float16, 0.01, False), ("h.0.attn.c_proj", 4, C, np.float32, 0.0, True),
            ("h.0.mlp.c_fc", 5, 8, np.float16, 0.0, False), ("h.0.mlp.c_proj", 3, 1, np.float32, 0.02, True),
            ("h.1.attn.c_attn", 4, C, np.float16, 0.0, False)]  # h.1's other linears stay dense
    packed = {k: v for k, v in dense.items()}
    layers = {}
    for name, bits, per_table, dtype, share, scaled in plan:
        weight = packed.pop(f"{name}.weight")
        tensors, meta, value, bias_shift = pack_layer(name, weight, bits, per_table, dtype, share, scaled)
        packed.update(tensors)
        layers[name] = meta
        dense[f"{name}.weight"] = value
        dense[f"{name}.bias"] = (dense[f"{name}.bias"] - bias_shift).astype(np.float32)
    metadata = {"format": "lutlab-packed", "format_version": "1", "config": json.dumps(CONFIG), "layers": json.dumps(layers),
                "method": "pack_reference.py (independent packer)", "settings": ""}
    (out / "dense").mkdir(parents=True, exist_ok=True)
    save_file(packed, str(out / "packed.safetensors"), metadata=metadata)
    save_file(dense, str(out / "dense" / "model.safetensors"))
    (out / "dense" / "config.json").write_text(json.dumps(CONFIG, indent=1) + "\n")
    write_version_4(out, packed, dense, layers, metadata)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/packer_oracle")
