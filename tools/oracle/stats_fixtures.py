#!/usr/bin/env python3
"""Oracle for tierwatch's drift statistics (daemon/src/stats/).

Writes deterministic JSON fixtures into daemon/tests/fixtures/stats/:

* ks_psi_cases.json -- two-sample cases on confidences rounded to 4 decimals (ties, very unequal
  sizes, tiny and huge shifts, beta/normal shapes, identical samples, the n = m = 500 edge, large
  200k-vs-200k cases stored as histograms). Per case: scipy.stats.ks_2samp D and its
  method="asymp" p-value, the effective size round(n*m/(n+m)), and PSI with reference-decile bins
  computed here by a direct numpy formula, plus the no-drift noise level.
* kstwo.json -- scipy.stats.kstwo.sf(d, n) on a grid of (d, n) pairs.
* chi2.json -- scipy.stats.chi2.ppf(q, df).
* proportions.json -- Wilson intervals (scipy binomtest(...).proportion_ci(method="wilson")) and
  one-sided pooled two-proportion z tests (z by formula, p from scipy.stats.norm.sf).

Values are recorded on the 1e-4 grid: value v <-> grid point k = round(v * 1e4) in 0..=10000.

PSI bin rule (identical in daemon/src/stats/psi.rs):
  Let the reference hold n values on the grid and B be the requested number of bins. For
  i = 1..B-1, the candidate edge e_i is the ceil(i*n/B)-th smallest reference grid point
  (1-based), i.e. the inverted-CDF (type 1) quantile at i/B computed in integer arithmetic.
  Duplicate candidates are collapsed and a candidate equal to the top grid point 10000 (value 1.0)
  is dropped (no value can lie above it). With the remaining sorted edges e_1 < ... < e_K the bins
  are (-inf, e_1], (e_1, e_2], ..., (e_K, +inf): a grid point k falls into bin #{e : e < k}.
  Shares are count / total, floored at `floor` (max(share, floor), no renormalisation), and
  PSI = sum_i (cur_i - ref_i) * ln(cur_i / ref_i). The noise level is
  (1/n + 1/m) * chi2.ppf(q, K) where K + 1 is the number of bins actually used.

Usage: python tools/oracle/stats_fixtures.py [--out DIR]
"""

import argparse
import json
import math
import os

import numpy as np
import scipy
from scipy import stats

SEED = 20260105
GRID = 10_000


def to_grid(values):
    """Round to 4 decimals and clamp to [0, 1]; return (float values, integer grid points)."""
    v = np.clip(np.round(np.asarray(values, dtype=np.float64), 4), 0.0, 1.0)
    k = np.rint(v * GRID).astype(np.int64)
    return v, k


def psi_edges(ref_k, bins):
    s = np.sort(ref_k)
    n = len(s)
    cand = []
    for i in range(1, bins):
        rank = (i * n + bins - 1) // bins  # ceil(i*n/B), 1-based
        cand.append(int(s[rank - 1]))
    edges = sorted(set(c for c in cand if c < GRID))
    return edges


def psi_direct(ref_k, cur_k, edges, floor):
    e = np.asarray(edges, dtype=np.int64)
    nb = len(edges) + 1
    r = np.bincount(np.searchsorted(e, ref_k, side="left"), minlength=nb) / len(ref_k)
    c = np.bincount(np.searchsorted(e, cur_k, side="left"), minlength=nb) / len(cur_k)
    r = np.maximum(r, floor)
    c = np.maximum(c, floor)
    return float(np.sum((c - r) * np.log(c / r)))


def hist_pairs(k):
    bins, counts = np.unique(k, return_counts=True)
    return [[int(b), int(c)] for b, c in zip(bins, counts)]


def sample_repr(v, k, as_hist):
    if as_hist:
        return {"hist": hist_pairs(k)}
    return {"values": [float(x) for x in v]}


def case(name, ref, cur, as_hist=None, psi_bins=(10,), floor=1e-4, q=0.999):
    rv, rk = to_grid(ref)
    cv, ck = to_grid(cur)
    n, m = len(rv), len(cv)
    if as_hist is None:
        # Raw values (exercising ConfHist::record) for small samples, histograms for big ones.
        as_hist = max(n, m) > 5000
    res = stats.ks_2samp(rv, cv, method="asymp")
    big, small = sorted([float(n), float(m)], reverse=True)
    n_eff = int(np.round(big * small / (big + small)))
    out = {
        "name": name,
        "n": n,
        "m": m,
        "ref": sample_repr(rv, rk, as_hist),
        "cur": sample_repr(cv, ck, as_hist),
        "ks_d": float(res.statistic),
        "ks_p_asymp": float(res.pvalue),
        "n_eff": n_eff,
        "kstwo_sf_at_d": float(stats.kstwo.sf(float(res.statistic), n_eff)),
        "psi": [],
    }
    for b in psi_bins:
        edges = psi_edges(rk, b)
        used = len(edges) + 1
        out["psi"].append(
            {
                "bins": b,
                "floor": floor,
                "edges": edges,
                "psi": psi_direct(rk, ck, edges, floor),
                "noise_q": q,
                "noise": (1.0 / n + 1.0 / m) * float(stats.chi2.ppf(q, used - 1)) if used > 1 else 0.0,
            }
        )
    return out


def clipped_normal(rng, mu, sd, size):
    return np.clip(rng.normal(mu, sd, size), 0.0, 1.0)


def ks_psi_cases(rng):
    cases = []
    # Heavy ties: values on a 0.01 grid, and a mostly-saturated classifier (mass at 1.0 and 0.0).
    cases.append(case("ties_coarse_grid", np.round(rng.beta(5, 2, 600), 2), np.round(rng.beta(5, 2.3, 700), 2)))
    sat_ref = np.where(rng.random(3000) < 0.4, 1.0, rng.beta(8, 2, 3000))
    sat_cur = np.where(rng.random(2500) < 0.3, 1.0, rng.beta(8, 2, 2500))
    sat_cur[:200] = 0.0
    cases.append(case("ties_saturated", sat_ref, sat_cur, psi_bins=(10, 20)))
    cases.append(case("ties_few_levels", rng.choice([0.1, 0.5, 0.9], 800), rng.choice([0.1, 0.5, 0.9], 900, p=[0.3, 0.3, 0.4])))
    # Very unequal sizes.
    cases.append(case("unequal_50_vs_20000", rng.beta(2, 5, 50), rng.beta(2, 5, 20000)))
    cases.append(case("unequal_500_vs_20000", rng.beta(2, 5, 500), rng.beta(2.1, 5, 20000)))
    cases.append(case("unequal_20000_vs_600_shift", clipped_normal(rng, 0.6, 0.1, 20000), clipped_normal(rng, 0.62, 0.1, 600)))
    # Shifts: tiny and huge.
    base = clipped_normal(rng, 0.7, 0.12, 5000)
    cases.append(case("shift_0.001", base, clipped_normal(rng, 0.701, 0.12, 5000)))
    cases.append(case("shift_0.3", clipped_normal(rng, 0.6, 0.1, 2000), clipped_normal(rng, 0.3, 0.1, 2000)))
    cases.append(case("shift_0.02_n3000", clipped_normal(rng, 0.5, 0.15, 3000), clipped_normal(rng, 0.52, 0.15, 3000)))
    # Shapes.
    cases.append(case("beta_2_5_vs_2.2_5", rng.beta(2, 5, 3000), rng.beta(2.2, 5, 4000), psi_bins=(5, 10, 20)))
    cases.append(case("beta_u_shape", rng.beta(0.5, 0.5, 2000), rng.beta(0.6, 0.5, 2500)))
    cases.append(case("normal_vs_beta", clipped_normal(rng, 0.7, 0.1, 1500), rng.beta(14, 6, 1500)))
    # Identical samples.
    same = rng.beta(3, 3, 1000)
    cases.append(case("identical", same, same.copy()))
    # The n = m = 500 edge and its odd neighbour (n*m/(n+m) = 250.5 -> round half to even = 250).
    cases.append(case("edge_500", rng.beta(4, 2, 500), rng.beta(4, 2, 500)))
    cases.append(case("edge_500_shift", rng.beta(4, 2, 500), rng.beta(4.4, 2, 500)))
    cases.append(case("edge_501", rng.beta(4, 2, 501), rng.beta(4, 2, 501)))
    # Random draws (half null, half slightly shifted) with p-values spread over [0, 1]: the 1e-3
    # contract region.
    for i in range(24):
        n = int(rng.integers(500, 4000))
        m = int(rng.integers(500, 4000))
        a, b = rng.uniform(0.5, 8, 2)
        delta = rng.choice([0.0, 0.0, 0.3, 0.6]) * a / 8
        cases.append(case(f"draw_{i:02d}", rng.beta(a, b, n), rng.beta(a + delta, b, m)))
    # Small samples (p-values reported, not held to the 1e-3 contract).
    for i, (n, m) in enumerate([(20, 30), (60, 60), (100, 140), (10, 5000), (300, 450), (499, 499)]):
        cases.append(case(f"small_{i}_{n}x{m}", rng.beta(2, 3, n), rng.beta(2, 3.3, m)))
    # Large cases, stored as histograms.
    cases.append(case("large_200k_shift_0.002", clipped_normal(rng, 0.65, 0.15, 200_000), clipped_normal(rng, 0.652, 0.15, 200_000), as_hist=True))
    cases.append(case("large_200k_same", rng.beta(6, 3, 200_000), rng.beta(6, 3, 200_000), as_hist=True))
    cases.append(case("large_300k_vs_50k_mixture", rng.beta(6, 3, 300_000), np.concatenate([rng.beta(6, 3, 48_500), rng.beta(2, 6, 1_500)]), as_hist=True))
    return cases


def kstwo_grid():
    out = []
    ns = [1, 2, 3, 5, 10, 20, 50, 100, 139, 140, 141, 200, 250, 251, 400, 500, 1000, 2000, 5000,
          10_000, 50_000, 100_000, 100_001, 250_000, 1_000_000, 5_000_000, 20_000_000]
    xs = [0.05, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.36, 1.5, 1.63, 1.8, 1.95, 2.2, 2.5, 3.0, 3.5, 4.0]
    for n in ns:
        ds = set()
        for x in xs:
            d = x / math.sqrt(n)
            if d < 1.0:
                ds.add(round(d, 12))
        for d in (0.5 / n, 0.75 / n, 1.0 / n, 1.5 / n, 0.02, 0.1, 0.3, 0.5, 0.51, 0.7, 0.9, 1.0 - 1.0 / n, 1.0, 1.2):
            if 0.0 <= d <= 1.2:
                ds.add(round(d, 15))
        for d in sorted(ds):
            out.append({"n": n, "d": d, "sf": float(stats.kstwo.sf(d, n)), "cdf": float(stats.kstwo.cdf(d, n))})
    return out


def chi2_table():
    out = []
    for q in (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999):
        for df in (1, 2, 3, 4, 5, 7, 9, 10, 19, 49):
            out.append({"q": q, "df": df, "ppf": float(stats.chi2.ppf(q, df))})
    return out


def proportions():
    wilson = []
    for x, n in [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (1, 1000), (999, 1000), (50, 100), (12345, 100000), (7, 500000)]:
        for conf in (0.95, 0.99):
            ci = stats.binomtest(x, n).proportion_ci(confidence_level=conf, method="wilson")
            z = float(stats.norm.ppf(0.5 + conf / 2))
            wilson.append({"x": x, "n": n, "z": z, "lo": float(ci.low), "hi": float(ci.high)})
    two = []
    for x1, n1, x2, n2 in [(60, 1000, 40, 1000), (40, 1000, 60, 1000), (5, 50, 4, 60), (1200, 10000, 1000, 10000),
                           (33, 300, 30, 300), (0, 100, 1, 100), (1, 2, 0, 3)]:
        p1, p2 = x1 / n1, x2 / n2
        pp = (x1 + x2) / (n1 + n2)
        z = (p1 - p2) / math.sqrt(pp * (1 - pp) * (1 / n1 + 1 / n2))
        two.append({"x1": x1, "n1": n1, "x2": x2, "n2": n2, "z": z, "p": float(stats.norm.sf(z))})
    return {"wilson": wilson, "two_proportion": two}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "..", "daemon", "tests", "fixtures", "stats")
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    meta = {"generator": "tools/oracle/stats_fixtures.py", "seed": SEED, "numpy": np.__version__, "scipy": scipy.__version__}
    rng = np.random.default_rng(SEED)
    files = {
        "ks_psi_cases.json": {"meta": meta, "cases": ks_psi_cases(rng)},
        "kstwo.json": {"meta": meta, "pairs": kstwo_grid()},
        "chi2.json": {"meta": meta, "ppf": chi2_table()},
        "proportions.json": {"meta": meta, **proportions()},
    }
    for name, body in files.items():
        path = os.path.join(args.out, name)
        with open(path, "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.write("\n")
        print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
