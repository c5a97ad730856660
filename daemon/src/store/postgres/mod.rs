//! Postgres store. Runtime queries only (no `query!` macros), so the build never needs a
//! database. Bulk writes go through `UNNEST` of arrays: one round trip per table per batch. The
//! load and commit flows are shared (`store/commit.rs`); this is their Postgres half (the
//! `Dialect`) and the rest of [`Store`].

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};

use super::commit::{self, Dialect};
use super::sql::{Pooled, Tx};
use super::{
    rescore_conf_rows, validate_rescores, CommitBatch, CommitOutcome, PartitionSnapshot, RescoreOutcome, RescoreResult,
    Store, StoreError, ViewSettings,
};
use crate::metrics::{ConfDelta, ConfKey, QualityKey};

pub mod eval;
pub use eval::PgEvalStore;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let opts: PgConnectOptions = url.parse().context("postgres.url is not a valid connection URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .with_context(|| format!("connecting to Postgres at {}", redact(url)))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Pooled for PgStore {
    type Db = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Hide a password in a URL for logs.
pub fn redact(url: &str) -> String {
    crate::secret::redact_url_password(url)
}

impl Store for PgStore {
    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = super::migrations::migrator(super::migrations::POSTGRES).await.context("embedded migrations")?;
        migrator.run(&self.pool).await.context("applying migrations")?;
        Ok(())
    }

    async fn write_settings(&self, s: &ViewSettings) -> anyhow::Result<()> {
        super::write_settings(self, s).await
    }

    async fn load_partition(&self, partition: i32, topics: &[&str]) -> Result<PartitionSnapshot, StoreError> {
        commit::load_partition(self, partition, topics).await.map_err(StoreError::classify)
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<CommitOutcome, StoreError> {
        commit::commit(self, batch).await.map_err(StoreError::classify)
    }

    async fn apply_rescores(&self, results: &[RescoreResult]) -> anyhow::Result<u64> {
        validate_rescores(results)?;
        if results.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = results.iter().map(|r| r.event_id.clone()).collect();
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        // Lock the partitions of the affected rows first, in partition order: the same lock order
        // as `commit`, whose fence UPDATE holds these rows while it read-modify-writes the
        // partition's histograms, so the merge below never interleaves with a commit's.
        sqlx::query(
            r#"SELECT partition FROM tw_partitions
               WHERE partition IN
                 (SELECT partition FROM tw_rescore_samples WHERE event_id = ANY($1) AND status = 'pending')
               ORDER BY partition FOR UPDATE"#,
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("locking partitions for rescores")?;
        let (mut sid, mut sp, mut smv, mut sth) = (vec![], vec![], vec![], vec![]);
        let mut shed = vec![];
        for r in results {
            match &r.outcome {
                RescoreOutcome::Scored { p_complex, model_version, threshold } => {
                    sid.push(r.event_id.clone());
                    sp.push(*p_complex);
                    smv.push(model_version.clone());
                    sth.push(*threshold);
                }
                RescoreOutcome::Shed => shed.push(r.event_id.clone()),
            }
        }
        let mut changed = 0u64;
        let mut scored = vec![];
        if !sid.is_empty() {
            // `status = 'pending'` makes a second application (or one after a shed) a no-op.
            let rows = sqlx::query(
                r#"UPDATE tw_rescore_samples s SET status = 'scored', p_complex = u.p, model_version = u.mv,
                     rescore_threshold = u.th, scored_at = now()
                   FROM UNNEST($1::text[], $2::float8[], $3::text[], $4::float8[]) AS u(id, p, mv, th)
                   WHERE s.event_id = u.id AND s.status = 'pending'
                   RETURNING s.partition, (extract(epoch FROM s.ts) * 1000)::bigint, s.classifier_version, s.router,
                     s.p_complex, s.tier <> (SELECT baseline_tier FROM tw_clock)"#,
            )
            .bind(&sid)
            .bind(&sp)
            .bind(&smv)
            .bind(&sth)
            .fetch_all(&mut *tx)
            .await
            .context("storing rescores")?;
            for r in rows {
                scored.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?));
            }
            changed += scored.len() as u64;
        }
        if !shed.is_empty() {
            let done = sqlx::query(
                "UPDATE tw_rescore_samples SET status = 'shed' WHERE event_id = ANY($1) AND status = 'pending'",
            )
            .bind(&shed)
            .execute(&mut *tx)
            .await
            .context("marking shed rescores")?;
            changed += done.rows_affected();
        }
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
            r#"SELECT event_id, query_text FROM tw_rescore_samples
               WHERE status = 'pending' AND inserted_at < to_timestamp($1::double precision / 1000)
               ORDER BY inserted_at, event_id LIMIT $2"#,
        )
        // timestamptz spans about ±290 000 years; clamp so "everything" (i64::MAX) is not an error.
        .bind(inserted_before_ms.clamp(-8_000_000_000_000_000, 8_000_000_000_000_000))
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
        let mut deleted = (0, 0);
        if let Some(t) = dead_letters_before_ms {
            deleted.0 =
                sqlx::query("DELETE FROM tw_dead_letters WHERE received_at < to_timestamp($1::bigint / 1000.0)")
                    .bind(t)
                    .execute(&self.pool)
                    .await
                    .context("deleting expired dead letters")?
                    .rows_affected();
        }
        if let Some(t) = review_before_ms {
            deleted.1 =
                sqlx::query("DELETE FROM tw_rescore_samples WHERE inserted_at < to_timestamp($1::bigint / 1000.0)")
                    .bind(t)
                    .execute(&self.pool)
                    .await
                    .context("deleting expired review-queue rows")?
                    .rows_affected();
        }
        Ok(deleted)
    }
}

/// The key columns of `tw_agg_quality` and `tw_agg_latency` rows as arrays, bound first in both
/// statements: grain, bucket (ms) and the six dimensions.
struct KeyColumns {
    grain: Vec<String>,
    bucket: Vec<i64>,
    dims: [Vec<String>; 6],
}

impl KeyColumns {
    fn with_capacity(n: usize) -> Self {
        KeyColumns {
            grain: Vec::with_capacity(n),
            bucket: Vec::with_capacity(n),
            dims: std::array::from_fn(|_| Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, k: &QualityKey) {
        self.grain.push(k.grain.as_str().to_string());
        self.bucket.push(k.bucket_ms);
        let d = &k.dims;
        for (i, s) in
            [&d.tier, &d.model, &d.classifier_version, &d.router, &d.segment, &d.intent].into_iter().enumerate()
        {
            self.dims[i].push(s.clone());
        }
    }

    /// Bind grain, bucket, tier, model, classifier_version, router, segment and intent ($1–$8).
    fn bind(self, q: PgQuery<'_>) -> PgQuery<'_> {
        let [tier, model, cv, router, segment, intent] = self.dims;
        q.bind(self.grain).bind(self.bucket).bind(tier).bind(model).bind(cv).bind(router).bind(segment).bind(intent)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

const DAY_OF_MS: &str = "(to_timestamp(d::double precision / 1000) AT TIME ZONE 'UTC')::date";

impl Dialect for PgStore {
    const FENCE: &'static str = "UPDATE tw_partitions SET generation = generation + 1, \
        watermark_ms = GREATEST(watermark_ms, $3) \
        WHERE partition = $1 AND generation = $2 RETURNING generation";
    const BATCH_WRITTEN: &'static str = "batch written";

    /// REPEATABLE READ: generation, offsets and state come from one snapshot.
    const SNAPSHOT: Option<&'static str> = Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    const INSERT_PARTITION: &'static str = "INSERT INTO tw_partitions(partition) VALUES ($1) ON CONFLICT DO NOTHING";
    const PARTITION: &'static str = "SELECT generation, watermark_ms FROM tw_partitions WHERE partition = $1";
    const JOIN_STATE: &'static str = "SELECT key, state FROM tw_join_state WHERE partition = $1";

    async fn read_offsets(
        tx: &mut Tx<Postgres>,
        partition: i32,
        topics: &[&str],
    ) -> anyhow::Result<HashMap<String, i64>> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let rows = sqlx::query("SELECT topic, next_offset FROM tw_offsets WHERE partition = $1 AND topic = ANY($2)")
            .bind(partition)
            .bind(&topics)
            .fetch_all(&mut **tx)
            .await?;
        rows.into_iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn write_offsets(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        let (mut topics, mut parts, mut offs) = (vec![], vec![], vec![]);
        for p in &b.partitions {
            for (t, o) in &p.offsets {
                topics.push(t.clone());
                parts.push(p.partition);
                offs.push(*o);
            }
        }
        if topics.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO tw_offsets(topic, partition, next_offset) \
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::bigint[]) \
             ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
        )
        .bind(topics)
        .bind(parts)
        .bind(offs)
        .execute(&mut **tx)
        .await
        .context("writing offsets")?;
        Ok(())
    }

    async fn write_state(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        // Borrowed: a catch-up batch carries tens of thousands of entries, no need to copy them.
        let (mut up_p, mut up_k, mut up_v): (Vec<i32>, Vec<&str>, Vec<&[u8]>) = (vec![], vec![], vec![]);
        let (mut del_p, mut del_k): (Vec<i32>, Vec<&str>) = (vec![], vec![]);
        for p in &b.partitions {
            for (k, v) in p.state.iter() {
                match v {
                    Some(v) => {
                        up_p.push(p.partition);
                        up_k.push(k);
                        up_v.push(v);
                    }
                    None => {
                        del_p.push(p.partition);
                        del_k.push(k);
                    }
                }
            }
        }
        if !up_k.is_empty() {
            sqlx::query(
                "INSERT INTO tw_join_state(partition, key, state) \
                 SELECT * FROM UNNEST($1::int[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (partition, key) DO UPDATE SET state = excluded.state",
            )
            .bind(up_p)
            .bind(up_k)
            .bind(up_v)
            .execute(&mut **tx)
            .await
            .context("writing join state")?;
        }
        if !del_k.is_empty() {
            sqlx::query(
                "DELETE FROM tw_join_state s USING UNNEST($1::int[], $2::text[]) AS d(partition, key) \
                 WHERE s.partition = d.partition AND s.key = d.key",
            )
            .bind(del_p)
            .bind(del_k)
            .execute(&mut **tx)
            .await
            .context("deleting join state")?;
        }
        Ok(())
    }

    async fn write_quality(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        if b.deltas.quality.is_empty() {
            return Ok(());
        }
        let n = b.deltas.quality.len();
        let mut keys = KeyColumns::with_capacity(n);
        let mut ints: [Vec<i64>; 13] = Default::default();
        let mut csat_sum = Vec::with_capacity(n);
        let mut rows: Vec<_> = b.deltas.quality.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0)); // stable lock order across concurrent writers
        for (k, v) in rows {
            keys.push(k);
            let vals = [
                v.decisions,
                v.conversations,
                v.thumbs_up,
                v.thumbs_down,
                v.csat_n,
                v.reviews_n,
                v.reviews_wrong,
                v.failed_deflections,
                v.escalations,
                v.cost_nusd,
                v.capable_cost_nusd,
                v.attributed_tickets,
                v.attributed_human_cost_nusd,
            ];
            for (i, x) in vals.into_iter().enumerate() {
                ints[i].push(x);
            }
            csat_sum.push(v.csat_sum);
        }
        let [decisions, conversations, up, down, csat_n, reviews_n, reviews_wrong, failed, esc, cost, capable, att_t, att_c] =
            ints;
        let q = sqlx::query(
            "INSERT INTO tw_agg_quality AS a (grain, bucket, tier, model, classifier_version, router, segment, intent, \
               decisions, conversations, thumbs_up, thumbs_down, csat_n, reviews_n, reviews_wrong, failed_deflections, \
               escalations, cost_nusd, capable_cost_nusd, attributed_tickets, attributed_human_cost_nusd, csat_sum) \
             SELECT g, to_timestamp(b::double precision / 1000), t, m, cv, r, s, i, \
               c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, cs \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
               $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], \
               $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], $22::float8[]) \
               AS u(g, b, t, m, cv, r, s, i, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, cs) \
             ON CONFLICT (grain, bucket, tier, model, classifier_version, router, segment, intent) DO UPDATE SET \
               decisions = a.decisions + excluded.decisions, \
               conversations = a.conversations + excluded.conversations, \
               thumbs_up = a.thumbs_up + excluded.thumbs_up, \
               thumbs_down = a.thumbs_down + excluded.thumbs_down, \
               csat_n = a.csat_n + excluded.csat_n, \
               reviews_n = a.reviews_n + excluded.reviews_n, \
               reviews_wrong = a.reviews_wrong + excluded.reviews_wrong, \
               failed_deflections = a.failed_deflections + excluded.failed_deflections, \
               escalations = a.escalations + excluded.escalations, \
               cost_nusd = a.cost_nusd + excluded.cost_nusd, \
               capable_cost_nusd = a.capable_cost_nusd + excluded.capable_cost_nusd, \
               attributed_tickets = a.attributed_tickets + excluded.attributed_tickets, \
               attributed_human_cost_nusd = a.attributed_human_cost_nusd + excluded.attributed_human_cost_nusd, \
               csat_sum = a.csat_sum + excluded.csat_sum",
        );
        keys.bind(q)
            .bind(decisions)
            .bind(conversations)
            .bind(up)
            .bind(down)
            .bind(csat_n)
            .bind(reviews_n)
            .bind(reviews_wrong)
            .bind(failed)
            .bind(esc)
            .bind(cost)
            .bind(capable)
            .bind(att_t)
            .bind(att_c)
            .bind(csat_sum)
            .execute(&mut **tx)
            .await
            .context("writing tw_agg_quality")?;
        Ok(())
    }

    async fn write_latency(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        if b.deltas.latency.is_empty() {
            return Ok(());
        }
        let mut keys = KeyColumns::with_capacity(b.deltas.latency.len());
        let mut bins = vec![];
        let mut counts = vec![];
        let mut rows: Vec<_> = b.deltas.latency.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for ((k, bin), c) in rows {
            keys.push(k);
            bins.push(*bin);
            counts.push(*c);
        }
        let q = sqlx::query(
            "INSERT INTO tw_agg_latency AS a (grain, bucket, tier, model, classifier_version, router, segment, intent, bin, count) \
             SELECT g, to_timestamp(b::double precision / 1000), t, m, cv, r, s, i, bin, c \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
               $9::int[], $10::bigint[]) AS u(g, b, t, m, cv, r, s, i, bin, c) \
             ON CONFLICT (grain, bucket, tier, model, classifier_version, router, segment, intent, bin) \
             DO UPDATE SET count = a.count + excluded.count",
        );
        keys.bind(q).bind(bins).bind(counts).execute(&mut **tx).await.context("writing tw_agg_latency")?;
        Ok(())
    }

    async fn upsert_day_counter(
        tx: &mut Tx<Postgres>,
        table: &str,
        label: &str,
        counter: &str,
        mut rows: Vec<(i64, String, i64)>,
    ) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort();
        let days: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let labels: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
        let n: Vec<i64> = rows.iter().map(|r| r.2).collect();
        sqlx::query(&format!(
            "INSERT INTO {table} AS a (day, {label}, {counter}) \
             SELECT {DAY_OF_MS}, l, n FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS u(d, l, n) \
             ON CONFLICT (day, {label}) DO UPDATE SET {counter} = a.{counter} + excluded.{counter}"
        ))
        .bind(days)
        .bind(labels)
        .bind(n)
        .execute(&mut **tx)
        .await
        .with_context(|| format!("writing {table}"))?;
        Ok(())
    }

    async fn write_human(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        if b.deltas.human.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<_> = b.deltas.human.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let (mut d, mut cc, mut ch) = (vec![], vec![], vec![]);
        let mut v: [Vec<i64>; 5] = Default::default();
        for (k, h) in rows {
            d.push(k.day_ms);
            cc.push(k.cost_center.clone());
            ch.push(k.channel.clone());
            for (i, x) in
                [h.tickets_opened, h.attributed_tickets, h.unattributed_tickets, h.tickets_resolved, h.human_cost_nusd]
                    .into_iter()
                    .enumerate()
            {
                v[i].push(x);
            }
        }
        let [opened, att, unatt, resolved, cost] = v;
        sqlx::query(&format!(
            "INSERT INTO tw_agg_human_day AS a (day, cost_center, channel, tickets_opened, attributed_tickets, \
               unattributed_tickets, tickets_resolved, human_cost_nusd) \
             SELECT {DAY_OF_MS}, cc, ch, o, at, un, r, c \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[]) \
               AS u(d, cc, ch, o, at, un, r, c) \
             ON CONFLICT (day, cost_center, channel) DO UPDATE SET \
               tickets_opened = a.tickets_opened + excluded.tickets_opened, \
               attributed_tickets = a.attributed_tickets + excluded.attributed_tickets, \
               unattributed_tickets = a.unattributed_tickets + excluded.unattributed_tickets, \
               tickets_resolved = a.tickets_resolved + excluded.tickets_resolved, \
               human_cost_nusd = a.human_cost_nusd + excluded.human_cost_nusd"
        ))
        .bind(d)
        .bind(cc)
        .bind(ch)
        .bind(opened)
        .bind(att)
        .bind(unatt)
        .bind(resolved)
        .bind(cost)
        .execute(&mut **tx)
        .await
        .context("writing tw_agg_human_day")?;
        Ok(())
    }

    async fn write_calibration(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        let rows = b.deltas.calib_rows();
        if rows.is_empty() {
            return Ok(());
        }
        let (mut d, mut cv, mut router, mut tier, mut cell, mut grp) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut v: [Vec<i64>; 6] = Default::default();
        for r in rows {
            d.push(r.day_ms);
            cv.push(r.classifier_version);
            router.push(r.router);
            tier.push(r.tier);
            cell.push(i16::from(r.cell));
            grp.push(i16::from(r.group));
            let c = r.counts;
            for (i, x) in [c.decisions, c.failures, c.failed_deflections, c.conf_e4, c.cost_nusd, c.capable_cost_nusd]
                .into_iter()
                .enumerate()
            {
                v[i].push(x);
            }
        }
        let [decisions, failures, failed_deflections, conf_e4, cost, capable_cost] = v;
        sqlx::query(&format!(
            r#"INSERT INTO tw_agg_calibration AS a (day, classifier_version, router, tier, cell, grp, decisions,
                 failures, failed_deflections, conf_e4, cost_nusd, capable_cost_nusd)
               SELECT {DAY_OF_MS}, cv, r, t, c, g, n, f, fd, ce, co, cc
               FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::smallint[],
                 $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
                 AS u(d, cv, r, t, c, g, n, f, fd, ce, co, cc)
               ON CONFLICT (day, classifier_version, router, tier, cell, grp) DO UPDATE SET
                 decisions = a.decisions + excluded.decisions,
                 failures = a.failures + excluded.failures,
                 failed_deflections = a.failed_deflections + excluded.failed_deflections,
                 conf_e4 = a.conf_e4 + excluded.conf_e4,
                 cost_nusd = a.cost_nusd + excluded.cost_nusd,
                 capable_cost_nusd = a.capable_cost_nusd + excluded.capable_cost_nusd"#
        ))
        .bind(d)
        .bind(cv)
        .bind(router)
        .bind(tier)
        .bind(cell)
        .bind(grp)
        .bind(decisions)
        .bind(failures)
        .bind(failed_deflections)
        .bind(conf_e4)
        .bind(cost)
        .bind(capable_cost)
        .execute(&mut **tx)
        .await
        .context("writing tw_agg_calibration")?;
        Ok(())
    }

    async fn write_conf(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        let mut rows: Vec<(i32, &ConfKey, ConfDelta)> =
            b.conf_rows().into_iter().map(|(p, k, v)| (p, k, v.clone())).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let hours: Vec<i64> = rows.iter().map(|r| r.1.hour_ms).collect();
        let parts: Vec<i32> = rows.iter().map(|r| r.0).collect();
        let signals: Vec<String> = rows.iter().map(|r| r.1.signal.as_str().to_string()).collect();
        let cvs: Vec<String> = rows.iter().map(|r| r.1.classifier_version.clone()).collect();
        let routers: Vec<String> = rows.iter().map(|r| r.1.router.clone()).collect();
        let existing = sqlx::query(
            "SELECT u.i, t.conversations, t.routed_cheap, t.threshold_sum, t.threshold_n, t.hist \
             FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(h, p, s, cv, r, i) \
             JOIN tw_conf_hist t ON t.hour = to_timestamp(u.h::double precision / 1000) AND t.partition = u.p \
               AND t.signal = u.s AND t.classifier_version = u.cv AND t.router = u.r",
        )
        .bind(&hours)
        .bind(&parts)
        .bind(&signals)
        .bind(&cvs)
        .bind(&routers)
        .fetch_all(&mut **tx)
        .await
        .context("reading tw_conf_hist")?;
        for r in existing {
            let i: i64 = r.try_get(0)?;
            let Some(row) = usize::try_from(i - 1).ok().and_then(|i| rows.get_mut(i)) else { continue };
            let stored = ConfDelta::from_stored(
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                &r.try_get::<Vec<u8>, _>(5)?,
            )
            .context("stored histogram does not decode")?;
            row.2.add(&stored);
        }
        sqlx::query(
            "INSERT INTO tw_conf_hist AS a (hour, partition, signal, classifier_version, router, n, conversations, \
               routed_cheap, threshold_sum, threshold_n, hist, updated_at) \
             SELECT to_timestamp(h::double precision / 1000), p, s, cv, r, n, c, rc, ts, tn, hist, now() \
             FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], \
               $8::bigint[], $9::float8[], $10::bigint[], $11::bytea[]) AS u(h, p, s, cv, r, n, c, rc, ts, tn, hist) \
             ON CONFLICT (hour, partition, signal, classifier_version, router) DO UPDATE SET \
               n = excluded.n, conversations = excluded.conversations, routed_cheap = excluded.routed_cheap, \
               threshold_sum = excluded.threshold_sum, threshold_n = excluded.threshold_n, hist = excluded.hist, \
               updated_at = now()",
        )
        .bind(&hours)
        .bind(&parts)
        .bind(&signals)
        .bind(&cvs)
        .bind(&routers)
        .bind(rows.iter().map(|r| r.2.hist.total() as i64).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.conversations).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.routed_cheap).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.threshold_sum).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.threshold_n).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.hist.to_bytes()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("writing tw_conf_hist")?;
        Ok(())
    }

    async fn write_dead_letters(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        if b.dead_letters.is_empty() {
            return Ok(());
        }
        let dl = &b.dead_letters;
        sqlx::query(
            "INSERT INTO tw_dead_letters(topic, partition, kafka_offset, reason, detail, payload, payload_len, truncated) \
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::bytea[], $7::int[], $8::bool[])",
        )
        .bind(dl.iter().map(|d| d.topic.clone()).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.partition).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.offset).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.reason.to_string()).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.detail.clone()).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.payload.clone()).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| i32::try_from(d.payload_len).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(dl.iter().map(|d| d.truncated).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("writing tw_dead_letters")?;
        Ok(())
    }

    async fn write_rescore_samples(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        if b.rescore_samples.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<_> = b.rescore_samples.iter().collect();
        rows.sort_by(|x, y| x.event_id.cmp(&y.event_id)); // stable lock order
        let text = |f: fn(&super::RescoreSample) -> &String| rows.iter().map(|r| f(r).clone()).collect::<Vec<_>>();
        let opt = |f: fn(&super::RescoreSample) -> Option<f64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO tw_rescore_samples (event_id, conversation_id, turn, partition, ts, tier, model, \
               classifier_version, router, segment, router_confidence, threshold, margin, ood_score, p, w, reason, \
               query_text, query_hash) \
             SELECT id, c, t, pa, to_timestamp(ts::double precision / 1000), ti, m, cv, r, sg, rc, th, mg, o, p, w, rs, qt, qh \
             FROM UNNEST($1::text[], $2::text[], $3::int[], $4::int[], $5::bigint[], $6::text[], $7::text[], $8::text[], \
               $9::text[], $10::text[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::float8[], \
               $16::float8[], $17::text[], $18::text[], $19::text[]) \
               AS u(id, c, t, pa, ts, ti, m, cv, r, sg, rc, th, mg, o, p, w, rs, qt, qh) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(text(|r| &r.event_id))
        .bind(text(|r| &r.conversation_id))
        .bind(rows.iter().map(|r| r.turn).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.partition).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts_ms).collect::<Vec<_>>())
        .bind(text(|r| &r.tier))
        .bind(text(|r| &r.model))
        .bind(text(|r| &r.classifier_version))
        .bind(text(|r| &r.router))
        .bind(text(|r| &r.segment))
        .bind(opt(|r| r.router_confidence))
        .bind(opt(|r| r.threshold))
        .bind(opt(|r| r.margin))
        .bind(opt(|r| r.ood_score))
        .bind(rows.iter().map(|r| r.p).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.w).collect::<Vec<_>>())
        .bind(text(|r| &r.reason))
        .bind(rows.iter().map(|r| r.query_text.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.query_hash.clone()).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("writing tw_rescore_samples")?;
        Ok(())
    }

    async fn write_review_labels(tx: &mut Tx<Postgres>, b: &CommitBatch) -> anyhow::Result<()> {
        let l = &b.review_labels;
        if l.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE tw_rescore_samples s SET review_addressed = u.a, reviewed_at = to_timestamp(u.ms::double precision / 1000) \
             FROM (SELECT DISTINCT ON (c, t) c, t, a, ms \
                   FROM UNNEST($1::text[], $2::int[], $3::bool[], $4::bigint[]) AS x(c, t, a, ms) \
                   ORDER BY c, t, ms DESC, a) u \
             WHERE s.conversation_id = u.c AND s.turn = u.t \
               AND (s.reviewed_at IS NULL OR s.reviewed_at <= to_timestamp(u.ms::double precision / 1000))",
        )
        .bind(l.iter().map(|x| x.conversation_id.clone()).collect::<Vec<_>>())
        .bind(l.iter().map(|x| x.turn).collect::<Vec<_>>())
        .bind(l.iter().map(|x| x.addressed).collect::<Vec<_>>())
        .bind(l.iter().map(|x| x.reviewed_ms).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .context("writing review labels")?;
        Ok(())
    }
}
