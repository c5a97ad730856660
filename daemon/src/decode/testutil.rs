//! Proptest strategies and event comparisons for the codec tests (test builds only: proptest is a
//! dev-dependency). The fixed sample events are in [`crate::testkit`].

use proptest::prelude::*;

use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};

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
