#!/usr/bin/env python3
"""Perplexity of an ONNX language model (`lutlab export --onnx-qcdq`) under onnxruntime on the CPU.

GPTQ's protocol, as `lutlab eval --max-length L --stride L`: non-overlapping windows of L tokens,
the tail shorter than a window dropped, every token of a window but its first scored, the
log-softmax taken in float64. Token ids come from a JSON list (the model's tokenizer, as
transformers' `tokenizer(text).input_ids` or lutlab's gives them). Prints one JSON line.

    python3 scripts/onnx_perplexity.py model.onnx --tokens ids.json --max-length 256
"""
import argparse
import json
import math

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--tokens", required=True, help="JSON list of token ids")
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--batch", type=int, default=8, help="windows per run")
    p.add_argument("--check", action="store_true", help="first run onnx's checker with shape inference (needs the onnx package)")
    args = p.parse_args()
    if args.check:
        import onnx

        onnx.checker.check_model(onnx.load(args.model), full_check=True)

    ids = np.asarray(json.load(open(args.tokens)), dtype=np.int64)
    n = len(ids) // args.max_length
    if n == 0:
        raise SystemExit(f"{len(ids)} tokens: fewer than one window of {args.max_length}")
    windows = ids[: n * args.max_length].reshape(n, args.max_length)
    options = ort.SessionOptions()
    # Basic optimizations fold the constant weight subgraphs once. The extended ones would also
    # rewrite DequantizeLinear -> MatMul into onnxruntime's integer kernels, which quantize the
    # activations too (measured: logits moved by 0.23 on the shipped GPT-2): another model.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    nll, scored = 0.0, 0
    for start in range(0, n, args.batch):
        batch = windows[start : start + args.batch]
        logits = session.run(["logits"], {"input_ids": batch})[0].astype(np.float64)
        predicted, targets = logits[:, :-1], batch[:, 1:]
        top = predicted.max(axis=-1, keepdims=True)
        log_total = np.log(np.exp(predicted - top).sum(axis=-1)) + top[..., 0]
        chosen = np.take_along_axis(predicted, targets[..., None], axis=-1)[..., 0]
        nll += float((log_total - chosen).sum())
        scored += targets.size
    print(json.dumps({"perplexity": math.exp(nll / scored), "nll_sum": nll, "scored": scored, "windows": n, "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
