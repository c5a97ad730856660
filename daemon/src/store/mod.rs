//! Storage: what a batch commits and what an assignment loads, behind a small trait so the
//! pipeline is testable without a database. Two backends implement it, [`postgres`] and
//! [`sqlite`], each with its evaluator store (`postgres/eval.rs`, `sqlite/eval.rs`). What they do
//! alike is written once, over what differs: the load and the fenced commit of a batch in
//! `commit.rs` (each backend's fence statement and bulk writers), the evaluator's storage in
//! `eval.rs` (each backend's SQL texts), both on the sqlx glue of `sql.rs`.

mod commit;
pub mod error;
mod eval;
mod migrations;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use self::sql::{args, Backend, Columns};
use crate::metrics::{ConfDelta, ConfKey, Deltas};
pub use error::{StoreError, StoreErrorKind};

/// A dead letter's `detail`, safe to store and print: control characters (NUL included) escaped
/// as `\u{..}`, at most `max` bytes (cut on a character boundary, marked with `…`).
pub fn safe_detail(detail: &str, max: usize) -> String {
    let mut out = String::with_capacity(detail.len().min(max));
    for ch in detail.chars() {
        let piece = if ch.is_control() { ch.escape_unicode().to_string() } else { ch.to_string() };
        if out.len() + piece.len() > max.saturating_sub(3) {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Longest stored dead-letter `detail`, in bytes.
pub const DEAD_LETTER_DETAIL_MAX: usize = 1024;

/// A rejected message, kept with enough context to find and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'static str,
    pub detail: String,
    /// The raw bytes, truncated to the configured bound.
    pub payload: Option<Vec<u8>>,
    /// Length of the original payload.
    pub payload_len: usize,
    pub truncated: bool,
}

/// Everything persisted about one partition (of all three co-partitioned topics).
#[derive(Debug, Clone, Default)]
pub struct PartitionSnapshot {
    pub partition: i32,
    /// Bumped by every commit; a commit that expects a different generation is fenced.
    pub generation: i64,
    pub watermark_ms: i64,
    /// topic → next offset to consume.
    pub offsets: HashMap<String, i64>,
    /// Join state entries (`c:…`, `t:…`) → serialized state.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// One partition's share of a batch.
#[derive(Debug, Clone, Default)]
pub struct PartitionCommit {
    pub partition: i32,
    pub expected_generation: i64,
    pub watermark_ms: i64,
    /// (key, Some(state)) to upsert, (key, None) to delete. Shared with the pipeline's copy of
    /// the batch (kept until the commit is acknowledged, to rebuild the batch after a fence):
    /// a batch's serialized state is tens of megabytes while catching up.
    pub state: Arc<[(String, Option<Vec<u8>>)]>,
    /// (topic, next offset).
    pub offsets: Vec<(String, i64)>,
    /// Confidence histogram deltas of this partition, merged into its stored rows.
    pub conf: Vec<(ConfKey, ConfDelta)>,
}

/// A sampled decision for the rescoring slice (docs/contract.md#rescoring-slice), stored in `tw_rescore_samples` as
/// `pending` by the commit of the batch that carried the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct RescoreSample {
    pub event_id: String,
    pub conversation_id: String,
    pub turn: i32,
    /// Kafka partition of the decision: the rescore's histogram row goes to this partition's
    /// `tw_conf_hist` rows, written under its fence.
    pub partition: i32,
    /// Decision time (event time), epoch ms.
    pub ts_ms: i64,
    pub tier: String,
    pub model: String,
    pub classifier_version: String,
    pub router: String,
    /// '' when the event had none.
    pub segment: String,
    pub router_confidence: Option<f64>,
    pub threshold: Option<f64>,
    pub margin: Option<f64>,
    pub ood_score: Option<f64>,
    /// Inclusion probability, in (0, 1].
    pub p: f64,
    /// `1/p`.
    pub w: f64,
    /// Sampler reason (`rescore::sampler::REASONS`).
    pub reason: String,
    /// `None` where redacted or not kept (privacy).
    pub query_text: Option<String>,
    pub query_hash: Option<String>,
}

/// A HUMAN_REVIEW label for a turn (score 1 → addressed). Applied to the turn's sample row if it
/// has one (the latest review by `reviewed_ms` wins); a label for an unsampled turn changes nothing
/// here (it still counts in the quality tables through the join).
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewLabel {
    pub conversation_id: String,
    pub turn: i32,
    pub addressed: bool,
    /// Event time of the review, epoch ms.
    pub reviewed_ms: i64,
}

/// What the rescorer did with a pending sample.
#[derive(Debug, Clone, PartialEq)]
pub enum RescoreOutcome {
    /// Scored: `p_complex` is the probability the query needs the capable tier; `threshold` is θ.
    Scored { p_complex: f64, model_version: String, threshold: f64 },
    /// Dropped under load; the scored rows of the same (day, tier, reason) carry its weight.
    Shed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RescoreResult {
    pub event_id: String,
    pub outcome: RescoreOutcome,
}

/// One atomic unit of effect: state, offsets, aggregate deltas, dead letters, rescoring samples
/// and review labels.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    pub partitions: Vec<PartitionCommit>,
    pub deltas: Deltas,
    pub dead_letters: Vec<DeadLetter>,
    /// Inserted `ON CONFLICT DO NOTHING` (a replayed batch changes nothing).
    pub rescore_samples: Vec<RescoreSample>,
    /// Applied after the samples, so a label for a turn sampled in the same batch lands.
    pub review_labels: Vec<ReviewLabel>,
}

impl CommitBatch {
    /// Nothing to write but (possibly) offsets, state and fences: no aggregate delta, dead letter,
    /// sample or review label. A batch with only samples is not empty and must be committed.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
            && self.partitions.iter().all(|p| p.conf.is_empty())
            && self.dead_letters.is_empty()
            && self.rescore_samples.is_empty()
            && self.review_labels.is_empty()
    }

    /// Every partition's confidence-histogram deltas, sorted (the stores' lock order).
    pub fn conf_rows(&self) -> Vec<(i32, &ConfKey, &ConfDelta)> {
        let mut rows: Vec<_> =
            self.partitions.iter().flat_map(|p| p.conf.iter().map(move |(k, v)| (p.partition, k, v))).collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        rows
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed; the new generation of every partition in the batch.
    Committed(HashMap<i32, i64>),
    /// Another owner committed this partition since we loaded it: nothing was written.
    Fenced(i32),
}

/// Settings the views need (written at startup).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSettings {
    pub attribution_window_ms: i64,
    pub baseline_from: Option<chrono::NaiveDate>,
    pub baseline_to: Option<chrono::NaiveDate>,
    pub baseline_tier: String,
    /// Mature days with traffic that form a tier's own failed-deflection baseline when no
    /// baseline date range applies (`deflection_daily.own_baseline_rate`); the quality rule's
    /// `alerts.quality.baseline_days`.
    pub own_baseline_days: u32,
}

impl ViewSettings {
    /// The `tw_settings` rows, (key, value).
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("attribution_window_ms", self.attribution_window_ms.to_string()),
            ("baseline_tier", self.baseline_tier.clone()),
            ("own_baseline_days", self.own_baseline_days.to_string()),
        ];
        if let (Some(a), Some(b)) = (self.baseline_from, self.baseline_to) {
            rows.push(("baseline_from", a.to_string()));
            rows.push(("baseline_to", b.to_string()));
        }
        rows
    }
}

/// Writes the settings rows; an upsert, because instances of one group start concurrently: with a
/// plain INSERT after the DELETE, the second of two simultaneous startups failed on the key the
/// first had inserted but not yet committed, and that instance exited.
pub const UPSERT_SETTING_SQL: &str =
    "INSERT INTO tw_settings(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Replace the settings rows ([`Store::write_settings`]).
async fn write_settings<B: Backend>(store: &B, s: &ViewSettings) -> anyhow::Result<()> {
    let mut tx = store.pool().begin().await?;
    B::execute(&mut tx, "DELETE FROM tw_settings", args![]).await?;
    for (k, v) in s.rows() {
        B::execute(&mut tx, UPSERT_SETTING_SQL, args![k, v.as_str()]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The storage the pipeline needs.
#[allow(async_fn_in_trait)]
pub trait Store: Send + Sync {
    /// Apply the schema migrations.
    async fn migrate(&self) -> anyhow::Result<()>;
    async fn write_settings(&self, s: &ViewSettings) -> anyhow::Result<()>;
    /// Load one partition's generation, watermark, offsets for `topics` and join state.
    async fn load_partition(&self, partition: i32, topics: &[&str]) -> Result<PartitionSnapshot, StoreError>;
    /// Commit a batch atomically, fenced on each partition's generation. Nothing is written when
    /// it fails.
    async fn commit(&self, batch: &CommitBatch) -> Result<CommitOutcome, StoreError>;
    /// Store rescorer results. Only rows still `pending` change (applying a result twice, or after
    /// a shed, changes nothing); each newly scored row's `p_complex` is merged into the drift
    /// histograms (`Signal::RescoreScore`, the decision's hour, partition, classifier_version and
    /// router; one conversation per row) in the same transaction. Returns the rows changed.
    async fn apply_rescores(&self, results: &[RescoreResult]) -> anyhow::Result<u64>;
    /// Samples still `pending` that were stored before `inserted_before_ms` (wall clock), oldest
    /// first, at most `limit`: `(event_id, query_text)`, to re-queue after a restart.
    async fn pending_rescores(
        &self,
        inserted_before_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(String, Option<String>)>>;
    /// Retention: delete dead letters written before `dead_letters_before_ms` and review-queue
    /// rows (sampled decisions) inserted before `review_before_ms` (wall clock, ms); None keeps
    /// them. Returns the rows deleted of each.
    async fn delete_expired(
        &self,
        dead_letters_before_ms: Option<i64>,
        review_before_ms: Option<i64>,
    ) -> anyhow::Result<(u64, u64)>;
}

/// The drift-histogram deltas of newly scored samples, given as
/// `(partition, decision ts_ms, classifier_version, router, p_complex, routed off the capable tier)`,
/// grouped per partition in a [`CommitBatch`] so both stores merge them with their `write_conf`.
/// Refuse results that would corrupt a stored number (p_complex outside [0, 1] or NaN, a
/// non-finite θ) before anything is written.
pub(crate) fn validate_rescores(results: &[RescoreResult]) -> anyhow::Result<()> {
    for r in results {
        if let RescoreOutcome::Scored { p_complex, threshold, .. } = &r.outcome {
            if !((0.0..=1.0).contains(p_complex) && threshold.is_finite()) {
                anyhow::bail!("rescore of {}: p_complex {p_complex} / threshold {threshold} out of range", r.event_id);
            }
        }
    }
    Ok(())
}

pub(crate) fn rescore_conf_rows(scored: &[(i32, i64, String, String, f64, bool)]) -> CommitBatch {
    let mut by_part: std::collections::BTreeMap<i32, HashMap<ConfKey, ConfDelta>> = Default::default();
    for (partition, ts_ms, cv, router, p_complex, cheap) in scored {
        let key = ConfKey {
            hour_ms: crate::metrics::hour_start(*ts_ms),
            signal: crate::metrics::Signal::RescoreScore,
            classifier_version: cv.clone(),
            router: router.clone(),
        };
        let d = by_part.entry(*partition).or_default().entry(key).or_default();
        // validate_rescores has checked p_complex ∈ [0, 1]; a value the histogram refuses is
        // not counted at all rather than counted without its score.
        if !d.hist.record(*p_complex) {
            continue;
        }
        // Each scored sample is one decision and counted as one conversation: samples are sparse
        // (a few % of traffic), so two samples of one conversation in an hour are rare, and the
        // store cannot tell which sample is a conversation's first of the day.
        d.conversations += 1;
        d.routed_cheap += *cheap as i64;
    }
    CommitBatch {
        partitions: by_part
            .into_iter()
            .map(|(partition, conf)| PartitionCommit {
                partition,
                conf: conf.into_iter().collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Fold the `tw_conf_hist` rows both stores select (hour ms, signal, classifier_version, router,
/// conversations, routed_cheap, threshold_sum, threshold_n, hist) into per-day windows as they are
/// decoded; rows of an unknown signal are skipped.
pub(crate) fn fold_conf_rows<R: Columns>(rows: &[R]) -> anyhow::Result<crate::drift::evaluator::DayWindows> {
    use anyhow::Context;
    let mut out = crate::drift::evaluator::DayWindows::new();
    for r in rows {
        let Some(signal) = crate::metrics::Signal::parse(&r.string(1)?) else { continue };
        let window = ConfDelta::from_stored(r.i64(4)?, r.i64(5)?, r.f64(6)?, r.i64(7)?, &r.bytes(8)?)
            .context("stored histogram does not decode")?
            .into();
        crate::drift::evaluator::add_hour(&mut out, r.i64(0)?, (r.string(2)?, r.string(3)?, signal), &window);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
