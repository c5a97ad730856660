//! Misroute estimate (docs/contract.md#misroute_estimate): the rescorer's weighted suspected-misroute rate of a
//! routed-down tier against a configured ceiling, evaluated each complete UTC day on the rolling 7-day window.
//! Pure: daily estimates in, evaluations out.
//!
//! The **upper** 95% bound exceeding the ceiling means "we cannot rule out that more than the
//! ceiling is misrouted": that is the warning here; a **critical** needs the lower bound
//! above the ceiling (more than the ceiling is misrouted, with 95% confidence). A day's sample is
//! small (2% of a tier's decisions, half of them down-weighted), so its upper bound crosses any
//! useful ceiling by chance: in the demo's baseline weeks daily upper bounds reached 0.24–0.29 at
//! a true rate near 0.09. The rule therefore judges 7-day windows, merged from the daily rows (Σw,
//! Σw·y and Σw² = (Σw)²/n_eff add up across days; the interval is Wilson at Kish's effective size),
//! with at least `min_scored` scored samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Evaluation, Hysteresis, Severity};
use crate::config::{invalid, ConfigError, Validate};
use crate::metrics::DAY_MS;

pub const KIND: &str = "misroute_estimate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MisrouteRuleConfig {
    /// Ceiling on a routed-down tier's suspected-misroute rate (share of its decisions the
    /// rescorer judges complex): warning when the upper 95% bound exceeds it, critical when the
    /// lower bound does.
    pub ceiling: f64,
    /// Scored samples a 7-day window needs before it is judged (a handful gives a uselessly wide
    /// interval).
    pub min_scored: u64,
    /// A window whose 95% interval is wider than this is not judged: an upper bound says
    /// something only once the interval is narrow. Measured on the control scenario at 500
    /// conversations a day (7-day windows of ~230 samples, widths ~0.11), the upper bound alone
    /// crossed a 0.2 ceiling several times at a true rate near 0.09.
    pub max_interval_width: f64,
    /// Consecutive days at warning (or worse) before a warning fires.
    pub warning_after: u32,
    /// Consecutive days at critical before it fires or escalates.
    pub critical_after: u32,
    /// Consecutive clean days before it resolves.
    pub resolve_after: u32,
}

impl Default for MisrouteRuleConfig {
    fn default() -> Self {
        Self {
            ceiling: 0.2,
            min_scored: 200,
            max_interval_width: 0.1,
            warning_after: 2,
            critical_after: 2,
            resolve_after: 2,
        }
    }
}

impl MisrouteRuleConfig {
    pub fn hysteresis(&self) -> Hysteresis {
        Hysteresis {
            warning_after: self.warning_after,
            critical_after: self.critical_after,
            resolve_after: self.resolve_after,
        }
    }
}

impl Validate for MisrouteRuleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_interval_width.is_finite() && self.max_interval_width > 0.0) {
            return Err(invalid("alerts.misroute.max_interval_width", "must be a positive width"));
        }
        if !(self.ceiling.is_finite() && self.ceiling > 0.0 && self.ceiling < 1.0) {
            return Err(invalid("alerts.misroute.ceiling", "must be in (0, 1)"));
        }
        Ok(())
    }
}

/// One day of one tier from `rescore_estimates_daily`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateDay {
    pub scored: u64,
    /// Σw of the scored rows (shed-adjusted).
    pub weight_sum: f64,
    /// Kish's effective sample size (Σw)²/Σw².
    pub n_eff: f64,
    pub rate: f64,
}

/// A `rescore_estimates_daily` row as both stores read it: (day start ms, tier, scored, weight_sum,
/// n_eff, suspected_misroute_rate).
pub type EstimateRow = (i64, String, i64, f64, f64, f64);

impl EstimateDay {
    pub fn from_row((day_ms, tier, scored, weight_sum, n_eff, rate): EstimateRow) -> (i64, String, EstimateDay) {
        (day_ms, tier, EstimateDay { scored: scored.max(0) as u64, weight_sum, n_eff, rate })
    }
}

/// The rolling window the rule judges.
pub const WINDOW_DAYS: i64 = 7;

/// (scored, rate, lower, upper) of the 7-day window ending on `day`.
pub fn window(days: &BTreeMap<i64, EstimateDay>, day: i64) -> Option<(u64, f64, f64, f64)> {
    let (mut scored, mut sw, mut swy, mut sw2) = (0u64, 0.0, 0.0, 0.0);
    for (_, e) in days.range(day - WINDOW_DAYS + 1..=day) {
        if !(e.weight_sum > 0.0 && e.n_eff > 0.0 && e.rate.is_finite()) {
            continue;
        }
        scored += e.scored;
        sw += e.weight_sum;
        swy += e.rate * e.weight_sum;
        // Σw² of a day = (Σw)² / n_eff.
        sw2 += e.weight_sum * e.weight_sum / e.n_eff;
    }
    if sw <= 0.0 || sw2 <= 0.0 {
        return None;
    }
    let rate = (swy / sw).clamp(0.0, 1.0);
    let (lo, hi) = crate::stats::weighted::wilson_at(rate, sw * sw / sw2, crate::stats::Z95)?;
    Some((scored, rate, lo, hi))
}

/// Evaluations of one tier, ordered by day (UTC day index → that day's estimate).
pub fn evaluations(cfg: &MisrouteRuleConfig, days: &BTreeMap<i64, EstimateDay>) -> Vec<Evaluation> {
    let mut out = vec![];
    for &day in days.keys() {
        let Some((scored, _rate, lo, hi)) = window(days, day) else { continue };
        if scored < cfg.min_scored || hi - lo > cfg.max_interval_width {
            continue;
        }
        let level = if lo > cfg.ceiling {
            Some(Severity::Critical)
        } else if hi > cfg.ceiling {
            Some(Severity::Warning)
        } else {
            None
        };
        out.push(Evaluation {
            window_start_ms: (day - WINDOW_DAYS + 1) * DAY_MS,
            window_end_ms: (day + 1) * DAY_MS,
            level,
            // The bound that decided: the lower one for critical, the upper one otherwise.
            value: if level == Some(Severity::Critical) { lo } else { hi },
            threshold: cfg.ceiling,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day with equal weights (50 each): n_eff = scored.
    fn day(scored: u64, rate: f64) -> EstimateDay {
        EstimateDay { scored, weight_sum: scored as f64 * 50.0, n_eff: scored as f64, rate }
    }

    #[test]
    fn the_window_pools_days_and_matches_plain_wilson_with_equal_weights() {
        let days = BTreeMap::from([(0, day(100, 0.1)), (1, day(300, 0.3))]);
        let (scored, rate, lo, hi) = window(&days, 1).unwrap();
        assert_eq!(scored, 400);
        assert!((rate - 0.25).abs() < 1e-12);
        let (wl, wh) = crate::stats::wilson95(100, 400).unwrap();
        assert!((lo - wl).abs() < 1e-9 && (hi - wh).abs() < 1e-9, "{lo} {hi} vs {wl} {wh}");
        // Day 8's window no longer holds day 0 or 1.
        assert!(window(&days, 8).is_none());
    }

    #[test]
    fn levels_follow_the_bounds_and_small_samples_are_skipped() {
        let cfg = MisrouteRuleConfig { ceiling: 0.2, min_scored: 200, ..Default::default() };
        // A week apart: each day is alone in its window.
        let days = BTreeMap::from([
            (0, day(1000, 0.10)),  // clean
            (7, day(1000, 0.19)),  // only the upper bound above: warning
            (14, day(1000, 0.26)), // the lower bound above: critical
            (21, day(50, 0.9)),    // too few scored: not judged
        ]);
        let e = evaluations(&cfg, &days);
        let levels: Vec<_> = e.iter().map(|e| e.level).collect();
        assert_eq!(levels, vec![None, Some(Severity::Warning), Some(Severity::Critical)]);
        assert!(e[1].value > 0.2 && e[2].value > 0.2);
        assert_eq!((e[1].window_start_ms, e[1].window_end_ms), (DAY_MS, 8 * DAY_MS));
    }

    #[test]
    fn wide_intervals_are_not_judged() {
        // 230 samples with a design effect of 2: n_eff 115; at 0.14 the upper bound passes 0.2.
        let cfg = MisrouteRuleConfig::default();
        let d = EstimateDay { scored: 230, weight_sum: 230.0 * 50.0, n_eff: 115.0, rate: 0.14 };
        let (_, _, lo, hi) = window(&BTreeMap::from([(0, d)]), 0).unwrap();
        assert!(hi > cfg.ceiling && hi - lo > cfg.max_interval_width, "{lo} {hi}");
        assert!(evaluations(&cfg, &BTreeMap::from([(0, d)])).is_empty());
    }

    #[test]
    fn a_noisy_day_alone_does_not_fire() {
        // Daily samples of 90 around 0.09 put a day's own upper bound above 0.2 now and then
        // (0.24 here); pooled over the week they do not.
        let cfg = MisrouteRuleConfig::default();
        let rates = [0.11, 0.04, 0.14, 0.10, 0.07, 0.07, 0.04, 0.12, 0.07, 0.09, 0.07, 0.24, 0.13, 0.14];
        let days: BTreeMap<i64, EstimateDay> = rates.iter().enumerate().map(|(d, r)| (d as i64, day(90, *r))).collect();
        let e = evaluations(&cfg, &days);
        assert!(e.len() >= 10);
        assert!(e.iter().all(|e| e.level.is_none()), "{e:?}");
    }

    #[test]
    fn a_misrouted_week_fires_critical_and_resolves() {
        let cfg = MisrouteRuleConfig::default();
        let days: BTreeMap<i64, EstimateDay> =
            (0..30).map(|d| (d, if (10..=16).contains(&d) { day(400, 0.5) } else { day(400, 0.05) })).collect();
        let eps = crate::alert::episodes(KIND, "tier=cheap", &evaluations(&cfg, &days), &cfg.hysteresis());
        assert_eq!(eps.len(), 1, "{eps:?}");
        assert_eq!(eps[0].severity, Severity::Critical);
        assert!(eps[0].resolved_window_end_ms.is_some());
    }
}
