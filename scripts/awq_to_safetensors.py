#!/usr/bin/env python3
"""Rewrites llm-awq's search results (the .pt file `python -m awq.entry --run_awq --dump_awq`
writes) as the safetensors file `lutlab quantize --load-awq` reads (crates/lutlab-core/src/awq.rs):

- `scale.{i}`: f32 `[channels]`, the i-th searched scale; `__metadata__["awq_scales"]` lists them
  in order as JSON `{"prev_op": name, "layers": [names], "tensor": "scale.{i}"}`;
- `clip.{layer}`: f32 `[out, groups]`, llm-awq's `max_val` (saved `[out, groups, 1]`).

Names stay llm-awq's, which are the checkpoint's (`model.decoder.layers.0.fc1`). Needs torch
(to unpickle the .pt) and safetensors; run it where llm-awq ran.

    python3 scripts/awq_to_safetensors.py awq_cache/opt-6.7b-w4-g128.pt opt-6.7b-awq.safetensors
"""
import json
import sys

import numpy as np
import torch
from safetensors.numpy import save_file


def main(source, target):
    results = torch.load(source, map_location="cpu")
    tensors, listing = {}, []
    for i, (prev_op, layers, scales) in enumerate(results.get("scale", [])):
        name = f"scale.{i}"
        tensors[name] = scales.float().reshape(-1).numpy().astype(np.float32)
        listing.append({"prev_op": prev_op, "layers": list(layers), "tensor": name})
    for layer, max_val in results.get("clip", []):
        max_val = max_val.float()
        tensors[f"clip.{layer}"] = max_val.reshape(max_val.shape[0], max_val.shape[1]).numpy().astype(np.float32)
    save_file(tensors, target, metadata={"awq_scales": json.dumps(listing), "source": source})
    print(f"{target}: {len(listing)} scales, {len(results.get('clip', []))} clipped layers")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
