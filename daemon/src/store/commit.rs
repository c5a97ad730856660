//! The commit of a batch, once for both stores: fence every partition, write, commit; and the
//! load of a partition it is fenced against. What differs per backend is the SQL: the fence
//! statement and the bulk writers of [`Dialect`]
//! (Postgres binds each table's rows as arrays and writes them with one `UNNEST` statement;
//! SQLite, which has no arrays, writes multi-row `VALUES` statements in chunks).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;

use super::sql::{args, Backend, Columns, Tx};
use super::{CommitBatch, CommitOutcome, PartitionSnapshot};

/// A backend's half of the commit: its fence statement and its writer for each table of a batch.
/// Each writer writes its rows of the batch in the transaction (nothing when it has none).
#[allow(async_fn_in_trait)]
pub(crate) trait Dialect: Backend {
    /// Bumps a partition's generation and raises its watermark if the generation is still the
    /// expected one, `RETURNING generation`; parameters: partition, expected generation,
    /// watermark (ms).
    const FENCE: &'static str;

    /// The message of the "batch written" debug event.
    const BATCH_WRITTEN: &'static str;

    /// Run first when loading a partition, where a transaction needs it to read one snapshot.
    const SNAPSHOT: Option<&'static str>;
    /// Add a partition's row (generation 0) if it has none (partition).
    const INSERT_PARTITION: &'static str;
    /// A partition's generation and watermark (partition).
    const PARTITION: &'static str;
    /// A partition's join state entries: key, state (partition).
    const JOIN_STATE: &'static str;

    /// The next offsets of those of `topics` that have one in `partition`.
    async fn read_offsets(
        tx: &mut Tx<Self::Db>,
        partition: i32,
        topics: &[&str],
    ) -> anyhow::Result<HashMap<String, i64>>;

    /// Next offset per (topic, partition).
    async fn write_offsets(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// Join state: upserts first, then deletes.
    async fn write_state(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    async fn write_quality(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    async fn write_latency(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// Add `(ms in the day, label, n)` rows into a `(day, label) → counter` table (the day is the
    /// UTC day of the timestamp).
    async fn upsert_day_counter(
        tx: &mut Tx<Self::Db>,
        table: &str,
        label: &str,
        counter: &str,
        rows: Vec<(i64, String, i64)>,
    ) -> anyhow::Result<()>;
    async fn write_human(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// Add the router-evaluation cells of the batch into `tw_agg_calibration`.
    async fn write_calibration(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    async fn write_dead_letters(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// Merge each partition's confidence-histogram deltas into its stored rows. Only the
    /// partition's owner writes them (the generation fence holds), so read-modify-write is safe.
    async fn write_conf(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// Sampled decisions, inserted `pending`; an event already stored (a replayed batch) is left
    /// as it is.
    async fn write_rescore_samples(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
    /// HUMAN_REVIEW labels onto their turns' sample rows: the latest review wins (ties: "not
    /// addressed", the conservative reading), and an older label never overwrites a newer one, so
    /// replays and reordering give the same row.
    async fn write_review_labels(tx: &mut Tx<Self::Db>, b: &CommitBatch) -> anyhow::Result<()>;
}

/// Load one partition's generation, watermark, offsets for `topics` and join state, from one
/// snapshot; a partition seen for the first time gets its row (generation 0).
pub(crate) async fn load_partition<D: Dialect>(
    store: &D,
    partition: i32,
    topics: &[&str],
) -> anyhow::Result<PartitionSnapshot> {
    let mut tx = store.begin().await?;
    if let Some(sql) = D::SNAPSHOT {
        D::execute(&mut tx, sql, args![]).await?;
    }
    D::execute(&mut tx, D::INSERT_PARTITION, args![partition]).await?;
    let row = D::fetch_one_in(&mut tx, D::PARTITION, args![partition]).await?;
    let mut snap = PartitionSnapshot {
        partition,
        generation: row.i64(0)?,
        watermark_ms: row.i64(1)?,
        offsets: D::read_offsets(&mut tx, partition, topics).await?,
        ..Default::default()
    };
    let rows = D::fetch_all_in(&mut tx, D::JOIN_STATE, args![partition]).await?;
    snap.entries.reserve(rows.len());
    for r in rows {
        snap.entries.push((r.string(0)?, r.bytes(1)?));
    }
    tx.commit().await?;
    Ok(snap)
}

/// Commit `batch` in one transaction, fenced on each partition's generation: nothing is written
/// when a fence fails (another owner committed the partition since it was loaded).
pub(crate) async fn commit<D: Dialect>(store: &D, batch: &CommitBatch) -> anyhow::Result<CommitOutcome> {
    let mut tx = store.begin().await?;
    let mut generations = HashMap::new();
    // Fence first, in partition order: no deadlocks between overlapping owners in Postgres; in
    // SQLite the first UPDATE takes the write lock, so nothing below races.
    let mut parts: Vec<_> = batch.partitions.iter().collect();
    parts.sort_by_key(|p| p.partition);
    for p in &parts {
        let row =
            D::fetch_optional_in(&mut tx, D::FENCE, args![p.partition, p.expected_generation, p.watermark_ms]).await?;
        match row {
            Some(r) => {
                generations.insert(p.partition, r.i64(0)?);
            }
            None => {
                tx.rollback().await?;
                return Ok(CommitOutcome::Fenced(p.partition));
            }
        }
    }
    let t = Instant::now();
    D::write_offsets(&mut tx, batch).await?;
    D::write_state(&mut tx, batch).await?;
    let t_state = t.elapsed();
    D::write_quality(&mut tx, batch).await?;
    D::write_latency(&mut tx, batch).await?;
    D::upsert_day_counter(&mut tx, "tw_agg_tier_day", "tier", "ai_conversations", batch.deltas.tier_day_rows()).await?;
    D::write_human(&mut tx, batch).await?;
    D::upsert_day_counter(&mut tx, "tw_orphans", "kind", "count", batch.deltas.orphan_rows()).await?;
    D::write_calibration(&mut tx, batch).await?;
    D::write_dead_letters(&mut tx, batch).await?;
    D::write_conf(&mut tx, batch).await?;
    D::write_rescore_samples(&mut tx, batch).await?;
    D::write_review_labels(&mut tx, batch).await?;
    let t_aggs = t.elapsed();
    tx.commit().await.context("committing the batch")?;
    tracing::debug!(
        state_ms = t_state.as_secs_f64() * 1e3,
        aggregates_ms = (t_aggs - t_state).as_secs_f64() * 1e3,
        commit_ms = (t.elapsed() - t_aggs).as_secs_f64() * 1e3,
        state_rows = batch.partitions.iter().map(|p| p.state.len()).sum::<usize>(),
        quality_rows = batch.deltas.quality.len(),
        latency_rows = batch.deltas.latency.len(),
        "{}",
        D::BATCH_WRITTEN
    );
    Ok(CommitOutcome::Committed(generations))
}
