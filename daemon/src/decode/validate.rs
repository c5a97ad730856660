//! Semantic validation of decoded events (docs/contract.md#bad-input).
//!
//! The first violated constraint wins; the detail names the field and the offending value (never
//! the raw bytes of a string: a rejected string may hold NUL or be megabytes long).
//!
//! Beyond the contract's constraints, every value must be one the store can hold: no NUL in a
//! string (Postgres `text` refuses it), strings short enough for an index key, money small
//! enough that its nano-USD sums fit a signed 64-bit integer, and an event time within a sane
//! range around the wall clock (a far-future `ts` would move the watermark past every pending
//! outcome).

use crate::event::{Event, Feedback, FeedbackKind, RoutingDecision, SupportTicket};

use super::{Reject, RejectReason};

/// 2000-01-01T00:00:00Z: the earliest accepted event time. Older events predate any LLM gateway;
/// such a `ts` is a unit mistake (seconds instead of milliseconds) or garbage.
pub const MIN_TS_MS: i64 = 946_684_800_000;

/// The most handle minutes one ticket may carry (one year): the ticket cost derived from them
/// stays within the money cap's order of magnitude.
pub const MAX_HANDLE_MINUTES: f64 = 525_600.0;

/// Bounds on the size of values (the `[limits]` keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldLimits {
    /// `event_id`, `conversation_id`, `ticket_id`.
    pub max_id_bytes: usize,
    /// Every other short string: tier, model, classifier_version, segment, intent, feedback
    /// source, cost_center, channel, ticket reason.
    pub max_dimension_bytes: usize,
    /// `query_text`.
    pub max_text_bytes: usize,
    /// Every money amount of one event (`cost_usd`, `capable_cost_usd`, a ticket's `cost_usd`).
    pub max_cost_usd: f64,
}

impl FieldLimits {
    pub const DEFAULT_MAX_ID_BYTES: usize = 256;
    pub const DEFAULT_MAX_DIMENSION_BYTES: usize = 256;
    pub const DEFAULT_MAX_TEXT_BYTES: usize = 65_536;
    pub const DEFAULT_MAX_COST_USD: f64 = 10_000.0;
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            max_id_bytes: Self::DEFAULT_MAX_ID_BYTES,
            max_dimension_bytes: Self::DEFAULT_MAX_DIMENSION_BYTES,
            max_text_bytes: Self::DEFAULT_MAX_TEXT_BYTES,
            max_cost_usd: Self::DEFAULT_MAX_COST_USD,
        }
    }
}

/// The wall clock, epoch ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Check the v1 constraints of one decoded event.
///
/// * empty `event_id`, `conversation_id` (decision, feedback; `Some("")` on a ticket), `ticket_id`,
///   `tier`, `model`, `classifier_version`, `cost_center`, `channel` → `EmptyField`;
/// * `confidence` NaN or outside [0,1] → `ConfidenceOutOfRange`;
/// * `threshold` present and NaN or outside [0,1] → `InvalidValue`;
/// * costs, latency, tokens, handle minutes: non-finite → `InvalidValue`, negative → `NegativeValue`;
/// * `turn` < 0 → `InvalidValue`; feedback `score`: non-finite anywhere, CSAT without a score or
///   outside [1,5], HUMAN_REVIEW without a score or other than 0/1 → `InvalidValue`;
/// * `ts` < 0 → `InvalidValue`; `ts` before [`MIN_TS_MS`] → `PastTimestamp`; `ts` more than
///   `max_future_ms` past the wall clock, or past the broker timestamp when known →
///   `FutureTimestamp`;
/// * a NUL character in any string → `NulCharacter`; a string longer than its [`FieldLimits`]
///   bound → `StringTooLong`; a money amount above `max_cost_usd` or handle minutes above
///   [`MAX_HANDLE_MINUTES`] → `ValueTooLarge`.
///
/// With the default [`FieldLimits`] and the current wall clock.
pub fn validate(ev: &Event, broker_ts_ms: Option<i64>, max_future_ms: i64) -> Result<(), Reject> {
    validate_with(ev, broker_ts_ms, max_future_ms, &FieldLimits::default(), now_ms())
}

/// [`validate`] with explicit limits and wall clock (`now_ms`, epoch ms).
pub fn validate_with(
    ev: &Event,
    broker_ts_ms: Option<i64>,
    max_future_ms: i64,
    limits: &FieldLimits,
    now_ms: i64,
) -> Result<(), Reject> {
    match ev {
        Event::Decision(d) => validate_decision(d, limits)?,
        Event::Feedback(f) => validate_feedback(f, limits)?,
        Event::Ticket(t) => validate_ticket(t, limits)?,
    }
    check_ts(ev.ts(), broker_ts_ms, max_future_ms, now_ms)
}

fn validate_decision(d: &RoutingDecision, l: &FieldLimits) -> Result<(), Reject> {
    non_empty("event_id", &d.event_id)?;
    non_empty("conversation_id", &d.conversation_id)?;
    non_empty("classifier_version", &d.classifier_version)?;
    non_empty("tier", &d.tier)?;
    non_empty("model", &d.model)?;
    bounded("event_id", &d.event_id, l.max_id_bytes)?;
    bounded("conversation_id", &d.conversation_id, l.max_id_bytes)?;
    bounded("classifier_version", &d.classifier_version, l.max_dimension_bytes)?;
    bounded("tier", &d.tier, l.max_dimension_bytes)?;
    bounded("model", &d.model, l.max_dimension_bytes)?;
    bounded_opt("segment", &d.segment, l.max_dimension_bytes)?;
    bounded_opt("intent", &d.intent, l.max_dimension_bytes)?;
    bounded_opt("query_text", &d.query_text, l.max_text_bytes)?;
    if d.turn < 0 {
        return Err(invalid("turn", format_args!("{} is negative", d.turn)));
    }
    if !(0.0..=1.0).contains(&d.confidence) {
        return Err(Reject::new(
            RejectReason::ConfidenceOutOfRange,
            format!("confidence {} is not in [0, 1]", d.confidence),
        ));
    }
    if let Some(t) = d.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid("threshold", format_args!("{t} is not in [0, 1]")));
        }
    }
    non_negative("latency_ms", d.latency_ms)?;
    non_negative_int("input_tokens", d.input_tokens)?;
    non_negative_int("output_tokens", d.output_tokens)?;
    money("cost_usd", d.cost_usd, l)?;
    if let Some(c) = d.capable_cost_usd {
        money("capable_cost_usd", c, l)?;
    }
    Ok(())
}

fn validate_feedback(f: &Feedback, l: &FieldLimits) -> Result<(), Reject> {
    non_empty("event_id", &f.event_id)?;
    non_empty("conversation_id", &f.conversation_id)?;
    bounded("event_id", &f.event_id, l.max_id_bytes)?;
    bounded("conversation_id", &f.conversation_id, l.max_id_bytes)?;
    bounded_opt("source", &f.source, l.max_dimension_bytes)?;
    if let Some(t) = f.turn {
        if t < 0 {
            return Err(invalid("turn", format_args!("{t} is negative")));
        }
    }
    if let Some(s) = f.score {
        if !s.is_finite() {
            return Err(invalid("score", format_args!("{s} is not finite")));
        }
    }
    match (f.kind, f.score) {
        (FeedbackKind::Csat, Some(s)) if (1.0..=5.0).contains(&s) => {}
        (FeedbackKind::Csat, Some(s)) => {
            return Err(invalid("score", format_args!("CSAT score {s} is not in [1, 5]")));
        }
        (FeedbackKind::Csat, None) => {
            return Err(invalid("score", format_args!("CSAT feedback without a score")));
        }
        (FeedbackKind::HumanReview, Some(s)) if s == 0.0 || s == 1.0 => {}
        (FeedbackKind::HumanReview, Some(s)) => {
            return Err(invalid("score", format_args!("HUMAN_REVIEW score {s} is not 0 or 1")));
        }
        (FeedbackKind::HumanReview, None) => {
            return Err(invalid("score", format_args!("HUMAN_REVIEW feedback without a score")));
        }
        (FeedbackKind::ThumbsUp | FeedbackKind::ThumbsDown, _) => {}
    }
    Ok(())
}

fn validate_ticket(t: &SupportTicket, l: &FieldLimits) -> Result<(), Reject> {
    non_empty("event_id", &t.event_id)?;
    non_empty("ticket_id", &t.ticket_id)?;
    if let Some(c) = &t.conversation_id {
        non_empty("conversation_id", c)?;
    }
    non_empty("cost_center", &t.cost_center)?;
    non_empty("channel", &t.channel)?;
    bounded("event_id", &t.event_id, l.max_id_bytes)?;
    bounded("ticket_id", &t.ticket_id, l.max_id_bytes)?;
    bounded_opt("conversation_id", &t.conversation_id, l.max_id_bytes)?;
    bounded("cost_center", &t.cost_center, l.max_dimension_bytes)?;
    bounded("channel", &t.channel, l.max_dimension_bytes)?;
    bounded_opt("reason", &t.reason, l.max_dimension_bytes)?;
    if let Some(m) = t.handle_minutes {
        non_negative("handle_minutes", m)?;
        if m > MAX_HANDLE_MINUTES {
            return Err(Reject::new(
                RejectReason::ValueTooLarge,
                format!("handle_minutes {m} is above the limit {MAX_HANDLE_MINUTES}"),
            ));
        }
    }
    if let Some(c) = t.cost_usd {
        money("cost_usd", c, l)?;
    }
    Ok(())
}

fn check_ts(ts: i64, broker_ts_ms: Option<i64>, max_future_ms: i64, now_ms: i64) -> Result<(), Reject> {
    if ts < 0 {
        return Err(invalid("ts", format_args!("{ts} is negative")));
    }
    if ts < MIN_TS_MS {
        return Err(Reject::new(
            RejectReason::PastTimestamp,
            format!("ts {ts} is before {MIN_TS_MS} (2000-01-01T00:00:00Z)"),
        ));
    }
    // The wall clock bounds the event time whatever the source (a replay has no broker time, a
    // producer may set the broker time itself).
    let wall_limit = now_ms.saturating_add(max_future_ms);
    if ts > wall_limit {
        return Err(Reject::new(
            RejectReason::FutureTimestamp,
            format!(
                "ts {ts} is {} ms after the wall clock {now_ms} (limit {max_future_ms} ms)",
                ts.saturating_sub(now_ms)
            ),
        ));
    }
    if let Some(b) = broker_ts_ms {
        let limit = b.saturating_add(max_future_ms);
        if ts > limit {
            return Err(Reject::new(
                RejectReason::FutureTimestamp,
                format!("ts {ts} is {} ms after broker timestamp {b} (limit {max_future_ms} ms)", ts.saturating_sub(b)),
            ));
        }
    }
    Ok(())
}

#[inline]
fn non_empty(field: &'static str, v: &str) -> Result<(), Reject> {
    if v.is_empty() {
        Err(Reject::new(RejectReason::EmptyField, format!("{field} is empty")))
    } else {
        Ok(())
    }
}

/// No NUL (Postgres text cannot hold it) and at most `max` bytes. The detail names the field and
/// the length, never the value.
#[inline]
fn bounded(field: &'static str, v: &str, max: usize) -> Result<(), Reject> {
    if v.len() > max {
        return Err(Reject::new(RejectReason::StringTooLong, format!("{field} is {} bytes, limit {max}", v.len())));
    }
    if let Some(at) = v.bytes().position(|b| b == 0) {
        return Err(Reject::new(RejectReason::NulCharacter, format!("{field} has a NUL character at byte {at}")));
    }
    Ok(())
}

#[inline]
fn bounded_opt(field: &'static str, v: &Option<String>, max: usize) -> Result<(), Reject> {
    v.as_deref().map_or(Ok(()), |s| bounded(field, s, max))
}

/// Non-negative, finite and at most `max_cost_usd`: the nano-USD sums of a day stay far from
/// the 64-bit limit (9.2e9 USD).
#[inline]
fn money(field: &'static str, v: f64, l: &FieldLimits) -> Result<(), Reject> {
    non_negative(field, v)?;
    if v > l.max_cost_usd {
        return Err(Reject::new(
            RejectReason::ValueTooLarge,
            format!("{field} {v} is above the limit {} USD", l.max_cost_usd),
        ));
    }
    Ok(())
}

#[inline]
fn non_negative(field: &'static str, v: f64) -> Result<(), Reject> {
    if !v.is_finite() {
        Err(invalid(field, format_args!("{v} is not finite")))
    } else if v < 0.0 {
        Err(Reject::new(RejectReason::NegativeValue, format!("{field} {v} is negative")))
    } else {
        Ok(())
    }
}

#[inline]
fn non_negative_int(field: &'static str, v: i32) -> Result<(), Reject> {
    if v < 0 {
        Err(Reject::new(RejectReason::NegativeValue, format!("{field} {v} is negative")))
    } else {
        Ok(())
    }
}

#[cold]
fn invalid(field: &'static str, what: std::fmt::Arguments<'_>) -> Reject {
    Reject::new(RejectReason::InvalidValue, format!("{field}: {what}"))
}
