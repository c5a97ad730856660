//! Confidence drift (docs/contract.md#confidence-drift): compare each day's (and rolling 7 days') confidence histogram
//! of a classifier version with its frozen reference, and classify the result.
//!
//! This module is pure: [`evaluate`] turns histograms into a [`DriftRow`]. [`evaluator`] does the
//! I/O (reading the recorded histograms, writing `tw_drift_daily`, driving the alerts).

pub mod evaluator;
pub mod reference;
pub mod routed_share;

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
mod tests;
