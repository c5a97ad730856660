//! The drift/alert evaluator's storage on Postgres (drift, alerts and their outbox, router
//! evaluation). One instance evaluates at a time: a session advisory lock held on a dedicated
//! connection for the duration of a pass.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};
use tokio::sync::Mutex;

use super::PgStore;
use crate::alert::misroute::{EstimateDay, EstimateRow};
use crate::alert::outbox::{firing_episode, FiringRow, KEEP_DELIVERED_DAYS};
use crate::alert::quality::DayCounts;
use crate::alert::{Episode, OutboxRow, OutboxStore};
use crate::drift::evaluator::{DayWindows, DriftRecord, EvalStore, StoredReference};
use crate::metrics::{CalibCounts, CalibRow, Signal};
use crate::router_eval::advice::RescoreCell;
use crate::router_eval::pass::{DayResult, RescoreCellRow, RouterEvalStore};
use crate::stats::hist::ConfHist;

/// Arbitrary but fixed: the advisory lock key of the evaluator ("twdr").
const LOCK_KEY: i64 = 0x7477_6472;

/// The high 32 bits of the advisory lock key of a webhook's outbox lease ("twob"); the low 32 bits
/// are a hash of the webhook key.
const LEASE_KEY_PREFIX: i64 = 0x7477_6f62;

/// Postgres [`EvalStore`]: the pool plus the connection that holds the advisory lock, and the
/// connections holding the outbox leases (session advisory locks, one per webhook).
pub struct PgEvalStore {
    store: std::sync::Arc<PgStore>,
    lock: Mutex<Option<PoolConnection<Postgres>>>,
    leases: Mutex<HashMap<String, PoolConnection<Postgres>>>,
}

impl PgEvalStore {
    pub fn new(store: std::sync::Arc<PgStore>) -> Self {
        Self { store, lock: Mutex::new(None), leases: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn pg(&self) -> &PgStore {
        &self.store
    }
}

fn ms(col: &str) -> String {
    format!("(EXTRACT(EPOCH FROM {col}) * 1000)::bigint")
}

impl EvalStore for PgEvalStore {
    async fn try_lock(&self) -> anyhow::Result<bool> {
        let mut conn = self.store.pool().acquire().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *conn).await?;
        if got {
            *self.lock.lock().await = Some(conn);
        }
        Ok(got)
    }

    async fn unlock(&self) -> anyhow::Result<()> {
        if let Some(mut conn) = self.lock.lock().await.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn global_watermark(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0")
            .fetch_one(self.store.pool())
            .await?)
    }

    async fn conf_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<DayWindows> {
        let rows = sqlx::query(&format!(
            "SELECT {}, signal, classifier_version, router, conversations, routed_cheap, threshold_sum, threshold_n, hist \
             FROM tw_conf_hist WHERE hour >= to_timestamp($1::double precision / 1000) \
             AND hour < to_timestamp($2::double precision / 1000)",
            ms("hour")
        ))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.store.pool())
        .await
        .context("reading tw_conf_hist")?;
        crate::store::fold_conf_rows(&rows)
    }

    async fn references(&self) -> anyhow::Result<Vec<StoredReference>> {
        let rows = sqlx::query("SELECT classifier_version, signal, source, n_eff, hist, psi_edges FROM tw_references")
            .fetch_all(self.store.pool())
            .await?;
        let mut out = vec![];
        for r in rows {
            let Some(signal) = Signal::parse(&r.try_get::<String, _>(1)?) else { continue };
            let edges: Vec<i32> = r.try_get(5)?;
            out.push(StoredReference {
                classifier_version: r.try_get(0)?,
                signal,
                source: r.try_get(2)?,
                n_eff: r.try_get::<i64, _>(3)?.max(1) as u64,
                hist: ConfHist::from_bytes(&r.try_get::<Vec<u8>, _>(4)?).context("reference histogram")?,
                psi_edges: edges.into_iter().map(|e| e.clamp(0, 10_000) as u16).collect(),
            });
        }
        Ok(out)
    }

    async fn insert_reference(&self, r: &StoredReference) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tw_references (classifier_version, signal, source, n, n_eff, hist, psi_edges) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&r.classifier_version)
        .bind(r.signal.as_str())
        .bind(&r.source)
        .bind(r.hist.total() as i64)
        .bind(r.n_eff as i64)
        .bind(r.hist.to_bytes())
        .bind(r.psi_edges.iter().map(|e| i32::from(*e)).collect::<Vec<_>>())
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn write_drift(&self, rows: &[DriftRecord<'_>]) -> anyhow::Result<()> {
        let mut tx = self.store.pool().begin().await?;
        for rec in rows {
            let (cv, router, signal) = rec.subject;
            let r = rec.row;
            sqlx::query(
                "INSERT INTO tw_drift_daily (day, classifier_version, router, signal, \"window\", n, n_eff, ref_n, \
                   ks_d, ks_p, psi, psi_noise, cheap_share_expected, cheap_share_observed, status, evaluated_at, \
                   cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi) \
                 VALUES ((to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, \
                   $7, $8, $9, $10, $11, $12, $13, $14, $15, now(), $16, $17, $18) \
                 ON CONFLICT (day, classifier_version, router, signal, \"window\") DO UPDATE SET \
                   n = excluded.n, n_eff = excluded.n_eff, ref_n = excluded.ref_n, ks_d = excluded.ks_d, \
                   ks_p = excluded.ks_p, psi = excluded.psi, psi_noise = excluded.psi_noise, \
                   cheap_share_expected = excluded.cheap_share_expected, \
                   cheap_share_observed = excluded.cheap_share_observed, status = excluded.status, \
                   evaluated_at = now(), cheap_share_target = excluded.cheap_share_target, \
                   cheap_share_observed_lo = excluded.cheap_share_observed_lo, \
                   cheap_share_observed_hi = excluded.cheap_share_observed_hi",
            )
            .bind(rec.day_ms)
            .bind(cv)
            .bind(router)
            .bind(signal.as_str())
            .bind(rec.window)
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
            .bind(r.cheap_share_target)
            .bind(r.cheap_share_observed_lo)
            .bind(r.cheap_share_observed_hi)
            .execute(&mut *tx)
            .await
            .context("writing tw_drift_daily")?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn daily_tier_counts(&self) -> anyhow::Result<Vec<(i64, String, DayCounts)>> {
        let rows = sqlx::query(&format!(
            "SELECT {} AS b, q.tier, SUM(q.thumbs_down)::bigint, SUM(q.decisions)::bigint, \
               SUM(q.failed_deflections)::bigint, SUM(q.reviews_wrong)::bigint, SUM(q.reviews_n)::bigint, \
               COALESCE(MAX(t.ai_conversations), 0)::bigint \
             FROM tw_agg_quality q LEFT JOIN tw_agg_tier_day t \
               ON t.day = (q.bucket AT TIME ZONE 'UTC')::date AND t.tier = q.tier \
             WHERE q.grain = 'd' GROUP BY 1, 2",
            ms("q.bucket")
        ))
        .fetch_all(self.store.pool())
        .await
        .context("reading daily tier quality")?;
        let mut out = vec![];
        for r in rows {
            let sums = [r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?];
            out.push((r.try_get(0)?, r.try_get(1)?, DayCounts::from_sums(sums)));
        }
        Ok(out)
    }

    async fn rescore_estimates(&self, capable_tier: &str) -> anyhow::Result<Vec<(i64, String, EstimateDay)>> {
        let rows = sqlx::query_as::<_, EstimateRow>(
            "SELECT (day - DATE '1970-01-01')::bigint * 86400000, tier, scored::bigint, \
               weight_sum, n_eff, suspected_misroute_rate \
             FROM rescore_estimates_daily WHERE tier <> $1 AND suspected_misroute_rate IS NOT NULL ORDER BY 1, 2",
        )
        .bind(capable_tier)
        .fetch_all(self.store.pool())
        .await
        .context("reading rescore_estimates_daily")?;
        Ok(rows.into_iter().map(EstimateDay::from_row).collect())
    }

    async fn upsert_episode(
        &self,
        kind: &str,
        subject: &str,
        e: &Episode,
        transition: &str,
        webhooks: &[String],
        notification: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.store.pool().begin().await?;
        let previous: Option<String> = sqlx::query_scalar("SELECT notified FROM tw_alerts WHERE id = $1 FOR UPDATE")
            .bind(&e.id)
            .fetch_optional(&mut *tx)
            .await
            .context("reading tw_alerts")?;
        sqlx::query(
            "INSERT INTO tw_alerts AS a (id, kind, subject, severity, state, value, threshold, window_start, window_end, \
               fired_at, escalated_at, resolved_at, last_value, notified, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000), \
               to_timestamp($9::double precision / 1000), to_timestamp($10::double precision / 1000), \
               to_timestamp($11::double precision / 1000), to_timestamp($12::double precision / 1000), $13, $14, now()) \
             ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
               value = excluded.value, threshold = excluded.threshold, window_start = excluded.window_start, \
               window_end = excluded.window_end, escalated_at = excluded.escalated_at, \
               resolved_at = excluded.resolved_at, last_value = excluded.last_value, notified = excluded.notified, \
               updated_at = now()",
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
        .bind(transition)
        .execute(&mut *tx)
        .await
        .context("writing tw_alerts")?;
        let new = previous.as_deref() != Some(transition);
        if new && !webhooks.is_empty() {
            sqlx::query(
                "INSERT INTO tw_alert_outbox (webhook, episode_id, transition, notification) \
                 SELECT w, $2, $3, $4 FROM unnest($1::text[]) AS w",
            )
            .bind(webhooks)
            .bind(&e.id)
            .bind(transition)
            .bind(notification)
            .execute(&mut *tx)
            .await
            .context("writing tw_alert_outbox")?;
        }
        tx.commit().await.context("committing an alert transition")?;
        Ok(new)
    }

    async fn retain_episodes(&self, kind: &str, subject: &str, ids: &[String], since_ms: i64) -> anyhow::Result<()> {
        sqlx::query(
            "DELETE FROM tw_alerts WHERE kind = $1 AND subject = $2 AND NOT (id = ANY($3)) \
             AND window_start >= to_timestamp($4::float8 / 1000.0)",
        )
        .bind(kind)
        .bind(subject)
        .bind(ids)
        .bind(since_ms.max(-62_135_596_800_000) as f64)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }
}

impl OutboxStore for PgEvalStore {
    async fn outbox_lease(&self, webhook: &str) -> anyhow::Result<bool> {
        let mut leases = self.leases.lock().await;
        if let Some(conn) = leases.get_mut(webhook) {
            // Still ours while its session lives.
            if sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok() {
                return Ok(true);
            }
            leases.remove(webhook);
        }
        let key = (LEASE_KEY_PREFIX << 32) | i64::from(xxhash_rust::xxh3::xxh3_64(webhook.as_bytes()) as u32);
        let mut conn = self.store.pool().acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        if got {
            leases.insert(webhook.to_owned(), conn);
        }
        Ok(got)
    }

    async fn outbox_pending(&self, webhook: &str, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, notification, attempts FROM tw_alert_outbox WHERE webhook = $1 AND NOT delivered \
             ORDER BY id LIMIT $2",
        )
        .bind(webhook)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await
        .context("reading tw_alert_outbox")?;
        rows.into_iter()
            .map(|r| Ok(OutboxRow { id: r.try_get(0)?, notification: r.try_get(1)?, attempts: r.try_get(2)? }))
            .collect()
    }

    async fn outbox_done(&self, id: i64, rejected: bool, error: Option<&str>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE tw_alert_outbox SET delivered = true, rejected = $2, last_error = COALESCE($3, last_error), \
             delivered_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(rejected)
        .bind(error)
        .execute(self.store.pool())
        .await
        .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_attempt_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE tw_alert_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(self.store.pool())
            .await
            .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_prune(&self) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM tw_alert_outbox WHERE delivered AND delivered_at < now() - make_interval(days => $1)")
            .bind(KEEP_DELIVERED_DAYS as i32)
            .execute(self.store.pool())
            .await
            .context("pruning tw_alert_outbox")?;
        Ok(())
    }

    async fn firing_episodes(&self) -> anyhow::Result<Vec<Episode>> {
        let rows: Vec<FiringRow> = sqlx::query_as(&format!(
            "SELECT id, kind, subject, severity, value, threshold, {}, {}, {}, {}, last_value \
             FROM tw_alerts WHERE state = 'firing' ORDER BY fired_at, id",
            ms("window_start"),
            ms("window_end"),
            ms("fired_at"),
            ms("escalated_at"),
        ))
        .fetch_all(self.store.pool())
        .await
        .context("reading firing alerts")?;
        Ok(rows.into_iter().filter_map(firing_episode).collect())
    }
}

// Router evaluation (see [`crate::router_eval::pass`]).

const DAY_MS_OF: &str = "((day - DATE '1970-01-01')::bigint * 86400000)";
const DATE_OF: &str = "(to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date";

impl RouterEvalStore for PgEvalStore {
    async fn calib_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<CalibRow>> {
        let rows = sqlx::query(&format!(
            r#"SELECT {DAY_MS_OF}, classifier_version, router, tier, cell, grp, decisions, failures,
                      failed_deflections, conf_e4, cost_nusd, capable_cost_nusd
               FROM tw_agg_calibration
               WHERE day >= {DATE_OF} AND day < (to_timestamp($2::double precision / 1000) AT TIME ZONE 'UTC')::date"#
        ))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pg().pool())
        .await
        .context("reading tw_agg_calibration")?;
        rows.iter().map(calib_row).collect()
    }

    async fn calib_first_days(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT classifier_version, router, MIN({DAY_MS_OF}) FROM tw_agg_calibration GROUP BY 1, 2"
        ))
        .fetch_all(self.pg().pool())
        .await
        .context("reading the first calibration days")?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    async fn ticket_cost_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<(i64, i64, i64)>> {
        let rows = sqlx::query(
            r#"SELECT (EXTRACT(EPOCH FROM bucket) * 1000)::bigint, SUM(attributed_tickets)::bigint,
                      SUM(attributed_human_cost_nusd)::bigint
               FROM tw_agg_quality
               WHERE grain = 'd' AND bucket >= to_timestamp($1::double precision / 1000)
                 AND bucket < to_timestamp($2::double precision / 1000)
               GROUP BY 1"#,
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pg().pool())
        .await
        .context("reading attributed ticket costs")?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    async fn rescore_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<RescoreCellRow>> {
        let rows = sqlx::query(
            r#"SELECT ((ts AT TIME ZONE 'UTC')::date - DATE '1970-01-01')::bigint * 86400000,
                      classifier_version, router, tier,
                      LEAST(99, FLOOR(router_confidence * 100))::int,
                      SUM(w)::double precision, SUM(CASE WHEN p_complex >= rescore_threshold THEN w ELSE 0 END)::double precision
               FROM tw_rescore_samples
               WHERE status = 'scored' AND router_confidence IS NOT NULL
                 AND router_confidence >= 0 AND router_confidence <= 1
                 AND ts >= to_timestamp($1::double precision / 1000) AND ts < to_timestamp($2::double precision / 1000)
               GROUP BY 1, 2, 3, 4, 5"#,
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pg().pool())
        .await
        .context("reading rescoring evidence")?;
        rows.iter()
            .map(|r| {
                Ok(RescoreCellRow {
                    day_ms: r.try_get(0)?,
                    classifier_version: r.try_get(1)?,
                    router: r.try_get(2)?,
                    tier: r.try_get(3)?,
                    cell: u8::try_from(r.try_get::<i32, _>(4)?.clamp(0, 99)).unwrap_or(99),
                    evidence: RescoreCell { w: r.try_get(5)?, wy: r.try_get(6)? },
                })
            })
            .collect()
    }

    async fn write_router_eval(&self, from_ms: i64, rows: &[DayResult]) -> anyhow::Result<()> {
        let mut tx = self.pg().pool().begin().await?;
        for table in ["tw_calibration_daily", "tw_calibration_summary_daily", "tw_threshold_advice"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE day >= {DATE_OF}"))
                .bind(from_ms)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("clearing {table}"))?;
        }
        let insert_bin = format!(
            r#"INSERT INTO tw_calibration_daily (day, classifier_version, router, "window", bin, conf_lo, conf_hi,
                 conf_mean, n, failures, failure_rate, failure_rate_lo, failure_rate_hi, baseline_n,
                 baseline_failures, baseline_failure_rate, p_value, status)
               VALUES ({DATE_OF}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"#
        );
        let insert_summary = format!(
            r#"INSERT INTO tw_calibration_summary_daily (day, classifier_version, router, "window", n, failures,
                 bins, ece, ece_lo, ece_hi, overconfidence, overconfidence_lo, overconfidence_hi, ece_plugin)
               VALUES ({DATE_OF}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"#
        );
        let insert_advice = format!(
            r#"INSERT INTO tw_threshold_advice (day, classifier_version, router, "window", threshold, is_current,
                 is_recommended, decisions, cheap_share, inference_cost_usd, expected_failed_deflections,
                 expected_failed_deflections_lo, expected_failed_deflections_hi, cheap_failure_rate,
                 human_cost_per_failure_usd, expected_human_cost_usd, net_cost_usd, net_cost_lo_usd,
                 net_cost_hi_usd, extrapolated, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd)
               VALUES ({DATE_OF}, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23)"#
        );
        insert_router_eval_rows!(tx, rows, &insert_bin, &insert_summary, &insert_advice);
        tx.commit().await?;
        Ok(())
    }
}

fn calib_row(r: &sqlx::postgres::PgRow) -> anyhow::Result<CalibRow> {
    let small = |i: usize| -> anyhow::Result<u8> {
        let v: i16 = r.try_get(i)?;
        u8::try_from(v).map_err(|_| anyhow::anyhow!("tw_agg_calibration: column {i} out of range: {v}"))
    };
    Ok(CalibRow {
        day_ms: r.try_get(0)?,
        classifier_version: r.try_get(1)?,
        router: r.try_get(2)?,
        tier: r.try_get(3)?,
        cell: small(4)?,
        group: small(5)?,
        counts: CalibCounts {
            decisions: r.try_get(6)?,
            failures: r.try_get(7)?,
            failed_deflections: r.try_get(8)?,
            conf_e4: r.try_get(9)?,
            cost_nusd: r.try_get(10)?,
            capable_cost_nusd: r.try_get(11)?,
        },
    })
}
