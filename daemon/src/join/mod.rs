//! Join and attribution (docs/contract.md#attribution), one partition at a time.
//!
//! The three topics are keyed by conversation id and co-partitioned, so everything needed to join
//! a conversation lives in one partition's state. [`PartitionJoin`] holds that state, applies
//! events in arrival order and emits additive [`Deltas`]. It does no I/O: the pipeline persists
//! the touched state entries together with the deltas and the offsets in one transaction, which is
//! what makes the effect exactly once.

mod cardinality;
mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::event::{Feedback, FeedbackKind, RouterKind, RoutingDecision, SupportTicket, TicketStatus};
use crate::metrics::{
    calib_cell, calib_group, day_start, hour_start, nano_usd, ConfKey, Deltas, Dims, FastMap, FastSet, Grain,
    OrphanKind, Signal,
};

pub use cardinality::{Admitted, JoinLimits, JoinReject, ADMITTED_KEY, CAPPED_DIMENSIONS, OVERFLOW};
pub use state::{
    Attribution, ConvState, Opened, PendingOutcome, RestoreError, StateDecodeError, TicketState, Turn, TurnTags,
    WaitingResolved, CONV_BINARY_V1,
};

/// The optional group-by dimensions (`[dimensions] keep`). `tier` is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Model,
    ClassifierVersion,
    Router,
    Segment,
    Intent,
}

/// Settings the join needs, extracted from the configuration once (`Config::join_settings`).
#[derive(Debug, Clone)]
pub struct JoinSettings {
    pub window_ms: i64,
    pub grace_ms: i64,
    pub pending_ms: i64,
    /// How far behind the watermark a decision may still arrive; time-based attribution of an
    /// outcome waits until the watermark is this far past the outcome.
    pub lateness_ms: i64,
    pub pending_max: usize,
    pub ticket_retention_ms: i64,
    pub keep: HashSet<Dimension>,
    pub capable_tier: String,
    pub capable_usd_per_input_token: Option<f64>,
    pub capable_usd_per_output_token: Option<f64>,
    pub ticket_cost_per_channel: HashMap<String, f64>,
    pub ticket_cost_per_minute: Option<f64>,
    /// Cardinality bounds (distinct values, turns, feedback and ticket events).
    pub limits: JoinLimits,
}

impl Default for JoinSettings {
    fn default() -> Self {
        Self {
            window_ms: 72 * 3_600_000,
            grace_ms: 24 * 3_600_000,
            pending_ms: 24 * 3_600_000,
            lateness_ms: 0,
            pending_max: 1_000_000,
            ticket_retention_ms: 30 * 86_400_000,
            keep: [Dimension::Model, Dimension::ClassifierVersion, Dimension::Router, Dimension::Segment]
                .into_iter()
                .collect(),
            capable_tier: "capable".into(),
            capable_usd_per_input_token: None,
            capable_usd_per_output_token: None,
            ticket_cost_per_channel: HashMap::new(),
            ticket_cost_per_minute: None,
            limits: JoinLimits::default(),
        }
    }
}

/// Counters the pipeline exports to Prometheus after a successful commit.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JoinCounters {
    pub duplicates: u64,
    pub decisions: u64,
    pub feedback: u64,
    pub tickets: u64,
    /// Costs that were null and could not be derived from the price table.
    pub cost_unknown: u64,
    /// A second OPENED event for a ticket already opened (ignored).
    pub ticket_reopened: u64,
    /// Decisions whose value of a dimension was grouped as [`OVERFLOW`], by
    /// [`CAPPED_DIMENSIONS`] index.
    pub capped: [u64; 5],
}

/// Persisted state key: `c:<conversation_id>` or `t:<ticket_id>`.
pub fn conv_key(conversation_id: &str) -> String {
    format!("c:{conversation_id}")
}
pub fn ticket_key(ticket_id: &str) -> String {
    format!("t:{ticket_id}")
}

/// The join state of one partition (of all three co-partitioned topics).
#[derive(Debug, Default)]
pub struct PartitionJoin {
    /// Open conversations by id (boxed ids: 8 bytes less per entry than `String`).
    convs: FastMap<Box<str>, ConvState>,
    tickets: FastMap<String, TicketState>,
    /// State keys changed since the last [`PartitionJoin::take_dirty`].
    dirty: FastSet<String>,
    pending_count: usize,
    /// (ts, conversation) of outcomes whose attribution depends on every turn up to `ts` being
    /// known: released when the watermark passes them.
    due: BTreeSet<(i64, String)>,
    watermark_ms: i64,
    last_sweep_watermark_ms: i64,
    /// Interned turn dimensions by a hash of their fields: a partition has a handful of distinct
    /// combinations and millions of turns.
    dims_pool: FastMap<u64, Arc<Dims>>,
    /// Dimension values this partition admitted (persisted under [`ADMITTED_KEY`]).
    admitted: Admitted,
}

/// Stable 64-bit hash of an event id, for duplicate detection (collision odds ~1e-19 per pair).
fn event_hash(event_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(event_id.as_bytes())
}

/// The conversation's state, created empty if it is not open (no id allocation when it is).
fn open_conv<'a>(convs: &'a mut FastMap<Box<str>, ConvState>, cid: &str) -> &'a mut ConvState {
    if !convs.contains_key(cid) {
        convs.insert(cid.into(), ConvState::default());
    }
    convs.get_mut(cid).expect("inserted above when absent")
}

/// Hash of a dims combination. 0xFF never occurs in UTF-8, so it separates fields unambiguously.
fn dims_hash(fields: [&str; 6]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for f in fields {
        h.update(f.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

impl PartitionJoin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild from persisted entries (`key`, stored state) and the stored watermark. The first
    /// entry that cannot be read is the error, named by its key.
    pub fn restore(entries: Vec<(String, Vec<u8>)>, watermark_ms: i64) -> Result<Self, RestoreError> {
        let mut join = Self { watermark_ms, last_sweep_watermark_ms: watermark_ms, ..Self::default() };
        for (key, bytes) in entries {
            if let Err(reason) = join.restore_entry(&key, &bytes) {
                return Err(RestoreError { key, reason });
            }
        }
        Ok(join)
    }

    fn restore_entry(&mut self, key: &str, bytes: &[u8]) -> Result<(), StateDecodeError> {
        if let Some(id) = key.strip_prefix("c:") {
            let conv = ConvState::from_bytes(bytes, &mut |fields| self.shared_dims(fields))?;
            self.pending_count += conv.pending().len();
            for p in conv.pending() {
                self.due.insert((p.ts(), id.to_string()));
            }
            self.convs.insert(id.into(), conv);
        } else if let Some(id) = key.strip_prefix("t:") {
            let mut t: TicketState = serde_json::from_slice(bytes)?;
            if let Some(Opened { attribution: Attribution::Turn { dims, .. }, .. }) = t.opened.as_mut() {
                *dims = self.intern(dims);
            }
            self.pending_count += t.waiting_resolved.len();
            self.tickets.insert(id.to_string(), t);
        } else if key == ADMITTED_KEY {
            self.admitted = Admitted::from_json(bytes)?;
        }
        Ok(())
    }

    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    pub fn open_conversations(&self) -> usize {
        self.convs.len()
    }

    pub fn pending_outcomes(&self) -> usize {
        self.pending_count
    }

    /// Touched entries since the last call: `(key, Some(bytes))` to upsert, `(key, None)` to
    /// delete. Conversations in their binary form, tickets and the admitted values as JSON.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for key in self.dirty.drain() {
            // Serializing plain structs of strings and numbers cannot fail; treat it as absent if it did.
            let bytes = if let Some(id) = key.strip_prefix("c:") {
                self.convs.get(id).and_then(|c| c.to_bytes().ok())
            } else if let Some(id) = key.strip_prefix("t:") {
                self.tickets.get(id).and_then(|t| serde_json::to_vec(t).ok())
            } else if key == ADMITTED_KEY {
                self.admitted.to_json().ok()
            } else {
                None
            };
            out.push((key, bytes));
        }
        // Keys are unique (drained from a set): an unstable sort gives the same order.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The decision's kept dimensions, as the partition's shared copy (allocates only for a
    /// combination not seen before).
    fn dims_of(&mut self, s: &JoinSettings, d: &RoutingDecision) -> Arc<Dims> {
        fn keep<'a>(s: &JoinSettings, dim: Dimension, v: &'a str) -> &'a str {
            if s.keep.contains(&dim) {
                v
            } else {
                ""
            }
        }
        let fields = [
            d.tier.as_str(),
            keep(s, Dimension::Model, &d.model),
            keep(s, Dimension::ClassifierVersion, &d.classifier_version),
            keep(s, Dimension::Router, d.router.as_str()),
            keep(s, Dimension::Segment, d.segment.as_deref().unwrap_or("")),
            keep(s, Dimension::Intent, d.intent.as_deref().unwrap_or("")),
        ];
        self.shared_dims(fields)
    }

    /// The partition's shared copy of these dimensions (allocates only for a combination not
    /// seen before).
    fn shared_dims(&mut self, fields: [&str; 6]) -> Arc<Dims> {
        let hash = dims_hash(fields);
        if let Some(shared) = self.dims_pool.get(&hash) {
            if shared.fields() == fields {
                return shared.clone();
            }
        }
        let dims = Arc::new(Dims::from_fields(fields));
        // On a (astronomically unlikely) hash collision the first combination keeps the slot and
        // the other is simply not shared.
        self.dims_pool.entry(hash).or_insert_with(|| dims.clone());
        dims
    }

    /// The shared copy of `dims` (used for state restored from storage).
    fn intern(&mut self, dims: &Arc<Dims>) -> Arc<Dims> {
        let hash = dims_hash(dims.fields());
        let shared = self.dims_pool.entry(hash).or_insert_with(|| dims.clone());
        if **shared == **dims {
            shared.clone()
        } else {
            dims.clone()
        }
    }

    /// Advance the partition's event-time watermark (never backwards).
    pub fn advance_watermark(&mut self, ts_ms: i64) {
        if ts_ms > self.watermark_ms {
            self.watermark_ms = ts_ms;
        }
    }

    /// The partition's admitted dimension values.
    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }

    /// Apply a routing decision. Its dimensions beyond the partition's caps are rewritten to
    /// [`OVERFLOW`] in place first, so whoever uses the decision afterwards (the rescore sampler)
    /// sees what the aggregates saw. A decision beyond the conversation's turn limit is refused
    /// (nothing applied) for the caller to dead-letter.
    pub fn apply_decision(
        &mut self,
        s: &JoinSettings,
        d: &mut RoutingDecision,
        out: &mut Deltas,
        n: &mut JoinCounters,
    ) -> Result<(), JoinReject> {
        let h = event_hash(&d.event_id);
        if let Some(conv) = self.convs.get(d.conversation_id.as_str()) {
            if conv.has_seen(h) {
                n.duplicates += 1;
                return Ok(());
            }
            if conv.turns().len() >= s.limits.max_turns_per_conversation {
                return Err(JoinReject::TooManyTurns(conv.turns().len()));
            }
        }
        if self.admitted.cap(&s.limits, &s.keep, &s.capable_tier, d, &mut n.capped) {
            self.dirty.insert(ADMITTED_KEY.to_string());
        }
        let d = &*d;
        let dims = self.dims_of(s, d);
        let conv = open_conv(&mut self.convs, &d.conversation_id);
        n.decisions += 1;

        let (hour, day) = (hour_start(d.ts), day_start(d.ts));
        let turns = conv.turns();
        let new_in_hour = !turns.iter().any(|t| hour_start(t.ts) == hour && t.dims == dims);
        let new_in_day = !turns.iter().any(|t| day_start(t.ts) == day && t.dims == dims);
        let new_in_tier_day = !turns.iter().any(|t| day_start(t.ts) == day && t.dims.tier == dims.tier);

        let cost = nano_usd(d.cost_usd);
        let capable_cost = match d.capable_cost_usd {
            Some(c) => nano_usd(c),
            None => match (s.capable_usd_per_input_token, s.capable_usd_per_output_token) {
                (Some(i), Some(o)) => nano_usd(i * d.input_tokens as f64 + o * d.output_tokens as f64),
                // Without a price table the only safe figure is what the turn cost: no saving is
                // claimed. The capable tier's own cost is its capable cost by definition.
                _ => {
                    if d.tier != s.capable_tier {
                        n.cost_unknown += 1;
                    }
                    cost
                }
            },
        };
        let escalated = d.escalated as i64;
        for (grain, new_conversation) in [(Grain::Hour, new_in_hour), (Grain::Day, new_in_day)] {
            out.quality_one(grain, d.ts, &dims, |q| {
                q.decisions += 1;
                q.conversations += new_conversation as i64;
                q.escalations += escalated;
                q.cost_nusd += cost;
                q.capable_cost_nusd += capable_cost;
            });
        }
        out.latency(d.ts, &dims, d.latency_ms);
        let signal = match d.router {
            RouterKind::PreRoute => Signal::RouterConfidence,
            RouterKind::Cascade => Signal::CascadeSelfConfidence,
        };
        // (version, router) hashed without building a string: this runs for every decision.
        let version_router =
            xxhash_rust::xxh3::xxh3_64_with_seed(d.classifier_version.as_bytes(), u64::from(d.router.index()));
        let new_drift_conversation = !conv.counted_for_drift(day, version_router);
        out.confidence(
            ConfKey {
                hour_ms: hour,
                signal,
                classifier_version: d.classifier_version.clone(),
                router: d.router.as_str().to_string(),
            },
            d.confidence,
            new_drift_conversation,
            d.tier != s.capable_tier,
            d.threshold,
        );
        if new_in_tier_day {
            *out.tier_day.entry((day, dims.tier.clone())).or_default() += 1;
        }
        let cell = calib_cell(d.confidence);
        out.calib(d.ts, &dims, cell, calib_group(&d.conversation_id), |c| {
            c.decisions += 1;
            c.conf_e4 += i64::from(crate::stats::hist::bin_of(d.confidence).unwrap_or(0));
            c.cost_nusd += cost;
            c.capable_cost_nusd += capable_cost;
        });
        conv.push_turn(Turn {
            turn: d.turn,
            ts: d.ts,
            dims,
            event_hash: h,
            tags: TurnTags::new(state::short_series(version_router), cell),
        });
        self.dirty.insert(conv_key(&d.conversation_id));

        // Outcomes that arrived before this decision may now find their turn.
        if !conv.pending().is_empty() {
            let waiting = conv.take_pending();
            self.pending_count -= waiting.len();
            for p in waiting {
                self.attribute_pending(s, &d.conversation_id, p, out);
            }
        }
        Ok(())
    }

    /// Apply a feedback event; beyond the conversation's feedback limit it is refused (nothing
    /// applied) for the caller to dead-letter.
    pub fn apply_feedback(
        &mut self,
        s: &JoinSettings,
        f: &Feedback,
        out: &mut Deltas,
        n: &mut JoinCounters,
    ) -> Result<(), JoinReject> {
        let h = event_hash(&f.event_id);
        if let Some(conv) = self.convs.get(f.conversation_id.as_str()) {
            if conv.has_seen(h) {
                n.duplicates += 1;
                return Ok(());
            }
            if conv.feedback_seen() >= s.limits.max_feedback_per_conversation {
                return Err(JoinReject::TooManyFeedback(conv.feedback_seen()));
            }
        }
        let conv = open_conv(&mut self.convs, &f.conversation_id);
        conv.mark_seen(h);
        n.feedback += 1;
        self.dirty.insert(conv_key(&f.conversation_id));
        let pending = PendingOutcome::Feedback { turn: f.turn, ts: f.ts, kind: f.kind, score: f.score };
        self.attribute_pending(s, &f.conversation_id, pending, out);
        Ok(())
    }

    /// Apply a ticket event; beyond the ticket's event limit it is refused (nothing applied) for
    /// the caller to dead-letter.
    pub fn apply_ticket(
        &mut self,
        s: &JoinSettings,
        t: &SupportTicket,
        out: &mut Deltas,
        n: &mut JoinCounters,
    ) -> Result<(), JoinReject> {
        let h = event_hash(&t.event_id);
        if let Some(state) = self.tickets.get(&t.ticket_id) {
            if state.seen.contains(&h) {
                n.duplicates += 1;
                return Ok(());
            }
            if state.seen.len() >= s.limits.max_events_per_ticket {
                return Err(JoinReject::TooManyTicketEvents(state.seen.len()));
            }
        }
        let state = self.tickets.entry(t.ticket_id.clone()).or_default();
        state.seen.push(h);
        state.last_ts = state.last_ts.max(t.ts);
        n.tickets += 1;
        self.dirty.insert(ticket_key(&t.ticket_id));
        match t.status {
            TicketStatus::Opened => self.ticket_opened(s, t, out, n),
            TicketStatus::Resolved => self.ticket_resolved(s, t, out, n),
        }
        Ok(())
    }

    fn ticket_opened(&mut self, s: &JoinSettings, t: &SupportTicket, out: &mut Deltas, n: &mut JoinCounters) {
        let Some(state) = self.tickets.get_mut(&t.ticket_id) else { return };
        if state.opened.is_some() {
            n.ticket_reopened += 1;
            return;
        }
        let day = day_start(t.ts);
        out.human(day, &t.cost_center, &t.channel, |h| h.tickets_opened += 1);
        state.opened = Some(Opened {
            ts: t.ts,
            day_ms: day,
            cost_center: t.cost_center.clone(),
            channel: t.channel.clone(),
            attribution: Attribution::Pending,
            pending_cost_nusd: 0,
        });
        // RESOLVED events that arrived before the OPENED one are credited to the opening day.
        let waiting = std::mem::take(&mut state.waiting_resolved);
        self.pending_count -= waiting.len();
        for w in waiting {
            self.credit_resolved(&t.ticket_id, w.cost_nusd, out);
        }
        match t.conversation_id.as_deref() {
            None => self.settle_ticket(&t.ticket_id, None, out),
            Some(cid) => {
                let pending = PendingOutcome::Ticket { ticket_id: t.ticket_id.clone(), ts: t.ts };
                open_conv(&mut self.convs, cid);
                self.dirty.insert(conv_key(cid));
                self.attribute_pending(s, cid, pending, out);
            }
        }
    }

    fn ticket_resolved(&mut self, s: &JoinSettings, t: &SupportTicket, out: &mut Deltas, n: &mut JoinCounters) {
        let cost = match t.cost_usd {
            Some(c) => nano_usd(c),
            None => match (s.ticket_cost_per_channel.get(&t.channel), s.ticket_cost_per_minute, t.handle_minutes) {
                (Some(flat), _, _) => nano_usd(*flat),
                (None, Some(rate), Some(minutes)) => nano_usd(rate * minutes),
                _ => {
                    n.cost_unknown += 1;
                    0
                }
            },
        };
        let Some(state) = self.tickets.get_mut(&t.ticket_id) else { return };
        if state.opened.is_some() {
            self.credit_resolved(&t.ticket_id, cost, out);
        } else {
            state.waiting_resolved.push(WaitingResolved {
                ts: t.ts,
                cost_nusd: cost,
                cost_center: t.cost_center.clone(),
                channel: t.channel.clone(),
            });
            self.pending_count += 1;
        }
    }

    /// Credit a resolved ticket's cost to its opening day and, once known, to its turn's tier.
    fn credit_resolved(&mut self, ticket_id: &str, cost: i64, out: &mut Deltas) {
        let Some(opened) = self.tickets.get_mut(ticket_id).and_then(|t| t.opened.as_mut()) else { return };
        out.human(opened.day_ms, &opened.cost_center, &opened.channel, |h| {
            h.tickets_resolved += 1;
            h.human_cost_nusd += cost;
        });
        match &opened.attribution {
            Attribution::Turn { ts, dims } => {
                out.quality_both(*ts, dims, |q| q.attributed_human_cost_nusd += cost);
            }
            Attribution::Pending => opened.pending_cost_nusd += cost,
            Attribution::Unattributed => {}
        }
    }

    /// Fix an OPENED ticket's attribution (to a turn, or none) and emit its effects.
    fn settle_ticket(&mut self, ticket_id: &str, turn: Option<(&str, i64, Arc<Dims>)>, out: &mut Deltas) {
        self.dirty.insert(ticket_key(ticket_id));
        let Some(opened) = self.tickets.get_mut(ticket_id).and_then(|t| t.opened.as_mut()) else { return };
        if !matches!(opened.attribution, Attribution::Pending) {
            return;
        }
        match turn {
            None => {
                opened.attribution = Attribution::Unattributed;
                opened.pending_cost_nusd = 0;
                out.human(opened.day_ms, &opened.cost_center, &opened.channel, |h| h.unattributed_tickets += 1);
            }
            Some((cid, ts, dims)) => {
                let cost = std::mem::take(&mut opened.pending_cost_nusd);
                out.human(opened.day_ms, &opened.cost_center, &opened.channel, |h| h.attributed_tickets += 1);
                // At most one failed deflection per conversation: the first attributed ticket.
                let first = match self.convs.get_mut(cid) {
                    Some(conv) if !conv.failed_deflection() => {
                        conv.set_failed_deflection();
                        if let Some(i) = conv.turns().iter().position(|t| t.ts == ts && t.dims == dims) {
                            mark_turn_failed(conv, i, cid, true, out);
                        }
                        true
                    }
                    _ => false,
                };
                out.quality_both(ts, &dims, |q| {
                    q.attributed_tickets += 1;
                    q.attributed_human_cost_nusd += cost;
                    q.failed_deflections += first as i64;
                });
                opened.attribution = Attribution::Turn { ts, dims };
            }
        }
    }

    /// Attribute an outcome to its turn, or park it until the decision arrives.
    ///
    /// Time-based attribution ("the latest turn at or before the outcome") is only final once no
    /// earlier turn can still arrive, i.e. once the watermark has passed the outcome: until then
    /// tickets and turn-less feedback wait, so the result does not depend on how the topics
    /// interleave. Feedback naming its turn only waits for that turn.
    fn attribute_pending(&mut self, s: &JoinSettings, cid: &str, p: PendingOutcome, out: &mut Deltas) {
        let settled_until = self.watermark_ms.saturating_sub(s.lateness_ms);
        let waits_for_watermark = match &p {
            PendingOutcome::Ticket { ts, .. } | PendingOutcome::Feedback { turn: None, ts, .. } => *ts > settled_until,
            PendingOutcome::Feedback { turn: Some(_), .. } => false,
        };
        let Some(conv) = self.convs.get(cid) else { return };
        if !waits_for_watermark {
            match &p {
                PendingOutcome::Feedback { turn, ts, kind, score } => {
                    let target = match turn {
                        Some(k) => conv.turns().iter().find(|t| t.turn == *k),
                        None => conv.latest_turn_at_or_before(*ts).or_else(|| conv.latest_turn()),
                    };
                    if let Some(t) = target {
                        let (ts, dims) = (t.ts, t.dims.clone());
                        let index = conv.turns().iter().position(|x| std::ptr::eq(x, t));
                        apply_feedback_effect(*kind, *score, ts, &dims, out);
                        let failed = match (kind, score) {
                            (FeedbackKind::ThumbsDown, _) => true,
                            (FeedbackKind::HumanReview, Some(v)) => *v == 0.0,
                            _ => false,
                        };
                        if let (true, Some(i)) = (failed, index) {
                            if let Some(conv) = self.convs.get_mut(cid) {
                                mark_turn_failed(conv, i, cid, false, out);
                                self.dirty.insert(conv_key(cid));
                            }
                        }
                        return;
                    }
                }
                PendingOutcome::Ticket { ticket_id, ts } => {
                    if let Some(t) = conv.latest_turn_at_or_before(*ts) {
                        let turn = if ts.saturating_sub(t.ts) <= s.window_ms {
                            Some((cid, t.ts, t.dims.clone()))
                        } else {
                            None
                        };
                        let ticket_id = ticket_id.clone();
                        self.settle_ticket(&ticket_id, turn, out);
                        return;
                    }
                }
            }
        }
        if waits_for_watermark {
            self.due.insert((p.ts(), cid.to_string()));
        }
        if let Some(conv) = self.convs.get_mut(cid) {
            conv.push_pending(p);
            self.pending_count += 1;
            self.dirty.insert(conv_key(cid));
        }
        if self.pending_count > s.pending_max {
            self.evict_oldest_pending(out);
        }
    }

    /// Attribute the outcomes the watermark has now passed (call after advancing it).
    pub fn release_due(&mut self, s: &JoinSettings, out: &mut Deltas) {
        let settled_until = self.watermark_ms.saturating_sub(s.lateness_ms);
        while let Some((ts, _)) = self.due.first() {
            if *ts > settled_until {
                break;
            }
            let Some((_, cid)) = self.due.pop_first() else { break };
            let Some(conv) = self.convs.get_mut(cid.as_str()) else { continue };
            let mut waiting = conv.take_pending();
            if waiting.is_empty() {
                continue;
            }
            waiting.sort_by_key(PendingOutcome::ts);
            self.pending_count -= waiting.len();
            self.dirty.insert(conv_key(&cid));
            for p in waiting {
                self.attribute_pending(s, &cid, p, out);
            }
        }
    }

    fn expire_pending(&mut self, p: PendingOutcome, kind: OrphanKind, out: &mut Deltas) {
        match p {
            PendingOutcome::Feedback { ts, .. } => out.orphan(ts, kind),
            PendingOutcome::Ticket { ticket_id, ts } => {
                out.orphan(ts, kind);
                // The ticket is still human volume: it becomes unattributed.
                self.settle_ticket(&ticket_id, None, out);
            }
        }
    }

    fn evict_oldest_pending(&mut self, out: &mut Deltas) {
        let oldest = self
            .convs
            .iter()
            .flat_map(|(cid, c)| c.pending().iter().enumerate().map(move |(i, p)| (p.ts(), cid.clone(), i)))
            .min();
        if let Some((_, cid, i)) = oldest {
            if let Some(conv) = self.convs.get_mut(&cid) {
                let mut pending = conv.take_pending();
                let p = pending.remove(i);
                conv.set_pending(pending);
                self.pending_count -= 1;
                self.dirty.insert(conv_key(&cid));
                self.expire_pending(p, OrphanKind::Evicted, out);
            }
        }
    }

    /// Expire what the watermark has passed: waiting outcomes become orphans, finished
    /// conversations and tickets are forgotten. Runs at most once per event-time hour of progress
    /// unless `force`.
    pub fn sweep(&mut self, s: &JoinSettings, out: &mut Deltas, force: bool) {
        let wm = self.watermark_ms;
        if !force && wm.saturating_sub(self.last_sweep_watermark_ms) < crate::metrics::HOUR_MS {
            return;
        }
        self.last_sweep_watermark_ms = wm;
        let mut expired: Vec<PendingOutcome> = Vec::new();
        // One pass that also drops the finished conversations in place (no key copies, no second
        // lookup): at the end of a replay this visits and drops every conversation at once.
        // Expiring the outcomes afterwards touches tickets only, never a conversation.
        let dirty = &mut self.dirty;
        self.convs.retain(|cid, conv| {
            if !conv.pending().is_empty() {
                let before = conv.pending().len();
                let (keep, gone): (Vec<_>, Vec<_>) =
                    conv.take_pending().into_iter().partition(|p| wm <= p.ts().saturating_add(s.pending_ms));
                conv.set_pending(keep);
                if conv.pending().len() != before {
                    dirty.insert(conv_key(cid));
                }
                expired.extend(gone);
            }
            let done = match conv.latest_turn() {
                Some(t) => wm > t.ts.saturating_add(s.window_ms).saturating_add(s.grace_ms),
                None => true,
            };
            let finished = done && conv.pending().is_empty();
            if finished {
                dirty.insert(conv_key(cid));
            }
            !finished
        });
        self.pending_count -= expired.len();
        for p in expired {
            let kind = match p {
                PendingOutcome::Feedback { .. } => OrphanKind::Feedback,
                PendingOutcome::Ticket { .. } => OrphanKind::Ticket,
            };
            self.expire_pending(p, kind, out);
        }
        let mut drop_tickets = Vec::new();
        for (tid, t) in self.tickets.iter_mut() {
            let before = t.waiting_resolved.len();
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut t.waiting_resolved)
                .into_iter()
                .partition(|w| wm <= w.ts.saturating_add(s.pending_ms));
            t.waiting_resolved = keep;
            if t.waiting_resolved.len() != before {
                self.dirty.insert(ticket_key(tid));
            }
            for w in gone {
                self.pending_count -= 1;
                // A RESOLVED without its OPENED still cost money: credit its own day, count the orphan.
                out.orphan(w.ts, OrphanKind::ResolvedWithoutOpened);
                out.human(day_start(w.ts), &w.cost_center, &w.channel, |h| {
                    h.tickets_resolved += 1;
                    h.human_cost_nusd += w.cost_nusd;
                });
            }
            let pending = t.opened.as_ref().is_some_and(|o| matches!(o.attribution, Attribution::Pending));
            if !pending && t.waiting_resolved.is_empty() && wm > t.last_ts.saturating_add(s.ticket_retention_ms) {
                drop_tickets.push(tid.clone());
            }
        }
        for tid in drop_tickets {
            self.tickets.remove(&tid);
            self.dirty.insert(ticket_key(&tid));
        }
        // Combinations no turn or ticket refers to any more (a retired model, say).
        self.dims_pool.retain(|_, dims| Arc::strong_count(dims) > 1);
    }
}

/// Record that turn `index` of a conversation failed (router evaluation): the turn's first failure
/// counts in its confidence cell, and a failed deflection counts as one too.
fn mark_turn_failed(conv: &mut ConvState, index: usize, cid: &str, failed_deflection: bool, out: &mut Deltas) {
    let Some(turn) = conv.turns_mut().get_mut(index) else { return };
    let first_failure = !turn.tags.failed();
    turn.tags.set_failed();
    let (ts, dims, cell) = (turn.ts, turn.dims.clone(), turn.tags.cell());
    out.calib(ts, &dims, cell, calib_group(cid), |c| {
        c.failures += first_failure as i64;
        c.failed_deflections += failed_deflection as i64;
    });
}

fn apply_feedback_effect(kind: FeedbackKind, score: Option<f64>, ts: i64, dims: &Arc<Dims>, out: &mut Deltas) {
    match (kind, score) {
        (FeedbackKind::ThumbsUp, _) => out.quality_both(ts, dims, |q| q.thumbs_up += 1),
        (FeedbackKind::ThumbsDown, _) => out.quality_both(ts, dims, |q| q.thumbs_down += 1),
        (FeedbackKind::Csat, Some(v)) => out.quality_both(ts, dims, |q| {
            q.csat_n += 1;
            q.csat_sum += v;
        }),
        (FeedbackKind::HumanReview, Some(v)) => out.quality_both(ts, dims, |q| {
            q.reviews_n += 1;
            q.reviews_wrong += (v == 0.0) as i64;
        }),
        // Validation dead-letters CSAT and HUMAN_REVIEW without a score (`invalid_value`), so
        // none reaches the join; if one did, it would rate nothing.
        (FeedbackKind::Csat | FeedbackKind::HumanReview, None) => {}
    }
}

#[cfg(test)]
mod tests;
