"""Oracle for the end-to-end drift test (tests/drift.rs): regenerates the exact confidences that
the test sends for classifier version "shift" and its training reference file, and computes with
scipy/numpy what confidence_drift_daily must hold for every complete day, daily and 7-day:
n, KS D (scipy.stats.ks_2samp on the 1e-4-rounded values), the p-value at the effective size
(scipy.stats.kstwo.sf(D, round(n_ref * conv / (n_ref + conv))), conversations as the current
sample's size), PSI on the reference's frozen deciles, and the PSI noise level.

    /tmp/oracle/bin/python tools/oracle/drift_scenario.py   # writes daemon/tests/fixtures/drift_scenario.json
"""

import json
import math
import pathlib

import numpy as np
from scipy import stats

from stats_fixtures import psi_direct, psi_edges, to_grid

PHI = 0.618_033_988_749_895
DAYS = 30
PER_DAY = 700
REF_N = 20_000


def frac(x):
    return x - math.floor(x)


def confidence(u, shift):
    # The Rust side: (clamp(0.35 + 0.6·u^0.7 − shift, 0, 1) · 1e4).round() / 1e4, half away from 0.
    v = 0.35 + 0.6 * u ** 0.7 - shift
    return math.floor(min(max(v, 0.0), 1.0) * 1e4 + 0.5) / 1e4


def shift_of(day):
    return 0.15 if 14 <= day <= 20 else 0.0


def day_values(day):
    out = []
    for i in range(PER_DAY):
        turns = 2 if i % 3 == 0 else 1
        for k in range(turns):
            u = frac((i * 2 + k) * PHI + day * 0.137)
            out.append(confidence(u, shift_of(day)))
    return out


def main():
    ref_v, ref_k = to_grid([confidence(frac(j * PHI), 0.0) for j in range(REF_N)])
    edges = psi_edges(ref_k, 10)
    days = {d: day_values(d) for d in range(DAYS)}
    rows = []
    for day in range(DAYS - 1):  # the last day is incomplete at the end of the stream
        for window, span in (("1d", [day]), ("7d", [d for d in range(day - 6, day + 1) if d >= 0])):
            cur = [v for d in span for v in days[d]]
            cur_v, cur_k = to_grid(cur)
            conv = PER_DAY * len(span)
            d = float(stats.ks_2samp(ref_v, cur_v).statistic)
            n_eff = int(np.round(REF_N * conv / (REF_N + conv)))
            rows.append(
                {
                    "day": day,
                    "window": window,
                    "n": len(cur),
                    "n_eff": conv,
                    "ks_d": d,
                    "ks_p": float(stats.kstwo.sf(d, n_eff)),
                    "psi": psi_direct(ref_k, cur_k, edges, 1e-4),
                    "psi_noise": (1 / REF_N + 1 / conv) * float(stats.chi2.ppf(0.999, len(edges))),
                }
            )
    out = pathlib.Path(__file__).resolve().parents[2] / "daemon/tests/fixtures/drift_scenario.json"
    out.write_text(json.dumps({"reference_n": REF_N, "psi_edges": edges, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
