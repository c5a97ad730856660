//! The drift evaluator: periodically merges the recorded confidence histograms into daily and
//! rolling 7-day windows, compares them with each classifier version's frozen reference, writes
//! `tw_drift_daily`, and turns the daily statuses into alert episodes.
//!
//! It runs in every instance but works in one at a time (a Postgres advisory lock), and each pass
//! recomputes every complete day of the look-back from the stored histograms, so a late event that
//! changes a past day is picked up and the result does not depend on which instance ran it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, Row};

use super::{evaluate, DriftConfig, DriftRow, Reference, Status, Window};
use crate::alert::quality::{
    evaluations, tests_count, DayCounts, QualityRuleConfig, AGGREGATE_KIND, ALL_TIERS, KIND as QUALITY_KIND,
};
use crate::alert::{episodes, AlertState, Episode, Evaluation, Hysteresis, Notification, WebhookSink};
use crate::metrics::{Signal, DAY_MS};
use crate::stats::hist::ConfHist;
use crate::stats::psi::PsiBins;
use crate::telemetry::Telemetry;

/// Arbitrary but fixed: the advisory lock key of the evaluator ("twdr").
const LOCK_KEY: i64 = 0x7477_6472;
/// Days of history re-evaluated on every pass.
const LOOKBACK_DAYS: i64 = 60;
pub const DRIFT_KIND: &str = "confidence_drift";

/// (classifier_version, router, signal)
pub type Subject = (String, String, Signal);

pub fn subject_label(s: &Subject) -> String {
    format!("classifier_version={} router={} signal={}", s.0, s.1, s.2.as_str())
}

pub struct Evaluator {
    pool: PgPool,
    cfg: DriftConfig,
    quality: QualityRuleConfig,
    window_ms: i64,
    telemetry: Arc<Telemetry>,
    webhooks: Option<WebhookSink>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassSummary {
    pub ran: bool,
    pub rows: usize,
    pub firing: usize,
    pub notified: usize,
}

impl Evaluator {
    pub fn new(
        pool: PgPool,
        cfg: DriftConfig,
        quality: QualityRuleConfig,
        attribution_window_ms: i64,
        telemetry: Arc<Telemetry>,
        webhooks: Option<WebhookSink>,
    ) -> Self {
        Self { pool, cfg, quality, window_ms: attribution_window_ms, telemetry, webhooks }
    }

    /// Evaluate every `evaluate_every_seconds` until `shutdown`.
    pub async fn run(self, shutdown: Arc<AtomicBool>) {
        let every = Duration::from_secs(self.cfg.evaluate_every_seconds);
        while !shutdown.load(Ordering::Relaxed) {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %format!("{e:#}"), "drift evaluation failed; will retry");
            }
            let mut waited = Duration::ZERO;
            while waited < every && !shutdown.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                waited += Duration::from_millis(200);
            }
        }
        if let Some(w) = self.webhooks {
            w.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// One pass, if this instance gets the lock.
    pub async fn pass(&self) -> anyhow::Result<PassSummary> {
        let mut lock_conn = self.pool.acquire().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *lock_conn).await?;
        if !got {
            return Ok(PassSummary::default());
        }
        let result = self.pass_locked().await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *lock_conn).await;
        result
    }

    async fn pass_locked(&self) -> anyhow::Result<PassSummary> {
        let wm: Option<i64> = sqlx::query_scalar("SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0")
            .fetch_one(&self.pool)
            .await?;
        let Some(wm) = wm else { return Ok(PassSummary { ran: true, ..Default::default() }) };
        // Complete days only: the day's end is at or before the cluster-wide watermark.
        let last_day = wm.div_euclid(DAY_MS) - 1;
        let first_day = last_day - LOOKBACK_DAYS + 1;
        let days = self.load_days(first_day, last_day).await?;
        let mut references = self.load_references().await?;
        self.complete_references(&days, last_day, &mut references).await?;

        let cfg = self.cfg.clone();
        let refs = references.clone();
        // KS/PSI over many days: off the async workers.
        let rows = tokio::task::spawn_blocking(move || evaluate_all(&cfg, &refs, &days)).await?;
        for s in rows.keys() {
            if !references.contains_key(&(s.0.clone(), s.2)) {
                self.telemetry.drift_missing_reference(&s.0);
            }
        }
        self.write_rows(&rows).await?;
        let (firing, notified) = self.update_alerts(&rows).await?;
        let (q_firing, q_notified) = self.quality_pass(wm).await?;
        Ok(PassSummary {
            ran: true,
            rows: rows.values().map(|d| d.len()).sum(),
            firing: firing + q_firing,
            notified: notified + q_notified,
        })
    }

    /// Tier quality regression over mature cohort days, per tier and for all tiers pooled.
    async fn quality_pass(&self, wm: i64) -> anyhow::Result<(usize, usize)> {
        let rows = sqlx::query(
            "SELECT (EXTRACT(EPOCH FROM q.bucket) * 1000)::bigint AS b, q.tier, SUM(q.thumbs_down)::bigint, \
               SUM(q.decisions)::bigint, SUM(q.failed_deflections)::bigint, SUM(q.reviews_wrong)::bigint, \
               SUM(q.reviews_n)::bigint, COALESCE(MAX(t.ai_conversations), 0)::bigint \
             FROM tw_agg_quality q LEFT JOIN tw_agg_tier_day t \
               ON t.day = (q.bucket AT TIME ZONE 'UTC')::date AND t.tier = q.tier \
             WHERE q.grain = 'd' GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading daily tier quality")?;
        let mut per_tier: BTreeMap<String, BTreeMap<i64, DayCounts>> = BTreeMap::new();
        for r in rows {
            let bucket: i64 = r.try_get(0)?;
            // Mature cohorts only: ticket rates rise until the attribution window has passed.
            if bucket + DAY_MS + self.window_ms > wm {
                continue;
            }
            let day = bucket.div_euclid(DAY_MS);
            let get = |i: usize| -> anyhow::Result<u64> { Ok(r.try_get::<i64, _>(i)?.max(0) as u64) };
            let c = DayCounts {
                thumbs_down: get(2)?,
                decisions: get(3)?,
                failed_deflections: get(4)?,
                reviews_wrong: get(5)?,
                reviews_n: get(6)?,
                conversations: get(7)?,
            };
            per_tier.entry(r.try_get(1)?).or_default().insert(day, c);
            per_tier.entry(ALL_TIERS.to_string()).or_default().entry(day).or_default().add(&c);
        }
        let tests = tests_count(per_tier.len());
        let h = self.quality.hysteresis();
        let (mut firing, mut notified) = (0, 0);
        for (tier, days) in &per_tier {
            let kind = if tier == ALL_TIERS { AGGREGATE_KIND } else { QUALITY_KIND };
            for (metric, evals) in evaluations(&self.quality, days, tests) {
                let subject = format!("tier={tier} metric={}", metric.as_str());
                let eps = episodes(kind, &subject, &evals, &h);
                let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
                firing += is_firing as usize;
                self.telemetry.set_alert_firing(kind, &subject, is_firing);
                notified += self.store_episodes(kind, &subject, &eps).await?;
            }
        }
        Ok((firing, notified))
    }

    /// Merge the hourly per-partition histograms into one window per subject and day.
    async fn load_days(
        &self,
        first_day: i64,
        last_day: i64,
    ) -> anyhow::Result<BTreeMap<Subject, BTreeMap<i64, Window>>> {
        let rows = sqlx::query(
            "SELECT (EXTRACT(EPOCH FROM hour) * 1000)::bigint, signal, classifier_version, router, conversations, \
             routed_cheap, threshold_sum, threshold_n, hist FROM tw_conf_hist \
             WHERE hour >= to_timestamp($1::double precision / 1000) AND hour < to_timestamp($2::double precision / 1000)",
        )
        .bind(first_day * DAY_MS)
        .bind((last_day + 1) * DAY_MS)
        .fetch_all(&self.pool)
        .await
        .context("reading tw_conf_hist")?;
        let mut out: BTreeMap<Subject, BTreeMap<i64, Window>> = BTreeMap::new();
        for r in rows {
            let hour: i64 = r.try_get(0)?;
            let Some(signal) = Signal::parse(&r.try_get::<String, _>(1)?) else { continue };
            let subject = (r.try_get::<String, _>(2)?, r.try_get::<String, _>(3)?, signal);
            let w = Window {
                hist: ConfHist::from_bytes(&r.try_get::<Vec<u8>, _>(8)?).context("stored histogram does not decode")?,
                conversations: r.try_get::<i64, _>(4)?.max(0) as u64,
                routed_cheap: r.try_get::<i64, _>(5)?.max(0) as u64,
                threshold_sum: r.try_get(6)?,
                threshold_n: r.try_get::<i64, _>(7)?.max(0) as u64,
            };
            out.entry(subject).or_default().entry(hour.div_euclid(DAY_MS)).or_default().add(&w);
        }
        Ok(out)
    }

    async fn load_references(&self) -> anyhow::Result<HashMap<(String, Signal), Reference>> {
        let rows = sqlx::query("SELECT classifier_version, signal, source, n_eff, hist, psi_edges FROM tw_references")
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::new();
        for r in rows {
            let Some(signal) = Signal::parse(&r.try_get::<String, _>(1)?) else { continue };
            let hist = ConfHist::from_bytes(&r.try_get::<Vec<u8>, _>(4)?).context("reference histogram")?;
            let edges: Vec<i32> = r.try_get(5)?;
            let bins = PsiBins::from_edges(edges.into_iter().map(|e| e.clamp(0, 10_000) as u16).collect())
                .map_err(|e| anyhow::anyhow!("reference PSI edges: {e}"))?;
            let n_eff: i64 = r.try_get(3)?;
            out.insert(
                (r.try_get(0)?, signal),
                Reference { hist, n_eff: n_eff.max(1) as u64, bins, source: r.try_get(2)? },
            );
        }
        Ok(out)
    }

    /// Freeze a reference for every (version, signal) that has none: from its configured file, or
    /// from its first `baseline_days` complete days of traffic.
    async fn complete_references(
        &self,
        days: &BTreeMap<Subject, BTreeMap<i64, Window>>,
        last_day: i64,
        refs: &mut HashMap<(String, Signal), Reference>,
    ) -> anyhow::Result<()> {
        let mut first_seen: BTreeMap<(String, Signal), i64> = BTreeMap::new();
        for ((cv, _, signal), by_day) in days {
            if let Some(first) = by_day.keys().next() {
                let e = first_seen.entry((cv.clone(), *signal)).or_insert(*first);
                *e = (*e).min(*first);
            }
        }
        for ((cv, signal), first) in first_seen {
            let key = (cv.clone(), signal);
            if refs.contains_key(&key) {
                continue;
            }
            let built = match self.cfg.reference_files.get(&cv) {
                Some(path) if signal != Signal::RescoreScore => {
                    let hist = super::reference::load(std::path::Path::new(path))?;
                    Some((hist.total(), hist, format!("file:{path}")))
                }
                _ => {
                    let (first, end) = match self.cfg.reference_windows.get(&cv) {
                        Some(r) => r.days(),
                        None => (first, first + i64::from(self.cfg.baseline_days) - 1),
                    };
                    if end > last_day {
                        tracing::info!(classifier_version = %cv, signal = signal.as_str(), "no reference yet: baseline window still filling");
                        None
                    } else {
                        let mut w = Window::default();
                        for ((c, _, s), by_day) in days {
                            if *c == cv && *s == signal {
                                for (_, dw) in by_day.range(first..=end) {
                                    w.add(dw);
                                }
                            }
                        }
                        let from = chrono::DateTime::from_timestamp_millis(first * DAY_MS).map(|d| d.date_naive());
                        let to = chrono::DateTime::from_timestamp_millis(end * DAY_MS).map(|d| d.date_naive());
                        let source = format!("baseline:{}..{}", fmt_day(from), fmt_day(to));
                        Some((w.conversations.max(1), w.hist, source))
                    }
                }
            };
            let Some((n_eff, hist, source)) = built else { continue };
            let Some(bins) = PsiBins::from_reference(&hist, self.cfg.psi_bins) else { continue };
            sqlx::query(
                "INSERT INTO tw_references (classifier_version, signal, source, n, n_eff, hist, psi_edges) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&cv)
            .bind(signal.as_str())
            .bind(&source)
            .bind(hist.total() as i64)
            .bind(n_eff as i64)
            .bind(hist.to_bytes())
            .bind(bins.edges().iter().map(|e| i32::from(*e)).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
            tracing::info!(classifier_version = %cv, signal = signal.as_str(), %source, n = hist.total(), "reference frozen");
            refs.insert(key, Reference { hist, n_eff, bins, source });
        }
        Ok(())
    }

    async fn write_rows(
        &self,
        rows: &BTreeMap<Subject, BTreeMap<(i64, &'static str), DriftRow>>,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for ((cv, router, signal), by_day) in rows {
            for ((day, window), r) in by_day {
                sqlx::query(
                    "INSERT INTO tw_drift_daily (day, classifier_version, router, signal, \"window\", n, n_eff, ref_n, \
                       ks_d, ks_p, psi, psi_noise, cheap_share_expected, cheap_share_observed, status, evaluated_at) \
                     VALUES ((to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, \
                       $7, $8, $9, $10, $11, $12, $13, $14, $15, now()) \
                     ON CONFLICT (day, classifier_version, router, signal, \"window\") DO UPDATE SET \
                       n = excluded.n, n_eff = excluded.n_eff, ref_n = excluded.ref_n, ks_d = excluded.ks_d, \
                       ks_p = excluded.ks_p, psi = excluded.psi, psi_noise = excluded.psi_noise, \
                       cheap_share_expected = excluded.cheap_share_expected, \
                       cheap_share_observed = excluded.cheap_share_observed, status = excluded.status, \
                       evaluated_at = now()",
                )
                .bind(day * DAY_MS)
                .bind(cv)
                .bind(router)
                .bind(signal.as_str())
                .bind(*window)
                .bind(r.n as i64)
                .bind(r.n_eff as i64)
                .bind(r.ref_n as i64)
                .bind(r.ks_d)
                .bind(r.ks_p)
                .bind(r.psi)
                .bind(r.psi_noise)
                .bind(r.cheap_share_expected)
                .bind(r.cheap_share_observed)
                .bind(r.status.as_str())
                .execute(&mut *tx)
                .await
                .context("writing tw_drift_daily")?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Episodes from the daily statuses → `tw_alerts`, the firing gauge and the webhooks.
    async fn update_alerts(
        &self,
        rows: &BTreeMap<Subject, BTreeMap<(i64, &'static str), DriftRow>>,
    ) -> anyhow::Result<(usize, usize)> {
        let h = Hysteresis {
            warning_after: self.cfg.warning_after,
            critical_after: self.cfg.critical_after,
            resolve_after: self.cfg.resolve_after,
        };
        let mut firing = 0;
        let mut notified = 0;
        for (subject, by_day) in rows {
            let label = subject_label(subject);
            let evals = daily_evaluations(by_day);
            let eps = episodes(DRIFT_KIND, &label, &evals, &h);
            let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
            firing += is_firing as usize;
            self.telemetry.set_alert_firing(DRIFT_KIND, &label, is_firing);
            notified += self.store_episodes(DRIFT_KIND, &label, &eps).await?;
        }
        Ok((firing, notified))
    }

    /// Upsert episodes; drop stored ones that re-evaluation no longer produces; notify transitions
    /// the webhooks have not been given yet. Returns the notifications sent.
    pub async fn store_episodes(&self, kind: &str, subject: &str, eps: &[Episode]) -> anyhow::Result<usize> {
        let ids: Vec<String> = eps.iter().map(|e| e.id.clone()).collect();
        sqlx::query("DELETE FROM tw_alerts WHERE kind = $1 AND subject = $2 AND NOT (id = ANY($3))")
            .bind(kind)
            .bind(subject)
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        let mut sent = 0;
        for e in eps {
            let transition = format!("{}:{}", e.state.as_str(), e.severity.as_str());
            let previous: Option<String> = sqlx::query_scalar(
                "INSERT INTO tw_alerts AS a (id, kind, subject, severity, state, value, threshold, window_start, window_end, \
                   fired_at, escalated_at, resolved_at, last_value, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000), \
                   to_timestamp($9::double precision / 1000), to_timestamp($10::double precision / 1000), \
                   to_timestamp($11::double precision / 1000), to_timestamp($12::double precision / 1000), $13, now()) \
                 ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
                   value = excluded.value, threshold = excluded.threshold, window_start = excluded.window_start, \
                   window_end = excluded.window_end, escalated_at = excluded.escalated_at, \
                   resolved_at = excluded.resolved_at, last_value = excluded.last_value, updated_at = now() \
                 RETURNING (SELECT notified FROM tw_alerts WHERE id = $1)",
            )
            .bind(&e.id)
            .bind(kind)
            .bind(subject)
            .bind(e.severity.as_str())
            .bind(e.state.as_str())
            .bind(e.value)
            .bind(e.threshold)
            .bind(e.window_start_ms)
            .bind(e.window_end_ms)
            .bind(e.fired_window_end_ms)
            .bind(e.escalated_window_end_ms)
            .bind(e.resolved_window_end_ms)
            .bind(e.last_value)
            .fetch_one(&self.pool)
            .await
            .context("writing tw_alerts")?;
            if previous.as_deref() == Some(transition.as_str()) {
                continue;
            }
            sqlx::query("UPDATE tw_alerts SET notified = $2 WHERE id = $1")
                .bind(&e.id)
                .bind(&transition)
                .execute(&self.pool)
                .await?;
            tracing::warn!(
                kind,
                subject,
                severity = e.severity.as_str(),
                state = e.state.as_str(),
                value = e.value,
                threshold = e.threshold,
                "alert"
            );
            if let Some(w) = &self.webhooks {
                w.notify(Notification {
                    episode: e.clone(),
                    state: e.state,
                    summary: format!("{kind} {subject}: {:.4} vs threshold {:.4}", e.value, e.threshold),
                    dashboard_url: None,
                });
            }
            sent += 1;
        }
        Ok(sent)
    }
}

fn fmt_day(d: Option<chrono::NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// Evaluate every day of every subject, daily and rolling 7-day windows.
pub fn evaluate_all(
    cfg: &DriftConfig,
    refs: &HashMap<(String, Signal), Reference>,
    days: &BTreeMap<Subject, BTreeMap<i64, Window>>,
) -> BTreeMap<Subject, BTreeMap<(i64, &'static str), DriftRow>> {
    let mut out = BTreeMap::new();
    for (subject, by_day) in days {
        let reference = refs.get(&(subject.0.clone(), subject.2));
        let (Some(&first), Some(&last)) = (by_day.keys().next(), by_day.keys().next_back()) else { continue };
        let mut rows = BTreeMap::new();
        for day in first..=last {
            let daily = by_day.get(&day).cloned().unwrap_or_default();
            rows.insert((day, "1d"), evaluate(cfg, reference, &daily));
            let mut week = Window::default();
            for (_, w) in by_day.range(day - 6..=day) {
                week.add(w);
            }
            rows.insert((day, "7d"), evaluate(cfg, reference, &week));
        }
        out.insert(subject.clone(), rows);
    }
    out
}

/// One evaluation per day: the worse of the daily and the 7-day window. Days where neither window
/// could decide (too few decisions, no reference) are not evaluations at all: they neither extend
/// nor break a streak.
pub fn daily_evaluations(by_day: &BTreeMap<(i64, &'static str), DriftRow>) -> Vec<Evaluation> {
    let mut days: BTreeMap<i64, Vec<&DriftRow>> = BTreeMap::new();
    for ((day, _), r) in by_day {
        days.entry(*day).or_default().push(r);
    }
    let mut out = vec![];
    for (day, rs) in days {
        let decided: Vec<&&DriftRow> =
            rs.iter().filter(|r| !matches!(r.status, Status::Insufficient | Status::NoReference)).collect();
        if decided.is_empty() {
            continue;
        }
        let worst = decided.iter().max_by(|a, b| {
            (a.status.level(), a.value).partial_cmp(&(b.status.level(), b.value)).unwrap_or(std::cmp::Ordering::Equal)
        });
        let Some(worst) = worst else { continue };
        out.push(Evaluation {
            window_start_ms: day * DAY_MS,
            window_end_ms: (day + 1) * DAY_MS,
            level: worst.status.level(),
            value: worst.value,
            threshold: worst.threshold,
        });
    }
    out
}
