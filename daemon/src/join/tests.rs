//! Every attribution rule of docs/contract.md#attribution, checked on hand-computed expectations.

use super::*;
use std::collections::BTreeMap;

use crate::event::TicketStatus;
use crate::metrics::{Grain, HumanDelta, QualityDelta, QualityKey, DAY_MS, HOUR_MS};
use crate::testkit;

const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS; // a UTC midnight

fn decision(id: &str, conv: &str, turn: i32, ts: i64, tier: &str) -> RoutingDecision {
    RoutingDecision {
        segment: Some("smb".into()),
        query_text: Some("where is my charge from?".into()),
        intent: Some("billing".into()),
        confidence: 0.9,
        tier: tier.into(),
        model: format!("{tier}-model"),
        latency_ms: 100.0,
        input_tokens: 100,
        output_tokens: 50,
        cost_usd: if tier == "cheap" { 0.001 } else { 0.004 },
        capable_cost_usd: Some(0.004),
        ..testkit::decision(id, conv, turn, ts)
    }
}

fn feedback(id: &str, conv: &str, turn: Option<i32>, ts: i64, kind: FeedbackKind, score: Option<f64>) -> Feedback {
    Feedback { score, ..testkit::feedback(id, conv, turn, ts, kind) }
}

fn ticket(id: &str, tid: &str, conv: Option<&str>, ts: i64, status: TicketStatus, cost: Option<f64>) -> SupportTicket {
    SupportTicket {
        conversation_id: conv.map(Into::into),
        status,
        handle_minutes: Some(10.0),
        cost_usd: cost,
        reason: Some("billing".into()),
        ..testkit::ticket(id, tid, "", ts)
    }
}

struct Harness {
    s: JoinSettings,
    j: PartitionJoin,
    out: Deltas,
    n: JoinCounters,
    /// Apply events without moving the watermark to them (a partition whose watermark lags).
    lagging: bool,
}

impl Harness {
    fn new() -> Self {
        Self {
            s: JoinSettings::default(),
            j: PartitionJoin::new(),
            out: Deltas::default(),
            n: JoinCounters::default(),
            lagging: false,
        }
    }
    fn follow(&mut self, ts: i64) {
        if !self.lagging {
            self.j.advance_watermark(ts);
        }
    }
    fn d(&mut self, d: RoutingDecision) {
        self.try_d(d).unwrap();
    }
    fn try_d(&mut self, mut d: RoutingDecision) -> Result<(), JoinReject> {
        self.follow(d.ts);
        self.j.apply_decision(&self.s, &mut d, &mut self.out, &mut self.n)
    }
    fn f(&mut self, f: Feedback) {
        self.try_f(f).unwrap();
    }
    fn try_f(&mut self, f: Feedback) -> Result<(), JoinReject> {
        self.follow(f.ts);
        self.j.apply_feedback(&self.s, &f, &mut self.out, &mut self.n)
    }
    fn t(&mut self, t: SupportTicket) {
        self.try_t(t).unwrap();
    }
    fn try_t(&mut self, t: SupportTicket) -> Result<(), JoinReject> {
        self.follow(t.ts);
        self.j.apply_ticket(&self.s, &t, &mut self.out, &mut self.n)
    }
    fn sweep_at(&mut self, wm: i64) {
        self.j.advance_watermark(wm);
        self.j.sweep(&self.s, &mut self.out, true);
    }
    fn q(&self, grain: Grain, ts: i64, tier: &str) -> QualityDelta {
        // Sum over every row of that bucket and tier (the dims are fixed per tier in these tests).
        let mut acc = QualityDelta::default();
        for (k, v) in &self.out.quality {
            if k.grain == grain && k.bucket_ms == grain.bucket(ts) && k.dims.tier == tier {
                acc.add(v);
            }
        }
        acc
    }
    fn h(&self, day: i64) -> HumanDelta {
        let mut acc = HumanDelta::default();
        for (k, v) in &self.out.human {
            if k.day_ms == day_start(day) {
                acc.add(v);
            }
        }
        acc
    }
    fn orphans(&self, kind: OrphanKind) -> i64 {
        self.out.orphans.iter().filter(|((_, k), _)| *k == kind).map(|(_, v)| v).sum()
    }
}

#[test]
fn multi_turn_conversation_switching_tier_counts_in_both_denominators() {
    let mut h = Harness::new();
    h.d(decision("e1", "c1", 0, T0 + 10 * 60_000, "cheap"));
    h.d(decision("e2", "c1", 1, T0 + 20 * 60_000, "cheap"));
    h.d(decision("e3", "c1", 2, T0 + 30 * 60_000, "capable"));
    h.d(decision("e4", "c1", 3, T0 + 2 * HOUR_MS, "cheap"));
    let cheap_h0 = h.q(Grain::Hour, T0, "cheap");
    assert_eq!((cheap_h0.decisions, cheap_h0.conversations), (2, 1));
    let cap_h0 = h.q(Grain::Hour, T0, "capable");
    assert_eq!((cap_h0.decisions, cap_h0.conversations), (1, 1));
    let cheap_h2 = h.q(Grain::Hour, T0 + 2 * HOUR_MS, "cheap");
    assert_eq!((cheap_h2.decisions, cheap_h2.conversations), (1, 1));
    let cheap_day = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap_day.decisions, cheap_day.conversations), (3, 1));
    assert_eq!(h.out.tier_day[&(T0, "cheap".to_string())], 1);
    assert_eq!(h.out.tier_day[&(T0, "capable".to_string())], 1);
    assert_eq!(cheap_day.cost_nusd, 3 * 1_000_000);
    assert_eq!(cheap_day.capable_cost_nusd, 3 * 4_000_000);
}

#[test]
fn feedback_by_turn_and_by_time() {
    let mut h = Harness::new();
    h.d(decision("e1", "c1", 0, T0, "cheap"));
    h.d(decision("e2", "c1", 1, T0 + HOUR_MS, "capable"));
    // turn = 0 → the cheap turn even though it arrives after turn 1.
    h.f(feedback("f1", "c1", Some(0), T0 + 2 * HOUR_MS, FeedbackKind::ThumbsDown, None));
    // turn = null at a time between the turns → the latest turn at or before it: turn 0.
    h.f(feedback("f2", "c1", None, T0 + 30 * 60_000, FeedbackKind::Csat, Some(4.0)));
    // turn = null after both → turn 1.
    h.f(feedback("f3", "c1", None, T0 + 3 * HOUR_MS, FeedbackKind::HumanReview, Some(0.0)));
    // turn = null before every turn → the latest turn seen (turn 1).
    h.f(feedback("f4", "c1", None, T0 - HOUR_MS, FeedbackKind::ThumbsUp, None));
    let cheap = h.q(Grain::Day, T0, "cheap");
    let cap = h.q(Grain::Day, T0, "capable");
    assert_eq!((cheap.thumbs_down, cheap.csat_n, cheap.csat_sum), (1, 1, 4.0));
    assert_eq!((cap.reviews_n, cap.reviews_wrong, cap.thumbs_up), (1, 1, 1));
    // Credited to the cohort hour of the turn, not of the feedback.
    assert_eq!(h.q(Grain::Hour, T0, "cheap").thumbs_down, 1);
    assert_eq!(h.q(Grain::Hour, T0 + 2 * HOUR_MS, "cheap").thumbs_down, 0);
}

#[test]
fn outcomes_before_their_decision_wait_then_apply() {
    let mut h = Harness::new();
    h.f(feedback("f1", "c1", Some(0), T0 + 60_000, FeedbackKind::ThumbsDown, None));
    h.t(ticket("t1o", "T1", Some("c1"), T0 + HOUR_MS, TicketStatus::Opened, None));
    h.t(ticket("t1r", "T1", Some("c1"), T0 + 5 * HOUR_MS, TicketStatus::Resolved, Some(12.5)));
    assert_eq!(h.j.pending_outcomes(), 2);
    // Human volume does not wait for the AI side.
    assert_eq!(h.h(T0).tickets_opened, 1);
    assert_eq!(h.h(T0).human_cost_nusd, 12_500_000_000);
    h.d(decision("e1", "c1", 0, T0, "cheap"));
    assert_eq!(h.j.pending_outcomes(), 0);
    let cheap = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap.thumbs_down, cheap.failed_deflections, cheap.attributed_tickets), (1, 1, 1));
    assert_eq!(cheap.attributed_human_cost_nusd, 12_500_000_000);
    assert_eq!(h.h(T0).attributed_tickets, 1);
}

#[test]
fn ticket_inside_and_outside_the_window() {
    let mut h = Harness::new();
    h.d(decision("e1", "in", 0, T0, "cheap"));
    h.d(decision("e2", "out", 0, T0, "cheap"));
    // Exactly W after the turn is inside; W + 1 ms is outside.
    h.t(ticket("o1", "T1", Some("in"), T0 + 72 * HOUR_MS, TicketStatus::Opened, None));
    h.t(ticket("o2", "T2", Some("out"), T0 + 72 * HOUR_MS + 1, TicketStatus::Opened, None));
    let cheap = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap.conversations, cheap.failed_deflections), (2, 1));
    let day3 = h.h(T0 + 72 * HOUR_MS);
    assert_eq!((day3.tickets_opened, day3.attributed_tickets, day3.unattributed_tickets), (2, 1, 1));
}

#[test]
fn window_counts_from_the_latest_turn_before_the_ticket() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "capable"));
    h.d(decision("e2", "c", 1, T0 + 48 * HOUR_MS, "cheap"));
    h.t(ticket("o1", "T1", Some("c"), T0 + 100 * HOUR_MS, TicketStatus::Opened, None));
    assert_eq!(h.q(Grain::Day, T0 + 48 * HOUR_MS, "cheap").failed_deflections, 1);
    assert_eq!(h.q(Grain::Day, T0, "capable").failed_deflections, 0);
}

#[test]
fn second_ticket_is_volume_not_a_second_failed_deflection() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    h.t(ticket("o2", "T2", Some("c"), T0 + 2 * HOUR_MS, TicketStatus::Opened, None));
    let cheap = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap.failed_deflections, cheap.attributed_tickets), (1, 2));
    assert_eq!(h.h(T0).tickets_opened, 2);
}

#[test]
fn unlinked_ticket_is_unattributed_volume_and_cost() {
    let mut h = Harness::new();
    h.t(ticket("o1", "T9", None, T0 + HOUR_MS, TicketStatus::Opened, None));
    h.t(ticket("r1", "T9", None, T0 + 30 * HOUR_MS, TicketStatus::Resolved, Some(8.0)));
    let day = h.h(T0);
    assert_eq!((day.tickets_opened, day.unattributed_tickets, day.tickets_resolved), (1, 1, 1));
    assert_eq!(day.human_cost_nusd, 8_000_000_000);
    // Credited to the opening day, not to the resolution day.
    assert_eq!(h.h(T0 + 30 * HOUR_MS).human_cost_nusd, 0);
}

#[test]
fn resolved_cost_goes_to_opening_day_and_tier() {
    let mut h = Harness::new();
    h.s.ticket_cost_per_channel.insert("phone".into(), 7.25);
    h.d(decision("e1", "c", 0, T0 + 23 * HOUR_MS, "cheap"));
    h.t(ticket("o1", "T1", Some("c"), T0 + 23 * HOUR_MS + 30 * 60_000, TicketStatus::Opened, None));
    // Resolved the next day with no cost: derived from the channel price.
    h.t(ticket("r1", "T1", Some("c"), T0 + 40 * HOUR_MS, TicketStatus::Resolved, None));
    assert_eq!(h.h(T0).human_cost_nusd, 7_250_000_000);
    assert_eq!(h.q(Grain::Hour, T0 + 23 * HOUR_MS, "cheap").attributed_human_cost_nusd, 7_250_000_000);
}

#[test]
fn resolved_before_opened_waits_for_the_opening() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.t(ticket("r1", "T1", Some("c"), T0 + 3 * HOUR_MS, TicketStatus::Resolved, Some(5.0)));
    assert_eq!(h.h(T0).human_cost_nusd, 0);
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    assert_eq!(h.h(T0).human_cost_nusd, 5_000_000_000);
    assert_eq!(h.q(Grain::Day, T0, "cheap").attributed_human_cost_nusd, 5_000_000_000);
}

#[test]
fn duplicates_apply_once() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.f(feedback("f1", "c", Some(0), T0, FeedbackKind::ThumbsDown, None));
    h.f(feedback("f1", "c", Some(0), T0, FeedbackKind::ThumbsDown, None));
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    let cheap = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap.decisions, cheap.thumbs_down, cheap.failed_deflections), (1, 1, 1));
    assert_eq!(h.h(T0).tickets_opened, 1);
    assert_eq!(h.n.duplicates, 3);
}

#[test]
fn expired_outcomes_become_counted_orphans() {
    let mut h = Harness::new();
    h.f(feedback("f1", "ghost", Some(0), T0, FeedbackKind::ThumbsDown, None));
    h.t(ticket("o1", "T1", Some("ghost"), T0, TicketStatus::Opened, None));
    h.t(ticket("r2", "T2", None, T0, TicketStatus::Resolved, Some(3.0)));
    h.sweep_at(T0 + 24 * HOUR_MS); // exactly at the limit: still waiting
    assert_eq!(h.j.pending_outcomes(), 3);
    h.sweep_at(T0 + 24 * HOUR_MS + 1);
    assert_eq!(h.j.pending_outcomes(), 0);
    assert_eq!(h.orphans(OrphanKind::Feedback), 1);
    assert_eq!(h.orphans(OrphanKind::Ticket), 1);
    assert_eq!(h.orphans(OrphanKind::ResolvedWithoutOpened), 1);
    let day = h.h(T0);
    assert_eq!((day.tickets_opened, day.unattributed_tickets, day.tickets_resolved), (1, 1, 1));
    assert_eq!(day.human_cost_nusd, 3_000_000_000);
}

#[test]
fn pending_bound_evicts_oldest_as_orphan() {
    let mut h = Harness::new();
    h.s.pending_max = 2;
    h.f(feedback("f1", "a", Some(0), T0 + 3, FeedbackKind::ThumbsDown, None));
    h.f(feedback("f2", "b", Some(0), T0 + 1, FeedbackKind::ThumbsDown, None));
    h.f(feedback("f3", "c", Some(0), T0 + 2, FeedbackKind::ThumbsDown, None));
    assert_eq!(h.j.pending_outcomes(), 2);
    assert_eq!(h.orphans(OrphanKind::Evicted), 1);
    // The evicted one was b's (oldest): its decision now finds nothing to apply.
    h.d(decision("e", "b", 0, T0, "cheap"));
    assert_eq!(h.q(Grain::Day, T0, "cheap").thumbs_down, 0);
    h.d(decision("e2", "a", 0, T0, "cheap"));
    assert_eq!(h.q(Grain::Day, T0, "cheap").thumbs_down, 1);
}

#[test]
fn state_survives_a_restore_round_trip() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.f(feedback("f1", "x", Some(0), T0, FeedbackKind::ThumbsUp, None));
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    let entries: Vec<_> = h.j.take_dirty().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let mut restored = PartitionJoin::restore(entries, h.j.watermark_ms()).unwrap();
    assert_eq!(restored.pending_outcomes(), 1);
    let mut out = Deltas::default();
    let mut n = JoinCounters::default();
    // A duplicate of an already applied decision is still recognised after the restore…
    restored.apply_decision(&h.s, &mut decision("e1", "c", 0, T0, "cheap"), &mut out, &mut n).unwrap();
    assert_eq!(n.duplicates, 1);
    // …the waiting feedback still finds its decision…
    restored.apply_decision(&h.s, &mut decision("e9", "x", 0, T0, "cheap"), &mut out, &mut n).unwrap();
    let key = QualityKey { grain: Grain::Day, bucket_ms: T0, dims: restored.convs["x"].turns()[0].dims.clone() };
    assert_eq!(out.quality[&key].thumbs_up, 1);
    // …and the conversation's single failed deflection is remembered.
    restored.advance_watermark(T0 + 2 * HOUR_MS);
    restored
        .apply_ticket(
            &h.s,
            &ticket("o2", "T2", Some("c"), T0 + 2 * HOUR_MS, TicketStatus::Opened, None),
            &mut out,
            &mut n,
        )
        .unwrap();
    let c_key = QualityKey { grain: Grain::Day, bucket_ms: T0, dims: restored.convs["c"].turns()[0].dims.clone() };
    assert_eq!(out.quality[&c_key].failed_deflections, 0);
    assert_eq!(out.quality[&c_key].attributed_tickets, 1);
}

#[test]
fn finished_conversations_are_forgotten_after_window_and_grace() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.sweep_at(T0 + (72 + 24) * HOUR_MS);
    assert_eq!(h.j.open_conversations(), 1);
    h.sweep_at(T0 + (72 + 24) * HOUR_MS + 1);
    assert_eq!(h.j.open_conversations(), 0);
    let dirty = h.j.take_dirty();
    assert!(dirty.iter().any(|(k, v)| k == "c:c" && v.is_none()), "deletion must be persisted");
}

#[test]
fn dropped_dimensions_are_blank() {
    let mut h = Harness::new();
    h.s.keep.clear();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    let k = h.out.quality.keys().next().unwrap();
    assert_eq!((k.dims.model.as_str(), k.dims.segment.as_str(), k.dims.tier.as_str()), ("", "", "cheap"));
}

#[test]
fn capable_cost_from_price_table_when_null() {
    let mut h = Harness::new();
    h.s.capable_usd_per_input_token = Some(3.0 / 1e6);
    h.s.capable_usd_per_output_token = Some(15.0 / 1e6);
    let mut d = decision("e1", "c", 0, T0, "cheap");
    d.capable_cost_usd = None;
    h.d(d);
    // 100 × 3e-6 + 50 × 15e-6 = 0.00105 USD
    assert_eq!(h.q(Grain::Day, T0, "cheap").capable_cost_nusd, 1_050_000);
}

#[test]
fn time_based_attribution_waits_for_the_watermark() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "capable"));
    // The ticket is read before the routing topic has delivered everything up to its time.
    h.j.apply_ticket(
        &h.s,
        &ticket("o1", "T1", Some("c"), T0 + 10 * HOUR_MS, TicketStatus::Opened, None),
        &mut h.out,
        &mut h.n,
    )
    .unwrap();
    h.j.apply_feedback(
        &h.s,
        &feedback("f1", "c", None, T0 + 9 * HOUR_MS, FeedbackKind::ThumbsDown, None),
        &mut h.out,
        &mut h.n,
    )
    .unwrap();
    assert_eq!(h.j.pending_outcomes(), 2, "not attributable yet: a later turn may still arrive");
    h.d(decision("e2", "c", 1, T0 + 2 * HOUR_MS, "cheap"));
    assert_eq!(h.j.pending_outcomes(), 2);
    h.j.advance_watermark(T0 + 10 * HOUR_MS);
    h.j.release_due(&h.s, &mut h.out);
    assert_eq!(h.j.pending_outcomes(), 0);
    let cheap = h.q(Grain::Day, T0, "cheap");
    assert_eq!((cheap.failed_deflections, cheap.thumbs_down), (1, 1), "both go to the latest turn before them");
    assert_eq!(h.q(Grain::Day, T0, "capable").failed_deflections, 0);
}

#[test]
fn waiting_outcomes_survive_restore_and_release_later() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0, "cheap"));
    h.j.apply_ticket(
        &h.s,
        &ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None),
        &mut h.out,
        &mut h.n,
    )
    .unwrap();
    let entries: Vec<_> = h.j.take_dirty().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let mut j = PartitionJoin::restore(entries, h.j.watermark_ms()).unwrap();
    let mut out = Deltas::default();
    j.advance_watermark(T0 + HOUR_MS);
    j.release_due(&h.s, &mut out);
    let fd: i64 = out.quality.iter().filter(|(k, _)| k.grain == Grain::Day).map(|(_, v)| v.failed_deflections).sum();
    assert_eq!(fd, 1);
}

/// Drift conversation counts (the histograms' effective sample size) by classifier version.
fn drift_conversations(out: &Deltas, version: &str) -> i64 {
    out.conf.iter().filter(|(k, _)| k.classifier_version == version).map(|(_, c)| c.conversations).sum()
}

#[test]
fn drift_counts_a_conversation_once_per_day_and_series() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0 + HOUR_MS, "cheap"));
    h.d(decision("e2", "c", 1, T0 + 5 * HOUR_MS, "capable"));
    assert_eq!(drift_conversations(&h.out, "v1"), 1, "same day, same series: once");
    h.d(decision("e3", "c", 2, T0 + DAY_MS + HOUR_MS, "cheap"));
    assert_eq!(drift_conversations(&h.out, "v1"), 2, "a new day counts again");
    let mut other = decision("e4", "c", 3, T0 + DAY_MS + 2 * HOUR_MS, "cheap");
    other.classifier_version = "v2".into();
    h.d(other);
    assert_eq!(drift_conversations(&h.out, "v2"), 1, "another classifier version is another series");
    assert_eq!(drift_conversations(&h.out, "v1"), 2);
}

#[test]
fn turns_share_one_copy_of_their_dims_also_after_restore() {
    let mut h = Harness::new();
    for (i, conv) in ["a", "b", "c"].iter().enumerate() {
        h.d(decision(&format!("e{i}"), conv, 0, T0 + i as i64, "cheap"));
    }
    let first = h.j.convs["a"].turns()[0].dims.clone();
    assert!(Arc::ptr_eq(&first, &h.j.convs["c"].turns()[0].dims));
    let entries: Vec<_> = h.j.take_dirty().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let restored = PartitionJoin::restore(entries, h.j.watermark_ms()).unwrap();
    let a = &restored.convs["a"].turns()[0].dims;
    assert_eq!(**a, *first);
    assert!(Arc::ptr_eq(a, &restored.convs["b"].turns()[0].dims));
    assert_eq!(restored.dims_pool.len(), 1);
}

#[test]
fn state_written_before_turns_carried_their_hashes_restores() {
    // The persisted shape of an older daemon: decision hashes in `s`, drift days in `dd`, turns
    // without `h`/`v`. Restoring it must keep duplicates out and counts single.
    let d = decision("e1", "c", 0, T0 + HOUR_MS, "cheap");
    let series = xxhash_rust::xxh3::xxh3_64_with_seed(d.classifier_version.as_bytes(), u64::from(d.router.index()));
    let dims = serde_json::json!({"tier": "cheap", "model": "cheap-model", "classifier_version": "v1",
        "router": "pre_route", "segment": "smb", "intent": ""});
    let old = serde_json::json!({"t": [{"k": 0, "ts": T0 + HOUR_MS, "d": dims}], "s": [event_hash("e1")],
        "f": true, "p": [], "dd": [[T0, series]]});
    let entries = vec![(conv_key("c"), serde_json::to_vec(&old).unwrap())];
    let mut j = PartitionJoin::restore(entries, T0 + HOUR_MS).unwrap();
    let (s, mut out, mut n) = (JoinSettings::default(), Deltas::default(), JoinCounters::default());
    j.apply_decision(&s, &mut d.clone(), &mut out, &mut n).unwrap();
    assert_eq!((n.duplicates, n.decisions), (1, 0));
    j.apply_decision(&s, &mut decision("e2", "c", 1, T0 + 2 * HOUR_MS, "cheap"), &mut out, &mut n).unwrap();
    assert_eq!(n.decisions, 1);
    assert_eq!(drift_conversations(&out, "v1"), 0, "already counted that day by the older daemon");
    assert!(j.convs["c"].failed_deflection());
    // Written back (in the binary form), the older entries survive next to the new turn's own hash.
    let (key, written) = j.take_dirty().remove(0);
    let written = written.unwrap();
    assert_eq!(written[0], CONV_BINARY_V1);
    let again = PartitionJoin::restore(vec![(key, written)], j.watermark_ms()).unwrap();
    let c = &again.convs["c"];
    assert_eq!(c, &j.convs["c"]);
    assert!(c.has_seen(event_hash("e1")) && c.feedback_seen() == 1, "the older decision hash is kept in `s`");
    assert_eq!(c.turns()[1].event_hash, event_hash("e2"));
    assert!(c.failed_deflection());
    assert!(c.counted_for_drift(T0, series));
}

/// Settings with small cardinality bounds.
fn capped_settings() -> JoinSettings {
    let limits = JoinLimits {
        max_tiers: 2,
        max_dimension_values: 3,
        max_turns_per_conversation: 4,
        max_feedback_per_conversation: 2,
        max_events_per_ticket: 3,
    };
    JoinSettings {
        keep: [Dimension::Model, Dimension::ClassifierVersion, Dimension::Segment, Dimension::Intent].into(),
        limits,
        ..JoinSettings::default()
    }
}

/// Decision `i` of a stream with a new model every decision and a new tier every 7th.
fn bogus(i: usize) -> RoutingDecision {
    let mut d = decision(&format!("e{i}"), &format!("c{i}"), 0, T0 + i as i64 * 1000, "cheap");
    d.model = format!("model-{i}");
    if i % 7 == 3 {
        d.tier = format!("tier-{i}");
    }
    d
}

/// Day-grain decisions by model, summed over the other dimensions.
fn decisions_by_model(out: &Deltas) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for (k, v) in out.quality.iter().filter(|(k, _)| k.grain == Grain::Day) {
        *m.entry(k.dims.model.clone()).or_default() += v.decisions;
    }
    m
}

fn persisted(j: &mut PartitionJoin, store: &mut BTreeMap<String, Vec<u8>>) {
    for (k, v) in j.take_dirty() {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
}

#[test]
fn values_beyond_the_cap_go_to_the_overflow_bucket_and_are_counted() {
    let mut h = Harness::new();
    h.s = capped_settings();
    for i in 0..100 {
        h.d(bogus(i));
    }
    let by_model = decisions_by_model(&h.out);
    assert_eq!(by_model.len(), 4, "three admitted models and the bucket: {by_model:?}");
    assert_eq!(by_model[OVERFLOW], 97);
    assert_eq!(by_model.values().sum::<i64>(), 100, "totals stay exact");
    assert_eq!(h.n.capped, [13, 97, 0, 0, 0], "cheap and tier-3 admitted, 13 more tiers bucketed; 97 models");
    let tiers: BTreeSet<&str> = h.out.tier_day.keys().map(|(_, t)| t.as_str()).collect();
    assert_eq!(tiers, ["cheap", "tier-3", OVERFLOW].into());
    assert_eq!(h.j.admitted().count(0), 2);
    // The capable tier is always admitted, even with every tier slot taken.
    h.d(decision("cap", "cap", 0, T0 + 200_000, "capable"));
    assert!(h.out.tier_day.keys().any(|(_, t)| t == "capable"));
    assert_eq!(h.n.capped[0], 13);
    // A producer sending the literal itself is counted as overflow, never admitted.
    let mut d = decision("lit", "lit", 0, T0 + 300_000, "cheap");
    d.classifier_version = OVERFLOW.into();
    h.d(d);
    assert_eq!(h.n.capped[2], 1);
    assert_eq!(h.j.admitted().count(2), 1, "only v1");
}

#[test]
fn a_flood_of_bogus_values_keeps_rows_and_state_bounded() {
    let mut h = Harness::new();
    h.s = capped_settings();
    for i in 0..20_000 {
        let mut d = bogus(i);
        d.tier = format!("tier-{i}");
        d.segment = Some(format!("seg-{i}"));
        d.intent = Some(format!("intent-{i}"));
        d.classifier_version = format!("v-{i}");
        h.d(d);
        if i % 5_000 == 0 {
            h.j.take_dirty();
        }
    }
    let day_rows = h.out.quality.keys().filter(|k| k.grain == Grain::Day).count();
    // Every dimension has at most 3 admitted values + the bucket, the tier 2 + the bucket.
    assert!(day_rows <= 3 * 4 * 4 * 4 * 4, "{day_rows} day rows");
    assert_eq!(h.n.capped, [20_000 - 2, 20_000 - 3, 20_000 - 3, 20_000 - 3, 20_000 - 3]);
    let conf_versions: BTreeSet<&str> = h.out.conf.keys().map(|k| k.classifier_version.as_str()).collect();
    assert_eq!(conf_versions.len(), 4, "drift series are bounded too: {conf_versions:?}");
    let admitted = h.j.take_dirty().into_iter().find(|(k, _)| k == ADMITTED_KEY);
    assert!(admitted.is_none(), "nothing admitted since the caps filled: the entry is not rewritten");
}

#[test]
fn dropped_dimensions_are_not_capped() {
    let mut h = Harness::new();
    h.s = JoinSettings { keep: HashSet::new(), ..capped_settings() };
    for i in 0..10 {
        h.d(bogus(i));
    }
    assert_eq!(h.n.capped[1], 0, "model is dropped (''), not bucketed");
    assert_eq!(decisions_by_model(&h.out)[""], 10);
}

#[test]
fn admission_survives_restarts_exactly() {
    let s = capped_settings();
    let events: Vec<RoutingDecision> = (0..60).map(bogus).collect();
    // Uninterrupted.
    let mut whole = Harness::new();
    whole.s = s.clone();
    for d in &events {
        whole.d(d.clone());
    }
    // Committed in batches of 7; after each commit a crash loses an uncommitted half batch of
    // later events (applied in memory, never committed), and the partition is restored from what
    // was committed and re-reads from there.
    let mut store = BTreeMap::new();
    let (mut out, mut n) = (Deltas::default(), JoinCounters::default());
    let mut j = PartitionJoin::new();
    for chunk in events.chunks(7) {
        let (mut lost_out, mut lost_n) = (Deltas::default(), JoinCounters::default());
        for d in events.iter().rev().take(4) {
            j.apply_decision(&s, &mut d.clone(), &mut lost_out, &mut lost_n).unwrap();
        }
        j = PartitionJoin::restore(store.clone().into_iter().collect(), 0).unwrap();
        let mut batch = Deltas::default();
        for d in chunk {
            j.apply_decision(&s, &mut d.clone(), &mut batch, &mut n).unwrap();
        }
        persisted(&mut j, &mut store);
        out.merge(&batch);
    }
    assert_eq!(decisions_by_model(&out), decisions_by_model(&whole.out));
    assert_eq!(out.quality, whole.out.quality);
    assert_eq!(n.capped, whole.n.capped);
    assert_eq!(j.admitted(), whole.j.admitted());
    assert!(store.contains_key(ADMITTED_KEY));
}

#[test]
fn turns_feedback_and_ticket_events_are_bounded_per_conversation() {
    let mut h = Harness::new();
    h.s = capped_settings();
    for k in 0..4 {
        h.d(decision(&format!("e{k}"), "c", k, T0 + k as i64, "cheap"));
    }
    assert_eq!(h.try_d(decision("e4", "c", 4, T0 + 4, "cheap")), Err(JoinReject::TooManyTurns(4)));
    assert_eq!(h.try_d(decision("e0", "c", 0, T0, "cheap")), Ok(()), "a duplicate is still a duplicate");
    assert_eq!((h.n.decisions, h.n.duplicates), (4, 1));
    assert_eq!(h.q(Grain::Day, T0, "cheap").decisions, 4, "the refused turn applied nothing");
    assert_eq!(h.j.convs["c"].turns().len(), 4);

    h.f(feedback("f0", "c", Some(0), T0 + 10, FeedbackKind::ThumbsUp, None));
    h.f(feedback("f1", "c", Some(1), T0 + 10, FeedbackKind::ThumbsUp, None));
    let third = feedback("f2", "c", Some(2), T0 + 10, FeedbackKind::ThumbsDown, None);
    assert_eq!(h.try_f(third), Err(JoinReject::TooManyFeedback(2)));
    assert_eq!(h.q(Grain::Day, T0, "cheap").thumbs_down, 0);
    assert_eq!(h.n.feedback, 2);

    for i in 0..3 {
        h.t(ticket(&format!("r{i}"), "T", None, T0 + 20, TicketStatus::Resolved, Some(1.0)));
    }
    let fourth = ticket("r3", "T", None, T0 + 20, TicketStatus::Resolved, Some(1.0));
    assert_eq!(h.try_t(fourth), Err(JoinReject::TooManyTicketEvents(3)));
    assert_eq!(h.j.pending_outcomes(), 3, "the refused RESOLVED did not wait");
    assert_eq!(JoinReject::TooManyTurns(4).reason(), "conversation_turn_limit");

    // The bounds hold across a restore.
    let entries: Vec<_> = h.j.take_dirty().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let mut j = PartitionJoin::restore(entries, h.j.watermark_ms()).unwrap();
    let mut d = decision("e5", "c", 5, T0 + 5, "cheap");
    assert!(j.apply_decision(&h.s, &mut d, &mut h.out, &mut h.n).is_err());
}

#[test]
fn json_state_of_the_previous_version_restores_and_is_rewritten_in_the_binary_form() {
    // The JSON the version before the binary form wrote: dims as an array, every turn field.
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0 + HOUR_MS, "cheap"));
    h.f(feedback("f1", "c", Some(7), T0 + HOUR_MS + 5, FeedbackKind::ThumbsDown, None));
    let turn = &h.j.convs["c"].turns()[0];
    let d = &turn.dims;
    let pending = h.j.convs["c"].pending().to_vec();
    assert_eq!(pending.len(), 1, "feedback for a turn not yet seen waits");
    let json = serde_json::json!({
        "t": [{"k": turn.turn, "ts": turn.ts, "h": turn.event_hash, "v": turn.tags.series(), "c": turn.tags.cell(),
               "d": [&d.tier, &d.model, &d.classifier_version, &d.router, &d.segment, &d.intent]}],
        "s": [event_hash("f1")], "f": false, "p": pending});
    let restored =
        PartitionJoin::restore(vec![(conv_key("c"), serde_json::to_vec(&json).unwrap())], h.j.watermark_ms()).unwrap();
    assert_eq!(restored.convs["c"], h.j.convs["c"]);
    assert_eq!(restored.pending_outcomes(), 1);

    // The binary form of the same state restores to the same state, and is smaller.
    let binary = h.j.convs["c"].to_bytes().unwrap();
    assert_eq!(binary[0], CONV_BINARY_V1);
    assert!(binary.len() < serde_json::to_vec(&json).unwrap().len() / 2, "{} bytes", binary.len());
    let again = PartitionJoin::restore(vec![(conv_key("c"), binary)], h.j.watermark_ms()).unwrap();
    assert_eq!(again.convs["c"], h.j.convs["c"]);
    assert!(Arc::ptr_eq(&again.convs["c"].turns()[0].dims, &again.dims_pool.values().next().unwrap().clone()));
}

#[test]
fn a_damaged_or_unknown_conversation_entry_is_an_error_not_a_guess() {
    let mut h = Harness::new();
    h.d(decision("e1", "c", 0, T0 + HOUR_MS, "cheap"));
    let good = h.j.convs["c"].to_bytes().unwrap();
    let restore =
        |bytes: Vec<u8>| PartitionJoin::restore(vec![(conv_key("c"), bytes)], T0).map(|_| ()).map_err(|e| e.reason);
    assert!(restore(good.clone()).is_ok());
    let truncated = good[..good.len() - 3].to_vec();
    assert!(matches!(restore(truncated), Err(StateDecodeError::Binary(_))));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(restore(longer), Err(StateDecodeError::TrailingBytes(1))));
    let mut newer = good;
    newer[0] = 0x02;
    let e = restore(newer).unwrap_err();
    assert!(matches!(e, StateDecodeError::UnknownFormat(0x02)));
    assert!(e.to_string().contains("0x02"), "{e}");
    assert!(matches!(restore(b"{\"t\": 3}".to_vec()), Err(StateDecodeError::Json(_))));
    // The error names the entry, once.
    let e = PartitionJoin::restore(vec![(conv_key("c"), vec![0x02])], T0).unwrap_err().to_string();
    assert_eq!(e, format!("join state entry {:?}: {}", conv_key("c"), StateDecodeError::UnknownFormat(2)));
}

/// Sum of the router-evaluation cells of a batch: (decisions, failures, failed deflections, Σconf·1e4).
fn calib_totals(out: &Deltas) -> (i64, i64, i64, i64) {
    out.calib
        .values()
        .fold((0, 0, 0, 0), |a, c| (a.0 + c.decisions, a.1 + c.failures, a.2 + c.failed_deflections, a.3 + c.conf_e4))
}

#[test]
fn a_turn_fails_once_in_its_confidence_cell_whatever_reports_it() {
    let mut h = Harness::new();
    let mut d = decision("e1", "c", 0, T0, "cheap");
    d.confidence = 0.8765;
    h.d(d);
    h.d(decision("e2", "c", 1, T0 + 1000, "cheap"));
    assert_eq!(calib_totals(&h.out), (2, 0, 0, 8765 + 9000));
    let cell_of =
        |out: &Deltas, cell: u8| out.calib.iter().filter(|(k, _)| k.cell == cell).map(|(_, v)| *v).collect::<Vec<_>>();
    assert_eq!(cell_of(&h.out, 87).len(), 1);
    // Turn 0: a thumbs-down, then a wrong-intent review: one failure.
    h.f(feedback("f1", "c", Some(0), T0 + 2000, FeedbackKind::ThumbsDown, None));
    h.f(feedback("f2", "c", Some(0), T0 + 3000, FeedbackKind::HumanReview, Some(0.0)));
    // A review that found the answer right is no failure.
    h.f(feedback("f3", "c", Some(1), T0 + 3000, FeedbackKind::HumanReview, Some(1.0)));
    assert_eq!(calib_totals(&h.out).1, 1);
    assert_eq!(cell_of(&h.out, 87)[0].failures, 1);
    // A ticket after the last turn: a failed deflection of turn 1, which now fails too.
    h.t(ticket("o1", "T1", Some("c"), T0 + HOUR_MS, TicketStatus::Opened, None));
    h.j.advance_watermark(T0 + 2 * HOUR_MS);
    h.j.release_due(&h.s, &mut h.out);
    assert_eq!(calib_totals(&h.out), (2, 2, 1, 8765 + 9000));
    assert_eq!(cell_of(&h.out, 90)[0].failed_deflections, 1);

    // The flags survive a restore: a later thumbs-down on either turn adds no failure.
    let entries: Vec<_> = h.j.take_dirty().into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let mut restored = PartitionJoin::restore(entries, h.j.watermark_ms()).unwrap();
    assert!(restored.convs["c"].turns().iter().all(|t| t.tags.failed()));
    assert_eq!(restored.convs["c"].turns()[0].tags.cell(), 87);
    let mut out = Deltas::default();
    let mut n = JoinCounters::default();
    restored
        .apply_feedback(
            &h.s,
            &feedback("f4", "c", Some(1), T0 + 3 * HOUR_MS, FeedbackKind::ThumbsDown, None),
            &mut out,
            &mut n,
        )
        .unwrap();
    assert_eq!(calib_totals(&out), (0, 0, 0, 0));
}

#[test]
fn turns_of_older_state_have_no_confidence_cell() {
    // A turn written before cells existed (no `c`): restored as unknown, and its outcomes are
    // counted in the quality rows but in no cell.
    let json = br#"{"t":[{"k":0,"ts":1700000000000,"d":["cheap","m","v1","PRE_ROUTE","",""],"h":7,"v":4294967295}],"f":false}"#;
    let j = PartitionJoin::restore(vec![("c:old".into(), json.to_vec())], 1_700_000_000_000).unwrap();
    let t = &j.convs["old"].turns()[0];
    assert_eq!(t.tags.cell(), crate::metrics::CALIB_CELL_UNKNOWN);
    assert_eq!(t.tags.series(), 0x00ff_ffff, "older 32-bit series keep the bits that are compared");
    assert!(!t.tags.failed());
}

/// The outcomes and aggregates of a partition whose watermark lags far behind its data (a
/// replay's catch-up, or a backlog): turns over five days, tickets inside and outside W,
/// turn-less feedback and tickets waiting for the watermark, feedback and a ticket whose decision
/// never comes, a RESOLVED without its OPENED, a review days after its turn.
fn lagging_partition() -> Harness {
    let mut h = Harness::new();
    h.s.lateness_ms = 2 * HOUR_MS;
    h.j.advance_watermark(T0);
    h.lagging = true;
    for i in 0..40 {
        let (c, ts) = (format!("c{i}"), T0 + i as i64 * 3 * HOUR_MS);
        let tier = if i % 3 == 0 { "capable" } else { "cheap" };
        if i % 7 == 3 {
            // Feedback before its decision.
            h.f(feedback(&format!("fe{i}"), &c, Some(0), ts - HOUR_MS, FeedbackKind::ThumbsUp, None));
        }
        h.d(decision(&format!("d{i}"), &c, 0, ts, tier));
        if i % 4 == 1 {
            h.d(decision(&format!("e{i}"), &c, 1, ts + 30 * 60_000, tier));
        }
        let tid = format!("T{i}");
        match i % 5 {
            0 => h.t(ticket(&format!("o{i}"), &tid, Some(&c), ts + 5 * HOUR_MS, TicketStatus::Opened, None)),
            1 => h.t(ticket(&format!("o{i}"), &tid, Some(&c), ts + 80 * HOUR_MS, TicketStatus::Opened, None)),
            2 => h.t(ticket(&format!("r{i}"), &tid, None, ts + HOUR_MS, TicketStatus::Resolved, Some(4.0))),
            _ => {}
        }
        if i % 5 == 0 {
            h.t(ticket(&format!("r{i}"), &tid, Some(&c), ts + 9 * HOUR_MS, TicketStatus::Resolved, Some(6.5)));
        }
        if i % 6 == 2 {
            h.f(feedback(&format!("f{i}"), &c, None, ts + 2 * HOUR_MS, FeedbackKind::ThumbsDown, None));
        }
        if i % 8 == 5 {
            h.f(feedback(&format!("v{i}"), &c, Some(0), ts + 110 * HOUR_MS, FeedbackKind::HumanReview, Some(0.0)));
        }
        if i % 9 == 4 {
            let ghost = format!("ghost{i}");
            h.f(feedback(&format!("g{i}"), &ghost, None, ts, FeedbackKind::Csat, Some(2.0)));
            h.t(ticket(&format!("go{i}"), &format!("G{i}"), Some(&ghost), ts, TicketStatus::Opened, None));
        }
    }
    h
}

#[test]
fn the_final_pass_moving_straight_to_its_watermark_equals_stepping() {
    let end = T0 + 40 * DAY_MS;
    // Stepping as the batches do: at most a day per step, each followed by a commit.
    let mut stepped = lagging_partition();
    let mut stepped_store = BTreeMap::new();
    let waiting = stepped.j.pending_outcomes();
    assert!(waiting > 20, "{waiting} outcomes wait: the walk has work to do");
    let mut wm = T0;
    while wm < end {
        wm = (wm + DAY_MS).min(end);
        stepped.j.advance_watermark(wm);
        stepped.j.release_due(&stepped.s, &mut stepped.out);
        stepped.j.sweep(&stepped.s, &mut stepped.out, false);
        persisted(&mut stepped.j, &mut stepped_store);
    }
    // The last pass before stopping: one move, one commit.
    let mut once = lagging_partition();
    let mut once_store = BTreeMap::new();
    once.j.advance_watermark(end);
    once.j.release_due(&once.s, &mut once.out);
    once.j.sweep(&once.s, &mut once.out, false);
    persisted(&mut once.j, &mut once_store);

    assert_eq!(stepped_store, once_store, "join state");
    assert_eq!(stepped.j.pending_outcomes(), 0);
    assert_eq!(once.j.pending_outcomes(), 0);
    let (a, b) = (&stepped.out, &once.out);
    assert_eq!(a.quality, b.quality);
    assert_eq!(a.human, b.human);
    assert_eq!(a.orphans, b.orphans);
    assert_eq!(a.calib_rows(), b.calib_rows());
    assert_eq!(a.latency, b.latency);
    assert_eq!(a.tier_day, b.tier_day);
    // Not vacuous: the walk attributed, expired and orphaned.
    for kind in [OrphanKind::Feedback, OrphanKind::Ticket, OrphanKind::ResolvedWithoutOpened] {
        assert!(once.orphans(kind) > 0, "{kind:?}");
    }
    let failed: i64 = b.quality.iter().filter(|(k, _)| k.grain == Grain::Day).map(|(_, v)| v.failed_deflections).sum();
    let reviews: i64 = b.quality.iter().filter(|(k, _)| k.grain == Grain::Day).map(|(_, v)| v.reviews_n).sum();
    assert!(failed > 0 && reviews > 0, "failed deflections {failed}, reviews {reviews}");
    assert!(stepped_store.keys().all(|k| !k.starts_with("c:")), "every conversation expired");
}
