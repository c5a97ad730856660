//! Bounds on what one producer bug can make the join store: distinct values per free-text
//! dimension, turns and feedback per conversation, events per ticket.
//!
//! **Distinct values.** Each partition admits at most `limits.max_tiers` tiers and
//! `limits.max_dimension_values` values of each of model, classifier version, segment and intent,
//! in the order its routing decisions arrive. A value beyond the cap is replaced by
//! [`OVERFLOW`] before anything else sees the decision (aggregates, drift histograms, rescore
//! samples), and counted in `tierwatch_dimension_values_capped_total{dimension}`. The admitted
//! sets are part of the partition's join state: they are written under the state key
//! [`ADMITTED_KEY`] in the same transaction as the aggregates and offsets, and restored with the
//! partition. The decision for an event therefore depends only on the routing messages before it
//! in its own partition, which a restart (graceful or kill -9) or a rebalance re-reads from
//! exactly the committed point: the same event lands in the same bucket every time.
//!
//! Consequences of the per-partition scheme: the cap bounds each partition, so the whole
//! deployment keeps at most `partitions × cap` distinct values of a dimension (plus the
//! bucket); and a value admitted by one partition may be bucketed by another that filled its
//! slots first. Admitted values are kept for the partition's lifetime (forgetting them would need
//! a deterministic clock the topics do not share); raise the cap if legitimate values outgrow it.
//!
//! **Tier.** The tier drives attribution, the ledger and the quality alerts, so it has its own
//! small cap, and the configured `ledger.capable_tier` is always admitted without taking a slot
//! (its turns define the savings baseline). A bucketed tier counts as routed down. The quality
//! alert does not test the bucket as a tier of its own (it mixes unrelated values), but its
//! traffic stays in the pooled `tier=all` signal.
//!
//! Dimensions dropped by `dimensions.keep` are stored as '' and not capped; the tier and the
//! classifier version are always capped, since drift and alerts use them whatever `keep` says.

use serde::{Deserialize, Serialize};

use super::Dimension;
use crate::event::RoutingDecision;
use crate::metrics::FastSet;

/// The value that stands for "a value beyond the cap". Chosen to be distinct from '' (a dropped
/// or null dimension) and unlikely as a real tier, model, version, segment or intent name (a plain
/// `other` is a common segment). A producer that sends this literal is treated as overflow too:
/// it is never admitted, and is counted.
pub const OVERFLOW: &str = "__other__";

/// The join state key of a partition's admitted values (conversations are `c:`, tickets `t:`).
pub const ADMITTED_KEY: &str = "x:admitted";

/// The capped dimensions, in the order of [`CAPPED_DIMENSIONS`] and of
/// [`super::JoinCounters::capped`].
pub const CAPPED_DIMENSIONS: [&str; 5] = ["tier", "model", "classifier_version", "segment", "intent"];
const TIER: usize = 0;
const MODEL: usize = 1;
const VERSION: usize = 2;
const SEGMENT: usize = 3;
const INTENT: usize = 4;

/// The bounds, from `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinLimits {
    pub max_tiers: usize,
    pub max_dimension_values: usize,
    pub max_turns_per_conversation: usize,
    pub max_feedback_per_conversation: usize,
    pub max_events_per_ticket: usize,
}

impl Default for JoinLimits {
    /// Also the defaults of the `[limits]` keys of the same names.
    fn default() -> Self {
        Self {
            max_tiers: 16,
            max_dimension_values: 500,
            max_turns_per_conversation: 1000,
            max_feedback_per_conversation: 1000,
            max_events_per_ticket: 100,
        }
    }
}

/// An event the join refuses because it would exceed a per-conversation or per-ticket bound. The
/// pipeline dead-letters it under [`JoinReject::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinReject {
    #[error("the conversation already has {0} turns (limits.max_turns_per_conversation)")]
    TooManyTurns(usize),
    #[error("the conversation already has {0} feedback events (limits.max_feedback_per_conversation)")]
    TooManyFeedback(usize),
    #[error("the ticket already has {0} events (limits.max_events_per_ticket)")]
    TooManyTicketEvents(usize),
}

impl JoinReject {
    /// Every reason, for pre-created metric series.
    pub const REASONS: [&'static str; 3] =
        ["conversation_turn_limit", "conversation_feedback_limit", "ticket_event_limit"];

    /// The dead letter's `reason` and the `tierwatch_events_rejected_total` label.
    pub fn reason(&self) -> &'static str {
        match self {
            JoinReject::TooManyTurns(_) => Self::REASONS[0],
            JoinReject::TooManyFeedback(_) => Self::REASONS[1],
            JoinReject::TooManyTicketEvents(_) => Self::REASONS[2],
        }
    }
}

/// A partition's admitted values per capped dimension.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Admitted {
    sets: [FastSet<Box<str>>; 5],
}

/// Persisted shape: sorted lists by dimension name (sorted so the same sets write the same bytes).
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdmittedRepr {
    #[serde(default)]
    tier: Vec<String>,
    #[serde(default)]
    model: Vec<String>,
    #[serde(default)]
    classifier_version: Vec<String>,
    #[serde(default)]
    segment: Vec<String>,
    #[serde(default)]
    intent: Vec<String>,
}

impl Admitted {
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let r: AdmittedRepr = serde_json::from_slice(bytes)?;
        let mut a = Admitted::default();
        for (set, list) in a.sets.iter_mut().zip([r.tier, r.model, r.classifier_version, r.segment, r.intent]) {
            set.extend(list.into_iter().map(String::into_boxed_str));
        }
        Ok(a)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let [tier, model, classifier_version, segment, intent]: [Vec<String>; 5] = std::array::from_fn(|i| {
            let mut v: Vec<String> = self.sets[i].iter().map(|s| s.to_string()).collect();
            v.sort_unstable();
            v
        });
        serde_json::to_vec(&AdmittedRepr { tier, model, classifier_version, segment, intent })
    }

    /// Admitted values of dimension `i` (index into [`CAPPED_DIMENSIONS`]).
    pub fn count(&self, i: usize) -> usize {
        self.sets[i].len()
    }

    /// Rewrite the decision's capped dimensions in place. Returns whether the admitted sets
    /// changed (the state entry must then be written); adds bucketed values to `capped`.
    pub fn cap(
        &mut self,
        limits: &JoinLimits,
        keep: &std::collections::HashSet<Dimension>,
        capable_tier: &str,
        d: &mut RoutingDecision,
        capped: &mut [u64; 5],
    ) -> bool {
        let mut changed = false;
        let reserved = d.tier == capable_tier && d.tier != OVERFLOW;
        if !reserved {
            changed |= self.admit(TIER, &mut d.tier, limits.max_tiers, capped);
        }
        if keep.contains(&Dimension::Model) {
            changed |= self.admit(MODEL, &mut d.model, limits.max_dimension_values, capped);
        }
        changed |= self.admit(VERSION, &mut d.classifier_version, limits.max_dimension_values, capped);
        for (i, dim, field) in
            [(SEGMENT, Dimension::Segment, &mut d.segment), (INTENT, Dimension::Intent, &mut d.intent)]
        {
            if let Some(v) = field.as_mut().filter(|v| !v.is_empty() && keep.contains(&dim)) {
                changed |= self.admit(i, v, limits.max_dimension_values, capped);
            }
        }
        changed
    }

    fn admit(&mut self, i: usize, value: &mut String, cap: usize, capped: &mut [u64; 5]) -> bool {
        if value != OVERFLOW && self.sets[i].contains(value.as_str()) {
            return false;
        }
        if value != OVERFLOW && self.sets[i].len() < cap {
            self.sets[i].insert(value.as_str().into());
            return true;
        }
        capped[i] += 1;
        OVERFLOW.clone_into(value);
        false
    }
}
