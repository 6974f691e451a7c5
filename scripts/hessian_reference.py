#!/usr/bin/env python3
"""Independent numpy port of the Hessian rounding methods, written from the papers, and the
fixture `tests/fixtures/hessian_reference.json` that lutlab's Rust implementation must match.

- GPTQ (Frantar et al. 2022, Algorithm 1): weights W [out, in] (the paper's orientation; lutlab
  holds [in, out]), H = 2/N X X^T over inputs, damping percdamp * mean(diag H), dead inputs
  (H_ii = 0) get H_ii = 1 and zero weights, optional act-order (columns by decreasing H_ii).
  Columns are quantized one at a time and the error is spread with the upper Cholesky factor of
  H^-1, without lazy batching (lutlab batches; the result must not change).
- LDLQ (Chee et al. 2023, QuIP eq. 3): H = (U + I) D (U + I)^T, U strictly upper;
  What_k = Q(W_k + (W_{<k} - What_{<k}) U_{<k,k}).
- Greedy passes (QuIP's "G", allbal): coordinate descent on tr((What - W) H (What - W)^T).
- Grids: a table of values per output channel (nearest entry, ties to the smaller value), or
  asymmetric min-max integer scales fitted per group of input columns on the updated weights
  (dynamic) or the original ones (static), in float32 as lutlab fits them.
- QuIP's incoherence processing (Chee et al. 2023, section 4, `preproc`/`postproc` of its code):
  rescale inputs by s = (diag(H/max|H|) / diag(W^T W))^(1/4), normalise H to trace n and add
  1e-2 I, project W <- U W V^T and H <- V H V^T with U, V dense Kronecker products of random
  orthogonal factors after a permutation (built densely here with np.kron; lutlab applies them
  factored), round with LDLQ-RG on QuIP's `qfn b` grid (2^b levels over +-2.4 rms per channel),
  then undo: W_hat = U^T Q V / s.

Run: python3 scripts/hessian_reference.py  (numpy only; deterministic)
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hessian_reference.json")


def nearest(table, x):
    """Nearest entry of `table` to x; ties to the smaller value."""
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.float64)
    best = None
    for v in values:
        if best is None or abs(x - v) < abs(x - best):
            best = v
    return best


def minmax_asym_table(values, bits):
    """lutlab's asymmetric `stats` scale: range [min(w, 0), max(w, 0)], zero point unrounded."""
    v = values.astype(np.float32)
    low = np.float32(min(v.min(), np.float32(0)))
    high = np.float32(max(v.max(), np.float32(0)))
    scale = np.float32((high - low) / np.float32(2**bits - 1))
    if not (scale > 0):
        scale = np.float32(1)
    zp = np.float32(-low / scale)
    if zp == 0:
        zp = np.float32(0)
    return np.array([(np.float32(q) - zp) * scale for q in range(2**bits)], dtype=np.float32)


def damp(H, W, percdamp):
    H = H.copy()
    W = W.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * np.mean(np.diag(H)) * np.eye(H.shape[0])
    return H, W


def proxy(W, Q, H):
    D = Q - W
    return float(np.trace(D @ H @ D.T))


class Tables:
    """Table per (output channel, input column): fixed per channel, or per input group."""

    def __init__(self, kind, W, bits=None, tables=None, per_table=None, group=None):
        self.kind, self.bits, self.group = kind, bits, group
        self.fixed = tables
        self.per_table = per_table
        self.groups = {}
        if kind == "static":
            for g in range(W.shape[1] // group):
                for r in range(W.shape[0]):
                    self.groups[(g, r)] = minmax_asym_table(W[r, g * group:(g + 1) * group], bits)

    def enter(self, col, W):
        if self.kind == "dynamic" and col % self.group == 0:
            g = col // self.group
            for r in range(W.shape[0]):
                self.groups[(g, r)] = minmax_asym_table(W[r, col:col + self.group], bits=self.bits)

    def table(self, r, col):
        if self.kind == "fixed":
            return self.fixed[r // self.per_table]
        return self.groups[(col // self.group, r)]


def gptq(W, H, grid, percdamp, act_order):
    W0 = W
    H, W = damp(H, W, percdamp)
    n = H.shape[0]
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    W = W[:, perm].copy()
    H = H[perm][:, perm]
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # H^-1 = U^T U, U upper
    Q = np.zeros_like(W)
    for k in range(n):
        assert grid.kind != "dynamic" or not act_order, "dynamic groups are fitted in input order"
        grid.enter(perm[k], W)
        for r in range(W.shape[0]):
            Q[r, k] = nearest(grid.table(r, perm[k]), W[r, k])
        err = (W[:, k] - Q[:, k]) / U[k, k]
        W[:, k + 1:] -= np.outer(err, U[k, k + 1:])
    out = np.zeros_like(Q)
    out[:, perm] = Q
    return out


def ldl_upper(H):
    """H = (U + I) D (U + I)^T with U strictly upper: LDL of H reversed."""
    n = H.shape[0]
    R = H[::-1, ::-1]
    L = np.linalg.cholesky(R)
    d = np.diag(L) ** 2
    Lunit = L / np.diag(L)[None, :]
    M = Lunit[::-1, ::-1]
    return M - np.eye(n), d[::-1]


def ldlq(W, H, grid, percdamp, act_order, passes):
    H, W = damp(H, W, percdamp)
    n = H.shape[0]
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    W = W[:, perm]
    H = H[perm][:, perm]
    Uu, _ = ldl_upper(H)
    Q = np.zeros_like(W)
    for k in range(n):
        target = W[:, k] + (W[:, :k] - Q[:, :k]) @ Uu[:k, k]
        for r in range(W.shape[0]):
            Q[r, k] = nearest(grid.table(r, perm[k]), target[r])
    Q = greedy(W, Q, H, grid, perm, passes)
    out = np.zeros_like(Q)
    out[:, perm] = Q
    return out


def greedy(W, Q, H, grid, perm, passes):
    Q = Q.copy()
    n = H.shape[0]
    for _ in range(passes):
        for k in range(n):
            for r in range(W.shape[0]):
                D = Q[r] - W[r]
                rest = H[k] @ D - H[k, k] * D[k]
                best = W[r, k] - rest / H[k, k]
                Q[r, k] = nearest(grid.table(r, perm[k]), best)
    return Q


def admm_feedback(H, rho=0.1, iters=100):
    """QuIP's ldlbal_admm feedback: min tr((Z+I) H (Z+I)^T) over strictly lower Z whose columns
    have norm <= 1, by ADMM (X: masked least squares through chol(2H + rho I); Z: projection of
    X + U onto the column-norm ball; U: the scaled dual)."""
    n = H.shape[0]
    Linv = np.linalg.inv(np.linalg.cholesky(2 * H + rho * np.eye(n)))
    M = np.tril(np.ones((n, n)), -1)
    Z = np.zeros((n, n))
    U = np.zeros((n, n))
    for _ in range(iters):
        X = (((rho * Z - rho * U - 2 * (M * H)) @ Linv.T) * M) @ Linv
        V = X + U
        Z = V / np.maximum(1.0, np.sqrt((V ** 2).sum(axis=0)))[None, :]
        U = U + X - Z
    return Z


def ldlbal_admm(W, H, grid, percdamp, passes):
    """Inputs by increasing H_kk, H over its largest diagonal entry; W_hat = Q(W_hat - (W_hat - W) G)
    with G = (Z + I)^-1 iterated to a fixed point from Q(W); then triangle-greedy passes."""
    H, W = damp(H, W, percdamp)
    n = H.shape[0]
    perm = np.argsort(np.diag(H), kind="stable")
    W = W[:, perm]
    H = H[perm][:, perm]
    H = H / np.diag(H).max()
    G = np.linalg.inv(admm_feedback(H) + np.eye(n))

    def Q(X):
        return np.array([[nearest(grid.table(r, perm[k]), X[r, k]) for k in range(n)] for r in range(X.shape[0])])

    What = Q(W)
    for _ in range(n):
        nxt = Q(What - (What - W) @ G)
        if (nxt == What).all():
            break
        What = nxt
    Hn = H / np.diag(H)[None, :]
    upper, lower = np.triu(Hn, 1), np.tril(Hn, -1)
    for _ in range(passes):
        target = W + (W - What) @ upper
        steps = 0
        for _ in range(n):
            steps += 1
            nxt = Q(target + (W - What) @ lower)
            if (nxt == What).all():
                break
            What = nxt
        if steps == 1:
            break
    out = np.zeros_like(What)
    out[:, perm] = What
    return out


def rtn_then_greedy(W, H, grid, percdamp, passes):
    H, W = damp(H, W, percdamp)
    n = H.shape[0]
    Q = np.array([[nearest(grid.table(r, k), W[r, k]) for k in range(n)] for r in range(W.shape[0])])
    return greedy(W, Q, H, grid, np.arange(n), passes)


def haar(n, rng):
    """A Haar-random orthogonal matrix (QR of a Gaussian, R's diagonal made positive), as f32."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def rms_tables(W, bits):
    """QuIP's qfn b: per output channel (row of W [out, in]) 2^b levels over +-2.4 rms, as f32
    level (k - maxq/2) times f32 step 2s/maxq (lutlab stores that step as the channel's scale)."""
    maxq = 2**bits - 1
    tables = []
    for r in range(W.shape[0]):
        s = 2.4 * np.sqrt(np.mean(W[r].astype(np.float64) ** 2)) + 1e-16
        step = np.float32(s * 2 / maxq)
        tables.append(np.array([np.float32(k - maxq / 2) * step for k in range(maxq + 1)], dtype=np.float32))
    return tables


def incoherence_case(W, H, rng):
    n_out, n_in = W.shape
    factors = {}
    dense = {}
    for side, n, (a, b) in [("in", n_in, (8, 6)), ("out", n_out, (5, 4))]:
        A, B, perm = haar(a, rng), haar(b, rng), rng.permutation(n)
        P = np.eye(n)[perm]  # (P x)[i] = x[perm[i]]
        dense[side] = np.kron(A.astype(np.float64), B.astype(np.float64)) @ P
        factors[side] = {"a": a, "b": b, "factor_a": A.flatten().tolist(), "factor_b": B.flatten().tolist(), "perm": perm.tolist()}
    V, U = dense["in"], dense["out"]
    # preproc: rescale (H normalised by its largest entry), then project.
    Hs = H / np.abs(H).max()
    diagH = np.clip(np.diag(Hs), 1e-8, None)
    diagW2 = np.clip(np.sum(W.astype(np.float64) ** 2, axis=0), 1e-8, None)
    s = np.clip((diagH / diagW2) ** 0.25, 1e-8, None)
    Wp = W * s[None, :]
    Hp = Hs / s[None, :] / s[:, None]
    Hp = Hp * (n_in / (np.trace(Hp) + 1e-8)) + 1e-2 * np.eye(n_in)
    Wp = (U @ Wp @ V.T).astype(np.float32).astype(np.float64)
    Hp = V @ Hp @ V.T
    tables = rms_tables(Wp, 2)
    grid = Tables("fixed", Wp, tables=tables, per_table=1)
    Q = ldlq(Wp, Hp, grid, percdamp=0.01, act_order=True, passes=1)
    # postproc, with the f32 input scales lutlab stores.
    input_scale = (1.0 / s).astype(np.float32).astype(np.float64)
    W_hat = (U.T @ Q @ V) * input_scale[None, :]
    return {
        "rotations": factors,
        "input_scale": input_scale.tolist(),
        "rotated_weights": Wp.T.flatten().tolist(),
        "rotated_values": Q.T.flatten().tolist(),
        "values": W_hat.T.flatten().tolist(),
        "proxy": proxy(W, W_hat, H),
    }


def main():
    rng = np.random.default_rng(7)
    n_in, n_out, n_tok = 48, 20, 200  # the incoherence case factors them as 8 x 6 and 5 x 4
    W = rng.standard_normal((n_out, n_in)).astype(np.float32).astype(np.float64)
    # Correlated inputs with one dead feature, as real activations have.
    mix = rng.standard_normal((n_in, n_in)) * 0.3 + np.eye(n_in)
    X = (mix @ rng.standard_normal((n_in, n_tok))).astype(np.float32).astype(np.float64)
    X[5] = 0
    N = 8  # windows
    H = 2.0 / N * X @ X.T

    per_channel4 = [minmax_asym_table(W[r], 4) for r in range(n_out)]
    lut3 = [np.sort(rng.standard_normal(8)).astype(np.float32) for _ in range(n_out // 4)]
    cases = []

    def case(name, algo, grid_desc, grid_factory, **kw):
        Q = algo(W, H, grid_factory(), **kw)
        cases.append({"name": name, "grid": grid_desc, "settings": kw, "values": Q.T.flatten().tolist(), "proxy": proxy(W, Q, H)})

    fixed4 = lambda: Tables("fixed", W, tables=per_channel4, per_table=1)
    desc4 = {"kind": "tables", "levels": 16, "channels_per_table": 1, "tables": np.concatenate(per_channel4).tolist()}
    fixed_lut = lambda: Tables("fixed", W, tables=lut3, per_table=4)
    desc_lut = {"kind": "tables", "levels": 8, "channels_per_table": 4, "tables": np.concatenate(lut3).tolist()}
    case("gptq", gptq, desc4, fixed4, percdamp=0.01, act_order=False)
    case("gptq act-order", gptq, desc4, fixed4, percdamp=0.01, act_order=True)
    case("ldlq", ldlq, desc4, fixed4, percdamp=0.01, act_order=False, passes=0)
    case("ldlq-rg", ldlq, desc4, fixed4, percdamp=0.01, act_order=True, passes=2)
    case("greedy", rtn_then_greedy, desc4, fixed4, percdamp=0.01, passes=2)
    case("ldlbal-admm", ldlbal_admm, desc4, fixed4, percdamp=0.01, passes=2)
    case("gptq lut", gptq, desc_lut, fixed_lut, percdamp=0.01, act_order=False)
    case("gptq groups", gptq, {"kind": "groups", "size": 16, "bits": 3, "static": False},
         lambda: Tables("dynamic", W, bits=3, group=16), percdamp=0.01, act_order=False)
    case("gptq static groups act-order", gptq, {"kind": "groups", "size": 16, "bits": 3, "static": True},
         lambda: Tables("static", W, bits=3, group=16), percdamp=0.01, act_order=True)

    # A finite-grid counterexample in the spirit of QuIP's `gptq_counter.py`: on the grid {0, 1}
    # nearest rounding keeps every weight at 0, while GPTQ's error feedback pushes the second
    # weight past 0.5 and the proxy loss ends up several times nearest's (found by a random search
    # over 4x4 problems; the feedback is optimal only without the grid's bounds).
    Wc = np.array([[0.38, 0.34, 0.16, 0.06]])
    Hc = np.array([[6.96, -6.1, -5.25, -0.85], [-6.1, 10.06, 5.95, 2.96], [-5.25, 5.95, 4.65, 0.94], [-0.85, 2.96, 0.94, 1.96]])
    binary = [np.array([0.0, 1.0], dtype=np.float32)]
    Qc = gptq(Wc, Hc, Tables("fixed", Wc, tables=binary, per_table=1), percdamp=0.0, act_order=False)
    Qn = np.array([[nearest(binary[0], w) for w in Wc[0]]])
    counter = {
        "weights": Wc.T.flatten().tolist(),
        "hessian": Hc.flatten().tolist(),
        "gptq_values": Qc.T.flatten().tolist(),
        "gptq_proxy": proxy(Wc, Qc, Hc),
        "nearest_proxy": proxy(Wc, Qn, Hc),
    }
    print(f"counterexample: GPTQ proxy {counter['gptq_proxy']:.4f}, nearest {counter['nearest_proxy']:.4f}")

    fixture = {
        "incoherence": incoherence_case(W, H, rng),
        "counterexample": counter,
        "n_in": n_in,
        "n_out": n_out,
        "weights": W.T.flatten().tolist(),  # [in, out] row-major, as lutlab holds them
        "hessian": H.flatten().tolist(),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    for c in cases:
        print(f"{c['name']:>30}: proxy {c['proxy']:.6f}")


if __name__ == "__main__":
    main()
