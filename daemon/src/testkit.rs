//! Fixtures for the tests and benchmarks: valid events with plain defaults, the sample events of
//! every stream that the codec tests round-trip, and the event files `tierwatch replay` reads.
//!
//! Unit tests use it as `crate::testkit`, the integration tests (`tests/`) and the benchmarks
//! (`daemon/benches/`) as `tierwatch::testkit`, so an event literal is written once. A test names
//! only the fields it is about and takes the others from a builder with struct update syntax, e.g.
//! `RoutingDecision { tier: "capable".into(), ..decision("d-1", "c-1", 0, DAY0) }`; what a builder
//! fills in is in its doc, and the fields a test does not name are ones its assertions do not
//! depend on.
//!
//! A plain module compiled in every build, not a `testkit` cargo feature: it is a few
//! constructors over the library's own types, needs no dependency the library does not already
//! have, and nothing in the daemon calls it. A feature switched on for the crate's own tests (a
//! dev-dependency of the package on itself) gives the library two feature sets, so `cargo build`
//! and `cargo test` each compile the library and the binary once more (checked on a two-file
//! crate). The proptest strategies stay in `decode/testutil.rs`, compiled for unit tests only:
//! proptest is a dev-dependency.

use std::path::{Path, PathBuf};

use crate::decode::MIN_TS_MS;
use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};
use crate::sim::{FileFormat, FileWriter};

/// 2026-01-01T00:00:00Z: the time of the sample events.
pub const T0: i64 = 1_767_225_600_000;

/// 2026-01-05T00:00:00Z, a Monday: day 0 of the integration tests' and the benchmarks' traffic.
pub const DAY0: i64 = 1_767_571_200_000;

// ---------- builders ----------

/// A valid pre-route decision of classifier `v1` routed to the `cheap` tier, model `m`:
/// confidence 0.8 against a threshold of 0.5, not escalated, 10 ms, 10 input and 10 output tokens,
/// 0.001 USD (0.002 USD on the capable tier); no segment, query text or intent.
pub fn decision(
    event_id: impl Into<String>,
    conversation_id: impl Into<String>,
    turn: i32,
    ts: i64,
) -> RoutingDecision {
    RoutingDecision {
        event_id: event_id.into(),
        conversation_id: conversation_id.into(),
        turn,
        ts,
        segment: None,
        query_text: None,
        router: RouterKind::PreRoute,
        classifier_version: "v1".into(),
        intent: None,
        confidence: 0.8,
        threshold: Some(0.5),
        tier: "cheap".into(),
        model: "m".into(),
        escalated: false,
        latency_ms: 10.0,
        input_tokens: 10,
        output_tokens: 10,
        cost_usd: 0.001,
        capable_cost_usd: Some(0.002),
    }
}

/// Feedback of `kind` on `turn` (`None`: on the conversation's latest turn before `ts`), with no
/// score and no source.
pub fn feedback(
    event_id: impl Into<String>,
    conversation_id: impl Into<String>,
    turn: Option<i32>,
    ts: i64,
    kind: FeedbackKind,
) -> Feedback {
    Feedback {
        event_id: event_id.into(),
        conversation_id: conversation_id.into(),
        turn,
        ts,
        kind,
        score: None,
        source: None,
    }
}

/// A thumbs-down: [`feedback`] of kind `THUMBS_DOWN`.
pub fn thumbs_down(
    event_id: impl Into<String>,
    conversation_id: impl Into<String>,
    turn: Option<i32>,
    ts: i64,
) -> Feedback {
    feedback(event_id, conversation_id, turn, ts, FeedbackKind::ThumbsDown)
}

/// An `OPENED` support ticket about `conversation_id`, cost center `support`, channel `phone`; no
/// handle time, cost or reason. (An unlinked ticket: `conversation_id: None` over it.)
pub fn ticket(
    event_id: impl Into<String>,
    ticket_id: impl Into<String>,
    conversation_id: impl Into<String>,
    ts: i64,
) -> SupportTicket {
    SupportTicket {
        event_id: event_id.into(),
        ticket_id: ticket_id.into(),
        conversation_id: Some(conversation_id.into()),
        ts,
        status: TicketStatus::Opened,
        cost_center: "support".into(),
        channel: "phone".into(),
        handle_minutes: None,
        cost_usd: None,
        reason: None,
    }
}

/// The index of an event's stream: 0 routing, 1 feedback, 2 tickets (the order of [`Stream::ALL`]
/// and of the tests' topic triples).
pub fn stream_index(ev: &Event) -> usize {
    match ev.stream() {
        Stream::Routing => 0,
        Stream::Feedback => 1,
        Stream::Tickets => 2,
    }
}

// ---------- sample events ----------
//
// Valid events of every stream with every optional field present and absent, non-ASCII text,
// extreme integers and the earliest accepted time: what the codecs must round-trip exactly.

/// Every field set, non-ASCII text in each string, a cascade escalated to the capable tier.
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

/// No optional field, the earliest accepted time, zero cost and latency.
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

/// Some optional fields, an empty query text, `i32::MAX` turn and tokens.
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

/// An opened ticket about no conversation: [`ticket`] without its conversation.
pub fn ticket_opened_unlinked() -> SupportTicket {
    SupportTicket { conversation_id: None, ..ticket("tk-1", "TCK-1", "", T0) }
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

/// All the sample events above.
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

// ---------- files ----------

/// Writes `events` into `dir` as the three event files `tierwatch replay --routing … --feedback …
/// --tickets …` reads, in `format`, with the simulator's writer ([`FileWriter`]; JSON Lines or
/// Avro container files with the committed schemas). Returns their paths in that order (routing,
/// feedback, tickets); a stream without events gets an empty file. Panics on an I/O error.
pub fn write_event_files(dir: &Path, events: &[Event], format: FileFormat) -> [PathBuf; 3] {
    let written = (|| {
        let mut w = FileWriter::create(dir, format, 0)?;
        for ev in events {
            w.event(ev)?;
        }
        w.finish()
    })();
    let files = match written {
        Ok(summary) => summary.files,
        Err(e) => panic!("writing event files in {}: {e:#}", dir.display()),
    };
    [0, 1, 2].map(|i| files[i].clone())
}
