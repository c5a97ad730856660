-- tierwatch schema, version 1 (Postgres 15).
--
-- Two layers:
--   * tw_* tables: internal state written only by the daemon. They may change
--     between releases; nothing outside the daemon should depend on them.
--   * views without the tw_ prefix: the public, documented interface (SPEC §6)
--     that dashboards, alert rules, tests and users query. Column names are a
--     contract; columns may be added, never renamed or removed.
--     tw_clock and tw_quality_base are internal helper views.
--
-- Conventions used throughout:
--   * Money is stored as BIGINT nano-USD (1e-9 USD): integer sums are exact and
--     independent of the order in which partitions/instances flush. Views
--     expose USD as double precision = nusd / 1e9, converting only after summing.
--   * Dimension columns use '' for "null in the event" or "dimension not kept"
--     (so they can be part of primary keys); views turn '' back into NULL for
--     segment and intent.
--   * Every bucket/day is UTC. Day boundaries are computed with
--     AT TIME ZONE 'UTC' so results never depend on the session TimeZone.
--   * Rates are double precision and NULL when the denominator is 0; every rate
--     carries a 95% Wilson score interval (tw_wilson_lo / tw_wilson_hi).
--   * SQL is kept portable where cheap (CTEs, window functions, CASE, COALESCE,
--     CAST) because the embedded SQLite store defines the same views.

------------------------------------------------------------------------------
-- Internal tables (written by the daemon only)
------------------------------------------------------------------------------

CREATE TABLE tw_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
COMMENT ON TABLE tw_settings IS
    'Effective configuration the views need, rewritten by the daemon at every startup: attribution_window_ms, baseline_from, baseline_to (YYYY-MM-DD, absent when not configured), baseline_tier.';

CREATE TABLE tw_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
COMMENT ON TABLE tw_offsets IS
    'Kafka offsets committed in the same transaction as the aggregates they produced: this, not the broker''s group offsets, is what makes the effect exactly-once.';

CREATE TABLE tw_partitions (
    partition    int    PRIMARY KEY,
    generation   bigint NOT NULL DEFAULT 0,
    watermark_ms bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE tw_partitions IS
    'Per-partition ownership generation (fences a stale owner after a rebalance) and event-time watermark (max event ts seen, epoch ms).';

CREATE TABLE tw_join_state (
    partition int   NOT NULL,
    key       text  NOT NULL,
    state     bytea NOT NULL,
    PRIMARY KEY (partition, key)
);
COMMENT ON TABLE tw_join_state IS
    'Serialized open-conversation join state, checkpointed per partition so a restart or a new owner resumes the join without replaying history.';

CREATE TABLE tw_dead_letters (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text        NOT NULL,
    partition    int         NOT NULL,
    kafka_offset bigint      NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL,
    payload      bytea,
    payload_len  int         NOT NULL,
    truncated    boolean     NOT NULL
);
CREATE INDEX tw_dead_letters_received_at_idx ON tw_dead_letters (received_at);
CREATE INDEX tw_dead_letters_position_idx ON tw_dead_letters (topic, partition, kafka_offset);

CREATE TABLE tw_orphans (
    day   date   NOT NULL,
    kind  text   NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (day, kind)
);

CREATE TABLE tw_agg_quality (
    grain               text        NOT NULL CHECK (grain IN ('h', 'd')),
    bucket              timestamptz NOT NULL,
    tier                text        NOT NULL,
    model               text        NOT NULL,
    classifier_version  text        NOT NULL,
    router              text        NOT NULL,
    segment             text        NOT NULL,
    intent              text        NOT NULL,
    decisions           bigint NOT NULL DEFAULT 0,
    conversations       bigint NOT NULL DEFAULT 0,
    thumbs_up           bigint NOT NULL DEFAULT 0,
    thumbs_down         bigint NOT NULL DEFAULT 0,
    csat_n              bigint NOT NULL DEFAULT 0,
    csat_sum            double precision NOT NULL DEFAULT 0,
    reviews_n           bigint NOT NULL DEFAULT 0,
    reviews_wrong       bigint NOT NULL DEFAULT 0,
    failed_deflections  bigint NOT NULL DEFAULT 0,
    escalations         bigint NOT NULL DEFAULT 0,
    cost_nusd           bigint NOT NULL DEFAULT 0,
    capable_cost_nusd   bigint NOT NULL DEFAULT 0,
    attributed_tickets  bigint NOT NULL DEFAULT 0,
    attributed_human_cost_nusd bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, tier, model, classifier_version, router, segment, intent)
);
COMMENT ON TABLE tw_agg_quality IS
    'Additive per-cohort counters (grain h = hour start, d = day start, UTC), upserted with col = col + excluded.col. Outcomes are credited to the cohort of the decision they are attributed to, not to their own time.';

CREATE TABLE tw_agg_latency (
    grain               text        NOT NULL CHECK (grain = 'h'),
    bucket              timestamptz NOT NULL,
    tier                text        NOT NULL,
    model               text        NOT NULL,
    classifier_version  text        NOT NULL,
    router              text        NOT NULL,
    segment             text        NOT NULL,
    intent              text        NOT NULL,
    bin                 int         NOT NULL,
    count               bigint      NOT NULL,
    PRIMARY KEY (grain, bucket, tier, model, classifier_version, router, segment, intent, bin)
);
COMMENT ON TABLE tw_agg_latency IS
    'Mergeable log histogram of turn latency per hour bucket (days are summed from hours in tw_quality_base): bin = floor(ln(max(L_ms, 0.001)) / ln(1.01)), representative value exp((bin + 0.5) * ln(1.01)) ms, <= 0.5% relative error. Counts add across partitions, so percentiles are exact on the binned values.';

CREATE TABLE tw_agg_tier_day (
    day              date   NOT NULL,
    tier             text   NOT NULL,
    ai_conversations bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tier)
);
COMMENT ON TABLE tw_agg_tier_day IS
    'Distinct conversations with a turn in a tier on a UTC day, deduplicated by the daemon. Needed because summing tw_agg_quality.conversations over dimensions double-counts conversations whose turns differ in model/intent/...';

CREATE TABLE tw_agg_human_day (
    day                  date   NOT NULL,
    cost_center          text   NOT NULL,
    channel              text   NOT NULL,
    tickets_opened       bigint NOT NULL DEFAULT 0,
    attributed_tickets   bigint NOT NULL DEFAULT 0,
    unattributed_tickets bigint NOT NULL DEFAULT 0,
    tickets_resolved     bigint NOT NULL DEFAULT 0,
    human_cost_nusd      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, cost_center, channel)
);
COMMENT ON TABLE tw_agg_human_day IS
    'Human support volume by the UTC day the ticket was OPENED; tickets_resolved and human_cost_nusd of a RESOLVED ticket are credited to its opened day.';

------------------------------------------------------------------------------
-- Wilson score interval (95%)
------------------------------------------------------------------------------
-- Written as single-expression SQL functions (no FROM, not STRICT) so the
-- planner inlines them. Returns NULL when n <= 0, and also when x is outside
-- [0, n]: that only happens for counts that are not proportions (e.g. several
-- thumbs-down events on one decision), where no binomial interval exists.
-- Casting to double before any product avoids bigint overflow of n^3.

CREATE FUNCTION tw_wilson_lo(x bigint, n bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN x IS NULL OR n IS NULL OR n <= 0 OR x < 0 OR x > n THEN NULL
        ELSE GREATEST(0.0, LEAST(1.0,
            (  CAST(x AS double precision) / n
             + 1.959963984540054 * 1.959963984540054 / (2.0 * CAST(n AS double precision))
             - 1.959963984540054 * sqrt(
                   CAST(x AS double precision) * CAST(n - x AS double precision)
                       / (CAST(n AS double precision) * CAST(n AS double precision) * CAST(n AS double precision))
                 + 1.959963984540054 * 1.959963984540054
                       / (4.0 * CAST(n AS double precision) * CAST(n AS double precision)))
            ) / (1.0 + 1.959963984540054 * 1.959963984540054 / CAST(n AS double precision))))
    END
$$;
COMMENT ON FUNCTION tw_wilson_lo(bigint, bigint) IS
    'Lower bound of the 95% Wilson score interval (z = 1.959963984540054) for x successes in n trials, clamped to [0,1]. Wilson rather than Wald because tier rates are small proportions on small daily n, where Wald collapses to [0,0] or goes negative.';

CREATE FUNCTION tw_wilson_hi(x bigint, n bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN x IS NULL OR n IS NULL OR n <= 0 OR x < 0 OR x > n THEN NULL
        ELSE GREATEST(0.0, LEAST(1.0,
            (  CAST(x AS double precision) / n
             + 1.959963984540054 * 1.959963984540054 / (2.0 * CAST(n AS double precision))
             + 1.959963984540054 * sqrt(
                   CAST(x AS double precision) * CAST(n - x AS double precision)
                       / (CAST(n AS double precision) * CAST(n AS double precision) * CAST(n AS double precision))
                 + 1.959963984540054 * 1.959963984540054
                       / (4.0 * CAST(n AS double precision) * CAST(n AS double precision)))
            ) / (1.0 + 1.959963984540054 * 1.959963984540054 / CAST(n AS double precision))))
    END
$$;
COMMENT ON FUNCTION tw_wilson_hi(bigint, bigint) IS
    'Upper bound of the 95% Wilson score interval (z = 1.959963984540054) for x successes in n trials, clamped to [0,1].';

------------------------------------------------------------------------------
-- tw_clock (internal helper, one row): effective settings and watermark
------------------------------------------------------------------------------

CREATE VIEW tw_clock AS
SELECT
    COALESCE((SELECT CAST(value AS bigint) FROM tw_settings WHERE key = 'attribution_window_ms'),
             259200000) AS attribution_window_ms,
    (SELECT MIN(watermark_ms) FROM tw_partitions WHERE watermark_ms > 0) AS global_watermark_ms,
    (SELECT CAST(NULLIF(value, '') AS date) FROM tw_settings WHERE key = 'baseline_from') AS baseline_from,
    (SELECT CAST(NULLIF(value, '') AS date) FROM tw_settings WHERE key = 'baseline_to') AS baseline_to,
    COALESCE((SELECT NULLIF(value, '') FROM tw_settings WHERE key = 'baseline_tier'),
             'capable') AS baseline_tier;
COMMENT ON VIEW tw_clock IS
    'Internal helper: the settings and the cluster-wide watermark every maturity/baseline computation uses, in one row, so all views agree. Also handy to answer "why is this cohort still immature?".';
COMMENT ON COLUMN tw_clock.attribution_window_ms IS
    'Attribution window W; 72 h when the daemon has not written the setting yet.';
COMMENT ON COLUMN tw_clock.global_watermark_ms IS
    'MIN over partitions of the per-partition watermark: a cohort is only final when every partition has passed it (a ticket for it may still sit in the slowest partition). Partitions that have never seen an event (watermark 0) are left out, so an unused partition does not hold every cohort immature forever. NULL when no partition has data, so nothing is mature.';
COMMENT ON COLUMN tw_clock.baseline_from IS
    'Start (inclusive) of the configured pre-launch baseline date range; the range is used only when both ends are set.';
COMMENT ON COLUMN tw_clock.baseline_to IS
    'End (inclusive) of the configured baseline date range.';
COMMENT ON COLUMN tw_clock.baseline_tier IS
    'Tier whose same-day failed-deflection rate is the baseline when no date range is configured.';

------------------------------------------------------------------------------
-- tw_quality_base (internal helper): both grains, percentiles, rates, maturity
------------------------------------------------------------------------------

CREATE VIEW tw_quality_base AS
WITH lat_src AS (
    -- The daemon stores hourly bins only; a day's histogram is the sum of its hours' bins
    -- (histograms merge by adding counts), which halves the rows written per batch.
    SELECT grain, bucket, tier, model, classifier_version, router, segment, intent, bin, count
    FROM tw_agg_latency
    UNION ALL
    SELECT 'd', (date_trunc('day', bucket AT TIME ZONE 'UTC')) AT TIME ZONE 'UTC',
           tier, model, classifier_version, router, segment, intent, bin, SUM(count)
    FROM tw_agg_latency
    WHERE grain = 'h'
    GROUP BY 2, tier, model, classifier_version, router, segment, intent, bin
),
lat_cum AS (
    SELECT grain, bucket, tier, model, classifier_version, router, segment, intent, bin,
           SUM(count) OVER (
               PARTITION BY grain, bucket, tier, model, classifier_version, router, segment, intent
               ORDER BY bin
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum,
           CAST(SUM(count) OVER (
               PARTITION BY grain, bucket, tier, model, classifier_version, router, segment, intent)
               AS bigint) AS n
    FROM lat_src
),
lat AS (
    -- Nearest rank: the smallest bin whose cumulative count reaches ceil(q*N).
    -- ceil(q*N) is computed in integers, (100q*N + 99) / 100, so it is exact
    -- (0.95 * N in floating point can land just above an integer).
    SELECT grain, bucket, tier, model, classifier_version, router, segment, intent,
           MAX(n) AS latency_n,
           MIN(CASE WHEN cum >= (50 * n + 99) / 100 THEN bin END) AS bin_p50,
           MIN(CASE WHEN cum >= (95 * n + 99) / 100 THEN bin END) AS bin_p95,
           MIN(CASE WHEN cum >= (99 * n + 99) / 100 THEN bin END) AS bin_p99
    FROM lat_cum
    WHERE n > 0
    GROUP BY grain, bucket, tier, model, classifier_version, router, segment, intent
),
q AS (
    SELECT a.*,
           CASE WHEN a.grain = 'h' THEN 3600000 ELSE 86400000 END AS bucket_ms,
           CAST(EXTRACT(EPOCH FROM a.bucket) * 1000 AS bigint) AS bucket_start_ms
    FROM tw_agg_quality a
)
SELECT
    q.grain,
    q.bucket,
    q.tier,
    q.model,
    q.classifier_version,
    q.router,
    NULLIF(q.segment, '') AS segment,
    NULLIF(q.intent, '') AS intent,
    q.decisions,
    q.conversations,
    q.thumbs_up,
    q.thumbs_down,
    q.csat_n,
    q.csat_sum,
    CASE WHEN q.csat_n > 0 THEN q.csat_sum / q.csat_n END AS csat_mean,
    q.reviews_n,
    q.reviews_wrong,
    CASE WHEN q.reviews_n > 0 THEN CAST(q.reviews_wrong AS double precision) / q.reviews_n END AS review_error_rate,
    tw_wilson_lo(q.reviews_wrong, q.reviews_n) AS review_error_rate_lo,
    tw_wilson_hi(q.reviews_wrong, q.reviews_n) AS review_error_rate_hi,
    q.failed_deflections,
    q.escalations,
    CAST(q.cost_nusd AS double precision) / 1e9 AS cost_usd,
    CAST(q.capable_cost_nusd AS double precision) / 1e9 AS capable_cost_usd,
    CAST(q.capable_cost_nusd - q.cost_nusd AS double precision) / 1e9 AS inference_saved_usd,
    q.attributed_tickets,
    CAST(q.attributed_human_cost_nusd AS double precision) / 1e9 AS attributed_human_cost_usd,
    COALESCE(l.latency_n, 0) AS latency_n,
    exp((CAST(l.bin_p50 AS double precision) + 0.5) * ln(CAST(1.01 AS double precision))) AS latency_p50_ms,
    exp((CAST(l.bin_p95 AS double precision) + 0.5) * ln(CAST(1.01 AS double precision))) AS latency_p95_ms,
    exp((CAST(l.bin_p99 AS double precision) + 0.5) * ln(CAST(1.01 AS double precision))) AS latency_p99_ms,
    CASE WHEN q.decisions > 0 THEN CAST(q.thumbs_down AS double precision) / q.decisions END AS thumbs_down_rate,
    tw_wilson_lo(q.thumbs_down, q.decisions) AS thumbs_down_rate_lo,
    tw_wilson_hi(q.thumbs_down, q.decisions) AS thumbs_down_rate_hi,
    CASE WHEN q.conversations > 0 THEN CAST(q.failed_deflections AS double precision) / q.conversations END AS failed_deflection_rate,
    tw_wilson_lo(q.failed_deflections, q.conversations) AS failed_deflection_rate_lo,
    tw_wilson_hi(q.failed_deflections, q.conversations) AS failed_deflection_rate_hi,
    q.conversations - q.failed_deflections AS deflected,
    COALESCE(q.bucket_start_ms + q.bucket_ms + c.attribution_window_ms <= c.global_watermark_ms, false) AS mature,
    q.bucket + (q.bucket_ms + c.attribution_window_ms) * INTERVAL '1 millisecond' AS matures_at
FROM q
CROSS JOIN tw_clock c
LEFT JOIN lat l
       ON l.grain = q.grain
      AND l.bucket = q.bucket
      AND l.tier = q.tier
      AND l.model = q.model
      AND l.classifier_version = q.classifier_version
      AND l.router = q.router
      AND l.segment = q.segment
      AND l.intent = q.intent;
COMMENT ON VIEW tw_quality_base IS
    'Internal helper behind tier_quality_hourly and tier_quality_daily (one definition, two grains). Query the public views instead.';

------------------------------------------------------------------------------
-- tier_quality_hourly / tier_quality_daily (SPEC §4.1, §6)
------------------------------------------------------------------------------

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
SELECT bucket, CAST(bucket AT TIME ZONE 'UTC' AS date) AS day,
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

COMMENT ON VIEW tier_quality_hourly IS
    'Per-tier quality per cohort hour and dimensions (SPEC §4.1). Outcomes (feedback, tickets, their cost) are credited to the hour of the decision they are attributed to, so a row keeps changing until it is mature: filter on mature before comparing ticket-based rates across hours.';
COMMENT ON VIEW tier_quality_daily IS
    'Per-tier quality per cohort day (UTC) and dimensions (SPEC §4.1). Same columns and semantics as tier_quality_hourly, accumulated independently at day grain so distinct-conversation counts are exact per day (not a sum of hours).';

-- Column comments, identical for both grains.
COMMENT ON COLUMN tier_quality_hourly.bucket IS 'Cohort start (UTC hour) of the decisions in this row; outcomes are credited here, not to their own time.';
COMMENT ON COLUMN tier_quality_daily.bucket IS 'Cohort start (UTC day start as timestamptz) of the decisions in this row; outcomes are credited here, not to their own time.';
COMMENT ON COLUMN tier_quality_daily.day IS 'The cohort day as a date, for joining with the day-keyed ledger views.';
COMMENT ON COLUMN tier_quality_hourly.segment IS 'NULL when the event had no segment or the segment dimension is not kept (cardinality control).';
COMMENT ON COLUMN tier_quality_daily.segment IS 'NULL when the event had no segment or the segment dimension is not kept (cardinality control).';
COMMENT ON COLUMN tier_quality_hourly.intent IS 'Router-predicted intent; NULL when absent or the dimension is not kept.';
COMMENT ON COLUMN tier_quality_daily.intent IS 'Router-predicted intent; NULL when absent or the dimension is not kept.';
COMMENT ON COLUMN tier_quality_hourly.conversations IS 'Distinct conversations with a turn in this bucket and dimensions. Not additive across rows: a conversation whose turns differ in any dimension counts in each row.';
COMMENT ON COLUMN tier_quality_daily.conversations IS 'Distinct conversations with a turn in this day and dimensions. Not additive across rows: a conversation whose turns differ in any dimension counts in each row; use deflection_daily.ai_conversations for per-tier totals.';
COMMENT ON COLUMN tier_quality_hourly.csat_mean IS 'csat_sum / csat_n; NULL without CSAT responses. Keep csat_n/csat_sum to re-aggregate correctly (a mean of means is wrong).';
COMMENT ON COLUMN tier_quality_daily.csat_mean IS 'csat_sum / csat_n; NULL without CSAT responses. Keep csat_n/csat_sum to re-aggregate correctly (a mean of means is wrong).';
COMMENT ON COLUMN tier_quality_hourly.reviews_wrong IS 'HUMAN_REVIEW feedback with score 0: the answer missed the real intent. Reviews come from an oversampled slice, so this rate is not a population rate.';
COMMENT ON COLUMN tier_quality_daily.reviews_wrong IS 'HUMAN_REVIEW feedback with score 0: the answer missed the real intent. Reviews come from an oversampled slice, so this rate is not a population rate.';
COMMENT ON COLUMN tier_quality_hourly.review_error_rate IS 'reviews_wrong / reviews_n (NULL when 0). Unweighted: biased toward hard queries by design of the review sample; compare tiers, do not read as a population rate.';
COMMENT ON COLUMN tier_quality_daily.review_error_rate IS 'reviews_wrong / reviews_n (NULL when 0). Unweighted: biased toward hard queries by design of the review sample; compare tiers, do not read as a population rate.';
COMMENT ON COLUMN tier_quality_hourly.failed_deflections IS 'OPENED tickets within the attribution window after a turn of this cohort, at most one per conversation; grows until the row is mature.';
COMMENT ON COLUMN tier_quality_daily.failed_deflections IS 'OPENED tickets within the attribution window after a turn of this cohort, at most one per conversation; grows until the row is mature.';
COMMENT ON COLUMN tier_quality_hourly.cost_usd IS 'What these turns actually cost (summed exactly in nano-USD, then converted).';
COMMENT ON COLUMN tier_quality_daily.cost_usd IS 'What these turns actually cost (summed exactly in nano-USD, then converted).';
COMMENT ON COLUMN tier_quality_hourly.capable_cost_usd IS 'What the same turns would have cost on the capable model alone: the counterfactual the routing savings are measured against.';
COMMENT ON COLUMN tier_quality_daily.capable_cost_usd IS 'What the same turns would have cost on the capable model alone: the counterfactual the routing savings are measured against.';
COMMENT ON COLUMN tier_quality_hourly.inference_saved_usd IS 'capable_cost_usd - cost_usd: engineering''s side of the ledger, to be read next to attributed_human_cost_usd.';
COMMENT ON COLUMN tier_quality_daily.inference_saved_usd IS 'capable_cost_usd - cost_usd: engineering''s side of the ledger, to be read next to attributed_human_cost_usd.';
COMMENT ON COLUMN tier_quality_hourly.attributed_human_cost_usd IS 'Cost of RESOLVED tickets whose OPENED ticket was attributed to this cohort: the bill another cost center pays for these turns.';
COMMENT ON COLUMN tier_quality_daily.attributed_human_cost_usd IS 'Cost of RESOLVED tickets whose OPENED ticket was attributed to this cohort: the bill another cost center pays for these turns.';
COMMENT ON COLUMN tier_quality_hourly.latency_n IS 'Number of latency samples behind the percentiles (normally = decisions); percentiles are NULL when 0.';
COMMENT ON COLUMN tier_quality_daily.latency_n IS 'Number of latency samples behind the percentiles (normally = decisions); percentiles are NULL when 0.';
COMMENT ON COLUMN tier_quality_hourly.latency_p50_ms IS 'Nearest-rank median from the mergeable log histogram (1% bins): exact over partitions, within 0.5% of the true value.';
COMMENT ON COLUMN tier_quality_daily.latency_p50_ms IS 'Nearest-rank median from the mergeable log histogram (1% bins): exact over partitions, within 0.5% of the true value.';
COMMENT ON COLUMN tier_quality_hourly.latency_p95_ms IS 'Nearest-rank 95th percentile from the log histogram, within 0.5%.';
COMMENT ON COLUMN tier_quality_daily.latency_p95_ms IS 'Nearest-rank 95th percentile from the log histogram, within 0.5%.';
COMMENT ON COLUMN tier_quality_hourly.latency_p99_ms IS 'Nearest-rank 99th percentile from the log histogram, within 0.5%. Percentiles cannot be averaged across rows; merge tw histograms instead.';
COMMENT ON COLUMN tier_quality_daily.latency_p99_ms IS 'Nearest-rank 99th percentile from the log histogram, within 0.5%. Percentiles cannot be averaged across rows; merge tw histograms instead.';
COMMENT ON COLUMN tier_quality_hourly.thumbs_down_rate IS 'thumbs_down / decisions (NULL when 0). Per decision, not per conversation, because feedback rates turns. Can exceed 1 if one turn gets several thumbs-down events; its interval is then NULL.';
COMMENT ON COLUMN tier_quality_daily.thumbs_down_rate IS 'thumbs_down / decisions (NULL when 0). Per decision, not per conversation, because feedback rates turns. Can exceed 1 if one turn gets several thumbs-down events; its interval is then NULL.';
COMMENT ON COLUMN tier_quality_hourly.thumbs_down_rate_lo IS '95% Wilson lower bound: thumbs-down is sparse (~3 per 1000), so the interval matters more than the point estimate.';
COMMENT ON COLUMN tier_quality_daily.thumbs_down_rate_lo IS '95% Wilson lower bound: thumbs-down is sparse (~3 per 1000), so the interval matters more than the point estimate.';
COMMENT ON COLUMN tier_quality_hourly.thumbs_down_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_daily.thumbs_down_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_hourly.failed_deflection_rate IS 'failed_deflections / conversations (NULL when 0): the share of conversations that ended in a human ticket. Rises until mature.';
COMMENT ON COLUMN tier_quality_daily.failed_deflection_rate IS 'failed_deflections / conversations (NULL when 0): the share of conversations that ended in a human ticket. Rises until mature.';
COMMENT ON COLUMN tier_quality_hourly.failed_deflection_rate_lo IS '95% Wilson lower bound.';
COMMENT ON COLUMN tier_quality_daily.failed_deflection_rate_lo IS '95% Wilson lower bound.';
COMMENT ON COLUMN tier_quality_hourly.failed_deflection_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_daily.failed_deflection_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_hourly.review_error_rate_lo IS '95% Wilson lower bound.';
COMMENT ON COLUMN tier_quality_daily.review_error_rate_lo IS '95% Wilson lower bound.';
COMMENT ON COLUMN tier_quality_hourly.review_error_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_daily.review_error_rate_hi IS '95% Wilson upper bound.';
COMMENT ON COLUMN tier_quality_hourly.deflected IS 'conversations - failed_deflections: conversations with no ticket attributed to this cohort (yet, if not mature).';
COMMENT ON COLUMN tier_quality_daily.deflected IS 'conversations - failed_deflections: conversations with no ticket attributed to this cohort (yet, if not mature).';
COMMENT ON COLUMN tier_quality_hourly.mature IS 'True once bucket end + attribution window <= the watermark of every partition: no further ticket can be attributed, so the rates are final. Compare and alert on mature rows only.';
COMMENT ON COLUMN tier_quality_daily.mature IS 'True once day end + attribution window <= the watermark of every partition: no further ticket can be attributed, so the rates are final. Compare and alert on mature rows only.';
COMMENT ON COLUMN tier_quality_hourly.matures_at IS 'Event time (bucket end + attribution window) the slowest partition''s watermark must reach for this row to become mature.';
COMMENT ON COLUMN tier_quality_daily.matures_at IS 'Event time (day end + attribution window) the slowest partition''s watermark must reach for this row to become mature.';

------------------------------------------------------------------------------
-- deflection_daily (SPEC §4.2, engineering's side of the ledger)
------------------------------------------------------------------------------

CREATE VIEW deflection_daily AS
WITH qd AS (
    SELECT CAST(bucket AT TIME ZONE 'UTC' AS date) AS day,
           tier,
           SUM(failed_deflections) AS failed_deflections,
           SUM(cost_nusd) AS cost_nusd,
           SUM(capable_cost_nusd) AS capable_cost_nusd,
           SUM(attributed_tickets) AS attributed_tickets,
           SUM(attributed_human_cost_nusd) AS attributed_human_cost_nusd
    FROM tw_agg_quality
    WHERE grain = 'd'
    GROUP BY CAST(bucket AT TIME ZONE 'UTC' AS date), tier
),
keys AS (
    SELECT day, tier FROM qd
    UNION
    SELECT day, tier FROM tw_agg_tier_day
),
base AS (
    SELECT k.day,
           k.tier,
           CAST(COALESCE(t.ai_conversations, 0) AS bigint) AS ai_conversations,
           CAST(COALESCE(qd.failed_deflections, 0) AS bigint) AS failed_deflections,
           COALESCE(qd.cost_nusd, 0) AS cost_nusd,
           COALESCE(qd.capable_cost_nusd, 0) AS capable_cost_nusd,
           CAST(COALESCE(qd.attributed_tickets, 0) AS bigint) AS attributed_tickets,
           COALESCE(qd.attributed_human_cost_nusd, 0) AS attributed_human_cost_nusd
    FROM keys k
    LEFT JOIN tw_agg_tier_day t ON t.day = k.day AND t.tier = k.tier
    LEFT JOIN qd ON qd.day = k.day AND qd.tier = k.tier
),
range_baseline AS (
    -- Pooled over all tiers: before routing went live everything ran on one
    -- path, so the range is the counterfactual "no routing" rate.
    SELECT CASE WHEN SUM(b.ai_conversations) > 0
                THEN CAST(SUM(b.failed_deflections) AS double precision) / SUM(b.ai_conversations)
           END AS rate
    FROM base b
    CROSS JOIN tw_clock c
    WHERE c.baseline_from IS NOT NULL
      AND c.baseline_to IS NOT NULL
      AND b.day >= c.baseline_from
      AND b.day <= c.baseline_to
),
human_day AS (
    SELECT day, SUM(human_cost_nusd) AS cost_nusd, SUM(tickets_resolved) AS resolved
    FROM tw_agg_human_day
    GROUP BY day
),
human_all AS (
    SELECT SUM(human_cost_nusd) AS cost_nusd, SUM(tickets_resolved) AS resolved
    FROM tw_agg_human_day
),
rated AS (
    SELECT b.*,
           CASE WHEN b.ai_conversations > 0
                THEN CAST(b.failed_deflections AS double precision) / b.ai_conversations
           END AS failed_deflection_rate,
           CASE WHEN c.baseline_from IS NOT NULL AND c.baseline_to IS NOT NULL
                THEN rb.rate
                ELSE CASE WHEN bt.ai_conversations > 0
                          THEN CAST(bt.failed_deflections AS double precision) / bt.ai_conversations
                     END
           END AS baseline_rate,
           CASE WHEN hd.resolved > 0 THEN CAST(hd.cost_nusd AS double precision) / hd.resolved / 1e9
                WHEN ha.resolved > 0 THEN CAST(ha.cost_nusd AS double precision) / ha.resolved / 1e9
           END AS mean_ticket_cost_usd,
           CAST(b.day - DATE '1970-01-01' AS bigint) * 86400000 AS day_start_ms,
           c.attribution_window_ms,
           c.global_watermark_ms
    FROM base b
    CROSS JOIN tw_clock c
    CROSS JOIN range_baseline rb
    CROSS JOIN human_all ha
    LEFT JOIN base bt ON bt.day = b.day AND bt.tier = c.baseline_tier
    LEFT JOIN human_day hd ON hd.day = b.day
)
SELECT
    day,
    tier,
    ai_conversations,
    failed_deflections,
    ai_conversations - failed_deflections AS deflected,
    CASE WHEN ai_conversations > 0
         THEN CAST(ai_conversations - failed_deflections AS double precision) / ai_conversations
    END AS deflection_rate,
    tw_wilson_lo(ai_conversations - failed_deflections, ai_conversations) AS deflection_rate_lo,
    tw_wilson_hi(ai_conversations - failed_deflections, ai_conversations) AS deflection_rate_hi,
    failed_deflection_rate,
    tw_wilson_lo(failed_deflections, ai_conversations) AS failed_deflection_rate_lo,
    tw_wilson_hi(failed_deflections, ai_conversations) AS failed_deflection_rate_hi,
    CAST(cost_nusd AS double precision) / 1e9 AS inference_cost_usd,
    CAST(capable_cost_nusd AS double precision) / 1e9 AS capable_cost_usd,
    CAST(capable_cost_nusd - cost_nusd AS double precision) / 1e9 AS inference_saved_usd,
    attributed_tickets,
    CAST(attributed_human_cost_nusd AS double precision) / 1e9 AS attributed_human_cost_usd,
    baseline_rate,
    mean_ticket_cost_usd,
    CASE WHEN failed_deflection_rate > baseline_rate AND mean_ticket_cost_usd IS NOT NULL
         THEN (failed_deflection_rate - baseline_rate) * ai_conversations * mean_ticket_cost_usd
         ELSE 0.0
    END AS excess_human_cost_usd,
    COALESCE(day_start_ms + 86400000 + attribution_window_ms <= global_watermark_ms, false) AS mature,
    CAST(day AS timestamp) AT TIME ZONE 'UTC'
        + (86400000 + attribution_window_ms) * INTERVAL '1 millisecond' AS matures_at
FROM rated;

COMMENT ON VIEW deflection_daily IS
    'Per tier and cohort day (UTC): how many AI conversations ended without a human ticket, what the tier cost and saved, and the human cost its failures caused (SPEC §4.2). Read inference_saved_usd against excess_human_cost_usd: savings that are smaller than the excess are a loss booked on someone else''s budget.';
COMMENT ON COLUMN deflection_daily.ai_conversations IS 'Distinct conversations with a turn in this tier on this day (deduplicated across dimensions). A conversation that used two tiers counts in both.';
COMMENT ON COLUMN deflection_daily.failed_deflections IS 'Conversations of this tier/day whose first ticket was opened within the attribution window; credited to the tier of the attributed turn only.';
COMMENT ON COLUMN deflection_daily.deflected IS 'ai_conversations - failed_deflections: conversations for which no human ticket (yet, if not mature) followed.';
COMMENT ON COLUMN deflection_daily.deflection_rate IS 'deflected / ai_conversations (NULL when 0). Only final when mature: it falls as the attribution window fills.';
COMMENT ON COLUMN deflection_daily.deflection_rate_lo IS '95% Wilson lower bound of deflection_rate.';
COMMENT ON COLUMN deflection_daily.deflection_rate_hi IS '95% Wilson upper bound of deflection_rate.';
COMMENT ON COLUMN deflection_daily.failed_deflection_rate IS 'failed_deflections / ai_conversations (= 1 - deflection_rate); the rate compared against baseline_rate.';
COMMENT ON COLUMN deflection_daily.failed_deflection_rate_lo IS '95% Wilson lower bound of failed_deflection_rate.';
COMMENT ON COLUMN deflection_daily.failed_deflection_rate_hi IS '95% Wilson upper bound of failed_deflection_rate.';
COMMENT ON COLUMN deflection_daily.inference_cost_usd IS 'Sum of what this tier''s turns actually cost that day.';
COMMENT ON COLUMN deflection_daily.capable_cost_usd IS 'What the same turns would have cost on the capable model alone.';
COMMENT ON COLUMN deflection_daily.inference_saved_usd IS 'capable_cost_usd - inference_cost_usd: the saving engineering reports; 0 for the capable tier by construction.';
COMMENT ON COLUMN deflection_daily.attributed_tickets IS 'Tickets attributed to this tier/day''s conversations (can exceed failed_deflections: only the first ticket per conversation is a failed deflection).';
COMMENT ON COLUMN deflection_daily.attributed_human_cost_usd IS 'Cost of resolved tickets attributed to this tier''s conversations: everything they cost, including the baseline share a capable model would also have caused.';
COMMENT ON COLUMN deflection_daily.baseline_rate IS 'Failed-deflection rate expected without routing: the pooled rate over the configured baseline date range (all tiers) when baseline_from/baseline_to are set, else the rate of the baseline tier (default capable) on the same day. NULL when that reference has no conversations (then excess is 0).';
COMMENT ON COLUMN deflection_daily.mean_ticket_cost_usd IS 'Average cost of a resolved ticket opened that day (all cost centers and channels), falling back to the all-time average when that day has no resolved tickets yet; NULL when no ticket was ever resolved.';
COMMENT ON COLUMN deflection_daily.excess_human_cost_usd IS 'max(0, failed_deflection_rate - baseline_rate) * ai_conversations * mean_ticket_cost_usd: the human cost caused by this tier beyond what the baseline would have caused. 0 when any input is NULL (rather than NULL) so ledger sums stay defined; check baseline_rate / mean_ticket_cost_usd for NULL to tell "no excess" from "unknown".';
COMMENT ON COLUMN deflection_daily.mature IS 'True once day end + attribution window <= the watermark of every partition; before that failed deflections and excess are still rising.';
COMMENT ON COLUMN deflection_daily.matures_at IS 'Event time the slowest partition''s watermark must reach for this day to become mature.';

------------------------------------------------------------------------------
-- human_volume_daily (SPEC §4.2, the other cost centers' side)
------------------------------------------------------------------------------

CREATE VIEW human_volume_daily AS
SELECT day,
       cost_center,
       channel,
       tickets_opened,
       attributed_tickets,
       unattributed_tickets,
       tickets_resolved,
       CAST(human_cost_nusd AS double precision) / 1e9 AS human_cost_usd,
       CASE WHEN tickets_resolved > 0
            THEN CAST(human_cost_nusd AS double precision) / tickets_resolved / 1e9
       END AS mean_ticket_cost_usd
FROM tw_agg_human_day;

COMMENT ON VIEW human_volume_daily IS
    'Human support volume and cost per cost center and channel, by the UTC day the ticket was opened (SPEC §4.2): the dashboard of the teams that pay for failed deflections.';
COMMENT ON COLUMN human_volume_daily.day IS 'UTC day the ticket was OPENED; resolution cost that arrives later is credited back to this day.';
COMMENT ON COLUMN human_volume_daily.attributed_tickets IS 'Opened tickets attributed to an AI conversation (linked, within the attribution window), whether or not it was that conversation''s first ticket.';
COMMENT ON COLUMN human_volume_daily.unattributed_tickets IS 'Opened tickets with no linked conversation or opened outside the attribution window: human volume the AI side cannot be charged for.';
COMMENT ON COLUMN human_volume_daily.tickets_resolved IS 'Tickets opened that day that have been RESOLVED so far; grows while tickets are worked.';
COMMENT ON COLUMN human_volume_daily.human_cost_usd IS 'Cost of the resolved tickets opened that day (reported, or derived from the per-channel cost); grows while tickets are worked.';
COMMENT ON COLUMN human_volume_daily.mean_ticket_cost_usd IS 'human_cost_usd / tickets_resolved (NULL when none resolved yet).';

------------------------------------------------------------------------------
-- ledger_daily (SPEC §4.2, both sides joined per day)
------------------------------------------------------------------------------

CREATE VIEW ledger_daily AS
WITH qd AS (
    SELECT CAST(bucket AT TIME ZONE 'UTC' AS date) AS day,
           SUM(cost_nusd) AS cost_nusd,
           SUM(capable_cost_nusd) AS capable_cost_nusd,
           SUM(failed_deflections) AS failed_deflections,
           SUM(attributed_human_cost_nusd) AS attributed_human_cost_nusd
    FROM tw_agg_quality
    WHERE grain = 'd'
    GROUP BY CAST(bucket AT TIME ZONE 'UTC' AS date)
),
td AS (
    SELECT day, SUM(ai_conversations) AS ai_conversations
    FROM tw_agg_tier_day
    GROUP BY day
),
dd AS (
    SELECT day, SUM(excess_human_cost_usd) AS excess_human_cost_usd
    FROM deflection_daily
    GROUP BY day
),
hd AS (
    SELECT day,
           SUM(tickets_opened) AS tickets_opened,
           SUM(attributed_tickets) AS attributed_tickets,
           SUM(unattributed_tickets) AS unattributed_tickets,
           SUM(tickets_resolved) AS tickets_resolved,
           SUM(human_cost_nusd) AS human_cost_nusd
    FROM tw_agg_human_day
    GROUP BY day
),
keys AS (
    SELECT day FROM qd
    UNION SELECT day FROM td
    UNION SELECT day FROM hd
)
SELECT
    k.day,
    CAST(COALESCE(qd.cost_nusd, 0) AS double precision) / 1e9 AS inference_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) AS double precision) / 1e9 AS capable_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS double precision) / 1e9 AS inference_saved_usd,
    CAST(COALESCE(qd.attributed_human_cost_nusd, 0) AS double precision) / 1e9 AS attributed_human_cost_usd,
    CAST(COALESCE(hd.human_cost_nusd, 0) AS double precision) / 1e9 AS human_cost_usd,
    COALESCE(dd.excess_human_cost_usd, 0.0) AS excess_human_cost_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS double precision) / 1e9
        - COALESCE(dd.excess_human_cost_usd, 0.0) AS net_usd,
    CAST(COALESCE(hd.tickets_opened, 0) AS bigint) AS tickets_opened,
    CAST(COALESCE(hd.attributed_tickets, 0) AS bigint) AS attributed_tickets,
    CAST(COALESCE(hd.unattributed_tickets, 0) AS bigint) AS unattributed_tickets,
    CAST(COALESCE(hd.tickets_resolved, 0) AS bigint) AS tickets_resolved,
    CAST(COALESCE(td.ai_conversations, 0) AS bigint) AS ai_conversations,
    CAST(COALESCE(qd.failed_deflections, 0) AS bigint) AS failed_deflections,
    COALESCE(CAST(k.day - DATE '1970-01-01' AS bigint) * 86400000 + 86400000 + c.attribution_window_ms
             <= c.global_watermark_ms, false) AS mature,
    CAST(k.day AS timestamp) AT TIME ZONE 'UTC'
        + (86400000 + c.attribution_window_ms) * INTERVAL '1 millisecond' AS matures_at
FROM keys k
CROSS JOIN tw_clock c
LEFT JOIN qd ON qd.day = k.day
LEFT JOIN td ON td.day = k.day
LEFT JOIN dd ON dd.day = k.day
LEFT JOIN hd ON hd.day = k.day;

COMMENT ON VIEW ledger_daily IS
    'Both sides of the deflection ledger per UTC day, one row per day that has AI traffic or human tickets (SPEC §4.2): inference savings next to human cost and the excess human cost routing caused. Exists because deflection stayed flat on one team''s dashboard while human volume climbed on another''s.';
COMMENT ON COLUMN ledger_daily.day IS 'UTC day: cohort day for the AI columns, ticket-opened day for the human columns.';
COMMENT ON COLUMN ledger_daily.inference_cost_usd IS 'All tiers'' actual inference cost for the day''s cohort.';
COMMENT ON COLUMN ledger_daily.inference_saved_usd IS 'All tiers'' capable_cost - actual cost: what routing saved on the inference bill.';
COMMENT ON COLUMN ledger_daily.attributed_human_cost_usd IS 'Cost of tickets attributed to that day''s AI conversations (all tiers), including the share the baseline would also have caused.';
COMMENT ON COLUMN ledger_daily.human_cost_usd IS 'Cost of all resolved tickets opened that day, every cost center and channel, attributed or not.';
COMMENT ON COLUMN ledger_daily.excess_human_cost_usd IS 'Sum over tiers of deflection_daily.excess_human_cost_usd: human cost above the baseline failure rate.';
COMMENT ON COLUMN ledger_daily.net_usd IS 'inference_saved_usd - excess_human_cost_usd: the saving that survives once the human cost it shifted to other cost centers is charged back. Negative means routing loses money overall.';
COMMENT ON COLUMN ledger_daily.ai_conversations IS 'Sum over tiers of per-tier distinct conversations (a conversation that used two tiers counts twice, matching the per-tier denominators).';
COMMENT ON COLUMN ledger_daily.mature IS 'True once day end + attribution window <= the watermark of every partition, i.e. every tier''s deflection_daily row for that day is mature. Human cost can still grow afterwards as old tickets get resolved.';
COMMENT ON COLUMN ledger_daily.matures_at IS 'Event time the slowest partition''s watermark must reach for this day to become mature.';

------------------------------------------------------------------------------
-- dead_letters, orphans_daily
------------------------------------------------------------------------------

CREATE VIEW dead_letters AS
SELECT id, received_at, topic, partition, kafka_offset, reason, detail, payload, payload_len, truncated
FROM tw_dead_letters;

COMMENT ON VIEW dead_letters IS
    'Events rejected before touching any metric (undecodable, constraint violation, unknown schema id, too far in the future, oversize), with enough context to find, replay or fix them. Consumption never stops for them.';
COMMENT ON COLUMN dead_letters.received_at IS 'When the daemon rejected it (processing time, not event time).';
COMMENT ON COLUMN dead_letters.kafka_offset IS 'Offset of the message within topic/partition: locate the original on the broker while it is retained.';
COMMENT ON COLUMN dead_letters.reason IS 'Machine-readable rejection reason; same label as tierwatch_events_rejected_total{reason}.';
COMMENT ON COLUMN dead_letters.detail IS 'Human-readable detail (which field, which value) for debugging the producer.';
COMMENT ON COLUMN dead_letters.payload IS 'Raw message bytes, cut to the configured maximum so a flood of huge bad messages cannot fill the database.';
COMMENT ON COLUMN dead_letters.payload_len IS 'Original message length in bytes, before any truncation.';
COMMENT ON COLUMN dead_letters.truncated IS 'True when payload holds only a prefix of the message.';

CREATE VIEW orphans_daily AS
SELECT day, kind, count
FROM tw_orphans;

COMMENT ON VIEW orphans_daily IS
    'Outcomes (feedback, tickets) that waited for their routing decision until the configured time or memory bound and were given up, per day and kind. Counted, never silently dropped: a rising count means the gateway is not publishing decisions, or they arrive later than the wait bound.';
COMMENT ON COLUMN orphans_daily.day IS 'UTC day the daemon credits the orphans to (see the daemon docs for event day vs. expiry day); kinds stay separate so a missing-decision problem is not mixed with a late-ticket one.';
COMMENT ON COLUMN orphans_daily.kind IS 'What was orphaned and why, as labelled by the daemon (e.g. outcome type).';
