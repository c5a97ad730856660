//! Storage: what a batch commits and what an assignment loads, behind a small trait so the
//! pipeline is testable without a database. The Postgres implementation is in [`postgres`].

pub mod postgres;
pub mod postgres_eval;
pub mod sqlite;
pub mod sqlite_eval;

use std::collections::HashMap;

use crate::metrics::{ConfDelta, ConfKey, Deltas};

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
    /// (key, Some(state)) to upsert, (key, None) to delete.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    /// (topic, next offset).
    pub offsets: Vec<(String, i64)>,
    /// Confidence histogram deltas of this partition, merged into its stored rows.
    pub conf: Vec<(ConfKey, ConfDelta)>,
}

/// One atomic unit of effect: state, offsets, aggregate deltas, dead letters.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    pub partitions: Vec<PartitionCommit>,
    pub deltas: Deltas,
    pub dead_letters: Vec<DeadLetter>,
}

impl CommitBatch {
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
}

/// The storage the pipeline needs.
#[allow(async_fn_in_trait)]
pub trait Store: Send + Sync {
    /// Apply the schema migrations.
    async fn migrate(&self) -> anyhow::Result<()>;
    async fn write_settings(&self, s: &ViewSettings) -> anyhow::Result<()>;
    /// Load one partition's generation, watermark, offsets for `topics` and join state.
    async fn load_partition(&self, partition: i32, topics: &[&str]) -> anyhow::Result<PartitionSnapshot>;
    /// Commit a batch atomically, fenced on each partition's generation.
    async fn commit(&self, batch: &CommitBatch) -> anyhow::Result<CommitOutcome>;
}
