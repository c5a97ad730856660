-- tierwatch schema, version 1 — embedded SQLite store (SQLite >= 3.35 built with
-- SQLITE_ENABLE_MATH_FUNCTIONS; the daemon bundles 3.46).
--
-- This is the SQLite twin of ../0001_init.sql: the same internal tables (tw_*), the
-- same internal helper views (tw_clock, tw_quality_base) and the same public views
-- (SPEC §6) with the same column names, in the same order, with the same semantics.
-- Read the Postgres file and ../README.md for the meaning of every column; the
-- comments here explain what differs and why.
--
-- Differences from Postgres (all forced by SQLite's type system):
--   * Time is stored as INTEGER epoch milliseconds (UTC) in the internal tables:
--     tw_agg_*.bucket_ms (hour/day start), *.day_ms (day start, i.e. a multiple
--     of 86400000), tw_dead_letters.received_at_ms, ... The views convert:
--       - bucket / matures_at (timestamptz in Postgres) are ISO-8601 UTC TEXT,
--         'YYYY-MM-DDTHH:MM:SSZ', from strftime('%Y-%m-%dT%H:%M:%SZ', ms/1000, 'unixepoch');
--       - day (date in Postgres) is TEXT 'YYYY-MM-DD', from date(ms/1000, 'unixepoch');
--       - processing-time stamps (dead_letters.received_at, ...) keep milliseconds:
--         'YYYY-MM-DDTHH:MM:SS.SSSZ'.
--     Both text forms sort chronologically and are what SQLite's own date
--     functions accept.
--   * Booleans (mature, truncated) are INTEGER 0/1 (boolean in Postgres).
--   * Money is BIGINT nano-USD internally in both; *_usd columns are REAL
--     (double precision) = nusd / 1e9, converted after summing, as in Postgres.
--   * No CREATE FUNCTION: the 95% Wilson interval (tw_wilson_lo/_hi in Postgres)
--     is inlined. Each view computes, per (x successes, n trials) pair, the three
--     parts of the Postgres expression
--         a = x/n + z²/(2n)
--         s = z·sqrt(x(n−x)/n³ + z²/(4n²))
--         d = 1 + z²/n
--     (NULL unless n > 0 and 0 <= x <= n), and returns
--         lo = max(0, min(1, (a − s)/d)),  hi = max(0, min(1, (a + s)/d)).
--     z = 1.959963984540054; z² is written as the double nearest the exact
--     decimal square (3.841458820694125), which is what Postgres computes from
--     its numeric literals, so both stores give the same doubles.
--   * No AT TIME ZONE / EXTRACT / GREATEST / LEAST / INTERVAL: epoch-ms integer
--     arithmetic and SQLite's multi-argument scalar max()/min().

------------------------------------------------------------------------------
-- Internal tables (written by the daemon only)
------------------------------------------------------------------------------

-- Effective configuration the views need, rewritten by the daemon at every startup:
-- attribution_window_ms, baseline_from, baseline_to (YYYY-MM-DD, absent when not
-- configured), baseline_tier.
CREATE TABLE tw_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Kafka offsets committed in the same transaction as the aggregates they produced.
CREATE TABLE tw_offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

-- Per-partition ownership generation (fences a stale owner) and event-time watermark
-- (max event ts seen, epoch ms).
CREATE TABLE tw_partitions (
    partition    INTEGER PRIMARY KEY,
    generation   INTEGER NOT NULL DEFAULT 0,
    watermark_ms INTEGER NOT NULL DEFAULT 0
);

-- Serialized open-conversation join state, checkpointed per partition.
CREATE TABLE tw_join_state (
    partition INTEGER NOT NULL,
    key       TEXT    NOT NULL,
    state     BLOB    NOT NULL,
    PRIMARY KEY (partition, key)
);

-- Rejected messages. AUTOINCREMENT so ids are never reused (like bigserial).
CREATE TABLE tw_dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL
                   DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    topic          TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    kafka_offset   INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    payload        BLOB,
    payload_len    INTEGER NOT NULL,
    truncated      INTEGER NOT NULL CHECK (truncated IN (0, 1))
);
CREATE INDEX tw_dead_letters_received_at_idx ON tw_dead_letters (received_at_ms);
CREATE INDEX tw_dead_letters_position_idx ON tw_dead_letters (topic, partition, kafka_offset);

CREATE TABLE tw_orphans (
    day_ms INTEGER NOT NULL,   -- UTC day start, epoch ms
    kind   TEXT    NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (day_ms, kind)
) WITHOUT ROWID;

-- Additive per-cohort counters (grain h = hour start, d = day start, UTC), upserted with
-- col = col + excluded.col.
CREATE TABLE tw_agg_quality (
    grain               TEXT    NOT NULL CHECK (grain IN ('h', 'd')),
    bucket_ms           INTEGER NOT NULL,   -- bucket start, epoch ms
    tier                TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    classifier_version  TEXT    NOT NULL,
    router              TEXT    NOT NULL,
    segment             TEXT    NOT NULL,
    intent              TEXT    NOT NULL,
    decisions           INTEGER NOT NULL DEFAULT 0,
    conversations       INTEGER NOT NULL DEFAULT 0,
    thumbs_up           INTEGER NOT NULL DEFAULT 0,
    thumbs_down         INTEGER NOT NULL DEFAULT 0,
    csat_n              INTEGER NOT NULL DEFAULT 0,
    csat_sum            REAL    NOT NULL DEFAULT 0,
    reviews_n           INTEGER NOT NULL DEFAULT 0,
    reviews_wrong       INTEGER NOT NULL DEFAULT 0,
    failed_deflections  INTEGER NOT NULL DEFAULT 0,
    escalations         INTEGER NOT NULL DEFAULT 0,
    cost_nusd           INTEGER NOT NULL DEFAULT 0,
    capable_cost_nusd   INTEGER NOT NULL DEFAULT 0,
    attributed_tickets  INTEGER NOT NULL DEFAULT 0,
    attributed_human_cost_nusd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket_ms, tier, model, classifier_version, router, segment, intent)
) WITHOUT ROWID;

-- Mergeable log histogram of turn latency per hour bucket:
-- bin = floor(ln(max(L_ms, 0.001)) / ln(1.01)), representative value exp((bin + 0.5) * ln(1.01)).
CREATE TABLE tw_agg_latency (
    grain               TEXT    NOT NULL CHECK (grain = 'h'),
    bucket_ms           INTEGER NOT NULL,
    tier                TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    classifier_version  TEXT    NOT NULL,
    router              TEXT    NOT NULL,
    segment             TEXT    NOT NULL,
    intent              TEXT    NOT NULL,
    bin                 INTEGER NOT NULL,
    count               INTEGER NOT NULL,
    PRIMARY KEY (grain, bucket_ms, tier, model, classifier_version, router, segment, intent, bin)
) WITHOUT ROWID;

-- Distinct conversations with a turn in a tier on a UTC day (deduplicated by the daemon).
CREATE TABLE tw_agg_tier_day (
    day_ms           INTEGER NOT NULL,
    tier             TEXT    NOT NULL,
    ai_conversations INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day_ms, tier)
) WITHOUT ROWID;

-- Human support volume by the UTC day the ticket was OPENED.
CREATE TABLE tw_agg_human_day (
    day_ms               INTEGER NOT NULL,
    cost_center          TEXT    NOT NULL,
    channel              TEXT    NOT NULL,
    tickets_opened       INTEGER NOT NULL DEFAULT 0,
    attributed_tickets   INTEGER NOT NULL DEFAULT 0,
    unattributed_tickets INTEGER NOT NULL DEFAULT 0,
    tickets_resolved     INTEGER NOT NULL DEFAULT 0,
    human_cost_nusd      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day_ms, cost_center, channel)
) WITHOUT ROWID;

------------------------------------------------------------------------------
-- tw_clock (internal helper, one row): effective settings and watermark
------------------------------------------------------------------------------
-- Same columns as in Postgres (baseline_from/_to are TEXT 'YYYY-MM-DD' here), plus
-- baseline_from_ms / baseline_to_ms (day starts, epoch ms) for the comparisons.

CREATE VIEW tw_clock AS
WITH s AS (
    SELECT
        COALESCE((SELECT CAST(value AS INTEGER) FROM tw_settings WHERE key = 'attribution_window_ms'),
                 259200000) AS attribution_window_ms,
        -- MIN over partitions that have seen an event: a cohort is final only when every
        -- partition has passed it. NULL when no partition has data, so nothing is mature.
        (SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0) AS global_watermark_ms,
        (SELECT NULLIF(value, '') FROM tw_settings WHERE key = 'baseline_from') AS baseline_from,
        (SELECT NULLIF(value, '') FROM tw_settings WHERE key = 'baseline_to') AS baseline_to,
        COALESCE((SELECT NULLIF(value, '') FROM tw_settings WHERE key = 'baseline_tier'),
                 'capable') AS baseline_tier
)
SELECT attribution_window_ms,
       global_watermark_ms,
       baseline_from,
       baseline_to,
       baseline_tier,
       CAST(strftime('%s', baseline_from) AS INTEGER) * 1000 AS baseline_from_ms,
       CAST(strftime('%s', baseline_to) AS INTEGER) * 1000 AS baseline_to_ms
FROM s;

------------------------------------------------------------------------------
-- tw_quality_base (internal helper): both grains, percentiles, rates, maturity
------------------------------------------------------------------------------

CREATE VIEW tw_quality_base AS
WITH lat_src AS (
    -- Hourly bins as stored, plus each day's histogram as the sum of its hours' bins
    -- (histograms merge by adding counts). Day start = bucket_ms minus its (euclidean)
    -- remainder modulo one day.
    SELECT grain, bucket_ms, tier, model, classifier_version, router, segment, intent, bin, count
    FROM tw_agg_latency
    UNION ALL
    SELECT 'd', bucket_ms - ((bucket_ms % 86400000) + 86400000) % 86400000,
           tier, model, classifier_version, router, segment, intent, bin, SUM(count)
    FROM tw_agg_latency
    WHERE grain = 'h'
    GROUP BY 2, tier, model, classifier_version, router, segment, intent, bin
),
lat_cum AS (
    SELECT grain, bucket_ms, tier, model, classifier_version, router, segment, intent, bin,
           SUM(count) OVER (
               PARTITION BY grain, bucket_ms, tier, model, classifier_version, router, segment, intent
               ORDER BY bin
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum,
           SUM(count) OVER (
               PARTITION BY grain, bucket_ms, tier, model, classifier_version, router, segment, intent) AS n
    FROM lat_src
),
lat AS (
    -- Nearest rank: the smallest bin whose cumulative count reaches ceil(q*N), with
    -- ceil(q*N) computed exactly in integers as (100q*N + 99) / 100.
    SELECT grain, bucket_ms, tier, model, classifier_version, router, segment, intent,
           MAX(n) AS latency_n,
           MIN(CASE WHEN cum >= (50 * n + 99) / 100 THEN bin END) AS bin_p50,
           MIN(CASE WHEN cum >= (95 * n + 99) / 100 THEN bin END) AS bin_p95,
           MIN(CASE WHEN cum >= (99 * n + 99) / 100 THEN bin END) AS bin_p99
    FROM lat_cum
    WHERE n > 0
    GROUP BY grain, bucket_ms, tier, model, classifier_version, router, segment, intent
),
q AS (
    SELECT a.*,
           CASE WHEN a.grain = 'h' THEN 3600000 ELSE 86400000 END AS bucket_len_ms,
           c.attribution_window_ms,
           c.global_watermark_ms,
           l.latency_n,
           l.bin_p50,
           l.bin_p95,
           l.bin_p99
    FROM tw_agg_quality a
    CROSS JOIN tw_clock c
    LEFT JOIN lat l
           ON l.grain = a.grain
          AND l.bucket_ms = a.bucket_ms
          AND l.tier = a.tier
          AND l.model = a.model
          AND l.classifier_version = a.classifier_version
          AND l.router = a.router
          AND l.segment = a.segment
          AND l.intent = a.intent
),
w AS (
    -- Wilson parts (a, s, d; see the header) for the three rates:
    --   rv = reviews_wrong / reviews_n, td = thumbs_down / decisions,
    --   fd = failed_deflections / conversations.
    SELECT q.*,
           CASE WHEN reviews_n > 0 AND reviews_wrong BETWEEN 0 AND reviews_n THEN
                CAST(reviews_wrong AS REAL) / reviews_n + 3.841458820694125 / (2.0 * reviews_n) END AS rv_a,
           CASE WHEN reviews_n > 0 AND reviews_wrong BETWEEN 0 AND reviews_n THEN
                1.959963984540054 * sqrt(
                    CAST(reviews_wrong AS REAL) * (reviews_n - reviews_wrong)
                        / (CAST(reviews_n AS REAL) * reviews_n * reviews_n)
                  + 3.841458820694125 / (4.0 * reviews_n * reviews_n)) END AS rv_s,
           1.0 + 3.841458820694125 / CAST(NULLIF(reviews_n, 0) AS REAL) AS rv_d,

           CASE WHEN decisions > 0 AND thumbs_down BETWEEN 0 AND decisions THEN
                CAST(thumbs_down AS REAL) / decisions + 3.841458820694125 / (2.0 * decisions) END AS td_a,
           CASE WHEN decisions > 0 AND thumbs_down BETWEEN 0 AND decisions THEN
                1.959963984540054 * sqrt(
                    CAST(thumbs_down AS REAL) * (decisions - thumbs_down)
                        / (CAST(decisions AS REAL) * decisions * decisions)
                  + 3.841458820694125 / (4.0 * decisions * decisions)) END AS td_s,
           1.0 + 3.841458820694125 / CAST(NULLIF(decisions, 0) AS REAL) AS td_d,

           CASE WHEN conversations > 0 AND failed_deflections BETWEEN 0 AND conversations THEN
                CAST(failed_deflections AS REAL) / conversations + 3.841458820694125 / (2.0 * conversations) END AS fd_a,
           CASE WHEN conversations > 0 AND failed_deflections BETWEEN 0 AND conversations THEN
                1.959963984540054 * sqrt(
                    CAST(failed_deflections AS REAL) * (conversations - failed_deflections)
                        / (CAST(conversations AS REAL) * conversations * conversations)
                  + 3.841458820694125 / (4.0 * conversations * conversations)) END AS fd_s,
           1.0 + 3.841458820694125 / CAST(NULLIF(conversations, 0) AS REAL) AS fd_d
    FROM q
)
SELECT
    grain,
    bucket_ms,                                   -- internal: epoch-ms bucket start
    strftime('%Y-%m-%dT%H:%M:%SZ', bucket_ms / 1000, 'unixepoch') AS bucket,
    tier,
    model,
    classifier_version,
    router,
    NULLIF(segment, '') AS segment,
    NULLIF(intent, '') AS intent,
    decisions,
    conversations,
    thumbs_up,
    thumbs_down,
    csat_n,
    csat_sum,
    CASE WHEN csat_n > 0 THEN csat_sum / csat_n END AS csat_mean,
    reviews_n,
    reviews_wrong,
    CASE WHEN reviews_n > 0 THEN CAST(reviews_wrong AS REAL) / reviews_n END AS review_error_rate,
    max(0.0, min(1.0, (rv_a - rv_s) / rv_d)) AS review_error_rate_lo,
    max(0.0, min(1.0, (rv_a + rv_s) / rv_d)) AS review_error_rate_hi,
    failed_deflections,
    escalations,
    CAST(cost_nusd AS REAL) / 1e9 AS cost_usd,
    CAST(capable_cost_nusd AS REAL) / 1e9 AS capable_cost_usd,
    CAST(capable_cost_nusd - cost_nusd AS REAL) / 1e9 AS inference_saved_usd,
    attributed_tickets,
    CAST(attributed_human_cost_nusd AS REAL) / 1e9 AS attributed_human_cost_usd,
    COALESCE(latency_n, 0) AS latency_n,
    exp((CAST(bin_p50 AS REAL) + 0.5) * ln(1.01)) AS latency_p50_ms,
    exp((CAST(bin_p95 AS REAL) + 0.5) * ln(1.01)) AS latency_p95_ms,
    exp((CAST(bin_p99 AS REAL) + 0.5) * ln(1.01)) AS latency_p99_ms,
    CASE WHEN decisions > 0 THEN CAST(thumbs_down AS REAL) / decisions END AS thumbs_down_rate,
    max(0.0, min(1.0, (td_a - td_s) / td_d)) AS thumbs_down_rate_lo,
    max(0.0, min(1.0, (td_a + td_s) / td_d)) AS thumbs_down_rate_hi,
    CASE WHEN conversations > 0 THEN CAST(failed_deflections AS REAL) / conversations END AS failed_deflection_rate,
    max(0.0, min(1.0, (fd_a - fd_s) / fd_d)) AS failed_deflection_rate_lo,
    max(0.0, min(1.0, (fd_a + fd_s) / fd_d)) AS failed_deflection_rate_hi,
    conversations - failed_deflections AS deflected,
    -- 0/1; 0 (not NULL) while no partition has a watermark.
    COALESCE(bucket_ms + bucket_len_ms + attribution_window_ms <= global_watermark_ms, 0) AS mature,
    strftime('%Y-%m-%dT%H:%M:%SZ', (bucket_ms + bucket_len_ms + attribution_window_ms) / 1000, 'unixepoch')
        AS matures_at
FROM w;

------------------------------------------------------------------------------
-- tier_quality_hourly / tier_quality_daily (SPEC §4.1, §6)
------------------------------------------------------------------------------
-- One row per cohort bucket and dimensions. bucket and matures_at are ISO-8601 UTC
-- text, day is 'YYYY-MM-DD', mature is 0/1. Everything else as in Postgres.

CREATE VIEW tier_quality_hourly AS
SELECT bucket, tier, model, classifier_version, router, segment, intent,
       decisions, conversations, thumbs_up, thumbs_down, csat_n, csat_sum, csat_mean,
       reviews_n, reviews_wrong, review_error_rate, review_error_rate_lo, review_error_rate_hi,
       failed_deflections, escalations,
       cost_usd, capable_cost_usd, inference_saved_usd,
       attributed_tickets, attributed_human_cost_usd,
       latency_n, latency_p50_ms, latency_p95_ms, latency_p99_ms,
       thumbs_down_rate, thumbs_down_rate_lo, thumbs_down_rate_hi,
       failed_deflection_rate, failed_deflection_rate_lo, failed_deflection_rate_hi,
       deflected, mature, matures_at
FROM tw_quality_base
WHERE grain = 'h';

CREATE VIEW tier_quality_daily AS
SELECT bucket, date(bucket_ms / 1000, 'unixepoch') AS day,
       tier, model, classifier_version, router, segment, intent,
       decisions, conversations, thumbs_up, thumbs_down, csat_n, csat_sum, csat_mean,
       reviews_n, reviews_wrong, review_error_rate, review_error_rate_lo, review_error_rate_hi,
       failed_deflections, escalations,
       cost_usd, capable_cost_usd, inference_saved_usd,
       attributed_tickets, attributed_human_cost_usd,
       latency_n, latency_p50_ms, latency_p95_ms, latency_p99_ms,
       thumbs_down_rate, thumbs_down_rate_lo, thumbs_down_rate_hi,
       failed_deflection_rate, failed_deflection_rate_lo, failed_deflection_rate_hi,
       deflected, mature, matures_at
FROM tw_quality_base
WHERE grain = 'd';

------------------------------------------------------------------------------
-- deflection_daily (SPEC §4.2, engineering's side of the ledger)
------------------------------------------------------------------------------
-- Per tier and cohort day: conversations without a human ticket, what the tier cost and
-- saved, and the human cost its failures caused beyond the baseline rate. day is TEXT
-- 'YYYY-MM-DD'; every comparison is done on day_ms.

CREATE VIEW deflection_daily AS
WITH qd AS (
    SELECT bucket_ms AS day_ms,
           tier,
           SUM(failed_deflections) AS failed_deflections,
           SUM(cost_nusd) AS cost_nusd,
           SUM(capable_cost_nusd) AS capable_cost_nusd,
           SUM(attributed_tickets) AS attributed_tickets,
           SUM(attributed_human_cost_nusd) AS attributed_human_cost_nusd
    FROM tw_agg_quality
    WHERE grain = 'd'
    GROUP BY bucket_ms, tier
),
keys AS (
    SELECT day_ms, tier FROM qd
    UNION
    SELECT day_ms, tier FROM tw_agg_tier_day
),
base AS (
    SELECT k.day_ms,
           k.tier,
           COALESCE(t.ai_conversations, 0) AS ai_conversations,
           COALESCE(qd.failed_deflections, 0) AS failed_deflections,
           COALESCE(qd.cost_nusd, 0) AS cost_nusd,
           COALESCE(qd.capable_cost_nusd, 0) AS capable_cost_nusd,
           COALESCE(qd.attributed_tickets, 0) AS attributed_tickets,
           COALESCE(qd.attributed_human_cost_nusd, 0) AS attributed_human_cost_nusd
    FROM keys k
    LEFT JOIN tw_agg_tier_day t ON t.day_ms = k.day_ms AND t.tier = k.tier
    LEFT JOIN qd ON qd.day_ms = k.day_ms AND qd.tier = k.tier
),
range_baseline AS (
    -- Pooled over all tiers over the configured date range (inclusive): before routing
    -- went live everything ran on one path.
    SELECT CASE WHEN SUM(b.ai_conversations) > 0
                THEN CAST(SUM(b.failed_deflections) AS REAL) / SUM(b.ai_conversations)
           END AS rate
    FROM base b
    CROSS JOIN tw_clock c
    WHERE c.baseline_from_ms IS NOT NULL
      AND c.baseline_to_ms IS NOT NULL
      AND b.day_ms >= c.baseline_from_ms
      AND b.day_ms <= c.baseline_to_ms
),
human_day AS (
    SELECT day_ms, SUM(human_cost_nusd) AS cost_nusd, SUM(tickets_resolved) AS resolved
    FROM tw_agg_human_day
    GROUP BY day_ms
),
human_all AS (
    SELECT SUM(human_cost_nusd) AS cost_nusd, SUM(tickets_resolved) AS resolved
    FROM tw_agg_human_day
),
rated AS (
    SELECT b.*,
           CASE WHEN b.ai_conversations > 0
                THEN CAST(b.failed_deflections AS REAL) / b.ai_conversations
           END AS failed_deflection_rate,
           CASE WHEN c.baseline_from_ms IS NOT NULL AND c.baseline_to_ms IS NOT NULL
                THEN rb.rate
                ELSE CASE WHEN bt.ai_conversations > 0
                          THEN CAST(bt.failed_deflections AS REAL) / bt.ai_conversations
                     END
           END AS baseline_rate,
           CASE WHEN hd.resolved > 0 THEN CAST(hd.cost_nusd AS REAL) / hd.resolved / 1e9
                WHEN ha.resolved > 0 THEN CAST(ha.cost_nusd AS REAL) / ha.resolved / 1e9
           END AS mean_ticket_cost_usd,
           c.attribution_window_ms,
           c.global_watermark_ms
    FROM base b
    CROSS JOIN tw_clock c
    CROSS JOIN range_baseline rb
    CROSS JOIN human_all ha
    LEFT JOIN base bt ON bt.day_ms = b.day_ms AND bt.tier = c.baseline_tier
    LEFT JOIN human_day hd ON hd.day_ms = b.day_ms
),
w AS (
    -- Wilson parts (see the header): dr = deflected / ai_conversations,
    -- fd = failed_deflections / ai_conversations.
    SELECT r.*,
           ai_conversations - failed_deflections AS deflected,
           CASE WHEN ai_conversations > 0 AND ai_conversations - failed_deflections BETWEEN 0 AND ai_conversations THEN
                CAST(ai_conversations - failed_deflections AS REAL) / ai_conversations
                    + 3.841458820694125 / (2.0 * ai_conversations) END AS dr_a,
           CASE WHEN ai_conversations > 0 AND ai_conversations - failed_deflections BETWEEN 0 AND ai_conversations THEN
                1.959963984540054 * sqrt(
                    CAST(ai_conversations - failed_deflections AS REAL) * failed_deflections
                        / (CAST(ai_conversations AS REAL) * ai_conversations * ai_conversations)
                  + 3.841458820694125 / (4.0 * ai_conversations * ai_conversations)) END AS dr_s,
           CASE WHEN ai_conversations > 0 AND failed_deflections BETWEEN 0 AND ai_conversations THEN
                CAST(failed_deflections AS REAL) / ai_conversations
                    + 3.841458820694125 / (2.0 * ai_conversations) END AS fd_a,
           CASE WHEN ai_conversations > 0 AND failed_deflections BETWEEN 0 AND ai_conversations THEN
                1.959963984540054 * sqrt(
                    CAST(failed_deflections AS REAL) * (ai_conversations - failed_deflections)
                        / (CAST(ai_conversations AS REAL) * ai_conversations * ai_conversations)
                  + 3.841458820694125 / (4.0 * ai_conversations * ai_conversations)) END AS fd_s,
           -- d is the same for both rates (same n).
           1.0 + 3.841458820694125 / CAST(NULLIF(ai_conversations, 0) AS REAL) AS n_d
    FROM rated r
)
SELECT
    date(day_ms / 1000, 'unixepoch') AS day,
    tier,
    ai_conversations,
    failed_deflections,
    deflected,
    CASE WHEN ai_conversations > 0
         THEN CAST(deflected AS REAL) / ai_conversations
    END AS deflection_rate,
    max(0.0, min(1.0, (dr_a - dr_s) / n_d)) AS deflection_rate_lo,
    max(0.0, min(1.0, (dr_a + dr_s) / n_d)) AS deflection_rate_hi,
    failed_deflection_rate,
    max(0.0, min(1.0, (fd_a - fd_s) / n_d)) AS failed_deflection_rate_lo,
    max(0.0, min(1.0, (fd_a + fd_s) / n_d)) AS failed_deflection_rate_hi,
    CAST(cost_nusd AS REAL) / 1e9 AS inference_cost_usd,
    CAST(capable_cost_nusd AS REAL) / 1e9 AS capable_cost_usd,
    CAST(capable_cost_nusd - cost_nusd AS REAL) / 1e9 AS inference_saved_usd,
    attributed_tickets,
    CAST(attributed_human_cost_nusd AS REAL) / 1e9 AS attributed_human_cost_usd,
    baseline_rate,
    mean_ticket_cost_usd,
    -- max(0, rate - baseline) * conversations * mean ticket cost; 0 (not NULL) when an
    -- input is unknown, so ledger sums stay defined.
    CASE WHEN failed_deflection_rate > baseline_rate AND mean_ticket_cost_usd IS NOT NULL
         THEN (failed_deflection_rate - baseline_rate) * ai_conversations * mean_ticket_cost_usd
         ELSE 0.0
    END AS excess_human_cost_usd,
    COALESCE(day_ms + 86400000 + attribution_window_ms <= global_watermark_ms, 0) AS mature,
    strftime('%Y-%m-%dT%H:%M:%SZ', (day_ms + 86400000 + attribution_window_ms) / 1000, 'unixepoch')
        AS matures_at
FROM w;

------------------------------------------------------------------------------
-- human_volume_daily (SPEC §4.2, the other cost centers' side)
------------------------------------------------------------------------------
-- Per ticket-OPENED day (TEXT 'YYYY-MM-DD'), cost center and channel.

CREATE VIEW human_volume_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       cost_center,
       channel,
       tickets_opened,
       attributed_tickets,
       unattributed_tickets,
       tickets_resolved,
       CAST(human_cost_nusd AS REAL) / 1e9 AS human_cost_usd,
       CASE WHEN tickets_resolved > 0
            THEN CAST(human_cost_nusd AS REAL) / tickets_resolved / 1e9
       END AS mean_ticket_cost_usd
FROM tw_agg_human_day;

------------------------------------------------------------------------------
-- ledger_daily (SPEC §4.2, both sides joined per day)
------------------------------------------------------------------------------
-- One row per day with AI traffic or human tickets: inference savings next to human
-- cost and the excess human cost routing caused. deflection_daily exposes day as text,
-- which joins with date(day_ms / 1000, 'unixepoch') below.

CREATE VIEW ledger_daily AS
WITH qd AS (
    SELECT bucket_ms AS day_ms,
           SUM(cost_nusd) AS cost_nusd,
           SUM(capable_cost_nusd) AS capable_cost_nusd,
           SUM(failed_deflections) AS failed_deflections,
           SUM(attributed_human_cost_nusd) AS attributed_human_cost_nusd
    FROM tw_agg_quality
    WHERE grain = 'd'
    GROUP BY bucket_ms
),
td AS (
    SELECT day_ms, SUM(ai_conversations) AS ai_conversations
    FROM tw_agg_tier_day
    GROUP BY day_ms
),
dd AS (
    SELECT day, SUM(excess_human_cost_usd) AS excess_human_cost_usd
    FROM deflection_daily
    GROUP BY day
),
hd AS (
    SELECT day_ms,
           SUM(tickets_opened) AS tickets_opened,
           SUM(attributed_tickets) AS attributed_tickets,
           SUM(unattributed_tickets) AS unattributed_tickets,
           SUM(tickets_resolved) AS tickets_resolved,
           SUM(human_cost_nusd) AS human_cost_nusd
    FROM tw_agg_human_day
    GROUP BY day_ms
),
keys AS (
    SELECT day_ms FROM qd
    UNION SELECT day_ms FROM td
    UNION SELECT day_ms FROM hd
)
SELECT
    date(k.day_ms / 1000, 'unixepoch') AS day,
    CAST(COALESCE(qd.cost_nusd, 0) AS REAL) / 1e9 AS inference_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) AS REAL) / 1e9 AS capable_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS REAL) / 1e9 AS inference_saved_usd,
    CAST(COALESCE(qd.attributed_human_cost_nusd, 0) AS REAL) / 1e9 AS attributed_human_cost_usd,
    CAST(COALESCE(hd.human_cost_nusd, 0) AS REAL) / 1e9 AS human_cost_usd,
    COALESCE(dd.excess_human_cost_usd, 0.0) AS excess_human_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS REAL) / 1e9
        - COALESCE(dd.excess_human_cost_usd, 0.0) AS net_usd,
    COALESCE(hd.tickets_opened, 0) AS tickets_opened,
    COALESCE(hd.attributed_tickets, 0) AS attributed_tickets,
    COALESCE(hd.unattributed_tickets, 0) AS unattributed_tickets,
    COALESCE(hd.tickets_resolved, 0) AS tickets_resolved,
    COALESCE(td.ai_conversations, 0) AS ai_conversations,
    COALESCE(qd.failed_deflections, 0) AS failed_deflections,
    COALESCE(k.day_ms + 86400000 + c.attribution_window_ms <= c.global_watermark_ms, 0) AS mature,
    strftime('%Y-%m-%dT%H:%M:%SZ', (k.day_ms + 86400000 + c.attribution_window_ms) / 1000, 'unixepoch')
        AS matures_at
FROM keys k
CROSS JOIN tw_clock c
LEFT JOIN qd ON qd.day_ms = k.day_ms
LEFT JOIN td ON td.day_ms = k.day_ms
LEFT JOIN dd ON dd.day = date(k.day_ms / 1000, 'unixepoch')
LEFT JOIN hd ON hd.day_ms = k.day_ms;

------------------------------------------------------------------------------
-- dead_letters, orphans_daily
------------------------------------------------------------------------------

-- Rejected events, never applied to any metric. received_at is processing time as
-- ISO-8601 UTC text with milliseconds; payload is a BLOB; truncated is 0/1.
CREATE VIEW dead_letters AS
SELECT id,
       strftime('%Y-%m-%dT%H:%M:%fZ', received_at_ms / 1000.0, 'unixepoch') AS received_at,
       topic, partition, kafka_offset, reason, detail, payload, payload_len, truncated
FROM tw_dead_letters;

-- Outcomes that waited for their decision until the time/memory bound, per day and kind.
CREATE VIEW orphans_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day, kind, count
FROM tw_orphans;
