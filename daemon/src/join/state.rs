//! Persisted join state entries, written into `tw_join_state` with the offsets, so a restart
//! resumes the join exactly where the last commit left it.
//!
//! Conversations — one entry per open conversation, rewritten whenever a batch touches it — are
//! written in a binary form ([`ConvState::to_bytes`]: a format byte, then postcard's varint
//! encoding without field names). Tickets and the admitted dimension values are rare and stay
//! JSON. Conversation entries written as JSON by older versions still restore: the first byte
//! tells the forms apart (`{` for JSON, [`CONV_BINARY_V1`] for the binary form).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::FeedbackKind;
use crate::metrics::{Dims, CALIB_CELL_UNKNOWN};

/// One conversation's turns and whatever waits for them.
///
/// A gateway keeps every conversation of the attribution window open (target ≤ 256 bytes each,
/// docs/architecture.md#performance-targets), and the common one has a few turns and nothing
/// else. So the turns sit in one exact-size allocation that also carries each decision's event
/// hash (duplicate detection) and drift series
/// (the drift histograms' per-day conversation count), and everything rarer — feedback hashes,
/// parked outcomes, entries of older state — sits behind one optional box.
///
/// Persisted in the binary form ([`ConvState::to_bytes`]). Its JSON form (`t`, `s`, `f`, `p`,
/// `dd`, the shape from before that split) is what older versions wrote; it still restores.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "ConvStateRepr")]
pub struct ConvState {
    turns: Box<[Turn]>,
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Rare {
    /// Whether this conversation already produced its (single) failed deflection.
    failed_deflection: bool,
    /// Hashes of feedback event ids applied here (and, in older state, of decisions too).
    seen: Vec<u64>,
    /// Outcomes that arrived before the turn they belong to.
    pending: Vec<PendingOutcome>,
    /// (UTC day, drift series) counted before turns carried their series (older state only).
    drift_days: Vec<(i64, u64)>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        !self.failed_deflection && self.seen.is_empty() && self.pending.is_empty() && self.drift_days.is_empty()
    }
}

impl ConvState {
    /// Turns seen, in arrival order.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    pub fn turns_mut(&mut self) -> &mut [Turn] {
        &mut self.turns
    }

    /// Append a turn. Conversations have few turns, so reallocating to the exact size each time
    /// costs less than the spare capacity a `Vec` would keep for every open conversation.
    pub fn push_turn(&mut self, turn: Turn) {
        // Exact capacity: `Vec::push` would grow to 4 and the shrink back would leave a hole.
        let mut turns = Vec::with_capacity(self.turns.len() + 1);
        turns.extend(std::mem::take(&mut self.turns).into_vec());
        turns.push(turn);
        self.turns = turns.into_boxed_slice();
    }

    /// Whether an event with this id hash was already applied to the conversation.
    pub fn has_seen(&self, event_hash: u64) -> bool {
        self.turns.iter().any(|t| t.event_hash == event_hash && event_hash != 0)
            || self.rare.as_ref().is_some_and(|r| r.seen.contains(&event_hash))
    }

    /// Feedback events remembered (and, in older state, decisions).
    pub fn feedback_seen(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.seen.len())
    }

    /// Remember a feedback event (decisions are remembered by their turn).
    pub fn mark_seen(&mut self, event_hash: u64) {
        self.rare_mut().seen.push(event_hash);
    }

    /// Whether the conversation was already counted on `day_ms` in this drift series (a hash of
    /// classifier version and router, see [`TurnTags::series`]).
    pub fn counted_for_drift(&self, day_ms: i64, series: u64) -> bool {
        let short = short_series(series);
        self.turns.iter().any(|t| t.tags.series() == short && crate::metrics::day_start(t.ts) == day_ms)
            || self.rare.as_ref().is_some_and(|r| r.drift_days.contains(&(day_ms, series)))
    }

    /// Whether this conversation already produced its (single) failed deflection.
    pub fn failed_deflection(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.failed_deflection)
    }

    pub fn set_failed_deflection(&mut self) {
        self.rare_mut().failed_deflection = true;
    }

    /// Outcomes that arrived before the turn they belong to.
    pub fn pending(&self) -> &[PendingOutcome] {
        self.rare.as_ref().map_or(&[], |r| &r.pending)
    }

    pub fn push_pending(&mut self, p: PendingOutcome) {
        self.rare_mut().pending.push(p);
    }

    pub fn take_pending(&mut self) -> Vec<PendingOutcome> {
        let taken = self.rare.as_mut().map(|r| std::mem::take(&mut r.pending)).unwrap_or_default();
        self.drop_empty_rare();
        taken
    }

    pub fn set_pending(&mut self, pending: Vec<PendingOutcome>) {
        if pending.is_empty() {
            if let Some(r) = self.rare.as_mut() {
                r.pending = pending;
            }
            self.drop_empty_rare();
        } else {
            self.rare_mut().pending = pending;
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn drop_empty_rare(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The latest turn with `ts ≤ at` (ties: the later-arriving one).
    pub fn latest_turn_at_or_before(&self, at: i64) -> Option<&Turn> {
        self.turns.iter().filter(|t| t.ts <= at).max_by_key(|t| (t.ts, t.turn))
    }

    pub fn latest_turn(&self) -> Option<&Turn> {
        self.turns.iter().max_by_key(|t| (t.ts, t.turn))
    }
}

/// The JSON form of [`ConvState`] that older versions wrote (read only).
#[derive(Deserialize)]
struct ConvStateRepr {
    #[serde(default, rename = "t")]
    turns: Vec<Turn>,
    #[serde(default, rename = "s")]
    seen: Vec<u64>,
    #[serde(default, rename = "f")]
    failed_deflection: bool,
    #[serde(default, rename = "p")]
    pending: Vec<PendingOutcome>,
    #[serde(default, rename = "dd")]
    drift_days: Vec<(i64, u64)>,
}

impl From<ConvStateRepr> for ConvState {
    fn from(r: ConvStateRepr) -> Self {
        let rare =
            Rare { failed_deflection: r.failed_deflection, seen: r.seen, pending: r.pending, drift_days: r.drift_days };
        let mut state = ConvState { turns: r.turns.into_boxed_slice(), rare: Some(Box::new(rare)) };
        state.drop_empty_rare();
        state
    }
}

/// First byte of a conversation entry in the binary form. A JSON entry starts with `{`; any other
/// first byte is a form this version does not know (written by a newer one).
pub const CONV_BINARY_V1: u8 = 0x01;

/// A stored join-state entry that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateDecodeError {
    #[error("JSON entry: {0}")]
    Json(#[from] serde_json::Error),
    #[error("binary entry: {0}")]
    Binary(#[from] postcard::Error),
    #[error("binary entry: {0} bytes after its end")]
    TrailingBytes(usize),
    #[error("entry in an unknown format (first byte {0:#04x}), written by a newer version?")]
    UnknownFormat(u8),
}

/// A partition's stored join state that cannot be restored: the entry and why.
#[derive(Debug, thiserror::Error)]
#[error("join state entry {key:?}: {reason}")]
pub struct RestoreError {
    pub key: String,
    /// In the message rather than as its source, so the log line (`{e}` or `{e:#}`) names it once.
    pub reason: StateDecodeError,
}

/// A turn in the binary form: turn, ts, dims (tier, model, classifier_version, router, segment,
/// intent), event hash, packed tags ([`TurnTags`]).
type TurnBinary<'a> = (i32, i64, [&'a str; 6], u64, u32);

/// The binary form's body, written through borrowed fields.
#[derive(Serialize)]
struct ConvBinaryOut<'a> {
    turns: TurnsOut<'a>,
    failed_deflection: bool,
    seen: &'a [u64],
    pending: &'a [PendingOutcome],
    drift_days: &'a [(i64, u64)],
}

struct TurnsOut<'a>(&'a [Turn]);

impl Serialize for TurnsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0.iter().map(|t| -> TurnBinary<'_> { (t.turn, t.ts, t.dims.fields(), t.event_hash, t.tags.0) }),
        )
    }
}

/// The binary form's body as read: dimension strings borrowed from the stored bytes, so a restore
/// allocates only dimension combinations the partition has not seen.
#[derive(Deserialize)]
struct ConvBinaryIn<'a> {
    #[serde(borrow)]
    turns: Vec<TurnBinary<'a>>,
    failed_deflection: bool,
    seen: Vec<u64>,
    pending: Vec<PendingOutcome>,
    drift_days: Vec<(i64, u64)>,
}

impl ConvState {
    /// The stored form: [`CONV_BINARY_V1`], then the postcard encoding of turns, the
    /// failed-deflection flag, feedback hashes, parked outcomes and older drift days.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        let rare = self.rare.as_deref();
        let body = ConvBinaryOut {
            turns: TurnsOut(&self.turns),
            failed_deflection: self.failed_deflection(),
            seen: rare.map_or(&[], |r| &r.seen),
            pending: rare.map_or(&[], |r| &r.pending),
            drift_days: rare.map_or(&[], |r| &r.drift_days),
        };
        // A turn is ≈ 40 bytes plus its dimension strings.
        let mut out = Vec::with_capacity(16 + self.turns.len() * 96);
        out.push(CONV_BINARY_V1);
        postcard::to_extend(&body, out)
    }

    /// Read a stored conversation entry in either form. `shared_dims` turns a turn's six
    /// dimension strings into the partition's shared copy.
    pub fn from_bytes(
        bytes: &[u8],
        shared_dims: &mut impl FnMut([&str; 6]) -> Arc<Dims>,
    ) -> Result<Self, StateDecodeError> {
        match bytes.first() {
            Some(&CONV_BINARY_V1) => {
                let (body, rest): (ConvBinaryIn<'_>, _) = postcard::take_from_bytes(&bytes[1..])?;
                if !rest.is_empty() {
                    return Err(StateDecodeError::TrailingBytes(rest.len()));
                }
                let turns = body
                    .turns
                    .into_iter()
                    .map(|(turn, ts, dims, event_hash, tags)| Turn {
                        turn,
                        ts,
                        dims: shared_dims(dims),
                        event_hash,
                        tags: TurnTags(tags),
                    })
                    .collect();
                let rare = Rare {
                    failed_deflection: body.failed_deflection,
                    seen: body.seen,
                    pending: body.pending,
                    drift_days: body.drift_days,
                };
                let mut state = ConvState { turns, rare: Some(Box::new(rare)) };
                state.drop_empty_rare();
                Ok(state)
            }
            Some(b'{' | b' ' | b'\t' | b'\n' | b'\r') | None => {
                let mut state: ConvState = serde_json::from_slice(bytes)?;
                for t in state.turns.iter_mut() {
                    t.dims = shared_dims(t.dims.fields());
                }
                Ok(state)
            }
            Some(&other) => Err(StateDecodeError::UnknownFormat(other)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "TurnRepr")]
pub struct Turn {
    pub turn: i32,
    pub ts: i64,
    /// Interned per partition: every turn with the same dimensions shares one copy.
    pub dims: Arc<Dims>,
    /// Hash of the decision's event id (0 in state written before turns carried it: those hashes
    /// are in the conversation's `s` list).
    pub event_hash: u64,
    /// The drift series this turn was counted in, its confidence cell and whether it failed,
    /// packed into 32 bits so a turn stays at 32 bytes.
    pub tags: TurnTags,
}

// Every open conversation holds its turns: the series, cell and failure flag are packed so that a
// turn stays at 32 bytes (the 256-byte-per-conversation budget).
const _: () = assert!(std::mem::size_of::<Turn>() == 32);

/// A [`Turn`] in the JSON form older versions wrote: `k`, `ts`, `d` (dims as a six-string array
/// `[tier, model, classifier_version, router, segment, intent]`, or in older state as a name →
/// value map; `Dims`' derived `Deserialize` reads both), `h`, `v` (drift series), `c` (confidence
/// cell; absent in older state = unknown) and `x` (failed, present only when true).
#[derive(Deserialize)]
struct TurnRepr {
    k: i32,
    ts: i64,
    d: Arc<Dims>,
    #[serde(default)]
    h: u64,
    #[serde(default)]
    v: u32,
    #[serde(default = "unknown_cell")]
    c: u8,
    #[serde(default)]
    x: bool,
}

fn unknown_cell() -> u8 {
    CALIB_CELL_UNKNOWN
}

impl From<TurnRepr> for Turn {
    fn from(r: TurnRepr) -> Self {
        // Older state wrote 32-bit series: `new` keeps the 24 bits that are compared.
        let mut tags = TurnTags::new(r.v, r.c);
        if r.x {
            tags.set_failed();
        }
        Turn { turn: r.k, ts: r.ts, dims: r.d, event_hash: r.h, tags }
    }
}

/// A turn's drift series, confidence cell and failure flag in one `u32`:
/// `series (24 bits) | cell (7 bits) | failed (1 bit)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TurnTags(u32);

impl TurnTags {
    pub fn new(series: u32, cell: u8) -> Self {
        TurnTags(((series & 0x00ff_ffff) << 8) | (u32::from(cell.min(CALIB_CELL_UNKNOWN)) << 1))
    }
    /// The drift series, see [`short_series`] (0 marks older state, whose counts are in `dd`).
    pub fn series(self) -> u32 {
        self.0 >> 8
    }
    /// The turn's 0.01 confidence cell ([`CALIB_CELL_UNKNOWN`] for older state).
    pub fn cell(self) -> u8 {
        ((self.0 >> 1) & 0x7f) as u8
    }
    pub fn failed(self) -> bool {
        self.0 & 1 == 1
    }
    pub fn set_failed(&mut self) {
        self.0 |= 1;
    }
}

/// The 24-bit form of a drift series hash stored in a [`Turn`], never 0. Two series of one
/// conversation on one day collide with odds 2⁻²⁴; then the conversation is counted once instead
/// of twice in an effective sample size.
pub fn short_series(series: u64) -> u32 {
    ((series as u32) & 0x00ff_ffff).max(1)
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
    Turn { ts: i64, dims: Arc<Dims> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingResolved {
    pub ts: i64,
    pub cost_nusd: i64,
    pub cost_center: String,
    pub channel: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn own_dims(fields: [&str; 6]) -> Arc<Dims> {
        Arc::new(Dims::from_fields(fields))
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9_-]{1,12}", "\\PC{0,6}"]
    }

    fn turn() -> impl Strategy<Value = Turn> {
        let dims = [text(), text(), text(), text(), text(), text()];
        (any::<i32>(), any::<i64>(), dims, any::<u64>(), any::<u32>(), 0..=CALIB_CELL_UNKNOWN, any::<bool>()).prop_map(
            |(turn, ts, d, event_hash, series, cell, failed)| {
                let mut tags = TurnTags::new(series, cell);
                if failed {
                    tags.set_failed();
                }
                let dims = own_dims([&d[0], &d[1], &d[2], &d[3], &d[4], &d[5]].map(String::as_str));
                Turn { turn, ts, dims, event_hash, tags }
            },
        )
    }

    fn pending() -> impl Strategy<Value = PendingOutcome> {
        let kind = prop_oneof![
            Just(FeedbackKind::ThumbsUp),
            Just(FeedbackKind::ThumbsDown),
            Just(FeedbackKind::Csat),
            Just(FeedbackKind::HumanReview)
        ];
        prop_oneof![
            (proptest::option::of(any::<i32>()), any::<i64>(), kind, proptest::option::of(-1e9f64..1e9))
                .prop_map(|(turn, ts, kind, score)| PendingOutcome::Feedback { turn, ts, kind, score }),
            (text(), any::<i64>()).prop_map(|(ticket_id, ts)| PendingOutcome::Ticket { ticket_id, ts }),
        ]
    }

    fn conversation() -> impl Strategy<Value = ConvState> {
        let seen = proptest::collection::vec(any::<u64>(), 0..4);
        let pending = proptest::collection::vec(pending(), 0..4);
        let drift_days = proptest::collection::vec(any::<(i64, u64)>(), 0..3);
        (proptest::collection::vec(turn(), 0..6), any::<bool>(), seen, pending, drift_days).prop_map(
            |(turns, failed_deflection, seen, pending, drift_days)| {
                let rare = Rare { failed_deflection, seen, pending, drift_days };
                let mut state = ConvState { turns: turns.into_boxed_slice(), rare: Some(Box::new(rare)) };
                state.drop_empty_rare();
                state
            },
        )
    }

    proptest! {
        #[test]
        fn prop_the_binary_form_reads_back_as_the_state_it_was_written_from(state in conversation()) {
            let bytes = state.to_bytes().unwrap();
            prop_assert_eq!(bytes[0], CONV_BINARY_V1);
            let back = ConvState::from_bytes(&bytes, &mut own_dims).unwrap();
            prop_assert_eq!(back, state);
        }

        #[test]
        fn prop_any_bytes_read_as_a_state_or_an_error_never_a_panic(
            body in proptest::collection::vec(any::<u8>(), 0..64),
            first in prop_oneof![Just(CONV_BINARY_V1), Just(b'{'), any::<u8>()],
        ) {
            let mut bytes = vec![first];
            bytes.extend(body);
            let _ = ConvState::from_bytes(&bytes, &mut own_dims);
        }
    }
}
