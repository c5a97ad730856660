//! `[attribution]`, `[dimensions]`, `[pricing]` and `[ledger]`: how outcomes are joined to
//! decisions, which dimensions are kept, and what a missing cost is worth
//! (docs/contract.md#attribution, docs/contract.md#deflection-ledger).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};
pub use crate::join::Dimension;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// W: a ticket opened within this many hours after the conversation's latest turn is a failed
    /// deflection of that turn's tier.
    pub window_hours: f64,
    /// Extra event-time hours a conversation's state is kept after W, for late events.
    pub grace_hours: f64,
    /// How long (event time) feedback or a ticket waits for its decision before it is counted as
    /// an orphan.
    pub pending_max_hours: f64,
    /// Seconds a decision may arrive behind the event-time watermark of its partition. Tickets
    /// and turn-less feedback are attributed only once the watermark is this far past them. At
    /// most `pending_max_hours` × 3600: a waiting outcome would otherwise expire as an orphan
    /// before the watermark could release it.
    pub allowed_lateness_seconds: f64,
    /// At most this many waiting outcomes per partition; beyond it the oldest become orphans.
    pub pending_max_per_partition: usize,
    /// How long (event time) an OPENED ticket is remembered so that its RESOLVED event can be
    /// credited to the opening day and tier.
    pub ticket_retention_days: f64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            window_hours: 72.0,
            grace_hours: 24.0,
            pending_max_hours: 24.0,
            allowed_lateness_seconds: 0.0,
            pending_max_per_partition: 1_000_000,
            ticket_retention_days: 30.0,
        }
    }
}

impl AttributionConfig {
    pub fn window_ms(&self) -> i64 {
        (self.window_hours * 3_600_000.0).round() as i64
    }
    pub fn grace_ms(&self) -> i64 {
        (self.grace_hours * 3_600_000.0).round() as i64
    }
    pub fn pending_ms(&self) -> i64 {
        (self.pending_max_hours * 3_600_000.0).round() as i64
    }
    pub fn lateness_ms(&self) -> i64 {
        (self.allowed_lateness_seconds * 1000.0).round() as i64
    }
    pub fn ticket_retention_ms(&self) -> i64 {
        (self.ticket_retention_days * 86_400_000.0).round() as i64
    }
}

impl Validate for AttributionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("attribution.window_hours", self.window_hours),
            ("attribution.pending_max_hours", self.pending_max_hours),
            ("attribution.ticket_retention_days", self.ticket_retention_days),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, format!("must be a positive number, got {v}")));
            }
        }
        if !(self.allowed_lateness_seconds.is_finite() && self.allowed_lateness_seconds >= 0.0) {
            return Err(invalid("attribution.allowed_lateness_seconds", "must be ≥ 0"));
        }
        if self.lateness_ms() > self.pending_ms() {
            // An outcome waiting for the watermark would expire as an orphan before the
            // watermark could release it: every ticket would be lost.
            return Err(invalid(
                "attribution.allowed_lateness_seconds",
                format!(
                    "must be at most attribution.pending_max_hours ({} h = {} s), got {} s",
                    self.pending_max_hours,
                    self.pending_max_hours * 3600.0,
                    self.allowed_lateness_seconds
                ),
            ));
        }
        if !(self.grace_hours.is_finite() && self.grace_hours >= 0.0) {
            return Err(invalid("attribution.grace_hours", "must be ≥ 0"));
        }
        if self.pending_max_per_partition == 0 {
            return Err(invalid("attribution.pending_max_per_partition", "must be ≥ 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DimensionsConfig {
    /// Dimensions kept besides `tier`; dropped ones are stored as ''.
    pub keep: Vec<Dimension>,
}

impl Default for DimensionsConfig {
    fn default() -> Self {
        Self { keep: vec![Dimension::Model, Dimension::ClassifierVersion, Dimension::Router, Dimension::Segment] }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Capable-model price per million input tokens, used when `capable_cost_usd` is null.
    pub capable_input_usd_per_mtok: Option<f64>,
    /// Capable-model price per million output tokens, used when `capable_cost_usd` is null.
    pub capable_output_usd_per_mtok: Option<f64>,
    /// Cost of a resolved ticket per channel, used when the ticket's `cost_usd` is null.
    pub ticket_cost_usd_per_channel: BTreeMap<String, f64>,
    /// Cost per handled minute, used when the channel has no flat price and `handle_minutes` is set.
    pub ticket_cost_usd_per_minute: Option<f64>,
}

impl Validate for PricingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("pricing.capable_input_usd_per_mtok", self.capable_input_usd_per_mtok),
            ("pricing.capable_output_usd_per_mtok", self.capable_output_usd_per_mtok),
            ("pricing.ticket_cost_usd_per_minute", self.ticket_cost_usd_per_minute),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(invalid(key, "must be a non-negative number"));
            }
        }
        if self.capable_input_usd_per_mtok.is_some() != self.capable_output_usd_per_mtok.is_some() {
            return Err(invalid(
                "pricing.capable_output_usd_per_mtok",
                "set both capable input and output prices, or neither",
            ));
        }
        for (ch, v) in &self.ticket_cost_usd_per_channel {
            if !(v.is_finite() && *v >= 0.0) {
                return Err(invalid(
                    &format!("pricing.ticket_cost_usd_per_channel.{ch}"),
                    "must be a non-negative number",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Name of the capable tier: its failed-deflection rate is the default baseline, and its
    /// turns need no price table for `capable_cost_usd`.
    pub capable_tier: String,
    /// First day (UTC, `YYYY-MM-DD`) of a baseline period before routing went live. When set
    /// (with `baseline_to`), the baseline failed-deflection rate is that period's, all tiers.
    pub baseline_from: Option<chrono::NaiveDate>,
    /// Last day (inclusive) of the baseline period.
    pub baseline_to: Option<chrono::NaiveDate>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { capable_tier: "capable".into(), baseline_from: None, baseline_to: None }
    }
}

impl Validate for LedgerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (self.baseline_from, self.baseline_to) {
            (Some(a), Some(b)) if a > b => {
                return Err(invalid("ledger.baseline_to", "must not be before ledger.baseline_from"))
            }
            (Some(_), None) => return Err(invalid("ledger.baseline_to", "set with baseline_from")),
            (None, Some(_)) => return Err(invalid("ledger.baseline_from", "set with baseline_to")),
            _ => {}
        }
        if self.capable_tier.is_empty() {
            return Err(invalid("ledger.capable_tier", "must not be empty"));
        }
        Ok(())
    }
}
