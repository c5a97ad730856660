//! The router-evaluation pass: run by the drift evaluator after its own passes, under the same
//! one-instance lock. It reads the per-confidence outcome cells, recomputes every mature day of
//! the look-back (so late outcomes change past rows, whichever instance evaluates), replaces the
//! stored rows of those days and returns the calibration-regression evaluations per subject.

use std::collections::BTreeMap;

use super::advice::{advise, AdviceInput, AdviceRow, RescoreCell};
use super::calibration::{bins_from_edges, calibration_error, reliability, BinRow, BinStatus, Summary};
use super::{Cells, RouterEvalConfig, Served};
use crate::alert::{Evaluation, Severity};
use crate::metrics::{CalibCounts, CalibRow, DAY_MS};

/// (classifier_version, router)
pub type Subject = (String, String);

/// One scored rescoring sample's weight, aggregated per day, subject, tier and cell.
#[derive(Debug, Clone, PartialEq)]
pub struct RescoreCellRow {
    pub day_ms: i64,
    pub classifier_version: String,
    pub router: String,
    pub tier: String,
    pub cell: u8,
    pub evidence: RescoreCell,
}

/// Stored rows of one pass, for one subject, window and day.
#[derive(Debug, Clone)]
pub struct DayResult {
    pub day_ms: i64,
    pub subject: Subject,
    pub window: String,
    /// Empty, with no summary, until the subject's drift reference is frozen: bins are cut at
    /// the reference's edges, and edges taken from a partly loaded baseline would make a row
    /// depend on when the evaluator happened to run.
    pub bins: Vec<BinRow>,
    pub summary: Option<Summary>,
    pub advice: Vec<AdviceRow>,
}

/// The storage the pass needs (both stores implement it).
#[allow(async_fn_in_trait)]
pub trait RouterEvalStore: Send + Sync {
    /// Cells with `from_ms ≤ day < to_ms`.
    async fn calib_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<CalibRow>>;
    /// The first day with cells of each (classifier_version, router).
    async fn calib_first_days(&self) -> anyhow::Result<Vec<(String, String, i64)>>;
    /// (day start ms, attributed tickets, their cost in nano-USD), all tiers.
    async fn ticket_cost_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<(i64, i64, i64)>>;
    /// Scored rescoring samples with `from_ms ≤ ts < to_ms`, as weight sums per cell.
    async fn rescore_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<RescoreCellRow>>;
    /// Replace every stored row of days `≥ from_ms` with `rows` (one transaction).
    async fn write_router_eval(&self, from_ms: i64, rows: &[DayResult]) -> anyhow::Result<()>;
}

/// What the pass knows besides the cells.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Complete days evaluated: `first_day..=last_day` (day indexes).
    pub first_day: i64,
    pub last_day: i64,
    /// Mature days end at or before this day index (inclusive).
    pub last_mature_day: i64,
    /// Frozen reference edges per subject (1e-4 grid points); a subject without them gets advice
    /// but no reliability rows yet.
    pub edges: BTreeMap<Subject, Vec<u16>>,
    /// Mean threshold in force per subject and day index.
    pub thresholds: BTreeMap<Subject, BTreeMap<i64, f64>>,
    /// First day index with data per subject.
    pub first_days: BTreeMap<Subject, i64>,
    /// (attributed tickets, cost nano-USD) per day index.
    pub ticket_costs: BTreeMap<i64, (i64, i64)>,
}

/// Per subject: per day index, its cells; and its rescoring evidence per day and side.
#[derive(Debug, Default)]
pub struct Loaded {
    pub cells: BTreeMap<Subject, BTreeMap<i64, Cells>>,
    pub rescore: BTreeMap<Subject, BTreeMap<i64, [Vec<RescoreCell>; 2]>>,
}

impl Loaded {
    pub fn add_cells(&mut self, rows: Vec<CalibRow>, capable_tier: &str) {
        for r in rows {
            let served = if r.tier == capable_tier { Served::Capable } else { Served::Cheap };
            self.cells
                .entry((r.classifier_version, r.router))
                .or_default()
                .entry(r.day_ms.div_euclid(DAY_MS))
                .or_default()
                .add(served, r.cell, r.group, &r.counts);
        }
    }

    pub fn add_rescore(&mut self, rows: Vec<RescoreCellRow>, capable_tier: &str) {
        for r in rows {
            let side = usize::from(r.tier == capable_tier);
            let day = self
                .rescore
                .entry((r.classifier_version, r.router))
                .or_default()
                .entry(r.day_ms.div_euclid(DAY_MS))
                .or_insert_with(|| [vec![RescoreCell::default(); 100], vec![RescoreCell::default(); 100]]);
            if let Some(c) = day[side].get_mut(usize::from(r.cell)) {
                c.add(&r.evidence);
            }
        }
    }
}

fn window_cells(days: &BTreeMap<i64, Cells>, first: i64, last: i64) -> Cells {
    let mut w = Cells::default();
    for (_, c) in days.range(first..=last) {
        w.merge(c);
    }
    w
}

fn seed(subject: &Subject, day: i64, window: u32) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(subject.0.as_bytes());
    h.update(&[0xff]);
    h.update(subject.1.as_bytes());
    h.update(&day.to_le_bytes());
    h.update(&window.to_le_bytes());
    h.digest()
}

/// Baseline day range of a subject: configured dates, else its first `baseline_days` days.
pub fn baseline_range(cfg: &RouterEvalConfig, first_day: i64) -> (i64, i64) {
    match (cfg.baseline_from, cfg.baseline_to) {
        (Some(a), Some(b)) => {
            let day =
                |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()) / DAY_MS;
            (day(a), day(b))
        }
        _ => (first_day, first_day + i64::from(cfg.baseline_days) - 1),
    }
}

/// Evaluate every subject: the rows to store and the calibration-regression evaluations.
pub fn evaluate(
    cfg: &RouterEvalConfig,
    ctx: &Context,
    loaded: &Loaded,
) -> (Vec<DayResult>, BTreeMap<Subject, Vec<Evaluation>>) {
    let mut out = vec![];
    let mut evals: BTreeMap<Subject, Vec<Evaluation>> = BTreeMap::new();
    for (subject, days) in &loaded.cells {
        let first_day = ctx.first_days.get(subject).copied().or_else(|| days.keys().next().copied());
        let Some(first_day) = first_day else { continue };
        let (base_first, base_last) = baseline_range(cfg, first_day);
        let baseline_ready = base_last <= ctx.last_mature_day;
        let baseline = window_cells(days, base_first, base_last);
        let baseline_cheap = baseline.per_cell(Served::Cheap);
        let bins = ctx.edges.get(subject).map(|e| bins_from_edges(e)).unwrap_or_default();
        let tests = bins.len() * cfg.windows_days.len();
        let cascade = subject.1 == "CASCADE";
        let rescore_days = loaded.rescore.get(subject);
        let mut regressions: BTreeMap<i64, (bool, f64, f64)> = BTreeMap::new();
        for day in ctx.first_day.max(first_day)..=ctx.last_day.min(ctx.last_mature_day) {
            for &wd in &cfg.windows_days {
                let from = day - i64::from(wd) + 1;
                if from < first_day {
                    continue; // the window reaches before the first data: not a full window
                }
                let w = window_cells(days, from, day);
                if w.is_empty() {
                    continue;
                }
                let in_baseline = day <= base_last && from >= base_first;
                let cheap = w.per_cell(Served::Cheap);
                let rows = reliability(
                    cfg,
                    &bins,
                    &cheap,
                    (baseline_ready && !in_baseline).then_some(&baseline_cheap[..]),
                    in_baseline,
                    tests,
                );
                let summary = (!bins.is_empty()).then(|| {
                    calibration_error(
                        &bins,
                        &w.per_group_cell(Served::Cheap),
                        cfg.bootstrap_replicates,
                        seed(subject, day, wd),
                    )
                });
                // Regression: the worst regressed bin's rate against its bar.
                let e = regressions.entry(day).or_insert((false, 0.0, 0.0));
                for r in &rows {
                    let (Some(rate), Some(base)) = (r.failure_rate, r.baseline_failure_rate) else { continue };
                    let bar = base * (1.0 + cfg.min_relative_increase);
                    let regressed = r.status == BinStatus::Regressed;
                    if (regressed && !e.0) || (regressed == e.0 && rate - bar > e.1 - e.2) {
                        *e = (regressed, rate, bar);
                    }
                }
                let advice = advice_for(cfg, ctx, subject, cascade, &w, &cheap, rescore_days, from, day);
                out.push(DayResult {
                    day_ms: day * DAY_MS,
                    subject: subject.clone(),
                    window: format!("{wd}d"),
                    bins: rows,
                    summary,
                    advice,
                });
            }
        }
        let list: Vec<Evaluation> = regressions
            .into_iter()
            .filter(|(day, _)| *day > base_last && baseline_ready)
            .map(|(day, (regressed, value, threshold))| Evaluation {
                window_start_ms: day * DAY_MS,
                window_end_ms: (day + 1) * DAY_MS,
                level: regressed.then_some(Severity::Critical),
                value,
                threshold,
            })
            .collect();
        if !bins.is_empty() {
            evals.insert(subject.clone(), list);
        }
    }
    (out, evals)
}

#[allow(clippy::too_many_arguments)]
fn advice_for(
    cfg: &RouterEvalConfig,
    ctx: &Context,
    subject: &Subject,
    cascade: bool,
    w: &Cells,
    cheap: &[CalibCounts],
    rescore_days: Option<&BTreeMap<i64, [Vec<RescoreCell>; 2]>>,
    from: i64,
    day: i64,
) -> Vec<AdviceRow> {
    let thresholds: Vec<f64> =
        ctx.thresholds.get(subject).map(|t| t.range(from..=day).map(|(_, v)| *v).collect()).unwrap_or_default();
    if thresholds.is_empty() {
        return vec![];
    }
    let current = thresholds.iter().sum::<f64>() / thresholds.len() as f64;
    let hc = cfg.human_cost_per_failure_usd.unwrap_or_else(|| {
        let (tickets, cost) = ctx.ticket_costs.range(from..=day).fold((0i64, 0i64), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
        if tickets > 0 {
            cost as f64 / 1e9 / tickets as f64
        } else {
            0.0
        }
    });
    let mut rescore = [vec![RescoreCell::default(); 100], vec![RescoreCell::default(); 100]];
    for (_, sides) in rescore_days.map(|d| d.range(from..=day)).into_iter().flatten() {
        for s in 0..2 {
            for (a, b) in rescore[s].iter_mut().zip(&sides[s]) {
                a.add(b);
            }
        }
    }
    let capable = w.per_cell(Served::Capable);
    advise(
        cfg,
        &AdviceInput {
            cascade,
            cheap,
            capable: &capable,
            rescore_cheap: &rescore[0],
            rescore_capable: &rescore[1],
            current,
            human_cost_per_failure_usd: hc,
        },
    )
}

/// The label of a calibration-regression subject.
pub fn subject_label(s: &Subject) -> String {
    format!("classifier_version={} router={}", s.0, s.1)
}
