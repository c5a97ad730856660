//! Benchmark traffic shared by the benchmarks.
//!
//! - [`events`]: two decisions per conversation, feedback on 1 in 4, a ticket on 1 in 10, time
//!   moving forward one conversation per 20 s (compressed time: conversations open and close
//!   within a few thousand events).
//! - [`realistic`]: a gateway's live rate in event time (e.g. 10 000 events/s), multi-turn
//!   conversations that come back minutes later, so a conversation's events are spread over
//!   hundreds of thousands of messages and each batch touches mostly different conversations:
//!   what a consumer catching up after an outage reads.
//! - [`Live`]: the shape of [`realistic`] generated on the fly for a live stream, each event
//!   stamped with the wall-clock time at which it is produced.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

/// `n` events as (stream index: 0 routing, 1 feedback, 2 tickets, event), in time order.
#[allow(dead_code)] // not every benchmark uses it
pub fn events(n: usize) -> Vec<(usize, Event)> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0usize;
    while out.len() < n {
        conversation(i, &mut out);
        i += 1;
    }
    out.truncate(n);
    out
}

/// The events of conversations `first .. first + count` (all of them), in time order per
/// conversation.
#[allow(dead_code)] // not every benchmark uses it
pub fn events_from(first: usize, count: usize) -> Vec<(usize, Event)> {
    let mut out = Vec::with_capacity(count * 3);
    for i in first..first + count {
        conversation(i, &mut out);
    }
    out
}

/// One conversation's events.
fn conversation(i: usize, out: &mut Vec<(usize, Event)>) {
    let c = format!("conv-{i}");
    // Traffic moves forward in time as in a live stream or a replay: one conversation / 20 s.
    let start = DAY0 + i as i64 * 20_000;
    let tier = if i % 3 == 0 { "capable" } else { "cheap" };
    for k in 0..2 {
        let d = RoutingDecision {
            intent: Some("billing".into()),
            confidence: (i % 1000) as f64 / 1000.0,
            latency_ms: 100.0 + (i % 900) as f64,
            cost_usd: 0.0004,
            ..decision(i, k, &c, start + k as i64 * 60_000, tier)
        };
        out.push((0, d.into()));
    }
    if i % 4 == 0 {
        out.push((1, feedback(i, &c, 1, start + 5 * 60_000)));
    }
    if i % 10 == 0 {
        out.push((2, ticket(i, &c, start + 3 * 3_600_000, "phone")));
    }
}

/// `n` events of live-rate traffic, `rate` events per second of event time, in time order:
/// conversations of 1–4 turns 30 s apart, 1 in 5 resumed 4 minutes after its start with one more
/// turn, feedback on 1 in 4 (20 s after its last turn), a ticket on 1 in 10 (3 minutes after its
/// start). Conversations start evenly (≈ 3.05 events each on average).
#[allow(dead_code)] // not every benchmark uses it
pub fn realistic(n: usize, rate: f64) -> Vec<(usize, Event)> {
    let spacing_ms = 3.05 * 1000.0 / rate;
    // Enough conversations for `n` events (≥ 3.0 each on average) plus one longest conversation's
    // span (5 minutes) more, so that the first `n` in time order are complete.
    let conversations = n / 3 + (5.0 * 60_000.0 / spacing_ms) as usize + 1;
    let mut out = Vec::with_capacity(conversations * 4);
    for i in 0..conversations {
        let start = DAY0 + (i as f64 * spacing_ms) as i64;
        let turns = 1 + ((i * 7 + i / 3) % 4) as i32;
        let c = format!("conv-{i}");
        let tier = if i % 3 == 0 { "capable" } else { "cheap" };
        for k in 0..turns {
            out.push((0, Event::Decision(decision(i, k, &c, start + k as i64 * 30_000, tier))));
        }
        if i % 5 == 1 {
            out.push((0, Event::Decision(decision(i, turns, &c, start + 4 * 60_000, tier))));
        }
        if i % 4 == 0 {
            out.push((1, feedback(i, &c, turns - 1, start + (turns as i64 - 1) * 30_000 + 20_000)));
        }
        if i % 10 == 0 {
            out.push((2, ticket(i, &c, start + 3 * 60_000, ["phone", "chat", "email"][i % 3])));
        }
    }
    out.sort_by_key(|(_, e)| e.ts());
    out.truncate(n);
    out
}

/// Conversation `i`'s feedback on `turn`: thumbs down for every 8th conversation, else up.
fn feedback(i: usize, c: &str, turn: i32, ts: i64) -> Event {
    let kind = if i % 8 == 0 { FeedbackKind::ThumbsDown } else { FeedbackKind::ThumbsUp };
    Feedback { source: Some("widget".into()), ..testkit::feedback(format!("f-{i}"), c, Some(turn), ts, kind) }.into()
}

/// Conversation `i`'s support ticket, opened at `ts` on `channel`.
fn ticket(i: usize, c: &str, ts: i64, channel: &str) -> Event {
    SupportTicket {
        channel: channel.into(),
        reason: Some("billing".into()),
        ..testkit::ticket(format!("t-{i}"), format!("T{i}"), c, ts)
    }
    .into()
}

/// Conversation `i`'s turn `k`: intent, confidence, latency and cost vary with `i` and `k` (as in
/// [`realistic`] and [`Live`]; [`events`] fixes the intent and cost and varies the others by `i`).
fn decision(i: usize, k: i32, c: &str, ts: i64, tier: &str) -> RoutingDecision {
    RoutingDecision {
        segment: Some(["smb", "enterprise", "consumer"][i % 3].into()),
        query_text: Some("where is my charge from? it says ACME*SVC 14.99".into()),
        classifier_version: "clf-2026-01".into(),
        intent: Some(["billing", "shipping", "account", "refund"][i % 4].into()),
        confidence: ((i * 37 + k as usize * 11) % 1000) as f64 / 1000.0,
        threshold: Some(0.6),
        tier: tier.into(),
        model: if tier == "cheap" { "small-1".into() } else { "large-1".into() },
        latency_ms: 100.0 + ((i + k as usize) % 900) as f64,
        input_tokens: 220,
        output_tokens: 140,
        cost_usd: if tier == "cheap" { 0.0004 } else { 0.0016 },
        capable_cost_usd: Some(0.0016),
        ..testkit::decision(format!("d-{i}-{k}"), c, k, ts)
    }
}

/// A follow-up event of a [`Live`] conversation, waiting for its due time.
#[allow(dead_code)] // not every benchmark uses it
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FollowUp {
    Turn { conv: usize, turn: i32 },
    Feedback { conv: usize, turn: i32 },
    Ticket { conv: usize },
}

/// Live traffic of the [`realistic`] shape, generated on the fly: conversations of 1–4 turns 30 s
/// apart, 1 in 5 resumed 4 minutes after its start with one more turn, feedback on 1 in 4 (20 s
/// after its last turn), a ticket on 1 in 10 (3 minutes after its start). The caller sets the rate:
/// [`Live::next`] returns a follow-up that has come due if there is one, else the first turn of a
/// new conversation, so the total event rate is exactly the caller's and conversations start as
/// fast as the remainder allows (faster in the first minutes, ≈ rate / 3.05 per second once the
/// follow-ups of earlier conversations arrive). Every event's `ts` is the `now_ms` passed in.
#[allow(dead_code)] // not every benchmark uses it
#[derive(Debug, Default)]
pub struct Live {
    started: usize,
    seq: u64,
    due: BinaryHeap<Reverse<(i64, u64, FollowUp)>>,
}

#[allow(dead_code)] // not every benchmark uses it
impl Live {
    pub fn new() -> Self {
        Self::default()
    }

    /// Conversations started so far.
    pub fn conversations(&self) -> usize {
        self.started
    }

    /// Follow-up events scheduled but not yet returned.
    pub fn waiting(&self) -> usize {
        self.due.len()
    }

    /// The next event at `elapsed_ms` of the traffic's clock, stamped `now_ms` (wall clock, ms since
    /// the epoch), as (stream index: 0 routing, 1 feedback, 2 tickets, event).
    pub fn next(&mut self, elapsed_ms: i64, now_ms: i64) -> (usize, Event) {
        if let Some(Reverse((at, _, _))) = self.due.peek() {
            if *at <= elapsed_ms {
                let Reverse((_, _, f)) = self.due.pop().expect("peeked");
                return self.follow_up(f, now_ms);
            }
        }
        let i = self.started;
        self.started += 1;
        let turns = live_turns(i);
        for k in 1..turns {
            self.schedule(elapsed_ms + k as i64 * 30_000, FollowUp::Turn { conv: i, turn: k });
        }
        if i % 5 == 1 {
            self.schedule(elapsed_ms + 4 * 60_000, FollowUp::Turn { conv: i, turn: turns });
        }
        if i % 4 == 0 {
            let at = elapsed_ms + (turns as i64 - 1) * 30_000 + 20_000;
            self.schedule(at, FollowUp::Feedback { conv: i, turn: turns - 1 });
        }
        if i % 10 == 0 {
            self.schedule(elapsed_ms + 3 * 60_000, FollowUp::Ticket { conv: i });
        }
        (0, Event::Decision(decision(i, 0, &live_id(i), now_ms, live_tier(i))))
    }

    fn schedule(&mut self, at_ms: i64, f: FollowUp) {
        self.seq += 1;
        self.due.push(Reverse((at_ms, self.seq, f)));
    }

    fn follow_up(&self, f: FollowUp, ts: i64) -> (usize, Event) {
        match f {
            FollowUp::Turn { conv, turn } => {
                (0, Event::Decision(decision(conv, turn, &live_id(conv), ts, live_tier(conv))))
            }
            FollowUp::Feedback { conv, turn } => (1, feedback(conv, &live_id(conv), turn, ts)),
            FollowUp::Ticket { conv } => (2, ticket(conv, &live_id(conv), ts, ["phone", "chat", "email"][conv % 3])),
        }
    }
}

#[allow(dead_code)] // not every benchmark uses it
fn live_id(i: usize) -> String {
    format!("conv-{i}")
}

#[allow(dead_code)] // not every benchmark uses it
fn live_turns(i: usize) -> i32 {
    1 + ((i * 7 + i / 3) % 4) as i32
}

#[allow(dead_code)] // not every benchmark uses it
fn live_tier(i: usize) -> &'static str {
    if i % 3 == 0 {
        "capable"
    } else {
        "cheap"
    }
}
