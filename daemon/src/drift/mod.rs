//! Confidence drift (docs/contract.md#confidence-drift): compare each day's (and rolling 7 days') confidence histogram
//! of a classifier version with its frozen reference, and classify the result.
//!
//! This module is pure: [`evaluate`] turns histograms into a [`DriftRow`]. [`evaluator`] does the
//! I/O (reading the recorded histograms, writing `tw_drift_daily`, driving the alerts).

pub mod evaluator;
pub mod routed_share;
pub mod reference;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;
use crate::config::{first_problem, ConfigError, Validate};
use crate::stats::hist::ConfHist;
use crate::stats::ks::{effective_size, ks_two_sample_with_n_eff};
use crate::stats::psi::{psi, psi_noise, PsiBins};

/// Drift thresholds and reference settings (`[drift]`). Defaults: docs/contract.md#confidence_drift.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Evaluate only windows with at least this many decisions (current window).
    pub min_n: u64,
    /// Warning when KS D ≥ this (with p < `ks_p_max`): the classifier is leaving its range.
    pub warning_ks_d: f64,
    /// Critical when KS D ≥ this (with p < `ks_p_max`).
    pub critical_ks_d: f64,
    /// Significance gate for the KS rules.
    pub ks_p_max: f64,
    /// Warning when PSI ≥ max(this, the no-drift noise level).
    pub warning_psi: f64,
    /// Critical when PSI ≥ max(this, the no-drift noise level).
    pub critical_psi: f64,
    /// Quantile of χ²(B−1) for the PSI noise level (1/n + 1/m)·χ²_q(B−1).
    pub psi_noise_quantile: f64,
    /// PSI bins (edges at the reference's quantiles, frozen with the reference).
    pub psi_bins: usize,
    /// PSI share floor.
    pub psi_floor: f64,
    /// Reference files per classifier version: `"clf-2026-01" = "refs/clf-2026-01.txt"` (one
    /// confidence per line, a CSV whose first column is the confidence, or a histogram written by
    /// `tierwatch reference build`). Versions without a file use their first `baseline_days`.
    pub reference_files: BTreeMap<String, String>,
    /// Baseline date ranges of the stream per classifier version, used instead of the first
    /// `baseline_days`: `"clf-2026-01" = { from = "2026-01-05", to = "2026-01-11" }` (UTC, inclusive).
    pub reference_windows: BTreeMap<String, DateRange>,
    /// Days (complete UTC days, starting with the first day a version is seen) that form the
    /// reference of a classifier version that has no reference file.
    pub baseline_days: u32,
    /// Seconds between evaluation passes.
    pub evaluate_every_seconds: u64,
    /// Complete days (back from the watermark) every pass re-evaluates from the stored histograms;
    /// late data older than this no longer changes drift rows or alert episodes. A backfill or the
    /// demo sets it to cover the whole replayed period.
    pub lookback_days: u32,
    /// Hysteresis: consecutive warning evaluations before a warning fires.
    pub warning_after: u32,
    /// Hysteresis: consecutive critical evaluations before a critical fires.
    pub critical_after: u32,
    /// Hysteresis: consecutive clean evaluations before an alert resolves.
    pub resolve_after: u32,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            min_n: 500,
            warning_ks_d: 0.02,
            critical_ks_d: 0.1,
            ks_p_max: 0.001,
            warning_psi: 0.1,
            critical_psi: 0.25,
            psi_noise_quantile: 0.999,
            psi_bins: 10,
            psi_floor: 1e-4,
            reference_files: BTreeMap::new(),
            reference_windows: BTreeMap::new(),
            baseline_days: 7,
            evaluate_every_seconds: 30,
            lookback_days: 60,
            warning_after: 3,
            critical_after: 2,
            resolve_after: 2,
        }
    }
}

impl Validate for DriftConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        first_problem(self.problems())
    }
}

impl DriftConfig {
    /// Every invalid key with the reason (empty when valid).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let mut check = |key: &str, ok: bool, reason: &str| {
            if !ok {
                out.push((format!("drift.{key}"), reason.to_string()));
            }
        };
        check("warning_ks_d", self.warning_ks_d > 0.0 && self.warning_ks_d <= 1.0, "must be in (0, 1]");
        check(
            "critical_ks_d",
            self.critical_ks_d >= self.warning_ks_d && self.critical_ks_d <= 1.0,
            "must be in [warning_ks_d, 1]",
        );
        check("ks_p_max", self.ks_p_max > 0.0 && self.ks_p_max < 1.0, "must be in (0, 1)");
        check("warning_psi", self.warning_psi > 0.0, "must be > 0");
        check("critical_psi", self.critical_psi >= self.warning_psi, "must be ≥ warning_psi");
        check(
            "psi_noise_quantile",
            self.psi_noise_quantile > 0.0 && self.psi_noise_quantile < 1.0,
            "must be in (0, 1)",
        );
        check("psi_bins", (2..=100).contains(&self.psi_bins), "must be in 2..=100");
        check("psi_floor", self.psi_floor > 0.0 && self.psi_floor < 0.1, "must be in (0, 0.1)");
        check("baseline_days", self.baseline_days >= 1, "must be ≥ 1");
        for (cv, r) in &self.reference_windows {
            check(&format!("reference_windows.{cv}"), r.from <= r.to, "`to` is before `from`");
        }
        check("evaluate_every_seconds", self.evaluate_every_seconds >= 1, "must be ≥ 1");
        check("warning_after", self.warning_after >= 1, "must be ≥ 1");
        check("critical_after", self.critical_after >= 1, "must be ≥ 1");
        check("resolve_after", self.resolve_after >= 1, "must be ≥ 1");
        out
    }
}

/// An inclusive range of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
}

impl DateRange {
    /// (first, last) UTC day index.
    pub fn days(&self) -> (i64, i64) {
        let idx = |d: chrono::NaiveDate| {
            d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()).div_euclid(crate::metrics::DAY_MS)
        };
        (idx(self.from), idx(self.to))
    }
}

/// A frozen reference: histogram, its effective size and its PSI bins.
#[derive(Debug, Clone)]
pub struct Reference {
    pub hist: ConfHist,
    /// Independent units behind the reference (conversations for a stream baseline, values for
    /// a training file).
    pub n_eff: u64,
    pub bins: PsiBins,
    pub source: String,
}

/// A window's recorded data for one (classifier version, router, signal).
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub hist: ConfHist,
    pub conversations: u64,
    pub routed_cheap: u64,
    pub threshold_sum: f64,
    pub threshold_n: u64,
}

impl From<crate::metrics::ConfDelta> for Window {
    fn from(c: crate::metrics::ConfDelta) -> Self {
        let count = |v: i64| v.max(0) as u64;
        Window {
            hist: c.hist,
            conversations: count(c.conversations),
            routed_cheap: count(c.routed_cheap),
            threshold_sum: c.threshold_sum,
            threshold_n: count(c.threshold_n),
        }
    }
}

impl Window {
    pub fn add(&mut self, o: &Window) {
        self.hist.merge(&o.hist);
        self.conversations += o.conversations;
        self.routed_cheap += o.routed_cheap;
        self.threshold_sum += o.threshold_sum;
        self.threshold_n += o.threshold_n;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    /// Fewer decisions than `min_n`: no decision either way.
    Insufficient,
    NoReference,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Insufficient => "insufficient",
            Status::NoReference => "no_reference",
        }
    }
    pub fn level(self) -> Option<Severity> {
        match self {
            Status::Warning => Some(Severity::Warning),
            Status::Critical => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One row of `confidence_drift_daily`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    pub n: u64,
    pub n_eff: u64,
    pub ref_n: u64,
    pub ks_d: Option<f64>,
    pub ks_p: Option<f64>,
    pub psi: Option<f64>,
    pub psi_noise: Option<f64>,
    pub cheap_share_expected: Option<f64>,
    pub cheap_share_observed: Option<f64>,
    /// The configured target cheap share of the classifier version (`[routing.targets]`;
    /// `router_confidence` rows only), set by the evaluator.
    pub cheap_share_target: Option<f64>,
    /// 95% Wilson interval of `cheap_share_observed` at `n_eff` (distinct conversations).
    pub cheap_share_observed_lo: Option<f64>,
    pub cheap_share_observed_hi: Option<f64>,
    pub status: Status,
    /// The value and threshold that decided the status (for alerts).
    pub value: f64,
    pub threshold: f64,
}

/// Compare a window with the reference. D and PSI use every decision; p-values and the PSI noise
/// level use the window's distinct conversations (turns of a conversation are not independent).
pub fn evaluate(cfg: &DriftConfig, reference: Option<&Reference>, w: &Window) -> DriftRow {
    let n = w.hist.total();
    let n_eff = w.conversations.clamp(1, n.max(1));
    let observed = (n > 0).then(|| w.routed_cheap as f64 / n as f64);
    let (observed_lo, observed_hi) =
        observed.and_then(|p| crate::drift::routed_share::observed_interval(p, n, w.conversations)).unzip();
    let mut row = DriftRow {
        n,
        n_eff: w.conversations,
        ref_n: 0,
        ks_d: None,
        ks_p: None,
        psi: None,
        psi_noise: None,
        cheap_share_expected: None,
        cheap_share_observed: observed,
        cheap_share_target: None,
        cheap_share_observed_lo: observed_lo,
        cheap_share_observed_hi: observed_hi,
        status: Status::NoReference,
        value: 0.0,
        threshold: 0.0,
    };
    let Some(r) = reference else { return row };
    row.ref_n = r.hist.total();
    if w.threshold_n > 0 && row.ref_n > 0 {
        // The reference's share of confidences at or above the mean threshold in force.
        let t = crate::stats::hist::bin_of(w.threshold_sum / w.threshold_n as f64).unwrap_or(0);
        let above: u64 = r.hist.iter_nonzero().filter(|(b, _)| *b >= t).map(|(_, c)| c).sum();
        row.cheap_share_expected = Some(above as f64 / row.ref_n as f64);
    }
    if let Some(ks) = ks_two_sample_with_n_eff(&r.hist, &w.hist, effective_size(r.n_eff.max(1), n_eff)) {
        row.ks_d = Some(ks.d);
        row.ks_p = Some(ks.p_value);
    }
    row.psi = psi(&r.bins, &r.hist, &w.hist, cfg.psi_floor);
    row.psi_noise = psi_noise(r.n_eff.max(1), n_eff, r.bins.len(), cfg.psi_noise_quantile);
    if n < cfg.min_n {
        row.status = Status::Insufficient;
        return row;
    }
    let (d, p) = (row.ks_d.unwrap_or(0.0), row.ks_p.unwrap_or(1.0));
    let (psi_v, noise) = (row.psi.unwrap_or(0.0), row.psi_noise.unwrap_or(0.0));
    let significant = p < cfg.ks_p_max;
    let crit_psi = cfg.critical_psi.max(noise);
    let warn_psi = cfg.warning_psi.max(noise);
    row.status = Status::Ok;
    row.value = d;
    row.threshold = cfg.warning_ks_d;
    if (significant && d >= cfg.critical_ks_d) || psi_v >= crit_psi {
        row.status = Status::Critical;
        (row.value, row.threshold) =
            if significant && d >= cfg.critical_ks_d { (d, cfg.critical_ks_d) } else { (psi_v, crit_psi) };
    } else if (significant && d >= cfg.warning_ks_d) || psi_v >= warn_psi {
        row.status = Status::Warning;
        (row.value, row.threshold) =
            if significant && d >= cfg.warning_ks_d { (d, cfg.warning_ks_d) } else { (psi_v, warn_psi) };
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(values: impl IntoIterator<Item = f64>, conversations: u64) -> Window {
        let hist = ConfHist::from_values(values);
        Window { hist, conversations, ..Default::default() }
    }

    fn reference(values: impl IntoIterator<Item = f64>) -> Reference {
        let hist = ConfHist::from_values(values);
        let bins = PsiBins::from_reference(&hist, 10).unwrap();
        Reference { n_eff: hist.total(), hist, bins, source: "test".into() }
    }

    /// A deterministic smooth sample: quantiles of a tent-like distribution on [lo, hi].
    fn sample(n: usize, shift: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + 0.5) / n as f64).sqrt() * 0.6 + 0.2 + shift).collect()
    }

    #[test]
    fn large_n_negligible_shift_is_ok_though_significant() {
        let cfg = DriftConfig::default();
        let r = reference(sample(1_000_000, 0.0));
        let row = evaluate(&cfg, Some(&r), &window(sample(1_000_000, 0.005), 1_000_000));
        assert!(row.ks_p.unwrap() < 1e-6, "tiny p with a million samples: {:?}", row.ks_p);
        assert!(row.ks_d.unwrap() < cfg.warning_ks_d);
        assert_eq!(row.status, Status::Ok);
        let row = evaluate(&cfg, Some(&r), &window(sample(1_000_000, 0.05), 1_000_000));
        assert!(matches!(row.status, Status::Warning | Status::Critical), "{row:?}");
    }

    #[test]
    fn multi_turn_traffic_uses_conversations_for_significance() {
        let cfg = DriftConfig::default();
        let r = reference(sample(20_000, 0.0));
        // A shift of D ≈ 0.03 over 20k decisions but only 600 conversations is not significant.
        let w = window(sample(20_000, 0.01), 600);
        let row = evaluate(&cfg, Some(&r), &w);
        assert!(row.ks_d.unwrap() >= cfg.warning_ks_d);
        assert!(row.ks_p.unwrap() > cfg.ks_p_max, "{row:?}");
        assert_eq!(row.status, Status::Ok);
        let w = window(sample(20_000, 0.01), 20_000);
        assert_eq!(evaluate(&cfg, Some(&r), &w).status, Status::Warning);
    }

    #[test]
    fn small_windows_are_insufficient_and_missing_reference_is_reported() {
        let cfg = DriftConfig::default();
        let r = reference(sample(10_000, 0.0));
        assert_eq!(evaluate(&cfg, Some(&r), &window(sample(499, 0.3), 499)).status, Status::Insufficient);
        assert_eq!(evaluate(&cfg, None, &window(sample(5_000, 0.0), 5_000)).status, Status::NoReference);
    }

    /// SplitMix64: a tiny seeded generator for the measurements below.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        /// A skewed confidence like a router's: 0.35 + 0.6·u^0.7, shifted down by `shift`.
        fn confidence(&mut self, shift: f64) -> f64 {
            (0.35 + 0.6 * self.uniform().powf(0.7) - shift).clamp(0.0, 1.0)
        }
    }

    /// Measured false-alarm and detection rates of a single evaluation (no hysteresis) on
    /// independent random windows; the figures are printed (`--nocapture`) and bounded.
    #[test]
    fn measured_false_alarm_and_detection_rates() {
        let cfg = DriftConfig::default();
        let mut rng = Rng(20260105);
        let r = reference((0..20_000).map(|_| rng.confidence(0.0)));
        let rate = |rng: &mut Rng, n: usize, shift: f64, windows: usize| -> (f64, f64) {
            let (mut warn, mut crit) = (0, 0);
            for _ in 0..windows {
                let w = window((0..n).map(|_| rng.confidence(shift)), n as u64);
                match evaluate(&cfg, Some(&r), &w).status {
                    Status::Warning => warn += 1,
                    Status::Critical => crit += 1,
                    _ => {}
                }
            }
            (warn as f64 / windows as f64, crit as f64 / windows as f64)
        };
        let (fa_w, fa_c) = rate(&mut rng, 1_000, 0.0, 1_000);
        let (fa_w5, fa_c5) = rate(&mut rng, 5_000, 0.0, 300);
        let (d_w, d_c) = rate(&mut rng, 5_000, 0.02, 300);
        let (d_w2, d_c2) = rate(&mut rng, 5_000, 0.05, 100);
        println!(
            "no drift, n=1000: warning {fa_w:.4} critical {fa_c:.4}; n=5000: warning {fa_w5:.4} critical {fa_c5:.4}; \
             shift 0.02, n=5000: warning {d_w:.3} critical {d_c:.3}; shift 0.05: warning {d_w2:.3} critical {d_c2:.3}"
        );
        // p < 0.001 gates every KS decision and PSI's bar is far above its noise: about 1 in 1000.
        assert!(fa_w + fa_c <= 0.005 && fa_w5 + fa_c5 <= 0.01);
        assert!(d_w + d_c >= 0.9, "a 0.02 shift (D ≈ 0.03) is seen at n = 5000");
        assert!(d_w2 + d_c2 >= 0.99);
    }

    #[test]
    fn big_shift_is_critical_and_expected_share_follows_the_reference() {
        let cfg = DriftConfig::default();
        let r = reference(sample(10_000, 0.0));
        let mut w = window(sample(10_000, 0.15), 10_000);
        w.threshold_sum = 0.5 * 10_000.0;
        w.threshold_n = 10_000;
        let row = evaluate(&cfg, Some(&r), &w);
        assert_eq!(row.status, Status::Critical);
        // Reference: share of sqrt(u)·0.6 + 0.2 ≥ 0.5 ⇔ u ≥ 0.25 → 0.75.
        assert!((row.cheap_share_expected.unwrap() - 0.75).abs() < 1e-3, "{row:?}");
    }
}
