//! The drift/alert evaluator's storage on the embedded SQLite store (drift, alerts and their
//! outbox, router evaluation): the SQL texts of the shared code (`store/eval.rs`) and what SQLite
//! does its own way. One process owns an SQLite file, so the "one evaluating instance" lock is a
//! local flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

use super::SqliteStore;
use crate::alert::outbox::KEEP_DELIVERED_DAYS;
use crate::drift::evaluator::StoredReference;
use crate::store::eval::EvalDialect;
use crate::store::sql::{Arg, Tx};

pub struct SqliteEvalStore {
    store: Arc<SqliteStore>,
    busy: AtomicBool,
}

impl SqliteEvalStore {
    pub fn new(store: Arc<SqliteStore>) -> Self {
        Self { store, busy: AtomicBool::new(false) }
    }
}

/// The wall clock as epoch ms, in SQL.
macro_rules! now_ms {
    () => {
        "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    };
}

// Times are epoch-ms integers (`*_ms` columns). Parameters are positional (`?`), or numbered
// (`?1`) where the shared code's order differs from the text's.
impl EvalDialect for SqliteEvalStore {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    const CONF_DAYS: &'static str =
        "SELECT hour_ms, signal, classifier_version, router, conversations, routed_cheap, threshold_sum, \
        threshold_n, hist FROM tw_conf_hist WHERE hour_ms >= ? AND hour_ms < ?";

    const UPSERT_DRIFT: &'static str = concat!(
        "INSERT INTO tw_drift_daily (day_ms, classifier_version, router, signal, \"window\", n, n_eff, ref_n, \
         ks_d, ks_p, psi, psi_noise, cheap_share_expected, cheap_share_observed, status, evaluated_at_ms, \
         cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ",
        now_ms!(),
        ", ?, ?, ?) \
         ON CONFLICT (day_ms, classifier_version, router, signal, \"window\") DO UPDATE SET \
         n = excluded.n, n_eff = excluded.n_eff, ref_n = excluded.ref_n, ks_d = excluded.ks_d, \
         ks_p = excluded.ks_p, psi = excluded.psi, psi_noise = excluded.psi_noise, \
         cheap_share_expected = excluded.cheap_share_expected, \
         cheap_share_observed = excluded.cheap_share_observed, status = excluded.status, \
         evaluated_at_ms = excluded.evaluated_at_ms, cheap_share_target = excluded.cheap_share_target, \
         cheap_share_observed_lo = excluded.cheap_share_observed_lo, \
         cheap_share_observed_hi = excluded.cheap_share_observed_hi"
    );

    const DAILY_TIER_COUNTS: &'static str =
        "SELECT q.bucket_ms, q.tier, SUM(q.thumbs_down), SUM(q.decisions), SUM(q.failed_deflections), \
        SUM(q.reviews_wrong), SUM(q.reviews_n), COALESCE(MAX(t.ai_conversations), 0) \
        FROM tw_agg_quality q LEFT JOIN tw_agg_tier_day t ON t.day_ms = q.bucket_ms AND t.tier = q.tier \
        WHERE q.grain = 'd' GROUP BY 1, 2";

    const RESCORE_ESTIMATES: &'static str =
        "SELECT CAST(round((julianday(day) - 2440587.5) * 86400000.0) AS INTEGER), tier, scored, \
        weight_sum, n_eff, suspected_misroute_rate \
        FROM rescore_estimates_daily WHERE tier <> ? AND suspected_misroute_rate IS NOT NULL ORDER BY 1, 2";

    const NOTIFIED: &'static str = "SELECT notified FROM tw_alerts WHERE id = ?";

    const UPSERT_EPISODE: &'static str = concat!(
        "INSERT INTO tw_alerts (id, kind, subject, severity, state, value, threshold, window_start_ms, \
         window_end_ms, fired_at_ms, escalated_at_ms, resolved_at_ms, last_value, notified, updated_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ",
        now_ms!(),
        ") \
         ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
         value = excluded.value, threshold = excluded.threshold, window_start_ms = excluded.window_start_ms, \
         window_end_ms = excluded.window_end_ms, escalated_at_ms = excluded.escalated_at_ms, \
         resolved_at_ms = excluded.resolved_at_ms, last_value = excluded.last_value, \
         notified = excluded.notified, updated_at_ms = excluded.updated_at_ms"
    );

    const OUTBOX_PENDING: &'static str =
        "SELECT id, notification, attempts FROM tw_alert_outbox WHERE webhook = ? AND delivered = 0 \
        ORDER BY id LIMIT ?";

    const OUTBOX_DONE: &'static str = concat!(
        "UPDATE tw_alert_outbox SET delivered = 1, rejected = ?2, last_error = COALESCE(?3, last_error), \
         delivered_at_ms = ",
        now_ms!(),
        " WHERE id = ?1"
    );

    const OUTBOX_ATTEMPT_FAILED: &'static str =
        "UPDATE tw_alert_outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1";

    const OUTBOX_PRUNE: &'static str =
        concat!("DELETE FROM tw_alert_outbox WHERE delivered = 1 AND delivered_at_ms < ", now_ms!(), " - ?");

    const KEEP_DELIVERED: Arg<'static> = Arg::I64(KEEP_DELIVERED_DAYS * 86_400_000);

    const FIRING_EPISODES: &'static str =
        "SELECT id, kind, subject, severity, value, threshold, window_start_ms, window_end_ms, fired_at_ms, \
        escalated_at_ms, last_value FROM tw_alerts WHERE state = 'firing' ORDER BY fired_at_ms, id";

    const CALIB_CELLS: &'static str = r#"SELECT day_ms, classifier_version, router, tier, cell, grp, decisions, failures,
                      failed_deflections, conf_e4, cost_nusd, capable_cost_nusd
               FROM tw_agg_calibration WHERE day_ms >= ? AND day_ms < ?"#;

    const CALIB_FIRST_DAYS: &'static str =
        "SELECT classifier_version, router, MIN(day_ms) FROM tw_agg_calibration GROUP BY 1, 2";

    const TICKET_COST_DAYS: &'static str = r#"SELECT bucket_ms, SUM(attributed_tickets), SUM(attributed_human_cost_nusd)
               FROM tw_agg_quality WHERE grain = 'd' AND bucket_ms >= ? AND bucket_ms < ? GROUP BY 1"#;

    const RESCORE_CELLS: &'static str = r#"SELECT (ts_ms / 86400000) * 86400000, classifier_version, router, tier,
                      MIN(99, CAST(router_confidence * 100 AS INTEGER)),
                      CAST(SUM(w) AS REAL), CAST(SUM(CASE WHEN p_complex >= rescore_threshold THEN w ELSE 0.0 END) AS REAL)
               FROM tw_rescore_samples
               WHERE status = 'scored' AND router_confidence IS NOT NULL
                 AND router_confidence >= 0 AND router_confidence <= 1 AND ts_ms >= ? AND ts_ms < ?
               GROUP BY 1, 2, 3, 4, 5"#;

    const DAY_FROM: &'static str = "day_ms >= ?";

    const INSERT_CALIBRATION_BIN: &'static str = r#"INSERT INTO tw_calibration_daily (day_ms, classifier_version, router, "window", bin, conf_lo, conf_hi,
                 conf_mean, n, failures, failure_rate, failure_rate_lo, failure_rate_hi, baseline_n,
                 baseline_failures, baseline_failure_rate, p_value, status)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#;

    const INSERT_CALIBRATION_SUMMARY: &'static str = r#"INSERT INTO tw_calibration_summary_daily (day_ms, classifier_version, router, "window", n, failures,
                 bins, ece, ece_lo, ece_hi, overconfidence, overconfidence_lo, overconfidence_hi, ece_plugin)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#;

    const INSERT_THRESHOLD_ADVICE: &'static str = r#"INSERT INTO tw_threshold_advice (day_ms, classifier_version, router, "window", threshold, is_current,
                 is_recommended, decisions, cheap_share, inference_cost_usd, expected_failed_deflections,
                 expected_failed_deflections_lo, expected_failed_deflections_hi, cheap_failure_rate,
                 human_cost_per_failure_usd, expected_human_cost_usd, net_cost_usd, net_cost_lo_usd,
                 net_cost_hi_usd, extrapolated, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?, ?, ?, ?)"#;

    async fn try_lock_evaluator(&self) -> anyhow::Result<bool> {
        Ok(!self.busy.swap(true, Ordering::AcqRel))
    }

    async fn unlock_evaluator(&self) -> anyhow::Result<()> {
        self.busy.store(false, Ordering::Release);
        Ok(())
    }

    /// One process owns an SQLite file: always this one.
    async fn try_lease_outbox(&self, _webhook: &str) -> anyhow::Result<bool> {
        Ok(true)
    }

    /// JSON text (SQLite has no arrays).
    fn psi_edges(row: &SqliteRow, i: usize) -> anyhow::Result<Vec<u16>> {
        serde_json::from_str(&row.try_get::<String, _>(i)?).context("reference PSI edges")
    }

    async fn store_reference(&self, r: &StoredReference) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tw_references (classifier_version, signal, source, n, n_eff, hist, psi_edges) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&r.classifier_version)
        .bind(r.signal.as_str())
        .bind(&r.source)
        .bind(r.hist.total() as i64)
        .bind(r.n_eff as i64)
        .bind(r.hist.to_bytes())
        .bind(serde_json::to_string(&r.psi_edges)?)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// One row per webhook.
    async fn queue_notifications(
        tx: &mut Tx<Sqlite>,
        webhooks: &[String],
        episode_id: &str,
        transition: &str,
        notification: &str,
    ) -> anyhow::Result<()> {
        for w in webhooks {
            sqlx::query(
                "INSERT INTO tw_alert_outbox (webhook, episode_id, transition, notification) VALUES (?, ?, ?, ?)",
            )
            .bind(w)
            .bind(episode_id)
            .bind(transition)
            .bind(notification)
            .execute(&mut **tx)
            .await
            .context("writing tw_alert_outbox")?;
        }
        Ok(())
    }

    async fn delete_other_episodes(
        &self,
        kind: &str,
        subject: &str,
        ids: &[String],
        since_ms: i64,
    ) -> anyhow::Result<()> {
        // SQLite has no arrays: pass the ids as a JSON array.
        sqlx::query(
            "DELETE FROM tw_alerts WHERE kind = ? AND subject = ? AND id NOT IN (SELECT value FROM json_each(?)) \
             AND window_start_ms >= ?",
        )
        .bind(kind)
        .bind(subject)
        .bind(serde_json::to_string(ids)?)
        .bind(since_ms)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// This process's SQLite writers take turns (see [`SqliteStore::write_lock`]).
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.store.write_lock().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertState, Episode, OutboxStore, Severity};
    use crate::drift::evaluator::EvalStore;
    use crate::store::Store;

    fn episode(state: AlertState) -> Episode {
        Episode {
            id: crate::alert::episode_id("confidence_drift", "cv=a", 86_400_000),
            kind: "confidence_drift".into(),
            subject: "cv=a".into(),
            severity: Severity::Critical,
            state,
            fired_window_end_ms: 86_400_000,
            escalated_window_end_ms: Some(86_400_000),
            resolved_window_end_ms: (state == AlertState::Resolved).then_some(3 * 86_400_000),
            window_start_ms: 0,
            window_end_ms: 86_400_000,
            value: 0.25,
            threshold: 0.1,
            last_value: 0.25,
        }
    }

    /// The SQLite outbox: one row per webhook per new transition, written with the transition;
    /// delivered in order; firing episodes read back as they were stored.
    #[tokio::test]
    async fn transitions_fill_the_outbox_once_and_firing_episodes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("o.db").to_str().unwrap()).await.unwrap());
        store.migrate().await.unwrap();
        let s = SqliteEvalStore::new(store);
        let hooks = ["h1".to_string(), "h2".to_string()];
        let firing = episode(AlertState::Firing);
        assert!(s
            .upsert_episode("confidence_drift", "cv=a", &firing, "firing:critical", &hooks, "{\"n\":1}")
            .await
            .unwrap());
        // The same transition again (the next evaluation pass): nothing new.
        assert!(!s
            .upsert_episode("confidence_drift", "cv=a", &firing, "firing:critical", &hooks, "{\"n\":1}")
            .await
            .unwrap());
        assert_eq!(s.firing_episodes().await.unwrap(), vec![firing.clone()]);
        let resolved = episode(AlertState::Resolved);
        assert!(s
            .upsert_episode("confidence_drift", "cv=a", &resolved, "resolved:critical", &hooks, "{\"n\":2}")
            .await
            .unwrap());
        assert!(s.firing_episodes().await.unwrap().is_empty());

        let h1 = s.outbox_pending("h1", 10).await.unwrap();
        assert_eq!(h1.iter().map(|r| r.notification.as_str()).collect::<Vec<_>>(), ["{\"n\":1}", "{\"n\":2}"]);
        assert_eq!(s.outbox_pending("h2", 10).await.unwrap().len(), 2);
        assert_eq!(s.outbox_pending("h1", 1).await.unwrap(), h1[..1]);
        s.outbox_attempt_failed(h1[0].id, "connection refused").await.unwrap();
        assert_eq!(s.outbox_pending("h1", 1).await.unwrap()[0].attempts, 1);
        s.outbox_done(h1[0].id, false, None).await.unwrap();
        s.outbox_done(h1[1].id, true, Some("HTTP 400")).await.unwrap();
        assert!(s.outbox_pending("h1", 10).await.unwrap().is_empty());
        assert_eq!(s.outbox_pending("h2", 10).await.unwrap().len(), 2, "each webhook has its own rows");
        s.outbox_prune().await.unwrap();
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tw_alert_outbox WHERE delivered = 1")
            .fetch_one(s.store.pool())
            .await
            .unwrap();
        assert_eq!(kept, 2, "delivered rows are kept for a while");
    }
}
