//! `[limits]` and `[batch]`: what input is accepted, how much of it is kept, and how the
//! consume → commit loop batches it.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};
use crate::decode::FieldLimits;
use crate::join::JoinLimits;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages larger than this are rejected as `payload_too_large`.
    pub max_payload_bytes: usize,
    /// Dead letters keep at most this many bytes of the raw message.
    pub dead_letter_max_bytes: usize,
    /// An event whose ts is more than this many hours past the broker timestamp or the wall
    /// clock is rejected (`future_timestamp`).
    pub max_future_hours: f64,

    // Cardinality bounds (see `join::cardinality`): per partition, persisted with its join state.
    /// Distinct tiers a partition admits besides `ledger.capable_tier` (always admitted); later
    /// ones are grouped as `__other__`.
    pub max_tiers: usize,
    /// Distinct values a partition admits per kept dimension (model, classifier_version,
    /// segment, intent); later ones are grouped as `__other__`.
    pub max_dimension_values: usize,
    /// Routing decisions kept per conversation; later ones are dead-lettered as
    /// `conversation_turn_limit`.
    pub max_turns_per_conversation: usize,
    /// Feedback events kept per conversation; later ones are dead-lettered as
    /// `conversation_feedback_limit`.
    pub max_feedback_per_conversation: usize,
    /// Events (OPENED, RESOLVED) kept per ticket; later ones are dead-lettered as
    /// `ticket_event_limit`.
    pub max_events_per_ticket: usize,

    // Hostile-input bounds: values the store could not hold are rejected up front.
    /// Longest accepted `event_id`, `conversation_id` and `ticket_id`, in bytes
    /// (`string_too_long`). Postgres cannot index a key above ~2.7 KB.
    pub max_id_bytes: usize,
    /// Longest accepted dimension string (tier, model, classifier_version, segment, intent,
    /// feedback source, cost_center, channel, ticket reason), in bytes.
    pub max_dimension_bytes: usize,
    /// Longest accepted `query_text`, in bytes.
    pub max_text_bytes: usize,
    /// Largest accepted money amount of one event, in USD (`value_too_large`); keeps the
    /// nano-USD sums far below the 64-bit limit (9.2e9 USD). At most 1e6.
    pub max_cost_usd: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let join = JoinLimits::default();
        Self {
            max_payload_bytes: 64 * 1024,
            dead_letter_max_bytes: 16 * 1024,
            max_future_hours: 24.0,
            max_tiers: join.max_tiers,
            max_dimension_values: join.max_dimension_values,
            max_turns_per_conversation: join.max_turns_per_conversation,
            max_feedback_per_conversation: join.max_feedback_per_conversation,
            max_events_per_ticket: join.max_events_per_ticket,
            max_id_bytes: FieldLimits::DEFAULT_MAX_ID_BYTES,
            max_dimension_bytes: FieldLimits::DEFAULT_MAX_DIMENSION_BYTES,
            max_text_bytes: FieldLimits::DEFAULT_MAX_TEXT_BYTES,
            max_cost_usd: FieldLimits::DEFAULT_MAX_COST_USD,
        }
    }
}

impl LimitsConfig {
    /// The decoder's bounds on string lengths and money.
    pub fn field_limits(&self) -> FieldLimits {
        FieldLimits {
            max_id_bytes: self.max_id_bytes,
            max_dimension_bytes: self.max_dimension_bytes,
            max_text_bytes: self.max_text_bytes,
            max_cost_usd: self.max_cost_usd,
        }
    }
}

impl From<&LimitsConfig> for JoinLimits {
    fn from(l: &LimitsConfig) -> Self {
        Self {
            max_tiers: l.max_tiers,
            max_dimension_values: l.max_dimension_values,
            max_turns_per_conversation: l.max_turns_per_conversation,
            max_feedback_per_conversation: l.max_feedback_per_conversation,
            max_events_per_ticket: l.max_events_per_ticket,
        }
    }
}

impl Validate for LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.max_future_hours.is_finite() && self.max_future_hours > 0.0) {
            return Err(invalid(
                "limits.max_future_hours",
                format!("must be a positive number, got {}", self.max_future_hours),
            ));
        }
        if self.max_payload_bytes < 16 {
            return Err(invalid("limits.max_payload_bytes", "must be at least 16"));
        }
        // Above max_payload_bytes a limit is never reached (the payload is refused first), so
        // only zero, which would refuse everything, is an error.
        for (key, v) in [
            ("limits.max_id_bytes", self.max_id_bytes),
            ("limits.max_dimension_bytes", self.max_dimension_bytes),
            ("limits.max_text_bytes", self.max_text_bytes),
            // The cardinality bounds must admit at least one value each.
            ("limits.max_tiers", self.max_tiers),
            ("limits.max_dimension_values", self.max_dimension_values),
            ("limits.max_turns_per_conversation", self.max_turns_per_conversation),
            ("limits.max_feedback_per_conversation", self.max_feedback_per_conversation),
            ("limits.max_events_per_ticket", self.max_events_per_ticket),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be ≥ 1"));
            }
        }
        if !(self.max_cost_usd.is_finite() && self.max_cost_usd > 0.0 && self.max_cost_usd <= 1e6) {
            return Err(invalid("limits.max_cost_usd", format!("must be in (0, 1e6], got {}", self.max_cost_usd)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is committed after this many messages…
    pub max_events: usize,
    /// …or after this many milliseconds, whichever comes first.
    pub max_wait_ms: u64,
    /// …or once its payloads hold this many bytes (oversized messages count only the prefix
    /// kept for their dead letter). At least `limits.max_payload_bytes`.
    pub max_bytes: usize,
    /// While the consumer is behind (the last batch filled up, or the lag of the owned
    /// partitions exceeds `max_events`), a batch grows to this many messages instead, so each
    /// touched conversation's state and each aggregate row is written once per large transaction
    /// rather than once per small one; batches shrink back once caught up. Default: 20 ×
    /// `max_events`; equal to `max_events` turns the growth off.
    pub catch_up_max_events: Option<usize>,
    /// The time limit of a catch-up batch, in milliseconds. Default: 5 × `max_wait_ms`.
    pub catch_up_max_wait_ms: Option<u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 5_000,
            max_wait_ms: 200,
            max_bytes: 64 << 20,
            catch_up_max_events: None,
            catch_up_max_wait_ms: None,
        }
    }
}

impl BatchConfig {
    /// The message limit of a batch while catching up.
    pub fn catch_up_events(&self) -> usize {
        self.catch_up_max_events.unwrap_or(self.max_events.saturating_mul(20))
    }

    /// The time limit of a batch while catching up.
    pub fn catch_up_wait_ms(&self) -> u64 {
        self.catch_up_max_wait_ms.unwrap_or(self.max_wait_ms.saturating_mul(5))
    }
}

impl Validate for BatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_events == 0 {
            return Err(invalid("batch.max_events", "must be ≥ 1"));
        }
        if self.max_wait_ms == 0 {
            return Err(invalid("batch.max_wait_ms", "must be ≥ 1"));
        }
        if self.catch_up_events() < self.max_events {
            return Err(invalid("batch.catch_up_max_events", "must be at least batch.max_events"));
        }
        if self.catch_up_wait_ms() < self.max_wait_ms {
            return Err(invalid("batch.catch_up_max_wait_ms", "must be at least batch.max_wait_ms"));
        }
        Ok(())
    }
}
