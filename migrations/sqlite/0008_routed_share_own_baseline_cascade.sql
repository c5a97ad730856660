-- Routed share vs target, per-tier own-baseline excess, and cascade escalation quality —
-- embedded SQLite store.
--
-- SQLite twin of ../0008_routed_share_own_baseline_cascade.sql (read it and ../README.md for the
-- meaning of every column); conventions of 0001_init.sql. SQLite cannot replace a view in place,
-- so the changed views are dropped and created again with the same columns plus the new ones,
-- appended at the end as in Postgres.

-- The configured target cheap share ([routing.targets], router_confidence rows only) and the 95%
-- Wilson interval of the observed share at the window's distinct conversations.
ALTER TABLE tw_drift_daily ADD COLUMN cheap_share_target REAL;
ALTER TABLE tw_drift_daily ADD COLUMN cheap_share_observed_lo REAL;
ALTER TABLE tw_drift_daily ADD COLUMN cheap_share_observed_hi REAL;

DROP VIEW confidence_drift_daily;
CREATE VIEW confidence_drift_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version, router, signal, "window", n, n_eff, ref_n, ks_d, ks_p, psi, psi_noise,
       cheap_share_expected, cheap_share_observed, status,
       strftime('%Y-%m-%dT%H:%M:%fZ', evaluated_at_ms / 1000.0, 'unixepoch') AS evaluated_at,
       cheap_share_target, cheap_share_observed_lo, cheap_share_observed_hi
FROM tw_drift_daily;

-- tw_settings gains own_baseline_days (alerts.quality.baseline_days): the mature days that form a
-- tier's own failed-deflection baseline (default 14 when absent).

------------------------------------------------------------------------------
-- deflection_daily: + own_baseline_rate, excess_vs_own_baseline_usd
------------------------------------------------------------------------------
-- own_baseline_rate: the tier's own rate over the configured baseline range when set and the
-- tier had conversations in it, else over its first own_baseline_days mature days with
-- conversations (NULL until it has that many). excess_vs_own_baseline_usd: max(0, rate − own
-- baseline) × conversations × mean ticket cost, 0 when an input is NULL. ledger_daily reads
-- deflection_daily, so it is dropped first and created again after it.

DROP VIEW ledger_daily;
DROP VIEW deflection_daily;

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
own_range AS (
    -- Each tier's own rate over the configured baseline range (not pooled).
    SELECT b.tier,
           CASE WHEN SUM(b.ai_conversations) > 0
                THEN CAST(SUM(b.failed_deflections) AS REAL) / SUM(b.ai_conversations)
           END AS rate
    FROM base b
    CROSS JOIN tw_clock c
    WHERE c.baseline_from_ms IS NOT NULL
      AND c.baseline_to_ms IS NOT NULL
      AND b.day_ms >= c.baseline_from_ms
      AND b.day_ms <= c.baseline_to_ms
    GROUP BY b.tier
),
own_days AS (
    -- How many mature days form a tier's own baseline (the quality rule's baseline_days).
    SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM tw_settings WHERE key = 'own_baseline_days'), 14) AS days
),
own_ranked AS (
    SELECT b.tier, b.ai_conversations, b.failed_deflections,
           ROW_NUMBER() OVER (PARTITION BY b.tier ORDER BY b.day_ms) AS rn
    FROM base b
    CROSS JOIN tw_clock c
    WHERE b.ai_conversations > 0
      AND b.day_ms + 86400000 + c.attribution_window_ms <= c.global_watermark_ms
),
own_first AS (
    -- Each tier's first own_days mature days with traffic; no rate until it has that many.
    SELECT r.tier,
           CASE WHEN COUNT(*) >= MAX(n.days) AND SUM(r.ai_conversations) > 0
                THEN CAST(SUM(r.failed_deflections) AS REAL) / SUM(r.ai_conversations)
           END AS rate
    FROM own_ranked r
    CROSS JOIN own_days n
    WHERE r.rn <= n.days
    GROUP BY r.tier
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
           COALESCE(orr.rate, ofr.rate) AS own_baseline_rate,
           c.attribution_window_ms,
           c.global_watermark_ms
    FROM base b
    CROSS JOIN tw_clock c
    CROSS JOIN range_baseline rb
    CROSS JOIN human_all ha
    LEFT JOIN base bt ON bt.day_ms = b.day_ms AND bt.tier = c.baseline_tier
    LEFT JOIN human_day hd ON hd.day_ms = b.day_ms
    LEFT JOIN own_range orr ON orr.tier = b.tier
    LEFT JOIN own_first ofr ON ofr.tier = b.tier
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
        AS matures_at,
    own_baseline_rate,
    CASE WHEN failed_deflection_rate > own_baseline_rate AND mean_ticket_cost_usd IS NOT NULL
         THEN (failed_deflection_rate - own_baseline_rate) * ai_conversations * mean_ticket_cost_usd
         ELSE 0.0
    END AS excess_vs_own_baseline_usd
FROM w;

------------------------------------------------------------------------------
-- ledger_daily: + excess_vs_own_baseline_usd, net_vs_own_baseline_usd
------------------------------------------------------------------------------

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
    SELECT day, SUM(excess_human_cost_usd) AS excess_human_cost_usd,
           SUM(excess_vs_own_baseline_usd) AS excess_vs_own_baseline_usd
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
        AS matures_at,
    COALESCE(dd.excess_vs_own_baseline_usd, 0.0) AS excess_vs_own_baseline_usd,
    CAST(COALESCE(qd.capable_cost_nusd, 0) - COALESCE(qd.cost_nusd, 0) AS REAL) / 1e9
        - COALESCE(dd.excess_vs_own_baseline_usd, 0.0) AS net_vs_own_baseline_usd
FROM keys k
CROSS JOIN tw_clock c
LEFT JOIN qd ON qd.day_ms = k.day_ms
LEFT JOIN td ON td.day_ms = k.day_ms
LEFT JOIN dd ON dd.day = date(k.day_ms / 1000, 'unixepoch')
LEFT JOIN hd ON hd.day_ms = k.day_ms;

------------------------------------------------------------------------------
-- cascade_daily
------------------------------------------------------------------------------
-- Per UTC day and classifier_version of the CASCADE routers: decisions, escalations and the
-- escalation rate with its Wilson interval (inlined, as in 0001_init.sql), and over-escalation:
-- among sampled escalated CASCADE decisions (tier = tw_clock.baseline_tier), the Hájek-weighted
-- share with p_complex < θ, non-response reweighted within (day, version, reason), with the Wilson
-- interval at Kish's effective size (inlined as in 0003_rescore.sql).

CREATE VIEW cascade_daily AS
WITH dq AS (
    SELECT bucket_ms AS day_ms,
           classifier_version,
           SUM(decisions) AS decisions,
           SUM(escalations) AS escalations
    FROM tw_agg_quality
    WHERE grain = 'd' AND router = 'CASCADE'
    GROUP BY bucket_ms, classifier_version
),
s AS (
    SELECT r.ts_ms - (r.ts_ms % 86400000) AS day_ms, r.classifier_version, r.reason, r.status, r.w,
           CASE WHEN r.status = 'scored' THEN r.p_complex < r.rescore_threshold END AS y
    FROM tw_rescore_samples r
    CROSS JOIN tw_clock c
    WHERE r.router = 'CASCADE' AND r.tier = c.baseline_tier
),
cell AS (
    SELECT day_ms, classifier_version, reason,
           SUM(w) AS w_all,
           SUM(CASE WHEN status = 'scored' THEN w ELSE 0.0 END) AS w_scored
    FROM s
    GROUP BY day_ms, classifier_version, reason
),
adj AS (
    SELECT s.day_ms, s.classifier_version, s.y, s.w * (cell.w_all / cell.w_scored) AS wa
    FROM s
    JOIN cell ON cell.day_ms = s.day_ms AND cell.classifier_version = s.classifier_version
             AND cell.reason = s.reason
    WHERE s.status = 'scored'
),
est AS (
    SELECT day_ms, classifier_version,
           COUNT(*) AS scored,
           CASE WHEN SUM(wa) > 0
                THEN max(0.0, min(1.0, SUM(CASE WHEN y THEN wa ELSE 0.0 END) / SUM(wa)))
           END AS r,
           SUM(wa) * SUM(wa) / SUM(wa * wa) AS kish
    FROM adj
    GROUP BY day_ms, classifier_version
),
keys AS (
    SELECT day_ms, classifier_version FROM dq
    UNION
    SELECT day_ms, classifier_version FROM est
),
parts AS (
    SELECT k.day_ms, k.classifier_version,
           COALESCE(dq.decisions, 0) AS decisions,
           COALESCE(dq.escalations, 0) AS escalations,
           e.scored, e.r, e.kish,
           -- Wilson parts of escalations / decisions (see 0001_init.sql).
           CASE WHEN dq.decisions > 0 AND dq.escalations BETWEEN 0 AND dq.decisions THEN
                CAST(dq.escalations AS REAL) / dq.decisions + 3.841458820694125 / (2.0 * dq.decisions) END AS es_a,
           CASE WHEN dq.decisions > 0 AND dq.escalations BETWEEN 0 AND dq.decisions THEN
                1.959963984540054 * sqrt(
                    CAST(dq.escalations AS REAL) * (dq.decisions - dq.escalations)
                        / (CAST(dq.decisions AS REAL) * dq.decisions * dq.decisions)
                  + 3.841458820694125 / (4.0 * dq.decisions * dq.decisions)) END AS es_s,
           1.0 + 3.841458820694125 / CAST(NULLIF(dq.decisions, 0) AS REAL) AS es_d,
           -- centre and half of the Wilson interval at (r, kish), as in stats::weighted::wilson_at.
           CASE WHEN e.kish > 0 THEN (e.r + 3.841458820694125 / (2.0 * e.kish)) / (1.0 + 3.841458820694125 / e.kish)
           END AS oe_centre,
           CASE WHEN e.kish > 0 THEN 1.959963984540054 / (1.0 + 3.841458820694125 / e.kish)
               * sqrt(e.r * (1.0 - e.r) / e.kish + 3.841458820694125 / (4.0 * e.kish * e.kish)) END AS oe_half
    FROM keys k
    LEFT JOIN dq ON dq.day_ms = k.day_ms AND dq.classifier_version = k.classifier_version
    LEFT JOIN est e ON e.day_ms = k.day_ms AND e.classifier_version = k.classifier_version
)
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version,
       decisions,
       escalations,
       CASE WHEN decisions > 0 THEN CAST(escalations AS REAL) / decisions END AS escalation_rate,
       max(0.0, min(1.0, (es_a - es_s) / es_d)) AS escalation_rate_lo,
       max(0.0, min(1.0, (es_a + es_s) / es_d)) AS escalation_rate_hi,
       r AS over_escalation_rate,
       CASE WHEN oe_centre IS NULL OR r IS NULL THEN NULL WHEN r = 0 THEN 0.0
            ELSE max(0.0, min(r, oe_centre - oe_half)) END AS over_escalation_rate_lo,
       CASE WHEN oe_centre IS NULL OR r IS NULL THEN NULL WHEN r = 1 THEN 1.0
            ELSE min(1.0, max(r, oe_centre + oe_half)) END AS over_escalation_rate_hi,
       COALESCE(scored, 0) AS over_escalation_scored,
       kish AS over_escalation_n_eff
FROM parts;
