//! Misroute estimate (SPEC §5): the rescorer's weighted suspected-misroute rate of a routed-down
//! tier against a configured ceiling, per complete UTC day. Pure: estimates in, evaluations out.
//!
//! SPEC §5 fires on the **upper** 95% bound exceeding the ceiling: "we cannot rule out that more
//! than the ceiling is misrouted". That is the warning here. A small sample has a wide interval,
//! so the warning needs `min_scored` scored samples; a **critical** needs the lower bound above the
//! ceiling (more than the ceiling is misrouted, with 95% confidence).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Evaluation, Hysteresis, Severity};
use crate::metrics::DAY_MS;

pub const KIND: &str = "misroute_estimate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MisrouteRuleConfig {
    /// Ceiling on a routed-down tier's suspected-misroute rate (share of its decisions the
    /// rescorer judges complex): warning when the upper 95% bound exceeds it, critical when the
    /// lower bound does.
    #[serde(default = "d_ceiling")]
    pub ceiling: f64,
    /// Scored samples a tier-day needs before it is judged (a handful gives a uselessly wide
    /// interval).
    #[serde(default = "d_min_scored")]
    pub min_scored: u64,
    /// Consecutive days at warning (or worse) before a warning fires.
    #[serde(default = "d_after")]
    pub warning_after: u32,
    /// Consecutive days at critical before it fires or escalates.
    #[serde(default = "d_after")]
    pub critical_after: u32,
    /// Consecutive clean days before it resolves.
    #[serde(default = "d_after")]
    pub resolve_after: u32,
}

fn d_ceiling() -> f64 {
    0.2
}
fn d_min_scored() -> u64 {
    100
}
fn d_after() -> u32 {
    2
}

impl Default for MisrouteRuleConfig {
    fn default() -> Self {
        Self {
            ceiling: d_ceiling(),
            min_scored: d_min_scored(),
            warning_after: d_after(),
            critical_after: d_after(),
            resolve_after: d_after(),
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

    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if !(self.ceiling.is_finite() && self.ceiling > 0.0 && self.ceiling < 1.0) {
            return Err(crate::config::ConfigError::Invalid {
                key: "alerts.misroute.ceiling".into(),
                reason: "must be in (0, 1)".into(),
            });
        }
        Ok(())
    }
}

/// One day of one tier from `rescore_estimates_daily`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateDay {
    pub scored: u64,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Evaluations of one tier, ordered by day (UTC day index → estimate).
pub fn evaluations(cfg: &MisrouteRuleConfig, days: &BTreeMap<i64, EstimateDay>) -> Vec<Evaluation> {
    let mut out = vec![];
    for (&day, e) in days {
        if e.scored < cfg.min_scored || !(e.rate.is_finite() && e.lo.is_finite() && e.hi.is_finite()) {
            continue;
        }
        let level = if e.lo > cfg.ceiling {
            Some(Severity::Critical)
        } else if e.hi > cfg.ceiling {
            Some(Severity::Warning)
        } else {
            None
        };
        out.push(Evaluation {
            window_start_ms: day * DAY_MS,
            window_end_ms: (day + 1) * DAY_MS,
            level,
            // The bound that decided: the lower one for critical, the upper one otherwise.
            value: if level == Some(Severity::Critical) { e.lo } else { e.hi },
            threshold: cfg.ceiling,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(scored: u64, lo: f64, hi: f64) -> EstimateDay {
        EstimateDay { scored, rate: (lo + hi) / 2.0, lo, hi }
    }

    #[test]
    fn levels_follow_the_bounds_and_small_samples_are_skipped() {
        let cfg = MisrouteRuleConfig { ceiling: 0.2, min_scored: 100, ..Default::default() };
        let days = BTreeMap::from([
            (0, day(500, 0.05, 0.15)), // clean
            (1, day(500, 0.15, 0.25)), // upper bound above: warning
            (2, day(500, 0.22, 0.30)), // lower bound above: critical
            (3, day(50, 0.5, 0.9)),    // too few scored: not judged
        ]);
        let e = evaluations(&cfg, &days);
        assert_eq!(
            e.iter().map(|e| e.level).collect::<Vec<_>>(),
            vec![None, Some(Severity::Warning), Some(Severity::Critical)]
        );
        assert_eq!(e[2].value, 0.22);
        assert_eq!(e[1].value, 0.25);
        assert_eq!(e[1].window_start_ms, DAY_MS);
    }

    #[test]
    fn two_critical_days_fire_and_two_clean_days_resolve() {
        let cfg = MisrouteRuleConfig::default();
        let days: BTreeMap<i64, EstimateDay> =
            (0..6).map(|d| (d, if (1..=2).contains(&d) { day(500, 0.3, 0.4) } else { day(500, 0.05, 0.1) })).collect();
        let eps = crate::alert::episodes(KIND, "tier=cheap", &evaluations(&cfg, &days), &cfg.hysteresis());
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].severity, Severity::Critical);
        assert_eq!(eps[0].fired_window_end_ms, 3 * DAY_MS);
        assert_eq!(eps[0].resolved_window_end_ms, Some(5 * DAY_MS));
    }
}
