#!/usr/bin/env python3
"""Prints the input-quantization quality table (BENCHMARKS.md, "Input quantization") from the rows
scripts/bench_inputs.sh writes: one line per (model, weights, inputs), one column per preparation.

    python3 scripts/bench_inputs.py /tmp/inputs/rows.jsonl
"""
import json
import sys

INPUTS = {"16": "f32", "8s": "8, static per tensor", "8d": "8, dynamic per token", "4d": "4, dynamic per token"}
PREPS = [
    ("plain", "plain"),
    ("smoothquant", "+ SmoothQuant α 0.5"),
    ("layerwise", "+ SmoothQuant layerwise"),
    ("lnmerge", "+ LN merge"),
    ("biascorr", "+ bias correction"),
]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by_key = {(r["model"], r["w"], r["a"], r["prep"]): r["perplexity"] for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("| model | weights | inputs | " + " | ".join(label for _, label in PREPS) + " |")
    print("|---|---|---|" + "---:|" * len(PREPS))
    for model in models:
        cells = sorted({(r["w"], r["a"]) for r in rows if r["model"] == model}, key=lambda wa: (-int(wa[0]), list(INPUTS).index(wa[1])))
        for w, a in cells:
            values = [by_key.get((model, w, a, prep)) for prep, _ in PREPS]
            text = ["—" if v is None else f"{v:.2f}" for v in values]
            weights = "f32" if w == "16" else f"int{w} per channel"
            print(f"| {model} | {weights} | {INPUTS[a]} | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/inputs/rows.jsonl")
