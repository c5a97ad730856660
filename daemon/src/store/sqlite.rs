//! Embedded SQLite store: the try-it-without-servers default (SPEC §1). Same tables, same
//! views and the same commit semantics as [`super::postgres::PgStore`]; the schema lives in
//! `migrations/sqlite/` (time as epoch-ms integers internally, ISO-8601 text in the views).
//!
//! SQLite has no `UNNEST`: a batch is written by looping over prepared statements inside one
//! transaction (sqlx caches the prepared statement per connection, and with the database in
//! process a row costs a few microseconds). SQLite allows one writer at a time; WAL lets readers
//! (dashboards, the sqlite3 shell) run next to it, and `busy_timeout` makes a second writer wait
//! instead of failing.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{
    rescore_conf_rows, validate_rescores, CommitBatch, CommitOutcome, PartitionSnapshot, RescoreOutcome, RescoreResult,
    Store, StoreError, ViewSettings,
};
use crate::metrics::{day_start, ConfDelta};

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteStore {
    pool: SqlitePool,
    /// Serializes this process's write transactions (batch commits, rescore results). SQLite has
    /// one writer at a time anyway; contending at the SQLite level instead costs busy-handler
    /// sleeps (measured: a demo replay with rescoring spent 25 s of 28 s in commits without it).
    write: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    /// Open (creating it if missing) the database at `path_or_url`: a file path
    /// (`tierwatch.db`, `/var/lib/tierwatch/tw.db`) or an sqlx URL (`sqlite://tw.db`,
    /// `sqlite:tw.db?mode=rwc`, `sqlite::memory:`). WAL journal, `synchronous=NORMAL` (a commit
    /// survives a process crash; a power loss can lose the last commits, never corrupt the file
    /// or split a batch), and a busy timeout.
    pub async fn open(path_or_url: &str) -> anyhow::Result<Self> {
        let memory = path_or_url.contains(":memory:") || path_or_url.contains("mode=memory");
        let opts = if path_or_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(path_or_url)
                .with_context(|| format!("{path_or_url} is not a valid SQLite URL"))?
        } else {
            SqliteConnectOptions::new().filename(path_or_url)
        };
        if !memory {
            create_private(opts.get_filename()).await?;
        }
        let opts = opts
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal)
            // No foreign keys in the schema; don't pay for the checks.
            .foreign_keys(false);
        // An in-memory database exists per connection: keep exactly one, and it has no WAL.
        let (opts, max_connections) = if memory {
            (opts.journal_mode(SqliteJournalMode::Memory), 1)
        } else {
            (opts.journal_mode(SqliteJournalMode::Wal), 4)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(if memory { 1 } else { 0 })
            // A memory database must never be dropped by the pool.
            .idle_timeout(if memory { None } else { Some(Duration::from_secs(600)) })
            .max_lifetime(if memory { None } else { Some(Duration::from_secs(1800)) })
            .acquire_timeout(BUSY_TIMEOUT + Duration::from_secs(10))
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the SQLite database {path_or_url}"))?;
        check_library(&pool).await?;
        Ok(Self { pool, write: tokio::sync::Mutex::new(()) })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The oldest SQLite library the schema runs on: `RETURNING` (3.35) and the math functions the
/// views use.
const MIN_SQLITE: (u32, u32) = (3, 35);

/// The binary links the system's SQLite library (no bundled copy to compile): refuse, with the
/// reason, a library too old for the schema or built without the math functions (`sqrt`, `ln`,
/// `exp`: Wilson intervals and latency bins in the views) rather than fail on the first view read.
async fn check_library(pool: &SqlitePool) -> anyhow::Result<()> {
    let version: String =
        sqlx::query_scalar("SELECT sqlite_version()").fetch_one(pool).await.context("reading sqlite_version()")?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SQLITE {
        anyhow::bail!(
            "the SQLite library is {version}; the embedded store needs {}.{} or newer (upgrade libsqlite3)",
            MIN_SQLITE.0,
            MIN_SQLITE.1
        );
    }
    if sqlx::query("SELECT sqrt(4.0), ln(2.0), exp(1.0)").fetch_one(pool).await.is_err() {
        anyhow::bail!(
            "the SQLite library {version} was built without its math functions (SQLITE_ENABLE_MATH_FUNCTIONS), \
             which the views need; use a libsqlite3 built with them (Debian's and most distributions' are)"
        );
    }
    Ok(())
}

/// Create a missing database file readable and writable by its owner only (mode 0600): it holds
/// dead letters and possibly query text. SQLite gives its `-wal` and `-shm` files the same mode.
/// An existing file is left as it is.
async fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    open.mode(0o600);
    match open.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating the SQLite database {}", path.display()))),
    }
}

impl Store for SqliteStore {
    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator =
            super::migrations::migrator(super::migrations::SQLITE).await.context("embedded SQLite migrations")?;
        migrator.run(&self.pool).await.context("applying SQLite migrations")?;
        Ok(())
    }

    async fn write_settings(&self, s: &ViewSettings) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM tw_settings").execute(&mut *tx).await?;
        for (k, v) in s.rows() {
            sqlx::query(super::UPSERT_SETTING_SQL).bind(k).bind(v).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_partition(&self, partition: i32, topics: &[&str]) -> Result<PartitionSnapshot, StoreError> {
        self.load_partition_inner(partition, topics).await.map_err(StoreError::classify)
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<CommitOutcome, StoreError> {
        self.commit_inner(batch).await.map_err(StoreError::classify)
    }
    async fn apply_rescores(&self, results: &[RescoreResult]) -> anyhow::Result<u64> {
        validate_rescores(results)?;
        if results.is_empty() {
            return Ok(0);
        }
        // The first UPDATE takes SQLite's single write lock, so no commit interleaves with the
        // histogram read-modify-write below.
        let _write = self.write.lock().await;
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut changed = 0u64;
        let mut scored = vec![];
        for r in results {
            match &r.outcome {
                RescoreOutcome::Scored { p_complex, model_version, threshold } => {
                    // `status = 'pending'` makes a second application (or one after a shed) a no-op.
                    let row = sqlx::query(
                        "UPDATE tw_rescore_samples SET status = 'scored', p_complex = ?2, model_version = ?3, \
                           rescore_threshold = ?4, scored_at_ms = ?5 \
                         WHERE event_id = ?1 AND status = 'pending' \
                         RETURNING partition, ts_ms, classifier_version, router, p_complex, \
                           tier <> (SELECT baseline_tier FROM tw_clock)",
                    )
                    .bind(&r.event_id)
                    .bind(*p_complex)
                    .bind(model_version)
                    .bind(*threshold)
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("storing a rescore")?;
                    if let Some(row) = row {
                        scored.push((
                            row.try_get(0)?,
                            row.try_get(1)?,
                            row.try_get(2)?,
                            row.try_get(3)?,
                            row.try_get(4)?,
                            row.try_get(5)?,
                        ));
                        changed += 1;
                    }
                }
                RescoreOutcome::Shed => {
                    let done = sqlx::query(
                        "UPDATE tw_rescore_samples SET status = 'shed' WHERE event_id = ?1 AND status = 'pending'",
                    )
                    .bind(&r.event_id)
                    .execute(&mut *tx)
                    .await
                    .context("marking a shed rescore")?;
                    changed += done.rows_affected();
                }
            }
        }
        write_conf(&mut tx, &rescore_conf_rows(&scored)).await?;
        tx.commit().await.context("committing rescores")?;
        Ok(changed)
    }

    async fn pending_rescores(
        &self,
        inserted_before_ms: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT event_id, query_text FROM tw_rescore_samples \
             WHERE status = 'pending' AND inserted_at_ms < ?1 ORDER BY inserted_at_ms, event_id LIMIT ?2",
        )
        .bind(inserted_before_ms)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .context("reading pending rescores")?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn delete_expired(
        &self,
        dead_letters_before_ms: Option<i64>,
        review_before_ms: Option<i64>,
    ) -> anyhow::Result<(u64, u64)> {
        let _write = self.write.lock().await;
        let mut deleted = (0, 0);
        if let Some(t) = dead_letters_before_ms {
            deleted.0 = sqlx::query("DELETE FROM tw_dead_letters WHERE received_at_ms < ?1")
                .bind(t)
                .execute(&self.pool)
                .await
                .context("deleting expired dead letters")?
                .rows_affected();
        }
        if let Some(t) = review_before_ms {
            deleted.1 = sqlx::query("DELETE FROM tw_rescore_samples WHERE inserted_at_ms < ?1")
                .bind(t)
                .execute(&self.pool)
                .await
                .context("deleting expired review-queue rows")?
                .rows_affected();
        }
        Ok(deleted)
    }
}

impl SqliteStore {
    async fn load_partition_inner(&self, partition: i32, topics: &[&str]) -> anyhow::Result<PartitionSnapshot> {
        // One transaction = one snapshot. It starts with a write (the INSERT), so it holds the
        // write lock from the first statement: generation, offsets and state are consistent.
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tw_partitions(partition) VALUES (?1) ON CONFLICT DO NOTHING")
            .bind(partition)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT generation, watermark_ms FROM tw_partitions WHERE partition = ?1")
            .bind(partition)
            .fetch_one(&mut *tx)
            .await?;
        let mut snap = PartitionSnapshot {
            partition,
            generation: row.try_get(0)?,
            watermark_ms: row.try_get(1)?,
            ..Default::default()
        };
        for topic in topics {
            let row = sqlx::query("SELECT next_offset FROM tw_offsets WHERE partition = ?1 AND topic = ?2")
                .bind(partition)
                .bind(*topic)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = row {
                snap.offsets.insert(topic.to_string(), r.try_get(0)?);
            }
        }
        let rows = sqlx::query("SELECT key, state FROM tw_join_state WHERE partition = ?1")
            .bind(partition)
            .fetch_all(&mut *tx)
            .await?;
        snap.entries.reserve(rows.len());
        for r in rows {
            snap.entries.push((r.try_get(0)?, r.try_get(1)?));
        }
        tx.commit().await?;
        Ok(snap)
    }

    async fn commit_inner(&self, batch: &CommitBatch) -> anyhow::Result<CommitOutcome> {
        let _write = self.write.lock().await;
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let mut generations = HashMap::new();
        // Fence first (the first UPDATE takes SQLite's write lock, so nothing below races).
        let mut parts: Vec<_> = batch.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition);
        for p in &parts {
            let row = sqlx::query(
                "UPDATE tw_partitions SET generation = generation + 1, \
                 watermark_ms = max(watermark_ms, ?3) \
                 WHERE partition = ?1 AND generation = ?2 RETURNING generation",
            )
            .bind(p.partition)
            .bind(p.expected_generation)
            .bind(p.watermark_ms)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => {
                    generations.insert(p.partition, r.try_get::<i64, _>(0)?);
                }
                None => {
                    tx.rollback().await?;
                    return Ok(CommitOutcome::Fenced(p.partition));
                }
            }
        }
        let t = std::time::Instant::now();
        write_offsets(&mut tx, batch).await?;
        write_state(&mut tx, batch).await?;
        let t_state = t.elapsed();
        write_quality(&mut tx, batch).await?;
        write_latency(&mut tx, batch).await?;
        write_tier_day(&mut tx, batch).await?;
        write_human(&mut tx, batch).await?;
        write_orphans(&mut tx, batch).await?;
        write_dead_letters(&mut tx, batch).await?;
        write_conf(&mut tx, batch).await?;
        write_rescore_samples(&mut tx, batch).await?;
        write_review_labels(&mut tx, batch).await?;
        let t_aggs = t.elapsed();
        tx.commit().await.context("committing the batch")?;
        tracing::debug!(
            state_ms = t_state.as_secs_f64() * 1e3,
            aggregates_ms = (t_aggs - t_state).as_secs_f64() * 1e3,
            commit_ms = (t.elapsed() - t_aggs).as_secs_f64() * 1e3,
            state_rows = batch.partitions.iter().map(|p| p.state.len()).sum::<usize>(),
            quality_rows = batch.deltas.quality.len(),
            latency_rows = batch.deltas.latency.len(),
            "batch written (sqlite)"
        );
        Ok(CommitOutcome::Committed(generations))
    }
}

type Tx<'a> = Transaction<'a, Sqlite>;

async fn write_offsets(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    for p in &b.partitions {
        for (topic, offset) in &p.offsets {
            sqlx::query(
                "INSERT INTO tw_offsets(topic, partition, next_offset) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            )
            .bind(topic)
            .bind(p.partition)
            .bind(*offset)
            .execute(&mut **tx)
            .await
            .context("writing offsets")?;
        }
    }
    Ok(())
}

async fn write_state(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    // Upserts first, then deletes, as the Postgres store does.
    for p in &b.partitions {
        for (key, state) in &p.state {
            if let Some(v) = state {
                sqlx::query(
                    "INSERT INTO tw_join_state(partition, key, state) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (partition, key) DO UPDATE SET state = excluded.state",
                )
                .bind(p.partition)
                .bind(key)
                .bind(v.as_slice())
                .execute(&mut **tx)
                .await
                .context("writing join state")?;
            }
        }
    }
    for p in &b.partitions {
        for (key, state) in &p.state {
            if state.is_none() {
                sqlx::query("DELETE FROM tw_join_state WHERE partition = ?1 AND key = ?2")
                    .bind(p.partition)
                    .bind(key)
                    .execute(&mut **tx)
                    .await
                    .context("deleting join state")?;
            }
        }
    }
    Ok(())
}

async fn write_quality(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let mut rows: Vec<_> = b.deltas.quality.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0)); // primary-key order: B-tree locality
    for (k, v) in rows {
        let d = &k.dims;
        sqlx::query(
            "INSERT INTO tw_agg_quality (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, \
               decisions, conversations, thumbs_up, thumbs_down, csat_n, reviews_n, reviews_wrong, failed_deflections, \
               escalations, cost_nusd, capable_cost_nusd, attributed_tickets, attributed_human_cost_nusd, csat_sum) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) \
             ON CONFLICT (grain, bucket_ms, tier, model, classifier_version, router, segment, intent) DO UPDATE SET \
               decisions = decisions + excluded.decisions, \
               conversations = conversations + excluded.conversations, \
               thumbs_up = thumbs_up + excluded.thumbs_up, \
               thumbs_down = thumbs_down + excluded.thumbs_down, \
               csat_n = csat_n + excluded.csat_n, \
               reviews_n = reviews_n + excluded.reviews_n, \
               reviews_wrong = reviews_wrong + excluded.reviews_wrong, \
               failed_deflections = failed_deflections + excluded.failed_deflections, \
               escalations = escalations + excluded.escalations, \
               cost_nusd = cost_nusd + excluded.cost_nusd, \
               capable_cost_nusd = capable_cost_nusd + excluded.capable_cost_nusd, \
               attributed_tickets = attributed_tickets + excluded.attributed_tickets, \
               attributed_human_cost_nusd = attributed_human_cost_nusd + excluded.attributed_human_cost_nusd, \
               csat_sum = csat_sum + excluded.csat_sum",
        )
        .bind(k.grain.as_str())
        .bind(k.bucket_ms)
        .bind(&d.tier)
        .bind(&d.model)
        .bind(&d.classifier_version)
        .bind(&d.router)
        .bind(&d.segment)
        .bind(&d.intent)
        .bind(v.decisions)
        .bind(v.conversations)
        .bind(v.thumbs_up)
        .bind(v.thumbs_down)
        .bind(v.csat_n)
        .bind(v.reviews_n)
        .bind(v.reviews_wrong)
        .bind(v.failed_deflections)
        .bind(v.escalations)
        .bind(v.cost_nusd)
        .bind(v.capable_cost_nusd)
        .bind(v.attributed_tickets)
        .bind(v.attributed_human_cost_nusd)
        .bind(v.csat_sum)
        .execute(&mut **tx)
        .await
        .context("writing tw_agg_quality")?;
    }
    Ok(())
}

async fn write_latency(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let mut rows: Vec<_> = b.deltas.latency.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((k, bin), count) in rows {
        let d = &k.dims;
        sqlx::query(
            "INSERT INTO tw_agg_latency (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, \
               bin, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, bin) \
             DO UPDATE SET count = count + excluded.count",
        )
        .bind(k.grain.as_str())
        .bind(k.bucket_ms)
        .bind(&d.tier)
        .bind(&d.model)
        .bind(&d.classifier_version)
        .bind(&d.router)
        .bind(&d.segment)
        .bind(&d.intent)
        .bind(*bin)
        .bind(*count)
        .execute(&mut **tx)
        .await
        .context("writing tw_agg_latency")?;
    }
    Ok(())
}

async fn write_tier_day(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    upsert_day_counter(tx, "tw_agg_tier_day", "tier", "ai_conversations", b.deltas.tier_day_rows()).await
}

async fn write_orphans(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    upsert_day_counter(tx, "tw_orphans", "kind", "count", b.deltas.orphan_rows()).await
}

/// Add `(ms in the day, label, n)` rows into a `(day_ms, label) → counter` table. The day is
/// the UTC day containing the timestamp (as `(ms AT TIME ZONE 'UTC')::date` in Postgres).
async fn upsert_day_counter(
    tx: &mut Tx<'_>,
    table: &str,
    label: &str,
    counter: &str,
    mut rows: Vec<(i64, String, i64)>,
) -> anyhow::Result<()> {
    rows.sort();
    let sql = format!(
        "INSERT INTO {table} (day_ms, {label}, {counter}) VALUES (?1, ?2, ?3) \
         ON CONFLICT (day_ms, {label}) DO UPDATE SET {counter} = {counter} + excluded.{counter}"
    );
    for (ms, l, n) in rows {
        sqlx::query(&sql)
            .bind(day_start(ms))
            .bind(l)
            .bind(n)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("writing {table}"))?;
    }
    Ok(())
}

async fn write_human(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let mut rows: Vec<_> = b.deltas.human.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for (k, h) in rows {
        sqlx::query(
            "INSERT INTO tw_agg_human_day (day_ms, cost_center, channel, tickets_opened, attributed_tickets, \
               unattributed_tickets, tickets_resolved, human_cost_nusd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (day_ms, cost_center, channel) DO UPDATE SET \
               tickets_opened = tickets_opened + excluded.tickets_opened, \
               attributed_tickets = attributed_tickets + excluded.attributed_tickets, \
               unattributed_tickets = unattributed_tickets + excluded.unattributed_tickets, \
               tickets_resolved = tickets_resolved + excluded.tickets_resolved, \
               human_cost_nusd = human_cost_nusd + excluded.human_cost_nusd",
        )
        .bind(day_start(k.day_ms))
        .bind(&k.cost_center)
        .bind(&k.channel)
        .bind(h.tickets_opened)
        .bind(h.attributed_tickets)
        .bind(h.unattributed_tickets)
        .bind(h.tickets_resolved)
        .bind(h.human_cost_nusd)
        .execute(&mut **tx)
        .await
        .context("writing tw_agg_human_day")?;
    }
    Ok(())
}

/// Merge each partition's confidence-histogram deltas into its stored rows. Only the partition's
/// owner writes them (the generation fence above holds), so read-modify-write is safe.
async fn write_conf(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let rows = b.conf_rows();
    if rows.is_empty() {
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (partition, key, delta) in rows {
        let stored = sqlx::query(
            "SELECT conversations, routed_cheap, threshold_sum, threshold_n, hist FROM tw_conf_hist \
             WHERE hour_ms = ?1 AND partition = ?2 AND signal = ?3 AND classifier_version = ?4 AND router = ?5",
        )
        .bind(key.hour_ms)
        .bind(partition)
        .bind(key.signal.as_str())
        .bind(&key.classifier_version)
        .bind(&key.router)
        .fetch_optional(&mut **tx)
        .await
        .context("reading tw_conf_hist")?;
        let mut merged = delta.clone();
        if let Some(r) = stored {
            let stored = ConfDelta::from_stored(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                &r.try_get::<Vec<u8>, _>(4)?,
            )
            .context("stored histogram does not decode")?;
            merged.add(&stored);
        }
        let n = i64::try_from(merged.hist.total()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO tw_conf_hist (hour_ms, partition, signal, classifier_version, router, n, conversations, \
               routed_cheap, threshold_sum, threshold_n, hist, updated_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (hour_ms, partition, signal, classifier_version, router) DO UPDATE SET \
               n = excluded.n, conversations = excluded.conversations, routed_cheap = excluded.routed_cheap, \
               threshold_sum = excluded.threshold_sum, threshold_n = excluded.threshold_n, hist = excluded.hist, \
               updated_at_ms = excluded.updated_at_ms",
        )
        .bind(key.hour_ms)
        .bind(partition)
        .bind(key.signal.as_str())
        .bind(&key.classifier_version)
        .bind(&key.router)
        .bind(n)
        .bind(merged.conversations)
        .bind(merged.routed_cheap)
        .bind(merged.threshold_sum)
        .bind(merged.threshold_n)
        .bind(merged.hist.to_bytes())
        .bind(now_ms)
        .execute(&mut **tx)
        .await
        .context("writing tw_conf_hist")?;
    }
    Ok(())
}

async fn write_dead_letters(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    for d in &b.dead_letters {
        sqlx::query(
            "INSERT INTO tw_dead_letters(topic, partition, kafka_offset, reason, detail, payload, payload_len, truncated) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&d.topic)
        .bind(d.partition)
        .bind(d.offset)
        .bind(d.reason)
        .bind(&d.detail)
        .bind(d.payload.as_deref())
        // Same bound as the Postgres column (int).
        .bind(i32::try_from(d.payload_len).unwrap_or(i32::MAX))
        .bind(d.truncated)
        .execute(&mut **tx)
        .await
        .context("writing tw_dead_letters")?;
    }
    Ok(())
}

/// Sampled decisions, inserted `pending`; an event already stored (a replayed batch) is left as it is.
async fn write_rescore_samples(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    for r in &b.rescore_samples {
        sqlx::query(
            "INSERT INTO tw_rescore_samples (event_id, conversation_id, turn, partition, ts_ms, tier, model, \
               classifier_version, router, segment, router_confidence, threshold, margin, ood_score, p, w, reason, \
               query_text, query_hash, inserted_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&r.event_id)
        .bind(&r.conversation_id)
        .bind(r.turn)
        .bind(r.partition)
        .bind(r.ts_ms)
        .bind(&r.tier)
        .bind(&r.model)
        .bind(&r.classifier_version)
        .bind(&r.router)
        .bind(&r.segment)
        .bind(r.router_confidence)
        .bind(r.threshold)
        .bind(r.margin)
        .bind(r.ood_score)
        .bind(r.p)
        .bind(r.w)
        .bind(&r.reason)
        .bind(r.query_text.as_deref())
        .bind(r.query_hash.as_deref())
        .bind(now_ms)
        .execute(&mut **tx)
        .await
        .context("writing tw_rescore_samples")?;
    }
    Ok(())
}

/// HUMAN_REVIEW labels onto their turns' sample rows: the latest review wins (ties: "not
/// addressed", as in the Postgres store), and an older label never overwrites a newer one.
async fn write_review_labels(tx: &mut Tx<'_>, b: &CommitBatch) -> anyhow::Result<()> {
    let mut labels: Vec<_> = b.review_labels.iter().collect();
    // Applied oldest first, "addressed" before "not addressed" at equal times, each only over an
    // older-or-equal stored review: the survivor is the one the Postgres store picks.
    labels.sort_by(|x, y| x.reviewed_ms.cmp(&y.reviewed_ms).then(y.addressed.cmp(&x.addressed)));
    for l in labels {
        sqlx::query(
            "UPDATE tw_rescore_samples SET review_addressed = ?3, reviewed_at_ms = ?4 \
             WHERE conversation_id = ?1 AND turn = ?2 AND (reviewed_at_ms IS NULL OR reviewed_at_ms <= ?4)",
        )
        .bind(&l.conversation_id)
        .bind(l.turn)
        .bind(l.addressed)
        .bind(l.reviewed_ms)
        .execute(&mut **tx)
        .await
        .context("writing review labels")?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn new_database_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tw.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        store.migrate().await.unwrap();
        for f in ["tw.db", "tw.db-wal", "tw.db-shm"] {
            let p = dir.path().join(f);
            let mode = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{f}: {e}")).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
        }
        // An sqlx URL names the file too.
        let url = format!("sqlite://{}", dir.path().join("u.db").display());
        drop(SqliteStore::open(&url).await.unwrap());
        let mode = std::fs::metadata(dir.path().join("u.db")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
