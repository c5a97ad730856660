//! Embedded SQLite store: the try-it-without-servers default (docs/architecture.md#stores). Same tables, same
//! views and the same commit semantics as [`super::postgres::PgStore`]; the schema lives in
//! `migrations/sqlite/` (time as epoch-ms integers internally, ISO-8601 text in the views).
//!
//! SQLite has no `UNNEST`: a batch is written, inside one transaction, with multi-row statements
//! (`INSERT … VALUES (…), (…) ON CONFLICT …`, `UPDATE … FROM (VALUES …)`) of at most
//! [`MAX_ROWS`] rows, each row count a statement text that sqlx prepares once per connection and
//! caches. One statement per row cost a round trip to sqlx's SQLite worker thread each, which
//! made commits most of a replay's time (BENCHMARKS.md, "Embedded store replay"). SQLite allows
//! one writer at a time; WAL lets readers (dashboards, the sqlite3 shell) run next to it, and
//! `busy_timeout` makes a second writer wait instead of failing. The load and commit flows are
//! shared (`store/commit.rs`); this is their SQLite half (the `Dialect`) and the rest of [`Store`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};

use super::commit::{self, Dialect};
use super::sql::{Pooled, Tx};
use super::{
    rescore_conf_rows, validate_rescores, CommitBatch, CommitOutcome, PartitionSnapshot, RescoreOutcome, RescoreResult,
    ReviewLabel, Store, StoreError, ViewSettings,
};
use crate::metrics::{day_start, ConfDelta, QualityKey};

pub mod eval;
pub use eval::SqliteEvalStore;

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
    /// or split a batch), a busy timeout, a larger page cache and fewer WAL checkpoints.
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
            .foreign_keys(false)
            .statement_cache_capacity(STATEMENT_CACHE)
            // A page cache of up to 32 MiB per connection instead of SQLite's 2 MB: a batch
            // rewrites join state spread over the whole state table, which a 2 MB cache re-read
            // from the file (pread) on every batch. Pages are only allocated as they are used.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "memory");
        // An in-memory database exists per connection: keep exactly one, and it has no WAL.
        let (opts, max_connections) = if memory {
            (opts.journal_mode(SqliteJournalMode::Memory), 1)
        } else {
            // Checkpoint when the WAL passes 10,000 pages (≈ 40 MB) instead of 1,000: a
            // checkpoint (copy into the database file + fsync) ran after nearly every commit,
            // and a page rewritten by consecutive commits was copied each time.
            (opts.journal_mode(SqliteJournalMode::Wal).pragma("wal_autocheckpoint", "10000"), 4)
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

    /// Holds this process's write transactions apart (see the `write` field).
    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl Pooled for SqliteStore {
    type Db = Sqlite;

    fn pool(&self) -> &SqlitePool {
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
        super::write_settings(self, s).await
    }

    async fn load_partition(&self, partition: i32, topics: &[&str]) -> Result<PartitionSnapshot, StoreError> {
        commit::load_partition(self, partition, topics).await.map_err(StoreError::classify)
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<CommitOutcome, StoreError> {
        let _write = self.write.lock().await;
        commit::commit(self, batch).await.map_err(StoreError::classify)
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
        // One UPDATE per chunk of results instead of one per result. Only a `pending` row changes,
        // so of several results for one event only the first can apply: keep the first.
        let mut seen = HashSet::new();
        let (mut to_score, mut to_shed) = (vec![], vec![]);
        for r in results.iter().filter(|r| seen.insert(r.event_id.as_str())) {
            match &r.outcome {
                RescoreOutcome::Scored { p_complex, model_version, threshold } => {
                    to_score.push((r.event_id.as_str(), *p_complex, model_version.as_str(), *threshold))
                }
                RescoreOutcome::Shed => to_shed.push(r.event_id.as_str()),
            }
        }
        let mut changed = 0u64;
        let mut scored = vec![];
        let mut rest = to_score.as_slice();
        for n in chunk_sizes(to_score.len()) {
            let (chunk, next) = rest.split_at(n);
            rest = next;
            // `status = 'pending'` makes a second application (or one after a shed) a no-op.
            let text = format!(
                "UPDATE tw_rescore_samples SET status = 'scored', p_complex = v.column2, model_version = v.column3, \
                   rescore_threshold = v.column4, scored_at_ms = ? \
                 FROM (VALUES {}) AS v WHERE event_id = v.column1 AND status = 'pending' \
                 RETURNING partition, ts_ms, classifier_version, router, p_complex, \
                   tier <> (SELECT baseline_tier FROM tw_clock)",
                placeholders(4, n)
            );
            let q = chunk.iter().fold(sqlx::query(&text).bind(now_ms), |q, (id, p, model, threshold)| {
                q.bind(*id).bind(*p).bind(*model).bind(*threshold)
            });
            for row in q.fetch_all(&mut *tx).await.context("storing rescores")? {
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
        changed += execute_chunked(
            &mut tx,
            &to_shed,
            |n| {
                format!(
                    "UPDATE tw_rescore_samples SET status = 'shed' WHERE status = 'pending' AND event_id IN (VALUES {})",
                    placeholders(1, n)
                )
            },
            |q, chunk| chunk.iter().fold(q, |q, id| q.bind(*id)),
        )
        .await
        .context("marking shed rescores")?;
        Self::write_conf(&mut tx, &rescore_conf_rows(&scored)).await?;
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

type Q<'a> = sqlx::query::Query<'a, Sqlite, SqliteArguments<'a>>;

/// Most rows one multi-row statement carries. A batch's rows go out as statements of 128 rows,
/// then one statement per set bit of the remainder (64, 32, …, 1 rows: at most 7 more), so each
/// table has at most 8 statement texts: each is prepared once per connection and reused from
/// sqlx's statement cache (preparing a 128-row upsert costs more than running it). 128 rows of
/// the widest table (22 columns) stay far below SQLite's 32,766 bound parameters.
const MAX_ROWS: usize = 128;

/// sqlx's per-connection statement cache: room for every batch statement shape
/// (≈ 14 texts × 8 row counts) next to the evaluator's and the views' queries.
const STATEMENT_CACHE: usize = 256;

/// The row counts `n` rows are written in: `MAX_ROWS` at a time, then powers of two.
fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= MAX_ROWS { MAX_ROWS } else { 1 << n.ilog2() };
        n -= size;
        Some(size)
    })
}

/// `rows` parenthesized groups of `cols` placeholders: `(?,?),(?,?)`.
fn placeholders(cols: usize, rows: usize) -> String {
    let mut out = String::with_capacity(rows * (2 * cols + 2));
    for r in 0..rows {
        out.push_str(if r == 0 { "(?" } else { ",(?" });
        for _ in 1..cols {
            out.push_str(",?");
        }
        out.push(')');
    }
    out
}

/// Run the statement `sql(n)` once per chunk of `rows` (see [`chunk_sizes`]), in order, `bind`
/// binding a chunk's parameters; the rows affected, summed.
async fn execute_chunked<T, S, B>(tx: &mut Tx<Sqlite>, rows: &[T], sql: S, bind: B) -> Result<u64, sqlx::Error>
where
    T: Sync,
    S: Fn(usize) -> String,
    B: for<'a> Fn(Q<'a>, &'a [T]) -> Q<'a>,
{
    let mut affected = 0;
    let mut rest = rows;
    for n in chunk_sizes(rows.len()) {
        let (chunk, next) = rest.split_at(n);
        rest = next;
        let text = sql(n);
        affected += bind(sqlx::query(&text), chunk).execute(&mut **tx).await?.rows_affected();
    }
    Ok(affected)
}

/// `head VALUES (…), (…) tail` over `rows`, `bind` binding one row's `cols` parameters.
async fn insert_values<T, B>(
    tx: &mut Tx<Sqlite>,
    head: &str,
    cols: usize,
    tail: &str,
    rows: &[T],
    bind: B,
) -> Result<u64, sqlx::Error>
where
    T: Sync,
    B: for<'a> Fn(Q<'a>, &'a T) -> Q<'a>,
{
    execute_chunked(
        tx,
        rows,
        |n| format!("{head} VALUES {} {tail}", placeholders(cols, n)),
        |q, chunk| chunk.iter().fold(q, &bind),
    )
    .await
}

/// Bind the key columns of a `tw_agg_quality` or `tw_agg_latency` row, first in both: grain,
/// bucket_ms, tier, model, classifier_version, router, segment, intent.
fn bind_key<'a>(q: Q<'a>, k: &'a QualityKey) -> Q<'a> {
    let d = &k.dims;
    q.bind(k.grain.as_str())
        .bind(k.bucket_ms)
        .bind(d.tier.as_str())
        .bind(d.model.as_str())
        .bind(d.classifier_version.as_str())
        .bind(d.router.as_str())
        .bind(d.segment.as_str())
        .bind(d.intent.as_str())
}

impl Dialect for SqliteStore {
    const FENCE: &'static str = "UPDATE tw_partitions SET generation = generation + 1, \
        watermark_ms = max(watermark_ms, ?3) \
        WHERE partition = ?1 AND generation = ?2 RETURNING generation";
    const BATCH_WRITTEN: &'static str = "batch written (sqlite)";

    /// None: one transaction is one snapshot. It starts with a write (the INSERT), so it holds
    /// the write lock from the first statement: generation, offsets and state are consistent.
    const SNAPSHOT: Option<&'static str> = None;
    const INSERT_PARTITION: &'static str = "INSERT INTO tw_partitions(partition) VALUES (?1) ON CONFLICT DO NOTHING";
    const PARTITION: &'static str = "SELECT generation, watermark_ms FROM tw_partitions WHERE partition = ?1";
    const JOIN_STATE: &'static str = "SELECT key, state FROM tw_join_state WHERE partition = ?1";

    async fn read_offsets(
        tx: &mut Tx<Sqlite>,
        partition: i32,
        topics: &[&str],
    ) -> anyhow::Result<HashMap<String, i64>> {
        let mut offsets = HashMap::new();
        for topic in topics {
            let row = sqlx::query("SELECT next_offset FROM tw_offsets WHERE partition = ?1 AND topic = ?2")
                .bind(partition)
                .bind(*topic)
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(r) = row {
                offsets.insert(topic.to_string(), r.try_get(0)?);
            }
        }
        Ok(offsets)
    }

    async fn write_offsets(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let rows: Vec<(&str, i32, i64)> = b
            .partitions
            .iter()
            .flat_map(|p| p.offsets.iter().map(move |(t, o)| (t.as_str(), p.partition, *o)))
            .collect();
        insert_values(
            tx,
            "INSERT INTO tw_offsets(topic, partition, next_offset)",
            3,
            "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            &rows,
            |q, r| q.bind(r.0).bind(r.1).bind(r.2),
        )
        .await
        .context("writing offsets")?;
        Ok(())
    }

    async fn write_state(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        // Upserts first, then deletes, as the Postgres store does.
        let upserts: Vec<(i32, &str, &[u8])> = b
            .partitions
            .iter()
            .flat_map(|p| p.state.iter().filter_map(move |(k, s)| Some((p.partition, k.as_str(), s.as_deref()?))))
            .collect();
        insert_values(
            tx,
            "INSERT INTO tw_join_state(partition, key, state)",
            3,
            "ON CONFLICT (partition, key) DO UPDATE SET state = excluded.state",
            &upserts,
            |q, r| q.bind(r.0).bind(r.1).bind(r.2),
        )
        .await
        .context("writing join state")?;
        for p in &b.partitions {
            let keys: Vec<&str> = p.state.iter().filter(|(_, s)| s.is_none()).map(|(k, _)| k.as_str()).collect();
            // `key IN (VALUES …)` probes the primary key once per key.
            execute_chunked(
                tx,
                &keys,
                |n| format!("DELETE FROM tw_join_state WHERE partition = ? AND key IN (VALUES {})", placeholders(1, n)),
                |q, chunk| chunk.iter().fold(q.bind(p.partition), |q, k| q.bind(*k)),
            )
            .await
            .context("deleting join state")?;
        }
        Ok(())
    }

    async fn write_quality(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let mut rows: Vec<_> = b.deltas.quality.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0)); // primary-key order: B-tree locality
        insert_values(
            tx,
            "INSERT INTO tw_agg_quality (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, \
               decisions, conversations, thumbs_up, thumbs_down, csat_n, reviews_n, reviews_wrong, failed_deflections, \
               escalations, cost_nusd, capable_cost_nusd, attributed_tickets, attributed_human_cost_nusd, csat_sum)",
            22,
            "ON CONFLICT (grain, bucket_ms, tier, model, classifier_version, router, segment, intent) DO UPDATE SET \
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
            &rows,
            |q, (k, v)| {
                bind_key(q, k)
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
            },
        )
        .await
        .context("writing tw_agg_quality")?;
        Ok(())
    }

    async fn write_latency(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let mut rows: Vec<_> = b.deltas.latency.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        insert_values(
            tx,
            "INSERT INTO tw_agg_latency (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, \
               bin, count)",
            10,
            "ON CONFLICT (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, bin) \
             DO UPDATE SET count = count + excluded.count",
            &rows,
            |q, ((k, bin), count)| bind_key(q, k).bind(*bin).bind(**count),
        )
        .await
        .context("writing tw_agg_latency")?;
        Ok(())
    }

    /// Into `day_ms`: the UTC day containing the timestamp (as `(ms AT TIME ZONE 'UTC')::date` in
    /// Postgres).
    async fn upsert_day_counter(
        tx: &mut Tx<Sqlite>,
        table: &str,
        label: &str,
        counter: &str,
        mut rows: Vec<(i64, String, i64)>,
    ) -> anyhow::Result<()> {
        rows.sort();
        insert_values(
            tx,
            &format!("INSERT INTO {table} (day_ms, {label}, {counter})"),
            3,
            &format!("ON CONFLICT (day_ms, {label}) DO UPDATE SET {counter} = {counter} + excluded.{counter}"),
            &rows,
            |q, (ms, l, n)| q.bind(day_start(*ms)).bind(l.as_str()).bind(*n),
        )
        .await
        .with_context(|| format!("writing {table}"))?;
        Ok(())
    }

    async fn write_calibration(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let rows = b.deltas.calib_rows();
        insert_values(
            tx,
            "INSERT INTO tw_agg_calibration (day_ms, classifier_version, router, tier, cell, grp, decisions, failures, \
               failed_deflections, conf_e4, cost_nusd, capable_cost_nusd)",
            12,
            "ON CONFLICT (day_ms, classifier_version, router, tier, cell, grp) DO UPDATE SET \
               decisions = decisions + excluded.decisions, \
               failures = failures + excluded.failures, \
               failed_deflections = failed_deflections + excluded.failed_deflections, \
               conf_e4 = conf_e4 + excluded.conf_e4, \
               cost_nusd = cost_nusd + excluded.cost_nusd, \
               capable_cost_nusd = capable_cost_nusd + excluded.capable_cost_nusd",
            &rows,
            |q, r| {
                let c = &r.counts;
                q.bind(r.day_ms)
                    .bind(r.classifier_version.as_str())
                    .bind(r.router.as_str())
                    .bind(r.tier.as_str())
                    .bind(i64::from(r.cell))
                    .bind(i64::from(r.group))
                    .bind(c.decisions)
                    .bind(c.failures)
                    .bind(c.failed_deflections)
                    .bind(c.conf_e4)
                    .bind(c.cost_nusd)
                    .bind(c.capable_cost_nusd)
            },
        )
        .await
        .context("writing tw_agg_calibration")?;
        Ok(())
    }

    async fn write_human(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let mut rows: Vec<_> = b.deltas.human.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        insert_values(
            tx,
            "INSERT INTO tw_agg_human_day (day_ms, cost_center, channel, tickets_opened, attributed_tickets, \
               unattributed_tickets, tickets_resolved, human_cost_nusd)",
            8,
            "ON CONFLICT (day_ms, cost_center, channel) DO UPDATE SET \
               tickets_opened = tickets_opened + excluded.tickets_opened, \
               attributed_tickets = attributed_tickets + excluded.attributed_tickets, \
               unattributed_tickets = unattributed_tickets + excluded.unattributed_tickets, \
               tickets_resolved = tickets_resolved + excluded.tickets_resolved, \
               human_cost_nusd = human_cost_nusd + excluded.human_cost_nusd",
            &rows,
            |q, (k, h)| {
                q.bind(day_start(k.day_ms))
                    .bind(k.cost_center.as_str())
                    .bind(k.channel.as_str())
                    .bind(h.tickets_opened)
                    .bind(h.attributed_tickets)
                    .bind(h.unattributed_tickets)
                    .bind(h.tickets_resolved)
                    .bind(h.human_cost_nusd)
            },
        )
        .await
        .context("writing tw_agg_human_day")?;
        Ok(())
    }

    /// The rows of a batch are distinct keys: all stored rows are read first (a join of the keys
    /// with the primary key), then the merged rows are upserted.
    async fn write_conf(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let rows = b.conf_rows();
        if rows.is_empty() {
            return Ok(());
        }
        // The stored row plus the delta, for the keys that have a stored row (addition commutes:
        // the same sums as the delta plus the stored row).
        let mut merged: Vec<Option<ConfDelta>> = vec![None; rows.len()];
        let mut start = 0;
        for n in chunk_sizes(rows.len()) {
            let chunk = &rows[start..start + n];
            let text = format!(
                "SELECT v.column1, h.conversations, h.routed_cheap, h.threshold_sum, h.threshold_n, h.hist \
                 FROM (VALUES {}) AS v CROSS JOIN tw_conf_hist h \
                 ON h.hour_ms = v.column2 AND h.partition = v.column3 AND h.signal = v.column4 \
                   AND h.classifier_version = v.column5 AND h.router = v.column6",
                placeholders(6, n)
            );
            let q = chunk.iter().enumerate().fold(sqlx::query(&text), |q, (i, (partition, key, _))| {
                q.bind((start + i) as i64)
                    .bind(key.hour_ms)
                    .bind(*partition)
                    .bind(key.signal.as_str())
                    .bind(key.classifier_version.as_str())
                    .bind(key.router.as_str())
            });
            for r in q.fetch_all(&mut **tx).await.context("reading tw_conf_hist")? {
                let i = usize::try_from(r.try_get::<i64, _>(0)?).context("row index")?;
                let mut stored = ConfDelta::from_stored(
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    &r.try_get::<Vec<u8>, _>(5)?,
                )
                .context("stored histogram does not decode")?;
                let (slot, (_, _, delta)) = merged.get_mut(i).zip(rows.get(i)).context("row index out of range")?;
                stored.add(delta);
                *slot = Some(stored);
            }
            start += n;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let out: Vec<_> = rows
            .iter()
            .zip(&merged)
            .map(|((partition, key, delta), m)| {
                let m = m.as_ref().unwrap_or(delta);
                (*partition, *key, m, i64::try_from(m.hist.total()).unwrap_or(i64::MAX), m.hist.to_bytes())
            })
            .collect();
        insert_values(
            tx,
            "INSERT INTO tw_conf_hist (hour_ms, partition, signal, classifier_version, router, n, conversations, \
               routed_cheap, threshold_sum, threshold_n, hist, updated_at_ms)",
            12,
            "ON CONFLICT (hour_ms, partition, signal, classifier_version, router) DO UPDATE SET \
               n = excluded.n, conversations = excluded.conversations, routed_cheap = excluded.routed_cheap, \
               threshold_sum = excluded.threshold_sum, threshold_n = excluded.threshold_n, hist = excluded.hist, \
               updated_at_ms = excluded.updated_at_ms",
            &out,
            |q, (partition, key, m, n, hist)| {
                q.bind(key.hour_ms)
                    .bind(*partition)
                    .bind(key.signal.as_str())
                    .bind(key.classifier_version.as_str())
                    .bind(key.router.as_str())
                    .bind(*n)
                    .bind(m.conversations)
                    .bind(m.routed_cheap)
                    .bind(m.threshold_sum)
                    .bind(m.threshold_n)
                    .bind(hist.as_slice())
                    .bind(now_ms)
            },
        )
        .await
        .context("writing tw_conf_hist")?;
        Ok(())
    }

    async fn write_dead_letters(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        insert_values(
            tx,
            "INSERT INTO tw_dead_letters(topic, partition, kafka_offset, reason, detail, payload, payload_len, truncated)",
            8,
            "",
            &b.dead_letters,
            |q, d| {
                q.bind(d.topic.as_str())
                    .bind(d.partition)
                    .bind(d.offset)
                    .bind(d.reason)
                    .bind(d.detail.as_str())
                    .bind(d.payload.as_deref())
                    // Same bound as the Postgres column (int).
                    .bind(i32::try_from(d.payload_len).unwrap_or(i32::MAX))
                    .bind(d.truncated)
            },
        )
        .await
        .context("writing tw_dead_letters")?;
        Ok(())
    }

    async fn write_rescore_samples(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        insert_values(
            tx,
            "INSERT INTO tw_rescore_samples (event_id, conversation_id, turn, partition, ts_ms, tier, model, \
               classifier_version, router, segment, router_confidence, threshold, margin, ood_score, p, w, reason, \
               query_text, query_hash, inserted_at_ms)",
            20,
            "ON CONFLICT (event_id) DO NOTHING",
            &b.rescore_samples,
            |q, r| {
                q.bind(r.event_id.as_str())
                    .bind(r.conversation_id.as_str())
                    .bind(r.turn)
                    .bind(r.partition)
                    .bind(r.ts_ms)
                    .bind(r.tier.as_str())
                    .bind(r.model.as_str())
                    .bind(r.classifier_version.as_str())
                    .bind(r.router.as_str())
                    .bind(r.segment.as_str())
                    .bind(r.router_confidence)
                    .bind(r.threshold)
                    .bind(r.margin)
                    .bind(r.ood_score)
                    .bind(r.p)
                    .bind(r.w)
                    .bind(r.reason.as_str())
                    .bind(r.query_text.as_deref())
                    .bind(r.query_hash.as_deref())
                    .bind(now_ms)
            },
        )
        .await
        .context("writing tw_rescore_samples")?;
        Ok(())
    }

    async fn write_review_labels(tx: &mut Tx<Sqlite>, b: &CommitBatch) -> anyhow::Result<()> {
        // Applying the labels one by one, oldest first and "addressed" before "not addressed" at
        // equal times, each only over an older-or-equal stored review, leaves on a row the turn's
        // last label in that order if that one is not older than the stored review, else the stored
        // one: so only that last label per turn is applied, all turns in one UPDATE … FROM per chunk.
        let mut last: HashMap<(&str, i32), &ReviewLabel> = HashMap::new();
        for l in &b.review_labels {
            let e = last.entry((l.conversation_id.as_str(), l.turn)).or_insert(l);
            if (l.reviewed_ms, !l.addressed) >= (e.reviewed_ms, !e.addressed) {
                *e = l;
            }
        }
        let mut labels: Vec<&ReviewLabel> = last.into_values().collect();
        labels.sort_by(|x, y| (&x.conversation_id, x.turn).cmp(&(&y.conversation_id, y.turn)));
        execute_chunked(
            tx,
            &labels,
            |n| {
                format!(
                    "UPDATE tw_rescore_samples SET review_addressed = v.column3, reviewed_at_ms = v.column4 \
                     FROM (VALUES {}) AS v \
                     WHERE conversation_id = v.column1 AND turn = v.column2 \
                       AND (reviewed_at_ms IS NULL OR reviewed_at_ms <= v.column4)",
                    placeholders(4, n)
                )
            },
            |q, chunk| {
                chunk.iter().fold(q, |q, l| {
                    q.bind(l.conversation_id.as_str()).bind(l.turn).bind(l.addressed).bind(l.reviewed_ms)
                })
            },
        )
        .await
        .context("writing review labels")?;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests;
