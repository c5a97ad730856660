//! The report's figures, read from the public views of either store.
//!
//! Every query is one SQL text for both backends: days are read as `CAST(day AS TEXT)`
//! (`YYYY-MM-DD` in both), sums as `CAST(… AS BIGINT)` (Postgres sums bigints to numeric),
//! money and rates as `CAST(… AS DOUBLE PRECISION)` (SQLite gives that REAL affinity) and flags as
//! `CASE WHEN … THEN 1 ELSE 0 END` (booleans in Postgres, integers in SQLite). The one dialect
//! difference, a timestamp as epoch milliseconds, is [`ReportPool::epoch_ms`].

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::{AlertMark, DayRange};
use crate::alert::misroute::EstimateDay;
use crate::alert::quality::{AGGREGATE_KIND, KIND as QUALITY_KIND};
use crate::config::Config;
pub use crate::router_eval::advise::AdviceView;
use crate::stats::wilson95;

/// Days pooled by the rate charts: daily rates at demo volume are too noisy to read.
pub(crate) const TRAILING_DAYS: usize = 7;

/// A connection pool of either store, read through the public views only.
#[derive(Clone)]
pub enum ReportPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl ReportPool {
    /// All rows of `sql`, each decoded as the tuple (or `FromRow` type) `T`.
    async fn rows<T>(&self, sql: &str) -> anyhow::Result<Vec<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
    {
        let rows = match self {
            ReportPool::Sqlite(p) => sqlx::query_as::<_, T>(sql).fetch_all(p).await,
            ReportPool::Postgres(p) => sqlx::query_as::<_, T>(sql).fetch_all(p).await,
        };
        rows.with_context(|| format!("reading the report's figures: {}", first_line(sql)))
    }

    /// A timestamp column of a view as epoch milliseconds (BIGINT): Postgres has `timestamptz`,
    /// SQLite ISO-8601 text.
    fn epoch_ms(&self, column: &str) -> String {
        match self {
            ReportPool::Sqlite(_) => format!("CAST(round((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER)"),
            ReportPool::Postgres(_) => format!("CAST(round(EXTRACT(EPOCH FROM {column}) * 1000) AS BIGINT)"),
        }
    }

    /// `sqlite` or `postgres`, for the page.
    pub fn backend(&self) -> &'static str {
        match self {
            ReportPool::Sqlite(_) => "SQLite",
            ReportPool::Postgres(_) => "Postgres",
        }
    }
}

type AdviceTuple = (String, String, String, String, f64, i64, i64, f64, f64, f64, f64, i64, f64, f64, f64);

/// The columns of an [`AdviceView`], from `threshold_advice` as `a`.
const ADVICE_COLUMNS: &str = r#"CAST(a.day AS TEXT), a.classifier_version, a.router, a."window",
       CAST(a.threshold AS DOUBLE PRECISION),
       CAST(CASE WHEN a.is_current THEN 1 ELSE 0 END AS BIGINT),
       CAST(CASE WHEN a.is_recommended THEN 1 ELSE 0 END AS BIGINT),
       CAST(a.cheap_share AS DOUBLE PRECISION), CAST(a.net_cost_usd AS DOUBLE PRECISION),
       CAST(a.net_cost_lo_usd AS DOUBLE PRECISION), CAST(a.net_cost_hi_usd AS DOUBLE PRECISION),
       CAST(CASE WHEN a.extrapolated THEN 1 ELSE 0 END AS BIGINT),
       CAST(a.net_saving_usd AS DOUBLE PRECISION), CAST(a.net_saving_lo_usd AS DOUBLE PRECISION),
       CAST(a.net_saving_hi_usd AS DOUBLE PRECISION)"#;

/// `threshold_advice` rows (as `a`) after `from`, ordered by version, router, window, day and
/// threshold.
async fn advice_rows(pool: &ReportPool, from: &str) -> anyhow::Result<Vec<AdviceView>> {
    let rows: Vec<AdviceTuple> = pool
        .rows(&format!(
            r#"SELECT {ADVICE_COLUMNS}
               FROM {from}
               ORDER BY a.classifier_version, a.router, a."window", a.day, a.threshold"#
        ))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| AdviceView {
            day: r.0,
            classifier_version: r.1,
            router: r.2,
            window: r.3,
            threshold: r.4,
            is_current: r.5 != 0,
            is_recommended: r.6 != 0,
            cheap_share: r.7,
            net_cost_usd: r.8,
            net_cost_lo_usd: r.9,
            net_cost_hi_usd: r.10,
            extrapolated: r.11 != 0,
            net_saving: (r.12, r.13, r.14),
        })
        .collect())
}

/// Every `threshold_advice` row of one window (e.g. `7d`), ordered by version, router, day and
/// threshold.
pub async fn threshold_advice(pool: &ReportPool, window: &str) -> anyhow::Result<Vec<AdviceView>> {
    // The window is one of the configured `Nd` names; anything else is refused, not quoted.
    anyhow::ensure!(
        window.len() <= 4 && window.ends_with('d') && window[..window.len() - 1].bytes().all(|b| b.is_ascii_digit()),
        "window must look like 7d, not {window:?}"
    );
    advice_rows(pool, &format!(r#"threshold_advice a WHERE a."window" = '{window}'"#)).await
}

/// The rows of each classifier version, router and window on that window's last evaluated day
/// (every window: the report picks one per version).
async fn threshold_advice_last_days(pool: &ReportPool) -> anyhow::Result<Vec<AdviceView>> {
    advice_rows(pool, &last_day_join("threshold_advice")).await
}

/// `view a` restricted to the last day of each classifier version, router and window.
fn last_day_join(view: &str) -> String {
    format!(
        r#"{view} a
           JOIN (SELECT classifier_version, router, "window", MAX(day) AS last_day
                 FROM {view} GROUP BY classifier_version, router, "window") m
             ON m.classifier_version = a.classifier_version AND m.router = a.router
            AND m."window" = a."window" AND m.last_day = a.day"#
    )
}

/// One confidence bin of the reliability curve, as read from `calibration_daily`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CalibrationBin {
    pub day: String,
    pub classifier_version: String,
    pub router: String,
    pub window: String,
    pub bin: i64,
    pub conf_lo: f64,
    pub conf_hi: f64,
    /// Mean confidence of the bin's cheap-served turns in the window.
    pub conf_mean: Option<f64>,
    pub n: u64,
    pub failure_rate: Option<f64>,
    pub failure_rate_lo: Option<f64>,
    pub failure_rate_hi: Option<f64>,
    pub baseline_n: u64,
    pub baseline_failure_rate: Option<f64>,
    pub status: String,
}

impl CalibrationBin {
    /// Where the bin is drawn: its turns' mean confidence, else its midpoint.
    pub fn x(&self) -> f64 {
        self.conf_mean.unwrap_or((self.conf_lo + self.conf_hi) / 2.0)
    }

    /// The window's failure rate with its Wilson 95% interval, when the bin has turns.
    pub fn now(&self) -> Option<(f64, f64, f64)> {
        match (self.n, self.failure_rate, self.failure_rate_lo, self.failure_rate_hi) {
            (1.., Some(r), Some(lo), Some(hi)) => Some((r, lo, hi)),
            _ => None,
        }
    }

    /// The baseline window's failure rate, when the bin had turns in it.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline_failure_rate.filter(|_| self.baseline_n > 0)
    }

    pub fn regressed(&self) -> bool {
        self.status == "regressed"
    }
}

/// The calibration error of one day, as read from `calibration_summary_daily`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EceDay {
    pub day: String,
    pub classifier_version: String,
    pub router: String,
    pub window: String,
    pub n: u64,
    /// Debiased ECE with its bootstrap interval.
    pub ece: f64,
    pub ece_lo: Option<f64>,
    pub ece_hi: Option<f64>,
    pub overconfidence: Option<f64>,
}

/// The reliability curve of one classifier version and router on its last evaluated day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReliabilityCurve {
    pub classifier_version: String,
    pub router: String,
    pub window: String,
    pub day: String,
    /// In bin order.
    pub bins: Vec<CalibrationBin>,
    /// The calibration error on the curve's day (or the last day before it) and on the first
    /// evaluated day of the same window in the report's range.
    pub ece_now: Option<EceDay>,
    pub ece_first: Option<EceDay>,
}

/// The net cost against the threshold of one classifier version and router on the last evaluated
/// day of one window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetCostCurve {
    /// The threshold in force, the recommended one and the day, as `tierwatch advise` reads them.
    pub advice: crate::router_eval::advise::Advice,
    pub window: String,
    /// That day's candidate thresholds, in threshold order.
    pub rows: Vec<AdviceView>,
}

/// The reliability curves prefer the longer window (more turns per bin), the net cost a week.
pub(crate) const CURVE_WINDOWS: [&str; 2] = ["28d", "7d"];
pub(crate) const NET_COST_WINDOWS: [&str; 1] = ["7d"];

/// A window's length in days (`28d` → 28); other names sort after every `Nd`.
fn window_days(window: &str) -> u32 {
    window.strip_suffix('d').and_then(|n| n.parse().ok()).unwrap_or(u32::MAX)
}

/// Which of the `present` windows to show: the first `preferred` one present, else the longest
/// (`longest`) or the shortest one.
pub(crate) fn pick_window<'a>(present: &[&'a str], preferred: &[&str], longest: bool) -> Option<&'a str> {
    if let Some(w) = preferred.iter().find_map(|p| present.iter().find(|w| *w == p)) {
        return Some(*w);
    }
    let by_days = |w: &&'a str| (window_days(w), *w);
    if longest {
        present.iter().copied().max_by_key(by_days)
    } else {
        present.iter().copied().min_by_key(by_days)
    }
}

/// The distinct items, in order.
fn distinct<T: Ord>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// Per classifier version and router: the window of [`CURVE_WINDOWS`] (else the longest), the
/// bins of its last day, and the ECE of that day and of the window's first day. `bins` and `eces`
/// hold the report's range only.
pub(crate) fn reliability_curves(bins: &[CalibrationBin], eces: &[EceDay]) -> Vec<ReliabilityCurve> {
    let mut out = vec![];
    for (cv, router) in distinct(bins.iter().map(|b| (b.classifier_version.as_str(), b.router.as_str()))) {
        let of: Vec<&CalibrationBin> =
            bins.iter().filter(|b| b.classifier_version == cv && b.router == router).collect();
        let windows = distinct(of.iter().map(|b| b.window.as_str()));
        let Some(window) = pick_window(&windows, &CURVE_WINDOWS, true) else { continue };
        let of: Vec<&CalibrationBin> = of.into_iter().filter(|b| b.window == window).collect();
        let Some(day) = of.iter().map(|b| b.day.as_str()).max() else { continue };
        let mut curve: Vec<CalibrationBin> = of.iter().filter(|b| b.day == day).map(|b| (*b).clone()).collect();
        curve.sort_by_key(|b| b.bin);
        let ece: Vec<&EceDay> = eces
            .iter()
            .filter(|e| e.classifier_version == cv && e.router == router && e.window == window && e.day.as_str() <= day)
            .collect();
        out.push(ReliabilityCurve {
            classifier_version: cv.to_owned(),
            router: router.to_owned(),
            window: window.to_owned(),
            day: day.to_owned(),
            bins: curve,
            ece_now: ece.iter().max_by(|a, b| a.day.cmp(&b.day)).map(|e| (*e).clone()),
            ece_first: ece.iter().min_by(|a, b| a.day.cmp(&b.day)).map(|e| (*e).clone()),
        });
    }
    out
}

/// Per classifier version and router: the window of [`NET_COST_WINDOWS`] (else the shortest) and
/// the candidate thresholds of its last day, left out when that day has no threshold in force.
/// `rows` hold the report's range only.
pub(crate) fn net_cost_curves(rows: &[AdviceView]) -> Vec<NetCostCurve> {
    let mut out = vec![];
    for (cv, router) in distinct(rows.iter().map(|r| (r.classifier_version.as_str(), r.router.as_str()))) {
        let of: Vec<&AdviceView> = rows.iter().filter(|r| r.classifier_version == cv && r.router == router).collect();
        let windows = distinct(of.iter().map(|r| r.window.as_str()));
        let Some(window) = pick_window(&windows, &NET_COST_WINDOWS, false) else { continue };
        let of: Vec<AdviceView> = of.into_iter().filter(|r| r.window == window).cloned().collect();
        // The day, current and recommended rows `tierwatch advise` reads.
        let Some(advice) = crate::router_eval::advise::latest(&of, None).into_iter().next() else { continue };
        let mut day_rows: Vec<AdviceView> = of.into_iter().filter(|r| r.day == advice.day).collect();
        day_rows.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
        out.push(NetCostCurve { advice, window: window.to_owned(), rows: day_rows });
    }
    out
}

/// The bins of each classifier version, router and window on that window's last evaluated day.
async fn calibration_last_days(pool: &ReportPool) -> anyhow::Result<Vec<CalibrationBin>> {
    type Num = Option<f64>;
    type Row = (String, String, String, String, i64, f64, f64, Num, i64, Num, Num, Num, i64, Num, String);
    let rows: Vec<Row> = pool
        .rows(&format!(
            r#"SELECT CAST(a.day AS TEXT), a.classifier_version, a.router, a."window", CAST(a.bin AS BIGINT),
                      CAST(a.conf_lo AS DOUBLE PRECISION), CAST(a.conf_hi AS DOUBLE PRECISION),
                      CAST(a.conf_mean AS DOUBLE PRECISION), CAST(a.n AS BIGINT),
                      CAST(a.failure_rate AS DOUBLE PRECISION), CAST(a.failure_rate_lo AS DOUBLE PRECISION),
                      CAST(a.failure_rate_hi AS DOUBLE PRECISION), CAST(a.baseline_n AS BIGINT),
                      CAST(a.baseline_failure_rate AS DOUBLE PRECISION), a.status
               FROM {}
               ORDER BY a.classifier_version, a.router, a."window", a.bin"#,
            last_day_join("calibration_daily")
        ))
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| CalibrationBin {
            day: r.0,
            classifier_version: r.1,
            router: r.2,
            window: r.3,
            bin: r.4,
            conf_lo: r.5,
            conf_hi: r.6,
            conf_mean: r.7,
            n: count(r.8),
            failure_rate: r.9,
            failure_rate_lo: r.10,
            failure_rate_hi: r.11,
            baseline_n: count(r.12),
            baseline_failure_rate: r.13,
            status: r.14,
        })
        .collect())
}

/// Every day's calibration error that has one, ordered by version, router, window and day.
async fn calibration_errors(pool: &ReportPool) -> anyhow::Result<Vec<EceDay>> {
    type Row = (String, String, String, String, i64, f64, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> = pool
        .rows(
            r#"SELECT CAST(day AS TEXT), classifier_version, router, "window", CAST(n AS BIGINT),
                      CAST(ece AS DOUBLE PRECISION), CAST(ece_lo AS DOUBLE PRECISION),
                      CAST(ece_hi AS DOUBLE PRECISION), CAST(overconfidence AS DOUBLE PRECISION)
               FROM calibration_summary_daily WHERE ece IS NOT NULL
               ORDER BY classifier_version, router, "window", day"#,
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| EceDay {
            day: r.0,
            classifier_version: r.1,
            router: r.2,
            window: r.3,
            n: count(r.4),
            ece: r.5,
            ece_lo: r.6,
            ece_hi: r.7,
            overconfidence: r.8,
        })
        .collect())
}

/// The start of a query, to name it in an error.
fn first_line(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(8).collect();
    format!("{} …", words.join(" "))
}

/// What the report needs from the configuration.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub capable_tier: String,
    /// The attribution window W, in hours and milliseconds.
    pub window_hours: f64,
    pub window_ms: i64,
    pub thresholds: Thresholds,
}

impl ReportSettings {
    pub fn from_config(cfg: &Config) -> ReportSettings {
        ReportSettings {
            capable_tier: cfg.ledger.capable_tier.clone(),
            window_hours: cfg.attribution.window_hours,
            window_ms: cfg.attribution.window_ms(),
            thresholds: Thresholds {
                warning_d: cfg.drift.warning_ks_d,
                critical_d: cfg.drift.critical_ks_d,
                warning_psi: cfg.drift.warning_psi,
                critical_psi: cfg.drift.critical_psi,
            },
        }
    }
}

/// The drift thresholds drawn on the drift charts.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warning_d: f64,
    pub critical_d: f64,
    pub warning_psi: f64,
    pub critical_psi: f64,
}

/// Per (day, tier) counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TierDay {
    pub conversations: u64,
    pub failed: u64,
    pub decisions: u64,
    pub thumbs_down: u64,
    pub csat_n: u64,
    pub csat_sum: f64,
    pub reviews: u64,
    pub reviews_wrong: u64,
}

/// One day of one drift window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DriftDay {
    pub ks_d: Option<f64>,
    pub psi: Option<f64>,
    pub psi_noise: Option<f64>,
    pub share_expected: Option<f64>,
    pub share_observed: Option<f64>,
    /// The observed share's Wilson 95% interval (at distinct conversations).
    pub share_observed_lo: Option<f64>,
    pub share_observed_hi: Option<f64>,
    /// The configured target share (`[routing.targets]`), when there is one.
    pub share_target: Option<f64>,
}

/// One day of the ledger and the human volume.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MoneyDay {
    pub inference_saved: f64,
    pub excess_human: f64,
    /// All tickets opened that day, attributed or not (`human_volume_daily`).
    pub human_cost: f64,
    pub tickets: u64,
    /// From `ledger_daily`.
    pub attributed_human: f64,
    pub net: f64,
    pub unattributed: u64,
    pub mature: bool,
}

/// One day of the rescoring slice, all routed tiers together.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SampleDay {
    pub sampled: u64,
    pub scored: u64,
    pub pending: u64,
    pub shed: u64,
    /// Scored samples of the routed-down tiers, and those judged misrouted (unweighted).
    pub down_scored: u64,
    pub down_suspected: u64,
    /// Samples with a human review.
    pub reviewed: u64,
}

/// Everything the page draws, read from the views.
pub struct ReportData {
    pub(crate) start: NaiveDate,
    pub(crate) days: usize,
    pub(crate) settings: ReportSettings,
    /// `rescore_estimates_daily` of the routed-down tiers, by day index (what the misroute rule
    /// judges).
    pub(crate) misroute: BTreeMap<i64, EstimateDay>,
    /// Per day index: (scored samples judged misrouted, scored samples), unweighted, of the
    /// routed-down tiers.
    pub(crate) sample_share: BTreeMap<usize, (u64, u64)>,
    pub(crate) samples: BTreeMap<usize, SampleDay>,
    pub(crate) tiers: BTreeMap<String, BTreeMap<usize, TierDay>>,
    pub(crate) drift: BTreeMap<String, BTreeMap<usize, DriftDay>>,
    pub(crate) money: BTreeMap<usize, MoneyDay>,
    /// Tickets opened per day index by cost center and by channel.
    pub(crate) cost_centers: BTreeMap<String, BTreeMap<usize, u64>>,
    pub(crate) channels: BTreeMap<String, BTreeMap<usize, u64>>,
    /// The first day index whose AI cohorts are not mature yet (tickets may still arrive).
    pub(crate) first_immature: Option<usize>,
    /// Every alert episode, in firing order.
    pub(crate) alerts: Vec<AlertMark>,
    /// Per classifier version and router, on the last evaluated day in the range: the
    /// reliability curve, and the net cost against the threshold.
    pub(crate) reliability: Vec<ReliabilityCurve>,
    pub(crate) net_cost: Vec<NetCostCurve>,
}

fn parse_day(day: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| anyhow::anyhow!("day {day:?}: {e}"))
}

/// The rows whose day `keep` keeps.
fn within<T>(rows: Vec<T>, day: fn(&T) -> &str, keep: impl Fn(&str) -> anyhow::Result<bool>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if keep(day(&row))? {
            out.push(row);
        }
    }
    Ok(out)
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// The first and last day with data (AI cohorts or human tickets), if any.
pub async fn data_days(pool: &ReportPool) -> anyhow::Result<Option<(NaiveDate, NaiveDate)>> {
    let rows: Vec<(Option<String>, Option<String>)> =
        pool.rows("SELECT CAST(MIN(day) AS TEXT), CAST(MAX(day) AS TEXT) FROM ledger_daily").await?;
    match rows.into_iter().next() {
        Some((Some(first), Some(last))) => Ok(Some((parse_day(&first)?, parse_day(&last)?))),
        _ => Ok(None),
    }
}

/// The days a report of `range` covers: (first day, number of days), or `None` when the store
/// holds no data in it.
pub async fn resolve_range(pool: &ReportPool, range: DayRange) -> anyhow::Result<Option<(NaiveDate, usize)>> {
    let Some((first, last)) = data_days(pool).await? else { return Ok(None) };
    let start = match range {
        DayRange::All => first,
        DayRange::Last(n) => last.checked_sub_days(chrono::Days::new(u64::from(n.max(1)) - 1)).unwrap_or(first),
        DayRange::Since(d) => d,
    };
    if start > last {
        return Ok(None);
    }
    Ok(Some((start, ((last - start).num_days() + 1) as usize)))
}

/// Every alert episode in the `alerts` view, in firing order.
pub async fn alerts(pool: &ReportPool, window_ms: i64) -> anyhow::Result<Vec<AlertMark>> {
    type Row = (String, String, String, String, i64, Option<i64>, f64, f64, Option<i64>);
    let sql = format!(
        "SELECT kind, subject, severity, state, {}, {}, CAST(value AS DOUBLE PRECISION), \
         CAST(threshold AS DOUBLE PRECISION), {} FROM alerts ORDER BY fired_at, kind, subject",
        pool.epoch_ms("fired_at"),
        pool.epoch_ms("resolved_at"),
        pool.epoch_ms("escalated_at"),
    );
    let rows: Vec<Row> = pool.rows(&sql).await?;
    let ts = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).with_context(|| format!("timestamp {ms} ms"));
    let mut out = Vec::with_capacity(rows.len());
    for (kind, subject, severity, state, fired, resolved, value, threshold, escalated) in rows {
        let fired_at = ts(fired)?;
        // Quality rules judge mature cohorts only; drift and misroute estimates are known at once.
        let mature_only = [QUALITY_KIND, AGGREGATE_KIND, crate::router_eval::CALIBRATION_KIND];
        let maturity = if mature_only.contains(&kind.as_str()) { window_ms } else { 0 };
        out.push(AlertMark {
            subject,
            severity,
            state,
            fired_at,
            resolved_at: resolved.map(ts).transpose()?,
            escalated_at: escalated.map(ts).transpose()?,
            value,
            threshold,
            known_at: fired_at + chrono::Duration::milliseconds(maturity),
            kind,
        });
    }
    Ok(out)
}

impl ReportData {
    /// Read the figures of `days` days from `start` (earlier days are left out; later ones, e.g.
    /// the drain after a simulated run, are kept for the cumulative sums).
    pub async fn load(
        pool: &ReportPool,
        settings: &ReportSettings,
        start: NaiveDate,
        days: usize,
    ) -> anyhow::Result<ReportData> {
        let day_index = |day: &str| -> anyhow::Result<Option<usize>> {
            Ok(usize::try_from((parse_day(day)? - start).num_days()).ok())
        };
        let mut tiers: BTreeMap<String, BTreeMap<usize, TierDay>> = BTreeMap::new();
        let rows: Vec<(String, String, i64, i64)> = pool
            .rows(
                "SELECT CAST(day AS TEXT), tier, CAST(SUM(ai_conversations) AS BIGINT), \
                 CAST(SUM(failed_deflections) AS BIGINT) FROM deflection_daily GROUP BY day, tier",
            )
            .await?;
        for (day, tier, conversations, failed) in rows {
            let Some(d) = day_index(&day)? else { continue };
            let e = tiers.entry(tier).or_default().entry(d).or_default();
            (e.conversations, e.failed) = (count(conversations), count(failed));
        }
        type QualityRow = (String, String, i64, i64, i64, Option<f64>, i64, i64);
        let rows: Vec<QualityRow> = pool
            .rows(
                "SELECT CAST(day AS TEXT), tier, CAST(SUM(decisions) AS BIGINT), CAST(SUM(thumbs_down) AS BIGINT), \
                 CAST(SUM(csat_n) AS BIGINT), CAST(SUM(csat_sum) AS DOUBLE PRECISION), \
                 CAST(SUM(reviews_n) AS BIGINT), CAST(SUM(reviews_wrong) AS BIGINT) \
                 FROM tier_quality_daily GROUP BY day, tier",
            )
            .await?;
        for (day, tier, decisions, thumbs_down, csat_n, csat_sum, reviews, reviews_wrong) in rows {
            let Some(d) = day_index(&day)? else { continue };
            let e = tiers.entry(tier).or_default().entry(d).or_default();
            (e.decisions, e.thumbs_down) = (count(decisions), count(thumbs_down));
            (e.csat_n, e.csat_sum) = (count(csat_n), csat_sum.unwrap_or(0.0));
            (e.reviews, e.reviews_wrong) = (count(reviews), count(reviews_wrong));
        }

        let mut drift: BTreeMap<String, BTreeMap<usize, DriftDay>> = BTreeMap::new();
        type Num = Option<f64>;
        type DriftRow = (String, String, Num, Num, Num, Num, Num, Num, Num, Num);
        let rows: Vec<DriftRow> = pool
            .rows(
                // Evaluated windows only: a day below `drift.min_n` (e.g. the drain after the last
                // simulated day) has a meaningless D.
                "SELECT CAST(day AS TEXT), \"window\", CAST(ks_d AS DOUBLE PRECISION), CAST(psi AS DOUBLE PRECISION), \
                 CAST(psi_noise AS DOUBLE PRECISION), CAST(cheap_share_expected AS DOUBLE PRECISION), \
                 CAST(cheap_share_observed AS DOUBLE PRECISION), CAST(cheap_share_observed_lo AS DOUBLE PRECISION), \
                 CAST(cheap_share_observed_hi AS DOUBLE PRECISION), CAST(cheap_share_target AS DOUBLE PRECISION) \
                 FROM confidence_drift_daily \
                 WHERE signal = 'router_confidence' AND status IN ('ok', 'warning', 'critical') ORDER BY day",
            )
            .await?;
        for (day, window, ks_d, psi, psi_noise, share_expected, share_observed, lo, hi, target) in rows {
            let Some(d) = day_index(&day)? else { continue };
            drift.entry(window).or_default().insert(
                d,
                DriftDay {
                    ks_d,
                    psi,
                    psi_noise,
                    share_expected,
                    share_observed,
                    share_observed_lo: lo,
                    share_observed_hi: hi,
                    share_target: target,
                },
            );
        }

        let mut money: BTreeMap<usize, MoneyDay> = BTreeMap::new();
        type LedgerRow = (String, Option<f64>, Option<f64>, Option<f64>, Option<f64>, i64);
        let rows: Vec<LedgerRow> = pool
            .rows(
                "SELECT CAST(day AS TEXT), CAST(inference_saved_usd AS DOUBLE PRECISION), \
                 CAST(excess_human_cost_usd AS DOUBLE PRECISION), CAST(attributed_human_cost_usd AS DOUBLE PRECISION), \
                 CAST(net_usd AS DOUBLE PRECISION), CAST(CASE WHEN mature THEN 1 ELSE 0 END AS BIGINT) \
                 FROM ledger_daily",
            )
            .await?;
        for (day, saved, excess, attributed, net, mature) in rows {
            let Some(d) = day_index(&day)? else { continue };
            let e = money.entry(d).or_default();
            e.inference_saved = saved.unwrap_or(0.0);
            e.excess_human = excess.unwrap_or(0.0);
            e.attributed_human = attributed.unwrap_or(0.0);
            e.net = net.unwrap_or(0.0);
            e.mature = mature != 0;
        }
        let (mut cost_centers, mut channels) = (BTreeMap::new(), BTreeMap::new());
        type HumanRow = (String, String, String, i64, i64, Option<f64>);
        let rows: Vec<HumanRow> = pool
            .rows(
                "SELECT CAST(day AS TEXT), cost_center, channel, CAST(tickets_opened AS BIGINT), \
                 CAST(unattributed_tickets AS BIGINT), CAST(human_cost_usd AS DOUBLE PRECISION) \
                 FROM human_volume_daily",
            )
            .await?;
        for (day, cost_center, channel, opened, unattributed, cost) in rows {
            let Some(d) = day_index(&day)? else { continue };
            let e = money.entry(d).or_default();
            e.tickets += count(opened);
            e.unattributed += count(unattributed);
            e.human_cost += cost.unwrap_or(0.0);
            for (map, key) in [(&mut cost_centers, cost_center), (&mut channels, channel)] {
                *map.entry(key).or_insert_with(BTreeMap::new).entry(d).or_insert(0) += count(opened);
            }
        }
        let rows: Vec<(Option<String>,)> = pool
            .rows("SELECT CAST(MIN(day) AS TEXT) FROM deflection_daily WHERE (CASE WHEN mature THEN 1 ELSE 0 END) = 0")
            .await?;
        let first_immature = match rows.into_iter().next() {
            // Immature days before the range: the whole range is immature.
            Some((Some(day),)) => Some(day_index(&day)?.unwrap_or(0)),
            _ => None,
        };

        // The rescoring slice of the routed-down tiers: the daily estimates as the alert rule reads
        // them (several routed-down tiers pooled per day), and the plain (biased) share of the
        // sample for comparison.
        let mut misroute: BTreeMap<i64, Vec<EstimateDay>> = BTreeMap::new();
        let mut samples: BTreeMap<usize, SampleDay> = BTreeMap::new();
        type EstimateRow = (String, String, i64, i64, i64, i64, Option<f64>, Option<f64>, Option<f64>);
        let rows: Vec<EstimateRow> = pool
            .rows(
                "SELECT CAST(day AS TEXT), tier, CAST(sampled AS BIGINT), CAST(scored AS BIGINT), \
                 CAST(pending AS BIGINT), CAST(shed AS BIGINT), CAST(weight_sum AS DOUBLE PRECISION), \
                 CAST(n_eff AS DOUBLE PRECISION), CAST(suspected_misroute_rate AS DOUBLE PRECISION) \
                 FROM rescore_estimates_daily ORDER BY 1, 2",
            )
            .await?;
        for (day, tier, sampled, scored, pending, shed, weight_sum, n_eff, rate) in rows {
            let offset = (parse_day(&day)? - start).num_days();
            if let Ok(d) = usize::try_from(offset) {
                let e = samples.entry(d).or_default();
                e.sampled += count(sampled);
                e.scored += count(scored);
                e.pending += count(pending);
                e.shed += count(shed);
            }
            if tier == settings.capable_tier {
                continue;
            }
            if let (Some(weight_sum), Some(n_eff), Some(rate)) = (weight_sum, n_eff, rate) {
                misroute.entry(offset).or_default().push(EstimateDay {
                    scored: count(scored),
                    weight_sum,
                    n_eff,
                    rate,
                });
            }
        }
        let misroute = misroute.into_iter().map(|(d, tiers)| (d, pool_estimates(&tiers))).collect();
        let mut sample_share: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        let rows: Vec<(String, String, i64, i64, i64)> = pool
            .rows(
                "SELECT CAST(day AS TEXT), tier, CAST(SUM(CASE WHEN suspected_misroute THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(COUNT(*) AS BIGINT), CAST(SUM(CASE WHEN review_addressed IS NULL THEN 0 ELSE 1 END) AS BIGINT) \
                 FROM review_queue WHERE status = 'scored' GROUP BY day, tier",
            )
            .await?;
        for (day, tier, suspected, scored, reviewed) in rows {
            let Some(d) = day_index(&day)? else { continue };
            samples.entry(d).or_default().reviewed += count(reviewed);
            if tier == settings.capable_tier {
                continue;
            }
            let e = sample_share.entry(d).or_default();
            e.0 += count(suspected);
            e.1 += count(scored);
            let s = samples.entry(d).or_default();
            s.down_suspected += count(suspected);
            s.down_scored += count(scored);
        }
        // Router evaluation: the last evaluated day in the range of each version and router.
        let in_range = |day: &str| -> anyhow::Result<bool> { Ok(day_index(day)?.is_some_and(|d| d < days)) };
        let bins = within(calibration_last_days(pool).await?, |b| &b.day, in_range)?;
        let eces = within(calibration_errors(pool).await?, |e| &e.day, in_range)?;
        let advice = within(threshold_advice_last_days(pool).await?, |a| &a.day, in_range)?;
        let (reliability, net_cost) = (reliability_curves(&bins, &eces), net_cost_curves(&advice));
        Ok(ReportData {
            start,
            days,
            settings: settings.clone(),
            misroute,
            sample_share,
            samples,
            tiers,
            drift,
            money,
            cost_centers,
            channels,
            first_immature,
            alerts: alerts(pool, settings.window_ms).await?,
            reliability,
            net_cost,
        })
    }

    /// Nothing to draw: no AI cohort and no ticket in the range.
    pub fn is_empty(&self) -> bool {
        let in_range = |d: &usize| *d < self.days;
        !self.tiers.values().any(|m| m.keys().any(in_range)) && !self.money.keys().any(in_range)
    }

    /// Trailing-window pooled rate with its Wilson 95% interval, per day: (day, rate, lo, hi).
    pub(crate) fn trailing(&self, tier: Option<&str>, f: impl Fn(&TierDay) -> (u64, u64)) -> Vec<(f64, f64, f64, f64)> {
        let mut out = vec![];
        for day in (TRAILING_DAYS - 1)..self.days {
            let (x, n) = self.pooled(tier, day + 1 - TRAILING_DAYS..=day, &f);
            if let Some((lo, hi)) = wilson95(x, n) {
                out.push((day as f64 + 1.0, x as f64 / n as f64, lo, hi));
            }
        }
        out
    }

    /// Σ (count, trials) of one tier (or all) over a range of day indexes.
    pub(crate) fn pooled(
        &self,
        tier: Option<&str>,
        days: std::ops::RangeInclusive<usize>,
        f: impl Fn(&TierDay) -> (u64, u64),
    ) -> (u64, u64) {
        let (mut x, mut n) = (0, 0);
        for d in days {
            for (t, by_day) in &self.tiers {
                if tier.is_some_and(|want| want != t) {
                    continue;
                }
                if let Some(c) = by_day.get(&d) {
                    let (a, b) = f(c);
                    x += a;
                    n += b;
                }
            }
        }
        (x, n)
    }
}

/// Several routed-down tiers' estimates of one day as one: Σ scored, Σw, the weighted mean rate
/// and Kish's n_eff of the union ((Σw)² / Σw², with Σw² of a tier = w² / n_eff). One tier is kept
/// as it is.
fn pool_estimates(tiers: &[EstimateDay]) -> EstimateDay {
    if let [one] = tiers {
        return *one;
    }
    let sw: f64 = tiers.iter().map(|e| e.weight_sum).sum();
    let sw2: f64 = tiers.iter().filter(|e| e.n_eff > 0.0).map(|e| e.weight_sum * e.weight_sum / e.n_eff).sum();
    let swy: f64 = tiers.iter().map(|e| e.rate * e.weight_sum).sum();
    EstimateDay {
        scored: tiers.iter().map(|e| e.scored).sum(),
        weight_sum: sw,
        n_eff: if sw2 > 0.0 { sw * sw / sw2 } else { 0.0 },
        rate: if sw > 0.0 { swy / sw } else { f64::NAN },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_one_tier_keeps_it_and_two_tiers_weight_by_their_sums() {
        let a = EstimateDay { scored: 10, weight_sum: 100.0, n_eff: 10.0, rate: 0.1 };
        let b = EstimateDay { scored: 30, weight_sum: 300.0, n_eff: 30.0, rate: 0.3 };
        let one = pool_estimates(&[a]);
        assert_eq!((one.scored, one.weight_sum, one.n_eff, one.rate), (10, 100.0, 10.0, 0.1));
        let two = pool_estimates(&[a, b]);
        assert_eq!(two.scored, 40);
        assert!((two.rate - 0.25).abs() < 1e-12, "{}", two.rate);
        // Σw² = 100²/10 + 300²/30 = 1000 + 3000; n_eff = 400² / 4000 = 40.
        assert!((two.n_eff - 40.0).abs() < 1e-9, "{}", two.n_eff);
    }

    fn bin(cv: &str, window: &str, day: &str, bin: i64) -> CalibrationBin {
        CalibrationBin {
            day: day.to_owned(),
            classifier_version: cv.to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: window.to_owned(),
            bin,
            conf_lo: bin as f64 / 10.0,
            conf_hi: (bin + 1) as f64 / 10.0,
            conf_mean: None,
            n: 100,
            failure_rate: Some(0.1),
            failure_rate_lo: Some(0.05),
            failure_rate_hi: Some(0.17),
            baseline_n: 0,
            baseline_failure_rate: None,
            status: "ok".to_owned(),
        }
    }

    fn ece(cv: &str, window: &str, day: &str, value: f64) -> EceDay {
        EceDay {
            day: day.to_owned(),
            classifier_version: cv.to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: window.to_owned(),
            n: 1000,
            ece: value,
            ece_lo: Some(value - 0.01),
            ece_hi: Some(value + 0.01),
            overconfidence: Some(0.0),
        }
    }

    fn advice(window: &str, day: &str, threshold: f64, current: bool, recommended: bool) -> AdviceView {
        AdviceView {
            day: day.to_owned(),
            classifier_version: "v1".to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: window.to_owned(),
            threshold,
            is_current: current,
            is_recommended: recommended,
            cheap_share: 0.5,
            net_cost_usd: 100.0,
            net_cost_lo_usd: 90.0,
            net_cost_hi_usd: 110.0,
            net_saving: (0.0, 0.0, 0.0),
            extrapolated: false,
        }
    }

    #[test]
    fn a_preferred_window_wins_else_the_longest_or_the_shortest() {
        assert_eq!(pick_window(&["7d", "28d"], &CURVE_WINDOWS, true), Some("28d"));
        assert_eq!(pick_window(&["7d"], &CURVE_WINDOWS, true), Some("7d"));
        assert_eq!(pick_window(&["14d", "90d"], &CURVE_WINDOWS, true), Some("90d"));
        assert_eq!(pick_window(&["14d", "90d", "28d"], &NET_COST_WINDOWS, false), Some("14d"));
        // `100d` is longer than `90d` although it sorts first as text.
        assert_eq!(pick_window(&["100d", "90d"], &[], true), Some("100d"));
        assert_eq!(pick_window(&[], &CURVE_WINDOWS, true), None);
    }

    #[test]
    fn a_curve_is_the_last_day_of_the_longer_window_with_ece_now_and_first() {
        let bins = vec![
            // v1: both windows; the 28d one on its last day, bins out of order.
            bin("v1", "28d", "2026-03-02", 4),
            bin("v1", "28d", "2026-03-02", 3),
            bin("v1", "28d", "2026-03-01", 3),
            bin("v1", "7d", "2026-03-03", 3),
            // v0: only 7d.
            bin("v0", "7d", "2026-02-10", 5),
        ];
        let eces = vec![
            ece("v1", "28d", "2026-02-01", 0.02),
            ece("v1", "28d", "2026-02-15", 0.03),
            ece("v1", "28d", "2026-03-02", 0.05),
            // After the curve's day, and of the other window: not used.
            ece("v1", "28d", "2026-03-04", 0.09),
            ece("v1", "7d", "2026-01-20", 0.01),
        ];
        let curves = reliability_curves(&bins, &eces);
        assert_eq!(curves.len(), 2);
        let (v0, v1) = (&curves[0], &curves[1]);
        assert_eq!((v0.classifier_version.as_str(), v0.window.as_str(), v0.day.as_str()), ("v0", "7d", "2026-02-10"));
        assert!(v0.ece_now.is_none() && v0.ece_first.is_none());
        assert_eq!((v1.window.as_str(), v1.day.as_str()), ("28d", "2026-03-02"));
        assert_eq!(v1.bins.iter().map(|b| b.bin).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(v1.ece_now.as_ref().map(|e| e.ece), Some(0.05));
        assert_eq!(v1.ece_first.as_ref().map(|e| e.day.as_str()), Some("2026-02-01"));
    }

    #[test]
    fn a_bin_is_drawn_at_its_mean_confidence_else_its_midpoint_and_only_with_turns() {
        let mut b = bin("v1", "7d", "2026-03-02", 6);
        assert!((b.x() - 0.65).abs() < 1e-12);
        b.conf_mean = Some(0.62);
        assert_eq!(b.x(), 0.62);
        assert_eq!(b.now(), Some((0.1, 0.05, 0.17)));
        assert_eq!(b.baseline(), None, "no baseline turns");
        b.baseline_n = 10;
        b.baseline_failure_rate = Some(0.04);
        assert_eq!(b.baseline(), Some(0.04));
        b.n = 0;
        assert_eq!(b.now(), None);
    }

    #[test]
    fn the_net_cost_curve_is_the_weeks_last_day_with_its_current_and_recommended_rows() {
        let rows = vec![
            advice("28d", "2026-03-05", 0.60, true, true),
            advice("7d", "2026-03-04", 0.61, false, false),
            advice("7d", "2026-03-04", 0.59, false, true),
            advice("7d", "2026-03-04", 0.60, true, false),
        ];
        let curves = net_cost_curves(&rows);
        assert_eq!(curves.len(), 1);
        let c = &curves[0];
        assert_eq!((c.window.as_str(), c.advice.day.as_str()), ("7d", "2026-03-04"));
        assert_eq!(c.rows.iter().map(|r| r.threshold).collect::<Vec<_>>(), [0.59, 0.60, 0.61]);
        assert_eq!(c.advice.current.threshold, 0.60);
        assert_eq!(c.advice.recommended.as_ref().map(|r| r.threshold), Some(0.59));
        // A last day without the threshold in force gives no curve (as `tierwatch advise`).
        assert!(net_cost_curves(&[advice("7d", "2026-03-04", 0.61, false, true)]).is_empty());
        // Without a 7-day window, the shortest one.
        let c = net_cost_curves(&[advice("28d", "2026-03-05", 0.6, true, false)]);
        assert_eq!(c[0].window, "28d");
    }
}
