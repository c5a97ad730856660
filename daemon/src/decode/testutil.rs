//! Sample events and proptest strategies (test builds only; usable by other modules' tests).

use proptest::prelude::*;

use super::MIN_TS_MS;
use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};

/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;

pub fn decision_full() -> RoutingDecision {
    RoutingDecision {
        event_id: "rd-ünïcødé-🚀".into(),
        conversation_id: "conv-会话-1".into(),
        turn: 3,
        ts: T0,
        segment: Some("enterprise/émea".into()),
        query_text: Some("where is my charge from? 💳 — «urgent»".into()),
        router: RouterKind::Cascade,
        classifier_version: "conf-head-2025.12".into(),
        intent: Some("billing".into()),
        confidence: 0.42,
        threshold: Some(0.6),
        tier: "capable".into(),
        model: "big-model-x".into(),
        escalated: true,
        latency_ms: 1834.25,
        input_tokens: 1200,
        output_tokens: 350,
        cost_usd: 0.0123,
        capable_cost_usd: Some(0.0101),
    }
}

pub fn decision_min() -> RoutingDecision {
    RoutingDecision {
        event_id: "rd-2".into(),
        conversation_id: "c".into(),
        turn: 0,
        ts: MIN_TS_MS,
        segment: None,
        query_text: None,
        router: RouterKind::PreRoute,
        classifier_version: "v1".into(),
        intent: None,
        confidence: 1.0,
        threshold: None,
        tier: "cheap".into(),
        model: "small".into(),
        escalated: false,
        latency_ms: 0.0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
        capable_cost_usd: None,
    }
}

pub fn decision_mixed() -> RoutingDecision {
    RoutingDecision {
        event_id: "rd-3".into(),
        conversation_id: "conv-3".into(),
        turn: i32::MAX,
        ts: T0 + 123_456,
        segment: None,
        query_text: Some(String::new()),
        router: RouterKind::Cascade,
        classifier_version: "v2".into(),
        intent: Some("fraud".into()),
        confidence: 0.0,
        threshold: None,
        tier: "cheap".into(),
        model: "small".into(),
        escalated: false,
        latency_ms: 95.5,
        input_tokens: i32::MAX,
        output_tokens: 1,
        cost_usd: 1e-9,
        capable_cost_usd: Some(0.0),
    }
}

pub fn feedback_csat() -> Feedback {
    Feedback {
        event_id: "fb-1".into(),
        conversation_id: "conv-会话-1".into(),
        turn: Some(2),
        ts: T0 + 60_000,
        kind: FeedbackKind::Csat,
        score: Some(2.0),
        source: Some("survey ✉".into()),
    }
}

pub fn feedback_thumbs() -> Feedback {
    Feedback {
        event_id: "fb-2".into(),
        conversation_id: "c".into(),
        turn: None,
        ts: T0,
        kind: FeedbackKind::ThumbsDown,
        score: None,
        source: None,
    }
}

pub fn feedback_review() -> Feedback {
    Feedback {
        event_id: "fb-3".into(),
        conversation_id: "conv-3".into(),
        turn: Some(0),
        ts: T0 + 1,
        kind: FeedbackKind::HumanReview,
        score: Some(0.0),
        source: Some("reviewer-ñ-7".into()),
    }
}

pub fn feedback_up() -> Feedback {
    Feedback {
        event_id: "fb-4".into(),
        conversation_id: "conv-4".into(),
        turn: Some(1),
        ts: T0 + 2,
        kind: FeedbackKind::ThumbsUp,
        score: None,
        source: Some("widget".into()),
    }
}

pub fn ticket_opened_unlinked() -> SupportTicket {
    SupportTicket {
        event_id: "tk-1".into(),
        ticket_id: "TCK-1".into(),
        conversation_id: None,
        ts: T0,
        status: TicketStatus::Opened,
        cost_center: "support".into(),
        channel: "phone".into(),
        handle_minutes: None,
        cost_usd: None,
        reason: None,
    }
}

pub fn ticket_resolved() -> SupportTicket {
    SupportTicket {
        event_id: "tk-2".into(),
        ticket_id: "TCK-2".into(),
        conversation_id: Some("conv-会话-1".into()),
        ts: T0 + 3_600_000,
        status: TicketStatus::Resolved,
        cost_center: "customer-experience".into(),
        channel: "chat 💬".into(),
        handle_minutes: Some(14.5),
        cost_usd: Some(11.6),
        reason: Some("billing — überweisung".into()),
    }
}

/// A few valid events of every stream, with and without optional fields.
pub fn samples() -> Vec<Event> {
    vec![
        decision_full().into(),
        decision_min().into(),
        decision_mixed().into(),
        feedback_csat().into(),
        feedback_thumbs().into(),
        feedback_review().into(),
        feedback_up().into(),
        ticket_opened_unlinked().into(),
        ticket_resolved().into(),
    ]
}

/// Doubles for Avro round trips: anything, including NaN and infinities.
fn any_f64() -> BoxedStrategy<f64> {
    any::<f64>().boxed()
}

/// Doubles representable in JSON.
fn finite_f64() -> BoxedStrategy<f64> {
    use proptest::num::f64 as f;
    (f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO).boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![any::<String>(), "[a-z0-9-]{0,12}", "\\PC{0,40}"].boxed()
}

fn opt<T: std::fmt::Debug + 'static>(s: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
    proptest::option::of(s).boxed()
}

pub fn arb_decision(finite: bool) -> BoxedStrategy<RoutingDecision> {
    let d = move || if finite { finite_f64() } else { any_f64() };
    (
        (text(), text(), any::<i32>(), any::<i64>(), opt(text()), opt(text())),
        (
            prop_oneof![Just(RouterKind::PreRoute), Just(RouterKind::Cascade)],
            text(),
            opt(text()),
            d(),
            opt(d()),
            text(),
            text(),
            any::<bool>(),
        ),
        (d(), any::<i32>(), any::<i32>(), d(), opt(d())),
    )
        .prop_map(
            |(
                (event_id, conversation_id, turn, ts, segment, query_text),
                (router, classifier_version, intent, confidence, threshold, tier, model, escalated),
                (latency_ms, input_tokens, output_tokens, cost_usd, capable_cost_usd),
            )| RoutingDecision {
                event_id,
                conversation_id,
                turn,
                ts,
                segment,
                query_text,
                router,
                classifier_version,
                intent,
                confidence,
                threshold,
                tier,
                model,
                escalated,
                latency_ms,
                input_tokens,
                output_tokens,
                cost_usd,
                capable_cost_usd,
            },
        )
        .boxed()
}

pub fn arb_feedback(finite: bool) -> BoxedStrategy<Feedback> {
    let d = if finite { finite_f64() } else { any_f64() };
    (
        text(),
        text(),
        opt(any::<i32>().boxed()),
        any::<i64>(),
        proptest::sample::select(FeedbackKind::ALL.to_vec()),
        opt(d),
        opt(text()),
    )
        .prop_map(|(event_id, conversation_id, turn, ts, kind, score, source)| Feedback {
            event_id,
            conversation_id,
            turn,
            ts,
            kind,
            score,
            source,
        })
        .boxed()
}

pub fn arb_ticket(finite: bool) -> BoxedStrategy<SupportTicket> {
    let d = move || if finite { finite_f64() } else { any_f64() };
    (
        text(),
        text(),
        opt(text()),
        any::<i64>(),
        prop_oneof![Just(TicketStatus::Opened), Just(TicketStatus::Resolved)],
        text(),
        text(),
        opt(d()),
        opt(d()),
        opt(text()),
    )
        .prop_map(
            |(
                event_id,
                ticket_id,
                conversation_id,
                ts,
                status,
                cost_center,
                channel,
                handle_minutes,
                cost_usd,
                reason,
            )| {
                SupportTicket {
                    event_id,
                    ticket_id,
                    conversation_id,
                    ts,
                    status,
                    cost_center,
                    channel,
                    handle_minutes,
                    cost_usd,
                    reason,
                }
            },
        )
        .boxed()
}

/// Random events of any stream (not necessarily valid).
pub fn arb_event(finite: bool) -> BoxedStrategy<Event> {
    prop_oneof![
        arb_decision(finite).prop_map(Event::Decision),
        arb_feedback(finite).prop_map(Event::Feedback),
        arb_ticket(finite).prop_map(Event::Ticket),
    ]
    .boxed()
}

/// Exact equality that also treats equal NaNs as equal (`{:?}` of f64 is round-trip exact).
pub fn same(a: &Event, b: &Event) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Equality up to a few ULP per double: serde_json's default float parser (without the
/// `float_roundtrip` feature) may be off by a couple of ULP on some shortest-representation inputs.
const JSON_ULPS: u64 = 4;

pub fn same_json(a: &Event, b: &Event) -> bool {
    fn to_json(e: &Event) -> serde_json::Value {
        match e {
            Event::Decision(d) => serde_json::to_value(d),
            Event::Feedback(f) => serde_json::to_value(f),
            Event::Ticket(t) => serde_json::to_value(t),
        }
        .unwrap_or(serde_json::Value::Null)
    }
    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (a, b) {
            (V::Object(x), V::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            (V::Number(x), V::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => {
                    p == q || (p.signum() == q.signum() && p.to_bits().abs_diff(q.to_bits()) <= JSON_ULPS)
                }
                _ => false,
            },
            _ => a == b,
        }
    }
    a.stream() == b.stream() && close(&to_json(a), &to_json(b))
}

pub fn all_streams() -> [Stream; 3] {
    Stream::ALL
}
