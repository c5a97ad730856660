#!/usr/bin/env python3
"""Oracle for tierwatch's weighted proportions (daemon/src/stats/weighted.rs).

Writes daemon/tests/fixtures/stats/weighted.json: a list of cases, each a weighted 0/1 sample
(w = 1/p with p drawn like the rescoring sampler's inclusion probabilities, y correlated with p
in some cases) and, computed here independently with numpy and statsmodels:

* rate       -- Hajek estimate sum(w*y) / sum(w)  (numpy.average with weights)
* sum_w      -- sum(w)
* n_eff_kish -- Kish's effective sample size sum(w)^2 / sum(w^2)
* n_eff_lin  -- the effective size of the linearization variance of the ratio,
                R(1-R) / v with v = sum(w^2 (y-R)^2) / sum(w)^2 (computed from the residuals,
                not from the expanded sums the Rust code uses), Kish's when R is 0 or 1
* kish_lo, kish_hi -- statsmodels proportion_confint(count=R*n, nobs=n, method="wilson") at
                n = n_eff_kish
* lo, hi     -- the same at n = n_eff_lin

statsmodels' Wilson takes count and nobs as floats and only uses count/nobs and nobs, so a
fractional effective size is passed through unchanged.

Usage: python tools/oracle/weighted_fixtures.py [--out DIR]
"""

import argparse
import json
import os

import numpy as np
import statsmodels
from statsmodels.stats.proportion import proportion_confint

SEED = 20260214
ALPHA = 0.05


def figures(w, y):
    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rate = float(np.average(y, weights=w))
    sum_w = float(np.sum(w))
    kish = sum_w**2 / float(np.sum(w**2))
    v = float(np.sum(w**2 * (y - rate) ** 2)) / sum_w**2
    lin = kish if rate in (0.0, 1.0) or v <= 0.0 else rate * (1.0 - rate) / v
    klo, khi = proportion_confint(rate * kish, kish, alpha=ALPHA, method="wilson")
    lo, hi = proportion_confint(rate * lin, lin, alpha=ALPHA, method="wilson")
    # statsmodels clips to [0, 1]; the exact 0 / 1 end at rate 0 / 1 is what both implementations give.
    return {
        "rate": rate,
        "sum_w": sum_w,
        "n_eff_kish": kish,
        "n_eff_lin": lin,
        "kish_lo": float(klo),
        "kish_hi": float(khi),
        "lo": float(lo),
        "hi": float(hi),
    }


def sampled(rng, n, base, boost, corr):
    """n sampled items: inclusion p = min(1, base*boost) on a boosted share, y more likely where p is
    high when corr is set (the oversampled slice is where misroutes concentrate)."""
    boosted = rng.random(n) < 0.4
    p = np.where(boosted, np.minimum(1.0, base * boost), base)
    if corr:
        y = rng.random(n) < np.where(boosted, 0.35, 0.03)
    else:
        y = rng.random(n) < 0.1
    return (1.0 / p).tolist(), y.astype(int).tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "daemon", "tests", "fixtures", "stats"))
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    cases = []

    def add(name, w, y):
        cases.append({"name": name, "w": [float(x) for x in w], "y": [int(v) for v in y], **figures(w, y)})

    add("single_positive", [50.0], [1])
    add("single_negative", [50.0], [0])
    add("equal_weights", [50.0] * 40, [1] * 7 + [0] * 33)
    add("all_zero_mixed_weights", [50.0, 10.0, 2.0, 1.0], [0, 0, 0, 0])
    add("all_one_mixed_weights", [50.0, 10.0, 2.0, 1.0], [1, 1, 1, 1])
    add("two_strata", [50.0] * 20 + [5.0] * 20, [0] * 19 + [1] + [1] * 8 + [0] * 12)
    for i, (n, base, boost, corr) in enumerate(
        [
            (30, 0.02, 10.0, True),
            (200, 0.02, 10.0, True),
            (2000, 0.02, 25.0, True),
            (200, 0.05, 4.0, False),
            (1000, 0.01, 100.0, True),
            (500, 0.1, 20.0, False),
        ]
    ):
        w, y = sampled(rng, n, base, boost, corr)
        add(f"sampled_{i}_n{n}_boost{boost:g}_{'corr' if corr else 'indep'}", w, y)
    # Arbitrary non-integer weights (e.g. after shed reweighting).
    w = (1.0 + rng.random(300) * 99.0).tolist()
    y = (rng.random(300) < 0.2).astype(int).tolist()
    add("continuous_weights", w, y)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "weighted.json")
    with open(path, "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)} (numpy {np.__version__}, statsmodels {statsmodels.__version__})")


if __name__ == "__main__":
    main()
