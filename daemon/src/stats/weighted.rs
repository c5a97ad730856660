//! Weighted proportions for an oversampled slice (docs/contract.md#rescoring-slice): the Hájek estimator of a
//! population share from a Poisson sample with inclusion probabilities `p_i` and weights `w_i = 1/p_i`.
//!
//! An oversampled slice is a biased sample by design (low-margin and out-of-distribution queries
//! are drawn up to `boost` times more often), so its plain share of positives is *not* the
//! population rate. Weighting each sampled item by `1/p_i` undoes the oversampling:
//!
//! ```text
//! R̂ = Σ w·y / Σ w                      (Hájek: a ratio, so it never leaves [0, 1])
//! ```
//!
//! **Interval.** The textbook choice is an interval from Kish's effective sample size
//! `n_Kish = (Σw)² / Σw²`. Kish's formula assumes the weights are unrelated to `y`; here they are
//! not (we oversample exactly where misroutes concentrate), so the interval uses the effective
//! size implied by the linearization (Taylor) variance of the ratio instead:
//!
//! ```text
//! v̂ = Σ w²·(y − R̂)² / (Σw)²             n_lin = R̂(1 − R̂) / v̂
//! ```
//!
//! and reports the Wilson score interval at `(R̂, n_lin)`. With equal weights `n_lin = n_Kish = n`
//! and the interval is exactly the plain Wilson interval of [`super::wilson`]. When `R̂ ∈ {0, 1}` the
//! linearization variance is 0 and says nothing about the interval width; Wilson at `n_Kish` is
//! used there (its bound at 0 or 1 is exact, the other end comes from the effective size).
//! Why not Kish: the unbiasedness test in `crate::rescore::sampler` measures both on a population
//! where misroutes concentrate where the sampler oversamples: both cover (linearization 98.0%,
//! Kish 100.0% over 200 seeds), but Kish's intervals are 1.5× as wide, because Kish's variance
//! `R̂(1 − R̂)·Σw²/(Σw)²` charges the large weights of the (mostly negative) base stratum with the
//! full Bernoulli variance. The opposite correlation would make Kish under-cover. Both effective sizes are exposed; `n_eff` in the views is Kish's (the
//! contract column), `n_eff_interval` is the one the interval used.
//!
//! The accumulator keeps five sums, so it merges by addition (partitions, hours, instances — and
//! SQL `SUM`), and every figure is a closed-form function of the sums. `y` is a 0/1 indicator, so
//! `y² = y` and `Σw²(y − R̂)² = Σw²y·(1 − 2R̂) + R̂²·Σw²` needs only `Σw²y`.

use super::Z95;

/// Why an observation was refused by [`WeightedProportion::add`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum WeightError {
    /// Weights are `1/p` with `p ∈ (0, 1]`, so a usable weight is finite and at least 1; anything
    /// else (0, negative, NaN, ∞) would silently corrupt every sum it joins.
    #[error("weight {0} is not a finite number ≥ 1")]
    Invalid(f64),
}

/// Mergeable sums of a weighted 0/1 proportion.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WeightedProportion {
    /// Number of sampled items.
    pub n: u64,
    /// Σ w.
    pub sum_w: f64,
    /// Σ w².
    pub sum_w2: f64,
    /// Σ w·y.
    pub sum_wy: f64,
    /// Σ w²·y (for the linearization variance).
    pub sum_w2y: f64,
}

impl WeightedProportion {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one sampled item with weight `w = 1/p` and indicator `y`.
    pub fn add(&mut self, w: f64, y: bool) -> Result<(), WeightError> {
        if !(w.is_finite() && w >= 1.0) {
            return Err(WeightError::Invalid(w));
        }
        let yf = if y { 1.0 } else { 0.0 };
        self.n += 1;
        self.sum_w += w;
        self.sum_w2 += w * w;
        self.sum_wy += w * yf;
        self.sum_w2y += w * w * yf;
        Ok(())
    }

    /// Add another accumulator's sums (the result is the accumulator of both samples).
    pub fn merge(&mut self, o: &WeightedProportion) {
        self.n += o.n;
        self.sum_w += o.sum_w;
        self.sum_w2 += o.sum_w2;
        self.sum_wy += o.sum_wy;
        self.sum_w2y += o.sum_w2y;
    }

    /// The Hájek estimate `Σw·y / Σw`; `None` for an empty sample. Clamped to [0, 1] against
    /// rounding (mathematically it is a weighted mean of 0/1 values).
    pub fn rate(&self) -> Option<f64> {
        (self.n > 0 && self.sum_w > 0.0).then(|| (self.sum_wy / self.sum_w).clamp(0.0, 1.0))
    }

    /// Kish's effective sample size `(Σw)² / Σw²` (≤ n, = n for equal weights).
    pub fn n_eff(&self) -> Option<f64> {
        (self.n > 0 && self.sum_w2 > 0.0).then(|| self.sum_w * self.sum_w / self.sum_w2)
    }

    /// Linearization variance of the Hájek ratio, `Σw²(y − R̂)² / (Σw)²`.
    pub fn linearization_variance(&self) -> Option<f64> {
        let r = self.rate()?;
        let ss = self.sum_w2y * (1.0 - 2.0 * r) + r * r * self.sum_w2;
        // A sum of squares: only rounding can make it negative.
        Some(ss.max(0.0) / (self.sum_w * self.sum_w))
    }

    /// The effective size the interval uses: `R̂(1 − R̂) / v̂` from the linearization variance,
    /// falling back to Kish's when that is undefined (`R̂ ∈ {0, 1}` or `v̂ = 0`). See the module docs.
    pub fn n_eff_interval(&self) -> Option<f64> {
        let r = self.rate()?;
        let kish = self.n_eff()?;
        let v = self.linearization_variance()?;
        if r <= 0.0 || r >= 1.0 || v <= 0.0 {
            return Some(kish);
        }
        Some(r * (1.0 - r) / v)
    }

    /// The 95% interval: Wilson at `(R̂, n_eff_interval)`.
    pub fn interval95(&self) -> Option<(f64, f64)> {
        wilson_at(self.rate()?, self.n_eff_interval()?, Z95)
    }

    /// Wilson at `(R̂, n_Kish)`: the textbook interval, kept for comparison (it is what the
    /// coverage test measures against [`Self::interval95`]).
    pub fn kish_interval95(&self) -> Option<(f64, f64)> {
        wilson_at(self.rate()?, self.n_eff()?, Z95)
    }
}

/// Wilson score interval for a proportion `p` observed on a (possibly fractional) effective size
/// `n`: the formula of [`super::wilson`] with `x/n` replaced by `p`. `None` unless `p ∈ [0, 1]`,
/// `n > 0` and `z ≥ 0` are finite. Bounds are in [0, 1] with `lo ≤ p ≤ hi`, exactly 0 at `p = 0` and
/// 1 at `p = 1` (as for integer counts).
pub fn wilson_at(p: f64, n: f64, z: f64) -> Option<(f64, f64)> {
    if !(p.is_finite() && (0.0..=1.0).contains(&p) && n.is_finite() && n > 0.0 && z.is_finite() && z >= 0.0) {
        return None;
    }
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let lo = if p == 0.0 { 0.0 } else { (centre - half).clamp(0.0, p) };
    let hi = if p == 1.0 { 1.0 } else { (centre + half).clamp(p, 1.0) };
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::stats::wilson;

    fn acc(items: &[(f64, bool)]) -> WeightedProportion {
        let mut a = WeightedProportion::new();
        for &(w, y) in items {
            a.add(w, y).unwrap();
        }
        a
    }

    /// Relative closeness for sums that were accumulated in different orders.
    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
    }

    fn items() -> impl Strategy<Value = Vec<(f64, bool)>> {
        prop::collection::vec((1.0f64..200.0, any::<bool>()), 1..60)
    }

    proptest! {
        #[test]
        fn merge_equals_sequential_add(a in items(), b in items()) {
            let mut merged = acc(&a);
            merged.merge(&acc(&b));
            let all: Vec<_> = a.iter().chain(b.iter()).copied().collect();
            let seq = acc(&all);
            prop_assert_eq!(merged.n, seq.n);
            // Float sums in another association order: equal to a few ulps.
            for (x, y) in [(merged.sum_w, seq.sum_w), (merged.sum_w2, seq.sum_w2), (merged.sum_wy, seq.sum_wy),
                           (merged.sum_w2y, seq.sum_w2y)] {
                prop_assert!(close(x, y, 1e-12), "{x} vs {y}");
            }
            let (l1, h1) = merged.interval95().unwrap();
            let (l2, h2) = seq.interval95().unwrap();
            prop_assert!((l1 - l2).abs() <= 1e-9 && (h1 - h2).abs() <= 1e-9);
        }

        #[test]
        fn equal_weights_reduce_to_plain_wilson(n in 1u64..400, frac in 0.0f64..=1.0, w in 1.0f64..100.0) {
            let x = ((n as f64) * frac).floor() as u64;
            let mut a = WeightedProportion::new();
            for i in 0..n {
                a.add(w, i < x).unwrap();
            }
            let (lo, hi) = wilson(x, n, Z95).unwrap();
            for (l, h) in [a.interval95().unwrap(), a.kish_interval95().unwrap()] {
                // n_eff = (n·w)²/(n·w²) = n up to rounding in the sums: 1e-9 absolute.
                prop_assert!((l - lo).abs() <= 1e-9 && (h - hi).abs() <= 1e-9, "({l},{h}) vs ({lo},{hi})");
            }
            prop_assert!(close(a.n_eff().unwrap(), n as f64, 1e-12));
            prop_assert!(close(a.n_eff_interval().unwrap(), n as f64, 1e-9));
        }

        #[test]
        fn bounds_in_unit_interval_and_contain_rate(v in items()) {
            let a = acc(&v);
            let r = a.rate().unwrap();
            for (lo, hi) in [a.interval95().unwrap(), a.kish_interval95().unwrap()] {
                prop_assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
                prop_assert!(lo <= r && r <= hi, "{lo} ≤ {r} ≤ {hi}");
            }
            prop_assert!(a.n_eff().unwrap() <= a.n as f64 * (1.0 + 1e-12));
        }
    }

    #[test]
    fn empty_and_invalid() {
        let mut a = WeightedProportion::new();
        assert_eq!(a.rate(), None);
        assert_eq!(a.interval95(), None);
        for w in [0.0, 0.5, -1.0, f64::NAN, f64::INFINITY] {
            assert!(a.add(w, true).is_err(), "{w}");
        }
        assert_eq!(a, WeightedProportion::new());
        assert_eq!(wilson_at(1.5, 10.0, Z95), None);
        assert_eq!(wilson_at(0.5, 0.0, Z95), None);
    }

    #[test]
    fn all_zero_or_all_one_use_kish() {
        let a = acc(&[(2.0, false), (50.0, false), (10.0, false)]);
        assert_eq!(a.rate(), Some(0.0));
        assert_eq!(a.n_eff_interval(), a.n_eff());
        let (lo, hi) = a.interval95().unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0);
    }

    // ---- oracle fixture (tools/oracle/weighted_fixtures.py; numpy + statsmodels) ----------------

    /// Tolerance against the oracle: 1e-12 absolute. Both sides evaluate the same closed forms in
    /// IEEE doubles; the only differences are summation order (numpy's pairwise sum vs our
    /// sequential sum over ≤ 2000 items) and statsmodels' own arrangement of the Wilson formula,
    /// each worth a few ulps of the result.
    const ORACLE_TOL: f64 = 1e-12;

    #[derive(Deserialize)]
    struct Case {
        name: String,
        w: Vec<f64>,
        y: Vec<u8>,
        rate: f64,
        sum_w: f64,
        n_eff_kish: f64,
        n_eff_lin: f64,
        kish_lo: f64,
        kish_hi: f64,
        lo: f64,
        hi: f64,
    }

    #[test]
    fn oracle_fixture() {
        let path: PathBuf =
            [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "stats", "weighted.json"].iter().collect();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 10);
        let mut max_err = 0.0f64;
        for c in &cases {
            let mut a = WeightedProportion::new();
            for (w, y) in c.w.iter().zip(&c.y) {
                a.add(*w, *y == 1).unwrap();
            }
            let (lo, hi) = a.interval95().unwrap();
            let (klo, khi) = a.kish_interval95().unwrap();
            let rel = |got: f64, want: f64| (got - want).abs() / want.abs().max(1.0);
            let errs = [
                ("rate", (a.rate().unwrap() - c.rate).abs()),
                ("sum_w", rel(a.sum_w, c.sum_w)),
                ("n_eff_kish", rel(a.n_eff().unwrap(), c.n_eff_kish)),
                ("n_eff_lin", rel(a.n_eff_interval().unwrap(), c.n_eff_lin)),
                ("lo", (lo - c.lo).abs()),
                ("hi", (hi - c.hi).abs()),
                ("kish_lo", (klo - c.kish_lo).abs()),
                ("kish_hi", (khi - c.kish_hi).abs()),
            ];
            for (what, e) in errs {
                assert!(e <= ORACLE_TOL, "{}: {what} off by {e:e}", c.name);
                max_err = max_err.max(e);
            }
        }
        println!("weighted oracle: {} cases, max error {max_err:e} (sizes relative, bounds absolute)", cases.len());
    }
}
