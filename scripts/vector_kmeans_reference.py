#!/usr/bin/env python3
"""Independent reference for lutlab's vector look-up tables (issue 20, `--vector-dim`): weighted
k-means in d dimensions by scikit-learn (`KMeans(...).fit(X, sample_weight=w)`), on point sets
like the weights a vector codebook sees (Gaussian bulk, heavy-tailed outliers, correlated
pairs), with a weight per point (lutlab weights each element; with every element of a point
weighted alike the two objectives are the same function). Writes
tests/fixtures/vector_kmeans_reference.json: the points (f32 values), weights, k, and
scikit-learn's objective (inertia) with one k-means++ start and with the best of 10.

    python3 scripts/vector_kmeans_reference.py   # scikit-learn 1.9.1, numpy 2.4.6 made the fixture
"""
import json
import numpy as np
from sklearn.cluster import KMeans


def case(name, x, w, k):
    x = x.astype(np.float32)
    w = w.astype(np.float32)
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    one = KMeans(n_clusters=k, n_init=1, max_iter=300, random_state=0).fit(xd, sample_weight=wd)
    best = KMeans(n_clusters=k, n_init=10, max_iter=300, random_state=0).fit(xd, sample_weight=wd)
    return {
        "name": name,
        "dim": int(x.shape[1]),
        "k": k,
        "x": [float(v) for v in x.ravel()],
        "w": [float(v) for v in w],
        "sklearn_one_start": float(one.inertia_),
        "sklearn_best_of_10": float(best.inertia_),
    }


def main():
    rng = np.random.default_rng(20261205)
    cases = []
    # Correlated pairs with a few outliers, Fisher-like weights (heavy-tailed): 16 entries (2 bits x 2).
    n = 1200
    base = rng.standard_normal((n, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    base[:12] *= 8.0
    cases.append(case("pairs, 2 bits per weight, Fisher-like weights", 0.02 * base, rng.exponential(1.0, n) ** 2, 16))
    # Four-dimensional vectors, uniform weights: 16 entries (1 bit x 4).
    n = 600
    cases.append(case("4-vectors, 1 bit per weight", 0.05 * rng.standard_t(4, (n, 4)), np.ones(n), 16))
    # Pairs at 3 bits per weight: 64 entries.
    n = 800
    cases.append(case("pairs, 3 bits per weight", rng.laplace(0.0, 0.03, (n, 2)), rng.uniform(0.1, 2.0, n), 64))
    out = {"generator": "scripts/vector_kmeans_reference.py", "cases": cases}
    with open("tests/fixtures/vector_kmeans_reference.json", "w") as f:
        json.dump(out, f)
    for c in cases:
        print(c["name"], c["sklearn_one_start"], c["sklearn_best_of_10"])


if __name__ == "__main__":
    main()
