//! Alerts (docs/contract.md#alert-rules): the alert model, the hysteresis engine and webhook delivery.
//!
//! * This module: the model — [`Severity`], [`AlertState`], one rule's [`Evaluation`]s, the
//!   [`Hysteresis`] rules and the resulting [`Episode`]s.
//! * [`engine`]: [`episodes`], a pure function from the ordered evaluations of one rule for one
//!   subject to its alert episodes. Re-running it after late data, after a restart or on another
//!   instance gives the same episodes with the same ids, so persisting them is an idempotent upsert
//!   and no alert is duplicated.
//! * [`outbox`] and [`webhook`]: durable webhook delivery (Alertmanager or Slack payloads) from an
//!   outbox written with each transition, retried with backoff (across restarts), firing alerts
//!   re-posted to Alertmanager periodically; it never slows ingestion.

pub mod engine;
pub mod misroute;
pub mod outbox;
pub mod quality;
pub mod webhook;

pub use crate::telemetry::{WebhookMetrics, WebhookStats};
pub use engine::{episode_id, episodes, firing};
pub use outbox::{webhook_key, OutboxRow, OutboxStore};
pub use webhook::{
    alertmanager_payload, alertmanager_payload_until, slack_payload, Notification, PayloadFormat, WebhookConfig,
    WebhookSink,
};

use serde::{Deserialize, Serialize};

/// How bad an alert is. Ordered: `Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Watch quality: e.g. the classifier is leaving its calibrated range.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// `"warning"` or `"critical"` (the serde and label spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The inverse of [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert episode is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition held for the required number of consecutive evaluations and has not yet been
    /// clean for long enough.
    Firing,
    /// The condition has been clean for the required number of consecutive evaluations.
    Resolved,
}

impl AlertState {
    /// `"firing"` or `"resolved"` (the serde spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One evaluation of one rule for one subject, in event-time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Start of the evaluated event-time window (Unix ms, inclusive).
    pub window_start_ms: i64,
    /// End of the evaluated event-time window (Unix ms, exclusive). Evaluations are ordered by it.
    pub window_end_ms: i64,
    /// The level the rule reached on this window; `None` = clean.
    pub level: Option<Severity>,
    /// The measured value (e.g. KS D, PSI, a rate).
    pub value: f64,
    /// The threshold the value was compared with (the one of `level` when not clean; the warning
    /// threshold when clean).
    pub threshold: f64,
}

/// Hysteresis rules (docs/contract.md#lifecycle; defaults: warning after 3 consecutive, critical after 2, resolve after
/// 2 clean). A count of 0 is treated as 1: a streak of zero evaluations is not a condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hysteresis {
    /// Fire a warning after this many consecutive evaluations at warning or critical.
    pub warning_after: u32,
    /// Fire (or escalate to) critical after this many consecutive evaluations at critical.
    pub critical_after: u32,
    /// Resolve after this many consecutive clean evaluations.
    pub resolve_after: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis { warning_after: 3, critical_after: 2, resolve_after: 2 }
    }
}

/// One alert episode: firing → (maybe escalated) → resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Deterministic id: [`episode_id`] of `kind`, `subject` and `fired_window_end_ms` (32 lowercase
    /// hex digits). The same inputs always give the same id, across restarts and instances.
    pub id: String,
    /// The rule, e.g. `confidence_drift`.
    pub kind: String,
    /// What the rule was evaluated for, e.g. a classifier version or a tier.
    pub subject: String,
    /// The highest severity reached.
    pub severity: Severity,
    /// Firing or resolved.
    pub state: AlertState,
    /// End of the evaluation window that made the episode fire.
    pub fired_window_end_ms: i64,
    /// End of the evaluation window that escalated it from warning to critical, if it did.
    pub escalated_window_end_ms: Option<i64>,
    /// End of the evaluation window that resolved it, if it did.
    pub resolved_window_end_ms: Option<i64>,
    /// Start of the evaluation window that made it fire (or escalate).
    pub window_start_ms: i64,
    /// End of the evaluation window that made it fire (or escalate).
    pub window_end_ms: i64,
    /// The value at firing (or escalation).
    pub value: f64,
    /// The threshold at firing (or escalation).
    pub threshold: f64,
    /// The value of the latest evaluation inside the episode (the resolving one once resolved).
    pub last_value: f64,
}
