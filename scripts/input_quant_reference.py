#!/usr/bin/env python3
"""Independent numpy reference of lutlab's input (activation) quantization (issue 19, item 1).

Writes tests/fixtures/input_quant_reference.json: for each case, the settings, the input rows,
(static cases) the calibration windows and the averaged scale and zero point, and the
fake-quantized output. Written from Brevitas' definitions, not from lutlab's code:

- int grids: signed [-2^(b-1), 2^(b-1)-1] with scale = absmax / 2^(b-1) (Brevitas' full-range
  scaling), unsigned [0, 2^b-1] with scale = (max(x,0) - min(x,0)) / (2^b - 1) and
  zero point = -low/scale; q = clip(round_half_even(x/scale + zp)); out = (q - zp)*scale;
- minifloats: every finite value of sign/exponent/mantissa enumerated from the format's
  definition (OCP: bias 2^(E-1)-1, E4M3 loses only its top NaN code, E5M2 its top binade;
  FNUZ: bias 2^(E-1)), nearest value with ties to the even code, saturating;
- static: the 99.999th percentile (Brevitas' AbsPercentile, k = floor(p/100*n + 0.5)) of each
  calibration window, averaged over windows; dynamic: absmax/min-max; mse: the first minimum of
  the squared error over clipping ranges alpha*[low, high], alpha = 1, 0.99, ..., 0.01;
- po2 scales round up to a power of two; a zero/subnormal/inf scale becomes 1.

All arithmetic on values, scales and zero points is float32, as lutlab's.

    python3 scripts/input_quant_reference.py [--out tests/fixtures/input_quant_reference.json]
"""
import argparse
import json
import math
import os

import numpy as np

F = np.float32


def minifloat_values(e_bits, m_bits, variant):
    """Finite non-negative magnitudes, indexed by code (sign bit clear)."""
    bias = 2 ** (e_bits - 1) - 1 if variant == "ocp" else 2 ** (e_bits - 1)
    out = []
    for code in range(2 ** (e_bits + m_bits)):
        exp, man = code >> m_bits, code & (2 ** m_bits - 1)
        top = exp == 2 ** e_bits - 1
        if variant == "ocp" and e_bits + m_bits == 7:
            if e_bits == 4 and top and man == 2 ** m_bits - 1:
                break  # E4M3FN: only S.1111.111 is NaN
            if e_bits == 5 and top:
                break  # E5M2: IEEE Inf/NaN binade
        if exp == 0:
            v = man * 2.0 ** (1 - bias - m_bits)
        else:
            v = (2 ** m_bits + man) * 2.0 ** (exp - bias - m_bits)
        out.append(v)
    return np.array(out, dtype=np.float64)


def parse_format(fmt):
    if fmt == "int":
        return None
    variant = "ocp"
    if fmt.startswith("fnuz_"):
        variant, fmt = "fnuz", fmt[5:]
    e, m = fmt[1:].split("m")
    return int(e), int(m), variant


def sane(s):
    s = F(s)
    return s if (np.isfinite(s) and s >= np.finfo(np.float32).tiny) else F(1.0)


def po2_ceil(s):
    e = math.frexp(float(s))  # s = mant * 2^exp, mant in [0.5, 1)
    return F(s) if e[0] == 0.5 else F(2.0 ** e[1])


class Quantizer:
    def __init__(self, case):
        self.bits = case["bits"]
        self.sym = case["symmetric"]
        self.po2 = case["scale_type"] == "po2"
        self.fmt = parse_format(case["format"])
        self.int_zp = case["integer_zero_point"]
        if self.fmt is None:
            self.qmin, self.qmax = (-(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1) if self.sym else (0, 2 ** self.bits - 1)
            self.divisor = F(2 ** (self.bits - 1)) if self.sym else F(self.qmax)
        else:
            self.mags = minifloat_values(*self.fmt)
            self.divisor = F(self.mags[-1])

    def restrict(self, s):
        s = sane(s)
        return po2_ceil(s) if self.po2 else s

    def params(self, low, high):
        if self.sym:
            return self.restrict(F(high) / self.divisor), F(0.0)
        scale = self.restrict(F(F(high) - F(low)) / self.divisor)
        zp = F(-F(low) / scale)
        return scale, F(0.0) if zp == 0 else zp

    def dequant(self, x, scale, zp):
        x = x.astype(np.float32)
        if self.fmt is None:
            q = np.clip(np.round(x / scale + zp), self.qmin, self.qmax).astype(np.float32)
            return ((q - zp) * scale).astype(np.float32)
        y = (x / scale).astype(np.float32)
        a = np.abs(y).astype(np.float64)
        d = np.abs(a[:, None] - self.mags[None, :])
        best = d.min(axis=1, keepdims=True)
        ties = d == best
        idx = np.array([np.flatnonzero(t)[0] if t.sum() == 1 else [k for k in np.flatnonzero(t) if k % 2 == 0][0] for t in ties])
        above = a > self.mags[-1]
        idx[above] = len(self.mags) - 1
        v = self.mags[idx].astype(np.float32) * np.sign(y).astype(np.float32)
        return (v * scale).astype(np.float32)

    def range(self, x, percentile=None):
        x = x.astype(np.float32)
        n = x.size
        if percentile is None:
            if self.sym:
                return F(0.0), F(np.abs(x).max(initial=0.0))
            return F(min(x.min(), 0.0)), F(max(x.max(), 0.0))
        k_high = int(math.floor(0.01 * percentile * n + 0.5))
        kth = lambda v, k: F(np.sort(v)[min(max(k, 1), n) - 1])
        if self.sym:
            return F(0.0), kth(np.abs(x), k_high)
        k_low = int(math.ceil(0.01 * (100.0 - percentile) * n))
        return F(min(kth(x, k_low), 0.0)), F(max(kth(x, k_high), 0.0))

    def estimate(self, x, method, percentile=None):
        low, high = self.range(x, percentile)
        scale, zp = self.params(low, high)
        if method == "mse":
            best = math.inf
            for k in range(100, 0, -1):
                alpha = F(k) / F(100)
                s, z = self.params(alpha * low, alpha * high)
                err = x.astype(np.float64) - self.dequant(x, s, z).astype(np.float64)
                loss = float(np.sum(err * err))
                if loss < best:
                    best, scale, zp = loss, s, z
        if self.int_zp:
            zp = F(np.round(zp)) + F(0.0)
        return scale, zp


def run_case(case, rng):
    q = Quantizer(case)
    rows, n_in = case["rows"], case["n_in"]
    x = (rng.standard_normal((rows, n_in)) * rng.uniform(0.1, 3.0, size=(1, n_in))).astype(np.float32)
    x[0, 3] = 40.0  # an outlier channel, as transformers' activations have
    x[:, 5] = 0.0  # a dead channel
    case["x"] = x.ravel().tolist()
    gran, scaling = case["granularity"], case["scaling"]
    if scaling == "static":
        windows = [(rng.standard_normal((rows, n_in)) * 2.0).astype(np.float32) for _ in range(3)]
        stats = [q.estimate(w.ravel(), case["method"], 99.999 if case["method"] == "stats" else None) for w in windows]
        scale = F(np.mean([float(s) for s, _ in stats]))
        zp = F(np.mean([float(z) for _, z in stats]))
        if q.po2:
            scale = po2_ceil(scale)
        if q.int_zp:
            zp = F(np.round(zp)) + F(0.0)
        case["windows"] = [w.ravel().tolist() for w in windows]
        case["params"] = [float(scale), float(zp)]
        out = q.dequant(x.ravel(), scale, zp)
    elif scaling == "no_scale":
        out = q.dequant(x.ravel(), F(1.0), F(0.0))
    else:
        g = {"per_tensor": rows * n_in, "per_row": n_in}.get(gran) or case["group_size"]
        flat = x.ravel()
        out = np.concatenate([q.dequant(c, *q.estimate(c, case["method"])) for c in np.split(flat, flat.size // g)])
    case["out"] = (out.ravel() + F(0.0)).tolist()  # lutlab writes zero as +0
    return case


CASES = [
    dict(name="int8 asym dynamic per-row", bits=8, format="int", symmetric=False, granularity="per_row", scaling="dynamic", method="stats"),
    dict(name="int8 sym dynamic per-tensor po2", bits=8, format="int", symmetric=True, granularity="per_tensor", scaling="dynamic", method="stats", scale_type="po2"),
    dict(name="int4 asym dynamic groups of 16, integer zero point", bits=4, format="int", symmetric=False, granularity="per_group", group_size=16, scaling="dynamic", method="stats", integer_zero_point=True),
    dict(name="int6 asym dynamic per-row mse", bits=6, format="int", symmetric=False, granularity="per_row", scaling="dynamic", method="mse"),
    dict(name="e4m3 dynamic per-row", bits=8, format="e4m3", symmetric=True, granularity="per_row", scaling="dynamic", method="stats"),
    dict(name="e2m1 dynamic groups of 32 mse", bits=4, format="e2m1", symmetric=True, granularity="per_group", group_size=32, scaling="dynamic", method="mse"),
    dict(name="fnuz e5m2 no scale", bits=8, format="fnuz_e5m2", symmetric=True, granularity="per_tensor", scaling="no_scale", method="stats"),
    dict(name="int8 asym static percentile", bits=8, format="int", symmetric=False, granularity="per_tensor", scaling="static", method="stats"),
    dict(name="int8 sym static mse po2", bits=8, format="int", symmetric=True, granularity="per_tensor", scaling="static", method="mse", scale_type="po2"),
    dict(name="e4m3 static percentile", bits=8, format="e4m3", symmetric=True, granularity="per_tensor", scaling="static", method="stats"),
]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "input_quant_reference.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(19)
    cases = []
    for c in CASES:
        c = dict(dict(rows=4, n_in=64, scale_type="float", integer_zero_point=False, group_size=0), **c)
        cases.append(run_case(c, rng))
    with open(args.out, "w") as f:
        json.dump({"generator": "scripts/input_quant_reference.py", "cases": cases}, f)
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
