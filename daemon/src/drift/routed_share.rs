//! Routed share vs target: the share of a classifier version's decisions that the router sends
//! off the capable tier, against the share it was calibrated to send (`[routing.targets]`).
//! Pure: drift rows in, evaluations out.
//!
//! A router whose threshold or inputs moved sends more (or fewer) queries to the cheap tier than
//! it was tuned for, whether or not its confidence distribution still looks like the reference:
//! too many and quality pays, too few and the savings go. The rule judges the rolling 7-day window
//! of the `router_confidence` signal each complete UTC day: the window's observed cheap share
//! (`cheap_share_observed` of `confidence_drift_daily`, a share of decisions) with a 95% Wilson
//! interval at the window's **distinct conversations** (`n_eff`), not its decisions, because the
//! turns of one conversation are not independent (the same reasoning as the KS p-values). A day is
//! a deviation when that interval lies entirely outside target ± tolerance; the alert fires after
//! `fire_after` consecutive deviating days and resolves after `resolve_after` clean ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DriftRow;
use crate::alert::{Evaluation, Hysteresis, Severity};
use crate::config::{invalid, ConfigError, Validate};
use crate::metrics::DAY_MS;

pub const KIND: &str = "routed_share_deviation";

/// The rolling window the rule judges (the drift evaluator's `7d` rows).
pub const WINDOW: &str = "7d";
pub const WINDOW_DAYS: i64 = 7;

/// `[routing]`: the intended behaviour of the routers, compared with the observed one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Per classifier_version, the share of decisions the router was calibrated to send off the
    /// capable tier and the tolerance around it: `[routing.targets."router-2026-01"]` with
    /// `cheap_share = 0.62` and optionally `tolerance = 0.05`. Versions without an entry have no
    /// target (`confidence_drift_daily.cheap_share_target` is NULL, no alert).
    pub targets: BTreeMap<String, RoutedShareTarget>,
}

impl Validate for RoutingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (cv, t) in &self.targets {
            if cv.is_empty() {
                return Err(invalid("routing.targets", "a classifier_version key must not be empty"));
            }
            if !(t.cheap_share.is_finite() && t.cheap_share > 0.0 && t.cheap_share < 1.0) {
                return Err(invalid(&format!("routing.targets.{cv}.cheap_share"), "must be in (0, 1)"));
            }
            if !(t.tolerance.is_finite() && t.tolerance > 0.0 && t.tolerance <= 0.5) {
                return Err(invalid(&format!("routing.targets.{cv}.tolerance"), "must be in (0, 0.5]"));
            }
        }
        Ok(())
    }
}

/// What a router was calibrated to do: one entry of `[routing.targets]`, keyed by
/// classifier_version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutedShareTarget {
    /// The share of decisions the router was calibrated to send to a tier other than the capable
    /// one, in (0, 1).
    pub cheap_share: f64,
    /// Allowed deviation either side of `cheap_share` (0.05 = 5 percentage points), in (0, 0.5].
    #[serde(default = "d_tolerance")]
    pub tolerance: f64,
}

fn d_tolerance() -> f64 {
    0.05
}

impl RoutedShareTarget {
    /// The band of acceptable shares, (lower, upper).
    pub fn band(&self) -> (f64, f64) {
        (self.cheap_share - self.tolerance, self.cheap_share + self.tolerance)
    }
}

/// `[alerts.routed_share]`: the hysteresis of the `routed_share_deviation` alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutedShareRuleConfig {
    /// Consecutive days whose 7-day interval lies outside the band before the alert fires.
    pub fire_after: u32,
    /// Consecutive days whose interval reaches into the band before it resolves.
    pub resolve_after: u32,
}

impl Default for RoutedShareRuleConfig {
    fn default() -> Self {
        Self { fire_after: 3, resolve_after: 2 }
    }
}

impl RoutedShareRuleConfig {
    /// One severity (warning): the router works outside its calibration, which is a reason to look,
    /// not by itself a measured loss of quality.
    pub fn hysteresis(&self) -> Hysteresis {
        Hysteresis { warning_after: self.fire_after, critical_after: u32::MAX, resolve_after: self.resolve_after }
    }
}

impl Validate for RoutedShareRuleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.fire_after == 0 || self.resolve_after == 0 {
            return Err(invalid("alerts.routed_share", "fire_after and resolve_after must be ≥ 1"));
        }
        Ok(())
    }
}

/// The alert subject of one (classifier version, router).
pub fn subject(classifier_version: &str, router: &str) -> String {
    format!("classifier_version={classifier_version} router={router}")
}

/// The 95% Wilson interval of an observed cheap share (a share of `n` decisions) at the effective
/// size `conversations` (at most `n`: a conversation has at least one decision). `None` without
/// decisions or conversations.
pub fn observed_interval(share: f64, n: u64, conversations: u64) -> Option<(f64, f64)> {
    let n_eff = conversations.min(n);
    if n_eff == 0 {
        return None;
    }
    crate::stats::weighted::wilson_at(share, n_eff as f64, crate::stats::Z95)
}

/// Whether an interval lies entirely outside the target's band.
pub fn outside(target: &RoutedShareTarget, lo: f64, hi: f64) -> bool {
    let (lower, upper) = target.band();
    lo > upper || hi < lower
}

/// One evaluation per day with a 7-day row of the subject (day index, window) → row, in day
/// order. A day without decisions is no evaluation (it neither extends nor breaks a streak). The
/// value is the observed share; the threshold is the band edge on its side of the target.
pub fn evaluations(target: &RoutedShareTarget, rows: &BTreeMap<(i64, &'static str), DriftRow>) -> Vec<Evaluation> {
    let (lower, upper) = target.band();
    let mut out = vec![];
    for ((day, window), row) in rows {
        if *window != WINDOW {
            continue;
        }
        let Some(share) = row.cheap_share_observed else { continue };
        let Some((lo, hi)) = observed_interval(share, row.n, row.n_eff) else { continue };
        out.push(Evaluation {
            window_start_ms: (day - WINDOW_DAYS + 1) * DAY_MS,
            window_end_ms: (day + 1) * DAY_MS,
            level: outside(target, lo, hi).then_some(Severity::Warning),
            value: share,
            threshold: if share >= target.cheap_share { upper } else { lower },
        });
    }
    out
}

/// Show each classifier version's target on its `router_confidence` rows (both windows).
pub fn set_targets(
    rows: &mut BTreeMap<super::evaluator::Subject, BTreeMap<(i64, &'static str), DriftRow>>,
    targets: &BTreeMap<String, RoutedShareTarget>,
) {
    for ((cv, _, signal), by_day) in rows.iter_mut() {
        let target = targets.get(cv).filter(|_| *signal == crate::metrics::Signal::RouterConfidence);
        for row in by_day.values_mut() {
            row.cheap_share_target = target.map(|t| t.cheap_share);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{episodes, AlertState};
    use crate::drift::Status;

    fn row(n: u64, conversations: u64, share: f64) -> DriftRow {
        let (lo, hi) = observed_interval(share, n, conversations).unzip();
        DriftRow {
            n,
            n_eff: conversations,
            ref_n: 0,
            ks_d: None,
            ks_p: None,
            psi: None,
            psi_noise: None,
            cheap_share_expected: None,
            cheap_share_observed: Some(share),
            cheap_share_target: None,
            cheap_share_observed_lo: lo,
            cheap_share_observed_hi: hi,
            status: Status::NoReference,
            value: 0.0,
            threshold: 0.0,
        }
    }

    /// 7-day rows of consecutive days from day 100, plus a daily row each (which the rule ignores).
    fn days(rows: &[DriftRow]) -> BTreeMap<(i64, &'static str), DriftRow> {
        let mut out = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            out.insert((100 + i as i64, "7d"), r.clone());
            out.insert((100 + i as i64, "1d"), row(10, 10, 0.99));
        }
        out
    }

    fn target() -> RoutedShareTarget {
        RoutedShareTarget { cheap_share: 0.62, tolerance: 0.05 }
    }

    fn rule() -> RoutedShareRuleConfig {
        RoutedShareRuleConfig::default()
    }

    #[test]
    fn the_interval_uses_conversations_not_decisions() {
        // 0.70 over 20,000 decisions: on decisions the interval would be ±0.006; on 1,000
        // conversations it is Wilson at n = 1000.
        let (lo, hi) = observed_interval(0.7, 20_000, 1_000).unwrap();
        let (wl, wh) = crate::stats::wilson95(700, 1_000).unwrap();
        assert!((lo - wl).abs() < 1e-12 && (hi - wh).abs() < 1e-12, "{lo} {hi} vs {wl} {wh}");
        // More conversations than decisions cannot be: capped at the decisions.
        let (lo, _) = observed_interval(0.7, 100, 5_000).unwrap();
        assert!((lo - crate::stats::wilson95(70, 100).unwrap().0).abs() < 1e-12);
        assert!(observed_interval(0.5, 0, 0).is_none() && observed_interval(0.5, 10, 0).is_none());
    }

    #[test]
    fn inside_the_band_is_quiet() {
        // 0.66 is inside 0.62 ± 0.05, even with a narrow interval.
        let evals = evaluations(&target(), &days(&vec![row(70_000, 10_000, 0.66); 10]));
        assert_eq!(evals.len(), 10, "one evaluation per 7-day row");
        assert!(evals.iter().all(|e| e.level.is_none()), "{evals:?}");
        assert!((evals[0].threshold - 0.67).abs() < 1e-12, "the upper edge on the high side");
        assert_eq!((evals[0].window_start_ms, evals[0].window_end_ms), (94 * DAY_MS, 101 * DAY_MS));
    }

    #[test]
    fn three_days_outside_fire_and_two_do_not() {
        let out = row(70_000, 10_000, 0.72); // interval ≈ [0.711, 0.729], above 0.67
        let ok = row(70_000, 10_000, 0.63);
        assert!(outside(&target(), out.cheap_share_observed_lo.unwrap(), out.cheap_share_observed_hi.unwrap()));

        let two = evaluations(&target(), &days(&[ok.clone(), out.clone(), out.clone(), ok.clone(), ok.clone()]));
        assert_eq!(two.iter().filter(|e| e.level.is_some()).count(), 2);
        assert!(episodes(KIND, "s", &two, &rule().hysteresis()).is_empty(), "two days outside do not fire");

        let three =
            evaluations(&target(), &days(&[ok.clone(), out.clone(), out.clone(), out.clone(), ok.clone(), ok.clone()]));
        let eps = episodes(KIND, "s", &three, &rule().hysteresis());
        assert_eq!(eps.len(), 1, "{eps:?}");
        let e = &eps[0];
        assert_eq!(e.severity, Severity::Warning);
        assert_eq!(e.fired_window_end_ms, 104 * DAY_MS, "fires on the third day outside");
        assert!((e.value - 0.72).abs() < 1e-12 && (e.threshold - 0.67).abs() < 1e-12);
        assert_eq!(e.state, AlertState::Resolved, "two clean days resolve it");
        assert_eq!(e.resolved_window_end_ms, Some(106 * DAY_MS));

        // Below the band works the same way, against the lower edge.
        let low = row(70_000, 10_000, 0.50);
        let eps = episodes(KIND, "s", &evaluations(&target(), &days(&vec![low; 3])), &rule().hysteresis());
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].state, AlertState::Firing);
        assert!((eps[0].threshold - 0.57).abs() < 1e-12);
    }

    #[test]
    fn a_small_window_straddling_the_band_edge_is_quiet() {
        // 0.75 on 60 decisions of 40 conversations: far above 0.67 as a point, but the interval
        // (≈ [0.60, 0.86]) reaches into the band, so it is no deviation, day after day.
        let small = row(60, 40, 0.75);
        let (lo, hi) = (small.cheap_share_observed_lo.unwrap(), small.cheap_share_observed_hi.unwrap());
        assert!(lo < 0.67 && hi > 0.67, "{lo} {hi}");
        let evals = evaluations(&target(), &days(&vec![small; 10]));
        assert!(evals.iter().all(|e| e.level.is_none()), "{evals:?}");
        assert!(episodes(KIND, "s", &evals, &rule().hysteresis()).is_empty());
        // The same share on many conversations is a deviation.
        let big = row(60_000, 40_000, 0.75);
        assert!(evaluations(&target(), &days(&[big]))[0].level.is_some());
    }

    #[test]
    fn days_without_decisions_are_not_evaluations() {
        let mut empty = row(0, 0, 0.0);
        empty.cheap_share_observed = None;
        let out = row(70_000, 10_000, 0.72);
        let evals = evaluations(&target(), &days(&[out.clone(), empty, out.clone(), out]));
        assert_eq!(evals.len(), 3);
        assert_eq!(episodes(KIND, "s", &evals, &rule().hysteresis()).len(), 1, "the gap does not break the streak");
    }

    #[test]
    fn targets_show_on_router_confidence_rows_only() {
        use crate::metrics::Signal;
        let mut rows = BTreeMap::new();
        for (cv, signal) in
            [("v1", Signal::RouterConfidence), ("v1", Signal::RescoreScore), ("v2", Signal::RouterConfidence)]
        {
            rows.insert((cv.to_string(), "PRE_ROUTE".to_string(), signal), days(&[row(100, 50, 0.6)]));
        }
        set_targets(&mut rows, &BTreeMap::from([("v1".to_string(), target())]));
        for ((cv, _, signal), by_day) in &rows {
            let want = (cv == "v1" && *signal == Signal::RouterConfidence).then_some(0.62);
            assert!(by_day.values().all(|r| r.cheap_share_target == want), "{cv} {signal:?}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let routing = |t: RoutedShareTarget| RoutingConfig { targets: [("v1".to_string(), t)].into_iter().collect() };
        let err = routing(RoutedShareTarget { cheap_share: 1.0, tolerance: 0.05 }).validate().unwrap_err().to_string();
        assert!(err.contains("routing.targets.v1.cheap_share"), "{err}");
        let err = routing(RoutedShareTarget { cheap_share: 0.6, tolerance: 0.6 }).validate().unwrap_err().to_string();
        assert!(err.contains("routing.targets.v1.tolerance"), "{err}");
        assert!(routing(target()).validate().is_ok());
        assert!(RoutedShareRuleConfig { fire_after: 0, resolve_after: 2 }.validate().is_err());
    }
}
