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

/// One row of `threshold_advice`, as `tierwatch advise` and the report read it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceView {
    pub day: String,
    pub classifier_version: String,
    pub router: String,
    pub window: String,
    pub threshold: f64,
    pub is_current: bool,
    pub is_recommended: bool,
    pub cheap_share: f64,
    pub net_cost_usd: f64,
    pub net_cost_lo_usd: f64,
    pub net_cost_hi_usd: f64,
    /// Net cost of the threshold in force minus this one's, and its bounds.
    pub net_saving: (f64, f64, f64),
    pub extrapolated: bool,
}

type AdviceTuple = (String, String, String, String, f64, i64, i64, f64, f64, f64, f64, i64, f64, f64, f64);

/// Every `threshold_advice` row of one window (e.g. `7d`), ordered by version, router, day and
/// threshold.
pub async fn threshold_advice(pool: &ReportPool, window: &str) -> anyhow::Result<Vec<AdviceView>> {
    // The window is one of the configured `Nd` names; anything else is refused, not quoted.
    anyhow::ensure!(
        window.len() <= 4 && window.ends_with('d') && window[..window.len() - 1].bytes().all(|b| b.is_ascii_digit()),
        "window must look like 7d, not {window:?}"
    );
    let rows: Vec<AdviceTuple> = pool
        .rows(&format!(
            r#"SELECT CAST(day AS TEXT), classifier_version, router, "window", CAST(threshold AS DOUBLE PRECISION),
                      CAST(CASE WHEN is_current THEN 1 ELSE 0 END AS BIGINT),
                      CAST(CASE WHEN is_recommended THEN 1 ELSE 0 END AS BIGINT),
                      CAST(cheap_share AS DOUBLE PRECISION), CAST(net_cost_usd AS DOUBLE PRECISION),
                      CAST(net_cost_lo_usd AS DOUBLE PRECISION), CAST(net_cost_hi_usd AS DOUBLE PRECISION),
                      CAST(CASE WHEN extrapolated THEN 1 ELSE 0 END AS BIGINT),
                      CAST(net_saving_usd AS DOUBLE PRECISION), CAST(net_saving_lo_usd AS DOUBLE PRECISION),
                      CAST(net_saving_hi_usd AS DOUBLE PRECISION)
               FROM threshold_advice WHERE "window" = '{window}'
               ORDER BY classifier_version, router, day, threshold"#
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
}

fn parse_day(day: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| anyhow::anyhow!("day {day:?}: {e}"))
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
        type DriftRow = (String, String, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
        let rows: Vec<DriftRow> = pool
            .rows(
                // Evaluated windows only: a day below `drift.min_n` (e.g. the drain after the last
                // simulated day) has a meaningless D.
                "SELECT CAST(day AS TEXT), \"window\", CAST(ks_d AS DOUBLE PRECISION), CAST(psi AS DOUBLE PRECISION), \
                 CAST(psi_noise AS DOUBLE PRECISION), CAST(cheap_share_expected AS DOUBLE PRECISION), \
                 CAST(cheap_share_observed AS DOUBLE PRECISION) FROM confidence_drift_daily \
                 WHERE signal = 'router_confidence' AND status IN ('ok', 'warning', 'critical') ORDER BY day",
            )
            .await?;
        for (day, window, ks_d, psi, psi_noise, share_expected, share_observed) in rows {
            let Some(d) = day_index(&day)? else { continue };
            drift
                .entry(window)
                .or_default()
                .insert(d, DriftDay { ks_d, psi, psi_noise, share_expected, share_observed });
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
}
