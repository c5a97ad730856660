//! The drift/alert evaluator's storage on Postgres (drift, alerts and their outbox, router
//! evaluation): the SQL texts of the shared code (`store/eval.rs`) and what Postgres does its own
//! way. One instance evaluates at a time: a session advisory lock held on a dedicated connection
//! for the duration of a pass.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};
use tokio::sync::Mutex;

use super::PgStore;
use crate::alert::outbox::KEEP_DELIVERED_DAYS;
use crate::drift::evaluator::StoredReference;
use crate::store::eval::EvalDialect;
use crate::store::sql::{Arg, Tx};

/// Arbitrary but fixed: the advisory lock key of the evaluator ("twdr").
const LOCK_KEY: i64 = 0x7477_6472;

/// The high 32 bits of the advisory lock key of a webhook's outbox lease ("twob"); the low 32 bits
/// are a hash of the webhook key.
const LEASE_KEY_PREFIX: i64 = 0x7477_6f62;

/// Postgres [`crate::drift::evaluator::EvalStore`]: the pool plus the connection that holds the
/// advisory lock, and the connections holding the outbox leases (session advisory locks, one per
/// webhook).
pub struct PgEvalStore {
    store: std::sync::Arc<PgStore>,
    lock: Mutex<Option<PoolConnection<Postgres>>>,
    leases: Mutex<HashMap<String, PoolConnection<Postgres>>>,
}

impl PgEvalStore {
    pub fn new(store: std::sync::Arc<PgStore>) -> Self {
        Self { store, lock: Mutex::new(None), leases: Mutex::new(HashMap::new()) }
    }
}

// Times are timestamptz (or date) columns: `(EXTRACT(EPOCH FROM col) * 1000)::bigint` reads one as
// epoch ms, `to_timestamp($n::double precision / 1000)` writes one, and
// `(to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date` is the UTC day of ms.
impl EvalDialect for PgEvalStore {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    const CONF_DAYS: &'static str =
        "SELECT (EXTRACT(EPOCH FROM hour) * 1000)::bigint, signal, classifier_version, router, \
        conversations, routed_cheap, threshold_sum, threshold_n, hist \
        FROM tw_conf_hist WHERE hour >= to_timestamp($1::double precision / 1000) \
        AND hour < to_timestamp($2::double precision / 1000)";

    const UPSERT_DRIFT: &'static str =
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
        cheap_share_observed_hi = excluded.cheap_share_observed_hi";

    const DAILY_TIER_COUNTS: &'static str = "SELECT (EXTRACT(EPOCH FROM q.bucket) * 1000)::bigint AS b, q.tier, \
        SUM(q.thumbs_down)::bigint, SUM(q.decisions)::bigint, \
        SUM(q.failed_deflections)::bigint, SUM(q.reviews_wrong)::bigint, SUM(q.reviews_n)::bigint, \
        COALESCE(MAX(t.ai_conversations), 0)::bigint \
        FROM tw_agg_quality q LEFT JOIN tw_agg_tier_day t \
        ON t.day = (q.bucket AT TIME ZONE 'UTC')::date AND t.tier = q.tier \
        WHERE q.grain = 'd' GROUP BY 1, 2";

    const RESCORE_ESTIMATES: &'static str =
        "SELECT (day - DATE '1970-01-01')::bigint * 86400000, tier, scored::bigint, \
        weight_sum, n_eff, suspected_misroute_rate \
        FROM rescore_estimates_daily WHERE tier <> $1 AND suspected_misroute_rate IS NOT NULL ORDER BY 1, 2";

    const NOTIFIED: &'static str = "SELECT notified FROM tw_alerts WHERE id = $1 FOR UPDATE";

    const UPSERT_EPISODE: &'static str =
        "INSERT INTO tw_alerts AS a (id, kind, subject, severity, state, value, threshold, window_start, window_end, \
        fired_at, escalated_at, resolved_at, last_value, notified, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000), \
        to_timestamp($9::double precision / 1000), to_timestamp($10::double precision / 1000), \
        to_timestamp($11::double precision / 1000), to_timestamp($12::double precision / 1000), $13, $14, now()) \
        ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
        value = excluded.value, threshold = excluded.threshold, window_start = excluded.window_start, \
        window_end = excluded.window_end, escalated_at = excluded.escalated_at, \
        resolved_at = excluded.resolved_at, last_value = excluded.last_value, notified = excluded.notified, \
        updated_at = now()";

    const OUTBOX_PENDING: &'static str =
        "SELECT id, notification, attempts FROM tw_alert_outbox WHERE webhook = $1 AND NOT delivered \
        ORDER BY id LIMIT $2";

    const OUTBOX_DONE: &'static str =
        "UPDATE tw_alert_outbox SET delivered = true, rejected = $2, last_error = COALESCE($3, last_error), \
        delivered_at = now() WHERE id = $1";

    const OUTBOX_ATTEMPT_FAILED: &'static str =
        "UPDATE tw_alert_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1";

    const OUTBOX_PRUNE: &'static str =
        "DELETE FROM tw_alert_outbox WHERE delivered AND delivered_at < now() - make_interval(days => $1)";

    const KEEP_DELIVERED: Arg<'static> = Arg::I32(KEEP_DELIVERED_DAYS as i32);

    const FIRING_EPISODES: &'static str = "SELECT id, kind, subject, severity, value, threshold, \
        (EXTRACT(EPOCH FROM window_start) * 1000)::bigint, (EXTRACT(EPOCH FROM window_end) * 1000)::bigint, \
        (EXTRACT(EPOCH FROM fired_at) * 1000)::bigint, (EXTRACT(EPOCH FROM escalated_at) * 1000)::bigint, last_value \
        FROM tw_alerts WHERE state = 'firing' ORDER BY fired_at, id";

    const CALIB_CELLS: &'static str = r#"SELECT ((day - DATE '1970-01-01')::bigint * 86400000), classifier_version, router, tier, cell, grp, decisions, failures,
                      failed_deflections, conf_e4, cost_nusd, capable_cost_nusd
               FROM tw_agg_calibration
               WHERE day >= (to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date AND day < (to_timestamp($2::double precision / 1000) AT TIME ZONE 'UTC')::date"#;

    const CALIB_FIRST_DAYS: &'static str =
        "SELECT classifier_version, router, MIN(((day - DATE '1970-01-01')::bigint * 86400000)) \
        FROM tw_agg_calibration GROUP BY 1, 2";

    const TICKET_COST_DAYS: &'static str = r#"SELECT (EXTRACT(EPOCH FROM bucket) * 1000)::bigint, SUM(attributed_tickets)::bigint,
                      SUM(attributed_human_cost_nusd)::bigint
               FROM tw_agg_quality
               WHERE grain = 'd' AND bucket >= to_timestamp($1::double precision / 1000)
                 AND bucket < to_timestamp($2::double precision / 1000)
               GROUP BY 1"#;

    const RESCORE_CELLS: &'static str = r#"SELECT ((ts AT TIME ZONE 'UTC')::date - DATE '1970-01-01')::bigint * 86400000,
                      classifier_version, router, tier,
                      LEAST(99, FLOOR(router_confidence * 100))::int,
                      SUM(w)::double precision, SUM(CASE WHEN p_complex >= rescore_threshold THEN w ELSE 0 END)::double precision
               FROM tw_rescore_samples
               WHERE status = 'scored' AND router_confidence IS NOT NULL
                 AND router_confidence >= 0 AND router_confidence <= 1
                 AND ts >= to_timestamp($1::double precision / 1000) AND ts < to_timestamp($2::double precision / 1000)
               GROUP BY 1, 2, 3, 4, 5"#;

    const DAY_FROM: &'static str = "day >= (to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date";

    const INSERT_CALIBRATION_BIN: &'static str = r#"INSERT INTO tw_calibration_daily (day, classifier_version, router, "window", bin, conf_lo, conf_hi,
                 conf_mean, n, failures, failure_rate, failure_rate_lo, failure_rate_hi, baseline_n,
                 baseline_failures, baseline_failure_rate, p_value, status)
               VALUES ((to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"#;

    const INSERT_CALIBRATION_SUMMARY: &'static str = r#"INSERT INTO tw_calibration_summary_daily (day, classifier_version, router, "window", n, failures,
                 bins, ece, ece_lo, ece_hi, overconfidence, overconfidence_lo, overconfidence_hi, ece_plugin)
               VALUES ((to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"#;

    const INSERT_THRESHOLD_ADVICE: &'static str = r#"INSERT INTO tw_threshold_advice (day, classifier_version, router, "window", threshold, is_current,
                 is_recommended, decisions, cheap_share, inference_cost_usd, expected_failed_deflections,
                 expected_failed_deflections_lo, expected_failed_deflections_hi, cheap_failure_rate,
                 human_cost_per_failure_usd, expected_human_cost_usd, net_cost_usd, net_cost_lo_usd,
                 net_cost_hi_usd, extrapolated, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd)
               VALUES ((to_timestamp($1::double precision / 1000) AT TIME ZONE 'UTC')::date, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23)"#;

    async fn try_lock_evaluator(&self) -> anyhow::Result<bool> {
        let mut conn = self.store.pool().acquire().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *conn).await?;
        if got {
            *self.lock.lock().await = Some(conn);
        }
        Ok(got)
    }

    async fn unlock_evaluator(&self) -> anyhow::Result<()> {
        if let Some(mut conn) = self.lock.lock().await.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn try_lease_outbox(&self, webhook: &str) -> anyhow::Result<bool> {
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

    /// An `int[]` column.
    fn psi_edges(row: &PgRow, i: usize) -> anyhow::Result<Vec<u16>> {
        let edges: Vec<i32> = row.try_get(i)?;
        Ok(edges.into_iter().map(|e| e.clamp(0, 10_000) as u16).collect())
    }

    async fn store_reference(&self, r: &StoredReference) -> anyhow::Result<()> {
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

    /// One statement: the webhooks as an array.
    async fn queue_notifications(
        tx: &mut Tx<Postgres>,
        webhooks: &[String],
        episode_id: &str,
        transition: &str,
        notification: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tw_alert_outbox (webhook, episode_id, transition, notification) \
             SELECT w, $2, $3, $4 FROM unnest($1::text[]) AS w",
        )
        .bind(webhooks)
        .bind(episode_id)
        .bind(transition)
        .bind(notification)
        .execute(&mut **tx)
        .await
        .context("writing tw_alert_outbox")?;
        Ok(())
    }

    async fn delete_other_episodes(
        &self,
        kind: &str,
        subject: &str,
        ids: &[String],
        since_ms: i64,
    ) -> anyhow::Result<()> {
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

    /// Postgres runs concurrent writers itself.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }
}
