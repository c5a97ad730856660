-- Rescoring slice (SPEC §4.4): the sampled decisions, their rescores and human reviews, the
-- review queue and the weighted (Hájek) daily estimates.
--
-- A decision is sampled by the daemon with inclusion probability p (deterministic in event_id,
-- so a replay samples the same events) and inserted here in the same transaction as the offsets
-- of the batch that carried it (ON CONFLICT DO NOTHING: a replayed batch changes nothing). The
-- rescorer then moves a row from 'pending' to 'scored' (or 'shed' when it could not keep up) in
-- one transaction that also merges the score into tw_conf_hist (signal rescore_score), guarded
-- by status = 'pending', so each score is counted once however often it is applied.

CREATE TABLE tw_rescore_samples (
    event_id           text             PRIMARY KEY,
    conversation_id    text             NOT NULL,
    turn               int              NOT NULL,
    partition          int              NOT NULL,
    ts                 timestamptz      NOT NULL,
    tier               text             NOT NULL,
    model              text             NOT NULL,
    classifier_version text             NOT NULL,
    router             text             NOT NULL,
    segment            text             NOT NULL,
    router_confidence  double precision,
    threshold          double precision,
    margin             double precision,
    ood_score          double precision,
    p                  double precision NOT NULL CHECK (p > 0 AND p <= 1),
    w                  double precision NOT NULL CHECK (w >= 1),
    reason             text             NOT NULL,
    query_text         text,
    query_hash         text,
    status             text             NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'scored', 'shed')),
    p_complex          double precision,
    model_version      text,
    rescore_threshold  double precision,
    scored_at          timestamptz,
    review_addressed   boolean,
    reviewed_at        timestamptz,
    inserted_at        timestamptz      NOT NULL DEFAULT now()
);
COMMENT ON TABLE tw_rescore_samples IS
    'One row per sampled routing decision (SPEC §4.4): the decision''s dimensions, the sampler''s inclusion probability p, weight w = 1/p and reason, the query text (NULL where the gateway redacts or the daemon is configured not to keep it), the rescore (status pending → scored | shed) and the latest HUMAN_REVIEW label of that turn. segment is '''' when absent. ts is event time, inserted_at/scored_at wall clock.';
COMMENT ON COLUMN tw_rescore_samples.query_hash IS
    'Hash of the query text, kept when the text itself is not (privacy), so duplicates can still be grouped.';
COMMENT ON COLUMN tw_rescore_samples.rescore_threshold IS
    'θ: the p_complex threshold in force when the row was scored (the rescoring model''s decision threshold).';

-- Review labels are matched by (conversation_id, turn); recovery scans pending rows by age.
CREATE INDEX tw_rescore_samples_turn ON tw_rescore_samples (conversation_id, turn);
CREATE INDEX tw_rescore_samples_pending ON tw_rescore_samples (inserted_at) WHERE status = 'pending';
CREATE INDEX tw_rescore_samples_ts ON tw_rescore_samples (ts);

------------------------------------------------------------------------------
-- Weighted Wilson interval at a fractional effective size
------------------------------------------------------------------------------
-- The same expression as stats::weighted::wilson_at in the daemon (centre − half written the
-- same way, so both give the same doubles up to the last ulp or so): Wilson score interval for a
-- proportion p observed on an effective size n, z = 1.959963984540054. NULL unless n > 0 and p
-- in [0, 1]. lo is exactly 0 at p = 0, hi exactly 1 at p = 1, and lo <= p <= hi.

CREATE FUNCTION tw_wilson_at_lo(p double precision, n double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p IS NULL OR n IS NULL OR NOT (n > 0) OR p < 0 OR p > 1 THEN NULL
        WHEN p = 0 THEN 0.0
        ELSE GREATEST(0.0, LEAST(p,
              (p + 1.959963984540054 * 1.959963984540054 / (2.0 * n)) / (1.0 + 1.959963984540054 * 1.959963984540054 / n)
            - 1.959963984540054 / (1.0 + 1.959963984540054 * 1.959963984540054 / n)
              * sqrt(p * (1.0 - p) / n + 1.959963984540054 * 1.959963984540054 / (4.0 * n * n))))
    END
$$;
COMMENT ON FUNCTION tw_wilson_at_lo(double precision, double precision) IS
    'Lower bound of the 95% Wilson score interval for proportion p at a (fractional) effective sample size n; stats::weighted::wilson_at in the daemon.';

CREATE FUNCTION tw_wilson_at_hi(p double precision, n double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p IS NULL OR n IS NULL OR NOT (n > 0) OR p < 0 OR p > 1 THEN NULL
        WHEN p = 1 THEN 1.0
        ELSE LEAST(1.0, GREATEST(p,
              (p + 1.959963984540054 * 1.959963984540054 / (2.0 * n)) / (1.0 + 1.959963984540054 * 1.959963984540054 / n)
            + 1.959963984540054 / (1.0 + 1.959963984540054 * 1.959963984540054 / n)
              * sqrt(p * (1.0 - p) / n + 1.959963984540054 * 1.959963984540054 / (4.0 * n * n))))
    END
$$;
COMMENT ON FUNCTION tw_wilson_at_hi(double precision, double precision) IS
    'Upper bound of the 95% Wilson score interval for proportion p at a (fractional) effective sample size n.';

------------------------------------------------------------------------------
-- review_queue
------------------------------------------------------------------------------

CREATE VIEW review_queue AS
SELECT
    (s.ts AT TIME ZONE 'UTC')::date AS day,
    s.ts,
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
    s.scored_at,
    CASE WHEN s.status <> 'scored' THEN NULL
         WHEN s.tier = c.baseline_tier THEN s.p_complex < s.rescore_threshold
         ELSE s.p_complex >= s.rescore_threshold
    END AS suspected_misroute,
    s.review_addressed,
    s.reviewed_at,
    s.inserted_at
FROM tw_rescore_samples s
CROSS JOIN tw_clock c;
COMMENT ON VIEW review_queue IS
    'Every sampled decision (SPEC §4.4), for stratified human review: filter on reason/tier/status and weight by weight when turning reviews into rates. HUMAN_REVIEW feedback on the turn lands in review_addressed/reviewed_at.';
COMMENT ON COLUMN review_queue.day IS 'UTC day of the decision (event time).';
COMMENT ON COLUMN review_queue.ts IS 'When the routing decision was made (event time).';
COMMENT ON COLUMN review_queue.segment IS 'Customer segment; NULL when the event had none.';
COMMENT ON COLUMN review_queue.router_confidence IS 'The router''s confidence (PRE_ROUTE: P(simple); CASCADE: the cheap model''s self-confidence).';
COMMENT ON COLUMN review_queue.threshold IS 'The routing threshold in force; NULL when the event carried none.';
COMMENT ON COLUMN review_queue.margin IS '|router_confidence − threshold|: small = the router was nearly undecided. NULL without a threshold.';
COMMENT ON COLUMN review_queue.ood_score IS 'The rescorer''s out-of-distribution score in [0, 1] (NULL when it was not computed).';
COMMENT ON COLUMN review_queue.inclusion_probability IS 'p: the probability with which the sampler included this decision.';
COMMENT ON COLUMN review_queue.weight IS 'w = 1/p: how many decisions of the population this sampled one stands for.';
COMMENT ON COLUMN review_queue.reason IS 'Which boosts set p: base, low_margin, ood, low_margin+ood.';
COMMENT ON COLUMN review_queue.query_text IS 'The user''s query; NULL where redacted or not kept.';
COMMENT ON COLUMN review_queue.query_hash IS 'Hash of the query text (kept when the text is not).';
COMMENT ON COLUMN review_queue.status IS 'pending (waiting for the rescorer), scored, or shed (the rescorer dropped it under load; its weight is carried by the scored rows of the same day, tier and reason).';
COMMENT ON COLUMN review_queue.p_complex IS 'The rescorer''s probability that the query needs the capable tier.';
COMMENT ON COLUMN review_queue.model_version IS 'Version of the rescoring model that scored the row.';
COMMENT ON COLUMN review_queue.rescore_threshold IS 'θ in force when scored: p_complex ≥ θ means "needs the capable tier".';
COMMENT ON COLUMN review_queue.scored_at IS 'Wall-clock time the score was stored.';
COMMENT ON COLUMN review_queue.suspected_misroute IS 'Scored rows only: a non-capable tier with p_complex ≥ θ (under-routing, SPEC §4.4), or the capable tier (tw_clock.baseline_tier, the configured ledger.capable_tier) with p_complex < θ (over-routing). NULL until scored.';
COMMENT ON COLUMN review_queue.review_addressed IS 'Latest HUMAN_REVIEW of this turn: true = the answer addressed the real intent (score 1), false = it did not (score 0); NULL when not reviewed.';
COMMENT ON COLUMN review_queue.reviewed_at IS 'Event time of that review.';
COMMENT ON COLUMN review_queue.inserted_at IS 'Wall-clock time the sample was stored.';

------------------------------------------------------------------------------
-- rescore_estimates_daily
------------------------------------------------------------------------------

CREATE VIEW rescore_estimates_daily AS
WITH s AS (
    SELECT (r.ts AT TIME ZONE 'UTC')::date AS day, r.tier, r.reason, r.status, r.w,
           CASE WHEN r.status <> 'scored' THEN NULL
                WHEN r.tier = c.baseline_tier THEN r.p_complex < r.rescore_threshold
                ELSE r.p_complex >= r.rescore_threshold
           END AS y
    FROM tw_rescore_samples r
    CROSS JOIN tw_clock c
),
cell AS (
    -- Non-response reweighting: within (day, tier, reason) the scored rows carry the weight of
    -- every sampled row (pending and shed included), so shedding does not bias the estimate as
    -- long as it is unrelated to the outcome within a cell.
    SELECT day, tier, reason,
           SUM(w) AS w_all,
           SUM(CASE WHEN status = 'scored' THEN w ELSE 0 END) AS w_scored
    FROM s
    GROUP BY day, tier, reason
),
adj AS (
    SELECT s.day, s.tier, s.y, s.w * (cell.w_all / cell.w_scored) AS wa
    FROM s
    JOIN cell ON cell.day = s.day AND cell.tier = s.tier AND cell.reason = s.reason
    WHERE s.status = 'scored'
),
est AS (
    SELECT day, tier,
           COUNT(*) AS scored,
           SUM(wa) AS sw,
           SUM(wa * wa) AS sw2,
           SUM(CASE WHEN y THEN wa ELSE 0 END) AS swy,
           SUM(CASE WHEN y THEN wa * wa ELSE 0 END) AS sw2y
    FROM adj
    GROUP BY day, tier
),
counts AS (
    SELECT day, tier,
           COUNT(*) AS sampled,
           SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,
           SUM(CASE WHEN status = 'shed' THEN 1 ELSE 0 END) AS shed,
           SUM(w) AS sampled_weight
    FROM s
    GROUP BY day, tier
),
rated AS (
    SELECT k.day, k.tier, k.sampled, COALESCE(e.scored, 0) AS scored, k.pending, k.shed, k.sampled_weight,
           e.sw, e.sw2, e.sw2y,
           -- CASE first: GREATEST/LEAST skip NULLs, and a day with nothing scored has no rate.
           CASE WHEN e.sw > 0 THEN GREATEST(0.0, LEAST(1.0, e.swy / e.sw)) END AS r,
           e.sw * e.sw / e.sw2 AS kish
    FROM counts k
    LEFT JOIN est e ON e.day = k.day AND e.tier = k.tier
),
sized AS (
    SELECT rated.*,
           CASE WHEN r > 0 AND r < 1
                     AND GREATEST(0.0, sw2y * (1.0 - 2.0 * r) + r * r * sw2) > 0
                THEN r * (1.0 - r) / (GREATEST(0.0, sw2y * (1.0 - 2.0 * r) + r * r * sw2) / (sw * sw))
                ELSE kish
           END AS n_int
    FROM rated
)
SELECT day, tier, sampled, scored, pending, shed,
       COALESCE(sw, 0.0) AS weight_sum,
       sampled_weight,
       kish AS n_eff,
       n_int AS n_eff_interval,
       r AS suspected_misroute_rate,
       tw_wilson_at_lo(r, n_int) AS suspected_misroute_rate_lo,
       tw_wilson_at_hi(r, n_int) AS suspected_misroute_rate_hi
FROM sized;
COMMENT ON VIEW rescore_estimates_daily IS
    'Per UTC day (of the decision) and tier: the Hájek estimate of the suspected-misroute rate over the rescored sample, weighted back to the population (SPEC §4.4). Unweighted shares of the sample are biased by design (it oversamples low-margin and out-of-distribution queries) and are deliberately not shown.';
COMMENT ON COLUMN rescore_estimates_daily.sampled IS 'Sampled decisions of the day and tier, whatever their status.';
COMMENT ON COLUMN rescore_estimates_daily.scored IS 'Sampled decisions rescored so far: the rows the estimate uses.';
COMMENT ON COLUMN rescore_estimates_daily.pending IS 'Sampled decisions still waiting for the rescorer (treated like shed ones until scored).';
COMMENT ON COLUMN rescore_estimates_daily.shed IS 'Sampled decisions the rescorer dropped under load. Their weight is carried by the scored rows of the same (day, tier, reason).';
COMMENT ON COLUMN rescore_estimates_daily.weight_sum IS 'Σ adjusted weight of the scored rows: the estimated number of decisions the estimate speaks for. Equals sampled_weight unless some (day, tier, reason) cell has no scored row at all (its weight cannot be carried).';
COMMENT ON COLUMN rescore_estimates_daily.sampled_weight IS 'Σ w over every sampled row: the Horvitz–Thompson estimate of the decisions offered to the sampler.';
COMMENT ON COLUMN rescore_estimates_daily.n_eff IS 'Kish''s effective sample size (Σw)²/Σw² of the adjusted weights.';
COMMENT ON COLUMN rescore_estimates_daily.n_eff_interval IS 'The effective size the interval uses: R(1−R)/v with v = Σw²(y−R)²/(Σw)² the linearization variance of the ratio; n_eff when R is 0 or 1. Kish''s size ignores that misroutes concentrate where the sampler oversamples, and there gives intervals ~1.5× too wide (see migrations/README.md).';
COMMENT ON COLUMN rescore_estimates_daily.suspected_misroute_rate IS 'Σ w·y / Σ w over scored rows (adjusted weights), y = suspected misroute: a non-capable tier with p_complex ≥ θ, or the capable tier with p_complex < θ (over-routing; the SPEC formula is identically 0 there). NULL with no scored row.';
COMMENT ON COLUMN rescore_estimates_daily.suspected_misroute_rate_lo IS '95% Wilson interval at n_eff_interval (stats::weighted in the daemon), lower bound.';
COMMENT ON COLUMN rescore_estimates_daily.suspected_misroute_rate_hi IS '95% Wilson interval at n_eff_interval, upper bound.';
