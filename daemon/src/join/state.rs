//! Persisted join state entries. Serialized as JSON into `tw_join_state` with the offsets, so a
//! restart resumes the join exactly where the last commit left it.

use serde::{Deserialize, Serialize};

use crate::event::FeedbackKind;
use crate::metrics::Dims;

/// One conversation's turns and whatever waits for them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConvState {
    /// Turns seen, in arrival order.
    #[serde(default, rename = "t")]
    pub turns: Vec<Turn>,
    /// Hashes of the event ids applied to this conversation (decisions and feedback).
    #[serde(default, rename = "s")]
    pub seen: Vec<u64>,
    /// Whether this conversation already produced its (single) failed deflection.
    #[serde(default, rename = "f")]
    pub failed_deflection: bool,
    /// Outcomes that arrived before the turn they belong to.
    #[serde(default, rename = "p")]
    pub pending: Vec<PendingOutcome>,
    /// (UTC day, hash of classifier version + router) already counted as a conversation in the
    /// drift histograms' effective sample size.
    #[serde(default, rename = "dd")]
    pub drift_days: Vec<(i64, u64)>,
}

impl ConvState {
    /// The latest turn with `ts ≤ at` (ties: the later-arriving one).
    pub fn latest_turn_at_or_before(&self, at: i64) -> Option<&Turn> {
        self.turns.iter().filter(|t| t.ts <= at).max_by_key(|t| (t.ts, t.turn))
    }

    pub fn latest_turn(&self) -> Option<&Turn> {
        self.turns.iter().max_by_key(|t| (t.ts, t.turn))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    #[serde(rename = "k")]
    pub turn: i32,
    #[serde(rename = "ts")]
    pub ts: i64,
    #[serde(rename = "d")]
    pub dims: Dims,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PendingOutcome {
    Feedback {
        turn: Option<i32>,
        ts: i64,
        kind: FeedbackKind,
        score: Option<f64>,
    },
    /// An OPENED ticket waiting for a turn at or before its time.
    Ticket {
        ticket_id: String,
        ts: i64,
    },
}

impl PendingOutcome {
    pub fn ts(&self) -> i64 {
        match self {
            PendingOutcome::Feedback { ts, .. } | PendingOutcome::Ticket { ts, .. } => *ts,
        }
    }
}

/// One support ticket's lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TicketState {
    #[serde(default)]
    pub seen: Vec<u64>,
    #[serde(default)]
    pub last_ts: i64,
    #[serde(default)]
    pub opened: Option<Opened>,
    /// RESOLVED events that arrived before their OPENED event.
    #[serde(default)]
    pub waiting_resolved: Vec<WaitingResolved>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub ts: i64,
    pub day_ms: i64,
    pub cost_center: String,
    pub channel: String,
    pub attribution: Attribution,
    /// Resolved cost awaiting the attribution decision (credited to the tier once it is known).
    pub pending_cost_nusd: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Attribution {
    Pending,
    Unattributed,
    Turn { ts: i64, dims: Dims },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingResolved {
    pub ts: i64,
    pub cost_nusd: i64,
    pub cost_center: String,
    pub channel: String,
}
