//! The consume → decode → join → commit loop.
//!
//! One batch = the messages polled within `batch.max_wait_ms` (at most `batch.max_events`). The
//! batch is applied to the in-memory join state of its partitions, then committed with the
//! touched state, the aggregate deltas, the dead letters and the next offsets in one
//! transaction. Nothing is polled while a batch is uncommitted, so a rebalance never sees work in
//! flight; a failed commit is retried with the same content; a fenced partition (another owner
//! committed it) is reloaded from the store and re-read from its stored offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::decode::{Decoder, DecoderConfig};
use crate::event::{Event, Stream};
use crate::join::{JoinCounters, JoinSettings, PartitionJoin};
use crate::metrics::Deltas;
use crate::source::kafka::{RebalanceEvent, TwConsumer};
use crate::store::{CommitBatch, CommitOutcome, DeadLetter, PartitionCommit, PartitionSnapshot, Store};
use crate::telemetry::Telemetry;

/// How often partitions without new messages re-evaluate their watermark.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a high watermark asked from the broker is trusted.
const ASK_HIGH_EVERY: Duration = Duration::from_secs(5);

/// A message copied out of librdkafka's buffers.
struct Polled {
    topic_idx: usize,
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
    broker_ts: Option<i64>,
}

/// One owned partition: its join state and where each topic stands.
struct Owned {
    join: PartitionJoin,
    generation: i64,
    /// Next offset to apply, per topic index (None: nothing stored yet).
    next: [Option<i64>; 3],
    /// Max event time seen per topic, and whether that topic-partition is caught up.
    topic_max_ts: [Option<i64>; 3],
    at_eof: [bool; 3],
    /// High watermarks asked from the broker where librdkafka had none cached.
    asked_high: [Option<(Instant, i64)>; 3],
}

impl Owned {
    fn from_snapshot(s: PartitionSnapshot, topics: &[String; 3]) -> anyhow::Result<Self> {
        let join = PartitionJoin::restore(s.entries, s.watermark_ms)?;
        let next = [0, 1, 2].map(|i| s.offsets.get(&topics[i]).copied());
        Ok(Self {
            join,
            generation: s.generation,
            next,
            topic_max_ts: [None; 3],
            at_eof: [false; 3],
            asked_high: [None; 3],
        })
    }

    /// Event-time watermark: the slowest topic that still has data to deliver holds it back, so a
    /// backlog of decisions is never overtaken by its own feedback and tickets (which would turn
    /// them into false orphans). Caught-up topics do not hold it back.
    fn effective_watermark(&self) -> Option<i64> {
        let lagging: Vec<Option<i64>> = (0..3).filter(|&i| !self.at_eof[i]).map(|i| self.topic_max_ts[i]).collect();
        if lagging.is_empty() {
            self.topic_max_ts.iter().flatten().copied().max()
        } else if lagging.iter().any(Option::is_none) {
            None
        } else {
            lagging.into_iter().flatten().min()
        }
    }
}

pub struct Pipeline<S: Store + 'static> {
    store: Arc<S>,
    runtime: tokio::runtime::Handle,
    telemetry: Arc<Telemetry>,
    settings: JoinSettings,
    topics: [String; 3],
    decoders: [Decoder; 3],
    dead_letter_max_bytes: usize,
    max_events: usize,
    max_wait: Duration,
    owned: HashMap<i32, Owned>,
    shutdown: Arc<AtomicBool>,
}

/// Totals of a run, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub messages: u64,
    pub rejected: u64,
    pub batches: u64,
    /// Time spent decoding and joining (the in-process hot path).
    pub apply: Duration,
    /// Time spent in store commits (including retries).
    pub commit: Duration,
}

impl<S: Store + 'static> Pipeline<S> {
    pub fn new(
        cfg: &Config,
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        telemetry: Arc<Telemetry>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let t = &cfg.topics;
        let topics = [t.routing.name.clone(), t.feedback.name.clone(), t.tickets.name.clone()];
        let streams = [(Stream::Routing, &t.routing), (Stream::Feedback, &t.feedback), (Stream::Tickets, &t.tickets)];
        let decoders = streams.map(|(stream, tc)| {
            let mut dc = DecoderConfig::new(stream, tc.format);
            dc.confluent_schema_ids = tc.schema_ids.clone();
            dc.max_payload_bytes = cfg.limits.max_payload_bytes;
            dc.max_future_ms = (cfg.limits.max_future_hours * 3_600_000.0).round() as i64;
            Decoder::new(dc)
        });
        for topic in &topics {
            telemetry.init_topic(topic);
        }
        Self {
            store,
            runtime,
            telemetry,
            settings: JoinSettings::from_config(cfg),
            topics,
            decoders,
            dead_letter_max_bytes: cfg.limits.dead_letter_max_bytes,
            max_events: cfg.batch.max_events,
            max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
            owned: HashMap::new(),
            shutdown,
        }
    }

    fn topic_idx(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// Run until the shutdown flag is set; the batch in flight is committed before returning.
    pub fn run(&mut self, consumer: &TwConsumer<S>) -> anyhow::Result<RunStats> {
        let mut stats = RunStats::default();
        let mut batch: Vec<Polled> = Vec::with_capacity(self.max_events);
        let mut last_idle_check = Instant::now();
        // Subscribed and able to commit: ready, until a commit fails (see `commit`).
        self.telemetry.set_ready(true);
        while !self.shutdown.load(Ordering::Relaxed) {
            let deadline = Instant::now() + self.max_wait;
            while batch.len() < self.max_events {
                let now = Instant::now();
                if now >= deadline || self.shutdown.load(Ordering::Relaxed) {
                    break;
                }
                let polled = consumer.poll(deadline - now);
                self.handle_rebalances(consumer, &mut batch);
                match polled {
                    None => {}
                    Some(Ok(m)) => {
                        let Some(topic_idx) = self.topic_idx(m.topic()) else { continue };
                        batch.push(Polled {
                            topic_idx,
                            partition: m.partition(),
                            offset: m.offset(),
                            payload: m.payload().map(<[u8]>::to_vec),
                            broker_ts: m.timestamp().to_millis(),
                        });
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                }
            }
            self.handle_rebalances(consumer, &mut batch);
            if !batch.is_empty() || last_idle_check.elapsed() >= IDLE_CHECK {
                last_idle_check = Instant::now();
                let had_messages = !batch.is_empty();
                let (messages, rejected) = self.process(consumer, std::mem::take(&mut batch), &mut stats)?;
                stats.messages += messages;
                stats.rejected += rejected;
                stats.batches += had_messages as u64;
            }
            self.publish_gauges();
        }
        // A last pass for partitions whose watermark moved since the final batch (e.g. the other
        // topics caught up), so a graceful stop leaves no releasable outcome waiting.
        self.process(consumer, Vec::new(), &mut stats)?;
        tracing::info!(
            messages = stats.messages,
            batches = stats.batches,
            apply_s = stats.apply.as_secs_f64(),
            commit_s = stats.commit.as_secs_f64(),
            "pipeline stopped"
        );
        Ok(stats)
    }

    /// Whether each topic of a partition is caught up, from the high watermarks librdkafka
    /// cached with its last fetch (no network call). Unknown counts as not caught up.
    fn refresh_caught_up(&mut self, consumer: &TwConsumer<S>, partition: i32) {
        let Some(o) = self.owned.get_mut(&partition) else { return };
        for (i, topic) in self.topics.iter().enumerate() {
            // librdkafka only caches a high watermark once it has fetched the partition, which
            // for an empty one may take long; ask the broker then (at most every few seconds),
            // since an unknown high watermark holds the partition's event time back.
            let high = cached_high_watermark(consumer, topic, partition).or_else(|| {
                let fresh = o.asked_high[i].is_some_and(|(at, _)| at.elapsed() < ASK_HIGH_EVERY);
                if !fresh {
                    let asked = consumer.fetch_watermarks(topic, partition, Duration::from_millis(500)).ok();
                    o.asked_high[i] = asked.map(|(_, h)| (Instant::now(), h));
                }
                o.asked_high[i].map(|(_, h)| h)
            });
            o.at_eof[i] = match high {
                Some(high) => o.next[i].unwrap_or(0) >= high,
                None => false,
            };
            tracing::trace!(topic, partition, ?high, next = ?o.next[i], max_ts = ?o.topic_max_ts[i], "caught up check");
        }
    }

    fn handle_rebalances(&mut self, consumer: &TwConsumer<S>, batch: &mut Vec<Polled>) {
        for ev in consumer.context().take_events() {
            match ev {
                RebalanceEvent::Assigned(snaps) => {
                    for s in snaps {
                        let p = s.partition;
                        match Owned::from_snapshot(s, &self.topics) {
                            Ok(o) => {
                                self.owned.insert(p, o);
                            }
                            Err(e) => {
                                // Unreadable state would silently lose attributions: stop owning it.
                                tracing::error!(partition = p, error = %e, "join state does not deserialize");
                                self.owned.remove(&p);
                            }
                        }
                    }
                }
                RebalanceEvent::Revoked(parts) => {
                    let gone: HashSet<i32> = parts.into_iter().collect();
                    self.owned.retain(|p, _| !gone.contains(p));
                    batch.retain(|m| !gone.contains(&m.partition));
                }
            }
        }
        self.telemetry.assigned_partitions.set(self.owned.len() as i64);
    }

    /// Apply a batch and commit it. Returns (messages applied, messages rejected).
    fn process(
        &mut self,
        consumer: &TwConsumer<S>,
        batch: Vec<Polled>,
        stats: &mut RunStats,
    ) -> anyhow::Result<(u64, u64)> {
        let started = Instant::now();
        let mut per_part: BTreeMap<i32, PartWork> = BTreeMap::new();
        let mut counters = JoinCounters::default();
        for m in batch {
            let Some(owned) = self.owned.get_mut(&m.partition) else { continue };
            // Below the stored position: already applied by an earlier commit.
            if owned.next[m.topic_idx].is_some_and(|n| m.offset < n) {
                continue;
            }
            owned.next[m.topic_idx] = Some(m.offset + 1);
            let work = per_part.entry(m.partition).or_default();
            work.offsets.insert(m.topic_idx, m.offset + 1);
            work.messages[m.topic_idx] += 1;
            match self.decoders[m.topic_idx].decode(m.payload.as_deref(), m.broker_ts) {
                Ok(ev) => {
                    let ts = ev.ts();
                    let slot = &mut owned.topic_max_ts[m.topic_idx];
                    *slot = Some(slot.map_or(ts, |t| t.max(ts)));
                    match &ev {
                        Event::Decision(d) => {
                            owned.join.apply_decision(&self.settings, d, &mut work.deltas, &mut counters)
                        }
                        Event::Feedback(f) => {
                            owned.join.apply_feedback(&self.settings, f, &mut work.deltas, &mut counters)
                        }
                        Event::Ticket(t) => owned.join.apply_ticket(&self.settings, t, &mut work.deltas, &mut counters),
                    }
                }
                Err(reject) => {
                    let len = m.payload.as_ref().map_or(0, Vec::len);
                    let truncated = len > self.dead_letter_max_bytes;
                    let payload = m.payload.map(|mut p| {
                        p.truncate(self.dead_letter_max_bytes);
                        p
                    });
                    work.dead_letters.push(DeadLetter {
                        topic: self.topics[m.topic_idx].clone(),
                        partition: m.partition,
                        offset: m.offset,
                        reason: reject.reason.as_str(),
                        detail: reject.detail,
                        payload,
                        payload_len: len,
                        truncated,
                    });
                }
            }
        }
        // Idle partitions too: their watermark moves when the other topics catch up, which
        // releases waiting outcomes and expires state even when no message arrives.
        let owned: Vec<i32> = self.owned.keys().copied().collect();
        for p in owned {
            self.refresh_caught_up(consumer, p);
            let Some(o) = self.owned.get_mut(&p) else { continue };
            let advances = o.effective_watermark().is_some_and(|wm| wm > o.join.watermark_ms());
            if !advances && !per_part.contains_key(&p) {
                continue;
            }
            let work = per_part.entry(p).or_default();
            if let Some(wm) = o.effective_watermark() {
                o.join.advance_watermark(wm);
            }
            o.join.release_due(&self.settings, &mut work.deltas, &mut counters);
            o.join.sweep(&self.settings, &mut work.deltas, false);
            work.state = o.join.take_dirty();
        }
        let applied = Instant::now();
        stats.apply += applied - started;
        let result = self.commit(consumer, per_part, counters);
        stats.commit += applied.elapsed();
        result
    }

    fn commit(
        &mut self,
        consumer: &TwConsumer<S>,
        mut per_part: BTreeMap<i32, PartWork>,
        counters: JoinCounters,
    ) -> anyhow::Result<(u64, u64)> {
        let mut delay = Duration::from_millis(100);
        loop {
            if per_part.is_empty() {
                return Ok((0, 0));
            }
            let batch = self.build_batch(&per_part);
            let outcome = self.runtime.block_on(self.store.commit(&batch));
            match outcome {
                Ok(CommitOutcome::Committed(gens)) => {
                    for (p, g) in gens {
                        if let Some(o) = self.owned.get_mut(&p) {
                            o.generation = g;
                        }
                    }
                    self.telemetry.set_ready(true);
                    let result = self.after_commit(consumer, &per_part, &batch, &counters);
                    return Ok(result);
                }
                Ok(CommitOutcome::Fenced(p)) => {
                    self.telemetry.fenced.inc();
                    tracing::warn!(partition = p, "partition was committed by another owner; reloading it");
                    per_part.remove(&p);
                    self.reload(consumer, p);
                }
                Err(e) => {
                    self.telemetry.commit_failures.inc();
                    self.telemetry.set_ready(false);
                    tracing::error!(error = %format!("{e:#}"), "commit failed; retrying the same batch");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                    // A commit whose acknowledgement was lost shows up as a fence on the retry.
                }
            }
        }
    }

    fn build_batch(&self, per_part: &BTreeMap<i32, PartWork>) -> CommitBatch {
        let mut batch = CommitBatch::default();
        for (p, work) in per_part {
            let Some(owned) = self.owned.get(p) else { continue };
            batch.partitions.push(PartitionCommit {
                partition: *p,
                expected_generation: owned.generation,
                watermark_ms: owned.join.watermark_ms(),
                state: work.state.clone(),
                offsets: work.offsets.iter().map(|(i, o)| (self.topics[*i].clone(), *o)).collect(),
                conf: work.deltas.conf.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            });
            batch.deltas.merge(&work.deltas);
            batch.dead_letters.extend(work.dead_letters.iter().cloned());
        }
        batch
    }

    fn after_commit(
        &self,
        consumer: &TwConsumer<S>,
        per_part: &BTreeMap<i32, PartWork>,
        batch: &CommitBatch,
        counters: &JoinCounters,
    ) -> (u64, u64) {
        let t = &self.telemetry;
        let mut messages = 0;
        let mut tpl = TopicPartitionList::new();
        for (p, work) in per_part {
            for (i, n) in work.messages.iter().enumerate() {
                if *n > 0 {
                    t.consumed(&self.topics[i]).inc_by(*n);
                    messages += n;
                }
            }
            for (i, o) in &work.offsets {
                let _ = tpl.add_partition_offset(&self.topics[*i], *p, Offset::Offset(*o));
            }
        }
        for d in &batch.dead_letters {
            t.rejected(&d.topic, d.reason).inc();
        }
        let mut orphans: HashMap<&'static str, i64> = HashMap::new();
        for ((_, kind), n) in &batch.deltas.orphans {
            *orphans.entry(kind.as_str()).or_default() += n;
        }
        t.orphans(&orphans);
        t.duplicates.inc_by(counters.duplicates);
        t.cost_unknown.inc_by(counters.cost_unknown);
        t.feedback_without_score.inc_by(counters.feedback_without_score);
        t.batches.inc();
        if tpl.count() > 0 {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "Kafka offset commit (lag visibility only) failed");
            }
        }
        (messages, batch.dead_letters.len() as u64)
    }

    /// Drop a partition's in-memory state, reload it from the store and re-read from there.
    fn reload(&mut self, consumer: &TwConsumer<S>, partition: i32) {
        self.owned.remove(&partition);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let snap = match self.runtime.block_on(self.store.load_partition(partition, &topics)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(partition, error = %format!("{e:#}"), "reload failed; partition idle until reassigned");
                return;
            }
        };
        for (i, topic) in self.topics.iter().enumerate() {
            let offset = snap.offsets.get(topic).map(|o| Offset::Offset(*o)).unwrap_or(Offset::Beginning);
            if let Err(e) = consumer.seek(topic, partition, offset, Duration::from_secs(5)) {
                tracing::error!(topic, partition, error = %e, "seek after reload failed; partition idle until reassigned");
                return;
            }
            let _ = i;
        }
        match Owned::from_snapshot(snap, &self.topics) {
            Ok(o) => {
                self.owned.insert(partition, o);
            }
            Err(e) => tracing::error!(partition, error = %e, "join state does not deserialize"),
        }
    }

    fn publish_gauges(&self) {
        let t = &self.telemetry;
        t.open_conversations.set(self.owned.values().map(|o| o.join.open_conversations() as i64).sum());
        t.pending_outcomes.set(self.owned.values().map(|o| o.join.pending_outcomes() as i64).sum());
        if let Some(wm) = self.owned.values().map(|o| o.join.watermark_ms()).filter(|w| *w > 0).min() {
            t.watermark_seconds.set(wm / 1000);
        }
    }
}

/// What one partition contributes to a batch.
#[derive(Default)]
struct PartWork {
    deltas: Deltas,
    state: Vec<(String, Option<Vec<u8>>)>,
    offsets: BTreeMap<usize, i64>,
    messages: [u64; 3],
    dead_letters: Vec<DeadLetter>,
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
