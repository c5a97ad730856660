//! Router evaluation: from noticing drift to deciding what to do about it.
//!
//! Per classifier version × router kind, on mature cohorts, over rolling windows (7 and 28 days by
//! default), evaluated daily by the evaluator pass from the per-confidence outcome cells the batch
//! commit keeps (`tw_agg_calibration`, see [`crate::metrics::CalibKey`]):
//! * [`calibration`]: the reliability curve of the turns the cheap tier kept (failure rate per
//!   confidence bin, bins at the frozen reference deciles), each bin tested against its own
//!   baseline (the `calibration_regression` alert), and the calibration error (ECE,
//!   overconfidence) with a bootstrap interval over conversation groups.
//! * [`advice`]: for candidate thresholds on a 0.01 grid around the one in force, the window's
//!   cheap share, inference cost, expected failed deflections, human cost and net cost with
//!   bounds, and the recommended threshold.
//!
//! A turn's *failure* is a failed deflection attributed to it, a THUMBS_DOWN, or a HUMAN_REVIEW
//! with score 0. Pure: cells in, rows out; no I/O, no clock.

pub mod advice;
pub mod advise;
pub mod calibration;
pub mod pass;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{first_problem, ConfigError, Validate};
use crate::metrics::{CalibCounts, CALIB_CELLS, CALIB_GROUPS};

pub const CALIBRATION_KIND: &str = "calibration_regression";

/// `[router_eval]`: reliability curves, calibration regression and threshold advice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouterEvalConfig {
    /// Rolling windows evaluated each day, in days (each needs every day mature).
    pub windows_days: Vec<u32>,
    /// First day (UTC) of the calibration baseline, with `baseline_to`. Default: the first
    /// `baseline_days` mature days of each classifier version and router.
    pub baseline_from: Option<chrono::NaiveDate>,
    /// Last day (inclusive) of the calibration baseline.
    pub baseline_to: Option<chrono::NaiveDate>,
    /// Mature days that form the default baseline.
    pub baseline_days: u32,
    /// Family-wise significance of the calibration-regression test, split (Bonferroni) over the
    /// bins × windows tested for one classifier version and router.
    pub alpha: f64,
    /// Minimum relative increase of a bin's failure rate over its baseline (0.2 = +20%).
    pub min_relative_increase: f64,
    /// Consecutive regressed evaluations before `calibration_regression` fires.
    pub fire_after: u32,
    /// Consecutive clean evaluations before it resolves.
    pub resolve_after: u32,
    /// A bin with fewer cheap-served turns than this in the window (or its baseline) is not tested.
    pub min_bin_turns: u64,
    /// Bootstrap replicates of the calibration-error interval.
    pub bootstrap_replicates: u32,
    /// Candidate thresholds span the one in force ± this much, on a 0.01 grid.
    pub threshold_span: f64,
    /// The recommended threshold keeps the cheap tier's expected failed deflections per turn at
    /// or below this.
    pub failure_rate_ceiling: f64,
    /// Human cost charged per failed deflection, USD. Default: the window's mean attributed
    /// ticket cost.
    pub human_cost_per_failure_usd: Option<f64>,
    /// The capable tier's outcomes stand in for a moved turn's from the confidence range this wide
    /// just below the threshold in force (0.01 cells).
    pub neighbour_cells: u8,
}

impl Default for RouterEvalConfig {
    fn default() -> Self {
        Self {
            windows_days: vec![7, 28],
            baseline_from: None,
            baseline_to: None,
            baseline_days: 14,
            alpha: 0.001,
            min_relative_increase: 0.2,
            fire_after: 2,
            resolve_after: 2,
            min_bin_turns: 30,
            bootstrap_replicates: 200,
            threshold_span: 0.15,
            failure_rate_ceiling: 0.1,
            human_cost_per_failure_usd: None,
            neighbour_cells: 10,
        }
    }
}

impl Validate for RouterEvalConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        first_problem(self.problems())
    }
}

impl RouterEvalConfig {
    /// Every invalid key with the reason (empty when valid).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        let mut bad = |k: &str, r: &str| out.push((format!("router_eval.{k}"), r.to_string()));
        if self.windows_days.is_empty() || self.windows_days.iter().any(|&w| w == 0 || w > 366) {
            bad("windows_days", "must list 1 to 366-day windows");
        }
        if self.baseline_from.is_some() != self.baseline_to.is_some() || self.baseline_from > self.baseline_to {
            bad("baseline_to", "set both baseline dates, the second not before the first");
        }
        if self.baseline_days == 0 {
            bad("baseline_days", "must be ≥ 1");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            bad("alpha", "must be in (0, 1)");
        }
        if !(self.min_relative_increase >= 0.0 && self.min_relative_increase.is_finite()) {
            bad("min_relative_increase", "must be ≥ 0");
        }
        if self.fire_after == 0 || self.resolve_after == 0 {
            bad("fire_after", "fire_after and resolve_after must be ≥ 1");
        }
        if !(10..=10_000).contains(&self.bootstrap_replicates) {
            bad("bootstrap_replicates", "must be between 10 and 10000");
        }
        if !(self.threshold_span > 0.0 && self.threshold_span <= 0.5) {
            bad("threshold_span", "must be in (0, 0.5]");
        }
        if !(self.failure_rate_ceiling > 0.0 && self.failure_rate_ceiling <= 1.0) {
            bad("failure_rate_ceiling", "must be in (0, 1]");
        }
        if self.human_cost_per_failure_usd.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
            bad("human_cost_per_failure_usd", "must be a non-negative number");
        }
        if !(1..=50).contains(&self.neighbour_cells) {
            bad("neighbour_cells", "must be between 1 and 50");
        }
        out
    }

    pub fn hysteresis(&self) -> crate::alert::Hysteresis {
        crate::alert::Hysteresis {
            warning_after: u32::MAX,
            critical_after: self.fire_after,
            resolve_after: self.resolve_after,
        }
    }

    /// The longest window, in days.
    pub fn longest_window(&self) -> i64 {
        i64::from(self.windows_days.iter().copied().max().unwrap_or(28))
    }
}

/// Which side of the router served a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Served {
    Cheap,
    Capable,
}

/// One window's (or day's) cells of one classifier version and router: per served side, cell and
/// conversation group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells {
    by: BTreeMap<(Served, u8, u8), CalibCounts>,
}

impl Cells {
    pub fn add(&mut self, served: Served, cell: u8, group: u8, c: &CalibCounts) {
        if cell < CALIB_CELLS && group < CALIB_GROUPS {
            self.by.entry((served, cell, group)).or_default().add(c);
        }
    }

    pub fn merge(&mut self, o: &Cells) {
        for ((s, c, g), v) in &o.by {
            self.by.entry((*s, *c, *g)).or_default().add(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }

    /// Counts per cell of one side, summed over groups.
    pub fn per_cell(&self, served: Served) -> Vec<CalibCounts> {
        let mut out = vec![CalibCounts::default(); usize::from(CALIB_CELLS)];
        for ((s, c, _), v) in &self.by {
            if *s == served {
                out[usize::from(*c)].add(v);
            }
        }
        out
    }

    /// Counts per (group, cell) of one side: `out[group][cell]`.
    pub fn per_group_cell(&self, served: Served) -> Vec<Vec<CalibCounts>> {
        let mut out = vec![vec![CalibCounts::default(); usize::from(CALIB_CELLS)]; usize::from(CALIB_GROUPS)];
        for ((s, c, g), v) in &self.by {
            if *s == served {
                out[usize::from(*g)][usize::from(*c)].add(v);
            }
        }
        out
    }
}

/// Sum of `cells[range]`.
pub fn sum_cells(cells: &[CalibCounts], range: std::ops::Range<usize>) -> CalibCounts {
    let mut s = CalibCounts::default();
    for c in cells.get(range).unwrap_or(&[]) {
        s.add(c);
    }
    s
}

/// Deterministic generator for the bootstrap (splitmix64): the same inputs give the same interval
/// on every instance and every pass.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n ≤ 2³², bias below 2⁻³²).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}
