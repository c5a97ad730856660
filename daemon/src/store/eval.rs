//! The evaluator's storage (drift, alerts and their outbox, router evaluation), once for both
//! stores. A backend's evaluator store implements [`EvalDialect`]: its SQL texts, and the few
//! things that differ beyond the text (the one-evaluator lock and the outbox leases, how an
//! array is stored, how alert notifications are queued); [`EvalStore`], [`OutboxStore`] and
//! [`RouterEvalStore`] follow for it from the code below. Each text takes its parameters in the
//! order given in its documentation.

use std::future::Future;

use anyhow::Context;

use super::sql::{args, Arg, Backend, Columns, RowOf, Tx};
use crate::alert::misroute::EstimateDay;
use crate::alert::outbox::firing_episode;
use crate::alert::quality::DayCounts;
use crate::alert::{Episode, OutboxRow, OutboxStore};
use crate::drift::evaluator::{DayWindows, DriftRecord, EvalStore, StoredReference};
use crate::metrics::{CalibCounts, CalibRow, Signal};
use crate::router_eval::advice::{AdviceRow, RescoreCell};
use crate::router_eval::calibration::{BinRow, Summary};
use crate::router_eval::pass::{DayResult, RescoreCellRow, RouterEvalStore};
use crate::stats::hist::ConfHist;

/// A backend's half of the evaluator's storage.
#[allow(async_fn_in_trait)]
pub(crate) trait EvalDialect: Send + Sync + 'static {
    type Store: Backend;

    fn store(&self) -> &Self::Store;

    /// `tw_conf_hist` rows with `from ≤ hour < to` (from ms, to ms), in the columns
    /// [`super::fold_conf_rows`] reads.
    const CONF_DAYS: &'static str;
    /// Upsert a `tw_drift_daily` row: day ms, classifier_version, router, signal, window, n,
    /// n_eff, ref_n, ks_d, ks_p, psi, psi_noise, cheap_share_expected, cheap_share_observed,
    /// status, cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi; evaluated now.
    const UPSERT_DRIFT: &'static str;
    /// Per (day start ms, tier): thumbs_down, decisions, failed_deflections, reviews_wrong,
    /// reviews_n and the day's AI conversations ([`DayCounts::from_sums`]).
    const DAILY_TIER_COUNTS: &'static str;
    /// `rescore_estimates_daily` of the tiers other than the capable one (capable tier): day ms,
    /// tier, scored, weight_sum, n_eff, suspected_misroute_rate.
    const RESCORE_ESTIMATES: &'static str;
    /// An alert's `notified`, locking its row where the backend can (episode id).
    const NOTIFIED: &'static str;
    /// Upsert a `tw_alerts` row: id, kind, subject, severity, state, value, threshold, window
    /// start ms, window end ms, fired ms, escalated ms, resolved ms, last value, notified;
    /// updated now.
    const UPSERT_EPISODE: &'static str;
    /// A webhook's undelivered outbox rows, oldest first (webhook, limit): id, notification,
    /// attempts.
    const OUTBOX_PENDING: &'static str;
    /// Mark an outbox row delivered (id, rejected, error or NULL).
    const OUTBOX_DONE: &'static str;
    /// Count a failed delivery attempt (id, error).
    const OUTBOX_ATTEMPT_FAILED: &'static str;
    /// Delete delivered rows older than [`Self::KEEP_DELIVERED`].
    const OUTBOX_PRUNE: &'static str;
    /// The parameter of [`Self::OUTBOX_PRUNE`]: the age of delivered rows to keep.
    const KEEP_DELIVERED: Arg<'static>;
    /// Firing alerts in firing order, the columns of a [`crate::alert::outbox::FiringRow`].
    const FIRING_EPISODES: &'static str;

    /// `tw_agg_calibration` with `from ≤ day < to` (from ms, to ms): day ms, classifier_version,
    /// router, tier, cell, grp and the [`CalibCounts`].
    const CALIB_CELLS: &'static str;
    /// Per (classifier_version, router): its first day in `tw_agg_calibration`, ms.
    const CALIB_FIRST_DAYS: &'static str;
    /// Per day of `tw_agg_quality` with `from ≤ day < to` (from ms, to ms): day ms, attributed
    /// tickets, attributed human cost.
    const TICKET_COST_DAYS: &'static str;
    /// Scored rescoring samples with `from ≤ ts < to` (from ms, to ms), per day ms,
    /// classifier_version, router, tier and 0.01 confidence cell: Σw and Σw of "needs the capable
    /// tier".
    const RESCORE_CELLS: &'static str;
    /// The condition "day at or after the day of the first parameter (ms)" for clearing the
    /// router-evaluation tables.
    const DAY_FROM: &'static str;
    /// Insert a `tw_calibration_daily` row: day ms, then the columns of [`bin_args`].
    const INSERT_CALIBRATION_BIN: &'static str;
    /// Insert a `tw_calibration_summary_daily` row: day ms, then the columns of
    /// [`summary_args`].
    const INSERT_CALIBRATION_SUMMARY: &'static str;
    /// Insert a `tw_threshold_advice` row: day ms, then the columns of [`advice_args`].
    const INSERT_THRESHOLD_ADVICE: &'static str;

    /// Become the one evaluating instance; false when another instance holds it.
    async fn try_lock_evaluator(&self) -> anyhow::Result<bool>;
    async fn unlock_evaluator(&self) -> anyhow::Result<()>;
    /// Become the one instance delivering `webhook`'s outbox.
    fn try_lease_outbox(&self, webhook: &str) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// The PSI bin edges of a `tw_references` row.
    fn psi_edges(row: &RowOf<Self::Store>, i: usize) -> anyhow::Result<Vec<u16>>;
    /// Freeze a reference (first writer wins).
    async fn store_reference(&self, r: &StoredReference) -> anyhow::Result<()>;
    /// Queue `notification` in the alert outbox once per webhook (`webhooks` is not empty).
    async fn queue_notifications(
        tx: &mut Tx<<Self::Store as Backend>::Db>,
        webhooks: &[String],
        episode_id: &str,
        transition: &str,
        notification: &str,
    ) -> anyhow::Result<()>;
    /// [`EvalStore::retain_episodes`].
    async fn delete_other_episodes(
        &self,
        kind: &str,
        subject: &str,
        ids: &[String],
        since_ms: i64,
    ) -> anyhow::Result<()>;
    /// Held while the router evaluation's results are rewritten, where the backend serializes
    /// its writers.
    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>>;
}

/// The `tw_references` columns [`EvalStore::references`] reads.
const REFERENCES: &str = "SELECT classifier_version, signal, source, n_eff, hist, psi_edges FROM tw_references";

/// Minimum event-time watermark over partitions that have seen data.
const GLOBAL_WATERMARK: &str = "SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0";

/// The router-evaluation result tables, cleared from the first re-evaluated day on.
const ROUTER_EVAL_TABLES: [&str; 3] = ["tw_calibration_daily", "tw_calibration_summary_daily", "tw_threshold_advice"];

impl<D: EvalDialect> EvalStore for D {
    async fn try_lock(&self) -> anyhow::Result<bool> {
        self.try_lock_evaluator().await
    }

    async fn unlock(&self) -> anyhow::Result<()> {
        self.unlock_evaluator().await
    }

    async fn global_watermark(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.store().fetch_one(GLOBAL_WATERMARK, args![]).await?.opt_i64(0)?)
    }

    async fn conf_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<DayWindows> {
        let rows = self.store().fetch_all(D::CONF_DAYS, args![from_ms, to_ms]).await.context("reading tw_conf_hist")?;
        super::fold_conf_rows(&rows)
    }

    async fn references(&self) -> anyhow::Result<Vec<StoredReference>> {
        let rows = self.store().fetch_all(REFERENCES, args![]).await?;
        let mut out = vec![];
        for r in rows {
            let Some(signal) = Signal::parse(&r.string(1)?) else { continue };
            let psi_edges = D::psi_edges(&r, 5)?;
            out.push(StoredReference {
                classifier_version: r.string(0)?,
                signal,
                source: r.string(2)?,
                n_eff: r.i64(3)?.max(1) as u64,
                hist: ConfHist::from_bytes(&r.bytes(4)?).context("reference histogram")?,
                psi_edges,
            });
        }
        Ok(out)
    }

    async fn insert_reference(&self, r: &StoredReference) -> anyhow::Result<()> {
        self.store_reference(r).await
    }

    async fn write_drift(&self, rows: &[DriftRecord<'_>]) -> anyhow::Result<()> {
        let mut tx = self.store().begin().await?;
        for rec in rows {
            let (cv, router, signal) = rec.subject;
            let r = rec.row;
            let row = args![
                rec.day_ms,
                cv,
                router,
                signal.as_str(),
                rec.window,
                r.n as i64,
                r.n_eff as i64,
                r.ref_n as i64,
                r.ks_d,
                r.ks_p,
                r.psi,
                r.psi_noise,
                r.cheap_share_expected,
                r.cheap_share_observed,
                r.status.as_str(),
                r.cheap_share_target,
                r.cheap_share_observed_lo,
                r.cheap_share_observed_hi,
            ];
            D::Store::execute(&mut tx, D::UPSERT_DRIFT, row).await.context("writing tw_drift_daily")?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn daily_tier_counts(&self) -> anyhow::Result<Vec<(i64, String, DayCounts)>> {
        let rows = self.store().fetch_all(D::DAILY_TIER_COUNTS, args![]).await.context("reading daily tier quality")?;
        let mut out = vec![];
        for r in rows {
            let sums = [r.i64(2)?, r.i64(3)?, r.i64(4)?, r.i64(5)?, r.i64(6)?, r.i64(7)?];
            out.push((r.i64(0)?, r.string(1)?, DayCounts::from_sums(sums)));
        }
        Ok(out)
    }

    async fn rescore_estimates(&self, capable_tier: &str) -> anyhow::Result<Vec<(i64, String, EstimateDay)>> {
        let rows = self
            .store()
            .fetch_all(D::RESCORE_ESTIMATES, args![capable_tier])
            .await
            .context("reading rescore_estimates_daily")?;
        rows.iter()
            .map(|r| {
                let row = (r.i64(0)?, r.string(1)?, r.i64(2)?, r.f64(3)?, r.f64(4)?, r.f64(5)?);
                Ok(EstimateDay::from_row(row))
            })
            .collect()
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
        let mut tx = self.store().begin().await?;
        let previous = D::Store::fetch_optional_in(&mut tx, D::NOTIFIED, args![&e.id])
            .await
            .context("reading tw_alerts")?
            .map(|r| r.string(0))
            .transpose()?;
        let row = args![
            &e.id,
            kind,
            subject,
            e.severity.as_str(),
            e.state.as_str(),
            e.value,
            e.threshold,
            e.window_start_ms,
            e.window_end_ms,
            e.fired_window_end_ms,
            e.escalated_window_end_ms,
            e.resolved_window_end_ms,
            e.last_value,
            transition,
        ];
        D::Store::execute(&mut tx, D::UPSERT_EPISODE, row).await.context("writing tw_alerts")?;
        let new = previous.as_deref() != Some(transition);
        if new && !webhooks.is_empty() {
            D::queue_notifications(&mut tx, webhooks, &e.id, transition, notification).await?;
        }
        tx.commit().await.context("committing an alert transition")?;
        Ok(new)
    }

    async fn retain_episodes(&self, kind: &str, subject: &str, ids: &[String], since_ms: i64) -> anyhow::Result<()> {
        self.delete_other_episodes(kind, subject, ids, since_ms).await
    }
}

impl<D: EvalDialect> OutboxStore for D {
    async fn outbox_lease(&self, webhook: &str) -> anyhow::Result<bool> {
        self.try_lease_outbox(webhook).await
    }

    async fn outbox_pending(&self, webhook: &str, limit: i64) -> anyhow::Result<Vec<OutboxRow>> {
        let rows = self
            .store()
            .fetch_all(D::OUTBOX_PENDING, args![webhook, limit])
            .await
            .context("reading tw_alert_outbox")?;
        rows.into_iter()
            .map(|r| Ok(OutboxRow { id: r.i64(0)?, notification: r.string(1)?, attempts: r.i32(2)? }))
            .collect()
    }

    async fn outbox_done(&self, id: i64, rejected: bool, error: Option<&str>) -> anyhow::Result<()> {
        self.store()
            .execute_pooled(D::OUTBOX_DONE, args![id, rejected, error])
            .await
            .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_attempt_failed(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.store()
            .execute_pooled(D::OUTBOX_ATTEMPT_FAILED, args![id, error])
            .await
            .context("updating tw_alert_outbox")?;
        Ok(())
    }

    async fn outbox_prune(&self) -> anyhow::Result<()> {
        self.store()
            .execute_pooled(D::OUTBOX_PRUNE, vec![D::KEEP_DELIVERED])
            .await
            .context("pruning tw_alert_outbox")?;
        Ok(())
    }

    async fn firing_episodes(&self) -> anyhow::Result<Vec<Episode>> {
        let rows = self.store().fetch_all(D::FIRING_EPISODES, args![]).await.context("reading firing alerts")?;
        let mut out = vec![];
        for r in rows {
            let row = (
                r.string(0)?,
                r.string(1)?,
                r.string(2)?,
                r.string(3)?,
                r.f64(4)?,
                r.f64(5)?,
                r.i64(6)?,
                r.i64(7)?,
                r.i64(8)?,
                r.opt_i64(9)?,
                r.f64(10)?,
            );
            out.extend(firing_episode(row));
        }
        Ok(out)
    }
}

impl<D: EvalDialect> RouterEvalStore for D {
    async fn calib_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<CalibRow>> {
        let rows = self
            .store()
            .fetch_all(D::CALIB_CELLS, args![from_ms, to_ms])
            .await
            .context("reading tw_agg_calibration")?;
        rows.iter().map(calib_row).collect()
    }

    async fn calib_first_days(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows =
            self.store().fetch_all(D::CALIB_FIRST_DAYS, args![]).await.context("reading the first calibration days")?;
        rows.iter().map(|r| Ok((r.string(0)?, r.string(1)?, r.i64(2)?))).collect()
    }

    async fn ticket_cost_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<(i64, i64, i64)>> {
        let rows = self
            .store()
            .fetch_all(D::TICKET_COST_DAYS, args![from_ms, to_ms])
            .await
            .context("reading attributed ticket costs")?;
        rows.iter().map(|r| Ok((r.i64(0)?, r.i64(1)?, r.i64(2)?))).collect()
    }

    async fn rescore_cells(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<Vec<RescoreCellRow>> {
        let rows = self
            .store()
            .fetch_all(D::RESCORE_CELLS, args![from_ms, to_ms])
            .await
            .context("reading rescoring evidence")?;
        rows.iter()
            .map(|r| {
                Ok(RescoreCellRow {
                    day_ms: r.i64(0)?,
                    classifier_version: r.string(1)?,
                    router: r.string(2)?,
                    tier: r.string(3)?,
                    cell: u8::try_from(r.i32(4)?.clamp(0, 99)).unwrap_or(99),
                    evidence: RescoreCell { w: r.f64(5)?, wy: r.f64(6)? },
                })
            })
            .collect()
    }

    async fn write_router_eval(&self, from_ms: i64, rows: &[DayResult]) -> anyhow::Result<()> {
        let _write = self.write_guard().await;
        let mut tx = self.store().begin().await?;
        for table in ROUTER_EVAL_TABLES {
            let clear = format!("DELETE FROM {table} WHERE {}", D::DAY_FROM);
            D::Store::execute(&mut tx, &clear, args![from_ms]).await.with_context(|| format!("clearing {table}"))?;
        }
        for r in rows {
            for b in &r.bins {
                D::Store::execute(&mut tx, D::INSERT_CALIBRATION_BIN, bin_args(r, b))
                    .await
                    .context("writing tw_calibration_daily")?;
            }
            if let Some(summary) = &r.summary {
                D::Store::execute(&mut tx, D::INSERT_CALIBRATION_SUMMARY, summary_args(r, summary))
                    .await
                    .context("writing tw_calibration_summary_daily")?;
            }
            for a in &r.advice {
                D::Store::execute(&mut tx, D::INSERT_THRESHOLD_ADVICE, advice_args(r, a))
                    .await
                    .context("writing tw_threshold_advice")?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A `tw_agg_calibration` row of [`EvalDialect::CALIB_CELLS`].
fn calib_row<R: Columns>(r: &R) -> anyhow::Result<CalibRow> {
    let small = |i: usize| -> anyhow::Result<u8> {
        let v = r.i16(i)?;
        u8::try_from(v).map_err(|_| anyhow::anyhow!("tw_agg_calibration: column {i} out of range: {v}"))
    };
    Ok(CalibRow {
        day_ms: r.i64(0)?,
        classifier_version: r.string(1)?,
        router: r.string(2)?,
        tier: r.string(3)?,
        cell: small(4)?,
        group: small(5)?,
        counts: CalibCounts {
            decisions: r.i64(6)?,
            failures: r.i64(7)?,
            failed_deflections: r.i64(8)?,
            conf_e4: r.i64(9)?,
            cost_nusd: r.i64(10)?,
            capable_cost_nusd: r.i64(11)?,
        },
    })
}

/// The day, subject and window of a router-evaluation row, its first parameters.
fn day_subject_args(r: &DayResult) -> Vec<Arg<'_>> {
    args![r.day_ms, &r.subject.0, &r.subject.1, &r.window]
}

/// A `calibration_daily` row's parameters: day, classifier_version, router, window, bin,
/// conf_lo, conf_hi, conf_mean, n, failures, failure_rate (with its interval), baseline_n,
/// baseline_failures, baseline_failure_rate, p_value, status.
fn bin_args<'a>(r: &'a DayResult, b: &'a BinRow) -> Vec<Arg<'a>> {
    let mut out = day_subject_args(r);
    out.extend(args![
        b.bin as i64,
        b.conf_lo,
        b.conf_hi,
        b.conf_mean,
        b.n as i64,
        b.failures as i64,
        b.failure_rate,
        b.failure_rate_lo,
        b.failure_rate_hi,
        b.baseline_n as i64,
        b.baseline_failures as i64,
        b.baseline_failure_rate,
        b.p_value,
        b.status.as_str(),
    ]);
    out
}

/// A `calibration_summary_daily` row's parameters: day, classifier_version, router, window, n,
/// failures, bins, ece (with its interval), overconfidence (with its interval), ece_plugin.
fn summary_args<'a>(r: &'a DayResult, s: &'a Summary) -> Vec<Arg<'a>> {
    let mut out = day_subject_args(r);
    out.extend(args![
        s.n as i64,
        s.failures as i64,
        s.bins as i64,
        s.ece,
        s.ece_lo,
        s.ece_hi,
        s.overconfidence,
        s.overconfidence_lo,
        s.overconfidence_hi,
        s.ece_plugin,
    ]);
    out
}

/// A `threshold_advice` row's parameters: day, classifier_version, router, window, then the
/// [`AdviceRow`] in the table's column order.
fn advice_args<'a>(r: &'a DayResult, a: &'a AdviceRow) -> Vec<Arg<'a>> {
    let mut out = day_subject_args(r);
    out.extend(args![
        a.threshold,
        a.is_current,
        a.is_recommended,
        a.decisions as i64,
        a.cheap_share,
        a.inference_cost_usd,
        a.expected_failed_deflections,
        a.expected_failed_deflections_lo,
        a.expected_failed_deflections_hi,
        a.cheap_failure_rate,
        a.human_cost_per_failure_usd,
        a.expected_human_cost_usd,
        a.net_cost_usd,
        a.net_cost_lo_usd,
        a.net_cost_hi_usd,
        a.extrapolated,
        a.net_saving_usd,
        a.net_saving_lo_usd,
        a.net_saving_hi_usd,
    ]);
    out
}
