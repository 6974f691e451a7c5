"""Rows and summary of scripts/bench_budget.sh (issue 20, item 2).

  row MODEL NAME KIND QUANTIZE_JSON   one JSON line from a `lutlab quantize --json` result
  summary ROWS_JSONL                  markdown tables: the curves, automatic vs baselines at
                                      equal file size, and the estimate-vs-damage rank correlation
"""
import json
import sys


def row(model, name, kind, path):
    r = json.load(open(path))
    allocation = r.get("allocation") or {}
    out = {
        "model": model,
        "name": name,
        "kind": kind,
        "file_bytes": r["file_bytes"],
        "bits_per_weight": r["sizes"]["bits_per_weight"],
        "perplexity": r["eval"]["perplexity"],
        "estimated_loss": allocation.get("estimated_loss"),
        "widths": {l["name"]: l["bits"] for l in allocation.get("layers", [])},
    }
    if kind == "alone":
        # The one layer at 2 bits, and its estimate there.
        out["layer"], out["layer_estimate"] = next((l["name"], l["estimate"]) for l in allocation["layers"] if l["bits"] == 2)
    print(json.dumps(out))


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def summary(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["name"]: r for r in rows if r["model"] == model}
        print(f"\n### {model}\n")
        print("| run | file (MB) | layer bits/weight | perplexity | Fisher estimate |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in sorted((r for r in mine.values() if r["kind"] in ("uniform", "rules", "auto")), key=lambda r: r["file_bytes"]):
            est = "" if r["estimated_loss"] is None else f"{r['estimated_loss']:.4e}"
            print(f"| {r['name']} | {r['file_bytes'] / 1e6:.4f} | {r['bits_per_weight']:.3f} | {r['perplexity']:.3f} | {est} |")
        print("\nAutomatic allocation within each baseline's bytes of quantized layers:\n")
        print("| baseline | its perplexity | automatic, same layer bytes or fewer | difference | automatic at or below |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, r in mine.items():
            auto = mine.get(f"auto-at-{name}")
            if r["kind"] in ("uniform", "rules") and auto:
                diff = auto["perplexity"] - r["perplexity"]
                print(f"| {name} | {r['perplexity']:.3f} | {auto['perplexity']:.3f} ({auto['file_bytes'] / 1e6:.4f} MB) | {diff:+.3f} | {'yes' if diff <= 0 else 'no'} |")
        alone = [r for r in mine.values() if r["kind"] == "alone"]
        reference = mine.get("all-8")
        if alone and reference:
            damage = [r["perplexity"] - reference["perplexity"] for r in alone]
            estimate = [r["layer_estimate"] for r in alone]
            print(f"\nEach layer alone at 2 bits (the rest at 8 bits, perplexity {reference['perplexity']:.3f}):\n")
            print("| layer | Fisher estimate | measured perplexity damage |")
            print("| --- | ---: | ---: |")
            for r, d in sorted(zip(alone, damage), key=lambda x: -x[1]):
                print(f"| {r['layer']} | {r['layer_estimate']:.4e} | {d:+.3f} |")
            print(f"\nSpearman rank correlation, estimate vs damage, over {len(alone)} layers: {spearman(estimate, damage):.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "row":
        row(*sys.argv[2:6])
    elif sys.argv[1] == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
