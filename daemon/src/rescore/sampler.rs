//! Long-tail oversampling of routing decisions for rescoring and review (docs/contract.md#rescoring-slice).
//!
//! Each decision is sampled with probability `p = min(1, base_rate × boost)`, where
//! `boost = (low_margin_boost if |confidence − threshold| < low_margin_band) × (ood_boost if
//! ood_score ≥ ood_threshold)` (each factor 1 when its condition does not hold). Sampled items carry
//! `w = 1/p` so the slice's estimates can be weighted back to the population
//! ([`crate::stats::weighted`]).
//!
//! **Deterministic in `event_id`.** The draw is `u = xxh3_64(event_id, seed) / 2⁶⁴ ∈ [0, 1)` and
//! the item is sampled iff `u < p`: a replay samples the same events, every instance agrees, and a
//! duplicate event cannot be sampled twice with different outcomes. `u` is independent of
//! everything the boost looks at, which is what makes `1/p` the right weight.
//!
//! **The OOD score is lazy.** It costs a featurization of the query, so the caller passes a
//! closure and the sampler calls it only when `u < p_max` (the probability with the OOD boost
//! applied): below that line either the decision depends on the score or the item is sampled and
//! its exact `p` (hence `w`) needs it. Above it the item is out whatever the score, which is the
//! common case (≈ 1 − base_rate × low-margin boost × ood_boost of the traffic).
//!
//! The caller decides eligibility: only decisions with query text are eligible, so decisions
//! without text (redacted) should not be offered (they cannot be rescored).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{ConfigError, Validate};

/// Sampler settings (`[rescore.sampler]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    /// Sampling probability of a decision with no boost, in (0, 1]. 0.02 keeps 2% of ordinary
    /// traffic: enough for daily per-tier estimates at typical volumes, cheap to rescore.
    pub base_rate: f64,
    /// A decision has a low margin when `|confidence − threshold| < low_margin_band` (the router
    /// was nearly undecided). In [0, 1]; 0 disables the low-margin boost.
    pub low_margin_band: f64,
    /// Factor applied to `base_rate` for low-margin decisions (≥ 1).
    pub low_margin_boost: f64,
    /// A query is out of distribution when the rescorer's OOD score (in [0, 1]) is at least this.
    pub ood_threshold: f64,
    /// Factor applied to `base_rate` for out-of-distribution queries (≥ 1; multiplies with the
    /// low-margin boost).
    pub ood_boost: f64,
    /// Seed of the event-id hash. All instances of a deployment must use the same seed (they then
    /// agree on every draw); changing it draws an independent sample.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            base_rate: 0.02,
            low_margin_band: 0.1,
            low_margin_boost: 5.0,
            ood_threshold: 0.8,
            ood_boost: 5.0,
            seed: 0x7469_6572_7761_7463, // "tierwatc"
        }
    }
}

/// Reason an item got its inclusion probability (stored with the sample; the review queue is
/// stratified by it).
pub const REASONS: [&str; 4] = ["base", "low_margin", "ood", "low_margin+ood"];

/// A sampled decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Inclusion probability, in (0, 1].
    pub p: f64,
    /// Weight `1/p` (≥ 1).
    pub w: f64,
    /// One of [`REASONS`]: which boosts applied.
    pub reason: &'static str,
    /// `|confidence − threshold|`; `None` when the decision carried no threshold (no low-margin
    /// boost is possible then).
    pub margin: Option<f64>,
    /// The OOD score, when it was computed (always for a sample, unless the closure returned a
    /// non-finite value, which counts as "not out of distribution").
    pub ood: Option<f64>,
}

impl Validate for SamplerConfig {
    /// Check every field, naming the key (`rescore.sampler.<field>`) and the reason.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Invalid { key: format!("rescore.sampler.{key}"), reason: reason.to_string() })
        };
        if !(self.base_rate.is_finite() && self.base_rate > 0.0 && self.base_rate <= 1.0) {
            return bad("base_rate", "must be in (0, 1]");
        }
        if !(self.low_margin_band.is_finite() && (0.0..=1.0).contains(&self.low_margin_band)) {
            return bad("low_margin_band", "must be in [0, 1]");
        }
        if !(self.low_margin_boost.is_finite() && self.low_margin_boost >= 1.0) {
            return bad("low_margin_boost", "must be a finite number ≥ 1 (1 disables the boost)");
        }
        if !(self.ood_threshold.is_finite() && (0.0..=1.0).contains(&self.ood_threshold)) {
            return bad("ood_threshold", "must be in [0, 1]");
        }
        if !(self.ood_boost.is_finite() && self.ood_boost >= 1.0) {
            return bad("ood_boost", "must be a finite number ≥ 1 (1 disables the boost)");
        }
        Ok(())
    }
}

impl SamplerConfig {
    /// The uniform draw of `event_id`, in [0, 1): the top 53 bits of the seeded xxh3 hash.
    pub fn uniform(&self, event_id: &str) -> f64 {
        (xxh3_64_with_seed(event_id.as_bytes(), self.seed) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Decide whether the decision `event_id` (router `confidence`, `threshold` in force) is
    /// sampled. `ood` computes the query's OOD score in [0, 1]; it is called at most once, and only
    /// when the decision can depend on it (see the module docs).
    pub fn sample(
        &self,
        event_id: &str,
        confidence: f64,
        threshold: Option<f64>,
        ood: impl FnOnce() -> f64,
    ) -> Option<Sample> {
        let margin = threshold.map(|t| (confidence - t).abs()).filter(|m| m.is_finite());
        let low_margin = margin.is_some_and(|m| m < self.low_margin_band);
        let p_margin = self.base_rate * if low_margin { self.low_margin_boost } else { 1.0 };
        let p_max = (p_margin * self.ood_boost).min(1.0);
        let u = self.uniform(event_id);
        if u >= p_max {
            // Out whatever the OOD score: don't pay for it.
            return None;
        }
        let score = ood();
        let score = score.is_finite().then(|| score.clamp(0.0, 1.0));
        let is_ood = score.is_some_and(|s| s >= self.ood_threshold);
        let p = (p_margin * if is_ood { self.ood_boost } else { 1.0 }).min(1.0);
        if u >= p {
            return None;
        }
        let reason = match (low_margin, is_ood) {
            (false, false) => REASONS[0],
            (true, false) => REASONS[1],
            (false, true) => REASONS[2],
            (true, true) => REASONS[3],
        };
        Some(Sample { p, w: 1.0 / p, reason, margin, ood: score })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::sim::rng::Rng;
    use crate::stats::WeightedProportion;

    fn cfg() -> SamplerConfig {
        SamplerConfig::default()
    }

    #[test]
    fn defaults_validate_and_bad_values_name_the_key() {
        cfg().validate().unwrap();
        type Breaks = fn(&mut SamplerConfig);
        let cases: [(&str, Breaks); 6] = [
            ("rescore.sampler.base_rate", |c| c.base_rate = 0.0),
            ("rescore.sampler.base_rate", |c| c.base_rate = f64::NAN),
            ("rescore.sampler.low_margin_band", |c| c.low_margin_band = -0.1),
            ("rescore.sampler.low_margin_boost", |c| c.low_margin_boost = 0.5),
            ("rescore.sampler.ood_threshold", |c| c.ood_threshold = 1.5),
            ("rescore.sampler.ood_boost", |c| c.ood_boost = f64::INFINITY),
        ];
        for (key, f) in cases {
            let mut c = cfg();
            f(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn config_rejects_unknown_keys_and_fills_defaults() {
        let c: SamplerConfig = serde_json::from_str(r#"{"base_rate": 0.05}"#).unwrap();
        assert_eq!(c, SamplerConfig { base_rate: 0.05, ..cfg() });
        assert!(serde_json::from_str::<SamplerConfig>(r#"{"base_rat": 0.05}"#).is_err());
    }

    #[test]
    fn deterministic_in_event_id_and_seed() {
        let c = cfg();
        let a: Vec<_> = (0..5000).map(|i| c.sample(&format!("e{i}"), 0.55, Some(0.5), || 0.9)).collect();
        let b: Vec<_> = (0..5000).map(|i| c.sample(&format!("e{i}"), 0.55, Some(0.5), || 0.9)).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(Option::is_some));
        let other = SamplerConfig { seed: 1, ..cfg() };
        let d: Vec<_> = (0..5000).map(|i| other.sample(&format!("e{i}"), 0.55, Some(0.5), || 0.9)).collect();
        assert_ne!(a, d, "another seed draws another sample");
        for i in 0..1000 {
            let u = c.uniform(&format!("x{i}"));
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn probabilities_reasons_and_weights() {
        let c = cfg();
        // Find ids sampled under each condition; check p, w, reason, margin and ood exactly.
        let find = |conf: f64, ood: f64| {
            (0..100_000).find_map(|i| c.sample(&format!("id{i}"), conf, Some(0.5), || ood)).unwrap()
        };
        let s = find(0.9, 0.1);
        assert_eq!((s.p, s.w, s.reason, s.ood), (0.02, 50.0, "base", Some(0.1)));
        assert!((s.margin.unwrap() - 0.4).abs() < 1e-15);
        let s = find(0.55, 0.1);
        assert_eq!((s.p, s.reason), (0.1, "low_margin"));
        let s = find(0.9, 0.8);
        assert_eq!((s.p, s.reason), (0.1, "ood"));
        let s = find(0.45, 0.95);
        assert_eq!((s.p, s.w, s.reason), (0.5, 2.0, "low_margin+ood"));
        // No threshold: no margin, no low-margin boost.
        let s = (0..100_000).find_map(|i| c.sample(&format!("id{i}"), 0.5, None, || 0.0)).unwrap();
        assert_eq!((s.p, s.reason, s.margin), (0.02, "base", None));
        // p is capped at 1.
        let big = SamplerConfig { base_rate: 0.5, ..cfg() };
        let s = big.sample("anything", 0.5, Some(0.5), || 1.0).unwrap();
        assert_eq!((s.p, s.w), (1.0, 1.0));
        // A non-finite OOD score counts as in-distribution and is not recorded.
        let s = (0..100_000).find_map(|i| c.sample(&format!("id{i}"), 0.9, Some(0.5), || f64::NAN)).unwrap();
        assert_eq!((s.p, s.reason, s.ood), (0.02, "base", None));
    }

    /// Over N ids the sampled fraction is Binomial(N, p): asserted within 4.5 standard errors
    /// (deterministic hashes, so this either always passes or always fails; 4.5 SE leaves room for
    /// an unlucky but legitimate hash without hiding a wrong p, which is off by ≥ 20 SE here).
    #[test]
    fn sampled_fraction_matches_p() {
        let c = cfg();
        const N: usize = 200_000;
        for (conf, ood, p) in [(0.9, 0.0, 0.02), (0.52, 0.0, 0.1), (0.9, 0.9, 0.1), (0.52, 0.9, 0.5)] {
            let k = (0..N).filter(|i| c.sample(&format!("evt-{i}"), conf, Some(0.5), || ood).is_some()).count();
            let frac = k as f64 / N as f64;
            let se = (p * (1.0 - p) / N as f64).sqrt();
            println!("p = {p}: sampled {frac:.5} ({:+.2} SE)", (frac - p) / se);
            assert!((frac - p).abs() <= 4.5 * se, "p = {p}: sampled fraction {frac}");
        }
    }

    #[test]
    fn ood_closure_called_only_when_needed() {
        let c = cfg();
        let calls = Cell::new(0usize);
        let (mut sampled, mut expected_calls) = (0usize, 0usize);
        const N: usize = 50_000;
        for i in 0..N {
            let id = format!("q{i}");
            let u = c.uniform(&id);
            // Not low margin: p0 = 0.02, p_max = 0.1.
            expected_calls += (u < 0.1) as usize;
            let before = calls.get();
            let s = c.sample(&id, 0.9, Some(0.5), || {
                calls.set(calls.get() + 1);
                0.3
            });
            let called = calls.get() > before;
            assert_eq!(called, u < 0.1, "{id}: u = {u}");
            if let Some(s) = s {
                sampled += 1;
                assert!(called && s.ood == Some(0.3));
            }
        }
        assert_eq!(calls.get(), expected_calls);
        // About 10% of ids cost a featurization, 2% are sampled.
        assert!(calls.get() < N / 8 && sampled < calls.get() / 3, "{} calls, {sampled} sampled", calls.get());
        // Without an OOD boost the score can't change the decision: called only for samples.
        let no_ood = SamplerConfig { ood_boost: 1.0, ..cfg() };
        let calls = Cell::new(0usize);
        let mut sampled = 0;
        for i in 0..N {
            sampled += no_ood
                .sample(&format!("q{i}"), 0.9, Some(0.5), || {
                    calls.set(calls.get() + 1);
                    0.99
                })
                .is_some() as usize;
        }
        assert_eq!(calls.get(), sampled);
    }

    /// The weights make the slice's estimate unbiased; the unweighted slice rate is not.
    ///
    /// Population: 20 000 decisions, threshold 0.5, confidence uniform, OOD score `v³` with `v`
    /// uniform (7.2% of queries score ≥ 0.8). A misroute is far more likely where the sampler
    /// oversamples: P = 0.02 ordinarily, 0.25 at low margin, 0.40 when OOD, 0.60 when both. Truth
    /// is fixed (one population); 200 sampler seeds draw 200 independent Poisson samples (~900
    /// items each) of it.
    ///
    /// Measured (printed; this population and these seeds are fixed, so the figures are too): true
    /// rate 0.0905, mean sample 924; Hájek mean 0.09049 (−0.01 SE of the mean); unweighted mean
    /// 0.248 (+185 SE). Coverage of the true rate: linearization-Wilson 98.0%, Kish-Wilson 100.0%
    /// with intervals 1.50× as wide. Kish's `R(1−R)·Σw²/(Σw)²` ignores that y is concentrated at
    /// small weights and overstates the variance; the linearization variance is still a little
    /// conservative here because it omits the finite-population factor (1 − p), which matters in
    /// the p = 0.5 stratum. Neither under-covers; the narrower correct-coverage one is used.
    /// See `stats::weighted` for why the interval uses the linearization effective size.
    #[test]
    fn hajek_is_unbiased_and_covers_unweighted_is_biased() {
        const N: usize = 20_000;
        const SEEDS: u64 = 200;
        let mut rng = Rng::new(20260214);
        let pop: Vec<(f64, f64, bool)> = (0..N)
            .map(|_| {
                let conf = rng.f64();
                let ood = rng.f64().powi(3);
                let low = (conf - 0.5).abs() < 0.1;
                let hi_ood = ood >= 0.8;
                let pm = match (low, hi_ood) {
                    (false, false) => 0.02,
                    (true, false) => 0.25,
                    (false, true) => 0.40,
                    (true, true) => 0.60,
                };
                (conf, ood, rng.bool(pm))
            })
            .collect();
        let truth = pop.iter().filter(|x| x.2).count() as f64 / N as f64;
        let (mut cover, mut cover_kish) = (0u64, 0u64);
        let (mut hajek, mut unweighted, mut sizes, mut ratio) = (vec![], vec![], vec![], vec![]);
        for seed in 0..SEEDS {
            let c = SamplerConfig { seed, ..cfg() };
            let mut acc = WeightedProportion::new();
            let (mut k, mut pos) = (0u64, 0u64);
            for (i, &(conf, ood, y)) in pop.iter().enumerate() {
                if let Some(s) = c.sample(&format!("pop-{i}"), conf, Some(0.5), || ood) {
                    acc.add(s.w, y).unwrap();
                    k += 1;
                    pos += y as u64;
                }
            }
            let (lo, hi) = acc.interval95().unwrap();
            let (klo, khi) = acc.kish_interval95().unwrap();
            cover += (lo <= truth && truth <= hi) as u64;
            cover_kish += (klo <= truth && truth <= khi) as u64;
            hajek.push(acc.rate().unwrap());
            unweighted.push(pos as f64 / k as f64);
            sizes.push(k as f64);
            ratio.push((khi - klo) / (hi - lo));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let se_of_mean = |v: &[f64]| {
            let m = mean(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 / v.len() as f64).sqrt()
        };
        let coverage = cover as f64 / SEEDS as f64;
        let coverage_kish = cover_kish as f64 / SEEDS as f64;
        let (h, u) = (mean(&hajek), mean(&unweighted));
        let (h_z, u_z) = ((h - truth) / se_of_mean(&hajek), (u - truth) / se_of_mean(&unweighted));
        println!(
            "rescoring slice, {SEEDS} seeds, mean sample {:.0}: true rate {truth:.5}; Hájek mean {h:.5} \
             ({h_z:+.2} SE of the mean); unweighted mean {u:.5} ({u_z:+.1} SE); 95% coverage: linearization-Wilson \
             {:.1}%, Kish-Wilson {:.1}% (Kish intervals {:.2}x as wide)",
            mean(&sizes),
            coverage * 100.0,
            coverage_kish * 100.0,
            mean(&ratio),
        );
        assert!(coverage >= 0.93, "coverage {coverage}");
        assert!(h_z.abs() < 3.0, "Hájek estimate biased: {h_z} SE");
        assert!(u_z > 20.0, "unweighted rate should be biased upward by many SE, got {u_z}");
    }
}
