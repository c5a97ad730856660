//! The consume → decode → join → commit loop.
//!
//! One batch = the messages polled within `batch.max_wait_ms` (at most `batch.max_events`), or,
//! while the consumer is behind, within the larger `batch.catch_up_*` limits: a catch-up batch
//! writes each touched conversation's state and each aggregate row once for many more events. The
//! batch is applied to the in-memory join state of its partitions, then committed with the
//! touched state, the aggregate deltas, the dead letters and the next offsets in one
//! transaction. No new message is applied while a batch is uncommitted. A commit the store
//! cannot take now (connection, pool timeout, serialization failure…) is retried with the same
//! content while the source holds its partitions paused and keeps polling (so the group keeps
//! the member), until it commits or shutdown is requested; a commit whose data the store refuses
//! (a value it cannot hold) is bisected down to the refused message, which is dead-lettered; any
//! other store error stops the pipeline. A fenced partition (another owner committed it) is
//! reloaded from the store and re-read from its stored offsets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::decode::{Decoder, DecoderConfig, Reject, RejectReason, WireFormat};
use crate::event::{Event, Stream};
use crate::join::{JoinCounters, JoinReject, JoinSettings, PartitionJoin};
use crate::metrics::Deltas;
use crate::progress::{TopicProgress, WatermarkConfig, PROGRESS_KEY};
use crate::rescore::runtime::{review_label, Rescoring};
use crate::source::kafka::{block_on_unless_shutdown, load_retrying};
use crate::source::{Polled, RebalanceEvent, Source};
use crate::store::{
    safe_detail, CommitBatch, CommitOutcome, DeadLetter, PartitionCommit, PartitionSnapshot, RescoreSample,
    ReviewLabel, Store, StoreError, DEAD_LETTER_DETAIL_MAX,
};
use crate::telemetry::Telemetry;

/// How often partitions without new messages re-evaluate their watermark.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The longest poll while a commit runs on its thread (its result is taken between polls).
const SETTLE_CHECK: Duration = Duration::from_millis(5);

/// The first and the longest wait before loading an unrestorable partition's state again. The
/// longest stays below the 5-minute window of the `TierwatchPartitionRestoreFailing` alert, so a
/// partition that stays unreadable keeps the alert firing.
const UNRESTORABLE_RETRY_FIRST: Duration = Duration::from_secs(5);
const UNRESTORABLE_RETRY_MAX: Duration = Duration::from_secs(60);

/// One owned partition: its join state and where each topic stands.
struct Owned {
    join: PartitionJoin,
    generation: i64,
    /// Which load of the partition this is (unique per pipeline): a commit result applies only
    /// to the incarnation whose state it wrote, not to one reloaded or reassigned meanwhile.
    incarnation: u64,
    progress: TopicProgress,
    /// Per topic: the source's high watermark − the position being committed, when both are
    /// known (published as `tierwatch_consumer_lag_messages` once the batch commits).
    lag: [Option<i64>; 3],
}

impl Owned {
    fn from_snapshot(mut s: PartitionSnapshot, topics: &[String; 3]) -> anyhow::Result<Self> {
        let persisted = s.entries.iter().position(|(k, _)| k == PROGRESS_KEY).map(|i| s.entries.swap_remove(i).1);
        let next = [0, 1, 2].map(|i| s.offsets.get(&topics[i]).copied());
        let progress = TopicProgress::restore(next, topics, persisted.as_deref());
        let join = PartitionJoin::restore(s.entries, s.watermark_ms)?;
        Ok(Self { join, generation: s.generation, incarnation: 0, progress, lag: [None; 3] })
    }
}

/// An assigned partition whose stored join state does not deserialize (written by a newer
/// version, or damaged). Guessing would lose attributions silently, so it is not consumed: its
/// messages are dropped unapplied and its stored offsets do not move, readiness stays off, and
/// its state is loaded again every [`UNRESTORABLE_RETRY_FIRST`]…[`UNRESTORABLE_RETRY_MAX`]
/// (each failure counted in `tierwatch_partition_restore_failures_total`), so state put right in
/// the store (a backup, the version that wrote it) is picked up without a restart.
struct Unrestorable {
    next_try: Instant,
    delay: Duration,
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
    /// A batch also closes once its payloads hold this many bytes.
    max_bytes: usize,
    max_wait: Duration,
    /// The limits of a batch while the consumer is behind (`batch.catch_up_*`).
    catch_up_max_events: usize,
    catch_up_max_wait: Duration,
    watermark: WatermarkConfig,
    owned: HashMap<i32, Owned>,
    /// Assigned partitions that are not consumed because their stored state does not load.
    unrestorable: BTreeMap<i32, Unrestorable>,
    /// Polling time since the last `process`: how long quiet topic-partitions have been quiet.
    listened: Duration,
    shutdown: Arc<AtomicBool>,
    /// The rescoring slice, when configured: samples ride in the batch, scoring happens after.
    rescoring: Option<Rescoring>,
    /// The decoded messages of the batch being applied (kept to reuse its allocation).
    decoded: Vec<Option<Result<Event, Reject>>>,
    /// The last incarnation given to an owned partition.
    incarnations: u64,
    /// The batch whose commit runs on another thread while the next one is polled and applied.
    in_flight: Option<InFlight>,
    /// The last pass before stopping: watermarks move straight to their candidate instead of by
    /// `watermark.max_advance_hours` per step (see `TopicProgress::final_watermark`).
    draining: bool,
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

impl RunStats {
    /// Count a committed batch's (messages, rejected).
    fn add(&mut self, (messages, rejected): (u64, u64)) {
        self.messages += messages;
        self.rejected += rejected;
    }
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
            dc.limits = cfg.limits.field_limits();
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
            settings: cfg.join_settings(),
            topics,
            decoders,
            dead_letter_max_bytes: cfg.limits.dead_letter_max_bytes,
            dead_letter_scrub: cfg.dead_letter_scrub(),
            max_events: cfg.batch.max_events,
            max_bytes: cfg.batch.max_bytes,
            max_wait: Duration::from_millis(cfg.batch.max_wait_ms),
            catch_up_max_events: cfg.batch.catch_up_events(),
            catch_up_max_wait: Duration::from_millis(cfg.batch.catch_up_wait_ms()),
            watermark: cfg.watermark.clone(),
            owned: HashMap::new(),
            unrestorable: BTreeMap::new(),
            listened: Duration::ZERO,
            shutdown,
            rescoring: None,
            decoded: Vec::new(),
            incarnations: 0,
            in_flight: None,
            draining: false,
        }
    }

    /// Sample decisions for rescoring (docs/contract.md#rescoring-slice). When `run` returns, every committed sample
    /// has been scored (or shed) and written.
    pub fn with_rescoring(mut self, rescoring: Rescoring) -> Self {
        self.rescoring = Some(rescoring);
        self
    }

    /// Run until the shutdown flag is set; the batch in flight is committed before returning.
    pub fn run(&mut self, source: &mut dyn Source) -> anyhow::Result<RunStats> {
        let mut stats = RunStats::default();
        let mut batch: Vec<Polled> = Vec::with_capacity(self.max_events);
        let mut batch_bytes = 0usize;
        let mut last_idle_check = Instant::now();
        let mut interrupted = false;
        // Behind: batches grow to the catch-up limits (see `BatchConfig::catch_up_max_events`).
        let mut catching_up = false;
        // A stop met while settling a commit in the middle of polling.
        let mut stopped: Option<Stop> = None;
        self.draining = false;
        // Subscribed and able to commit: ready, until a commit fails (see `commit`).
        self.telemetry.set_ready(true);
        while !self.shutdown.load(Ordering::Relaxed) {
            let (max_events, max_wait) = if catching_up {
                (self.catch_up_max_events, self.catch_up_max_wait)
            } else {
                (self.max_events, self.max_wait)
            };
            let deadline = Instant::now() + max_wait;
            while batch.len() < max_events && batch_bytes < self.max_bytes {
                let now = Instant::now();
                if now >= deadline || self.shutdown.load(Ordering::Relaxed) {
                    break;
                }
                // While a commit runs, poll in short steps so its result is taken promptly: the
                // counters, the consumer lag and the rescoring queue follow the commit within
                // milliseconds rather than at the next batch.
                let step = if self.in_flight.is_some() { (deadline - now).min(SETTLE_CHECK) } else { deadline - now };
                let polled = source.poll(step);
                self.listened += now.elapsed();
                self.handle_rebalances(source, &mut batch);
                if self.in_flight.as_mut().is_some_and(|f| f.attempt.is_ready()) {
                    // Nothing of the batch being polled is applied yet: `next` is empty.
                    match self.settle(source, &mut stats, None) {
                        Ok(settled) => stats.add(settled.counts()),
                        Err(stop) => {
                            stopped = Some(stop);
                            break;
                        }
                    }
                }
                match polled {
                    Some(m) => {
                        batch_bytes += m.payload.as_ref().map_or(0, Vec::len);
                        batch.push(m);
                    }
                    None if source.finished() => break,
                    None => {}
                }
            }
            if let Some(stop) = stopped.take() {
                interrupted = self.stopped(stop)?;
                break;
            }
            self.handle_rebalances(source, &mut batch);
            let finished = batch.is_empty() && source.finished();
            // The batch closed on its size, not its time: messages are waiting. Measured against
            // the limits in force, so a catch-up batch that closes on time (traffic slower than
            // `catch_up_max_events` per `catch_up_max_wait_ms`) ends catch-up unless the known
            // lag says otherwise; against the normal limit, a steady stream above it per
            // `max_wait_ms` would never leave catch-up (and pay its latency).
            let filled = batch.len() >= max_events || batch_bytes >= self.max_bytes;
            if !batch.is_empty() || last_idle_check.elapsed() >= IDLE_CHECK {
                last_idle_check = Instant::now();
                let had_messages = !batch.is_empty();
                batch_bytes = 0;
                match self.process(source, std::mem::take(&mut batch), &mut stats) {
                    Ok(counts) => stats.add(counts),
                    Err(stop) => {
                        interrupted = self.stopped(stop)?;
                        break;
                    }
                }
                stats.batches += had_messages as u64;
                let was = catching_up;
                let backlog = self.backlog();
                catching_up = filled || backlog > self.max_events as i64;
                if catching_up != was {
                    tracing::debug!(catching_up, backlog, "batch limits changed");
                }
            }
            self.publish_gauges();
            if finished {
                break;
            }
        }
        // Last pass for partitions whose watermark moved since the final batch (e.g. the other
        // topics caught up), so a graceful stop leaves no releasable outcome waiting. No message
        // comes between its steps, so the watermark moves straight to its candidate: one pass and
        // one commit instead of one per `watermark.max_advance_hours` (136 in the demo's replay,
        // each sweeping the whole join state), with the same result (`progress` module docs).
        // The loop only guards against a candidate that moved meanwhile.
        if !interrupted {
            self.draining = true;
            loop {
                match self.process(source, Vec::new(), &mut stats) {
                    Ok(counts) => stats.add(counts),
                    Err(stop) => {
                        interrupted = self.stopped(stop)?;
                        break;
                    }
                }
                if !self.any_watermark_can_advance() {
                    break;
                }
            }
        }
        // The last batch's commit.
        if !interrupted {
            match self.settle(source, &mut stats, None) {
                Ok(settled) => stats.add(settled.counts()),
                Err(stop) => {
                    self.stopped(stop)?;
                }
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
        if source.finished() && !self.unrestorable.is_empty() {
            // A replay that ends with partitions it could not read must not look complete.
            let parts: Vec<String> = self.unrestorable.keys().map(i32::to_string).collect();
            anyhow::bail!(
                "the stored join state of partition {} does not deserialize (see the log): none of its messages were applied",
                parts.join(", ")
            );
        }
        Ok(stats)
    }

    /// Log why the pipeline stops early: `Ok(true)` after a shutdown during a store outage (the
    /// uncommitted batch is dropped), `Err` for a fatal error (readiness off).
    fn stopped(&self, stop: Stop) -> anyhow::Result<bool> {
        match stop {
            Stop::Shutdown => {
                tracing::warn!("shutdown while the store is unavailable: the uncommitted batch is dropped and re-read from the stored offsets on restart");
                Ok(true)
            }
            Stop::Fatal(e) => {
                self.telemetry.set_ready(false);
                tracing::error!(error = %format!("{e:#}"), "pipeline stopped by a store error");
                Err(e)
            }
        }
    }

    /// Whether each topic of a partition is caught up (its next offset reached the source's
    /// high watermark). Unknown counts as not caught up.
    fn refresh_caught_up(&mut self, source: &mut dyn Source, partition: i32) {
        let Some(o) = self.owned.get_mut(&partition) else { return };
        for i in 0..3 {
            let high = source.high_watermark(i, partition);
            o.progress.set_high_watermark(i, high);
            o.lag[i] = consumer_lag(high, o.progress.next(i));
            tracing::trace!(topic = %self.topics[i], partition, ?high, next = ?o.progress.next(i), "caught up check");
        }
    }

    /// Take ownership of a loaded partition, as a new incarnation.
    fn own(&mut self, partition: i32, mut o: Owned) {
        if self.unrestorable.remove(&partition).is_some() {
            tracing::info!(partition, "join state restored; partition consumed again");
        }
        self.incarnations += 1;
        o.incarnation = self.incarnations;
        self.owned.insert(partition, o);
    }

    /// Messages known to be waiting in the owned partitions (0 when unknown).
    fn backlog(&self) -> i64 {
        self.owned.values().flat_map(|o| o.lag.iter().flatten()).sum()
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
                                self.own(p, o);
                            }
                            Err(e) => self.mark_unrestorable(p, &e),
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
                    self.unrestorable.retain(|p, _| !gone.contains(p));
                    batch.retain(|m| !gone.contains(&m.partition));
                }
            }
        }
        self.retry_unrestorable(source, batch);
        self.telemetry.assigned_partitions.set(self.owned.len() as i64);
    }

    /// Stop consuming `partition`, whose stored state does not deserialize (see [`Unrestorable`]),
    /// and try it again later: after [`UNRESTORABLE_RETRY_FIRST`], twice the last wait if it
    /// failed before.
    fn mark_unrestorable(&mut self, partition: i32, error: &anyhow::Error) {
        let delay = self
            .unrestorable
            .get(&partition)
            .map_or(UNRESTORABLE_RETRY_FIRST, |u| (u.delay * 2).min(UNRESTORABLE_RETRY_MAX));
        self.telemetry.restore_failures.inc();
        self.telemetry.set_ready(false);
        tracing::error!(
            partition,
            error = %format!("{error:#}"),
            retry_in_s = delay.as_secs(),
            "join state does not deserialize; partition not consumed"
        );
        self.owned.remove(&partition);
        self.unrestorable.insert(partition, Unrestorable { next_try: Instant::now() + delay, delay });
    }

    /// Reload the unrestorable partitions whose wait is over ([`Pipeline::reload`]). What was
    /// polled of one meanwhile is dropped: a partition that restores is read again from its
    /// stored offsets.
    fn retry_unrestorable(&mut self, source: &mut dyn Source, batch: &mut Vec<Polled>) {
        // Called after every poll: nothing to look at in the usual case.
        if self.unrestorable.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<i32> = self.unrestorable.iter().filter(|(_, u)| u.next_try <= now).map(|(p, _)| *p).collect();
        for p in due {
            batch.retain(|m| m.partition != p);
            if self.reload(source, p).is_err() {
                return; // shutdown requested while loading
            }
        }
    }

    /// Apply a batch and start its commit on another thread, once the batch before it (still in
    /// flight while this one was polled and applied) has committed. Returns (messages applied,
    /// messages rejected) of the batches whose commit completed meanwhile.
    ///
    /// Two batches overlap only in memory: batch n+1 is applied while batch n commits, but its
    /// commit starts after n's has succeeded, so commits stay in order and each is still one
    /// fenced transaction with its own offsets. If batch n's commit has to reload a partition
    /// (fenced), n+1's work on that partition is dropped: the reload seeks the partition back to
    /// the stored offsets, so its messages are read again. If the store refuses batch n's data,
    /// both batches are rolled back and redone one at a time (bisecting n).
    fn process(
        &mut self,
        source: &mut dyn Source,
        batch: Vec<Polled>,
        stats: &mut RunStats,
    ) -> Result<(u64, u64), Stop> {
        let started = Instant::now();
        let saved = self.positions();
        let (mut per_part, counters) = self.apply(source, &batch, None);
        stats.apply += started.elapsed();
        let mut done = (0, 0);
        if self.in_flight.is_some() {
            let touched: Vec<i32> = per_part.keys().copied().collect();
            match self.settle(source, stats, Some((&batch, &touched)))? {
                Settled::Committed(m, r) => done = (m, r),
                // This batch was redone and committed too.
                Settled::RedoneWithNext(m, r) => return Ok((m, r)),
            }
            // Partitions reloaded or reassigned while the previous batch committed: this batch's
            // work on their earlier state is void (their messages are read again from the stored
            // offsets, or belong to the new owner).
            per_part.retain(|p, w| self.owned.get(p).is_some_and(|o| o.incarnation == w.incarnation));
        }
        if !per_part.is_empty() {
            let attempt = self.spawn_commit(self.build_batch(&per_part));
            self.in_flight = Some(InFlight { msgs: batch, per_part, counters, saved, attempt });
        }
        Ok(done)
    }

    /// Wait for the batch in flight, if any, and finish its commit (retries, fenced partitions).
    /// `next` is a batch applied after it and not yet committed, with the partitions it touched:
    /// if the store refuses the batch in flight, both are rolled back and redone one at a time.
    fn settle(
        &mut self,
        source: &mut dyn Source,
        stats: &mut RunStats,
        next: Option<(&[Polled], &[i32])>,
    ) -> Result<Settled, Stop> {
        let Some(f) = self.in_flight.take() else { return Ok(Settled::Committed(0, 0)) };
        let mut touched: Vec<i32> = f.per_part.keys().copied().collect();
        let waiting = Instant::now();
        let result = self.commit(source, f.per_part, f.counters, Some(f.attempt));
        stats.commit += waiting.elapsed();
        let err = match result {
            Ok((m, r)) => return Ok(Settled::Committed(m, r)),
            Err(CommitError::Stop(stop)) => return Err(stop),
            Err(CommitError::Refused(e)) => e,
        };
        if let Some((_, t)) = next {
            touched.extend_from_slice(t);
        }
        self.rollback(&touched, &f.saved)?;
        let (m1, r1) = self.redo_refused(source, &f.msgs, err, stats)?;
        let (m2, r2) = match next {
            Some((msgs, _)) => self.apply_and_commit(source, msgs, None, stats)?,
            None => (0, 0),
        };
        Ok(Settled::RedoneWithNext(m1 + m2, r1 + r2))
    }

    /// Start committing `batch` on a thread of its own (the store's future need not be `Send`).
    fn spawn_commit(&self, batch: CommitBatch) -> Attempt {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        let spawned = std::thread::Builder::new().name("tw-commit".into()).spawn(move || {
            let outcome = runtime.block_on(store.commit(&batch));
            let _ = tx.send((batch, outcome));
        });
        if let Err(e) = spawned {
            // Out of threads: the commit is made on the next `commit` attempt instead.
            tracing::warn!(error = %e, "cannot start a commit thread; committing in line");
            return Attempt { rx: None, started, ready: None };
        }
        Attempt { rx: Some(rx), started, ready: None }
    }

    /// Apply `msgs` and commit them. When the store refuses the data (a value it cannot hold
    /// that validation let through), the touched partitions' in-memory state is rolled back to
    /// the store's and `msgs` is bisected: each half is applied and committed on its own, until
    /// the refused message is alone; it is then dead-lettered as `store_rejected` (`refused`
    /// set) and every other message is committed exactly once.
    fn apply_and_commit(
        &mut self,
        source: &mut dyn Source,
        msgs: &[Polled],
        refused: Option<&StoreError>,
        stats: &mut RunStats,
    ) -> Result<(u64, u64), Stop> {
        let started = Instant::now();
        let saved = self.positions();
        let (per_part, counters) = self.apply(source, msgs, refused);
        let touched: Vec<i32> = per_part.keys().copied().collect();
        let applied = Instant::now();
        stats.apply += applied - started;
        let result = self.commit(source, per_part, counters, None);
        stats.commit += applied.elapsed();
        let err = match result {
            Ok(r) => return Ok(r),
            Err(CommitError::Stop(stop)) => return Err(stop),
            Err(CommitError::Refused(e)) => e,
        };
        self.rollback(&touched, &saved)?;
        if refused.is_some() {
            return Err(Stop::Fatal(anyhow::Error::new(err).context(
                "the store refuses a commit that no single message can be blamed for (join state or dead letter)",
            )));
        }
        self.redo_refused(source, msgs, err, stats)
    }

    /// Redo `msgs`, whose commit the store refused and whose effect was rolled back: a single
    /// message is dead-lettered as `store_rejected`, more are bisected.
    fn redo_refused(
        &mut self,
        source: &mut dyn Source,
        msgs: &[Polled],
        err: StoreError,
        stats: &mut RunStats,
    ) -> Result<(u64, u64), Stop> {
        if msgs.is_empty() {
            return Err(Stop::Fatal(anyhow::Error::new(err).context(
                "the store refuses a commit that no single message can be blamed for (join state or dead letter)",
            )));
        }
        if let [m] = msgs {
            tracing::warn!(
                topic = %self.topics[m.topic_idx], partition = m.partition, offset = m.offset, error = %err,
                "the store refuses this message; dead-lettering it"
            );
            return self.apply_and_commit(source, msgs, Some(&err), stats);
        }
        tracing::warn!(messages = msgs.len(), error = %err, "the store refuses the batch; bisecting it");
        let (a, b) = msgs.split_at(msgs.len() / 2);
        let (ma, ra) = self.apply_and_commit(source, a, None, stats)?;
        let (mb, rb) = self.apply_and_commit(source, b, None, stats)?;
        Ok((ma + mb, ra + rb))
    }

    /// Every owned partition's incarnation and positions, to roll back to after a refused commit.
    fn positions(&self) -> HashMap<i32, Positions> {
        self.owned.iter().map(|(p, o)| (*p, (o.incarnation, o.progress.clone()))).collect()
    }

    /// Undo the in-memory effect of a batch the store refused: reload the touched partitions'
    /// join state from the store (which the failed transaction did not change) and restore their
    /// positions. A partition reloaded meanwhile (fenced) is already the store's.
    fn rollback(&mut self, touched: &[i32], saved: &HashMap<i32, Positions>) -> Result<(), Stop> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        for p in touched {
            let Some((incarnation, progress)) = saved.get(p) else { continue };
            if self.owned.get(p).is_none_or(|o| o.incarnation != *incarnation) {
                continue;
            }
            let snap = load_retrying(&self.runtime, &*self.store, *p, &topics, &self.telemetry, &self.shutdown)
                .ok_or(Stop::Shutdown)?;
            let join = PartitionJoin::restore(snap.entries, snap.watermark_ms).map_err(|e| {
                self.telemetry.restore_failures.inc();
                Stop::Fatal(anyhow::anyhow!("partition {p}: stored join state does not deserialize: {e}"))
            })?;
            if let Some(o) = self.owned.get_mut(p) {
                o.join = join;
                o.generation = snap.generation;
                o.progress = progress.clone();
            }
        }
        Ok(())
    }

    /// Apply messages to the join state of their partitions (and move idle partitions'
    /// watermarks); `refused` dead-letters every message as `store_rejected` instead.
    fn apply(
        &mut self,
        source: &mut dyn Source,
        msgs: &[Polled],
        refused: Option<&StoreError>,
    ) -> (BTreeMap<i32, PartWork>, JoinCounters) {
        let mut per_part: BTreeMap<i32, PartWork> = BTreeMap::new();
        let mut counters = JoinCounters::default();
        let listened = std::mem::take(&mut self.listened);
        let mut delivered: HashMap<i32, [bool; 3]> = HashMap::new();
        // Two passes, timed once each (never per event): decode every message, then join.
        let started = Instant::now();
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        decoded.extend(msgs.iter().map(|m| self.decode(m, refused)));
        let joining = Instant::now();
        for (m, decoded) in msgs.iter().zip(decoded.drain(..)) {
            let Some(owned) = self.owned.get_mut(&m.partition) else { continue };
            delivered.entry(m.partition).or_default()[m.topic_idx] = true;
            // Below the stored position: already applied by an earlier commit (or earlier in
            // this batch: a message read twice). Decoding skipped those below it at the start.
            if owned.progress.next(m.topic_idx).is_some_and(|n| m.offset < n) {
                continue;
            }
            let Some(decoded) = decoded else { continue };
            owned.progress.consumed(m.topic_idx, m.offset);
            let work = per_part.entry(m.partition).or_default();
            work.incarnation = owned.incarnation;
            work.offsets.insert(m.topic_idx, m.offset + 1);
            work.messages[m.topic_idx] += 1;
            match decoded {
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
                        let mut dead = join_dead_letter(topic, m, self.dead_letter_max_bytes, reject);
                        dead.payload = self.dead_letter_scrub.payload(dead.payload.take());
                        work.dead_letters.push(dead);
                    }
                }
                Err(reject) => {
                    let keep = self.dead_letter_max_bytes;
                    let payload = m.payload.as_ref().map(|p| p[..p.len().min(keep)].to_vec());
                    let payload = self.dead_letter_scrub.payload(payload);
                    work.dead_letters.push(DeadLetter {
                        topic: self.topics[m.topic_idx].clone(),
                        partition: m.partition,
                        offset: m.offset,
                        reason: reject.reason.as_str(),
                        detail: safe_detail(&reject.detail, DEAD_LETTER_DETAIL_MAX),
                        payload,
                        payload_len: m.len,
                        truncated: m.len > keep,
                    });
                }
            }
        }
        // Idle partitions too: their watermark moves when the other topics catch up, which
        // releases waiting outcomes and expires state even when no message arrives.
        let owned: Vec<i32> = self.owned.keys().copied().collect();
        // Asking the source for high watermarks may wait on the broker: not join time.
        let mut asking = Duration::ZERO;
        for p in owned {
            let asked = Instant::now();
            self.refresh_caught_up(source, p);
            asking += asked.elapsed();
            let Some(o) = self.owned.get_mut(&p) else { continue };
            o.progress.listened(listened, delivered.get(&p).copied().unwrap_or_default());
            let next_wm = if self.draining {
                o.progress.final_watermark(o.join.watermark_ms(), &self.watermark)
            } else {
                o.progress.next_watermark(o.join.watermark_ms(), &self.watermark)
            };
            let unsaved_starts = o.progress.take_unsaved_starts();
            if next_wm.is_none() && unsaved_starts.is_empty() && !per_part.contains_key(&p) {
                continue;
            }
            let work = per_part.entry(p).or_default();
            work.incarnation = o.incarnation;
            for (i, offset) in unsaved_starts {
                work.offsets.entry(i).or_insert(offset);
            }
            if let Some(wm) = next_wm {
                tracing::trace!(partition = p, watermark_ms = wm, "watermark advances");
                o.join.advance_watermark(wm);
            }
            o.join.release_due(&self.settings, &mut work.deltas);
            o.join.sweep(&self.settings, &mut work.deltas, false);
            work.watermark_ms = o.join.watermark_ms();
            let mut state = o.join.take_dirty();
            if let Some(bytes) = o.progress.take_persisted(&self.topics) {
                state.push((PROGRESS_KEY.to_string(), Some(bytes)));
            }
            work.state = state.into();
        }
        self.decoded = decoded;
        if !msgs.is_empty() {
            let b = &self.telemetry.batch;
            b.decode_seconds.observe((joining - started).as_secs_f64());
            b.join_seconds.observe(joining.elapsed().saturating_sub(asking).as_secs_f64());
        }
        (per_part, counters)
    }

    /// Decode one message of a batch; `None` when it is not to be applied (its partition is not
    /// owned, or it lies below the stored position: already applied by an earlier commit).
    /// `refused` makes it a `store_rejected` dead letter instead.
    fn decode(&self, m: &Polled, refused: Option<&StoreError>) -> Option<Result<Event, Reject>> {
        let owned = self.owned.get(&m.partition)?;
        if owned.progress.next(m.topic_idx).is_some_and(|n| m.offset < n) {
            return None;
        }
        let decoder = &self.decoders[m.topic_idx];
        Some(if let Some(e) = refused {
            Err(Reject::new(RejectReason::StoreRejected, format!("the store refused this message: {e}")))
        } else if m.cut() {
            Err(Reject::new(
                RejectReason::PayloadTooLarge,
                format!("payload is {} bytes, limit {}", m.len, decoder.config().max_payload_bytes),
            ))
        } else {
            decoder.decode(m.payload.as_deref(), m.broker_ts)
        })
    }

    /// Commit one batch. A fenced partition is dropped from it and reloaded; an unavailable
    /// store is retried with backoff while the source stays a live group member (`hold`), until
    /// it commits or shutdown is requested; a refusal of the data goes back to the caller to
    /// bisect; any other store error stops the pipeline.
    fn commit(
        &mut self,
        source: &mut dyn Source,
        mut per_part: BTreeMap<i32, PartWork>,
        counters: JoinCounters,
        mut started: Option<Attempt>,
    ) -> Result<(u64, u64), CommitError> {
        let mut delay = Duration::from_millis(100);
        let mut held = false;
        let result = loop {
            if per_part.is_empty() {
                break Ok((0, 0));
            }
            let (batch, attempt, outcome) = match started.take() {
                Some(Attempt { ready: Some((batch, outcome)), started, .. }) => (batch, started, Some(outcome)),
                // `None`: abandoned after shutdown, or the thread died (its sender dropped).
                Some(Attempt { rx: Some(rx), started, .. }) => {
                    match block_on_unless_shutdown(&self.runtime, rx, &self.shutdown).and_then(Result::ok) {
                        Some((batch, outcome)) => (batch, started, Some(outcome)),
                        None => (CommitBatch::default(), started, None),
                    }
                }
                _ => {
                    let batch = self.build_batch(&per_part);
                    let attempt = Instant::now();
                    let outcome = block_on_unless_shutdown(&self.runtime, self.store.commit(&batch), &self.shutdown);
                    (batch, attempt, outcome)
                }
            };
            let Some(outcome) = outcome else {
                if !self.shutdown.load(Ordering::Relaxed) {
                    break Err(CommitError::Stop(Stop::Fatal(anyhow::anyhow!(
                        "the commit thread ended without a result (see the log for its panic)"
                    ))));
                }
                tracing::warn!("a commit still running after shutdown was requested is abandoned");
                break Err(CommitError::Stop(Stop::Shutdown));
            };
            self.telemetry.batch.commit_seconds.observe(attempt.elapsed().as_secs_f64());
            if let Err(e) = &outcome {
                self.telemetry.store_errors.count(e.kind());
            }
            match outcome {
                Ok(CommitOutcome::Committed(gens)) => {
                    for (p, g) in gens {
                        // Only the incarnation whose state this batch wrote moves on; one loaded
                        // meanwhile (reassigned) keeps the generation it read and is fenced.
                        let wrote = per_part.get(&p).map(|w| w.incarnation);
                        if let Some(o) = self.owned.get_mut(&p).filter(|o| Some(o.incarnation) == wrote) {
                            o.generation = g;
                        }
                    }
                    // Not ready while a partition is not consumed, however well the others go.
                    self.telemetry.set_ready(self.unrestorable.is_empty());
                    break Ok(self.after_commit(source, &per_part, &batch, &counters));
                }
                Ok(CommitOutcome::Fenced(p)) => {
                    self.telemetry.fenced.inc();
                    tracing::warn!(partition = p, "partition was committed by another owner; reloading it");
                    per_part.remove(&p);
                    if let Err(stop) = self.reload(source, p) {
                        break Err(CommitError::Stop(stop));
                    }
                }
                Err(e @ StoreError::Transient { .. }) => {
                    self.telemetry.commit_failures.inc();
                    self.telemetry.set_ready(false);
                    tracing::error!(error = %e, "commit failed; retrying the same batch");
                    held = true;
                    if !self.hold(source, delay) {
                        break Err(CommitError::Stop(Stop::Shutdown));
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    // A commit whose acknowledgement was lost shows up as a fence on the retry.
                }
                Err(e @ StoreError::BadData { .. }) => {
                    self.telemetry.commit_failures.inc();
                    break Err(CommitError::Refused(e));
                }
                Err(e @ StoreError::Fatal { .. }) => {
                    self.telemetry.commit_failures.inc();
                    self.telemetry.set_ready(false);
                    break Err(CommitError::Stop(Stop::Fatal(anyhow::Error::new(e).context("committing a batch"))));
                }
            }
        };
        if held {
            source.release();
        }
        result
    }

    /// Wait `delay` before a commit retry, keeping the source a live group member; false once
    /// shutdown is requested (the batch is then dropped uncommitted).
    fn hold(&self, source: &mut dyn Source, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            source.hold((until - now).min(Duration::from_millis(100)));
        }
    }

    fn build_batch(&self, per_part: &BTreeMap<i32, PartWork>) -> CommitBatch {
        let mut batch = CommitBatch::default();
        for (p, work) in per_part {
            let Some(owned) = self.owned.get(p) else { continue };
            batch.partitions.push(PartitionCommit {
                partition: *p,
                expected_generation: owned.generation,
                watermark_ms: work.watermark_ms,
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
        t.dimension_values_capped(&counters.capped);
        t.batches.inc();
        t.last_commit.set(crate::telemetry::unix_now_seconds());
        if messages > 0 {
            t.batch.events.observe(messages as f64);
        }
        source.committed(&positions);
        if let Some(r) = &self.rescoring {
            // Committed as pending: only now may they be scored (a score for an uncommitted row
            // would have nothing to land on).
            r.submit(per_part.values().flat_map(|w| w.jobs.iter().cloned()).collect());
        }
        (messages, batch.dead_letters.len() as u64)
    }

    /// Drop a partition's in-memory state, reload it from the store and re-read from there.
    /// Loading is retried until it succeeds (counted, readiness off meanwhile); a partition whose
    /// state does not deserialize is not consumed until it does ([`Unrestorable`]).
    fn reload(&mut self, source: &mut dyn Source, partition: i32) -> Result<(), Stop> {
        self.owned.remove(&partition);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let snap = load_retrying(&self.runtime, &*self.store, partition, &topics, &self.telemetry, &self.shutdown)
            .ok_or(Stop::Shutdown)?;
        for (i, topic) in self.topics.iter().enumerate() {
            if let Err(e) = source.seek(i, partition, snap.offsets.get(topic).copied()) {
                // The usual cause: the partition was revoked (another owner committed it); the
                // revocation follows, or a new assignment loads it again.
                self.telemetry.restore_failures.inc();
                tracing::error!(topic, partition, error = %format!("{e:#}"), "seek after reload failed; partition not owned until reassigned");
                self.unrestorable.remove(&partition);
                return Ok(());
            }
        }
        match Owned::from_snapshot(snap, &self.topics) {
            Ok(o) => {
                self.own(partition, o);
                Ok(())
            }
            Err(e) => {
                self.mark_unrestorable(partition, &e);
                Ok(())
            }
        }
    }

    fn publish_gauges(&self) {
        let t = &self.telemetry;
        t.open_conversations.set(self.owned.values().map(|o| o.join.open_conversations() as i64).sum());
        t.pending_outcomes.set(self.owned.values().map(|o| o.join.pending_outcomes() as i64).sum());
        if let Some(wm) = self.owned.values().map(|o| o.join.watermark_ms()).filter(|w| *w > 0).min() {
            t.watermark_seconds.set(wm / 1000);
        }
        let mut lags = Vec::with_capacity(self.owned.len() * 3);
        for (p, o) in &self.owned {
            for (i, lag) in o.lag.iter().enumerate() {
                if let Some(lag) = lag {
                    lags.push((self.topics[i].as_str(), *p, *lag));
                }
            }
        }
        t.set_consumer_lag(&lags);
    }
}

/// Messages from `next` (the position committed with this batch) to `high` (one past the last
/// available offset); unknown unless both are known. A high watermark older than the position
/// (cached before the last fetch) counts as caught up.
fn consumer_lag(high: Option<i64>, next: Option<i64>) -> Option<i64> {
    Some((high? - next?).max(0))
}

/// A partition's incarnation and its topics' progress (positions, event times).
type Positions = (u64, TopicProgress);

/// A commit running on its own thread (`rx: None`: it could not be started; commit in line).
struct Attempt {
    rx: Option<tokio::sync::oneshot::Receiver<CommitResult>>,
    started: Instant,
    /// The result, once taken from `rx` by `is_ready`.
    ready: Option<CommitResult>,
}

/// What a commit thread hands back: the batch it wrote and the store's answer.
type CommitResult = (CommitBatch, Result<CommitOutcome, StoreError>);

impl Attempt {
    /// Whether the commit has finished (or could not start), without waiting.
    fn is_ready(&mut self) -> bool {
        if self.ready.is_none() {
            match &mut self.rx {
                Some(rx) => match rx.try_recv() {
                    Ok(r) => self.ready = Some(r),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return false,
                    // The thread died: `commit` reports it as fatal.
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return true,
                },
                None => return true,
            }
        }
        true
    }
}

/// A batch applied in memory whose commit is running.
struct InFlight {
    msgs: Vec<Polled>,
    per_part: BTreeMap<i32, PartWork>,
    counters: JoinCounters,
    /// Positions before the batch was applied, to roll back to if the store refuses it.
    saved: HashMap<i32, Positions>,
    attempt: Attempt,
}

impl Settled {
    /// (messages, rejected) committed.
    fn counts(&self) -> (u64, u64) {
        match *self {
            Settled::Committed(m, r) | Settled::RedoneWithNext(m, r) => (m, r),
        }
    }
}

/// How the batch in flight ended.
enum Settled {
    /// Committed: (messages, rejected) of it.
    Committed(u64, u64),
    /// Refused, then redone one at a time together with the batch applied after it: (messages,
    /// rejected) of both.
    RedoneWithNext(u64, u64),
}

/// Why the pipeline stops before its source is done.
enum Stop {
    /// Shutdown was requested while the store was unavailable: the batch in flight is dropped
    /// uncommitted (it is re-read from the stored offsets on restart).
    Shutdown,
    /// An error that retrying cannot fix.
    Fatal(anyhow::Error),
}

/// A commit that did not go through.
enum CommitError {
    /// The store refused a value of the batch: bisect it.
    Refused(StoreError),
    Stop(Stop),
}

/// What one partition contributes to a batch.
#[derive(Default)]
struct PartWork {
    /// The incarnation of the partition this work was applied to.
    incarnation: u64,
    /// The partition's watermark once this work was applied (the next batch may move it on
    /// before this one commits).
    watermark_ms: i64,
    deltas: Deltas,
    /// Shared with the commit's copy (see `PartitionCommit::state`).
    state: Arc<[(String, Option<Vec<u8>>)]>,
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
    let len = m.len;
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

#[cfg(test)]
mod tests {
    use super::consumer_lag;

    #[test]
    fn consumer_lag_needs_both_ends_and_is_never_negative() {
        assert_eq!(consumer_lag(Some(120), Some(100)), Some(20));
        assert_eq!(consumer_lag(Some(100), Some(100)), Some(0));
        // A high watermark cached before the last fetch.
        assert_eq!(consumer_lag(Some(90), Some(100)), Some(0));
        assert_eq!(consumer_lag(None, Some(100)), None);
        assert_eq!(consumer_lag(Some(100), None), None);
    }
}
