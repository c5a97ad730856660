//! Kafka source: one consumer group over the three co-partitioned topics, positions restored
//! from the store on every assignment.
//!
//! The consumer runs on a dedicated OS thread (not a tokio worker), so the rebalance callback
//! may block on the store without stalling the runtime: it loads each newly assigned partition's
//! snapshot (offsets + join state, one snapshot) and assigns at exactly those offsets. Kafka's
//! own committed offsets are written after each database commit for lag visibility only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::consumer::CommitMode;
use rdkafka::message::Message;

use super::connect::{wait_connected, ConnectWatch};
use super::{PayloadLimit, Polled, RebalanceEvent, Source};
use crate::config::Config;
use crate::store::{PartitionSnapshot, Store};
use crate::telemetry::Telemetry;

pub struct SourceContext<S: Store + 'static> {
    store: Arc<S>,
    runtime: tokio::runtime::Handle,
    topics: Vec<String>,
    auto_offset_reset: Offset,
    events: Mutex<Vec<RebalanceEvent>>,
    /// SASL/TLS failures seen by librdkafka, and de-duplication of its log lines.
    connect: ConnectWatch,
    /// Bumped by every ownership change: messages read before it are stale.
    epoch: AtomicU64,
    telemetry: Arc<Telemetry>,
    shutdown: Arc<AtomicBool>,
}

impl<S: Store + 'static> SourceContext<S> {
    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        match self.events.lock() {
            Ok(mut e) => std::mem::take(&mut *e),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    fn push(&self, ev: RebalanceEvent) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match self.events.lock() {
            Ok(mut e) => e.push(ev),
            Err(p) => p.into_inner().push(ev),
        }
    }

    /// Load a partition snapshot, retrying until it loads: assigning without knowing the stored
    /// offsets would break exactly-once, and leaving the partition unassigned would leave it
    /// silently idle. Every failure is counted (`tierwatch_partition_restore_failures_total`)
    /// and turns readiness off (the next commit turns it on again). `None` once shutdown is
    /// requested: nothing is assigned then.
    fn load(&self, partition: i32) -> Option<PartitionSnapshot> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        load_retrying(&self.runtime, &*self.store, partition, &topics, &self.telemetry, &self.shutdown)
    }

    /// The ownership epoch (see `push`).
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The `kind` label of a consumer error: librdkafka's error code name.
fn error_kind(e: &rdkafka::error::KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "other".to_string(),
    }
}

/// Load a partition snapshot, retrying every failure with backoff until it loads or shutdown
/// is requested (then `None`). Shared by the rebalance callback and the pipeline's reload.
pub fn load_retrying<S: Store>(
    runtime: &tokio::runtime::Handle,
    store: &S,
    partition: i32,
    topics: &[&str],
    telemetry: &Telemetry,
    shutdown: &AtomicBool,
) -> Option<PartitionSnapshot> {
    let mut delay = Duration::from_millis(200);
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return None;
        }
        match block_on_unless_shutdown(runtime, store.load_partition(partition, topics), shutdown)? {
            Ok(s) => return Some(s),
            Err(e) => {
                telemetry.restore_failures.inc();
                telemetry.store_errors.count(e.kind());
                telemetry.set_ready(false);
                tracing::error!(partition, error = %e, "loading partition state failed; retrying");
                sleep_unless_shutdown(delay, shutdown);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl<S: Store + 'static> SourceContext<S> {
    /// The concrete offset `auto_offset_reset` means for a topic-partition right now (the low or
    /// the high watermark), so it can be stored: a symbolic `latest` resolved again after a
    /// restart would skip what arrived in between. None when the broker does not answer; the
    /// symbolic policy applies then and nothing is stored until a message is consumed.
    fn resolve_start(&self, consumer: &BaseConsumer<Self>, topic: &str, partition: i32) -> Option<i64> {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok((low, high)) => {
                let start = if self.auto_offset_reset == Offset::End { high } else { low };
                tracing::info!(topic, partition, start, "no stored offset; starting at a resolved offset");
                Some(start)
            }
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "could not resolve the start offset; using the reset policy");
                None
            }
        }
    }
}

impl<S: Store + 'static> ClientContext for SourceContext<S> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.connect.log(level, fac, log_message);
    }

    /// Client-level errors (all brokers down, authentication, …): counted, then a startup
    /// SASL/TLS failure is kept for one clear error and anything else logged once.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.telemetry.consumer_error(&error_kind(&error));
        self.connect.error(error, reason);
    }
}

/// How long a store call may still run once shutdown is requested: a healthy call finishes well
/// within it, one waiting on an unreachable store is abandoned.
pub const ABANDON_AFTER_SHUTDOWN: Duration = Duration::from_secs(2);

/// Run a store call to completion, unless shutdown has been requested for
/// [`ABANDON_AFTER_SHUTDOWN`] meanwhile (`None`: the call is dropped; an uncommitted
/// transaction rolls back, and whether a commit dropped in flight landed or not, the store
/// stays consistent with its own offsets).
pub fn block_on_unless_shutdown<F: std::future::Future>(
    runtime: &tokio::runtime::Handle,
    call: F,
    shutdown: &AtomicBool,
) -> Option<F::Output> {
    runtime.block_on(async {
        tokio::select! {
            r = call => Some(r),
            _ = async {
                while !shutdown.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(ABANDON_AFTER_SHUTDOWN).await;
            } => None,
        }
    })
}

/// Sleep up to `d`, waking early (within 50 ms) once shutdown is requested.
pub fn sleep_unless_shutdown(d: Duration, shutdown: &AtomicBool) {
    let until = Instant::now() + d;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

impl<S: Store + 'static> ConsumerContext for SourceContext<S> {
    // Overridden whole (not pre/post_rebalance) so that we assign once, at our own offsets.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                parts.dedup();
                let Some(snaps) = parts.iter().map(|p| self.load(*p)).collect::<Option<Vec<PartitionSnapshot>>>()
                else {
                    tracing::warn!(partitions = ?parts, "shutdown while loading partition state; not assigning");
                    return;
                };
                let mut assign = TopicPartitionList::new();
                let mut resolved = vec![];
                for e in tpl.elements() {
                    let snap = snaps.iter().find(|s| s.partition == e.partition());
                    let offset = match snap.and_then(|s| s.offsets.get(e.topic())) {
                        Some(o) => Offset::Offset(*o),
                        None => match self.resolve_start(consumer, e.topic(), e.partition()) {
                            Some(o) => {
                                resolved.push(RebalanceEvent::StartResolved {
                                    partition: e.partition(),
                                    topic: e.topic().to_string(),
                                    offset: o,
                                });
                                Offset::Offset(o)
                            }
                            None => self.auto_offset_reset,
                        },
                    };
                    if let Err(err) = assign.add_partition_offset(e.topic(), e.partition(), offset) {
                        tracing::error!(%err, topic = e.topic(), partition = e.partition(), "bad offset");
                    }
                }
                tracing::info!(partitions = ?parts, "assigned");
                self.push(RebalanceEvent::Assigned(snaps));
                for ev in resolved {
                    self.push(ev);
                }
                if let Err(e) = consumer.assign(&assign) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                parts.dedup();
                tracing::info!(partitions = ?parts, "revoked");
                // The pipeline commits every batch before polling again, so nothing is in flight.
                self.push(RebalanceEvent::Revoked(parts));
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                self.telemetry.consumer_error("rebalance");
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let _ = consumer.unassign();
                let all = tpl.elements().iter().map(|e| e.partition()).collect();
                self.push(RebalanceEvent::Revoked(all));
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.telemetry.consumer_error("offset_commit");
            // Only lag visibility depends on this; the authoritative offsets are in the store.
            tracing::debug!(error = %e, "committing offsets to Kafka failed");
        }
    }
}

pub type TwConsumer<S> = BaseConsumer<SourceContext<S>>;

/// Create the consumer (range assignor, no auto-commit) and subscribe to the three topics.
/// Consumer errors are counted in `telemetry`; loading partition state on assignment gives up
/// once `shutdown` is set.
pub fn create_consumer<S: Store + 'static>(
    cfg: &Config,
    store: Arc<S>,
    runtime: tokio::runtime::Handle,
    telemetry: Arc<Telemetry>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<TwConsumer<S>> {
    let topics =
        vec![cfg.topics.routing.name.clone(), cfg.topics.feedback.name.clone(), cfg.topics.tickets.name.clone()];
    let kafka = cfg.kafka()?;
    let reset = if kafka.auto_offset_reset == "latest" { Offset::End } else { Offset::Beginning };
    let ctx = SourceContext {
        store,
        runtime,
        topics: topics.clone(),
        auto_offset_reset: reset,
        events: Mutex::new(vec![]),
        connect: ConnectWatch::default(),
        epoch: AtomicU64::new(0),
        telemetry,
        shutdown,
    };
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &kafka.auto_offset_reset)
        .set("enable.partition.eof", "false")
        // range assigns partition p of every topic to the same member: the join needs that.
        .set("partition.assignment.strategy", "range")
        .set("client.id", "tierwatch")
        // A fetch waits for 64 KiB or 100 ms rather than returning each message as it arrives:
        // at a steady few thousand events/s, librdkafka's defaults (1 byte, 500 ms) kept its
        // broker thread re-fetching tiny responses, about 0.04 core; 100 ms is far inside the
        // daemon's freshness budget, and a backlog fills 64 KiB at once (BENCHMARKS.md, "Steady
        // state"). `[kafka.properties]` overrides both.
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in &kafka.properties {
        cc.set(k, v);
    }
    let consumer: TwConsumer<S> = cc.create_with_context(ctx).context("creating the Kafka consumer")?;
    // A wrong password or an untrusted certificate: one clear error now, not endless retries.
    wait_connected(&consumer, &consumer.context().connect, &kafka.brokers, &topics[0], CONNECT_BOUND)?;
    check_copartitioned(consumer.client(), &topics)?;
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs).context("subscribing to the topics")?;
    Ok(consumer)
}

/// How long startup waits for the cluster's first answer before the topic checks run.
const CONNECT_BOUND: Duration = Duration::from_secs(15);

/// The join needs the three topics to have the same partition count.
///
/// Checked by the daemon before it subscribes and by `tierwatch simulate --kafka` before it
/// produces, through any client (consumer or producer).
pub fn check_copartitioned<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topics: &[String],
) -> anyhow::Result<()> {
    let mut counts = BTreeMap::new();
    for t in topics {
        let md = client
            .fetch_metadata(Some(t), Duration::from_secs(15))
            .with_context(|| format!("fetching metadata of topic {t}"))?;
        let n = md
            .topics()
            .iter()
            .find(|mt| mt.name() == t)
            .filter(|mt| mt.error().is_none())
            .map(|mt| mt.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            bail!("topic {t} does not exist (or has no partitions); create the three topics with the same partition count");
        }
        counts.insert(t.clone(), n);
    }
    let distinct: std::collections::BTreeSet<_> = counts.values().collect();
    if distinct.len() > 1 {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        bail!(
            "topics are not co-partitioned ({}); the join needs the same partition count on all three topics",
            list.join(", ")
        );
    }
    Ok(())
}

/// How long a high watermark asked from the broker is trusted.
const ASK_HIGH_EVERY: Duration = Duration::from_secs(5);

/// The Kafka consumer as a pipeline [`Source`].
pub struct KafkaSource<S: Store + 'static> {
    consumer: TwConsumer<S>,
    topics: [String; 3],
    /// High watermarks asked from the broker where librdkafka had none cached.
    asked_high: HashMap<(usize, i32), (Instant, i64)>,
    limit: PayloadLimit,
    /// Messages read while holding (a commit being retried), with the ownership epoch they were
    /// read in; delivered first by `poll` unless ownership changed since.
    held: VecDeque<(u64, Polled)>,
    /// The epoch whose assignment is paused, while holding.
    paused: Option<u64>,
}

impl<S: Store + 'static> KafkaSource<S> {
    pub fn new(consumer: TwConsumer<S>, topics: [String; 3]) -> Self {
        Self {
            consumer,
            topics,
            asked_high: HashMap::new(),
            limit: PayloadLimit::UNLIMITED,
            held: VecDeque::new(),
            paused: None,
        }
    }

    /// Copy only the dead-letter prefix of messages above the payload limit.
    pub fn with_payload_limit(mut self, limit: PayloadLimit) -> Self {
        self.limit = limit;
        self
    }

    /// One message from the consumer (the length is checked before anything is copied);
    /// errors are counted and logged.
    fn poll_consumer(&mut self, timeout: Duration) -> Option<Polled> {
        match self.consumer.poll(timeout)? {
            Ok(m) => {
                let topic_idx = self.topics.iter().position(|t| t == m.topic())?;
                let (payload, len) = self.limit.copy(m.payload());
                Some(Polled {
                    topic_idx,
                    partition: m.partition(),
                    offset: m.offset(),
                    payload,
                    len,
                    broker_ts: m.timestamp().to_millis(),
                })
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => None,
            Err(e) => {
                self.consumer.context().telemetry.consumer_error(&error_kind(&e));
                tracing::warn!(error = %e, "consumer error");
                None
            }
        }
    }

    fn assignment_or_empty(&self) -> TopicPartitionList {
        self.consumer.assignment().unwrap_or_else(|_| TopicPartitionList::new())
    }
}

impl<S: Store + 'static> Source for KafkaSource<S> {
    fn poll(&mut self, timeout: Duration) -> Option<Polled> {
        let epoch = self.consumer.context().epoch();
        // Messages held from an older ownership are re-read from the stored offsets.
        self.held.retain(|(e, _)| *e == epoch);
        if let Some((_, m)) = self.held.pop_front() {
            return Some(m);
        }
        self.poll_consumer(timeout)
    }

    fn hold(&mut self, timeout: Duration) {
        let epoch = self.consumer.context().epoch();
        if self.paused != Some(epoch) {
            // Paused again after each rebalance: a new assignment starts unpaused.
            let tpl = self.assignment_or_empty();
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(error = %e, "pausing the assignment failed");
            }
            self.paused = Some(epoch);
        }
        // Polling serves heartbeats' companion duties (rebalance callbacks, max.poll.interval);
        // a message fetched before the pause took effect is kept for later.
        if let Some(m) = self.poll_consumer(timeout) {
            let epoch = self.consumer.context().epoch();
            self.held.push_back((epoch, m));
        }
    }

    fn release(&mut self) {
        if self.paused.take().is_some() {
            let tpl = self.assignment_or_empty();
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::error!(error = %e, "resuming the assignment failed");
            }
        }
    }

    fn take_events(&mut self) -> Vec<RebalanceEvent> {
        self.consumer.context().take_events()
    }

    fn high_watermark(&mut self, topic_idx: usize, partition: i32) -> Option<i64> {
        let topic = &self.topics[topic_idx];
        if let Some(h) = cached_high_watermark(&self.consumer, topic, partition) {
            return Some(h);
        }
        // librdkafka only caches a high watermark once it has fetched the partition, which for an
        // empty one may take long; ask the broker then (at most every few seconds), since an
        // unknown high watermark holds the partition's event time back.
        let key = (topic_idx, partition);
        let fresh = self.asked_high.get(&key).is_some_and(|(at, _)| at.elapsed() < ASK_HIGH_EVERY);
        if !fresh {
            match self.consumer.fetch_watermarks(topic, partition, Duration::from_millis(500)) {
                Ok((_, h)) => {
                    self.asked_high.insert(key, (Instant::now(), h));
                }
                Err(_) => {
                    self.asked_high.remove(&key);
                }
            }
        }
        self.asked_high.get(&key).map(|(_, h)| *h)
    }

    fn committed(&mut self, positions: &[(usize, i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (i, p, o) in positions {
            let _ = tpl.add_partition_offset(&self.topics[*i], *p, Offset::Offset(*o));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "Kafka offset commit (lag visibility only) failed");
            }
        }
    }

    fn seek(&mut self, topic_idx: usize, partition: i32, offset: Option<i64>) -> anyhow::Result<()> {
        let offset = offset.map(Offset::Offset).unwrap_or(Offset::Beginning);
        self.consumer.seek(&self.topics[topic_idx], partition, offset, Duration::from_secs(5))?;
        Ok(())
    }
}

/// librdkafka's cached high watermark of a topic-partition (`rd_kafka_get_watermark_offsets`,
/// which rust-rdkafka does not wrap); None while unknown.
fn cached_high_watermark<S: Store + 'static>(consumer: &TwConsumer<S>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the call only reads
    // librdkafka's cached state and writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
