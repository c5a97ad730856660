//! The ground truth of router evaluation: for every simulated decision, the expected number of
//! failed deflections had the cheap or the capable tier answered it, and, by brute force over the
//! decisions, the true net cost of any threshold. Tests compare the daemon's threshold advice
//! (computed from the event streams only) with this.

use std::collections::HashMap;

use super::gen::{TICKET_DELAY_MEDIAN_HOURS, TICKET_DELAY_SIGMA, TICKET_LINKED};
use super::{GroundTruth, Simulation};
use crate::event::Event;

/// P(a ticket opens within `window_hours` of the last answer): the simulated delay is
/// log-normal (median 16 h, σ 0.95).
pub fn p_within_window(window_hours: f64) -> f64 {
    let z = (window_hours / TICKET_DELAY_MEDIAN_HOURS).ln() / TICKET_DELAY_SIGMA;
    0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2)
}

/// Expected failed deflections attributed to this turn had the cheap (`cheap = true`) or the
/// capable tier answered it. Tickets follow a conversation's last answer, so only the last turn
/// carries one: P(ticket | that answer failed or not) × P(linked) × P(within the window).
pub fn expected_failed_deflection(t: &GroundTruth, cheap: bool, window_hours: f64) -> f64 {
    if !t.last_turn {
        return 0.0;
    }
    let p = if cheap { t.p_fail_cheap } else { t.p_fail_capable };
    (p * t.p_ticket_unresolved + (1.0 - p) * t.p_ticket_resolved) * TICKET_LINKED * p_within_window(window_hours)
}

/// One decision with what it would cost and cause on either tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthDecision {
    /// UTC day index of the decision.
    pub day: i64,
    pub classifier_version: String,
    pub confidence: f64,
    /// Served by a tier other than the capable one.
    pub served_cheap: bool,
    pub cost_usd: f64,
    pub capable_cost_usd: f64,
    pub efd_cheap: f64,
    pub efd_capable: f64,
}

/// Every decision of a simulation joined with its ground truth.
pub fn decisions(sim: &Simulation, window_hours: f64) -> Vec<TruthDecision> {
    let truth: HashMap<&str, &GroundTruth> = sim.truth.iter().map(|t| (t.event_id.as_str(), t)).collect();
    let mut out = vec![];
    for e in &sim.events {
        let Event::Decision(d) = e else { continue };
        let Some(t) = truth.get(d.event_id.as_str()) else { continue };
        out.push(TruthDecision {
            day: d.ts.div_euclid(crate::metrics::DAY_MS),
            classifier_version: d.classifier_version.clone(),
            confidence: d.confidence,
            served_cheap: d.tier != "capable",
            cost_usd: d.cost_usd,
            capable_cost_usd: d.capable_cost_usd.unwrap_or(d.cost_usd),
            efd_cheap: expected_failed_deflection(t, true, window_hours),
            efd_capable: expected_failed_deflection(t, false, window_hours),
        });
    }
    out
}

/// The true net cost (inference + expected failed deflections × `human_cost`) of routing the
/// decisions of days `from..=to` with threshold `t` (PRE_ROUTE: cheap when confidence ≥ t, on
/// the same 0.01 cells as the daemon). A decision moved to the cheap tier costs its capable cost
/// × `cheap_cost_ratio`, one moved to the capable tier its capable cost.
pub fn net_cost(ds: &[TruthDecision], from: i64, to: i64, t: f64, human_cost: f64, cheap_cost_ratio: f64) -> f64 {
    let k = (t * 100.0).round() as u8;
    ds.iter()
        .filter(|d| d.day >= from && d.day <= to)
        .map(|d| {
            let cheap = crate::metrics::calib_cell(d.confidence) >= k;
            let cost = match (cheap, d.served_cheap) {
                (true, true) | (false, false) => d.cost_usd,
                (false, true) => d.capable_cost_usd,
                (true, false) => d.capable_cost_usd * cheap_cost_ratio,
            };
            cost + human_cost * if cheap { d.efd_cheap } else { d.efd_capable }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_tickets_open_within_three_days() {
        // The sim's own measurement (sim::tests) finds 85–99% within 72 h.
        let p = p_within_window(72.0);
        assert!((p - 0.9432).abs() < 1e-3, "{p}");
        assert!((p_within_window(16.0) - 0.5).abs() < 1e-12);
    }
}
