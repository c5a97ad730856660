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

use super::{evaluate, DriftConfig, DriftRow, Reference, Status, Window};
use crate::alert::misroute::{self, EstimateDay, MisrouteRuleConfig};
use crate::alert::quality::{
    evaluations, family_size, tested_tier, DayCounts, QualityRuleConfig, AGGREGATE_KIND, ALL_TIERS,
    KIND as QUALITY_KIND,
};
use crate::alert::{episodes, AlertState, Episode, Evaluation, Hysteresis, Notification, WebhookSink};
use crate::drift::routed_share::{self, RoutedShareRuleConfig, RoutedShareTarget};
use crate::metrics::{Signal, DAY_MS};
use crate::router_eval::{self, pass::RouterEvalStore, RouterEvalConfig};
use crate::stats::hist::ConfHist;
use crate::stats::psi::PsiBins;
use crate::telemetry::Telemetry;

pub const DRIFT_KIND: &str = "confidence_drift";

/// (classifier_version, router, signal)
pub type Subject = (String, String, Signal);

pub fn subject_label(s: &Subject) -> String {
    format!("classifier_version={} router={} signal={}", s.0, s.1, s.2.as_str())
}

pub struct Evaluator<E: EvalStore> {
    store: Arc<E>,
    cfg: DriftConfig,
    quality: QualityRuleConfig,
    window_ms: i64,
    telemetry: Arc<Telemetry>,
    webhooks: Option<WebhookSink>,
    /// The misroute rule and the tier it does not apply to (the capable one).
    misroute: MisrouteRuleConfig,
    capable_tier: String,
    /// Reliability curves, calibration regression and threshold advice.
    router_eval: RouterEvalConfig,
    /// Target cheap shares per classifier version and the routed-share rule.
    routing_targets: BTreeMap<String, RoutedShareTarget>,
    routed_share: RoutedShareRuleConfig,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassSummary {
    pub ran: bool,
    pub rows: usize,
    pub firing: usize,
    pub notified: usize,
}

/// A stored reference row.
#[derive(Debug, Clone)]
pub struct StoredReference {
    pub classifier_version: String,
    pub signal: Signal,
    pub source: String,
    pub n_eff: u64,
    pub hist: ConfHist,
    pub psi_edges: Vec<u16>,
}

/// Confidence windows per subject and UTC day (day index = epoch ms / `DAY_MS`).
pub type DayWindows = BTreeMap<Subject, BTreeMap<i64, Window>>;

/// Fold one stored hour of one partition into its day. The stores call this for each row as they
/// decode it, so a pass holds one dense histogram (10,001 bins) per subject and day instead of one
/// per stored hour and partition: collecting the rows first made every pass peak at ~80 KB × the
/// hourly rows of `lookback_days`, and the daemon's RSS climbed from ~190 MB to ~780 MB over a
/// minute of idle passes on 140 days of data.
pub fn add_hour(days: &mut DayWindows, hour_ms: i64, subject: Subject, window: &Window) {
    days.entry(subject).or_default().entry(hour_ms.div_euclid(DAY_MS)).or_default().add(window);
}

/// One day's drift row to store.
#[derive(Debug, Clone)]
pub struct DriftRecord<'a> {
    pub day_ms: i64,
    pub subject: &'a Subject,
    pub window: &'static str,
    pub row: &'a DriftRow,
}

/// The storage the evaluator needs (Postgres in production, SQLite embedded).
#[allow(async_fn_in_trait)]
pub trait EvalStore: RouterEvalStore + Send + Sync {
    /// Become the one evaluating instance; false when another instance holds it.
    async fn try_lock(&self) -> anyhow::Result<bool>;
    async fn unlock(&self) -> anyhow::Result<()>;
    /// Minimum event-time watermark over partitions that have seen data.
    async fn global_watermark(&self) -> anyhow::Result<Option<i64>>;
    /// Recorded confidence histograms with `from_ms ≤ hour < to_ms`, merged per subject and day
    /// with [`add_hour`] as they are read.
    async fn conf_days(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<DayWindows>;
    async fn references(&self) -> anyhow::Result<Vec<StoredReference>>;
    /// Freeze a reference (first writer wins).
    async fn insert_reference(&self, r: &StoredReference) -> anyhow::Result<()>;
    async fn write_drift(&self, rows: &[DriftRecord<'_>]) -> anyhow::Result<()>;
    /// Per (day start ms, tier): summed daily quality counters and distinct conversations.
    async fn daily_tier_counts(&self) -> anyhow::Result<Vec<(i64, String, DayCounts)>>;
    /// `rescore_estimates_daily` rows of the tiers other than `capable_tier`: (day start ms, tier,
    /// estimate). Rows without a rate (nothing scored) are left out.
    async fn rescore_estimates(&self, capable_tier: &str) -> anyhow::Result<Vec<(i64, String, EstimateDay)>>;
    /// Upsert an episode and, in the same transaction, when `transition` ("state:severity") is not
    /// the one last recorded in `notified`: record it and queue `notification` (JSON) in the alert
    /// outbox once per webhook key of `webhooks`. Returns whether it was a new transition.
    async fn upsert_episode(
        &self,
        kind: &str,
        subject: &str,
        e: &Episode,
        transition: &str,
        webhooks: &[String],
        notification: &str,
    ) -> anyhow::Result<bool>;
    /// Remove episodes of (kind, subject) whose window starts at or after `since_ms` (the part of
    /// history that was re-evaluated) and that re-evaluation no longer produces. Older episodes are
    /// history and stay.
    async fn retain_episodes(&self, kind: &str, subject: &str, ids: &[String], since_ms: i64) -> anyhow::Result<()>;
}

impl<E: EvalStore> Evaluator<E> {
    pub fn new(
        store: Arc<E>,
        cfg: DriftConfig,
        quality: QualityRuleConfig,
        attribution_window_ms: i64,
        telemetry: Arc<Telemetry>,
        webhooks: Option<WebhookSink>,
    ) -> Self {
        Self {
            store,
            cfg,
            quality,
            window_ms: attribution_window_ms,
            telemetry,
            webhooks,
            misroute: MisrouteRuleConfig::default(),
            capable_tier: "capable".into(),
            router_eval: RouterEvalConfig::default(),
            routing_targets: BTreeMap::new(),
            routed_share: RoutedShareRuleConfig::default(),
        }
    }

    /// Target cheap shares per classifier version (`[routing.targets]`) and the
    /// routed-share-deviation rule (`[alerts.routed_share]`).
    pub fn with_routed_share(
        mut self,
        targets: &BTreeMap<String, RoutedShareTarget>,
        rule: &RoutedShareRuleConfig,
    ) -> Self {
        self.routing_targets = targets.clone();
        self.routed_share = rule.clone();
        self
    }

    /// The misroute-estimate rule's settings and the capable tier (`ledger.capable_tier`).
    pub fn with_misroute(mut self, rule: MisrouteRuleConfig, capable_tier: &str) -> Self {
        self.misroute = rule;
        self.capable_tier = capable_tier.to_owned();
        self
    }

    /// The router-evaluation settings (`[router_eval]`).
    pub fn with_router_eval(mut self, cfg: RouterEvalConfig) -> Self {
        self.router_eval = cfg;
        self
    }

    /// Evaluate every `evaluate_every_seconds` until `shutdown`.
    pub async fn run(self, shutdown: Arc<AtomicBool>) {
        let every = Duration::from_secs(self.cfg.evaluate_every_seconds);
        while !shutdown.load(Ordering::Relaxed) {
            // A pass waiting on an unreachable store must not hold a shutdown up: it is dropped
            // (its transaction rolls back) when still running 2 s after shutdown was requested.
            let stop = async {
                while !shutdown.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            let result = tokio::select! {
                r = self.pass() => r,
                _ = stop => break,
            };
            if let Err(e) = result {
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

    /// One pass, if this instance gets the lock. Its duration is observed
    /// (`tierwatch_evaluator_pass_seconds`) and, when it completes, its time recorded
    /// (`tierwatch_evaluator_last_success_timestamp_seconds`); a store error is counted by class.
    pub async fn pass(&self) -> anyhow::Result<PassSummary> {
        let started = std::time::Instant::now();
        let result = self.pass_unmetered().await;
        let t = &self.telemetry;
        match &result {
            Ok(s) if s.ran => {
                t.evaluator_pass.observe(started.elapsed().as_secs_f64());
                t.evaluator_last_success.set(crate::telemetry::unix_now_seconds());
            }
            Ok(_) => {}
            Err(e) => {
                t.evaluator_pass.observe(started.elapsed().as_secs_f64());
                if let Some(kind) = crate::store::error::StoreErrorKind::of_database_error(e) {
                    t.store_errors.count(kind);
                }
            }
        }
        result
    }

    async fn pass_unmetered(&self) -> anyhow::Result<PassSummary> {
        if !self.store.try_lock().await? {
            return Ok(PassSummary::default());
        }
        let result = self.pass_locked().await;
        let _ = self.store.unlock().await;
        result
    }

    async fn pass_locked(&self) -> anyhow::Result<PassSummary> {
        let Some(wm) = self.store.global_watermark().await? else {
            return Ok(PassSummary { ran: true, ..Default::default() });
        };
        // Complete days only: the day's end is at or before the cluster-wide watermark.
        let last_day = wm.div_euclid(DAY_MS) - 1;
        let first_day = last_day - i64::from(self.cfg.lookback_days.max(1)) + 1;
        let days = self.load_days(first_day, last_day).await?;
        let mut references = self.load_references().await?;
        self.complete_references(&days, last_day, &mut references).await?;

        let thresholds = thresholds_of(&days);
        let cfg = self.cfg.clone();
        let refs = references.clone();
        // KS/PSI over many days: off the async workers.
        let mut rows = tokio::task::spawn_blocking(move || evaluate_all(&cfg, &refs, &days)).await?;
        routed_share::set_targets(&mut rows, &self.routing_targets);
        let missing = rows.keys().filter(|s| !references.contains_key(&(s.0.clone(), s.2))).map(|s| s.0.clone());
        self.telemetry.set_missing_references(&missing.collect());
        self.write_rows(&rows).await?;
        self.telemetry.begin_alert_pass();
        let (firing, notified) = self.update_alerts(&rows, first_day * DAY_MS).await?;
        let (q_firing, q_notified) = self.quality_pass(wm).await?;
        let (m_firing, m_notified) = self.misroute_pass(last_day).await?;
        let (c_firing, c_notified) = self.router_eval_pass(wm, first_day, last_day, &references, thresholds).await?;
        let (r_firing, r_notified) = self.routed_share_pass(&rows, first_day).await?;
        self.telemetry.finish_alert_pass();
        Ok(PassSummary {
            ran: true,
            rows: rows.values().map(|d| d.len()).sum(),
            firing: firing + q_firing + m_firing + c_firing + r_firing,
            notified: notified + q_notified + m_notified + c_notified + r_notified,
        })
    }

    /// Reliability curves, calibration error and threshold advice of every classifier version and
    /// router over the look-back's mature days, and the calibration-regression alert.
    async fn router_eval_pass(
        &self,
        wm: i64,
        first_day: i64,
        last_day: i64,
        references: &HashMap<(String, Signal), Reference>,
        thresholds: BTreeMap<router_eval::pass::Subject, BTreeMap<i64, f64>>,
    ) -> anyhow::Result<(usize, usize)> {
        let cfg = self.router_eval.clone();
        let longest = cfg.longest_window();
        let mut ctx = router_eval::pass::Context {
            first_day,
            last_day,
            last_mature_day: (wm - self.window_ms).div_euclid(DAY_MS) - 1,
            thresholds,
            ..Default::default()
        };
        for (cv, router, first) in self.store.calib_first_days().await? {
            let signal = if router == "CASCADE" { Signal::CascadeSelfConfidence } else { Signal::RouterConfidence };
            if let Some(r) = references.get(&(cv.clone(), signal)) {
                ctx.edges.insert((cv.clone(), router.clone()), r.bins.edges().to_vec());
            }
            ctx.first_days.insert((cv, router), first.div_euclid(DAY_MS));
        }
        if ctx.first_days.is_empty() {
            return Ok((0, 0));
        }
        // The look-back's windows, and the baselines that lie before them.
        let load_from = first_day - longest + 1;
        let mut loaded = router_eval::pass::Loaded::default();
        let to_ms = (last_day + 1) * DAY_MS;
        self.load_cells(&mut loaded, load_from, last_day).await?;
        let base_from = ctx.first_days.values().map(|&f| router_eval::pass::baseline_range(&cfg, f).0).min();
        if let Some(base_from) = base_from.filter(|&b| b < load_from) {
            let base_to = ctx.first_days.values().map(|&f| router_eval::pass::baseline_range(&cfg, f).1).max();
            let base_to = base_to.unwrap_or(base_from).min(load_from - 1);
            self.load_cells(&mut loaded, base_from, base_to).await?;
        }
        loaded.add_rescore(self.store.rescore_cells(load_from * DAY_MS, to_ms).await?, &self.capable_tier);
        for (day_ms, tickets, cost) in self.store.ticket_cost_days(load_from * DAY_MS, to_ms).await? {
            ctx.ticket_costs.insert(day_ms.div_euclid(DAY_MS), (tickets, cost));
        }
        // Bootstraps over many days: off the async workers.
        let (results, evals) =
            tokio::task::spawn_blocking(move || router_eval::pass::evaluate(&cfg, &ctx, &loaded)).await?;
        self.store.write_router_eval(first_day * DAY_MS, &results).await?;
        let h = self.router_eval.hysteresis();
        let (mut firing, mut notified) = (0, 0);
        for (subject, list) in &evals {
            let label = router_eval::pass::subject_label(subject);
            let eps = episodes(router_eval::CALIBRATION_KIND, &label, list, &h);
            let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
            firing += is_firing as usize;
            self.telemetry.set_alert_firing(router_eval::CALIBRATION_KIND, &label, is_firing);
            notified += self.store_episodes(router_eval::CALIBRATION_KIND, &label, &eps, i64::MIN).await?;
        }
        Ok((firing, notified))
    }

    /// Each targeted classifier version's observed cheap share (`router_confidence`, 7-day
    /// windows) against its target band. Like drift, it is re-evaluated over the look-back: the
    /// episodes whose first window starts inside it are the ones re-derived.
    async fn routed_share_pass(
        &self,
        rows: &BTreeMap<Subject, BTreeMap<(i64, &'static str), DriftRow>>,
        first_day: i64,
    ) -> anyhow::Result<(usize, usize)> {
        let h = self.routed_share.hysteresis();
        let since_ms = (first_day - routed_share::WINDOW_DAYS + 1) * DAY_MS;
        let (mut firing, mut notified) = (0, 0);
        for ((cv, router, signal), by_day) in rows {
            let Some(target) = self.routing_targets.get(cv).filter(|_| *signal == Signal::RouterConfidence) else {
                continue;
            };
            let subject = routed_share::subject(cv, router);
            let eps = episodes(routed_share::KIND, &subject, &routed_share::evaluations(target, by_day), &h);
            let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
            firing += is_firing as usize;
            self.telemetry.set_alert_firing(routed_share::KIND, &subject, is_firing);
            notified += self.store_episodes(routed_share::KIND, &subject, &eps, since_ms).await?;
        }
        Ok((firing, notified))
    }

    /// Fold the cells of days `first..=last` into `loaded`, a week per query: the rows of a whole
    /// look-back read at once peaked at ~460 MB (the demo's 154 days into SQLite), folded a week at
    /// a time the pass holds only the folded cells.
    async fn load_cells(&self, loaded: &mut router_eval::pass::Loaded, first: i64, last: i64) -> anyhow::Result<()> {
        let mut from = first;
        while from <= last {
            let to = (from + 7).min(last + 1);
            loaded.add_cells(self.store.calib_cells(from * DAY_MS, to * DAY_MS).await?, &self.capable_tier);
            from = to;
        }
        Ok(())
    }

    /// The rescorer's weighted misroute estimate of each routed-down tier, complete days only.
    async fn misroute_pass(&self, last_day: i64) -> anyhow::Result<(usize, usize)> {
        let mut per_tier: BTreeMap<String, BTreeMap<i64, EstimateDay>> = BTreeMap::new();
        for (day_ms, tier, e) in self.store.rescore_estimates(&self.capable_tier).await? {
            let day = day_ms.div_euclid(DAY_MS);
            if day <= last_day {
                per_tier.entry(tier).or_default().insert(day, e);
            }
        }
        let h = self.misroute.hysteresis();
        let (mut firing, mut notified) = (0, 0);
        for (tier, days) in &per_tier {
            let subject = format!("tier={tier}");
            let eps = episodes(misroute::KIND, &subject, &misroute::evaluations(&self.misroute, days), &h);
            let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
            firing += is_firing as usize;
            self.telemetry.set_alert_firing(misroute::KIND, &subject, is_firing);
            notified += self.store_episodes(misroute::KIND, &subject, &eps, i64::MIN).await?;
        }
        Ok((firing, notified))
    }

    /// Tier quality regression over mature cohort days, per tier and for all tiers pooled.
    async fn quality_pass(&self, wm: i64) -> anyhow::Result<(usize, usize)> {
        let mut per_tier: BTreeMap<String, BTreeMap<i64, DayCounts>> = BTreeMap::new();
        for (bucket, tier, c) in self.store.daily_tier_counts().await? {
            // Mature cohorts only: ticket rates rise until the attribution window has passed.
            if bucket + DAY_MS + self.window_ms > wm {
                continue;
            }
            let day = bucket.div_euclid(DAY_MS);
            per_tier.entry(tier).or_default().insert(day, c);
            per_tier.entry(ALL_TIERS.to_string()).or_default().entry(day).or_default().add(&c);
        }
        let tests = family_size(per_tier.keys());
        let h = self.quality.hysteresis();
        let (mut firing, mut notified) = (0, 0);
        for (tier, days) in per_tier.iter().filter(|(t, _)| tested_tier(t)) {
            let kind = if tier == ALL_TIERS { AGGREGATE_KIND } else { QUALITY_KIND };
            for (metric, evals) in evaluations(&self.quality, days, tests) {
                let subject = format!("tier={tier} metric={}", metric.as_str());
                let eps = episodes(kind, &subject, &evals, &h);
                let is_firing = eps.iter().any(|e| e.state == AlertState::Firing);
                firing += is_firing as usize;
                self.telemetry.set_alert_firing(kind, &subject, is_firing);
                // Quality is re-evaluated over all stored days: nothing is out of range.
                notified += self.store_episodes(kind, &subject, &eps, i64::MIN).await?;
            }
        }
        Ok((firing, notified))
    }

    /// Merge the hourly per-partition histograms into one window per subject and day.
    async fn load_days(&self, first_day: i64, last_day: i64) -> anyhow::Result<DayWindows> {
        self.store.conf_days(first_day * DAY_MS, (last_day + 1) * DAY_MS).await
    }

    async fn load_references(&self) -> anyhow::Result<HashMap<(String, Signal), Reference>> {
        let mut out = HashMap::new();
        for r in self.store.references().await? {
            let bins =
                PsiBins::from_edges(r.psi_edges.clone()).map_err(|e| anyhow::anyhow!("reference PSI edges: {e}"))?;
            out.insert(
                (r.classifier_version.clone(), r.signal),
                Reference { hist: r.hist, n_eff: r.n_eff.max(1), bins, source: r.source },
            );
        }
        Ok(out)
    }

    /// Freeze a reference for every (version, signal) that has none: from its configured file, or
    /// from its first `baseline_days` complete days of traffic.
    async fn complete_references(
        &self,
        days: &DayWindows,
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
            self.store
                .insert_reference(&StoredReference {
                    classifier_version: cv.clone(),
                    signal,
                    source: source.clone(),
                    n_eff,
                    hist: hist.clone(),
                    psi_edges: bins.edges().to_vec(),
                })
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
        let mut out = vec![];
        for (subject, by_day) in rows {
            for ((day, window), row) in by_day {
                out.push(DriftRecord { day_ms: day * DAY_MS, subject, window, row });
            }
        }
        self.store.write_drift(&out).await
    }

    /// Episodes from the daily statuses → `tw_alerts`, the firing gauge and the webhooks.
    async fn update_alerts(
        &self,
        rows: &BTreeMap<Subject, BTreeMap<(i64, &'static str), DriftRow>>,
        since_ms: i64,
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
            notified += self.store_episodes(DRIFT_KIND, &label, &eps, since_ms).await?;
        }
        Ok((firing, notified))
    }

    /// Upsert episodes; drop stored ones that re-evaluation no longer produces; queue the
    /// transitions the webhooks have not been given yet in the outbox (same transaction as the
    /// upsert) and wake the delivery tasks. Returns the new transitions.
    pub async fn store_episodes(
        &self,
        kind: &str,
        subject: &str,
        eps: &[Episode],
        since_ms: i64,
    ) -> anyhow::Result<usize> {
        let ids: Vec<String> = eps.iter().map(|e| e.id.clone()).collect();
        self.store.retain_episodes(kind, subject, &ids, since_ms).await?;
        let mut sent = 0;
        let webhooks = self.webhooks.as_ref().map_or(&[][..], |w| w.keys());
        for e in eps {
            let transition = format!("{}:{}", e.state.as_str(), e.severity.as_str());
            let notification = serde_json::to_string(&Notification::for_episode(e))?;
            if !self.store.upsert_episode(kind, subject, e, &transition, webhooks, &notification).await? {
                continue;
            }
            tracing::warn!(
                kind,
                subject,
                severity = e.severity.as_str(),
                state = e.state.as_str(),
                value = e.value,
                threshold = e.threshold,
                "alert"
            );
            sent += 1;
        }
        if let (Some(w), true) = (&self.webhooks, sent > 0) {
            w.wake();
        }
        Ok(sent)
    }
}

/// Mean threshold in force per (classifier_version, router) and day, from the drift windows of the
/// routers' own confidence signals.
fn thresholds_of(days: &DayWindows) -> BTreeMap<router_eval::pass::Subject, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<router_eval::pass::Subject, BTreeMap<i64, f64>> = BTreeMap::new();
    for ((cv, router, signal), by_day) in days {
        if *signal == Signal::RescoreScore {
            continue;
        }
        for (day, w) in by_day {
            if w.threshold_n > 0 {
                out.entry((cv.clone(), router.clone()))
                    .or_default()
                    .insert(*day, w.threshold_sum / w.threshold_n as f64);
            }
        }
    }
    out
}

fn fmt_day(d: Option<chrono::NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// Evaluate every day of every subject, daily and rolling 7-day windows.
pub fn evaluate_all(
    cfg: &DriftConfig,
    refs: &HashMap<(String, Signal), Reference>,
    days: &DayWindows,
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
