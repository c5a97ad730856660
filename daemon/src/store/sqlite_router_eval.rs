//! Router evaluation's storage on the embedded SQLite store (see [`crate::router_eval::pass`]).

use anyhow::Context;
use sqlx::Row;

use super::sqlite_eval::SqliteEvalStore;
use crate::metrics::{CalibCounts, CalibRow};
use crate::router_eval::advice::RescoreCell;
use crate::router_eval::pass::{DayResult, RescoreCellRow, RouterEvalStore};

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
