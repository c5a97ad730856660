//! Deterministic scenario simulator (docs/architecture.md#reference-scenarios): the three event streams of an LLM
//! support agent behind a router, plus the ground truth the streams never carry.
//!
//! Same [`SimConfig`] (seed included) → byte-identical events, files and ground truth, on a given
//! platform (see [`rng`] for the libm caveat). Every conversation draws from its own generator
//! derived from `(seed, day, index)`, so days can be generated independently and in any amount.
//!
//! # API
//! * [`generate`] → [`Simulation`] (all events sorted by `ts`, ground truth per decision).
//!   Memory (measured): ~1.8 KB per conversation with its outcomes and truth (2.3 events and 1.9
//!   decisions per conversation; an `Event` is 272 bytes inline plus its strings), i.e. ~510 MB
//!   peak RSS for 140 days × 2000 conversations/day, generated in ~1.1 s in release. Files and
//!   producers should use [`days`] instead: one [`DayBatch`] per simulated day, memory bounded
//!   by one day plus the outcomes still pending (a few MB).
//! * Writers: [`write_jsonl`] / [`write_avro_ocf`] for a [`Simulation`], [`write_jsonl_days`] /
//!   [`write_avro_ocf_days`] streaming straight from a config, and [`FileWriter`] for any batches.
//! * [`message_key`]: the Kafka key of an event (`conversation_id`, else `ticket_id`).
//!
//! # The model (defaults)
//! * **Traffic.** `conversations_per_day` conversations per day, start times on a diurnal UTC
//!   profile, 1–4 user turns (mean ≈ 1.8; 40 s median think time). Query mix of established
//!   traffic: 65% simple, 31% overtly complex, 4% hidden-complex (complex intents asked through a
//!   simple surface: "where is my charge from?" → fraud, reconciliation delay, billing-cycle
//!   change …). 29 intents (15 simple, 14 complex, two of them FlexPay-only; see [`text`]),
//!   several templates each, slots,
//!   greetings/sign-offs/lower-casing, typos at `typo_rate`, `query_text` null at `redact_rate`.
//!   Segments consumer/smb/enterprise 55/30/15%.
//! * **Drift** ([`Drift`], postmortem and cascade): from `start_day` (default 14 = week 3) a new
//!   product cohort (FlexPay installments) grows linearly by `per_week` (0.03) of traffic up to
//!   `max_share` (0.5). The cohort asks billing-heavy questions (17% overtly complex; a
//!   **hidden-complex share growing from 8% at launch to 42% nine weeks later** as installment
//!   cycles come due — reconciliation delays, cycle changes, duplicate charges; the rest simple),
//!   mostly smb, with vocabulary the router never saw: its confidences are squeezed towards the
//!   middle. So the router-confidence distribution and the hidden-complexity share move
//!   together; routing still sends most hidden-complex queries to the cheap model
//!   (cheap-tier failed deflections climb) and more of the cohort's simple queries to the capable
//!   one (its rate falls a little, masking the pooled rate).
//! * **PRE_ROUTE router** (`classifier_version` "router-2026-01", threshold 0.6): logit of
//!   P(simple) ~ N(μ, σ) by how the turn reads — established traffic simple N(2.0, 0.9), complex
//!   N(−1.3, 1.1), hidden-complex N(1.7, 0.9) (reads simple); new cohort N(0.25, 0.6),
//!   N(−0.3, 0.7), N(0.95, 0.55). Follow-up turns move the logit by N(0, 0.5); a follow-up that
//!   reveals the real intent ("no, I never made that purchase") reads complex and may switch tier.
//!   Confidence is emitted at 4 decimals. Intent label: the surface intent for hidden complexity,
//!   7% confused within the topic, 3% none.
//! * **CASCADE** ("selfconf-1", threshold 0.7): the cheap model always answers first; its
//!   self-confidence logit is N(2.4, 0.8) simple, N(−1.2, 0.9) complex, N(1.9, 0.8) hidden
//!   (confidently wrong); cohort N(1.8, 0.8), N(−0.6, 1.0), N(1.8, 0.8). Below the threshold the
//!   turn escalates: tier capable, `escalated`, latency, tokens and cost of both calls summed,
//!   `capable_cost_usd` = the capable call.
//! * **Models, cost, latency.** "small-1" (cheap) / "large-1" (capable); capable $3 / $15 per
//!   million input / output tokens, cheap 1/4 of that (on a cheap turn `capable_cost_usd` is the
//!   capable price of the same tokens, so cost = exactly 1/4 of it; always set). An agent turn
//!   reads ≈ 6000 tokens of system prompt and tool schemas + the query + retrieved documents and
//!   tool results (median 5k simple / 14k complex) + 1500 per earlier turn; output median 220–320
//!   (cheap) / 260–650 (capable). Latency cheap ≈ 0.3 s + 0.02 ms/input + 4 ms/output token,
//!   capable ≈ 0.7 s + 0.06 ms/input + 10 ms/output token.
//! * **Answer failures** (the real intent not addressed): cheap 2.5% simple (4% for the new
//!   cohort), 60% complex, 75% hidden-complex; capable 1%, 7%, 15%.
//! * **Outcomes.** A conversation is unresolved when its last answer failed. Tickets: 45–60% of
//!   unresolved conversations (hidden: 60%), 1.2% of resolved simple and 10% of resolved complex
//!   ones (refunds, contracts, GDPR need a human anyway); opened a log-normal delay after the
//!   last answer (median 16 h, ~95% within 72 h, up to 30 days); 92% linked to the conversation; cost center support / customer-experience /
//!   retention by topic; channel phone/email/chat; RESOLVED a median 6 h later with handle
//!   minutes and cost (15% with null cost, 5% with null minutes, to exercise the price table).
//!   Unlinked tickets: `unlinked_ticket_rate` × conversations per day. Feedback: thumbs-down on
//!   2.5% of failed and 0.1% of good answers (≈ 3 per 1000 decisions at baseline), thumbs-up on
//!   2% / 5%, 10% of thumbs at conversation level (`turn` null); CSAT on 6% of conversations
//!   (lower when unresolved); HUMAN_REVIEW of 0.4% of decisions 1–5 days later (3% reviewer
//!   error).
//! * **Horizon.** Events after the end of the last day + `drain_hours` are not emitted (the
//!   ground truth then has no `ticket_id` for them).
//!
//! # Measured (seed 42, 1500 conversations/day, 140 days)
//! Reproduce with `cargo test -p tierwatch --release --lib sim::tests::report -- --ignored
//! --nocapture` (`SIM_PER_DAY`, `SIM_SEED`, `SIM_DRIFT` override), which also re-implements the
//! alert rules (docs/contract.md#alert-rules) on the 7-day windows against weeks 1–2:
//! * Baseline thumbs-down ≈ 2.7 per 1000 decisions (≈ 4.5–5 by week 17 of postmortem).
//! * Failed deflections (linked ticket within 72 h, per conversation and tier): cheap 4.8%,
//!   capable 9.8%, pooled 6.5% in weeks 1–2; postmortem week 16: cheap 11.0%, capable 7.6%,
//!   pooled 9.6%. Control stays flat.
//! * Router-confidence KS D (7 days vs weeks 1–2): postmortem 0.006 (wk 1–2), 0.037 (wk 5),
//!   0.071 (wk 8), 0.102 (wk 12), 0.145 (wk 16), 0.188 (wk 20); control ≤ 0.017 throughout.
//! * Rules: drift warning day 32 (week 5), per-tier cheap failed-deflection day 57 (week 9),
//!   aggregate (pooled) day 70 (week 11), drift critical day 80 (week 12); control: none. Over
//!   other seeds and 500–1500 conversations/day the drift warning led the aggregate signal by
//!   24–38 days and the per-tier signal led it by 4–18 days.
//! * Ledger: ≈ $55/day inference saved; excess human cost of the cheap tier over the pooled
//!   baseline rate ≈ $240/day by week 11, ≈ $450–600/day by weeks 16–19.

mod gen;
pub mod kafka;
pub mod rng;
pub mod text;
pub mod truth;
mod write;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::event::Event;

pub use write::{
    write_avro_ocf, write_avro_ocf_days, write_jsonl, write_jsonl_days, FileFormat, FileWriter, WriteSummary,
};

/// File names written by the writers.
pub const ROUTING_FILE: &str = "routing_decisions";
pub const FEEDBACK_FILE: &str = "feedback";
pub const TICKETS_FILE: &str = "support_tickets";
pub const TRUTH_FILE: &str = "ground_truth.jsonl";

/// A named reference scenario (docs/architecture.md#reference-scenarios).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Pre-routing with a threshold; from week 3 the query mix drifts.
    Postmortem,
    /// The same traffic without drift (false-alarm rates).
    Control,
    /// The postmortem's traffic routed by an uncertainty cascade.
    Cascade,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Postmortem, Scenario::Control, Scenario::Cascade];

    pub fn as_str(&self) -> &'static str {
        match self {
            Scenario::Postmortem => "postmortem",
            Scenario::Control => "control",
            Scenario::Cascade => "cascade",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The query-mix drift: a new product cohort growing linearly from `start_day`, whose
/// hidden-complex share grows as its billing cycles come due.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// Day index (0-based) the cohort starts to appear (14 = the first day of week 3).
    pub start_day: u32,
    /// Cohort share of all conversations gained per week.
    pub per_week: f64,
    /// Cohort share cap.
    pub max_share: f64,
    /// Hidden-complex share of the cohort's queries at launch …
    pub hidden_start: f64,
    /// … growing linearly to this …
    pub hidden_end: f64,
    /// … over this many weeks after `start_day`.
    pub hidden_ramp_weeks: f64,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            start_day: 14,
            per_week: 0.03,
            max_share: 0.5,
            hidden_start: 0.08,
            hidden_end: 0.42,
            hidden_ramp_weeks: 9.0,
        }
    }
}

/// Simulator configuration. [`SimConfig::new`] gives a scenario's defaults; fields are public.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub scenario: Scenario,
    /// Simulated days (default 140 = 20 weeks).
    pub days: u32,
    /// Conversations starting per day (default 1500).
    pub conversations_per_day: u32,
    pub seed: u64,
    /// First simulated day (UTC; default 2026-01-05, a Monday).
    pub start: NaiveDate,
    /// The query-mix drift; `None` = stationary (control).
    pub drift: Option<Drift>,
    /// PRE_ROUTE threshold (default 0.6).
    pub threshold: f64,
    /// CASCADE self-confidence threshold (default 0.7).
    pub cascade_threshold: f64,
    /// PRE_ROUTE classifier version (default "router-2026-01").
    pub classifier_version: String,
    /// Share of queries with typos (default 0.08).
    pub typo_rate: f64,
    /// Share of decisions with a redacted (null) `query_text` (default 0.03).
    pub redact_rate: f64,
    /// Unlinked tickets (human volume with no AI conversation) per conversation (default 0.02).
    pub unlinked_ticket_rate: f64,
    /// Outcomes up to this many hours after the last day are still emitted (default 0).
    pub drain_hours: u32,
}

impl SimConfig {
    /// The defaults of a scenario: postmortem and cascade drift, control does not.
    pub fn new(scenario: Scenario) -> Self {
        SimConfig {
            scenario,
            days: 140,
            conversations_per_day: 1500,
            seed: 42,
            start: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default(),
            drift: match scenario {
                Scenario::Control => None,
                Scenario::Postmortem | Scenario::Cascade => Some(Drift::default()),
            },
            threshold: 0.6,
            cascade_threshold: 0.7,
            classifier_version: "router-2026-01".to_owned(),
            typo_rate: 0.08,
            redact_rate: 0.03,
            unlinked_ticket_rate: 0.02,
            drain_hours: 0,
        }
    }

    /// Epoch milliseconds of the start of the first day (UTC).
    pub fn start_ms(&self) -> i64 {
        self.start.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0)
    }

    /// Epoch milliseconds of the start of day `day` (0-based).
    pub fn day_start_ms(&self, day: u32) -> i64 {
        self.start_ms() + i64::from(day) * gen::DAY
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(Scenario::Postmortem)
    }
}

/// True complexity of a conversation's intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    Simple,
    Complex,
}

/// What really happened in one routing decision. Never part of the events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The decision's `event_id`.
    pub event_id: String,
    pub conversation_id: String,
    pub turn: i32,
    pub ts: i64,
    /// The conversation's real intent (for hidden complexity: the complex one, not the surface).
    pub true_intent: String,
    pub true_complexity: Complexity,
    /// The turn reads simple but the intent is complex (a revealing follow-up no longer does).
    pub hidden_complexity: bool,
    /// The conversation belongs to the drifting new-product cohort.
    pub new_cohort: bool,
    /// The tier that answered.
    pub tier: String,
    /// The answer did not address the real intent.
    pub answer_failed: bool,
    /// `answer_failed` and the cheap tier answered.
    pub cheap_answer_failed: bool,
    /// P(the answer fails the real intent) had the cheap tier answered this turn, and had the
    /// capable tier: what the simulation drew `answer_failed` from.
    pub p_fail_cheap: f64,
    pub p_fail_capable: f64,
    /// The conversation's ticket probabilities (by its true kind) when its last answer failed and
    /// when it did not.
    pub p_ticket_unresolved: f64,
    pub p_ticket_resolved: f64,
    /// The conversation's last emitted turn: tickets follow the last answer, so only this turn
    /// can carry a failed deflection.
    pub last_turn: bool,
    /// On the conversation's last turn: the ticket the conversation led to (if emitted).
    pub ticket_id: Option<String>,
    /// That ticket carries the conversation id (else it is human volume the support system did
    /// not link).
    pub ticket_linked: bool,
}

/// A whole simulation in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub config: SimConfig,
    /// All events of the three streams, sorted by `(ts, conversation, sequence)`.
    pub events: Vec<Event>,
    /// One entry per emitted decision, in generation order (by day, conversation, turn).
    pub truth: Vec<GroundTruth>,
}

/// The output of one simulated day.
#[derive(Debug, Clone, PartialEq)]
pub struct DayBatch {
    /// 0-based day index.
    pub day: u32,
    pub date: NaiveDate,
    /// Events with `ts` in this day, sorted; the last batch also carries every remaining event up
    /// to the horizon (end + `drain_hours`).
    pub events: Vec<Event>,
    /// Ground truth of the decisions of conversations that started this day.
    pub truth: Vec<GroundTruth>,
}

/// Generate the whole run in memory (see the module docs for memory use).
pub fn generate(cfg: &SimConfig) -> Simulation {
    let mut events = Vec::new();
    let mut truth = Vec::new();
    for b in days(cfg) {
        events.extend(b.events);
        truth.extend(b.truth);
    }
    Simulation { config: cfg.clone(), events, truth }
}

/// Iterate the run day by day (bounded memory).
pub fn days(cfg: &SimConfig) -> DayIter<'_> {
    DayIter { gen: gen::Gen::new(cfg), cfg, next: 0, heap: BinaryHeap::new(), buf: Vec::new() }
}

/// Iterator of [`DayBatch`]es; see [`days`].
pub struct DayIter<'a> {
    gen: gen::Gen<'a>,
    cfg: &'a SimConfig,
    next: u32,
    heap: BinaryHeap<Reverse<gen::Pending>>,
    buf: Vec<gen::Pending>,
}

impl Iterator for DayIter<'_> {
    type Item = DayBatch;

    fn next(&mut self) -> Option<DayBatch> {
        if self.next >= self.cfg.days {
            return None;
        }
        let day = self.next;
        self.next += 1;
        let mut truth = Vec::new();
        self.buf.clear();
        self.gen.day(day, &mut self.buf, &mut truth);
        self.heap.extend(self.buf.drain(..).map(Reverse));
        // Conversations of later days start later, so everything before the next day is final.
        let last = self.next >= self.cfg.days;
        let cutoff = self.cfg.day_start_ms(day + 1);
        let mut events = Vec::new();
        while let Some(Reverse(p)) = self.heap.peek() {
            if !last && p.ts >= cutoff {
                break;
            }
            if let Some(Reverse(p)) = self.heap.pop() {
                events.push(p.ev);
            }
        }
        let date = self.cfg.start + chrono::Days::new(u64::from(day));
        Some(DayBatch { day, date, events, truth })
    }
}

/// The Kafka message key of an event (docs/contract.md#topics-keys-and-partitions): `conversation_id`, or `ticket_id`
/// for an unlinked ticket.
pub fn message_key(ev: &Event) -> &str {
    match ev {
        Event::Ticket(t) => t.conversation_id.as_deref().unwrap_or(&t.ticket_id),
        other => other.conversation_id().unwrap_or_default(),
    }
}
