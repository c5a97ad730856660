//! Event contracts (v1), docs/contract.md#events.
//!
//! The Rust mirror of the three committed Avro schemas under `schemas/`. Field order here follows
//! the schema field order (which the hand-written Avro decoder in [`crate::decode`] relies on).
//!
//! JSON (the plain-JSON wire format, not Avro's JSON encoding) uses these structs directly via
//! serde: enum values are their symbol strings, timestamps are epoch milliseconds, an optional
//! field may be `null` or absent, and unknown extra fields are ignored (forward compatibility).

use serde::{Deserialize, Serialize};

/// Which routing design made a decision (Avro enum `tierwatch.v1.RouterKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouterKind {
    /// A classifier picks the tier before any model answers.
    #[serde(rename = "PRE_ROUTE")]
    PreRoute,
    /// The cheap model answers first and escalates below a confidence threshold.
    #[serde(rename = "CASCADE")]
    Cascade,
}

impl RouterKind {
    /// All variants, in Avro symbol order (the index is the Avro enum index).
    pub const ALL: [RouterKind; 2] = [RouterKind::PreRoute, RouterKind::Cascade];

    /// The Avro / JSON symbol.
    pub fn as_str(&self) -> &'static str {
        match self {
            RouterKind::PreRoute => "PRE_ROUTE",
            RouterKind::Cascade => "CASCADE",
        }
    }

    /// Avro enum index.
    pub fn index(&self) -> u32 {
        match self {
            RouterKind::PreRoute => 0,
            RouterKind::Cascade => 1,
        }
    }
}

/// Kind of quality signal (Avro enum `tierwatch.v1.FeedbackKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedbackKind {
    #[serde(rename = "THUMBS_UP")]
    ThumbsUp,
    #[serde(rename = "THUMBS_DOWN")]
    ThumbsDown,
    /// Score 1–5.
    #[serde(rename = "CSAT")]
    Csat,
    /// Score 1 = the answer addressed the real intent, 0 = it did not.
    #[serde(rename = "HUMAN_REVIEW")]
    HumanReview,
}

impl FeedbackKind {
    /// All variants, in Avro symbol order (the index is the Avro enum index).
    pub const ALL: [FeedbackKind; 4] =
        [FeedbackKind::ThumbsUp, FeedbackKind::ThumbsDown, FeedbackKind::Csat, FeedbackKind::HumanReview];

    /// The Avro / JSON symbol.
    pub fn as_str(&self) -> &'static str {
        match self {
            FeedbackKind::ThumbsUp => "THUMBS_UP",
            FeedbackKind::ThumbsDown => "THUMBS_DOWN",
            FeedbackKind::Csat => "CSAT",
            FeedbackKind::HumanReview => "HUMAN_REVIEW",
        }
    }

    /// Avro enum index.
    pub fn index(&self) -> u32 {
        match self {
            FeedbackKind::ThumbsUp => 0,
            FeedbackKind::ThumbsDown => 1,
            FeedbackKind::Csat => 2,
            FeedbackKind::HumanReview => 3,
        }
    }
}

/// Ticket lifecycle step (Avro enum `tierwatch.v1.TicketStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TicketStatus {
    #[serde(rename = "OPENED")]
    Opened,
    #[serde(rename = "RESOLVED")]
    Resolved,
}

impl TicketStatus {
    /// All variants, in Avro symbol order (the index is the Avro enum index).
    pub const ALL: [TicketStatus; 2] = [TicketStatus::Opened, TicketStatus::Resolved];

    /// The Avro / JSON symbol.
    pub fn as_str(&self) -> &'static str {
        match self {
            TicketStatus::Opened => "OPENED",
            TicketStatus::Resolved => "RESOLVED",
        }
    }

    /// Avro enum index.
    pub fn index(&self) -> u32 {
        match self {
            TicketStatus::Opened => 0,
            TicketStatus::Resolved => 1,
        }
    }
}

/// `tierwatch.v1.RoutingDecision` — topic `llm.routing-decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingDecision {
    pub event_id: String,
    pub conversation_id: String,
    /// 0-based user turn index.
    pub turn: i32,
    /// Event time, epoch milliseconds UTC.
    pub ts: i64,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub query_text: Option<String>,
    pub router: RouterKind,
    pub classifier_version: String,
    #[serde(default)]
    pub intent: Option<String>,
    /// In [0,1].
    pub confidence: f64,
    #[serde(default)]
    pub threshold: Option<f64>,
    pub tier: String,
    pub model: String,
    #[serde(default)]
    pub escalated: bool,
    pub latency_ms: f64,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_usd: f64,
    #[serde(default)]
    pub capable_cost_usd: Option<f64>,
}

/// `tierwatch.v1.Feedback` — topic `llm.feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub event_id: String,
    pub conversation_id: String,
    /// The rated turn; `None` = the conversation as a whole.
    #[serde(default)]
    pub turn: Option<i32>,
    /// Event time, epoch milliseconds UTC.
    pub ts: i64,
    pub kind: FeedbackKind,
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// `tierwatch.v1.SupportTicket` — topic `support.tickets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupportTicket {
    pub event_id: String,
    pub ticket_id: String,
    /// The AI conversation that preceded the ticket, where linked.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Event time, epoch milliseconds UTC.
    pub ts: i64,
    pub status: TicketStatus,
    pub cost_center: String,
    pub channel: String,
    #[serde(default)]
    pub handle_minutes: Option<f64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// One decoded event of any of the three streams.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Decision(RoutingDecision),
    Feedback(Feedback),
    Ticket(SupportTicket),
}

impl Event {
    pub fn event_id(&self) -> &str {
        match self {
            Event::Decision(d) => &d.event_id,
            Event::Feedback(f) => &f.event_id,
            Event::Ticket(t) => &t.event_id,
        }
    }

    /// Event time, epoch milliseconds UTC.
    pub fn ts(&self) -> i64 {
        match self {
            Event::Decision(d) => d.ts,
            Event::Feedback(f) => f.ts,
            Event::Ticket(t) => t.ts,
        }
    }

    pub fn stream(&self) -> Stream {
        match self {
            Event::Decision(_) => Stream::Routing,
            Event::Feedback(_) => Stream::Feedback,
            Event::Ticket(_) => Stream::Tickets,
        }
    }

    /// The conversation the event belongs to (`None` for an unlinked ticket).
    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            Event::Decision(d) => Some(&d.conversation_id),
            Event::Feedback(f) => Some(&f.conversation_id),
            Event::Ticket(t) => t.conversation_id.as_deref(),
        }
    }
}

impl From<RoutingDecision> for Event {
    fn from(v: RoutingDecision) -> Self {
        Event::Decision(v)
    }
}

impl From<Feedback> for Event {
    fn from(v: Feedback) -> Self {
        Event::Feedback(v)
    }
}

impl From<SupportTicket> for Event {
    fn from(v: SupportTicket) -> Self {
        Event::Ticket(v)
    }
}

/// The three input streams (one Kafka topic each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Routing,
    Feedback,
    Tickets,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Routing, Stream::Feedback, Stream::Tickets];

    /// The serde name: `routing`, `feedback`, `tickets`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stream::Routing => "routing",
            Stream::Feedback => "feedback",
            Stream::Tickets => "tickets",
        }
    }

    /// Default topic name (docs/contract.md#topics-keys-and-partitions).
    pub fn default_topic(&self) -> &'static str {
        match self {
            Stream::Routing => "llm.routing-decisions",
            Stream::Feedback => "llm.feedback",
            Stream::Tickets => "support.tickets",
        }
    }

    /// Fully-qualified Avro record name of the stream's schema.
    pub fn record_name(&self) -> &'static str {
        match self {
            Stream::Routing => "tierwatch.v1.RoutingDecision",
            Stream::Feedback => "tierwatch.v1.Feedback",
            Stream::Tickets => "tierwatch.v1.SupportTicket",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_symbols_serde_match_as_str() {
        for k in RouterKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        for k in FeedbackKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        for k in TicketStatus::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        for s in Stream::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for (i, k) in RouterKind::ALL.iter().enumerate() {
            assert_eq!(k.index() as usize, i);
        }
        for (i, k) in FeedbackKind::ALL.iter().enumerate() {
            assert_eq!(k.index() as usize, i);
        }
        for (i, k) in TicketStatus::ALL.iter().enumerate() {
            assert_eq!(k.index() as usize, i);
        }
    }

    #[test]
    fn json_optional_absent_or_null_and_unknown_fields() {
        let absent = r#"{"event_id":"e","conversation_id":"c","ts":5,"kind":"THUMBS_UP","future_field":[1,2]}"#;
        let null = r#"{"event_id":"e","conversation_id":"c","turn":null,"ts":5,"kind":"THUMBS_UP","score":null,"source":null}"#;
        let a: Feedback = serde_json::from_str(absent).unwrap();
        let b: Feedback = serde_json::from_str(null).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.turn, None);
        assert_eq!(a.kind, FeedbackKind::ThumbsUp);
    }

    #[test]
    fn event_accessors() {
        let ev = Event::from(crate::testkit::ticket_opened_unlinked());
        assert_eq!(ev.event_id(), "tk-1");
        assert_eq!(ev.ts(), crate::testkit::T0);
        assert_eq!(ev.stream(), Stream::Tickets);
        assert_eq!(ev.conversation_id(), None);
    }
}
