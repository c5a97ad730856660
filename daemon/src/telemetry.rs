//! Prometheus metrics of the daemon itself, on a private registry. Handles for labelled series
//! are resolved once and cached: `with_label_values` takes a lock per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use serde::Serialize;

use crate::decode::RejectReason;
use crate::join::{JoinReject, CAPPED_DIMENSIONS};
use crate::store::error::StoreErrorKind;

pub struct Telemetry {
    pub registry: Registry,
    /// `tierwatch_events_consumed_total{topic}`: messages read from Kafka and committed.
    consumed: IntCounterVec,
    consumed_cache: LabelCache,
    /// `tierwatch_events_rejected_total{topic,reason}`: messages dead-lettered (docs/contract.md#bad-input).
    rejected: IntCounterVec,
    rejected_cache: LabelCache,
    /// `tierwatch_events_duplicate_total`: events whose event_id was already applied.
    pub duplicates: IntCounter,
    /// `tierwatch_orphans_total{kind}`: outcomes whose decision never arrived in time.
    orphans: IntCounterVec,
    /// `tierwatch_cost_unknown_total`: null costs the price table could not derive.
    pub cost_unknown: IntCounter,
    /// `tierwatch_batches_committed_total`: transactions committed.
    pub batches: IntCounter,
    /// `tierwatch_commit_failures_total`: commits that failed (retried) or were fenced.
    pub commit_failures: IntCounter,
    /// `tierwatch_fenced_total`: commits refused because another owner wrote the partition.
    pub fenced: IntCounter,
    /// `tierwatch_consumer_errors_total{kind}`: errors the Kafka consumer reported (broker
    /// down, authentication, fetch, rebalance…), by librdkafka error kind.
    consumer_errors: IntCounterVec,
    /// `tierwatch_partition_restore_failures_total`: attempts to load or restore a partition's
    /// stored state that failed (retried; readiness is off meanwhile).
    pub restore_failures: IntCounter,
    /// `tierwatch_open_conversations`: conversations held in join state.
    pub open_conversations: IntGauge,
    /// `tierwatch_pending_outcomes`: feedback/tickets waiting for their decision.
    pub pending_outcomes: IntGauge,
    /// `tierwatch_assigned_partitions`: partitions this instance owns.
    pub assigned_partitions: IntGauge,
    /// `tierwatch_watermark_seconds`: minimum event-time watermark over owned partitions.
    /// `tierwatch_event_time_lag_seconds` (wall clock − this, computed at scrape time; no series
    /// until a watermark exists) is registered with it.
    pub watermark_seconds: IntGauge,
    /// `tierwatch_alert_firing{kind,subject}`: 1 while an alert episode is firing. Only firing
    /// subjects have a series: one is removed when its alert resolves or the evaluation no longer
    /// knows its subject.
    alert_firing: IntGaugeVec,
    /// The (kind, subject) series of `alert_firing` that exist, and those set in the current pass.
    alert_series: std::sync::Mutex<AlertSeries>,
    /// `tierwatch_drift_missing_reference{classifier_version}`: 1 while a classifier version has
    /// traffic but no reference (never silently compared with another version's). A version's
    /// series is removed once it has a reference or no traffic in the evaluated days.
    missing_reference: IntGaugeVec,
    missing_reference_versions: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// `tierwatch_dimension_values_capped_total{dimension}`: decisions whose value of a dimension
    /// was beyond the partition's cap and grouped as `__other__`.
    dimension_capped: Vec<IntCounter>,
    /// `tierwatch_rescore_*`: the rescoring worker pool and its model reloads.
    pub rescore: RescoreMetrics,
    /// `tierwatch_alert_webhook_deliveries_total{result}`: alert webhook posts by result.
    pub webhooks: WebhookMetrics,
    /// `tierwatch_consumer_lag_messages{topic,partition}`: high watermark − committed position
    /// of each owned topic-partition whose both ends are known; a partition's series go when it
    /// is revoked.
    consumer_lag: IntGaugeVec,
    lag_series: std::sync::Mutex<std::collections::BTreeSet<(String, i32)>>,
    /// The pipeline's per-batch timings and sizes.
    pub batch: BatchMetrics,
    /// `tierwatch_last_commit_timestamp_seconds`: wall-clock time (Unix seconds) of the last
    /// committed batch (message batches and watermark-only commits alike); 0 before the first.
    pub last_commit: Gauge,
    /// `tierwatch_evaluator_pass_seconds`: duration of evaluator passes this instance ran (held
    /// the evaluation lock), failed ones included.
    pub evaluator_pass: Histogram,
    /// `tierwatch_evaluator_last_success_timestamp_seconds`: wall-clock time (Unix seconds) of
    /// this instance's last evaluator pass that completed; 0 before the first (and on instances
    /// that never hold the evaluation lock: alert on the maximum over instances).
    pub evaluator_last_success: Gauge,
    /// `tierwatch_store_errors_total{class}`: failed store calls by class.
    pub store_errors: StoreErrors,
    ready: AtomicBool,
}

/// Timings and sizes of the pipeline's batches (observed once per batch, never per event).
#[derive(Clone)]
pub struct BatchMetrics {
    /// `tierwatch_batch_commit_seconds`: duration of one store commit attempt (one transaction:
    /// join state, aggregates, dead letters and offsets), failed attempts included.
    pub commit_seconds: Histogram,
    /// `tierwatch_batch_events`: messages in a committed batch (batches with at least one message).
    pub events: Histogram,
    /// `tierwatch_batch_stage_seconds{stage="decode"}`: decoding and validating a batch's messages.
    pub decode_seconds: Histogram,
    /// `tierwatch_batch_stage_seconds{stage="join"}`: applying a batch's events to the join state,
    /// advancing watermarks, releasing and expiring (everything between decoding and the commit
    /// but the source's high-watermark look-ups).
    pub join_seconds: Histogram,
    stages: HistogramVec,
}

impl BatchMetrics {
    fn new() -> Self {
        let buckets = |start: f64, factor: f64, n: usize| {
            prometheus::exponential_buckets(start, factor, n).expect("static buckets")
        };
        let histogram = |name: &str, help: &str, b: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(b)).expect("static metric definition")
        };
        let stages = HistogramVec::new(
            HistogramOpts::new(
                "tierwatch_batch_stage_seconds",
                "Time a batch spends in a pipeline stage (decode, join)",
            )
            // 10 µs … 2.6 s
            .buckets(buckets(1e-5, 4.0, 10)),
            &["stage"],
        )
        .expect("static metric definition");
        BatchMetrics {
            // 1 ms … 16 s
            commit_seconds: histogram(
                "tierwatch_batch_commit_seconds",
                "Duration of one batch commit attempt to the store",
                buckets(0.001, 2.0, 15),
            ),
            // 1 … 16384 messages
            events: histogram("tierwatch_batch_events", "Messages per committed batch", buckets(1.0, 4.0, 8)),
            decode_seconds: stages.with_label_values(&["decode"]),
            join_seconds: stages.with_label_values(&["join"]),
            stages,
        }
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.commit_seconds.clone()), Box::new(self.events.clone()), Box::new(self.stages.clone())]
    }
}

/// `tierwatch_store_errors_total{class}`: store calls that failed, by the class of their error
/// (`transient`: unavailable, retried; `bad_data`: the store refused a value; `fatal`: anything
/// else). Counted where the error is handled: batch commits, partition loads, evaluator passes,
/// the alert outbox, the rescorer's writes and reads, retention deletes.
#[derive(Clone)]
pub struct StoreErrors {
    by_class: IntCounterVec,
    counters: [IntCounter; 3],
}

impl StoreErrors {
    /// Unregistered counters (registered by [`Telemetry::new`]; tests may use them bare).
    pub fn new() -> Self {
        let by_class = IntCounterVec::new(
            Opts::new(
                "tierwatch_store_errors_total",
                "Failed store calls, by error class (transient, bad_data, fatal)",
            ),
            &["class"],
        )
        .expect("static metric definition");
        let counters = StoreErrorKind::ALL.map(|k| by_class.with_label_values(&[k.as_str()]));
        StoreErrors { by_class, counters }
    }

    /// Count one failed store call of `kind`.
    pub fn count(&self, kind: StoreErrorKind) {
        let i = StoreErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(2);
        self.counters[i].inc();
    }

    /// Count one failed store call that returned an `anyhow::Error` (classified by its chain).
    pub fn count_error(&self, error: &anyhow::Error) {
        self.count(StoreErrorKind::of_error(error));
    }

    /// The count of one class.
    pub fn get(&self, kind: StoreErrorKind) -> u64 {
        let i = StoreErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(2);
        self.counters[i].get()
    }
}

impl Default for StoreErrors {
    fn default() -> Self {
        Self::new()
    }
}

/// `tierwatch_event_time_lag_seconds`, computed when scraped from the watermark gauge, so that it
/// keeps growing while the pipeline is stuck. No series while the watermark is unknown (0): a
/// lag against the epoch would be meaningless.
struct EventTimeLag {
    watermark: IntGauge,
    desc: Desc,
}

const EVENT_TIME_LAG: &str = "tierwatch_event_time_lag_seconds";
const EVENT_TIME_LAG_HELP: &str = "Wall clock minus the event-time watermark (absent before the first watermark)";

impl EventTimeLag {
    fn new(watermark: IntGauge) -> Self {
        let desc = Desc::new(EVENT_TIME_LAG.into(), EVENT_TIME_LAG_HELP.into(), vec![], HashMap::new())
            .expect("static metric definition");
        EventTimeLag { watermark, desc }
    }

    /// The lag at wall-clock time `now_s` (Unix seconds); None without a watermark.
    fn lag_at(&self, now_s: f64) -> Option<f64> {
        let wm = self.watermark.get();
        (wm > 0).then_some(now_s - wm as f64)
    }
}

impl Collector for EventTimeLag {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(lag) = self.lag_at(unix_now_seconds()) else { return vec![] };
        match Gauge::new(EVENT_TIME_LAG, EVENT_TIME_LAG_HELP) {
            Ok(g) => {
                g.set(lag);
                g.collect()
            }
            Err(_) => vec![],
        }
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Metrics of the rescoring pool (`crate::rescore::pool`), handles resolved once.
#[derive(Clone)]
pub struct RescoreMetrics {
    /// `tierwatch_rescore_shed_total`: jobs refused because the queue was full.
    pub shed: IntCounter,
    /// `tierwatch_rescore_scored_total`: jobs scored successfully (failed batches are logged).
    pub scored: IntCounter,
    /// `tierwatch_rescore_queue_depth`: jobs waiting for a worker.
    pub queue_depth: IntGauge,
    /// `tierwatch_rescore_model_reloads_total{result="ok"}`.
    pub reloads_ok: IntCounter,
    /// `tierwatch_rescore_model_reloads_total{result="error"}`: the old model kept serving.
    pub reloads_error: IntCounter,
    /// `tierwatch_rescore_batch_seconds`: featurize + inference time of one worker batch.
    pub batch_seconds: Histogram,
    reloads: IntCounterVec,
    /// Failed writes of results and reads of unscored samples (`tierwatch_store_errors_total`,
    /// registered by [`Telemetry::new`]).
    pub store_errors: StoreErrors,
}

impl RescoreMetrics {
    /// Unregistered metrics (registered by [`Telemetry::new`]; tests may use them bare).
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new("tierwatch_rescore_model_reloads_total", "Rescorer model reloads, by result (ok, error)"),
            &["result"],
        )
        .expect("static metric definition");
        // Batches of 1–256 queries at tens of µs each: 50 µs … ~100 ms.
        let buckets = prometheus::exponential_buckets(5e-5, 2.0, 12).expect("static buckets");
        RescoreMetrics {
            shed: counter("tierwatch_rescore_shed_total", "Rescore jobs shed because the queue was full"),
            scored: counter("tierwatch_rescore_scored_total", "Rescore jobs scored"),
            queue_depth: IntGauge::new("tierwatch_rescore_queue_depth", "Rescore jobs waiting for a worker")
                .expect("static metric definition"),
            reloads_ok: reloads.with_label_values(&["ok"]),
            reloads_error: reloads.with_label_values(&["error"]),
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("tierwatch_rescore_batch_seconds", "Featurize + inference time of a rescore batch")
                    .buckets(buckets),
            )
            .expect("static metric definition"),
            reloads,
            store_errors: StoreErrors::new(),
        }
    }

    /// Count the rescorer's store errors on these (registered) counters.
    pub fn with_store_errors(mut self, store_errors: StoreErrors) -> Self {
        self.store_errors = store_errors;
        self
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.shed.clone()),
            Box::new(self.scored.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.batch_seconds.clone()),
        ]
    }
}

impl Default for RescoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Series of `tierwatch_alert_firing`, for removing stale ones.
#[derive(Default)]
struct AlertSeries {
    exported: std::collections::BTreeSet<(String, String)>,
    this_pass: std::collections::BTreeSet<(String, String)>,
}

/// Resolved label handles, so the hot path does not take the vector's lock per event.
#[derive(Default)]
struct LabelCache(std::sync::Mutex<HashMap<String, IntCounter>>);

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let consumed = IntCounterVec::new(
            Opts::new("tierwatch_events_consumed_total", "Messages consumed and committed, by topic"),
            &["topic"],
        )
        .expect("static metric definition");
        let rejected = IntCounterVec::new(
            Opts::new("tierwatch_events_rejected_total", "Messages rejected and dead-lettered, by topic and reason"),
            &["topic", "reason"],
        )
        .expect("static metric definition");
        let orphans = IntCounterVec::new(
            Opts::new("tierwatch_orphans_total", "Outcomes that never found their decision, by kind"),
            &["kind"],
        )
        .expect("static metric definition");
        let alert_firing = IntGaugeVec::new(
            Opts::new("tierwatch_alert_firing", "1 while an alert episode is firing, by kind and subject"),
            &["kind", "subject"],
        )
        .expect("static metric definition");
        let missing_reference = IntGaugeVec::new(
            Opts::new("tierwatch_drift_missing_reference", "1 while a classifier version has no drift reference"),
            &["classifier_version"],
        )
        .expect("static metric definition");
        let dimension_capped = IntCounterVec::new(
            Opts::new(
                "tierwatch_dimension_values_capped_total",
                "Decisions whose dimension value was beyond the partition's cap, grouped as __other__",
            ),
            &["dimension"],
        )
        .expect("static metric definition");
        let consumer_errors = IntCounterVec::new(
            Opts::new("tierwatch_consumer_errors_total", "Errors reported by the Kafka consumer, by kind"),
            &["kind"],
        )
        .expect("static metric definition");
        // The kinds the daemon names itself exist from the start, at 0 (librdkafka's error
        // codes appear when they first occur), so rates and dashboards have a series to show.
        for kind in ["rebalance", "offset_commit"] {
            consumer_errors.with_label_values(&[kind]);
        }
        for kind in crate::metrics::OrphanKind::ALL {
            orphans.with_label_values(&[kind.as_str()]);
        }
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "tierwatch_consumer_lag_messages",
                "Messages between the committed position and the high watermark, by owned topic-partition",
            ),
            &["topic", "partition"],
        )
        .expect("static metric definition");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric definition");
        let float_gauge = |name: &str, help: &str| Gauge::new(name, help).expect("static metric definition");
        let watermark_seconds = gauge("tierwatch_watermark_seconds", "Min event-time watermark over owned partitions");
        let store_errors = StoreErrors::new();
        let t = Telemetry {
            dimension_capped: CAPPED_DIMENSIONS.iter().map(|d| dimension_capped.with_label_values(&[*d])).collect(),
            alert_series: Default::default(),
            missing_reference_versions: Default::default(),
            duplicates: counter(
                "tierwatch_events_duplicate_total",
                "Events ignored as duplicates of an applied event_id",
            ),
            cost_unknown: counter("tierwatch_cost_unknown_total", "Null costs the price table could not derive"),
            batches: counter("tierwatch_batches_committed_total", "Batches committed to the store"),
            commit_failures: counter("tierwatch_commit_failures_total", "Batch commits that failed and were retried"),
            fenced: counter("tierwatch_fenced_total", "Commits refused because another owner wrote the partition"),
            consumer_errors,
            restore_failures: counter(
                "tierwatch_partition_restore_failures_total",
                "Failed attempts to load or restore a partition's stored state",
            ),
            open_conversations: gauge("tierwatch_open_conversations", "Conversations held in join state"),
            pending_outcomes: gauge("tierwatch_pending_outcomes", "Outcomes waiting for their decision"),
            assigned_partitions: gauge("tierwatch_assigned_partitions", "Partitions owned by this instance"),
            watermark_seconds,
            consumer_lag,
            lag_series: Default::default(),
            batch: BatchMetrics::new(),
            last_commit: float_gauge(
                "tierwatch_last_commit_timestamp_seconds",
                "Unix time of the last committed batch",
            ),
            evaluator_pass: Histogram::with_opts(
                HistogramOpts::new("tierwatch_evaluator_pass_seconds", "Duration of an evaluator pass")
                    // 10 ms … 11 min
                    .buckets(prometheus::exponential_buckets(0.01, 4.0, 9).expect("static buckets")),
            )
            .expect("static metric definition"),
            evaluator_last_success: float_gauge(
                "tierwatch_evaluator_last_success_timestamp_seconds",
                "Unix time of the last evaluator pass that completed on this instance",
            ),
            alert_firing,
            missing_reference,
            rescore: RescoreMetrics::new().with_store_errors(store_errors.clone()),
            webhooks: WebhookMetrics::new().with_store_errors(store_errors.clone()),
            store_errors,
            consumed,
            consumed_cache: Default::default(),
            rejected,
            rejected_cache: Default::default(),
            orphans,
            registry,
            ready: AtomicBool::new(false),
        };
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(t.consumed.clone()),
            Box::new(t.rejected.clone()),
            Box::new(t.orphans.clone()),
            Box::new(t.duplicates.clone()),
            Box::new(t.cost_unknown.clone()),
            Box::new(t.batches.clone()),
            Box::new(t.commit_failures.clone()),
            Box::new(t.fenced.clone()),
            Box::new(t.consumer_errors.clone()),
            Box::new(t.restore_failures.clone()),
            Box::new(t.open_conversations.clone()),
            Box::new(t.pending_outcomes.clone()),
            Box::new(t.assigned_partitions.clone()),
            Box::new(t.watermark_seconds.clone()),
            Box::new(t.alert_firing.clone()),
            Box::new(t.missing_reference.clone()),
            Box::new(dimension_capped),
            Box::new(t.consumer_lag.clone()),
            Box::new(EventTimeLag::new(t.watermark_seconds.clone())),
            Box::new(t.last_commit.clone()),
            Box::new(t.evaluator_pass.clone()),
            Box::new(t.evaluator_last_success.clone()),
            Box::new(t.store_errors.by_class.clone()),
        ];
        collectors.extend(t.batch.collectors());
        collectors.extend(t.rescore.collectors());
        collectors.extend(t.webhooks.collectors());
        for c in collectors {
            t.registry.register(c).expect("unique metric names");
        }
        Arc::new(t)
    }

    fn cached(vec: &IntCounterVec, cache: &LabelCache, labels: &[&str]) -> IntCounter {
        let key = labels.join("\u{1f}");
        let mut map = match cache.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(key).or_insert_with(|| vec.with_label_values(labels)).clone()
    }

    pub fn consumed(&self, topic: &str) -> IntCounter {
        Self::cached(&self.consumed, &self.consumed_cache, &[topic])
    }

    pub fn rejected(&self, topic: &str, reason: &str) -> IntCounter {
        Self::cached(&self.rejected, &self.rejected_cache, &[topic, reason])
    }

    /// Count one consumer error of `kind` (a small fixed set: librdkafka error codes).
    pub fn consumer_error(&self, kind: &str) {
        self.consumer_errors.with_label_values(&[kind]).inc();
    }

    /// Pre-create the rejected series of a topic (all reasons at 0).
    pub fn init_topic(&self, topic: &str) {
        self.consumed(topic);
        for r in RejectReason::ALL {
            self.rejected(topic, r.as_str());
        }
        for r in JoinReject::REASONS {
            self.rejected(topic, r);
        }
    }

    /// Add a batch's capped counts (indexed like [`CAPPED_DIMENSIONS`]).
    pub fn dimension_values_capped(&self, counts: &[u64; 5]) {
        for (c, n) in self.dimension_capped.iter().zip(counts) {
            c.inc_by(*n);
        }
    }

    pub fn orphans(&self, counts: &HashMap<&'static str, i64>) {
        for (kind, n) in counts {
            self.orphans.with_label_values(&[kind]).inc_by(*n as u64);
        }
    }

    fn alert_series(&self) -> std::sync::MutexGuard<'_, AlertSeries> {
        self.alert_series.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start an evaluation pass: subjects not set again before [`Self::finish_alert_pass`] are
    /// no longer known, and their series go.
    pub fn begin_alert_pass(&self) {
        self.alert_series().this_pass.clear();
    }

    /// A subject's state in this pass: a firing one has the series at 1; a resolved one has none.
    pub fn set_alert_firing(&self, kind: &str, subject: &str, firing: bool) {
        let mut series = self.alert_series();
        let key = (kind.to_string(), subject.to_string());
        if firing {
            self.alert_firing.with_label_values(&[kind, subject]).set(1);
            series.this_pass.insert(key.clone());
            series.exported.insert(key);
        } else if series.exported.remove(&key) {
            let _ = self.alert_firing.remove_label_values(&[kind, subject]);
        }
    }

    /// End a complete pass: remove the series of subjects the pass did not evaluate.
    pub fn finish_alert_pass(&self) {
        let mut series = self.alert_series();
        let AlertSeries { exported, this_pass } = &mut *series;
        for (kind, subject) in exported.iter().filter(|k| !this_pass.contains(*k)) {
            let _ = self.alert_firing.remove_label_values(&[kind.as_str(), subject.as_str()]);
        }
        exported.retain(|k| this_pass.contains(k));
    }

    /// The classifier versions that have traffic in the evaluated days but no reference: each
    /// gets a series at 1; versions no longer in the set lose theirs.
    pub fn set_missing_references(&self, versions: &std::collections::BTreeSet<String>) {
        let mut current = self.missing_reference_versions.lock().unwrap_or_else(|p| p.into_inner());
        for gone in current.difference(versions) {
            let _ = self.missing_reference.remove_label_values(&[gone.as_str()]);
        }
        for v in versions.difference(&current) {
            tracing::warn!(classifier_version = %v, "classifier version has traffic but no drift reference yet");
        }
        for v in versions {
            self.missing_reference.with_label_values(&[v.as_str()]).set(1);
        }
        current.clone_from(versions);
    }

    /// The consumer lag of every owned topic-partition whose lag is known, as (topic,
    /// partition, lag): each gets its series; series of topic-partitions not listed (revoked, or
    /// no longer known) are removed. Called once per batch.
    pub fn set_consumer_lag(&self, lags: &[(&str, i32, i64)]) {
        let mut exported = self.lag_series.lock().unwrap_or_else(|p| p.into_inner());
        let now: std::collections::BTreeSet<(String, i32)> =
            lags.iter().map(|(t, p, _)| ((*t).to_string(), *p)).collect();
        for (topic, partition) in exported.difference(&now) {
            let _ = self.consumer_lag.remove_label_values(&[topic.as_str(), &partition.to_string()]);
        }
        for (topic, partition, lag) in lags {
            self.consumer_lag.with_label_values(&[*topic, &partition.to_string()]).set(*lag);
        }
        *exported = now;
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// `tierwatch_alert_webhook_deliveries_total{result}`: webhook posts by result, summed over all
/// webhooks (one notification to two webhooks counts twice). Results: `delivered` (a 2xx for an
/// outbox notification), `rejected` (a non-retryable answer: the notification is given up),
/// `retried` (a failed attempt that will be retried), `resent` and `resend_failed` (periodic
/// re-posts of the firing alerts to Alertmanager webhooks, one per post).
#[derive(Clone)]
pub struct WebhookMetrics {
    pub(crate) deliveries: prometheus::IntCounterVec,
    pub(crate) delivered: prometheus::IntCounter,
    pub(crate) rejected: prometheus::IntCounter,
    pub(crate) retried: prometheus::IntCounter,
    pub(crate) resent: prometheus::IntCounter,
    pub(crate) resend_failed: prometheus::IntCounter,
    /// Failed outbox reads and writes (`tierwatch_store_errors_total`, registered by `Telemetry`).
    pub(crate) store_errors: StoreErrors,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Unregistered metrics (`Telemetry::new` registers them; tests may use them bare).
    pub fn new() -> Self {
        let deliveries = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "tierwatch_alert_webhook_deliveries_total",
                "Alert webhook posts by result (delivered, rejected, retried, resent, resend_failed)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let get = |r: &str| deliveries.with_label_values(&[r]);
        WebhookMetrics {
            delivered: get("delivered"),
            rejected: get("rejected"),
            retried: get("retried"),
            resent: get("resent"),
            resend_failed: get("resend_failed"),
            deliveries,
            store_errors: StoreErrors::new(),
        }
    }

    /// Count the outbox's store errors on these (registered) counters.
    pub fn with_store_errors(mut self, store_errors: StoreErrors) -> Self {
        self.store_errors = store_errors;
        self
    }

    /// The collectors to register.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.deliveries.clone())]
    }

    /// The counters as numbers.
    pub fn stats(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.delivered.get(),
            rejected: self.rejected.get(),
            retried: self.retried.get(),
            resent: self.resent.get(),
            resend_failed: self.resend_failed.get(),
        }
    }
}

/// Delivery counters, summed over all webhooks: see [`WebhookMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Outbox notifications delivered (a 2xx answer).
    pub delivered: u64,
    /// Outbox notifications given up on (a non-retryable answer).
    pub rejected: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Periodic re-posts of the firing alerts that were accepted.
    pub resent: u64,
    /// Periodic re-posts that failed (the next one comes one interval later).
    pub resend_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(t: &Telemetry, name: &str) -> Vec<String> {
        t.render().lines().filter(|l| l.starts_with(name)).map(str::to_string).collect()
    }

    #[test]
    fn alert_series_of_resolved_and_unknown_subjects_are_removed() {
        let t = Telemetry::new();
        t.begin_alert_pass();
        for s in ["a", "b", "c"] {
            t.set_alert_firing("k", s, true);
        }
        t.set_alert_firing("k", "quiet", false);
        t.finish_alert_pass();
        assert_eq!(series(&t, "tierwatch_alert_firing{").len(), 3);
        // Next pass: a still fires, b resolved, c is no longer evaluated at all.
        t.begin_alert_pass();
        t.set_alert_firing("k", "a", true);
        t.set_alert_firing("k", "b", false);
        t.finish_alert_pass();
        assert_eq!(series(&t, "tierwatch_alert_firing{"), [r#"tierwatch_alert_firing{kind="k",subject="a"} 1"#]);
    }

    #[test]
    fn missing_reference_series_follow_the_current_set() {
        let t = Telemetry::new();
        t.set_missing_references(&["v1".to_string(), "v2".to_string()].into());
        assert_eq!(series(&t, "tierwatch_drift_missing_reference{").len(), 2);
        // v1 got its reference, v2 has no traffic left, v3 is new.
        t.set_missing_references(&["v3".to_string()].into());
        assert_eq!(
            series(&t, "tierwatch_drift_missing_reference{"),
            [r#"tierwatch_drift_missing_reference{classifier_version="v3"} 1"#]
        );
        t.set_missing_references(&Default::default());
        assert!(series(&t, "tierwatch_drift_missing_reference{").is_empty());
    }

    #[test]
    fn consumer_lag_series_follow_the_owned_partitions() {
        let t = Telemetry::new();
        t.set_consumer_lag(&[("routing", 0, 5), ("routing", 1, 0), ("tickets", 1, 7)]);
        let mut got = series(&t, "tierwatch_consumer_lag_messages{");
        got.sort();
        assert_eq!(
            got,
            [
                r#"tierwatch_consumer_lag_messages{partition="0",topic="routing"} 5"#,
                r#"tierwatch_consumer_lag_messages{partition="1",topic="routing"} 0"#,
                r#"tierwatch_consumer_lag_messages{partition="1",topic="tickets"} 7"#,
            ]
        );
        // Partition 1 revoked: its series go, partition 0's value moves.
        t.set_consumer_lag(&[("routing", 0, 2)]);
        assert_eq!(
            series(&t, "tierwatch_consumer_lag_messages{"),
            [r#"tierwatch_consumer_lag_messages{partition="0",topic="routing"} 2"#]
        );
        t.set_consumer_lag(&[]);
        assert!(series(&t, "tierwatch_consumer_lag_messages{").is_empty());
    }

    #[test]
    fn event_time_lag_is_absent_before_a_watermark_and_computed_at_scrape_time() {
        let t = Telemetry::new();
        assert!(series(&t, "tierwatch_event_time_lag_seconds").is_empty(), "{}", t.render());
        let now = unix_now_seconds();
        t.watermark_seconds.set(now as i64 - 3600);
        let line = series(&t, "tierwatch_event_time_lag_seconds ");
        let value: f64 = line[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!((3599.0..3700.0).contains(&value), "{line:?}");
        assert!(t.render().contains("# TYPE tierwatch_event_time_lag_seconds gauge"));
    }

    #[test]
    fn store_errors_are_counted_by_class() {
        let t = Telemetry::new();
        let out = t.render();
        for class in ["transient", "bad_data", "fatal"] {
            assert!(out.contains(&format!(r#"tierwatch_store_errors_total{{class="{class}"}} 0"#)), "{out}");
        }
        t.store_errors.count(StoreErrorKind::BadData);
        let io = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("committing");
        t.store_errors.count_error(&io);
        t.store_errors.count_error(&anyhow::anyhow!("no database error in the chain"));
        // The rescorer counts on the same (registered) counters.
        t.rescore.store_errors.count(StoreErrorKind::Transient);
        assert_eq!(t.store_errors.get(StoreErrorKind::Transient), 2);
        assert_eq!(t.store_errors.get(StoreErrorKind::BadData), 1);
        assert_eq!(t.store_errors.get(StoreErrorKind::Fatal), 1);
        assert!(t.render().contains(r#"tierwatch_store_errors_total{class="transient"} 2"#));
    }

    #[test]
    fn batch_and_evaluator_metrics_are_exported_in_base_units() {
        let t = Telemetry::new();
        t.batch.commit_seconds.observe(0.004);
        t.batch.events.observe(500.0);
        t.batch.decode_seconds.observe(0.0001);
        t.batch.join_seconds.observe(0.0002);
        t.evaluator_pass.observe(1.5);
        t.last_commit.set(1.7e9);
        let out = t.render();
        for line in [
            "tierwatch_batch_commit_seconds_count 1",
            r#"tierwatch_batch_commit_seconds_bucket{le="0.004"} 1"#,
            r#"tierwatch_batch_events_bucket{le="256"} 0"#,
            r#"tierwatch_batch_events_bucket{le="1024"} 1"#,
            r#"tierwatch_batch_stage_seconds_count{stage="decode"} 1"#,
            r#"tierwatch_batch_stage_seconds_count{stage="join"} 1"#,
            "tierwatch_evaluator_pass_seconds_sum 1.5",
            "tierwatch_last_commit_timestamp_seconds 1700000000",
            "tierwatch_evaluator_last_success_timestamp_seconds 0",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}:\n{out}");
        }
        // Every family has a help string.
        for family in t.registry.gather() {
            assert!(!family.help().is_empty(), "{} has no help", family.name());
        }
    }

    #[test]
    fn every_metric_is_documented() {
        let t = Telemetry::new();
        // Families without a series are not exported: give the dynamic ones one.
        t.set_alert_firing("k", "s", true);
        t.set_missing_references(&["v".to_string()].into());
        t.set_consumer_lag(&[("routing", 0, 1)]);
        t.watermark_seconds.set(1);
        t.init_topic("routing");
        // Read at run time, not embedded: the release build (and its Docker context) has no docs/.
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
            .expect("docs/metrics.md");
        let families = t.registry.gather();
        assert!(families.len() >= 32, "{:?}", families.iter().map(|f| f.name().to_string()).collect::<Vec<_>>());
        for f in families {
            assert!(doc.contains(&format!("| `{}` |", f.name())), "{} is not in docs/metrics.md", f.name());
        }
    }

    #[test]
    fn capped_counter_and_join_reject_reasons_are_exported() {
        let t = Telemetry::new();
        t.init_topic("routing");
        t.dimension_values_capped(&[0, 5, 0, 0, 1]);
        let out = t.render();
        assert!(out.contains(r#"tierwatch_dimension_values_capped_total{dimension="model"} 5"#), "{out}");
        assert!(out.contains(r#"tierwatch_dimension_values_capped_total{dimension="tier"} 0"#));
        assert!(out.contains(r#"tierwatch_events_rejected_total{reason="conversation_turn_limit",topic="routing"} 0"#));
        assert!(out.contains(r#"tierwatch_orphans_total{kind="resolved_without_opened"} 0"#), "{out}");
        assert!(out.contains(r#"tierwatch_consumer_errors_total{kind="rebalance"} 0"#), "{out}");
    }
}
