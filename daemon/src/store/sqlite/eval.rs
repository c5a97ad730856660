//! The drift/alert evaluator's storage on the embedded SQLite store (drift, alerts and their
//! outbox, router evaluation). One process owns an SQLite file, so the "one evaluating instance"
//! lock is a local flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use sqlx::Row;

use super::SqliteStore;
use crate::alert::misroute::{EstimateDay, EstimateRow};
use crate::alert::outbox::{firing_episode, FiringRow, KEEP_DELIVERED_DAYS};
use crate::alert::quality::DayCounts;
use crate::alert::{Episode, OutboxRow, OutboxStore};
use crate::drift::evaluator::{DayWindows, DriftRecord, EvalStore, StoredReference};
use crate::metrics::{CalibCounts, CalibRow, Signal};
use crate::router_eval::advice::RescoreCell;
use crate::router_eval::pass::{DayResult, RescoreCellRow, RouterEvalStore};
use crate::stats::hist::ConfHist;

pub struct SqliteEvalStore {
    store: Arc<SqliteStore>,
    busy: AtomicBool,
}

impl SqliteEvalStore {
    pub fn new(store: Arc<SqliteStore>) -> Self {
        Self { store, busy: AtomicBool::new(false) }
    }

    pub(crate) fn sqlite(&self) -> &SqliteStore {
        &self.store
    }
}

const NOW_MS: &str = "CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

impl EvalStore for SqliteEvalStore {
    async fn try_lock(&self) -> anyhow::Result<bool> {
        Ok(!self.busy.swap(true, Ordering::AcqRel))
    }

    async fn unlock(&self) -> anyhow::Result<()> {
        self.busy.store(false, Ordering::Release);
        Ok(())
    }

    async fn global_watermark(&self) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0")
            .fetch_one(self.store.pool())
            .await?)
    }

    async fn conf_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<DayWindows> {
        let rows = sqlx::query(
            "SELECT hour_ms, signal, classifier_version, router, conversations, routed_cheap, threshold_sum, \
             threshold_n, hist FROM tw_conf_hist WHERE hour_ms >= ? AND hour_ms < ?",
        )
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
            let edges: Vec<u16> = serde_json::from_str(&r.try_get::<String, _>(5)?).context("reference PSI edges")?;
            out.push(StoredReference {
                classifier_version: r.try_get(0)?,
                signal,
                source: r.try_get(2)?,
                n_eff: r.try_get::<i64, _>(3)?.max(1) as u64,
                hist: ConfHist::from_bytes(&r.try_get::<Vec<u8>, _>(4)?).context("reference histogram")?,
                psi_edges: edges,
            });
        }
        Ok(out)
    }

    async fn insert_reference(&self, r: &StoredReference) -> anyhow::Result<()> {
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

    async fn write_drift(&self, rows: &[DriftRecord<'_>]) -> anyhow::Result<()> {
        let mut tx = self.store.pool().begin().await?;
        for rec in rows {
            let (cv, router, signal) = rec.subject;
            let r = rec.row;
            sqlx::query(&format!(
                "INSERT INTO tw_drift_daily (day_ms, classifier_version, router, signal, \"window\", n, n_eff, ref_n, \
                   ks_d, ks_p, psi, psi_noise, cheap_share_expected, cheap_share_observed, status, evaluated_at_ms, \
                   cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW_MS}, ?, ?, ?) \
                 ON CONFLICT (day_ms, classifier_version, router, signal, \"window\") DO UPDATE SET \
                   n = excluded.n, n_eff = excluded.n_eff, ref_n = excluded.ref_n, ks_d = excluded.ks_d, \
                   ks_p = excluded.ks_p, psi = excluded.psi, psi_noise = excluded.psi_noise, \
                   cheap_share_expected = excluded.cheap_share_expected, \
                   cheap_share_observed = excluded.cheap_share_observed, status = excluded.status, \
                   evaluated_at_ms = excluded.evaluated_at_ms, cheap_share_target = excluded.cheap_share_target, \
                   cheap_share_observed_lo = excluded.cheap_share_observed_lo, \
                   cheap_share_observed_hi = excluded.cheap_share_observed_hi"
            ))
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
        let rows = sqlx::query(
            "SELECT q.bucket_ms, q.tier, SUM(q.thumbs_down), SUM(q.decisions), SUM(q.failed_deflections), \
               SUM(q.reviews_wrong), SUM(q.reviews_n), COALESCE(MAX(t.ai_conversations), 0) \
             FROM tw_agg_quality q LEFT JOIN tw_agg_tier_day t ON t.day_ms = q.bucket_ms AND t.tier = q.tier \
             WHERE q.grain = 'd' GROUP BY 1, 2",
        )
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
            "SELECT CAST(round((julianday(day) - 2440587.5) * 86400000.0) AS INTEGER), tier, scored, \
               weight_sum, n_eff, suspected_misroute_rate \
             FROM rescore_estimates_daily WHERE tier <> ? AND suspected_misroute_rate IS NOT NULL ORDER BY 1, 2",
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
        let previous: Option<String> = sqlx::query_scalar("SELECT notified FROM tw_alerts WHERE id = ?")
            .bind(&e.id)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO tw_alerts (id, kind, subject, severity, state, value, threshold, window_start_ms, \
               window_end_ms, fired_at_ms, escalated_at_ms, resolved_at_ms, last_value, notified, updated_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW_MS}) \
             ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state, \
               value = excluded.value, threshold = excluded.threshold, window_start_ms = excluded.window_start_ms, \
               window_end_ms = excluded.window_end_ms, escalated_at_ms = excluded.escalated_at_ms, \
               resolved_at_ms = excluded.resolved_at_ms, last_value = excluded.last_value, \
               notified = excluded.notified, updated_at_ms = excluded.updated_at_ms"
        ))
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
        if new {
            for w in webhooks {
                sqlx::query(
                    "INSERT INTO tw_alert_outbox (webhook, episode_id, transition, notification) VALUES (?, ?, ?, ?)",
                )
                .bind(w)
                .bind(&e.id)
                .bind(transition)
                .bind(notification)
                .execute(&mut *tx)
                .await
                .context("writing tw_alert_outbox")?;
            }
        }
        tx.commit().await.context("committing an alert transition")?;
        Ok(new)
    }

    async fn retain_episodes(&self, kind: &str, subject: &str, ids: &[String], since_ms: i64) -> anyhow::Result<()> {
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
}

impl OutboxStore for SqliteEvalStore {
    /// One process owns an SQLite file: always this one.
    async fn outbox_lease(&self, _webhook: &str) -> anyhow::Result<bool> {
        Ok(true)
    }

    async fn outbox_pending(&self, webhook: &str, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, notification, attempts FROM tw_alert_outbox WHERE webhook = ? AND delivered = 0 \
             ORDER BY id LIMIT ?",
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
        sqlx::query(&format!(
            "UPDATE tw_alert_outbox SET delivered = 1, rejected = ?, last_error = COALESCE(?, last_error), \
             delivered_at_ms = {NOW_MS} WHERE id = ?"
        ))
        .bind(rejected)
        .bind(error)
        .bind(id)
        .execute(self.store.pool())
        .await
        .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_attempt_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE tw_alert_outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?")
            .bind(error)
            .bind(id)
            .execute(self.store.pool())
            .await
            .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_prune(&self) -> anyhow::Result<()> {
        sqlx::query(&format!("DELETE FROM tw_alert_outbox WHERE delivered = 1 AND delivered_at_ms < {NOW_MS} - ?"))
            .bind(KEEP_DELIVERED_DAYS * 86_400_000)
            .execute(self.store.pool())
            .await
            .context("pruning tw_alert_outbox")?;
        Ok(())
    }

    async fn firing_episodes(&self) -> anyhow::Result<Vec<Episode>> {
        let rows: Vec<FiringRow> = sqlx::query_as(
            "SELECT id, kind, subject, severity, value, threshold, window_start_ms, window_end_ms, fired_at_ms, \
             escalated_at_ms, last_value FROM tw_alerts WHERE state = 'firing' ORDER BY fired_at_ms, id",
        )
        .fetch_all(self.store.pool())
        .await
        .context("reading firing alerts")?;
        Ok(rows.into_iter().filter_map(firing_episode).collect())
    }
}

// Router evaluation (see [`crate::router_eval::pass`]).

impl RouterEvalStore for SqliteEvalStore {
    async fn calib_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<CalibRow>> {
        let rows = sqlx::query(
            r#"SELECT day_ms, classifier_version, router, tier, cell, grp, decisions, failures,
                      failed_deflections, conf_e4, cost_nusd, capable_cost_nusd
               FROM tw_agg_calibration WHERE day_ms >= ? AND day_ms < ?"#,
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.sqlite().pool())
        .await
        .context("reading tw_agg_calibration")?;
        rows.iter().map(calib_row).collect()
    }

    async fn calib_first_days(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query("SELECT classifier_version, router, MIN(day_ms) FROM tw_agg_calibration GROUP BY 1, 2")
            .fetch_all(self.sqlite().pool())
            .await
            .context("reading the first calibration days")?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    async fn ticket_cost_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<(i64, i64, i64)>> {
        let rows = sqlx::query(
            r#"SELECT bucket_ms, SUM(attributed_tickets), SUM(attributed_human_cost_nusd)
               FROM tw_agg_quality WHERE grain = 'd' AND bucket_ms >= ? AND bucket_ms < ? GROUP BY 1"#,
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.sqlite().pool())
        .await
        .context("reading attributed ticket costs")?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    async fn rescore_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<RescoreCellRow>> {
        let rows = sqlx::query(
            r#"SELECT (ts_ms / 86400000) * 86400000, classifier_version, router, tier,
                      MIN(99, CAST(router_confidence * 100 AS INTEGER)),
                      CAST(SUM(w) AS REAL), CAST(SUM(CASE WHEN p_complex >= rescore_threshold THEN w ELSE 0.0 END) AS REAL)
               FROM tw_rescore_samples
               WHERE status = 'scored' AND router_confidence IS NOT NULL
                 AND router_confidence >= 0 AND router_confidence <= 1 AND ts_ms >= ? AND ts_ms < ?
               GROUP BY 1, 2, 3, 4, 5"#,
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.sqlite().pool())
        .await
        .context("reading rescoring evidence")?;
        rows.iter()
            .map(|r| {
                Ok(RescoreCellRow {
                    day_ms: r.try_get(0)?,
                    classifier_version: r.try_get(1)?,
                    router: r.try_get(2)?,
                    tier: r.try_get(3)?,
                    cell: u8::try_from(r.try_get::<i64, _>(4)?.clamp(0, 99)).unwrap_or(99),
                    evidence: RescoreCell { w: r.try_get(5)?, wy: r.try_get(6)? },
                })
            })
            .collect()
    }

    async fn write_router_eval(&self, from_ms: i64, rows: &[DayResult]) -> anyhow::Result<()> {
        let _write = self.sqlite().write_lock().await;
        let mut tx = self.sqlite().pool().begin().await?;
        for table in ["tw_calibration_daily", "tw_calibration_summary_daily", "tw_threshold_advice"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE day_ms >= ?"))
                .bind(from_ms)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("clearing {table}"))?;
        }
        let insert_bin = String::from(
            r#"INSERT INTO tw_calibration_daily (day_ms, classifier_version, router, "window", bin, conf_lo, conf_hi,
                 conf_mean, n, failures, failure_rate, failure_rate_lo, failure_rate_hi, baseline_n,
                 baseline_failures, baseline_failure_rate, p_value, status)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
        );
        let insert_summary = String::from(
            r#"INSERT INTO tw_calibration_summary_daily (day_ms, classifier_version, router, "window", n, failures,
                 bins, ece, ece_lo, ece_hi, overconfidence, overconfidence_lo, overconfidence_hi, ece_plugin)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#,
        );
        let insert_advice = String::from(
            r#"INSERT INTO tw_threshold_advice (day_ms, classifier_version, router, "window", threshold, is_current,
                 is_recommended, decisions, cheap_share, inference_cost_usd, expected_failed_deflections,
                 expected_failed_deflections_lo, expected_failed_deflections_hi, cheap_failure_rate,
                 human_cost_per_failure_usd, expected_human_cost_usd, net_cost_usd, net_cost_lo_usd,
                 net_cost_hi_usd, extrapolated, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                 ?, ?, ?, ?, ?)"#,
        );
        insert_router_eval_rows!(tx, rows, &insert_bin, &insert_summary, &insert_advice);
        tx.commit().await?;
        Ok(())
    }
}

fn calib_row(r: &sqlx::sqlite::SqliteRow) -> anyhow::Result<CalibRow> {
    let small = |i: usize| -> anyhow::Result<u8> {
        let v: i64 = r.try_get(i)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertState, Severity};
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
