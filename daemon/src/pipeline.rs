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

use crate::config::Config;
use crate::decode::{Decoder, DecoderConfig, WireFormat};
use crate::event::{Event, Stream};
use crate::join::{JoinCounters, JoinReject, JoinSettings, PartitionJoin};
use crate::metrics::Deltas;
use crate::progress::{TopicProgress, WatermarkConfig, PROGRESS_KEY};
use crate::rescore::runtime::{review_label, Rescoring};
use crate::source::{Polled, RebalanceEvent, Source};
use crate::store::{
    CommitBatch, CommitOutcome, DeadLetter, PartitionCommit, PartitionSnapshot, RescoreSample, ReviewLabel, Store,
};
use crate::telemetry::Telemetry;

/// How often partitions without new messages re-evaluate their watermark.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// One owned partition: its join state and where each topic stands.
struct Owned {
    join: PartitionJoin,
    generation: i64,
    progress: TopicProgress,
}

impl Owned {
    fn from_snapshot(mut s: PartitionSnapshot, topics: &[String; 3]) -> anyhow::Result<Self> {
        let persisted = s.entries.iter().position(|(k, _)| k == PROGRESS_KEY).map(|i| s.entries.swap_remove(i).1);
        let next = [0, 1, 2].map(|i| s.offsets.get(&topics[i]).copied());
        let progress = TopicProgress::restore(next, topics, persisted.as_deref());
        let join = PartitionJoin::restore(s.entries, s.watermark_ms)?;
        Ok(Self { join, generation: s.generation, progress })
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
    /// What a dead letter keeps of the query text (the privacy mode).
    dead_letter_scrub: crate::privacy::DeadLetterScrub,
    max_events: usize,
    max_wait: Duration,
    watermark: WatermarkConfig,
    owned: HashMap<i32, Owned>,
    /// Polling time since the last `process`: how long quiet topic-partitions have been quiet.
    listened: Duration,
    shutdown: Arc<AtomicBool>,
    /// The rescoring slice, when configured: samples ride in the batch, scoring happens after.
    rescoring: Option<Rescoring>,
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
        let inputs =
            [&t.routing, &t.feedback, &t.tickets].map(|tc| (tc.name.clone(), tc.format, tc.schema_ids.clone()));
        Self::with_inputs(cfg, inputs, store, runtime, telemetry, shutdown)
    }

    /// A pipeline over explicit inputs: (topic name, wire format, Confluent schema ids) of the
    /// routing, feedback and tickets streams (the replay source names its files this way).
    pub fn with_inputs(
        cfg: &Config,
        inputs: [(String, WireFormat, Vec<u32>); 3],
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        telemetry: Arc<Telemetry>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let streams = [Stream::Routing, Stream::Feedback, Stream::Tickets];
        let decoders = [0, 1, 2].map(|i| {
            let mut dc = DecoderConfig::new(streams[i], inputs[i].1);
            dc.confluent_schema_ids = inputs[i].2.clone();
            dc.max_payload_bytes = cfg.limits.max_payload_bytes;
            dc.max_future_ms = (cfg.limits.max_future_hours * 3_600_000.0).round() as i64;
            Decoder::new(dc)
        });
        let topics = inputs.map(|i| i.0);
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
            dead_letter_scrub: cfg.dead_letter_scrub(),
            max_events: cfg.batch.max_events,
            max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
            watermark: cfg.watermark.clone(),
            owned: HashMap::new(),
            listened: Duration::ZERO,
            shutdown,
            rescoring: None,
        }
    }

    /// Sample decisions for rescoring (SPEC §4.4). When `run` returns, every committed sample has
    /// been scored (or shed) and written.
    pub fn with_rescoring(mut self, rescoring: Rescoring) -> Self {
        self.rescoring = Some(rescoring);
        self
    }

    /// Run until the shutdown flag is set; the batch in flight is committed before returning.
    pub fn run(&mut self, source: &mut dyn Source) -> anyhow::Result<RunStats> {
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
                let polled = source.poll(deadline - now);
                self.listened += now.elapsed();
                self.handle_rebalances(source, &mut batch);
                match polled {
                    Some(m) => batch.push(m),
                    None if source.finished() => break,
                    None => {}
                }
            }
            self.handle_rebalances(source, &mut batch);
            let finished = batch.is_empty() && source.finished();
            if !batch.is_empty() || last_idle_check.elapsed() >= IDLE_CHECK {
                last_idle_check = Instant::now();
                let had_messages = !batch.is_empty();
                let (messages, rejected) = self.process(source, std::mem::take(&mut batch), &mut stats)?;
                stats.messages += messages;
                stats.rejected += rejected;
                stats.batches += had_messages as u64;
            }
            self.publish_gauges();
            if finished {
                break;
            }
        }
        // Last passes for partitions whose watermark moved since the final batch (e.g. the other
        // topics caught up), so a graceful stop leaves no releasable outcome waiting. One pass moves
        // a watermark by at most `watermark.max_advance_hours`, hence the loop; it ends because
        // every pass moves some watermark forward toward a fixed candidate.
        loop {
            self.process(source, Vec::new(), &mut stats)?;
            if !self.any_watermark_can_advance() {
                break;
            }
        }
        if let Some(r) = self.rescoring.take() {
            r.finish();
        }
        tracing::info!(
            messages = stats.messages,
            batches = stats.batches,
            apply_s = stats.apply.as_secs_f64(),
            commit_s = stats.commit.as_secs_f64(),
            "pipeline stopped"
        );
        Ok(stats)
    }

    /// Whether each topic of a partition is caught up (its next offset reached the source's
    /// high watermark). Unknown counts as not caught up.
    fn refresh_caught_up(&mut self, source: &mut dyn Source, partition: i32) {
        let Some(o) = self.owned.get_mut(&partition) else { return };
        for i in 0..3 {
            let high = source.high_watermark(i, partition);
            o.progress.set_high_watermark(i, high);
            tracing::trace!(topic = %self.topics[i], partition, ?high, next = ?o.progress.next(i), "caught up check");
        }
    }

    fn any_watermark_can_advance(&self) -> bool {
        self.owned.values().any(|o| o.progress.next_watermark(o.join.watermark_ms(), &self.watermark).is_some())
    }

    fn handle_rebalances(&mut self, source: &mut dyn Source, batch: &mut Vec<Polled>) {
        for ev in source.take_events() {
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
                RebalanceEvent::StartResolved { partition, topic, offset } => {
                    let idx = self.topics.iter().position(|t| *t == topic);
                    if let (Some(o), Some(i)) = (self.owned.get_mut(&partition), idx) {
                        o.progress.resolved_start(i, offset);
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
        source: &mut dyn Source,
        batch: Vec<Polled>,
        stats: &mut RunStats,
    ) -> anyhow::Result<(u64, u64)> {
        let started = Instant::now();
        let mut per_part: BTreeMap<i32, PartWork> = BTreeMap::new();
        let mut counters = JoinCounters::default();
        let listened = std::mem::take(&mut self.listened);
        let mut delivered: HashMap<i32, [bool; 3]> = HashMap::new();
        for m in batch {
            let Some(owned) = self.owned.get_mut(&m.partition) else { continue };
            delivered.entry(m.partition).or_default()[m.topic_idx] = true;
            // Below the stored position: already applied by an earlier commit.
            if owned.progress.next(m.topic_idx).is_some_and(|n| m.offset < n) {
                continue;
            }
            owned.progress.consumed(m.topic_idx, m.offset);
            let work = per_part.entry(m.partition).or_default();
            work.offsets.insert(m.topic_idx, m.offset + 1);
            work.messages[m.topic_idx] += 1;
            match self.decoders[m.topic_idx].decode(m.payload.as_deref(), m.broker_ts) {
                Ok(mut ev) => {
                    owned.progress.saw_event_time(m.topic_idx, ev.ts());
                    let applied = match &mut ev {
                        Event::Decision(d) => {
                            // Caps the decision's dimensions in place: the sample sees the bucket.
                            let r = owned.join.apply_decision(&self.settings, d, &mut work.deltas, &mut counters);
                            if let Some(s) =
                                self.rescoring.as_ref().filter(|_| r.is_ok()).and_then(|x| x.sample(d, m.partition))
                            {
                                work.jobs.push((s.row.event_id.clone(), s.text));
                                work.samples.push(s.row);
                            }
                            r
                        }
                        Event::Feedback(f) => {
                            let r = owned.join.apply_feedback(&self.settings, f, &mut work.deltas, &mut counters);
                            if self.rescoring.is_some() && r.is_ok() {
                                work.labels.extend(review_label(f));
                            }
                            r
                        }
                        Event::Ticket(t) => owned.join.apply_ticket(&self.settings, t, &mut work.deltas, &mut counters),
                    };
                    if let Err(reject) = applied {
                        let topic = &self.topics[m.topic_idx];
                        work.dead_letters.push(join_dead_letter(topic, &m, self.dead_letter_max_bytes, reject));
                    }
                }
                Err(reject) => {
                    let len = m.payload.as_ref().map_or(0, Vec::len);
                    let truncated = len > self.dead_letter_max_bytes;
                    let payload = m.payload.map(|mut p| {
                        p.truncate(self.dead_letter_max_bytes);
                        p
                    });
                    let payload = self.dead_letter_scrub.payload(payload);
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
            self.refresh_caught_up(source, p);
            let Some(o) = self.owned.get_mut(&p) else { continue };
            o.progress.listened(listened, delivered.get(&p).copied().unwrap_or_default());
            let next_wm = o.progress.next_watermark(o.join.watermark_ms(), &self.watermark);
            let unsaved_starts = o.progress.take_unsaved_starts();
            if next_wm.is_none() && unsaved_starts.is_empty() && !per_part.contains_key(&p) {
                continue;
            }
            let work = per_part.entry(p).or_default();
            for (i, offset) in unsaved_starts {
                work.offsets.entry(i).or_insert(offset);
            }
            if let Some(wm) = next_wm {
                tracing::trace!(partition = p, watermark_ms = wm, "watermark advances");
                o.join.advance_watermark(wm);
            }
            o.join.release_due(&self.settings, &mut work.deltas, &mut counters);
            o.join.sweep(&self.settings, &mut work.deltas, false);
            work.state = o.join.take_dirty();
            if let Some(bytes) = o.progress.take_persisted(&self.topics) {
                work.state.push((PROGRESS_KEY.to_string(), Some(bytes)));
            }
        }
        let applied = Instant::now();
        stats.apply += applied - started;
        let result = self.commit(source, per_part, counters);
        stats.commit += applied.elapsed();
        result
    }

    fn commit(
        &mut self,
        source: &mut dyn Source,
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
                    let result = self.after_commit(source, &per_part, &batch, &counters);
                    return Ok(result);
                }
                Ok(CommitOutcome::Fenced(p)) => {
                    self.telemetry.fenced.inc();
                    tracing::warn!(partition = p, "partition was committed by another owner; reloading it");
                    per_part.remove(&p);
                    self.reload(source, p);
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
            batch.rescore_samples.extend(work.samples.iter().cloned());
            batch.review_labels.extend(work.labels.iter().cloned());
        }
        batch
    }

    fn after_commit(
        &self,
        source: &mut dyn Source,
        per_part: &BTreeMap<i32, PartWork>,
        batch: &CommitBatch,
        counters: &JoinCounters,
    ) -> (u64, u64) {
        let t = &self.telemetry;
        let mut messages = 0;
        let mut positions = vec![];
        for (p, work) in per_part {
            for (i, n) in work.messages.iter().enumerate() {
                if *n > 0 {
                    t.consumed(&self.topics[i]).inc_by(*n);
                    messages += n;
                }
            }
            for (i, o) in &work.offsets {
                positions.push((*i, *p, *o));
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
        t.dimension_values_capped(&counters.capped);
        t.batches.inc();
        source.committed(&positions);
        if let Some(r) = &self.rescoring {
            // Committed as pending: only now may they be scored (a score for an uncommitted row
            // would have nothing to land on).
            r.submit(per_part.values().flat_map(|w| w.jobs.iter().cloned()).collect());
        }
        (messages, batch.dead_letters.len() as u64)
    }

    /// Drop a partition's in-memory state, reload it from the store and re-read from there.
    fn reload(&mut self, source: &mut dyn Source, partition: i32) {
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
            if let Err(e) = source.seek(i, partition, snap.offsets.get(topic).copied()) {
                tracing::error!(topic, partition, error = %format!("{e:#}"), "seek after reload failed; partition idle until reassigned");
                return;
            }
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
    /// Sampled decisions (committed with the batch) and their (event_id, text) to score after.
    samples: Vec<RescoreSample>,
    jobs: Vec<(String, String)>,
    labels: Vec<ReviewLabel>,
}

/// A decoded event the join refused (a per-conversation or per-ticket bound): dead-lettered like
/// a malformed one, under the join's reason.
fn join_dead_letter(topic: &str, m: &Polled, max_bytes: usize, reject: JoinReject) -> DeadLetter {
    let len = m.payload.as_ref().map_or(0, Vec::len);
    DeadLetter {
        topic: topic.to_string(),
        partition: m.partition,
        offset: m.offset,
        reason: reject.reason(),
        detail: reject.to_string(),
        payload: m.payload.as_ref().map(|p| p[..len.min(max_bytes)].to_vec()),
        payload_len: len,
        truncated: len > max_bytes,
    }
}
