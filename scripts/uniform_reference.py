#!/usr/bin/env python3
"""Independent reference for lutlab's uniform quantizers (issue 8), written from the formats'
specifications with numpy only (no Brevitas, no PyTorch needed; runs on any CPU).

Reads two real weight slices of the shipped model (f16 safetensors, parsed by hand) and writes
tests/fixtures/uniform_reference.json with, for every case, the codes, scales and zero points
(and for the FP8/FP4 cases the dequantized values), which
crates/lutlab-core/tests/uniform.rs compares with lutlab's Rust quantizer bit for bit.
scripts/uniform_reference_torch.py computes the same cases with PyTorch (FP8 through PyTorch's
own float8 casts) into tests/fixtures/uniform_reference_torch.json, checked the same way.

    python3 scripts/uniform_reference.py [--model models/gpt2-tiny-wikitext] \
        [--out tests/fixtures/uniform_reference.json]

Definitions (the contract both sides implement; see crates/lutlab-core/src/quant/uniform/):

Layout. Weights are GPT-2 Conv1D [in, out] row-major; an output channel is a column.
    granularity tensor: one group; channel: one per column; group:G: G consecutive input
    rows within one column (Brevitas' per_group), groups numbered (row // G) * cols + col;
    channel-group:G: G consecutive columns. A group's values are taken in row-major order.

Integer grids. symmetric: signed q in [-2^(b-1), 2^(b-1) - 1], zero point 0, D = 2^(b-1)
    (Brevitas' full-range signed int scaling, narrow_range=False). asymmetric: unsigned
    q in [0, 2^b - 1], D = 2^b - 1, float zero point zp (not rounded).
    q = clip(rint(w / scale + zp), qmin, qmax) in float32 (rint = round half to even);
    code = q - qmin; table[code] = (q - zp) * scale in float32.

Minifloat grids (symmetric only). sign + E exponent + M mantissa bits, subnormals.
    OCP: bias 2^(E-1) - 1; at 8 bits E4M3 has only S.1111.111 as NaN (max 448) and E5M2 is
    IEEE-like (exponent all ones = Inf/NaN, max 57344); other widths (MX FP6/FP4: E3M2,
    E2M3, E2M1) have no special values. FNUZ: bias 2^(E-1), the negative-zero pattern is
    the only NaN, no Inf (E4M3FNUZ max 240, E5M2FNUZ max 57344).
    D = the largest finite value. y = w / scale (float32) is rounded to the nearest
    representable value, ties to even, saturating at +-max: with e = max(floor(log2|y|),
    1 - bias), quantum = 2^(e - M), v = rint(|y| / quantum) * quantum, min(v, max).
    code = the value's bit pattern (+0 for zero); table[code] = value * scale (float32),
    NaN/Inf patterns 0.

Scales (float32 throughout; a scale that is not a normal positive float32 becomes 1).
    stats: symmetric scale = absmax / D; asymmetric low = min(min w, 0), high = max(max w, 0),
        scale = (high - low) / D, zp = -low / scale.
    percentile:P: absmax -> k-th smallest |w|, k = floor(0.01 * P * n + 0.5) (Brevitas'
        AbsPercentile); asymmetric: high = k-th smallest w (same k), low = k'-th smallest w,
        k' = ceil(0.01 * (100 - P) * n); then low = min(low, 0), high = max(high, 0); k
        clamped to [1, n].
    mse: for k = 100, 99, ..., 1: alpha = float32(k) / float32(100), range alpha * [low,
        high] -> scale, zp as in stats; keep the first strict minimum of the squared error
        sum((w - deq)^2) accumulated in float64 in row-major order.
    hqo (HQQ / Brevitas HalfQuadraticOptimizer), at most 1000 steps, each: deq with the
        candidate; loss = mean |w - deq| (float64, sequential); stop if loss >= best loss,
        else remember the candidate; W_e = shrink(w - deq, beta, p) with
        shrink(e) = sign(e) max(|e| - |e|^(p-1) / beta, 0); then
        symmetric: scale = lower median of (w - W_e) / level over entries where both are
            non-zero (level = q, or the minifloat value), beta0 = 1e5, p = 0.7;
        asymmetric: zp = mean(q - (w - W_e) / scale), scale fixed, beta0 = 1, p = 0.5;
        beta *= 1.01.
    po2: the float scale is rounded up to a power of two (frexp mantissa 0.5 stays),
        after each candidate above; the zero point is computed from the rounded scale.
"""
import argparse
import json
import math
import os
import struct

import numpy as np

F32 = np.float32
TINY = float(np.finfo(np.float32).tiny)

INPUTS = {
    # name: (tensor, row0, rows, col0, cols)
    "mlp_c_proj": ("h.0.mlp.c_proj.weight", 0, 256, 0, 4),
    "attn_c_attn": ("h.1.attn.c_attn.weight", 0, 128, 0, 8),
}


# ---------------------------------------------------------------------------------------------
# safetensors, by hand: u64 little-endian header length, JSON header, raw little-endian data.

def read_tensor(path, name):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header.get(name) or header.get("transformer." + name)
        if meta is None:
            raise SystemExit(f"{path}: no tensor {name}")
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        raw = f.read(end - start)
    dtype = {"F16": "<f2", "F32": "<f4"}[meta["dtype"]]
    return np.frombuffer(raw, dtype=dtype).reshape(meta["shape"])


# ---------------------------------------------------------------------------------------------
# Minifloat formats from their specifications.

class Minifloat:
    def __init__(self, e, m, variant):
        self.e, self.m, self.variant = e, m, variant
        self.bits = 1 + e + m
        self.bias = 2 ** (e - 1) - 1 if variant == "ocp" else 2 ** (e - 1)
        self.table = [self._decode(c) for c in range(2 ** self.bits)]
        finite = [v for v in self.table if v is not None]
        self.max = max(finite)
        # value -> code, positive codes first so +0 wins over -0
        self.code_of = {}
        for c, v in enumerate(self.table):
            if v is not None and v not in self.code_of:
                self.code_of[v] = c

    def _decode(self, code):
        e, m = self.e, self.m
        sign = code >> (e + m)
        exp = (code >> m) & (2 ** e - 1)
        man = code & (2 ** m - 1)
        if self.variant == "fnuz":
            if sign == 1 and exp == 0 and man == 0:
                return None  # NaN
        elif self.bits == 8 and (e, m) == (4, 3):
            if exp == 15 and man == 7:
                return None  # NaN
        elif self.bits == 8 and (e, m) == (5, 2):
            if exp == 31:
                return None  # Inf / NaN
        if exp == 0:
            mag = (man / 2 ** m) * 2.0 ** (1 - self.bias)
        else:
            mag = (1 + man / 2 ** m) * 2.0 ** (exp - self.bias)
        return -mag if sign else mag

    def round(self, y):
        """Nearest representable value of float32 array y, ties to even, saturating."""
        a = np.abs(y).astype(np.float64)
        _, ex = np.frexp(a)  # a = f * 2^ex, f in [0.5, 1): floor(log2 a) = ex - 1
        ex = np.maximum(ex - 1, 1 - self.bias)
        quantum = np.ldexp(1.0, ex - self.m)
        v = np.minimum(np.rint(a / quantum) * quantum, self.max)
        return np.where(y < 0, -v, v) + 0.0  # zero is +0

    def codes(self, v):
        return np.array([self.code_of[float(x) if x != 0 else 0.0] for x in v], dtype=np.int64)


def parse_format(s):
    if s == "int":
        return None
    variant = "ocp"
    if s.startswith("fnuz_"):
        variant, s = "fnuz", s[5:]
    e, m = s[1:].split("m")
    return Minifloat(int(e), int(m), variant)


# ---------------------------------------------------------------------------------------------
# One quantizer: grid + scale + zero point.

class Grid:
    def __init__(self, fmt, bits, symmetric):
        self.fmt = fmt
        self.bits = bits
        if fmt is not None:
            assert symmetric and fmt.bits == bits
            self.divisor = F32(fmt.max)
        elif symmetric:
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            self.divisor = F32(2 ** (bits - 1))
        else:
            self.qmin, self.qmax = 0, 2 ** bits - 1
            self.divisor = F32(2 ** bits - 1)

    def quantize(self, w, scale, zp):
        """(codes, dequantized float32, level float64) for float32 w."""
        scale, zp = F32(scale), F32(zp)
        if self.fmt is None:
            # (+ 0: rint(-0.3) is -0.0, the integer q is 0)
            q = np.clip(np.rint(w / scale + zp), self.qmin, self.qmax).astype(F32) + F32(0.0)
            deq = (q - zp) * scale
            return (q - self.qmin).astype(np.int64), deq.astype(F32), q.astype(np.float64)
        v = self.fmt.round(w / scale)  # float64, exact minifloat values
        deq = v.astype(F32) * scale
        return self.fmt.codes(v), deq.astype(F32), v

    def table(self, scale, zp):
        scale, zp = F32(scale), F32(zp)
        if self.fmt is None:
            q = np.arange(self.qmin, self.qmax + 1).astype(F32)
            return (q - zp) * scale
        return np.array([F32(0.0) if v is None else F32(v) * scale for v in self.fmt.table], dtype=F32)


def sane(s):
    s = F32(s)
    return s if (np.isfinite(s) and s >= TINY) else F32(1.0)


def po2_up(s):
    f, e = np.frexp(np.float64(s))
    return F32(s) if f == 0.5 else F32(np.ldexp(1.0, int(e)))


def restrict(s, po2):
    s = sane(s)
    return po2_up(s) if po2 else s


def from_range(low, high, grid, symmetric, po2):
    if symmetric:
        return restrict(F32(high) / grid.divisor, po2), F32(0.0)
    scale = restrict((F32(high) - F32(low)) / grid.divisor, po2)
    zp = -F32(low) / scale
    return scale, F32(0.0) if zp == 0 else F32(zp)


def kth(values, k):
    k = min(max(int(k), 1), len(values))
    return F32(np.sort(values)[k - 1])


def value_range(w, symmetric, pct):
    n = len(w)
    if pct is None:
        if symmetric:
            return F32(0.0), F32(np.max(np.abs(w)))
        return F32(min(np.min(w), 0.0)), F32(max(np.max(w), 0.0))
    k_hi = math.floor(0.01 * pct * n + 0.5)
    if symmetric:
        return F32(0.0), kth(np.abs(w), k_hi)
    k_lo = math.ceil(0.01 * (100.0 - pct) * n)
    return F32(min(kth(w, k_lo), 0.0)), F32(max(kth(w, k_hi), 0.0))


def seqsum(x):
    """float64 sum in order (cumsum is sequential, unlike np.sum's pairwise sum)."""
    return float(np.cumsum(np.asarray(x, dtype=np.float64))[-1])


def shrink(e, beta, p):
    out = np.zeros_like(e)
    for i, x in enumerate(e):
        a = abs(float(x))
        if a == 0.0:
            continue
        t = (1.0 / beta) * math.pow(a, p - 1.0)
        if a > t:
            out[i] = math.copysign(a - t, float(x))
    return out


def params(w, grid, symmetric, stats, po2):
    w64 = w.astype(np.float64)
    n = len(w)
    if stats == "stats" or stats.startswith("percentile:"):
        pct = None if stats == "stats" else float(stats.split(":")[1])
        return from_range(*value_range(w, symmetric, pct), grid, symmetric, po2)
    low, high = value_range(w, symmetric, None)
    if stats == "mse":
        best, best_loss = None, math.inf
        for k in range(100, 0, -1):
            alpha = F32(k) / F32(100)
            s, z = from_range(alpha * low, alpha * high, grid, symmetric, po2)
            _, deq, _ = grid.quantize(w, s, z)
            d = w64 - deq.astype(np.float64)
            loss = seqsum(d * d)
            if loss < best_loss:
                best, best_loss = (s, z), loss
        return best
    assert stats == "hqo"
    cand = from_range(low, high, grid, symmetric, po2)
    best, best_loss = cand, math.inf
    if symmetric:
        beta, p = 1e5, 0.7
        for _ in range(1000):
            _, deq, level = grid.quantize(w, *cand)
            deq64 = deq.astype(np.float64)
            loss = seqsum(np.abs(w64 - deq64)) / n
            if loss >= best_loss:
                break
            best, best_loss = cand, loss
            num = w64 - shrink(w64 - deq64, beta, p)
            mask = (num != 0) & (level != 0)
            if not mask.any():
                break
            ratios = np.sort(num[mask] / level[mask])
            s = F32(ratios[(len(ratios) - 1) // 2])
            if not (np.isfinite(s) and s >= TINY):
                break
            cand = (restrict(s, po2), F32(0.0))
            beta *= 1.01
        return best
    beta, p = 1.0, 0.5
    scale = cand[0]
    for _ in range(1000):
        _, deq, level = grid.quantize(w, *cand)
        deq64 = deq.astype(np.float64)
        loss = seqsum(np.abs(w64 - deq64)) / n
        if loss >= best_loss:
            break
        best, best_loss = cand, loss
        we = shrink(w64 - deq64, beta, p)
        zp = F32(seqsum(level - (w64 - we) / np.float64(scale)) / n)
        if not np.isfinite(zp):
            break
        cand = (scale, F32(0.0) if zp == 0 else zp)
        beta *= 1.01
    return best


def groups(rows, cols, granularity):
    """Flat row-major index arrays, one per group, in group order."""
    idx = np.arange(rows * cols).reshape(rows, cols)
    if granularity == "tensor":
        return [idx.reshape(-1)]
    if granularity == "channel":
        return [idx[:, c] for c in range(cols)]
    kind, g = granularity.split(":")
    g = int(g)
    if kind == "group":
        return [idx[b * g:(b + 1) * g, c] for b in range(rows // g) for c in range(cols)]
    assert kind == "channel-group"
    return [idx[:, j * g:(j + 1) * g].reshape(-1) for j in range(cols // g)]


def quantize(w2d, case):
    rows, cols = w2d.shape
    fmt = parse_format(case["format"])
    grid = Grid(fmt, case["bits"], case["symmetric"])
    flat = w2d.reshape(-1).astype(F32)
    codes = np.zeros(rows * cols, dtype=np.int64)
    deq = np.zeros(rows * cols, dtype=F32)
    scales, zps = [], []
    for ix in groups(rows, cols, case["granularity"]):
        w = flat[ix]
        s, z = params(w, grid, case["symmetric"], case["scale_stats"], case["scale_type"] == "po2")
        c, d, _ = grid.quantize(w, s, z)
        codes[ix] = c
        deq[ix] = d
        # the table lookup is the dequantized value
        assert np.array_equal(grid.table(s, z)[c].view(np.uint32), d.view(np.uint32))
        scales.append(float(s))
        zps.append(float(z))
    return codes, deq, scales, zps


def cases():
    out = []
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            for gran in ("channel", "group:128"):
                for stats in ("stats", "mse", "hqo"):
                    out.append(dict(input="mlp_c_proj", format="int", bits=bits, symmetric=sym,
                                    granularity=gran, scale_stats=stats, scale_type="float"))
    B = "attn_c_attn"
    extra = [
        (4, True, "channel", "percentile:99", "float"),
        (4, False, "channel", "percentile:99", "float"),
        (3, False, "group:64", "percentile:99.9", "float"),
        (4, True, "group:64", "stats", "po2"),
        (4, False, "group:64", "stats", "po2"),
        (3, True, "channel", "mse", "po2"),
        (3, False, "channel", "mse", "po2"),
        (4, True, "channel", "hqo", "po2"),
        (2, False, "group:32", "hqo", "po2"),
        (8, False, "tensor", "stats", "float"),
        (4, True, "tensor", "mse", "float"),
        (4, False, "channel-group:4", "stats", "float"),
        (2, True, "channel-group:2", "hqo", "float"),
    ]
    for bits, sym, gran, stats, st in extra:
        out.append(dict(input=B, format="int", bits=bits, symmetric=sym, granularity=gran,
                        scale_stats=stats, scale_type=st))
    floats = [("e4m3", 8), ("fnuz_e4m3", 8), ("e5m2", 8), ("fnuz_e5m2", 8), ("e2m1", 4),
              ("e3m2", 6), ("e2m3", 6)]
    for fmt, bits in floats:
        for gran in ("channel", "group:128"):
            out.append(dict(input="mlp_c_proj", format=fmt, bits=bits, symmetric=True,
                            granularity=gran, scale_stats="stats", scale_type="float",
                            with_values=(gran == "channel" and fmt in ("e4m3", "fnuz_e4m3", "e5m2",
                                                                       "fnuz_e5m2", "e2m1"))))
    for fmt, bits, stats, gran, st in [("e4m3", 8, "mse", "channel", "float"),
                                        ("e2m1", 4, "mse", "channel", "float"),
                                        ("e2m1", 4, "hqo", "group:64", "float"),
                                        ("e4m3", 8, "stats", "group:64", "po2"),
                                        ("e3m2", 6, "percentile:99", "channel", "float")]:
        out.append(dict(input=B, format=fmt, bits=bits, symmetric=True, granularity=gran,
                        scale_stats=stats, scale_type=st))
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(root, "models", "gpt2-tiny-wikitext"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "uniform_reference.json"))
    args = ap.parse_args()

    # Sanity of the format tables against the specifications' headline numbers.
    assert Minifloat(4, 3, "ocp").max == 448 and Minifloat(4, 3, "fnuz").max == 240
    assert Minifloat(5, 2, "ocp").max == 57344 and Minifloat(5, 2, "fnuz").max == 57344
    assert sorted({v for v in Minifloat(2, 1, "ocp").table if v >= 0}) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert Minifloat(3, 2, "ocp").max == 28 and Minifloat(2, 3, "ocp").max == 7.5

    path = os.path.join(args.model, "model.safetensors")
    inputs, tensors = {}, {}
    for key, (name, r0, nr, c0, nc) in INPUTS.items():
        t = read_tensor(path, name)
        sl = np.ascontiguousarray(t[r0:r0 + nr, c0:c0 + nc])
        tensors[key] = sl.astype(F32)  # f16 -> f32 is exact
        inputs[key] = dict(tensor=name, row0=r0, rows=nr, col0=c0, cols=nc,
                           f16_hex=sl.astype("<f2").tobytes().hex())
    out_cases = []
    for case in cases():
        with_values = case.pop("with_values", False)
        codes, deq, scales, zps = quantize(tensors[case["input"]], case)
        rec = dict(case)
        rec["codes_hex"] = bytes(codes.astype(np.uint8)).hex()
        rec["scales"] = scales
        rec["zero_points"] = zps
        if with_values:
            rec["values_f32_hex"] = deq.astype("<f4").tobytes().hex()
        out_cases.append(rec)
    doc = dict(
        about="lutlab uniform quantizer reference (scripts/uniform_reference.py, numpy "
              + np.__version__ + "); definitions in the script's docstring",
        inputs=inputs,
        cases=out_cases,
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{args.out}: {len(out_cases)} cases, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
