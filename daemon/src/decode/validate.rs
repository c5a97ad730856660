//! Semantic validation of decoded events (SPEC §2 "What bad input gets").
//!
//! The first violated constraint wins; the detail names the field and the offending value.

use crate::event::{Event, Feedback, FeedbackKind, RoutingDecision, SupportTicket};

use super::{Reject, RejectReason};

/// Check the v1 constraints of one decoded event.
///
/// * empty `event_id`, `conversation_id` (decision, feedback; `Some("")` on a ticket), `ticket_id`,
///   `tier`, `model`, `classifier_version`, `cost_center`, `channel` → `EmptyField`;
/// * `confidence` NaN or outside [0,1] → `ConfidenceOutOfRange`;
/// * `threshold` present and NaN or outside [0,1] → `InvalidValue`;
/// * costs, latency, tokens, handle minutes: non-finite → `InvalidValue`, negative → `NegativeValue`;
/// * `turn` < 0 → `InvalidValue`; feedback `score`: non-finite anywhere, CSAT without a score or
///   outside [1,5], HUMAN_REVIEW without a score or other than 0/1 → `InvalidValue`;
/// * `ts` < 0 → `InvalidValue`; `ts` > `broker_ts_ms + max_future_ms` → `FutureTimestamp`
///   (skipped when the broker timestamp is unknown).
pub fn validate(ev: &Event, broker_ts_ms: Option<i64>, max_future_ms: i64) -> Result<(), Reject> {
    match ev {
        Event::Decision(d) => validate_decision(d)?,
        Event::Feedback(f) => validate_feedback(f)?,
        Event::Ticket(t) => validate_ticket(t)?,
    }
    check_ts(ev.ts(), broker_ts_ms, max_future_ms)
}

fn validate_decision(d: &RoutingDecision) -> Result<(), Reject> {
    non_empty("event_id", &d.event_id)?;
    non_empty("conversation_id", &d.conversation_id)?;
    non_empty("classifier_version", &d.classifier_version)?;
    non_empty("tier", &d.tier)?;
    non_empty("model", &d.model)?;
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
    non_negative("cost_usd", d.cost_usd)?;
    if let Some(c) = d.capable_cost_usd {
        non_negative("capable_cost_usd", c)?;
    }
    Ok(())
}

fn validate_feedback(f: &Feedback) -> Result<(), Reject> {
    non_empty("event_id", &f.event_id)?;
    non_empty("conversation_id", &f.conversation_id)?;
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

fn validate_ticket(t: &SupportTicket) -> Result<(), Reject> {
    non_empty("event_id", &t.event_id)?;
    non_empty("ticket_id", &t.ticket_id)?;
    if let Some(c) = &t.conversation_id {
        non_empty("conversation_id", c)?;
    }
    non_empty("cost_center", &t.cost_center)?;
    non_empty("channel", &t.channel)?;
    if let Some(m) = t.handle_minutes {
        non_negative("handle_minutes", m)?;
    }
    if let Some(c) = t.cost_usd {
        non_negative("cost_usd", c)?;
    }
    Ok(())
}

fn check_ts(ts: i64, broker_ts_ms: Option<i64>, max_future_ms: i64) -> Result<(), Reject> {
    if ts < 0 {
        return Err(invalid("ts", format_args!("{ts} is negative")));
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
