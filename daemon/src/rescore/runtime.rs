//! The rescoring slice inside the daemon (docs/architecture.md#the-rescoring-slice): which decisions the pipeline
//! samples, how their scores come back, and how nothing is lost or counted twice.
//!
//! * On the hot path [`Rescoring::sample`] decides (deterministically in `event_id`) and builds the
//!   sample row; the row is committed **with the batch** that applied the decision, as `pending`.
//! * After that commit, [`Rescoring::submit`] queues the texts on the [`RescorePool`] without
//!   waiting. A full queue sheds: the row is marked `shed` and the estimates reweight what was kept
//!   (`rescore_estimates_daily`), so ingestion never waits and the weights stay right.
//! * One writer task applies scores and sheds with [`Store::apply_rescores`], which only changes
//!   rows still `pending` and records the score in the drift histograms in the same transaction:
//!   exactly once however often a result is delivered.
//! * A recovery task picks up rows left `pending` by a crash (or an instance that went away):
//!   rescored when their text was kept, otherwise marked shed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::model::valid_score;
use super::pool::{Job, ModelHandle, ModelWatcher, Outcome, PoolConfig, RescorePool};
use super::RescoreConfig;
use crate::event::{Feedback, FeedbackKind, RoutingDecision};
use crate::privacy::{keyed_hash, TextPrivacy};
use crate::store::{RescoreOutcome, RescoreResult, RescoreSample, ReviewLabel, Store};
use crate::telemetry::{RescoreMetrics, StoreErrors};

/// A sampled decision: the row to commit and the text to score once it is committed.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub row: RescoreSample,
    pub text: String,
}

/// Results applied per store transaction at most.
const WRITE_BATCH: usize = 4096;
/// How long the writer lets results accumulate after the first one: one transaction per linger
/// instead of one per trickle keeps it from competing with the pipeline's commits.
const WRITE_LINGER: Duration = Duration::from_millis(250);

/// The running rescoring slice: model, worker pool, result writer and recovery.
pub struct Rescoring {
    cfg: RescoreConfig,
    model: Arc<ModelHandle>,
    pool: Option<Arc<RescorePool<String>>>,
    shed_tx: Option<UnboundedSender<RescoreResult>>,
    // The store's futures are not `Send` (async fn in trait), so these drive theirs on their own
    // threads with `block_on`, as the pipeline does.
    writer: Option<std::thread::JoinHandle<()>>,
    recovery: Option<std::thread::JoinHandle<()>>,
    stop_recovery: Arc<AtomicBool>,
    _watcher: Option<ModelWatcher>,
}

impl Rescoring {
    /// Load the model (refusing a broken one with the reason), start the workers, the result
    /// writer, the recovery task and the model-file watcher.
    pub fn start<S: Store + 'static>(
        cfg: &RescoreConfig,
        store: Arc<S>,
        runtime: tokio::runtime::Handle,
        metrics: RescoreMetrics,
    ) -> anyhow::Result<Self> {
        let store_errors = metrics.store_errors.clone();
        let model = ModelHandle::load(&cfg.model_path, metrics.clone())
            .with_context(|| format!("rescore.model_path `{}`", cfg.model_path))?;
        let watcher = model
            .spawn_watcher(Duration::from_secs_f64(cfg.reload_poll_seconds))
            .context("starting the rescore model watcher")?;
        let (scored_tx, scored_rx) = unbounded_channel();
        let (shed_tx, shed_rx) = unbounded_channel();
        let pool = Arc::new(
            RescorePool::new(
                PoolConfig { workers: cfg.workers, queue_capacity: cfg.queue_capacity, batch_size: cfg.batch_size },
                model.clone(),
                scored_tx,
                metrics,
            )
            .context("starting the rescore workers")?,
        );
        let writer = {
            let (rt, store, errors) = (runtime.clone(), store.clone(), store_errors.clone());
            std::thread::Builder::new()
                .name("rescore-writer".into())
                .spawn(move || rt.block_on(write_results(store, scored_rx, shed_rx, errors)))
                .context("starting the rescore writer")?
        };
        let stop_recovery = Arc::new(AtomicBool::new(false));
        let recovery = {
            let (pool, shed, stop) = (pool.clone(), shed_tx.clone(), stop_recovery.clone());
            let after = Duration::from_secs_f64(cfg.recover_after_seconds);
            std::thread::Builder::new()
                .name("rescore-recovery".into())
                .spawn(move || runtime.block_on(recover(store, pool, shed, after, stop, store_errors)))
                .context("starting the rescore recovery")?
        };
        tracing::info!(model = %cfg.model_path, version = %model.current().version(), "rescorer loaded");
        Ok(Rescoring {
            cfg: cfg.clone(),
            model,
            pool: Some(pool),
            shed_tx: Some(shed_tx),
            writer: Some(writer),
            recovery: Some(recovery),
            stop_recovery,
            _watcher: Some(watcher),
        })
    }

    /// The served model, e.g. for a SIGHUP handler to reload it (a broken file is refused and
    /// the previous model keeps serving).
    pub fn model(&self) -> Arc<ModelHandle> {
        self.model.clone()
    }

    /// Decide whether `d` (read from `partition`) is sampled. Decisions without query text are
    /// not: there is nothing to rescore.
    pub fn sample(&self, d: &RoutingDecision, partition: i32) -> Option<Sampled> {
        let text = d.query_text.as_deref().filter(|t| !t.trim().is_empty())?;
        let mut ood_score = None;
        let s = self.cfg.sampler.sample(&d.event_id, d.confidence, d.threshold, || {
            // A featurization without the model run: a few µs, only when the draw depends on it.
            let v = self.model.current().ood_score(text);
            ood_score = Some(v);
            v
        })?;
        let (query_text, query_hash) = stored_text(self.cfg.store_text, &self.cfg.hash_key, text);
        Some(Sampled {
            row: RescoreSample {
                event_id: d.event_id.clone(),
                conversation_id: d.conversation_id.clone(),
                turn: d.turn,
                partition,
                ts_ms: d.ts,
                tier: d.tier.clone(),
                model: d.model.clone(),
                classifier_version: d.classifier_version.clone(),
                router: d.router.as_str().to_owned(),
                segment: d.segment.clone().unwrap_or_default(),
                router_confidence: Some(d.confidence),
                threshold: d.threshold,
                margin: s.margin,
                ood_score: s.ood.or(ood_score),
                p: s.p,
                w: s.w,
                reason: s.reason.to_owned(),
                query_text,
                query_hash,
            },
            text: text.to_owned(),
        })
    }

    /// Queue committed samples for scoring; what does not fit is marked shed.
    pub fn submit(&self, jobs: Vec<(String, String)>) {
        let (Some(pool), Some(shed)) = (&self.pool, &self.shed_tx) else { return };
        for (event_id, text) in jobs {
            if let Err(job) = pool.try_submit(Job { text, payload: event_id }) {
                let _ = shed.send(RescoreResult { event_id: job.payload, outcome: RescoreOutcome::Shed });
            }
        }
    }

    /// Stop: score what is queued, write every result, then return.
    pub fn finish(mut self) {
        self.stop_recovery.store(true, Ordering::Relaxed);
        if let Some(r) = self.recovery.take() {
            let _ = r.join();
        }
        drop(self.shed_tx.take());
        if let Some(pool) = self.pool.take() {
            match Arc::try_unwrap(pool) {
                // Dropping the pool closes its queue and joins the workers once it is empty.
                Ok(pool) => pool.shutdown(),
                Err(_) => tracing::warn!("rescore pool still shared at shutdown; queued items stay pending"),
            }
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The HUMAN_REVIEW label a feedback event carries for its turn, if any (a turn-less review
/// cannot name its sample row; it still counts in the quality tables through the join).
pub fn review_label(f: &Feedback) -> Option<ReviewLabel> {
    if f.kind != FeedbackKind::HumanReview {
        return None;
    }
    Some(ReviewLabel {
        conversation_id: f.conversation_id.clone(),
        turn: f.turn?,
        addressed: f.score? >= 0.5,
        reviewed_ms: f.ts,
    })
}

/// What the review queue keeps of a query: (text, keyed hash) per the privacy setting.
fn stored_text(privacy: TextPrivacy, key: &str, text: &str) -> (Option<String>, Option<String>) {
    match privacy {
        TextPrivacy::Full => (Some(text.to_owned()), None),
        TextPrivacy::Hashed => (None, Some(keyed_hash(key, text))),
        TextPrivacy::None => (None, None),
    }
}

/// Apply scores and sheds in store transactions, retrying a failed write with the same results
/// (idempotent) until it lands; ends when both channels are closed and drained.
async fn write_results<S: Store>(
    store: Arc<S>,
    mut scored: UnboundedReceiver<Outcome<String>>,
    mut shed: UnboundedReceiver<RescoreResult>,
    store_errors: StoreErrors,
) {
    let (mut scored_open, mut shed_open) = (true, true);
    let mut buf: Vec<RescoreResult> = Vec::new();
    while scored_open || shed_open || !buf.is_empty() {
        if buf.is_empty() {
            tokio::select! {
                r = scored.recv(), if scored_open => match r {
                    Some(o) => buf.push(to_result(o)),
                    None => scored_open = false,
                },
                r = shed.recv(), if shed_open => match r {
                    Some(x) => buf.push(x),
                    None => shed_open = false,
                },
                else => {}
            }
            if !buf.is_empty() && (scored_open || shed_open) {
                tokio::time::sleep(WRITE_LINGER).await;
            }
        }
        while buf.len() < WRITE_BATCH {
            match scored.try_recv() {
                Ok(o) => buf.push(to_result(o)),
                Err(_) => break,
            }
        }
        while buf.len() < WRITE_BATCH {
            match shed.try_recv() {
                Ok(x) => buf.push(x),
                Err(_) => break,
            }
        }
        if buf.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match store.apply_rescores(&buf).await {
                Ok(_) => break,
                Err(e) => {
                    store_errors.count_error(&e);
                    tracing::error!(error = %format!("{e:#}"), n = buf.len(), "writing rescore results failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        buf.clear();
    }
}

/// A store transaction refuses a whole buffer for one score out of range, so a score that is not a
/// probability (or a threshold that is not finite) sheds its own sample here, never the others.
fn to_result(o: Outcome<String>) -> RescoreResult {
    match o {
        Ok(s) if !(valid_score(s.p_complex) && s.threshold.is_finite()) => {
            tracing::warn!(p_complex = s.p_complex, threshold = s.threshold, model = %s.model_version, "rescore out of range; sample marked shed");
            RescoreResult { event_id: s.payload, outcome: RescoreOutcome::Shed }
        }
        Ok(s) => RescoreResult {
            event_id: s.payload,
            outcome: RescoreOutcome::Scored {
                p_complex: f64::from(s.p_complex),
                model_version: s.model_version.to_string(),
                threshold: f64::from(s.threshold),
            },
        },
        Err(f) => {
            // Not retried: the row becomes non-response and the estimate reweights the rest.
            tracing::warn!(error = %f.error, model = %f.model_version, "rescoring failed; sample marked shed");
            RescoreResult { event_id: f.payload, outcome: RescoreOutcome::Shed }
        }
    }
}

/// Every `after / 4` (at least 1 s): rows committed more than `after` ago and still pending.
async fn recover<S: Store>(
    store: Arc<S>,
    pool: Arc<RescorePool<String>>,
    shed: UnboundedSender<RescoreResult>,
    after: Duration,
    stop: Arc<AtomicBool>,
    store_errors: StoreErrors,
) {
    let every = (after / 4).max(Duration::from_secs(1));
    let mut next = tokio::time::Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::time::Instant::now() < next {
            continue;
        }
        next = tokio::time::Instant::now() + every;
        let before = chrono::Utc::now().timestamp_millis() - after.as_millis() as i64;
        let pending = match store.pending_rescores(before, 1000).await {
            Ok(p) => p,
            Err(e) => {
                store_errors.count_error(&e);
                tracing::warn!(error = %format!("{e:#}"), "looking for unscored samples failed");
                continue;
            }
        };
        if !pending.is_empty() {
            tracing::info!(n = pending.len(), "recovering unscored samples");
        }
        for (event_id, text) in pending {
            match text {
                Some(text) => {
                    // Full queue: leave it pending for the next round.
                    let _ = pool.try_submit(Job { text, payload: event_id });
                }
                None => {
                    let _ = shed.send(RescoreResult { event_id, outcome: RescoreOutcome::Shed });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_out_of_range_sheds_only_its_own_sample() {
        use crate::rescore::pool::Scored;
        let scored = |id: &str, p: f32, th: f32| {
            Ok(Scored { payload: id.to_string(), p_complex: p, model_version: "m".into(), threshold: th })
        };
        let buf: Vec<RescoreResult> = vec![
            scored("a", 0.25, 0.5),
            scored("b", f32::NAN, 0.5),
            scored("c", 1.5, 0.5),
            scored("d", 1.0, 0.5),
            scored("e", 0.0, f32::INFINITY),
        ]
        .into_iter()
        .map(to_result)
        .collect();
        let shed: Vec<&str> =
            buf.iter().filter(|r| r.outcome == RescoreOutcome::Shed).map(|r| r.event_id.as_str()).collect();
        assert_eq!(shed, ["b", "c", "e"]);
        // What remains is a buffer the store accepts as a whole.
        assert!(crate::store::validate_rescores(&buf).is_ok());
    }

    #[test]
    fn keyed_hash_depends_on_key_and_text() {
        let a = keyed_hash("k1", "where is my charge from?");
        // Python: hmac.new(b"k1", b"where is my charge from?", hashlib.sha256).hexdigest()
        assert_eq!(a, "fe745510e1ccb6e26536cdfdd71601d8ab3175b159b6540924c4c3ad6838e249");
        assert_eq!(a, keyed_hash("k1", "where is my charge from?"));
        assert_ne!(a, keyed_hash("k2", "where is my charge from?"));
        assert_ne!(a, keyed_hash("k1", "where is my charge from"));
    }

    #[test]
    fn privacy_settings_keep_text_hash_or_nothing() {
        let t = "refund for order 1234?";
        assert_eq!(stored_text(TextPrivacy::Full, "k", t), (Some(t.to_owned()), None));
        let (text, hash) = stored_text(TextPrivacy::Hashed, "k", t);
        assert_eq!(text, None);
        assert_eq!(hash, Some(keyed_hash("k", t)));
        assert!(!hash.unwrap().contains("1234"));
        assert_eq!(stored_text(TextPrivacy::None, "k", t), (None, None));
    }

    #[test]
    fn review_labels_need_a_turn_and_a_score() {
        let mut f = Feedback {
            score: Some(0.0),
            ..crate::testkit::feedback("f1", "c1", Some(2), 1_000, FeedbackKind::HumanReview)
        };
        let l = review_label(&f).unwrap();
        assert_eq!((l.turn, l.addressed, l.reviewed_ms), (2, false, 1_000));
        f.score = Some(1.0);
        assert!(review_label(&f).unwrap().addressed);
        f.turn = None;
        assert!(review_label(&f).is_none());
        f.turn = Some(2);
        f.kind = FeedbackKind::ThumbsDown;
        assert!(review_label(&f).is_none());
    }
}
