#!/usr/bin/env python3
"""PyTorch reference for lutlab's uniform quantizers (issue 8), written from the formats'
specifications: the same cases and the same fixture schema as scripts/uniform_reference.py
(numpy), computed with PyTorch tensor ops in float32 on the CPU or a CUDA device.

    python3 scripts/uniform_reference_torch.py [--device cuda|cpu] \
        [--model models/gpt2-tiny-wikitext] [--out tests/fixtures/uniform_reference_torch.json] \
        [--compare tests/fixtures/uniform_reference.json]

Needs only torch with the float8 dtypes (2.1 or later; the safetensors file is parsed by hand,
numpy is not used); on the device `python3` has it, elsewhere `python3 -m venv v && v/bin/pip
install torch`. --device defaults to cuda when one is visible. Deterministic: the committed
fixture was written on an H200 with torch 2.11.0+cu130, and --device cpu there and torch 2.15.0
on a CPU-only machine wrote the same cases (the header differs in the device name only). crates/lutlab-core/tests/uniform.rs checks lutlab against this fixture and
against the numpy one, bit for bit. `--compare` prints, case by case, whether another fixture
(e.g. the numpy one) has the same codes, scales, zero points and values.

Why two references. The numpy script stays: it runs anywhere without torch and is the one CI-free
way to regenerate its fixture. This one is the issue's "PyTorch on the device" reference and is
more independent of lutlab where it matters most, the minifloat rounding:

- FP8 (e4m3, e5m2 and their FNUZ variants) is rounded by PyTorch's own casts to
  torch.float8_e4m3fn / float8_e5m2 / float8_e4m3fnuz / float8_e5m2fnuz and back; the code is
  the FP8 byte that PyTorch stores (`.view(torch.uint8)`). PyTorch's casts round to nearest
  even but do not saturate: past the largest finite value e5m2 gives Inf and the FNUZ types
  NaN, and e4m3fn gives NaN in torch 2.11 (CPU and CUDA) but 448 in torch 2.15 (CPU). So
  y = w / scale is first clamped to +-max (the OCP spec's saturating conversion), which makes
  the version not matter. -0 (OCP 0x80) becomes +0 (code 0): lutlab never stores -0.
- Every minifloat (FP8 too, as a cross-check of the casts; e2m1, e3m2, e2m3 for real, PyTorch
  has no usable FP6/FP4 cast) is also rounded on a value grid built from the spec: the sorted
  non-negative values, their midpoints (exact in float32), torch.bucketize, and on an exact
  midpoint the even code. numpy rounds with frexp and a quantum, lutlab with a binary search in
  float64; three different algorithms.
- At start-up the spec-decoded tables are checked against PyTorch's FP8 dtypes (all 256 bytes,
  NaN/Inf positions included), and the grid rounding against the FP8 casts on every
  representable value, every midpoint, one float32 ulp either side of each, and values beyond
  max; any difference stops the script.

Definitions (the contract; uniform_reference.py's docstring gives the same in more words):

Layout. GPT-2 Conv1D weights [in, out] row-major. Granularity tensor: one group; channel: one
    per column; group:G: G consecutive rows within a column, numbered (row // G) * cols + col;
    channel-group:G: G consecutive columns, values in row-major order.
Integers. symmetric q in [-2^(b-1), 2^(b-1) - 1], D = 2^(b-1); asymmetric q in [0, 2^b - 1],
    D = 2^b - 1, float zero point. q = clamp(round(w / scale + zp)) in float32 (torch.round is
    half to even); code = q - qmin; table[code] = (q - zp) * scale.
Minifloats (symmetric). OCP: bias 2^(E-1) - 1; FP8 E4M3 has only S.1111.111 as NaN (max 448),
    FP8 E5M2 is IEEE-like (max 57344); MX FP6/FP4 have no special values. FNUZ: bias 2^(E-1),
    0x80 is the only NaN (E4M3FNUZ max 240, E5M2FNUZ max 57344). D = max. y = w / scale rounded
    to nearest, ties to even, saturating; code = bit pattern (+0 for zero); table = value * scale.
Scales (float32; a scale that is not a normal positive float32 becomes 1). stats: absmax / D, or
    [min(w, 0), max(w, 0)] -> scale = (high - low) / D, zp = -low / scale. percentile:P: the
    k-th smallest (torch.sort) with k = floor(0.01 P n + 0.5), low k' = ceil(0.01 (100 - P) n).
    mse: alpha = float32(k) / 100 for k = 100..1, first strict minimum of the squared error.
    hqo: at most 1000 steps of HQQ (symmetric: scale = lower median of (w - W_e) / level,
    beta 1e5, p 0.7; asymmetric: zp = mean(q - (w - W_e) / scale), beta 1, p 0.5; beta *= 1.01;
    stop when the mean |w - deq| stops falling). po2: the scale rounded up to a power of two
    (torch.frexp), zero point from the rounded scale.
    Losses and HQO sums are float64 sums in the group's row-major order: computed as the last
    element of torch.cumsum on the CPU (sequential there; checked at start-up), since a GPU
    reduction or scan adds in another order. |e|^(p-1) in the shrinkage is torch.pow in float64,
    which may differ from C's pow in the last bit; that reaches a float32 scale or zero point only
    if a float64 sum lands within about 1e-16 of a float32 rounding boundary (not seen here).
"""
import argparse
import json
import math
import os
import struct

import torch

F32, F64 = torch.float32, torch.float64
TINY = torch.finfo(torch.float32).tiny

INPUTS = {
    # name: (tensor, row0, rows, col0, cols) -- as in uniform_reference.py
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
        raw = bytearray(f.read(end - start))
    dtype = {"F16": torch.float16, "F32": torch.float32}[meta["dtype"]]
    return torch.frombuffer(raw, dtype=dtype).reshape(meta["shape"]).clone()


def tensor_hex(t):
    """Little-endian bytes of a contiguous CPU tensor, as hex."""
    assert struct.pack("=H", 1) == struct.pack("<H", 1), "little-endian host expected"
    return bytes(t.contiguous().view(torch.uint8).reshape(-1).tolist()).hex()


# ---------------------------------------------------------------------------------------------
# Minifloats from their specifications.

TORCH_FP8 = {
    ("ocp", 4, 3): "float8_e4m3fn",
    ("ocp", 5, 2): "float8_e5m2",
    ("fnuz", 4, 3): "float8_e4m3fnuz",
    ("fnuz", 5, 2): "float8_e5m2fnuz",
}


class Minifloat:
    def __init__(self, e, m, variant, dev):
        self.e, self.m, self.variant = e, m, variant
        self.bits = 1 + e + m
        self.sign_bit = 1 << (e + m)
        self.bias = 2 ** (e - 1) - 1 if variant == "ocp" else 2 ** (e - 1)
        # value of every code, None for NaN / Inf patterns
        self.values = [self._decode(c) for c in range(2 ** self.bits)]
        # non-negative values in code order (codes 0..sign_bit-1 are the positive half, increasing)
        mags = []
        for c in range(self.sign_bit):
            if self.values[c] is None:
                break
            mags.append(self.values[c])
        assert all(a < b for a, b in zip(mags, mags[1:]))
        self.max = mags[-1]
        self.mags = torch.tensor(mags, dtype=F32, device=dev)
        # midpoints of neighbours: at most M + 2 significant bits, exact in float32
        self.mids = (self.mags[:-1] + self.mags[1:]) / 2
        mids64 = [(a + b) / 2 for a, b in zip(mags, mags[1:])]
        assert self.mids.tolist() == mids64
        name = TORCH_FP8.get((variant, e, m)) if self.bits == 8 else None
        self.torch_dtype = getattr(torch, name) if name and hasattr(torch, name) else None
        self.name = ("fnuz_" if variant == "fnuz" else "") + f"e{e}m{m}"

    def _decode(self, code):
        e, m = self.e, self.m
        sign = code >> (e + m)
        exp = (code >> m) & (2 ** e - 1)
        man = code & (2 ** m - 1)
        if self.variant == "fnuz":
            if code == self.sign_bit:
                return None  # the negative-zero pattern is the NaN
        elif self.bits == 8 and (e, m) == (4, 3):
            if exp == 2 ** e - 1 and man == 2 ** m - 1:
                return None  # S.1111.111
        elif self.bits == 8 and (e, m) == (5, 2):
            if exp == 2 ** e - 1:
                return None  # IEEE Inf / NaN
        if exp == 0:
            mag = math.ldexp(man, 1 - self.bias - m)
        else:
            mag = math.ldexp(2 ** m + man, exp - self.bias - m)
        return -mag if sign else mag

    def round_grid(self, y):
        """(codes int64, values float32) of float32 y on the spec's value grid: nearest, ties to
        the even code, saturating at max."""
        a = y.abs()
        k = torch.bucketize(a, self.mids)  # first k with a <= mids[k]
        last = len(self.mids) - 1
        tie = (k <= last) & (a == self.mids[k.clamp(max=last)]) & (k % 2 == 1)
        k = k + tie.to(k.dtype)
        v = self.mags[k]
        neg = (y < 0) & (k != 0)
        codes = torch.where(neg, k | self.sign_bit, k)
        return codes, torch.where(neg, -v, v)

    def round_torch(self, y):
        """The same through PyTorch's FP8 dtype: clamp to +-max (PyTorch's casts do not
        saturate), cast (round to nearest even), read the byte and the value back."""
        f8 = y.clamp(-self.max, self.max).to(self.torch_dtype)
        codes = f8.view(torch.uint8).to(torch.int64)
        v = f8.to(F32)
        zero = v == 0
        return torch.where(zero, torch.zeros_like(codes), codes), torch.where(zero, torch.zeros_like(v), v)

    def round(self, y):
        codes, v = self.round_grid(y)
        if self.torch_dtype is not None:
            tc, tv = self.round_torch(y)
            if not (torch.equal(tc, codes) and torch.equal(tv.view(torch.int32), v.view(torch.int32))):
                bad = (tc != codes).nonzero()[:5].tolist()
                raise SystemExit(f"{self.name}: torch cast and spec grid disagree at {bad}")
            return tc, tv
        return codes, v

    def check_against_torch(self, dev):
        """The spec tables equal PyTorch's dtype (all bytes), and the grid rounding equals the
        cast on every value, midpoint, ulp neighbour and beyond max."""
        if self.torch_dtype is None:
            return False
        allb = torch.arange(256, dtype=torch.int64, device=dev).to(torch.uint8).view(self.torch_dtype).to(F32)
        for c, t in enumerate(allb.tolist()):
            mine = self.values[c]
            if mine is None:
                assert not math.isfinite(t), (self.name, c, t)
            else:
                assert t == mine and math.copysign(1, t) == math.copysign(1, mine), (self.name, c, t, mine)
        mids = self.mids
        probe = torch.cat([self.mags, mids, torch.nextafter(mids, torch.full_like(mids, math.inf)),
                           torch.nextafter(mids, torch.zeros_like(mids)),
                           self.mags[1:2] / 4, self.mags[-1:] * 1.03, self.mags[-1:] * 4,
                           torch.tensor([3.0e38, 1e-30], dtype=F32, device=dev)])
        probe = torch.cat([probe, -probe])
        gc, gv = self.round_grid(probe)
        tc, tv = self.round_torch(probe)
        if not (torch.equal(gc, tc) and torch.equal(gv, tv)):
            i = (gc != tc).nonzero()[:5].reshape(-1).tolist()
            raise SystemExit(f"{self.name}: cast vs grid differ on {probe[i].tolist()}: "
                             f"{tc[i].tolist()} vs {gc[i].tolist()}")
        return True


def parse_format(s, dev):
    if s == "int":
        return None
    variant = "ocp"
    if s.startswith("fnuz_"):
        variant, s = "fnuz", s[5:]
    e, m = s[1:].split("m")
    return Minifloat(int(e), int(m), variant, dev)


# ---------------------------------------------------------------------------------------------
# Quantization of a batch of groups: W is [G, n] float32, scale and zp are [G] float32.

class Grid:
    def __init__(self, fmt, bits, symmetric, dev):
        self.fmt, self.bits, self.dev = fmt, bits, dev
        if fmt is not None:
            assert symmetric and fmt.bits == bits
            self.divisor = fmt.max
        elif symmetric:
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            self.divisor = float(2 ** (bits - 1))
        else:
            self.qmin, self.qmax = 0, 2 ** bits - 1
            self.divisor = float(2 ** bits - 1)
        self.divisor_t = torch.tensor(self.divisor, dtype=F32, device=dev)

    def quantize(self, W, scale, zp):
        """(codes int64, dequantized float32, level float32) of W [G, n]."""
        s, z = scale[:, None], zp[:, None]
        if self.fmt is None:
            q = torch.clamp(torch.round(W / s + z), self.qmin, self.qmax) + 0.0  # -0 -> +0
            return (q - self.qmin).to(torch.int64), (q - z) * s, q
        codes, v = self.fmt.round(W / s)
        return codes, v * s, v

    def table(self, scale, zp):
        """[G, 2^bits] lookup tables."""
        s, z = scale[:, None], zp[:, None]
        if self.fmt is None:
            q = torch.arange(self.qmin, self.qmax + 1, device=self.dev).to(F32)[None, :]
            return (q - z) * s
        v = torch.tensor([0.0 if x is None else x for x in self.fmt.values], dtype=F32, device=self.dev)
        return v[None, :] * s


def restrict(s, po2):
    """Not a normal positive float32 -> 1; po2: round up to a power of two."""
    s = torch.where(torch.isfinite(s) & (s >= TINY), s, torch.ones_like(s))
    if po2:
        mant, ex = torch.frexp(s)  # s = mant * 2^ex, mant in [0.5, 1)
        s = torch.where(mant == 0.5, s, torch.ldexp(torch.ones_like(s), ex))
    return s


def from_range(low, high, grid, symmetric, po2):
    if symmetric:
        return restrict(high / grid.divisor_t, po2), torch.zeros_like(high)
    scale = restrict((high - low) / grid.divisor_t, po2)
    return scale, -low / scale + 0.0


def value_range(W, symmetric, pct):
    n = W.shape[1]
    zero = torch.zeros(W.shape[0], dtype=F32, device=W.device)
    clampk = lambda k: min(max(int(k), 1), n)
    if pct is None:
        if symmetric:
            return zero, W.abs().amax(dim=1)
        return torch.minimum(W.amin(dim=1), zero), torch.maximum(W.amax(dim=1), zero)
    # k-th smallest by a full sort (torch.kthvalue has no deterministic CUDA implementation)
    kth = lambda x, k: torch.sort(x, dim=1).values[:, k - 1]
    k_hi = clampk(math.floor(0.01 * pct * n + 0.5))
    if symmetric:
        return zero, kth(W.abs(), k_hi)
    k_lo = clampk(math.ceil(0.01 * (100.0 - pct) * n))
    low, high = kth(W, k_lo), kth(W, k_hi)
    return torch.minimum(low, zero), torch.maximum(high, zero)


def seqsum(x):
    """float64 sums along the last dim in index order: torch.cumsum on the CPU is a sequential
    loop (a GPU reduction or scan adds in another order)."""
    return x.to("cpu", F64).cumsum(dim=-1)[..., -1].to(x.device)


def shrink(e, beta, p):
    """HQQ's shrink_lp: sign(e) max(|e| - |e|^(p-1) / beta, 0), float64."""
    a = e.abs()
    t = (1.0 / beta) * torch.pow(a, p - 1.0)  # pow(0, <0) = inf: no shrinkage past zero
    return torch.where(a > t, torch.copysign(a - t, e), torch.zeros_like(e))


def params(W, grid, symmetric, stats, po2):
    G, n = W.shape
    W64 = W.to(F64)
    if stats == "stats" or stats.startswith("percentile:"):
        pct = None if stats == "stats" else float(stats.split(":")[1])
        return from_range(*value_range(W, symmetric, pct), grid, symmetric, po2)
    low, high = value_range(W, symmetric, None)
    if stats == "mse":
        best_s, best_z = from_range(low, high, grid, symmetric, po2)
        best_loss = torch.full((G,), math.inf, dtype=F64, device=W.device)
        hundred = torch.tensor(100.0, dtype=F32, device=W.device)
        for k in range(100, 0, -1):
            alpha = torch.tensor(float(k), dtype=F32, device=W.device) / hundred
            s, z = from_range(alpha * low, alpha * high, grid, symmetric, po2)
            _, deq, _ = grid.quantize(W, s, z)
            loss = seqsum((W64 - deq.to(F64)) ** 2)
            better = loss < best_loss
            best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
            best_loss = torch.where(better, loss, best_loss)
        return best_s, best_z
    assert stats == "hqo"
    cand_s, cand_z = from_range(low, high, grid, symmetric, po2)
    best_s, best_z = cand_s, cand_z
    best_loss = torch.full((G,), math.inf, dtype=F64, device=W.device)
    active = torch.ones(G, dtype=torch.bool, device=W.device)
    beta, p = (1e5, 0.7) if symmetric else (1.0, 0.5)
    for _ in range(1000):
        _, deq, level = grid.quantize(W, cand_s, cand_z)
        deq64, level64 = deq.to(F64), level.to(F64)
        loss = seqsum((W64 - deq64).abs()) / n
        active = active & (loss < best_loss)  # a group stops when its loss stops falling
        best_s = torch.where(active, cand_s, best_s)
        best_z = torch.where(active, cand_z, best_z)
        best_loss = torch.where(active, loss, best_loss)
        if not bool(active.any()):
            break
        num = W64 - shrink(W64 - deq64, beta, p)
        if symmetric:
            mask = (num != 0) & (level64 != 0)
            cnt = mask.sum(dim=1)
            ratios = torch.where(mask, num / torch.where(mask, level64, torch.ones_like(level64)),
                                 torch.full_like(num, math.inf))
            srt = torch.sort(ratios, dim=1).values
            lower_median = srt.gather(1, ((cnt - 1).clamp(min=0) // 2)[:, None])[:, 0]
            s = lower_median.to(F32)
            active = active & (cnt > 0) & torch.isfinite(s) & (s >= TINY)
            cand_s = torch.where(active, restrict(s, po2), cand_s)
        else:
            zp = (seqsum(level64 - num / cand_s.to(F64)[:, None]) / n).to(F32)
            active = active & torch.isfinite(zp)
            cand_z = torch.where(active, zp + 0.0, cand_z)
        beta *= 1.01
    return best_s, best_z


def group_index(rows, cols, granularity):
    """[G, n] flat row-major indices, one row per group, in group order."""
    idx = torch.arange(rows * cols).reshape(rows, cols)
    if granularity == "tensor":
        return idx.reshape(1, -1)
    if granularity == "channel":
        return idx.t().contiguous()
    kind, g = granularity.split(":")
    g = int(g)
    if kind == "group":
        return idx.reshape(rows // g, g, cols).permute(0, 2, 1).reshape(-1, g)
    assert kind == "channel-group"
    return idx.reshape(rows, cols // g, g).permute(1, 0, 2).reshape(cols // g, rows * g)


def quantize(w2d, case, dev):
    rows, cols = w2d.shape
    fmt = parse_format(case["format"], dev)
    grid = Grid(fmt, case["bits"], case["symmetric"], dev)
    ix = group_index(rows, cols, case["granularity"]).to(dev)
    W = w2d.reshape(-1).to(dev, F32)[ix]
    s, z = params(W, grid, case["symmetric"], case["scale_stats"], case["scale_type"] == "po2")
    codes, deq, _ = grid.quantize(W, s, z)
    # the table lookup is the dequantized value
    looked_up = grid.table(s, z).gather(1, codes)
    assert torch.equal(looked_up.view(torch.int32), deq.view(torch.int32)), case
    flat_codes = torch.zeros(rows * cols, dtype=torch.int64, device=dev)
    flat_deq = torch.zeros(rows * cols, dtype=F32, device=dev)
    flat_codes[ix.reshape(-1)] = codes.reshape(-1)
    flat_deq[ix.reshape(-1)] = deq.reshape(-1)
    return flat_codes.cpu(), flat_deq.cpu(), s.cpu().tolist(), z.cpu().tolist()


def cases():
    """The case list of uniform_reference.py, verbatim."""
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


KEY_FIELDS = ("input", "format", "bits", "symmetric", "granularity", "scale_stats", "scale_type")


def compare(doc, path):
    """Case by case: does the fixture at `path` hold the same results?"""
    with open(path) as f:
        other = json.load(f)
    theirs = {tuple(c[k] for k in KEY_FIELDS): c for c in other["cases"]}
    same = 0
    for c in doc["cases"]:
        key = tuple(c[k] for k in KEY_FIELDS)
        o = theirs.get(key)
        if o is None:
            print(f"  missing in {path}: {key}")
            continue
        diffs = [f for f in ("codes_hex", "scales", "zero_points", "values_f32_hex") if c.get(f) != o.get(f)]
        if diffs:
            print(f"  differs: {key}: {diffs}")
        else:
            same += 1
    same_inputs = doc["inputs"] == other["inputs"]
    print(f"compare with {path}: {same} of {len(doc['cases'])} cases equal "
          f"({len(other['cases'])} there); inputs {'equal' if same_inputs else 'DIFFER'}")
    return same == len(doc["cases"]) == len(other["cases"]) and same_inputs


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=os.path.join(root, "models", "gpt2-tiny-wikitext"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "uniform_reference_torch.json"))
    ap.add_argument("--compare", action="append", default=[],
                    help="another fixture to compare with, case by case (may repeat)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.use_deterministic_algorithms(True)

    # Start-up checks: the sequential float64 sum, the spec tables' headline numbers, and the
    # spec tables and rounding against PyTorch's FP8 dtypes.
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 517, generator=g, dtype=F64) * torch.logspace(-8, 8, 517, dtype=F64)
    loop = [0.0] * 3
    for r in range(3):
        for v in x[r].tolist():
            loop[r] += v
    assert seqsum(x.to(dev)).tolist() == loop, "torch.cumsum on the CPU is not sequential"
    ex = torch.arange(-149, 128, dtype=torch.int32, device=dev)
    assert torch.ldexp(torch.ones(len(ex), dtype=F32, device=dev), ex).tolist() == \
        [math.ldexp(1.0, e) for e in range(-149, 128)], "torch.ldexp(1, e) is not 2^e"
    mf = lambda e, m, v: Minifloat(e, m, v, dev)
    assert mf(4, 3, "ocp").max == 448 and mf(4, 3, "fnuz").max == 240
    assert mf(5, 2, "ocp").max == 57344 and mf(5, 2, "fnuz").max == 57344
    assert mf(2, 1, "ocp").mags.tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert mf(3, 2, "ocp").max == 28 and mf(2, 3, "ocp").max == 7.5
    assert sum(v is None for v in mf(4, 3, "ocp").values) == 2
    assert sum(v is None for v in mf(5, 2, "ocp").values) == 8
    assert all(v is not None for f in [(2, 1), (3, 2), (2, 3)] for v in mf(*f, "ocp").values)
    fp8_checked = [f.name for f in (mf(4, 3, "ocp"), mf(5, 2, "ocp"), mf(4, 3, "fnuz"), mf(5, 2, "fnuz"))
                   if f.check_against_torch(dev)]
    missing = sorted(set(TORCH_FP8.values()) - {n for n in TORCH_FP8.values() if hasattr(torch, n)})
    if missing:
        raise SystemExit(f"torch {torch.__version__} lacks {missing}: the FP8 casts are part of this reference")

    path = os.path.join(args.model, "model.safetensors")
    inputs, tensors = {}, {}
    for key, (name, r0, nr, c0, nc) in INPUTS.items():
        t = read_tensor(path, name)
        assert t.dtype == torch.float16
        sl = t[r0:r0 + nr, c0:c0 + nc].contiguous()
        tensors[key] = sl.to(F32)  # f16 -> f32 is exact
        inputs[key] = dict(tensor=name, row0=r0, rows=nr, col0=c0, cols=nc, f16_hex=tensor_hex(sl))
    out_cases = []
    for case in cases():
        with_values = case.pop("with_values", False)
        codes, deq, scales, zps = quantize(tensors[case["input"]], case, dev)
        rec = dict(case)
        rec["codes_hex"] = tensor_hex(codes.to(torch.uint8))
        rec["scales"] = scales
        rec["zero_points"] = zps
        if with_values:
            rec["values_f32_hex"] = tensor_hex(deq)
        out_cases.append(rec)
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    doc = dict(
        about=f"lutlab uniform quantizer reference (scripts/uniform_reference_torch.py, torch "
              f"{torch.__version__} on {dev.type}); definitions in the script's docstring",
        torch=dict(version=torch.__version__, device=dev_name, fp8_casts_checked=fp8_checked),
        inputs=inputs,
        cases=out_cases,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{args.out}: {len(out_cases)} cases, {os.path.getsize(args.out)} bytes "
          f"(torch {torch.__version__}, {dev_name}; FP8 casts checked: {', '.join(fp8_checked)})")
    ok = all([compare(doc, p) for p in args.compare])
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
