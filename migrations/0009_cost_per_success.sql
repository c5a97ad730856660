-- Cost per successful conversation, per tier and cohort day: what a deflected conversation really
-- costs once the human support its tier's failures caused is charged back.

CREATE VIEW tier_cost_daily AS
SELECT day,
       tier,
       ai_conversations,
       deflected,
       inference_cost_usd,
       attributed_human_cost_usd,
       inference_cost_usd + attributed_human_cost_usd AS total_cost_usd,
       CASE WHEN deflected > 0
            THEN (inference_cost_usd + attributed_human_cost_usd) / deflected
       END AS cost_per_successful_conversation_usd,
       mature
FROM deflection_daily;
COMMENT ON VIEW tier_cost_daily IS
    'Per tier and cohort day: (inference_cost_usd + attributed_human_cost_usd) / deflected, the cost of one conversation that ended without a human ticket, charging each tier the human cost of its own failures. A cheap tier whose figure exceeds the capable tier''s costs more per success than it saves. Rises until mature (tickets still arriving).';
COMMENT ON COLUMN tier_cost_daily.cost_per_successful_conversation_usd IS
    '(inference_cost_usd + attributed_human_cost_usd) / deflected; NULL when no conversation was deflected.';
