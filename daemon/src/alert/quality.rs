//! Tier quality regression (docs/contract.md#tier_quality_regression): a tier's thumbs-down, failed-deflection or
//! review-error rate on mature cohorts, daily and rolling 7 days, against the same tier's baseline window —
//! one-sided two-proportion test, Bonferroni-corrected over everything tested, and at least a
//! relative effect. The same rule on all tiers pooled is the "aggregate quality signal" a
//! single-model dashboard would have shown; it is computed for comparison, so the per-tier view's
//! lead is measured, not claimed. Pure: counts in, evaluations out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Evaluation, Severity};
use crate::config::{invalid, ConfigError, Validate};
use crate::metrics::DAY_MS;
use crate::stats::{bonferroni, two_proportion_one_sided};

pub const KIND: &str = "tier_quality_regression";
pub const AGGREGATE_KIND: &str = "aggregate_quality_regression";
/// The pseudo-tier of the pooled comparison.
pub const ALL_TIERS: &str = "all";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityRuleConfig {
    /// First day (UTC) of the baseline window; with `baseline_to`. Default: each tier's first
    /// `baseline_days` mature days.
    pub baseline_from: Option<chrono::NaiveDate>,
    /// Last day (inclusive) of the baseline window.
    pub baseline_to: Option<chrono::NaiveDate>,
    /// Mature days that form the default baseline.
    pub baseline_days: u32,
    /// Family-wise significance level, split (Bonferroni) over tiers × metrics × windows.
    pub alpha: f64,
    /// Minimum relative increase over the baseline rate (0.2 = +20%).
    pub min_relative_increase: f64,
    /// Consecutive regressed evaluations before the alert fires.
    pub fire_after: u32,
    /// Consecutive clean evaluations before it resolves.
    pub resolve_after: u32,
}

impl Default for QualityRuleConfig {
    fn default() -> Self {
        Self {
            baseline_from: None,
            baseline_to: None,
            baseline_days: 14,
            alpha: 0.001,
            min_relative_increase: 0.2,
            fire_after: 2,
            resolve_after: 2,
        }
    }
}

impl QualityRuleConfig {
    pub fn hysteresis(&self) -> super::Hysteresis {
        // A regression is one severity: it "fires" through the critical streak.
        super::Hysteresis {
            warning_after: u32::MAX,
            critical_after: self.fire_after,
            resolve_after: self.resolve_after,
        }
    }
}

impl Validate for QualityRuleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.baseline_from.is_some() != self.baseline_to.is_some() || self.baseline_from > self.baseline_to {
            return Err(invalid(
                "alerts.quality.baseline_to",
                "set both baseline dates, the second not before the first",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(invalid("alerts.quality.alpha", "must be in (0, 1)"));
        }
        if !(self.min_relative_increase >= 0.0 && self.min_relative_increase.is_finite()) {
            return Err(invalid("alerts.quality.min_relative_increase", "must be ≥ 0"));
        }
        if self.baseline_days == 0 || self.fire_after == 0 || self.resolve_after == 0 {
            return Err(invalid("alerts.quality", "baseline_days, fire_after and resolve_after must be ≥ 1"));
        }
        Ok(())
    }
}

/// One tier's (or all tiers') counts for one mature cohort day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DayCounts {
    pub thumbs_down: u64,
    pub decisions: u64,
    pub failed_deflections: u64,
    pub conversations: u64,
    pub reviews_wrong: u64,
    pub reviews_n: u64,
}

impl DayCounts {
    /// From stored sums: thumbs_down, decisions, failed_deflections, reviews_wrong, reviews_n,
    /// conversations (the column order both stores' queries use).
    pub fn from_sums(s: [i64; 6]) -> DayCounts {
        let c = |v: i64| v.max(0) as u64;
        DayCounts {
            thumbs_down: c(s[0]),
            decisions: c(s[1]),
            failed_deflections: c(s[2]),
            reviews_wrong: c(s[3]),
            reviews_n: c(s[4]),
            conversations: c(s[5]),
        }
    }

    pub fn add(&mut self, o: &DayCounts) {
        self.thumbs_down += o.thumbs_down;
        self.decisions += o.decisions;
        self.failed_deflections += o.failed_deflections;
        self.conversations += o.conversations;
        self.reviews_wrong += o.reviews_wrong;
        self.reviews_n += o.reviews_n;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    ThumbsDownRate,
    FailedDeflectionRate,
    ReviewErrorRate,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::ThumbsDownRate, Metric::FailedDeflectionRate, Metric::ReviewErrorRate];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ThumbsDownRate => "thumbs_down_rate",
            Metric::FailedDeflectionRate => "failed_deflection_rate",
            Metric::ReviewErrorRate => "review_error_rate",
        }
    }

    /// (events, trials), events capped at trials (a decision can collect several thumbs-down).
    fn of(self, c: &DayCounts) -> (u64, u64) {
        let (x, n) = match self {
            Metric::ThumbsDownRate => (c.thumbs_down, c.decisions),
            Metric::FailedDeflectionRate => (c.failed_deflections, c.conversations),
            Metric::ReviewErrorRate => (c.reviews_wrong, c.reviews_n),
        };
        (x.min(n), n)
    }
}

/// Number of tests a pass makes (for Bonferroni): tiers × metrics × 2 windows.
pub fn tests_count(tiers: usize) -> usize {
    tiers * Metric::ALL.len() * 2
}

/// Whether a tier is tested on its own: every tier but the cardinality overflow bucket
/// (`__other__`, a mix of unrelated values beyond the partition's tier cap), whose traffic is
/// tested only inside the pooled `all`. With tiers capped per partition this bounds the
/// Bonferroni family, so a flood of bogus tiers cannot dilute alpha until real regressions pass
/// unnoticed.
pub fn tested_tier(tier: &str) -> bool {
    tier != crate::join::OVERFLOW
}

/// The Bonferroni family of a pass over these tiers (the pooled pseudo-tier among them).
pub fn family_size<'a>(tiers: impl IntoIterator<Item = &'a String>) -> usize {
    tests_count(tiers.into_iter().filter(|t| tested_tier(t)).count())
}

/// Evaluations per metric for one tier. `days` holds the tier's mature cohort days (UTC day
/// index → counts); `tests` is the Bonferroni family size.
pub fn evaluations(
    cfg: &QualityRuleConfig,
    days: &BTreeMap<i64, DayCounts>,
    tests: usize,
) -> BTreeMap<Metric, Vec<Evaluation>> {
    let mut out: BTreeMap<Metric, Vec<Evaluation>> = BTreeMap::new();
    let Some((base_first, base_last)) = baseline_range(cfg, days) else { return out };
    let mut baseline = DayCounts::default();
    for (_, c) in days.range(base_first..=base_last) {
        baseline.add(c);
    }
    let level_alpha = bonferroni(cfg.alpha, tests);
    for (&day, today) in days.range(base_last + 1..) {
        let mut week = DayCounts::default();
        for (_, c) in days.range((day - 6).max(base_last + 1)..=day) {
            week.add(c);
        }
        for m in Metric::ALL {
            let (bx, bn) = m.of(&baseline);
            let base_rate = if bn > 0 { bx as f64 / bn as f64 } else { f64::NAN };
            let bar = base_rate * (1.0 + cfg.min_relative_increase);
            let judge = |c: &DayCounts| -> Option<WindowVerdict> {
                let (x, n) = m.of(c);
                let test = two_proportion_one_sided(x, n, bx, bn)?;
                let rate = x as f64 / n as f64;
                let regressed = test.p_value < level_alpha && rate >= bar && rate > base_rate;
                Some(WindowVerdict { regressed, rate, p_value: test.p_value })
            };
            let (day_verdict, week_verdict) = (judge(today), judge(&week));
            let Some(shown) = deciding_window(day_verdict, week_verdict) else {
                continue; // nothing to decide on this day (no trials)
            };
            let regressed = shown.regressed;
            let value = shown.rate;
            out.entry(m).or_default().push(Evaluation {
                window_start_ms: day * DAY_MS,
                window_end_ms: (day + 1) * DAY_MS,
                level: regressed.then_some(Severity::Critical),
                value,
                threshold: bar,
            });
        }
    }
    out
}

/// One window's test against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WindowVerdict {
    regressed: bool,
    rate: f64,
    p_value: f64,
}

/// The window whose rate an evaluation reports: the more significant regressed window when one
/// regressed (so an alert shows the rate that fired it, not a two-review day's 0.5 next to the
/// week that was the real evidence), else the 7-day window, else the day.
fn deciding_window(day: Option<WindowVerdict>, week: Option<WindowVerdict>) -> Option<WindowVerdict> {
    let regressed = [day, week].into_iter().flatten().filter(|v| v.regressed);
    regressed.min_by(|a, b| a.p_value.total_cmp(&b.p_value)).or(week).or(day)
}

fn baseline_range(cfg: &QualityRuleConfig, days: &BTreeMap<i64, DayCounts>) -> Option<(i64, i64)> {
    match (cfg.baseline_from, cfg.baseline_to) {
        (Some(a), Some(b)) => {
            let idx = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis() / DAY_MS);
            Some((idx(a)?, idx(b)?))
        }
        _ => {
            let first: Vec<i64> = days.keys().take(cfg.baseline_days as usize).copied().collect();
            if first.len() < cfg.baseline_days as usize {
                return None; // baseline still filling
            }
            Some((*first.first()?, *first.last()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(days: std::ops::Range<i64>, fd_per_1000: u64) -> BTreeMap<i64, DayCounts> {
        days.map(|d| {
            (
                d,
                DayCounts {
                    thumbs_down: 3,
                    decisions: 1000,
                    failed_deflections: fd_per_1000,
                    conversations: 1000,
                    reviews_wrong: 0,
                    reviews_n: 0,
                },
            )
        })
        .collect()
    }

    #[test]
    fn the_overflow_bucket_does_not_inflate_the_family() {
        let cfg = QualityRuleConfig::default();
        let mut cheap = steady(0..20, 50);
        for d in 20..25 {
            cheap.insert(d, DayCounts { failed_deflections: 75, ..cheap[&0] });
        }
        let mut per_tier: BTreeMap<String, BTreeMap<i64, DayCounts>> = BTreeMap::new();
        for t in ["cheap", "capable", ALL_TIERS] {
            per_tier.insert(t.into(), steady(0..25, 50));
        }
        per_tier.insert("cheap".into(), cheap.clone());
        let fires =
            |tests| evaluations(&cfg, &cheap, tests)[&Metric::FailedDeflectionRate].iter().any(|e| e.level.is_some());
        let base = family_size(per_tier.keys());
        assert_eq!(base, 18);
        assert!(fires(base), "+50% over five days is a regression with three tiers");
        // The bucket where values beyond the tier cap land: not a tier of its own.
        per_tier.insert(crate::join::OVERFLOW.into(), steady(0..25, 50));
        assert_eq!(family_size(per_tier.keys()), base);
        // What the family would be if a producer bug's million tiers were each tested: the
        // regression drowns.
        assert!(!fires(tests_count(1_000_000)));
    }

    #[test]
    fn no_evaluation_until_the_baseline_is_complete() {
        let cfg = QualityRuleConfig::default();
        assert!(evaluations(&cfg, &steady(0..14, 50), 6).is_empty());
        assert_eq!(evaluations(&cfg, &steady(0..15, 50), 6)[&Metric::FailedDeflectionRate].len(), 1);
    }

    #[test]
    fn a_doubled_failed_deflection_rate_regresses_and_noise_does_not() {
        let cfg = QualityRuleConfig::default();
        let mut days = steady(0..20, 50);
        for d in 20..25 {
            days.insert(d, DayCounts { failed_deflections: 100, ..days[&0] });
        }
        let ev = &evaluations(&cfg, &days, 12)[&Metric::FailedDeflectionRate];
        // Days 14..=19 are clean, 20..=24 regressed.
        let levels: Vec<bool> = ev.iter().map(|e| e.level.is_some()).collect();
        assert_eq!(levels, [vec![false; 6], vec![true; 5]].concat());
        // +10% relative on the same volume is below the +20% bar even over a week.
        let mut mild = steady(0..20, 50);
        for d in 20..25 {
            mild.insert(d, DayCounts { failed_deflections: 55, ..mild[&0] });
        }
        assert!(evaluations(&cfg, &mild, 12)[&Metric::FailedDeflectionRate].iter().all(|e| e.level.is_none()));
    }

    #[test]
    fn configured_baseline_dates_and_empty_metrics() {
        let cfg = QualityRuleConfig {
            baseline_from: chrono::NaiveDate::from_ymd_opt(1970, 1, 1),
            baseline_to: chrono::NaiveDate::from_ymd_opt(1970, 1, 3),
            ..Default::default()
        };
        let ev = evaluations(&cfg, &steady(0..6, 50), 6);
        assert_eq!(ev[&Metric::FailedDeflectionRate].len(), 3);
        assert!(!ev.contains_key(&Metric::ReviewErrorRate), "no reviews: nothing to evaluate");
    }

    #[test]
    fn the_reported_value_is_the_deciding_windows_rate() {
        let v = |regressed, rate, p_value| Some(WindowVerdict { regressed, rate, p_value });
        let pick = |d, w| deciding_window(d, w).map(|x| x.rate);
        assert_eq!(pick(v(true, 0.5, 1e-2), v(true, 0.36, 1e-6)), Some(0.36), "the more significant window");
        assert_eq!(pick(v(true, 0.5, 1e-6), v(true, 0.36, 1e-2)), Some(0.5));
        assert_eq!(pick(v(false, 0.5, 0.2), v(true, 0.36, 1e-6)), Some(0.36), "not a noisy day's rate");
        assert_eq!(pick(v(false, 0.5, 0.2), v(false, 0.1, 0.3)), Some(0.1), "quiet: the week");
        assert_eq!(pick(v(false, 0.5, 0.2), None), Some(0.5));
        assert_eq!(pick(None, None), None);

        // Reviews: a clean baseline, a bad week, then a day with 2 reviews of which 1 wrong.
        let cfg = QualityRuleConfig::default();
        let mut days = steady(0..14, 50);
        for c in days.values_mut() {
            (c.reviews_n, c.reviews_wrong) = (20, 1);
        }
        for d in 14..20 {
            days.insert(d, DayCounts { reviews_n: 20, reviews_wrong: 8, ..days[&0] });
        }
        days.insert(20, DayCounts { reviews_n: 2, reviews_wrong: 1, ..days[&0] });
        let last = evaluations(&cfg, &days, 12)[&Metric::ReviewErrorRate].last().unwrap().clone();
        assert!(last.level.is_some(), "the week still regressed");
        assert!((last.value - 49.0 / 122.0).abs() < 1e-12, "the week's rate, not the day's 0.5: {}", last.value);
    }
}
