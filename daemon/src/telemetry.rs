//! Prometheus metrics of the daemon itself, on a private registry. Handles for labelled series
//! are resolved once and cached: `with_label_values` takes a lock per call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::decode::RejectReason;

pub struct Telemetry {
    pub registry: Registry,
    /// `tierwatch_events_consumed_total{topic}`: messages read from Kafka and committed.
    consumed: IntCounterVec,
    consumed_cache: LabelCache,
    /// `tierwatch_events_rejected_total{topic,reason}`: messages dead-lettered (SPEC §2).
    rejected: IntCounterVec,
    rejected_cache: LabelCache,
    /// `tierwatch_events_duplicate_total`: events whose event_id was already applied.
    pub duplicates: IntCounter,
    /// `tierwatch_orphans_total{kind}`: outcomes whose decision never arrived in time.
    orphans: IntCounterVec,
    /// `tierwatch_cost_unknown_total`: null costs the price table could not derive.
    pub cost_unknown: IntCounter,
    /// `tierwatch_feedback_without_score_total`: CSAT / HUMAN_REVIEW feedback with a null score.
    pub feedback_without_score: IntCounter,
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
    pub watermark_seconds: IntGauge,
    /// `tierwatch_alert_firing{kind,subject}`: 1 while an alert episode is firing.
    alert_firing: IntGaugeVec,
    /// `tierwatch_drift_missing_reference{classifier_version}`: 1 while a classifier version has
    /// traffic but no reference (never silently compared with another version's).
    missing_reference: IntGaugeVec,
    /// `tierwatch_rescore_*`: the rescoring worker pool and its model reloads.
    pub rescore: RescoreMetrics,
    ready: AtomicBool,
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
        }
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
        let consumer_errors = IntCounterVec::new(
            Opts::new("tierwatch_consumer_errors_total", "Errors reported by the Kafka consumer, by kind"),
            &["kind"],
        )
        .expect("static metric definition");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric definition");
        let t = Telemetry {
            duplicates: counter(
                "tierwatch_events_duplicate_total",
                "Events ignored as duplicates of an applied event_id",
            ),
            cost_unknown: counter("tierwatch_cost_unknown_total", "Null costs the price table could not derive"),
            feedback_without_score: counter(
                "tierwatch_feedback_without_score_total",
                "CSAT or HUMAN_REVIEW feedback without a score",
            ),
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
            watermark_seconds: gauge("tierwatch_watermark_seconds", "Min event-time watermark over owned partitions"),
            alert_firing,
            missing_reference,
            rescore: RescoreMetrics::new(),
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
            Box::new(t.feedback_without_score.clone()),
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
        ];
        collectors.extend(t.rescore.collectors());
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
    }

    pub fn orphans(&self, counts: &HashMap<&'static str, i64>) {
        for (kind, n) in counts {
            self.orphans.with_label_values(&[kind]).inc_by(*n as u64);
        }
    }

    pub fn set_alert_firing(&self, kind: &str, subject: &str, firing: bool) {
        self.alert_firing.with_label_values(&[kind, subject]).set(firing as i64);
    }

    pub fn drift_missing_reference(&self, classifier_version: &str) {
        let g = self.missing_reference.with_label_values(&[classifier_version]);
        if g.get() == 0 {
            tracing::warn!(classifier_version, "classifier version has traffic but no drift reference yet");
        }
        g.set(1);
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
