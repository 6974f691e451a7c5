#!/usr/bin/env python3
"""Sums cubecl's per-kernel profile log (issue 10's "profile that limits it"): run lutlab in a
directory holding a cubecl.toml with

    [profiling.logger]
    level = "basic"
    file = "cubecl.log"

(cubecl then waits for each kernel and logs its time), then

    python3 scripts/cubecl_profile.py cubecl.log [--wall SECONDS]

prints each kind of kernel (hashes and matmul template arguments folded) with its count, total
time and share, as one JSON line and a Markdown table. --wall: the run's wall-clock seconds, to
show how much of it the kernels account for.
"""
import argparse, json, re
from collections import defaultdict

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def kind(name):
    parts = [p.strip() for p in name.split("|") if p.strip()]
    if parts and parts[0] == "MatmulEntry":
        family = next((p for p in parts if p.endswith("MatmulFamily")), "matmul")
        return f"matmul ({family})"
    return " ".join(re.sub(r"_[0-9a-f]{8}$", "", p) for p in parts[:2])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("--wall", type=float)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    totals, counts = defaultdict(float), defaultdict(int)
    for line in open(args.log, encoding="utf-8", errors="replace"):
        m = re.match(r"\|\s*([\d.]+)\s*(ns|µs|us|ms|s)\s*\|\s*(.+)$", line)
        if not m:
            continue
        k = kind(m.group(3))
        totals[k] += float(m.group(1)) * UNITS[m.group(2)]
        counts[k] += 1
    total = sum(totals.values())
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    print(json.dumps({"kernels_seconds": total, "launches": sum(counts.values()), "wall_seconds": args.wall,
                      "by_kind": [{"kind": k, "count": counts[k], "seconds": s} for k, s in rows]}))
    print(f"\n{sum(counts.values())} kernel launches, {total:.3f} s of kernel time"
          + (f" in {args.wall:.3f} s of wall clock" if args.wall else ""))
    print("\n| kernel | launches | seconds | share |\n| --- | --- | --- | --- |")
    for k, s in rows[:args.top]:
        print(f"| {k} | {counts[k]} | {s:.4f} | {100 * s / total:.1f} % |")


if __name__ == "__main__":
    main()
