-- Cost per successful conversation, per tier and cohort day (see the Postgres migration of the
-- same number).
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
