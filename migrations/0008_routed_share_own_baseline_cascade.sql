-- Routed share vs target, per-tier own-baseline excess, and cascade escalation quality.
--
--   * confidence_drift_daily gains the configured target cheap share of the classifier version
--     ([routing.targets], router_confidence rows only) and the 95% interval of the observed share
--     at the window's distinct conversations: the statistics of the routed_share_deviation alert.
--   * deflection_daily gains each tier's failed-deflection rate in its own baseline window and the
--     excess human cost against it; ledger_daily sums that excess and nets it against the savings.
--     The existing excess columns are unchanged (see the column comments for why both exist).
--   * cascade_daily: escalation rate of CASCADE routers and, from the rescoring slice, the weighted
--     share of escalations the rescorer judged unnecessary.
--
-- The views are replaced with their columns appended (CREATE OR REPLACE VIEW keeps the existing
-- columns, their order, types and comments).

ALTER TABLE tw_drift_daily
    ADD COLUMN cheap_share_target      double precision,
    ADD COLUMN cheap_share_observed_lo double precision,
    ADD COLUMN cheap_share_observed_hi double precision;

CREATE OR REPLACE VIEW confidence_drift_daily AS
SELECT day, classifier_version, router, signal, "window", n, n_eff, ref_n, ks_d, ks_p, psi, psi_noise,
       cheap_share_expected, cheap_share_observed, status, evaluated_at,
       cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi
FROM tw_drift_daily;
COMMENT ON COLUMN confidence_drift_daily.cheap_share_target IS
    'The share of decisions this classifier version was calibrated to send off the capable tier ([routing.targets] cheap_share), shown on router_confidence rows; NULL without a configured target and on other signals. The routed_share_deviation alert fires when the 7-day interval (cheap_share_observed_lo..hi) lies entirely outside target ± tolerance on consecutive days.';
COMMENT ON COLUMN confidence_drift_daily.cheap_share_observed_lo IS
    '95% Wilson lower bound of cheap_share_observed at n_eff = distinct conversations (not decisions: turns of one conversation are not independent). NULL without decisions.';
COMMENT ON COLUMN confidence_drift_daily.cheap_share_observed_hi IS
    '95% Wilson upper bound of cheap_share_observed at n_eff = distinct conversations.';

COMMENT ON TABLE tw_settings IS
    'Effective configuration the views need, rewritten by the daemon at every startup: attribution_window_ms, baseline_from, baseline_to (YYYY-MM-DD, absent when not configured), baseline_tier, own_baseline_days (alerts.quality.baseline_days: the mature days that form a tier''s own failed-deflection baseline).';

------------------------------------------------------------------------------
-- deflection_daily: + own_baseline_rate, excess_vs_own_baseline_usd
------------------------------------------------------------------------------

CREATE OR REPLACE VIEW deflection_daily AS
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
own_range AS (
    -- Each tier's own rate over the configured baseline range (not pooled).
    SELECT b.tier,
           CASE WHEN SUM(b.ai_conversations) > 0
                THEN CAST(SUM(b.failed_deflections) AS double precision) / SUM(b.ai_conversations)
           END AS rate
    FROM base b
    CROSS JOIN tw_clock c
    WHERE c.baseline_from IS NOT NULL
      AND c.baseline_to IS NOT NULL
      AND b.day >= c.baseline_from
      AND b.day <= c.baseline_to
    GROUP BY b.tier
),
own_days AS (
    -- How many mature days form a tier's own baseline (the quality rule's baseline_days).
    SELECT COALESCE((SELECT CAST(value AS bigint) FROM tw_settings WHERE key = 'own_baseline_days'), 14) AS days
),
own_ranked AS (
    SELECT b.tier, b.ai_conversations, b.failed_deflections,
           ROW_NUMBER() OVER (PARTITION BY b.tier ORDER BY b.day) AS rn
    FROM base b
    CROSS JOIN tw_clock c
    WHERE b.ai_conversations > 0
      AND CAST(b.day - DATE '1970-01-01' AS bigint) * 86400000 + 86400000 + c.attribution_window_ms
          <= c.global_watermark_ms
),
own_first AS (
    -- Each tier's first own_days mature days with traffic; no rate until it has that many.
    SELECT r.tier,
           CASE WHEN COUNT(*) >= MAX(n.days) AND SUM(r.ai_conversations) > 0
                THEN CAST(SUM(r.failed_deflections) AS double precision) / SUM(r.ai_conversations)
           END AS rate
    FROM own_ranked r
    CROSS JOIN own_days n
    WHERE r.rn <= n.days
    GROUP BY r.tier
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
           COALESCE(orr.rate, ofr.rate) AS own_baseline_rate,
           CAST(b.day - DATE '1970-01-01' AS bigint) * 86400000 AS day_start_ms,
           c.attribution_window_ms,
           c.global_watermark_ms
    FROM base b
    CROSS JOIN tw_clock c
    CROSS JOIN range_baseline rb
    CROSS JOIN human_all ha
    LEFT JOIN base bt ON bt.day = b.day AND bt.tier = c.baseline_tier
    LEFT JOIN human_day hd ON hd.day = b.day
    LEFT JOIN own_range orr ON orr.tier = b.tier
    LEFT JOIN own_first ofr ON ofr.tier = b.tier
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
        + (86400000 + attribution_window_ms) * INTERVAL '1 millisecond' AS matures_at,
    own_baseline_rate,
    CASE WHEN failed_deflection_rate > own_baseline_rate AND mean_ticket_cost_usd IS NOT NULL
         THEN (failed_deflection_rate - own_baseline_rate) * ai_conversations * mean_ticket_cost_usd
         ELSE 0.0
    END AS excess_vs_own_baseline_usd
FROM rated;

COMMENT ON COLUMN deflection_daily.own_baseline_rate IS
    'This tier''s own failed-deflection rate in its baseline window: Σ failed_deflections / Σ ai_conversations of the tier over the configured ledger baseline range (baseline_from..baseline_to) when it is set and the tier had conversations in it, otherwise over the tier''s first own_baseline_days mature days with conversations (alerts.quality.baseline_days, default 14). NULL until the tier has that many mature days (then excess_vs_own_baseline_usd is 0).';
COMMENT ON COLUMN deflection_daily.excess_vs_own_baseline_usd IS
    'max(0, failed_deflection_rate - own_baseline_rate) * ai_conversations * mean_ticket_cost_usd: the human cost this tier caused beyond its own past rate. Why a second baseline: excess_human_cost_usd against the capable tier''s same-day rate is a lower bound on the excess (routing sends the capable tier the hard queries, so its rate is high), and against the pooled configured range it charges the capable tier''s higher rate as excess; the own baseline measures each tier against itself. 0 when an input is NULL; check own_baseline_rate and mean_ticket_cost_usd to tell "no excess" from "unknown".';

------------------------------------------------------------------------------
-- ledger_daily: + excess_vs_own_baseline_usd, net_vs_own_baseline_usd
------------------------------------------------------------------------------

CREATE OR REPLACE VIEW ledger_daily AS
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
    SELECT day, SUM(excess_human_cost_usd) AS excess_human_cost_usd,
           SUM(excess_vs_own_baseline_usd) AS excess_vs_own_baseline_usd
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
        + (86400000 + c.attribution_window_ms) * INTERVAL '1 millisecond' AS matures_at,
    COALESCE(dd.excess_vs_own_baseline_usd, 0.0) AS excess_vs_own_baseline_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS double precision) / 1e9
        - COALESCE(dd.excess_vs_own_baseline_usd, 0.0) AS net_vs_own_baseline_usd
FROM keys k
CROSS JOIN tw_clock c
LEFT JOIN qd ON qd.day = k.day
LEFT JOIN td ON td.day = k.day
LEFT JOIN dd ON dd.day = k.day
LEFT JOIN hd ON hd.day = k.day;

COMMENT ON COLUMN ledger_daily.excess_vs_own_baseline_usd IS
    'Sum over tiers of deflection_daily.excess_vs_own_baseline_usd: human cost above each tier''s own baseline rate. Read it next to excess_human_cost_usd, which measures against the capable tier''s same-day rate (a lower bound) or the pooled configured range (which counts the capable tier''s higher rate as excess).';
COMMENT ON COLUMN ledger_daily.net_vs_own_baseline_usd IS
    'inference_saved_usd - excess_vs_own_baseline_usd: net_usd with each tier measured against its own past.';

------------------------------------------------------------------------------
-- cascade_daily
------------------------------------------------------------------------------

CREATE VIEW cascade_daily AS
WITH dq AS (
    SELECT CAST(bucket AT TIME ZONE 'UTC' AS date) AS day,
           classifier_version,
           SUM(decisions) AS decisions,
           SUM(escalations) AS escalations
    FROM tw_agg_quality
    WHERE grain = 'd' AND router = 'CASCADE'
    GROUP BY CAST(bucket AT TIME ZONE 'UTC' AS date), classifier_version
),
s AS (
    -- Sampled CASCADE decisions that escalated: the capable tier answered. y = the rescorer judged
    -- the capable tier unnecessary (p_complex < θ).
    SELECT (r.ts AT TIME ZONE 'UTC')::date AS day, r.classifier_version, r.reason, r.status, r.w,
           CASE WHEN r.status = 'scored' THEN r.p_complex < r.rescore_threshold END AS y
    FROM tw_rescore_samples r
    CROSS JOIN tw_clock c
    WHERE r.router = 'CASCADE' AND r.tier = c.baseline_tier
),
cell AS (
    -- Non-response reweighting as in rescore_estimates_daily: within (day, version, reason) the
    -- scored rows carry the weight of the pending and shed ones.
    SELECT day, classifier_version, reason,
           SUM(w) AS w_all,
           SUM(CASE WHEN status = 'scored' THEN w ELSE 0 END) AS w_scored
    FROM s
    GROUP BY day, classifier_version, reason
),
adj AS (
    SELECT s.day, s.classifier_version, s.y, s.w * (cell.w_all / cell.w_scored) AS wa
    FROM s
    JOIN cell ON cell.day = s.day AND cell.classifier_version = s.classifier_version AND cell.reason = s.reason
    WHERE s.status = 'scored'
),
est AS (
    SELECT day, classifier_version,
           COUNT(*) AS scored,
           CASE WHEN SUM(wa) > 0
                THEN GREATEST(0.0, LEAST(1.0, SUM(CASE WHEN y THEN wa ELSE 0 END) / SUM(wa)))
           END AS r,
           SUM(wa) * SUM(wa) / SUM(wa * wa) AS kish
    FROM adj
    GROUP BY day, classifier_version
),
keys AS (
    SELECT day, classifier_version FROM dq
    UNION
    SELECT day, classifier_version FROM est
)
SELECT k.day,
       k.classifier_version,
       CAST(COALESCE(dq.decisions, 0) AS bigint) AS decisions,
       CAST(COALESCE(dq.escalations, 0) AS bigint) AS escalations,
       CASE WHEN dq.decisions > 0 THEN CAST(dq.escalations AS double precision) / dq.decisions END
           AS escalation_rate,
       tw_wilson_lo(CAST(dq.escalations AS bigint), CAST(dq.decisions AS bigint)) AS escalation_rate_lo,
       tw_wilson_hi(CAST(dq.escalations AS bigint), CAST(dq.decisions AS bigint)) AS escalation_rate_hi,
       e.r AS over_escalation_rate,
       tw_wilson_at_lo(e.r, e.kish) AS over_escalation_rate_lo,
       tw_wilson_at_hi(e.r, e.kish) AS over_escalation_rate_hi,
       CAST(COALESCE(e.scored, 0) AS bigint) AS over_escalation_scored,
       e.kish AS over_escalation_n_eff
FROM keys k
LEFT JOIN dq ON dq.day = k.day AND dq.classifier_version = k.classifier_version
LEFT JOIN est e ON e.day = k.day AND e.classifier_version = k.classifier_version;

COMMENT ON VIEW cascade_daily IS
    'Per UTC day (of the decision) and classifier_version of the CASCADE routers: how often the cheap model''s answer was escalated to the capable one, and, from the rescoring slice, how many of those escalations the rescorer judged unnecessary. Needs the router dimension kept (dimensions.keep) for the escalation counts.';
COMMENT ON COLUMN cascade_daily.decisions IS 'CASCADE routing decisions (turns) of the day and version, all tiers.';
COMMENT ON COLUMN cascade_daily.escalations IS 'Of those, decisions whose cheap answer fell below the threshold and was replaced by the capable model''s (escalated = true).';
COMMENT ON COLUMN cascade_daily.escalation_rate IS 'escalations / decisions (NULL when 0). Per decision: a cascade decides per turn.';
COMMENT ON COLUMN cascade_daily.escalation_rate_lo IS '95% Wilson lower bound of escalation_rate over decisions.';
COMMENT ON COLUMN cascade_daily.escalation_rate_hi IS '95% Wilson upper bound of escalation_rate over decisions.';
COMMENT ON COLUMN cascade_daily.over_escalation_rate IS 'Over-escalation: among sampled CASCADE decisions that escalated (their tier is the capable one, tw_clock.baseline_tier), the Hájek-weighted share with p_complex < θ (the rescorer says the cheap answer would have done), with the non-response reweighting of rescore_estimates_daily within (day, version, reason). NULL with no scored escalation.';
COMMENT ON COLUMN cascade_daily.over_escalation_rate_lo IS '95% Wilson interval of over_escalation_rate at over_escalation_n_eff (tw_wilson_at_lo), lower bound.';
COMMENT ON COLUMN cascade_daily.over_escalation_rate_hi IS '95% Wilson interval of over_escalation_rate at over_escalation_n_eff (tw_wilson_at_hi), upper bound.';
COMMENT ON COLUMN cascade_daily.over_escalation_scored IS 'Scored sampled escalations behind over_escalation_rate.';
COMMENT ON COLUMN cascade_daily.over_escalation_n_eff IS 'Kish''s effective sample size (Σw)²/Σw² of their adjusted weights.';
