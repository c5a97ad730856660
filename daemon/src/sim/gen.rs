//! The per-conversation generative model (see the parameter tables in [`super`]).

use std::cmp::Ordering;

use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, SupportTicket, TicketStatus};

use super::rng::{mix64, Rng};
use super::text::{self, Topic, FOLLOW_COMPLEX, FOLLOW_SIMPLE, FOLLOW_SURFACE, HIDDEN, INTENTS};
use super::{Complexity, GroundTruth, Scenario, SimConfig};

pub(crate) const MINUTE: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;
pub(crate) const DAY: i64 = 86_400_000;

/// How a turn reads to a text model: what drives router confidence and the cheap model's odds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Simple,
    Complex,
    /// Complex intent, simple surface.
    Hidden,
}

impl Reads {
    fn idx(self) -> usize {
        match self {
            Reads::Simple => 0,
            Reads::Complex => 1,
            Reads::Hidden => 2,
        }
    }
}

/// Query-type mix (simple, overt complex, hidden complex): established traffic and new cohort.
pub(crate) const MIX_BASE: [f64; 3] = [0.65, 0.31, 0.04];
/// New cohort: overtly complex share; the hidden-complex share ramps (see [`super::Drift`]) and
/// the rest is simple.
const COHORT_COMPLEX: f64 = 0.17;

/// PRE_ROUTE router: logit of P(simple) ~ N(mu, sd) by how the query reads, established vs
/// new-product traffic (out of the router's training distribution: squeezed towards the middle).
const ROUTER_BASE: [(f64, f64); 3] = [(2.0, 0.9), (-1.3, 1.1), (1.7, 0.9)];
const ROUTER_COHORT: [(f64, f64); 3] = [(0.25, 0.6), (-0.3, 0.7), (0.95, 0.55)];
/// CASCADE: logit of the cheap model's self-confidence (confidently wrong on hidden complexity).
const SELF_BASE: [(f64, f64); 3] = [(2.4, 0.8), (-1.2, 0.9), (1.9, 0.8)];
const SELF_COHORT: [(f64, f64); 3] = [(1.8, 0.8), (-0.6, 1.0), (1.8, 0.8)];
/// Turn-to-turn noise of the logit within a conversation.
const TURN_SD: f64 = 0.5;

/// P(answer fails the real intent) by tier and how the query reads.
const FAIL_CHEAP: [f64; 3] = [0.025, 0.60, 0.75];
const FAIL_CHEAP_COHORT_SIMPLE: f64 = 0.04;
const FAIL_CAPABLE: [f64; 3] = [0.01, 0.07, 0.15];

/// P(ticket) for an unresolved conversation (last answer failed), by true complexity kind.
const TICKET_UNRESOLVED: [f64; 3] = [0.45, 0.50, 0.60];
/// P(ticket) for a resolved conversation (human action needed anyway).
const TICKET_RESOLVED: [f64; 3] = [0.012, 0.10, 0.10];
/// Share of tickets the support system links to the AI conversation.
pub(crate) const TICKET_LINKED: f64 = 0.92;
/// Ticket delay after the last answer: log-normal with this median and σ (clamped to 10 min–30 d).
pub(crate) const TICKET_DELAY_MEDIAN_HOURS: f64 = 16.0;
pub(crate) const TICKET_DELAY_SIGMA: f64 = 0.95;

/// Feedback rates.
const THUMBS_DOWN_FAILED: f64 = 0.025;
const THUMBS_DOWN_OK: f64 = 0.001;
const THUMBS_UP_FAILED: f64 = 0.02;
const THUMBS_UP_OK: f64 = 0.05;
const THUMBS_CONVERSATION_LEVEL: f64 = 0.1;
const CSAT_RATE: f64 = 0.06;
const REVIEW_RATE: f64 = 0.004;
const REVIEWER_ERROR: f64 = 0.03;

/// Turns per conversation (1..=4) by true kind.
const TURNS: [[f64; 4]; 3] = [[0.50, 0.27, 0.15, 0.08], [0.35, 0.30, 0.20, 0.15], [0.55, 0.25, 0.13, 0.07]];
/// P(a follow-up of a hidden-complex conversation reveals the real intent).
const REVEAL: f64 = 0.4;
/// P(the router's intent label is a wrong intent of the same topic) / P(no label).
const LABEL_WRONG: f64 = 0.07;
const LABEL_NONE: f64 = 0.03;

/// Hourly traffic profile (UTC), relative.
const HOURLY: [f64; 24] = [
    2.0, 1.5, 1.0, 1.0, 1.0, 1.5, 2.5, 4.0, 6.0, 7.0, 7.5, 7.5, 7.0, 7.0, 7.0, 6.5, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0,
    2.5,
];

const SEGMENTS: [&str; 3] = ["consumer", "smb", "enterprise"];
const SEG_BASE: [f64; 3] = [0.55, 0.30, 0.15];
const SEG_COHORT: [f64; 3] = [0.35, 0.60, 0.05];

pub(crate) const CHEAP_MODEL: &str = "small-1";
pub(crate) const CAPABLE_MODEL: &str = "large-1";
/// USD per token, capable model (the example config's 3 / 15 per million); cheap = 1/4.
const CAPABLE_IN: f64 = 3.0e-6;
const CAPABLE_OUT: f64 = 15.0e-6;
const CHEAP_FACTOR: f64 = 0.25;

/// An event waiting in the day merge, ordered by `(ts, origin day, conversation, sequence)`.
#[derive(Debug)]
pub(crate) struct Pending {
    pub ts: i64,
    pub day: u32,
    pub idx: u32,
    pub seq: u32,
    pub ev: Event,
}

impl Pending {
    fn key(&self) -> (i64, u32, u32, u32) {
        (self.ts, self.day, self.idx, self.seq)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Precomputed weights and constants of one run.
pub(crate) struct Gen<'a> {
    cfg: &'a SimConfig,
    start_ms: i64,
    horizon_ms: i64,
    tag: String,
    simple_w: [Vec<f64>; 2],
    complex_w: [Vec<f64>; 2],
    hidden_w: [Vec<f64>; 2],
    hidden_intent: Vec<usize>,
    hidden_surfaces: Vec<Vec<usize>>,
}

fn weights(f: impl Fn(&text::Intent) -> f64, complex: bool) -> Vec<f64> {
    INTENTS.iter().map(|i| if i.complex == complex { f(i) } else { 0.0 }).collect()
}

impl<'a> Gen<'a> {
    pub fn new(cfg: &'a SimConfig) -> Self {
        let start_ms = cfg.start_ms();
        let horizon_ms = start_ms + i64::from(cfg.days) * DAY + i64::from(cfg.drain_hours) * HOUR;
        let tag = format!("{:06x}", mix64(cfg.seed) >> 40);
        let hidden_intent = HIDDEN.iter().map(|h| text::intent_index(h.intent).unwrap_or(0)).collect();
        let hidden_surfaces =
            HIDDEN.iter().map(|h| h.surfaces.iter().filter_map(|s| text::intent_index(s)).collect()).collect();
        Gen {
            cfg,
            start_ms,
            horizon_ms,
            tag,
            simple_w: [weights(|i| i.w_base, false), weights(|i| i.w_cohort, false)],
            complex_w: [weights(|i| i.w_base, true), weights(|i| i.w_cohort, true)],
            hidden_w: [HIDDEN.iter().map(|h| h.w_base).collect(), HIDDEN.iter().map(|h| h.w_cohort).collect()],
            hidden_intent,
            hidden_surfaces,
        }
    }

    /// New-cohort share and the cohort's query mix at `t` days after the start.
    fn cohort(&self, t_days: f64) -> (f64, [f64; 3]) {
        match &self.cfg.drift {
            None => (0.0, MIX_BASE),
            Some(d) => {
                let since = t_days - f64::from(d.start_day);
                if since <= 0.0 {
                    return (0.0, MIX_BASE);
                }
                let share = (d.per_week * since / 7.0).clamp(0.0, d.max_share);
                let ramp = if d.hidden_ramp_weeks > 0.0 { (since / 7.0 / d.hidden_ramp_weeks).min(1.0) } else { 1.0 };
                let hidden = (d.hidden_start + (d.hidden_end - d.hidden_start) * ramp).clamp(0.0, 1.0 - COHORT_COMPLEX);
                (share, [1.0 - COHORT_COMPLEX - hidden, COHORT_COMPLEX, hidden])
            }
        }
    }

    /// All events (ts < horizon) and ground truth of the conversations starting on `day`, plus the
    /// day's unlinked tickets.
    pub fn day(&self, day: u32, out: &mut Vec<Pending>, truth: &mut Vec<GroundTruth>) {
        let k = self.cfg.conversations_per_day;
        for idx in 0..k {
            self.conversation(day, idx, out, truth);
        }
        let mut r = Rng::derive(self.cfg.seed, &[u64::from(day), u64::MAX, 7]);
        let want = f64::from(k) * self.cfg.unlinked_ticket_rate;
        let n = want.floor() as u32 + u32::from(r.bool(want - want.floor()));
        for j in 0..n {
            let mut tr = Rng::derive(self.cfg.seed, &[u64::from(day), u64::MAX, 8, u64::from(j)]);
            let opened = self.day_start(day) + time_of_day(&mut tr);
            let topic = *tr.pick(&UNLINKED_TOPICS).unwrap_or(&Topic::Billing);
            let ticket_id = format!("TCK-{}-{day:03}-u{j:05}", self.tag);
            let mut seq = 0;
            self.ticket(&mut tr, day, k + j, &mut seq, ticket_id, None, opened, topic, out);
        }
    }

    fn day_start(&self, day: u32) -> i64 {
        self.start_ms + i64::from(day) * DAY
    }

    fn push(&self, out: &mut Vec<Pending>, day: u32, idx: u32, seq: &mut u32, ev: Event) -> bool {
        let ts = ev.ts();
        if ts >= self.horizon_ms {
            return false;
        }
        out.push(Pending { ts, day, idx, seq: *seq, ev });
        *seq += 1;
        true
    }

    fn conversation(&self, day: u32, idx: u32, out: &mut Vec<Pending>, truth: &mut Vec<GroundTruth>) {
        let cfg = self.cfg;
        let (d64, i64_) = (u64::from(day), u64::from(idx));
        // Traffic (what customers ask, when) is shared by all scenarios for a seed; routing and
        // outcomes draw from a second stream.
        let mut tr = Rng::derive(cfg.seed, &[d64, i64_, 1]);
        let mut rr = Rng::derive(cfg.seed, &[d64, i64_, 2]);
        let cascade = cfg.scenario == Scenario::Cascade;

        let tod = time_of_day(&mut tr);
        let start = self.day_start(day) + tod;
        let (share, cohort_mix) = self.cohort(f64::from(day) + tod as f64 / DAY as f64);
        let cohort = tr.f64() < share;
        let c = usize::from(cohort);
        let kind = match tr.weighted(if cohort { &cohort_mix } else { &MIX_BASE }) {
            0 => Reads::Simple,
            1 => Reads::Complex,
            _ => Reads::Hidden,
        };
        let (true_idx, surface_idx, hidden_no) = match kind {
            Reads::Simple => (tr.weighted(&self.simple_w[c]), None, None),
            Reads::Complex => (tr.weighted(&self.complex_w[c]), None, None),
            Reads::Hidden => {
                let h = tr.weighted(&self.hidden_w[c]);
                let surfaces = &self.hidden_surfaces[h];
                let s = *tr.pick(surfaces).unwrap_or(&0);
                (self.hidden_intent[h], Some(s), Some(h))
            }
        };
        let segment = SEGMENTS[tr.weighted(if cohort { &SEG_COHORT } else { &SEG_BASE })];
        let n_turns = 1 + tr.weighted(&TURNS[kind.idx()]);
        let conversation_id = format!("c-{}-{day:03}-{idx:05}", self.tag);
        let true_intent = INTENTS[true_idx].name;
        let complexity = if INTENTS[true_idx].complex { Complexity::Complex } else { Complexity::Simple };

        let (router, classifier_version, thr, models) = if cascade {
            (RouterKind::Cascade, "selfconf-1", cfg.cascade_threshold, (&SELF_BASE, &SELF_COHORT))
        } else {
            (RouterKind::PreRoute, cfg.classifier_version.as_str(), cfg.threshold, (&ROUTER_BASE, &ROUTER_COHORT))
        };
        let params = if cohort { models.1 } else { models.0 };

        let mut seq = 0u32;
        let mut ts = start;
        let mut revealed = false;
        let mut logit = f64::NAN;
        let mut prev_reads = None;
        let mut last: Option<(usize, i64, bool)> = None; // (truth index, answer end ts, failed)
        let mut text_buf = String::with_capacity(128);
        for k in 0..n_turns {
            // --- what the customer types ---
            text_buf.clear();
            let reads = match (kind, k) {
                (Reads::Hidden, 0) => {
                    let h = &HIDDEN[hidden_no.unwrap_or(0)];
                    let t = if tr.bool(0.5) {
                        tr.pick(INTENTS[surface_idx.unwrap_or(0)].templates)
                    } else {
                        tr.pick(h.cues)
                    };
                    text::fill(&mut tr, t.copied().unwrap_or(""), cohort, &mut text_buf);
                    Reads::Hidden
                }
                (Reads::Hidden, _) if !revealed && tr.bool(REVEAL) => {
                    revealed = true;
                    let h = &HIDDEN[hidden_no.unwrap_or(0)];
                    let t = tr.pick(h.reveals).copied().unwrap_or("");
                    text::fill(&mut tr, t, cohort, &mut text_buf);
                    Reads::Complex
                }
                (Reads::Hidden, _) if revealed => {
                    let t = tr.pick(FOLLOW_COMPLEX).copied().unwrap_or("");
                    text::fill(&mut tr, t, cohort, &mut text_buf);
                    Reads::Complex
                }
                (Reads::Hidden, _) => {
                    let t = if tr.bool(0.6) {
                        tr.pick(FOLLOW_SURFACE)
                    } else {
                        tr.pick(INTENTS[surface_idx.unwrap_or(0)].templates)
                    };
                    text::fill(&mut tr, t.copied().unwrap_or(""), cohort, &mut text_buf);
                    Reads::Hidden
                }
                (r, 0) => {
                    let t = tr.pick(INTENTS[true_idx].templates);
                    text::fill(&mut tr, t.copied().unwrap_or(""), cohort, &mut text_buf);
                    r
                }
                (r, _) => {
                    let follow = if r == Reads::Simple { FOLLOW_SIMPLE } else { FOLLOW_COMPLEX };
                    let t = if tr.bool(0.6) { tr.pick(follow) } else { tr.pick(INTENTS[true_idx].templates) };
                    text::fill(&mut tr, t.copied().unwrap_or(""), cohort, &mut text_buf);
                    r
                }
            };
            let styled = text::style(&mut tr, &text_buf, k == 0);
            let query = text::typos(&mut tr, styled, cfg.typo_rate);
            let redacted = tr.bool(cfg.redact_rate);
            if k > 0 {
                // Reading the answer, typing the next question.
                ts += (tr.lognormal(40_000.0, 0.7) as i64).clamp(4_000, 20 * MINUTE);
            }

            // --- routing ---
            let (mu, sd) = params[reads.idx()];
            logit = if prev_reads == Some(reads) { logit + rr.gauss(0.0, TURN_SD) } else { rr.gauss(mu, sd) };
            prev_reads = Some(reads);
            let confidence = round4(sigmoid(logit));
            let label = self.label(&mut rr, reads, true_idx, surface_idx);

            // An agent turn: system prompt and tool schemas, retrieved documents and tool
            // results over a few model calls, the conversation so far.
            let ctx = if reads == Reads::Complex { rr.lognormal(14_000.0, 0.4) } else { rr.lognormal(5_000.0, 0.35) };
            let in_tok = (6_000.0 + query.len() as f64 / 4.0 + ctx + 1_500.0 * k as f64).round();
            let out_cheap = if reads == Reads::Simple { rr.lognormal(220.0, 0.4) } else { rr.lognormal(320.0, 0.45) }
                .round()
                .max(8.0);
            let out_capable = if reads == Reads::Complex { rr.lognormal(650.0, 0.4) } else { rr.lognormal(260.0, 0.4) }
                .round()
                .max(8.0);
            let lat_cheap = 300.0 + in_tok * 0.02 + out_cheap * 4.0 * rr.lognormal(1.0, 0.2);
            let lat_capable = 700.0 + in_tok * 0.06 + out_capable * 10.0 * rr.lognormal(1.0, 0.2);
            let cost_capable = in_tok * CAPABLE_IN + out_capable * CAPABLE_OUT;
            let cheap_as_capable = in_tok * CAPABLE_IN + out_cheap * CAPABLE_OUT;
            let cost_cheap = CHEAP_FACTOR * cheap_as_capable;

            let cheap_tier = confidence >= thr;
            let (tier, model, escalated, latency, itok, otok, cost, capable_cost) = if cascade {
                if cheap_tier {
                    ("cheap", CHEAP_MODEL, false, lat_cheap, in_tok, out_cheap, cost_cheap, cheap_as_capable)
                } else {
                    (
                        "capable",
                        CAPABLE_MODEL,
                        true,
                        lat_cheap + lat_capable,
                        2.0 * in_tok,
                        out_cheap + out_capable,
                        cost_cheap + cost_capable,
                        cost_capable,
                    )
                }
            } else if cheap_tier {
                ("cheap", CHEAP_MODEL, false, lat_cheap, in_tok, out_cheap, cost_cheap, cheap_as_capable)
            } else {
                ("capable", CAPABLE_MODEL, false, lat_capable, in_tok, out_capable, cost_capable, cost_capable)
            };
            let p_fail_cheap =
                if reads == Reads::Simple && cohort { FAIL_CHEAP_COHORT_SIMPLE } else { FAIL_CHEAP[reads.idx()] };
            let p_fail_capable = FAIL_CAPABLE[reads.idx()];
            let p_fail = if cheap_tier { p_fail_cheap } else { p_fail_capable };
            let failed = rr.bool(p_fail);

            let event_id = format!("{conversation_id}/d{k}");
            let dec = RoutingDecision {
                event_id: event_id.clone(),
                conversation_id: conversation_id.clone(),
                turn: k as i32,
                ts,
                segment: Some(segment.to_owned()),
                query_text: if redacted { None } else { Some(query) },
                router,
                classifier_version: classifier_version.to_owned(),
                intent: label,
                confidence,
                threshold: Some(thr),
                tier: tier.to_owned(),
                model: model.to_owned(),
                escalated,
                latency_ms: (latency * 10.0).round() / 10.0,
                input_tokens: itok as i32,
                output_tokens: otok as i32,
                cost_usd: round_usd(cost),
                capable_cost_usd: Some(round_usd(capable_cost)),
            };
            if !self.push(out, day, idx, &mut seq, Event::Decision(dec)) {
                break; // later turns are beyond the horizon too
            }
            truth.push(GroundTruth {
                event_id,
                conversation_id: conversation_id.clone(),
                turn: k as i32,
                ts,
                true_intent: true_intent.to_owned(),
                true_complexity: complexity,
                hidden_complexity: reads == Reads::Hidden,
                new_cohort: cohort,
                tier: tier.to_owned(),
                answer_failed: failed,
                cheap_answer_failed: failed && cheap_tier,
                p_fail_cheap,
                p_fail_capable,
                p_ticket_unresolved: TICKET_UNRESOLVED[kind.idx()],
                p_ticket_resolved: TICKET_RESOLVED[kind.idx()],
                last_turn: false,
                ticket_id: None,
                ticket_linked: false,
            });
            let answered = ts + latency as i64;

            // --- per-turn feedback ---
            let (p_down, p_up) =
                if failed { (THUMBS_DOWN_FAILED, THUMBS_UP_FAILED) } else { (THUMBS_DOWN_OK, THUMBS_UP_OK) };
            let u = rr.f64();
            let thumbs = if u < p_down {
                Some(FeedbackKind::ThumbsDown)
            } else if u < p_down + p_up {
                Some(FeedbackKind::ThumbsUp)
            } else {
                None
            };
            if let Some(kind) = thumbs {
                let at = answered + (rr.lognormal(30_000.0, 0.8) as i64).clamp(1_000, 30 * MINUTE);
                let whole = rr.bool(THUMBS_CONVERSATION_LEVEL);
                let fb = Feedback {
                    event_id: format!("{conversation_id}/f{seq}"),
                    conversation_id: conversation_id.clone(),
                    turn: if whole { None } else { Some(k as i32) },
                    ts: at,
                    kind,
                    score: None,
                    source: Some("widget".to_owned()),
                };
                self.push(out, day, idx, &mut seq, Event::Feedback(fb));
            }
            if rr.bool(REVIEW_RATE) {
                let at = answered + rr.range(DAY, 5 * DAY);
                let correct = failed == rr.bool(REVIEWER_ERROR);
                let fb = Feedback {
                    event_id: format!("{conversation_id}/f{seq}"),
                    conversation_id: conversation_id.clone(),
                    turn: Some(k as i32),
                    ts: at,
                    kind: FeedbackKind::HumanReview,
                    score: Some(if correct { 1.0 } else { 0.0 }),
                    source: Some(format!("qa-reviewer-{}", rr.range(1, 6))),
                };
                self.push(out, day, idx, &mut seq, Event::Feedback(fb));
            }
            last = Some((truth.len() - 1, answered, failed));
            ts = answered;
        }

        let Some((last_truth, end, unresolved)) = last else { return };
        if let Some(t) = truth.get_mut(last_truth) {
            t.last_turn = true;
        }
        // --- conversation-level outcomes ---
        if rr.bool(CSAT_RATE) {
            let weights: [f64; 5] = if unresolved { [0.2, 0.2, 0.25, 0.2, 0.15] } else { [0.02, 0.03, 0.1, 0.3, 0.55] };
            let score = 1 + rr.weighted(&weights);
            let fb = Feedback {
                event_id: format!("{conversation_id}/f{seq}"),
                conversation_id: conversation_id.clone(),
                turn: None,
                ts: end + (rr.lognormal(1.5 * HOUR as f64, 1.0) as i64).clamp(5 * MINUTE, 3 * DAY),
                kind: FeedbackKind::Csat,
                score: Some(score as f64),
                source: Some("survey".to_owned()),
            };
            self.push(out, day, idx, &mut seq, Event::Feedback(fb));
        }
        let p_ticket = if unresolved { TICKET_UNRESOLVED[kind.idx()] } else { TICKET_RESOLVED[kind.idx()] };
        if rr.bool(p_ticket) {
            let delay = (rr.lognormal(TICKET_DELAY_MEDIAN_HOURS * HOUR as f64, TICKET_DELAY_SIGMA) as i64)
                .clamp(10 * MINUTE, 30 * DAY);
            let linked = rr.bool(TICKET_LINKED);
            let ticket_id = format!("TCK-{}-{day:03}-{idx:05}", self.tag);
            let conv = if linked { Some(conversation_id.clone()) } else { None };
            let emitted = self.ticket(
                &mut rr,
                day,
                idx,
                &mut seq,
                ticket_id.clone(),
                conv,
                end + delay,
                INTENTS[true_idx].topic,
                out,
            );
            if emitted {
                if let Some(t) = truth.get_mut(last_truth) {
                    t.ticket_id = Some(ticket_id);
                    t.ticket_linked = linked;
                }
            }
        }
    }

    /// The router's intent label: the surface intent for hidden complexity, otherwise the true
    /// intent with some confusion within its topic, sometimes none.
    fn label(&self, rr: &mut Rng, reads: Reads, true_idx: usize, surface_idx: Option<usize>) -> Option<String> {
        if rr.bool(LABEL_NONE) {
            return None;
        }
        let base = match reads {
            Reads::Hidden => surface_idx.unwrap_or(true_idx),
            _ => true_idx,
        };
        if rr.bool(LABEL_WRONG) {
            let topic = INTENTS[base].topic;
            let same: Vec<usize> = (0..INTENTS.len()).filter(|&i| INTENTS[i].topic == topic && i != base).collect();
            if let Some(&i) = rr.pick(&same) {
                return Some(INTENTS[i].name.to_owned());
            }
        }
        Some(INTENTS[base].name.to_owned())
    }

    /// An OPENED ticket and, later, its RESOLVED event. Returns whether OPENED is within the horizon.
    #[allow(clippy::too_many_arguments)]
    fn ticket(
        &self,
        r: &mut Rng,
        day: u32,
        idx: u32,
        seq: &mut u32,
        ticket_id: String,
        conversation_id: Option<String>,
        opened: i64,
        topic: Topic,
        out: &mut Vec<Pending>,
    ) -> bool {
        let cc_w: [f64; 3] = match topic {
            Topic::Billing => [0.55, 0.30, 0.15],
            Topic::Cancellation | Topic::Contract => [0.2, 0.3, 0.5],
            _ => [0.7, 0.3, 0.0],
        };
        let cost_center = ["support", "customer-experience", "retention"][r.weighted(&cc_w)];
        let ch_w: [f64; 3] = if topic == Topic::Billing { [0.55, 0.25, 0.20] } else { [0.40, 0.32, 0.28] };
        let ch = r.weighted(&ch_w);
        let channel = ["phone", "email", "chat"][ch];
        let reason = if r.bool(0.9) { Some(topic.as_str().to_owned()) } else { None };
        let open = SupportTicket {
            event_id: format!("{ticket_id}/opened"),
            ticket_id: ticket_id.clone(),
            conversation_id: conversation_id.clone(),
            ts: opened,
            status: TicketStatus::Opened,
            cost_center: cost_center.to_owned(),
            channel: channel.to_owned(),
            handle_minutes: None,
            cost_usd: None,
            reason: reason.clone(),
        };
        if !self.push(out, day, idx, seq, Event::Ticket(open)) {
            return false;
        }
        let (median_min, per_min) = [(11.0, 1.25), (7.0, 0.85), (9.0, 0.5)][ch];
        let minutes = (r.lognormal(median_min, 0.5) * 10.0).round() / 10.0;
        let resolved_at = opened + 5 * MINUTE + (r.lognormal(6.0 * HOUR as f64, 1.2) as i64).min(20 * DAY);
        let with_minutes = r.bool(0.95);
        let with_cost = r.bool(0.85);
        let done = SupportTicket {
            event_id: format!("{ticket_id}/resolved"),
            ticket_id,
            conversation_id,
            ts: resolved_at,
            status: TicketStatus::Resolved,
            cost_center: cost_center.to_owned(),
            channel: channel.to_owned(),
            handle_minutes: if with_minutes { Some(minutes) } else { None },
            cost_usd: if with_cost { Some(round_usd(minutes * per_min)) } else { None },
            reason,
        };
        self.push(out, day, idx, seq, Event::Ticket(done));
        true
    }
}

const UNLINKED_TOPICS: [Topic; 8] = [
    Topic::Billing,
    Topic::Billing,
    Topic::Orders,
    Topic::Orders,
    Topic::Account,
    Topic::Cancellation,
    Topic::Technical,
    Topic::Store,
];

/// Milliseconds into the day, following [`HOURLY`].
fn time_of_day(r: &mut Rng) -> i64 {
    let h = r.weighted(&HOURLY) as i64;
    h * HOUR + r.range(0, HOUR - 1)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Routers emit 4 decimals (the daemon's histogram resolution).
fn round4(x: f64) -> f64 {
    ((x * 1e4).round() / 1e4).clamp(0.0, 1.0)
}

fn round_usd(x: f64) -> f64 {
    (x * 1e8).round() / 1e8
}
