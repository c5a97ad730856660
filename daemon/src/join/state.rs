//! Persisted join state entries. Serialized as JSON into `tw_join_state` with the offsets, so a
//! restart resumes the join exactly where the last commit left it.

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
/// Persisted as JSON in the same shape as before that split (`t`, `s`, `f`, `p`, `dd`), so state
/// written by an older daemon restores unchanged.
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

/// The persisted shape of [`ConvState`].
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

/// Serialized through borrowed fields: a commit serializes every touched conversation, and
/// `#[serde(into)]` would clone each one first.
impl Serialize for ConvState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            #[serde(rename = "t")]
            turns: &'a [Turn],
            #[serde(rename = "s", skip_serializing_if = "<[_]>::is_empty")]
            seen: &'a [u64],
            #[serde(rename = "f")]
            failed_deflection: bool,
            #[serde(rename = "p", skip_serializing_if = "<[_]>::is_empty")]
            pending: &'a [PendingOutcome],
            #[serde(rename = "dd", skip_serializing_if = "<[_]>::is_empty")]
            drift_days: &'a [(i64, u64)],
        }
        let rare = self.rare.as_deref();
        Borrowed {
            turns: &self.turns,
            seen: rare.map_or(&[], |r| &r.seen),
            failed_deflection: self.failed_deflection(),
            pending: rare.map_or(&[], |r| &r.pending),
            drift_days: rare.map_or(&[], |r| &r.drift_days),
        }
        .serialize(serializer)
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

/// The persisted shape of a [`Turn`]: `k`, `ts`, `d` (dims, written as a six-string array, see
/// [`dims_as_array`]; read as that or as the older name → value map), `h`, `v` (drift series),
/// `c` (confidence cell; absent in older state = unknown) and `x` (failed, written only when
/// true).
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

impl Serialize for Turn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            k: i32,
            ts: i64,
            #[serde(serialize_with = "dims_as_array")]
            d: &'a Arc<Dims>,
            h: u64,
            v: u32,
            c: u8,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            x: bool,
        }
        Borrowed {
            k: self.turn,
            ts: self.ts,
            d: &self.dims,
            h: self.event_hash,
            v: self.tags.series(),
            c: self.tags.cell(),
            x: self.tags.failed(),
        }
        .serialize(serializer)
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

/// A turn's dimensions as `[tier, model, classifier_version, router, segment, intent]`: the
/// field names made up half of a written turn and most of the time spent serializing the join
/// state of a batch. `Dims`' derived `Deserialize` reads this array form as well as the map form
/// that older state holds.
fn dims_as_array<S: serde::Serializer>(d: &&Arc<Dims>, serializer: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    (&d.tier, &d.model, &d.classifier_version, &d.router, &d.segment, &d.intent).serialize(serializer)
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
