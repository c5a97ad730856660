-- Rescoring slice (SPEC §4.4) — embedded SQLite store.
--
-- SQLite twin of ../0003_rescore.sql (read it and ../README.md for the meaning of every
-- column); conventions of 0001_init.sql: time is INTEGER epoch ms in the table (*_ms
-- columns), ISO-8601 UTC TEXT in the views (day 'YYYY-MM-DD'; the decision's ts and the
-- processing-time stamps keep milliseconds, 'YYYY-MM-DDTHH:MM:SS.SSSZ', because a decision
-- time is not a bucket boundary); booleans are INTEGER 0/1. No CREATE FUNCTION: the Wilson
-- interval at a fractional effective size (tw_wilson_at_lo/_hi in Postgres) is inlined with the
-- same expression, z² written as 3.841458820694125 (what Postgres computes from its numeric
-- literals).

-- One row per sampled routing decision: dimensions, inclusion probability p, weight w = 1/p,
-- reason, the query (text NULL where redacted or not kept), the rescore (status pending →
-- scored | shed) and the latest HUMAN_REVIEW label of the turn. segment is '' when absent.
CREATE TABLE tw_rescore_samples (
    event_id           TEXT    PRIMARY KEY,
    conversation_id    TEXT    NOT NULL,
    turn               INTEGER NOT NULL,
    partition          INTEGER NOT NULL,
    ts_ms              INTEGER NOT NULL,   -- decision time (event time), epoch ms
    tier               TEXT    NOT NULL,
    model              TEXT    NOT NULL,
    classifier_version TEXT    NOT NULL,
    router             TEXT    NOT NULL,
    segment            TEXT    NOT NULL,
    router_confidence  REAL,
    threshold          REAL,
    margin             REAL,
    ood_score          REAL,
    p                  REAL    NOT NULL CHECK (p > 0 AND p <= 1),
    w                  REAL    NOT NULL CHECK (w >= 1),
    reason             TEXT    NOT NULL,
    query_text         TEXT,
    query_hash         TEXT,
    status             TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'scored', 'shed')),
    p_complex          REAL,
    model_version      TEXT,
    rescore_threshold  REAL,
    scored_at_ms       INTEGER,            -- wall clock
    review_addressed   INTEGER CHECK (review_addressed IN (0, 1)),
    reviewed_at_ms     INTEGER,            -- event time of the review
    inserted_at_ms     INTEGER NOT NULL    -- wall clock
                       DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);
CREATE INDEX tw_rescore_samples_turn ON tw_rescore_samples (conversation_id, turn);
CREATE INDEX tw_rescore_samples_pending ON tw_rescore_samples (inserted_at_ms) WHERE status = 'pending';
CREATE INDEX tw_rescore_samples_ts ON tw_rescore_samples (ts_ms);

-- Every sampled decision, for stratified human review. suspected_misroute: scored rows only;
-- a non-capable tier with p_complex >= θ, or the capable tier (tw_clock.baseline_tier) with
-- p_complex < θ.
CREATE VIEW review_queue AS
SELECT
    date(s.ts_ms / 1000, 'unixepoch') AS day,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.ts_ms / 1000.0, 'unixepoch') AS ts,
    s.event_id,
    s.conversation_id,
    s.turn,
    s.tier,
    s.model,
    s.classifier_version,
    s.router,
    NULLIF(s.segment, '') AS segment,
    s.router_confidence,
    s.threshold,
    s.margin,
    s.ood_score,
    s.p AS inclusion_probability,
    s.w AS weight,
    s.reason,
    s.query_text,
    s.query_hash,
    s.status,
    s.p_complex,
    s.model_version,
    s.rescore_threshold,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.scored_at_ms / 1000.0, 'unixepoch') AS scored_at,
    CASE WHEN s.status <> 'scored' THEN NULL
         WHEN s.tier = c.baseline_tier THEN s.p_complex < s.rescore_threshold
         ELSE s.p_complex >= s.rescore_threshold
    END AS suspected_misroute,
    s.review_addressed,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.reviewed_at_ms / 1000.0, 'unixepoch') AS reviewed_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.inserted_at_ms / 1000.0, 'unixepoch') AS inserted_at
FROM tw_rescore_samples s
CROSS JOIN tw_clock c;

-- Per UTC day and tier: Hájek estimate of the suspected-misroute rate over scored rows, with
-- non-response reweighting within (day, tier, reason) and the Wilson interval at the
-- linearization effective size (Kish's when the rate is 0 or 1). See ../0003_rescore.sql.
CREATE VIEW rescore_estimates_daily AS
WITH s AS (
    SELECT r.ts_ms - (r.ts_ms % 86400000) AS day_ms, r.tier, r.reason, r.status, r.w,
           CASE WHEN r.status <> 'scored' THEN NULL
                WHEN r.tier = c.baseline_tier THEN r.p_complex < r.rescore_threshold
                ELSE r.p_complex >= r.rescore_threshold
           END AS y
    FROM tw_rescore_samples r
    CROSS JOIN tw_clock c
),
cell AS (
    SELECT day_ms, tier, reason,
           SUM(w) AS w_all,
           SUM(CASE WHEN status = 'scored' THEN w ELSE 0.0 END) AS w_scored
    FROM s
    GROUP BY day_ms, tier, reason
),
adj AS (
    SELECT s.day_ms, s.tier, s.y, s.w * (cell.w_all / cell.w_scored) AS wa
    FROM s
    JOIN cell ON cell.day_ms = s.day_ms AND cell.tier = s.tier AND cell.reason = s.reason
    WHERE s.status = 'scored'
),
est AS (
    SELECT day_ms, tier,
           COUNT(*) AS scored,
           SUM(wa) AS sw,
           SUM(wa * wa) AS sw2,
           SUM(CASE WHEN y THEN wa ELSE 0.0 END) AS swy,
           SUM(CASE WHEN y THEN wa * wa ELSE 0.0 END) AS sw2y
    FROM adj
    GROUP BY day_ms, tier
),
counts AS (
    SELECT day_ms, tier,
           COUNT(*) AS sampled,
           SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,
           SUM(CASE WHEN status = 'shed' THEN 1 ELSE 0 END) AS shed,
           SUM(w) AS sampled_weight
    FROM s
    GROUP BY day_ms, tier
),
rated AS (
    SELECT k.day_ms, k.tier, k.sampled, COALESCE(e.scored, 0) AS scored, k.pending, k.shed, k.sampled_weight,
           e.sw, e.sw2, e.sw2y,
           CASE WHEN e.sw > 0 THEN max(0.0, min(1.0, e.swy / e.sw)) END AS r,
           e.sw * e.sw / e.sw2 AS kish
    FROM counts k
    LEFT JOIN est e ON e.day_ms = k.day_ms AND e.tier = k.tier
),
sized AS (
    SELECT rated.*,
           CASE WHEN r > 0 AND r < 1
                     AND max(0.0, sw2y * (1.0 - 2.0 * r) + r * r * sw2) > 0
                THEN r * (1.0 - r) / (max(0.0, sw2y * (1.0 - 2.0 * r) + r * r * sw2) / (sw * sw))
                ELSE kish
           END AS n_int
    FROM rated
),
parts AS (
    -- centre and half of the Wilson interval at (r, n_int), as in stats::weighted::wilson_at.
    SELECT sized.*,
           CASE WHEN n_int > 0 THEN (r + 3.841458820694125 / (2.0 * n_int)) / (1.0 + 3.841458820694125 / n_int) END
               AS centre,
           CASE WHEN n_int > 0 THEN 1.959963984540054 / (1.0 + 3.841458820694125 / n_int)
               * sqrt(r * (1.0 - r) / n_int + 3.841458820694125 / (4.0 * n_int * n_int)) END AS half
    FROM sized
)
SELECT date(day_ms / 1000, 'unixepoch') AS day, tier, sampled, scored, pending, shed,
       COALESCE(sw, 0.0) AS weight_sum,
       sampled_weight,
       kish AS n_eff,
       n_int AS n_eff_interval,
       r AS suspected_misroute_rate,
       CASE WHEN centre IS NULL THEN NULL WHEN r = 0 THEN 0.0 ELSE max(0.0, min(r, centre - half)) END
           AS suspected_misroute_rate_lo,
       CASE WHEN centre IS NULL THEN NULL WHEN r = 1 THEN 1.0 ELSE min(1.0, max(r, centre + half)) END
           AS suspected_misroute_rate_hi
FROM parts;
