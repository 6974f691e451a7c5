#!/usr/bin/env python3
"""Issue 10's goals from one run of scripts/bench_suite.sh: reads its JSON files in DIR and prints
a Markdown table (lutlab, peer, ratio, goal, met) and writes DIR/ratios.json.

    python3 scripts/bench_ratios.py /tmp/lutlab-bench
"""
import json, sys
from pathlib import Path

FISHER_WINDOWS_GOAL = 128  # the pipeline: Fisher on 128 windows of 1024 tokens
WIKITEXT2_TEST_TOKENS = 295_877  # GPT-2's tokenizer on WikiText-2 test (the shipped tokenizer is GPT-2's)


def lines(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.startswith("{")]


def kernel(rows, name, shape, tokens=1):
    for k in rows:
        if k["kernel"] == name and k.get("tokens", 1) == tokens and (shape is None or (k["rows"], k["cols"]) == shape):
            return k
    raise SystemExit(f"no `{name}` {shape} x {tokens} in the run")


def main():
    out = Path(sys.argv[1])
    ours = lines(out / "kernels.json")[0]["kernels"]
    peers = lines(out / "peers.json")[0]["kernels"]
    pipe = lines(out / "pipeline_124m.json")[0]
    shipped = lines(out / "pipeline_shipped.json")[0]
    fisher_peer = lines(out / "fisher_peer_124m.json")[0]
    eval_peer = {e["engine"]: e for e in lines(out / "eval_peer_124m.json")}
    sklearn = lines(out / "sklearn_124m.json")[0]
    shape = (4096, 11008)
    lut4 = kernel(ours, "lut gemv 4-bit", shape)
    torch16 = kernel(peers, "torch f16 gemv", shape)
    copy = kernel(peers, "torch copy", None, tokens=1) if any(k["kernel"] == "torch copy" for k in peers) else None
    our_copy = kernel(ours, "copy", None, tokens=0)
    gemm4 = kernel(ours, "lut gemm 4-bit", shape, tokens=512)
    gemm16 = kernel(peers, "torch f16 gemm", shape, tokens=512)
    gemm32 = kernel(peers, "torch f32 gemm", shape, tokens=512)
    burn_gemm = kernel(ours, "burn f32 gemm", shape, tokens=512)
    f32_peer = eval_peer["pytorch eager float32"]
    n = pipe["fisher_tokens"] // 1024
    projected = (pipe["fisher_seconds"] * FISHER_WINDOWS_GOAL / n + pipe["kmeans_seconds"] + pipe["pack_seconds"]
                 + pipe["upload_seconds"] + WIKITEXT2_TEST_TOKENS / pipe["packed_eval_tokens_per_s"])
    rows = [
        ("4-bit LUT GEMV 4096×11008 vs torch f16 GEMV", f"{lut4['micros']:.1f} µs", f"{torch16['micros']:.1f} µs",
         torch16["micros"] / lut4["micros"], "≥ 3× faster", torch16["micros"] / lut4["micros"] >= 3),
        ("4-bit LUT GEMV, share of copy bandwidth (torch copy)", f"{lut4['gb_per_s']:.0f} GB/s", f"{copy['gb_per_s']:.0f} GB/s",
         lut4["gb_per_s"] / copy["gb_per_s"], "≥ 0.75", lut4["gb_per_s"] / copy["gb_per_s"] >= 0.75),
        ("k-means, all GPT-2 linears, 4-bit per channel, vs sklearn", f"{pipe['kmeans_seconds']:.2f} s", f"{sklearn['extrapolated_seconds']:.0f} s",
         sklearn["extrapolated_seconds"] / pipe["kmeans_seconds"], "≥ 100× and < 5 s",
         sklearn["extrapolated_seconds"] / pipe["kmeans_seconds"] >= 100 and pipe["kmeans_seconds"] < 5),
        ("k-means objective / sklearn's (mean over sampled channels)", f"{sklearn.get('objective_ratio_mean', float('nan')):.3f}", "1",
         sklearn.get("objective_ratio_mean", float("nan")), "≤ 1", sklearn.get("objective_ratio_mean", 9) <= 1.0 + 1e-3),
        ("Fisher tokens/s vs PyTorch eager f32", f"{pipe['fisher_tokens_per_s']:.0f}", f"{fisher_peer['tokens_per_s']:.0f}",
         pipe["fisher_tokens_per_s"] / fisher_peer["tokens_per_s"], "≥ 1", pipe["fisher_tokens_per_s"] >= fisher_peer["tokens_per_s"]),
        ("packed 4-bit eval tokens/s vs PyTorch eager f32", f"{pipe['packed_eval_tokens_per_s']:.0f}", f"{f32_peer['tokens_per_s']:.0f}",
         pipe["packed_eval_tokens_per_s"] / f32_peer["tokens_per_s"], "≥ 1", pipe["packed_eval_tokens_per_s"] >= f32_peer["tokens_per_s"]),
        (f"whole pipeline, measured ({n} Fisher windows, {pipe['eval_scored_tokens']} eval tokens)", f"{pipe['pipeline_seconds']:.1f} s", "—",
         None, "—", None),
        (f"whole pipeline, projected to 128 windows and all of WikiText-2 test", f"{projected:.1f} s", "—", 10.0 / projected, "< 10 s", projected < 10),
    ]
    extra = [
        ("4-bit LUT GEMM, 512 tokens, 4096×11008, vs torch f16 GEMM", f"{gemm4['micros']:.0f} µs", f"{gemm16['micros']:.0f} µs", gemm16["micros"] / gemm4["micros"]),
        ("4-bit LUT GEMM vs torch f32 GEMM (same)", f"{gemm4['micros']:.0f} µs", f"{gemm32['micros']:.0f} µs", gemm32["micros"] / gemm4["micros"]),
        ("burn f32 GEMM (the dense layers) vs torch f32 GEMM", f"{burn_gemm['micros']:.0f} µs", f"{gemm32['micros']:.0f} µs", gemm32["micros"] / burn_gemm["micros"]),
        ("our copy kernel vs torch copy", f"{our_copy['gb_per_s']:.0f} GB/s", f"{copy['gb_per_s']:.0f} GB/s", our_copy["gb_per_s"] / copy["gb_per_s"]),
        ("dense eval tokens/s vs PyTorch eager f32", f"{pipe['dense_eval_tokens_per_s']:.0f}", f"{f32_peer['tokens_per_s']:.0f}", pipe["dense_eval_tokens_per_s"] / f32_peer["tokens_per_s"]),
        ("packed 4-bit eval tokens/s vs PyTorch eager f16", f"{pipe['packed_eval_tokens_per_s']:.0f}", f"{eval_peer['pytorch eager float16']['tokens_per_s']:.0f}",
         pipe["packed_eval_tokens_per_s"] / eval_peer["pytorch eager float16"]["tokens_per_s"]),
        ("shipped model pipeline (128 × 256 Fisher, all of test)", f"{shipped['pipeline_seconds']:.1f} s", "—", None),
    ]
    print(f"device: {ours and lines(out / 'kernels.json')[0]['device']}; torch: {lines(out / 'peers.json')[0]['device']}\n")
    print("| goal | lutlab | peer | ratio (≥ 1 is lutlab ahead) | target | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    fmt = lambda r: "—" if r is None else f"{r:.3g}"
    for what, a, b, r, target, met in rows:
        print(f"| {what} | {a} | {b} | {fmt(r)} | {target} | {'—' if met is None else ('yes' if met else 'no')} |")
    print("\n| also measured | lutlab | peer | ratio |")
    print("| --- | --- | --- | --- |")
    for what, a, b, r in extra:
        print(f"| {what} | {a} | {b} | {fmt(r)} |")
    json.dump({"goals": [dict(zip(("what", "lutlab", "peer", "ratio", "target", "met"), r)) for r in rows],
               "also": [dict(zip(("what", "lutlab", "peer", "ratio"), r)) for r in extra]},
              open(out / "ratios.json", "w"), indent=1)


if __name__ == "__main__":
    main()
