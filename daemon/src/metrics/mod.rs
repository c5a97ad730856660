//! Aggregate deltas: what one batch of joined events adds to the stored counters.
//!
//! Every stored number is a sum, so a batch reduces to additive deltas keyed by bucket and
//! dimensions; the store applies them with `col = col + delta` in the same transaction as the
//! offsets. Money is kept in integer nano-USD so sums are exact and independent of order.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::stats::hist::ConfHist;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Start of the UTC hour containing `ts_ms`.
pub fn hour_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// Start of the UTC day containing `ts_ms`.
pub fn day_start(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(DAY_MS) * DAY_MS
}

/// USD → integer nano-USD (1e-9), the storage unit of every money column.
pub fn nano_usd(usd: f64) -> i64 {
    (usd * 1e9).round() as i64
}

/// Log-spaced latency histogram bin: ≤ 0.5% relative error at the bin's geometric centre, and
/// mergeable by adding counts, so hourly bins roll up into days and across instances in SQL.
pub fn latency_bin(latency_ms: f64) -> i32 {
    let l = if latency_ms.is_finite() { latency_ms.max(0.001) } else { 0.001 };
    (l.ln() / 1.01f64.ln()).floor() as i32
}

/// Representative value of a latency bin (matches the SQL views).
pub fn latency_bin_value(bin: i32) -> f64 {
    ((bin as f64 + 0.5) * 1.01f64.ln()).exp()
}

/// Time grain of a quality row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hour => "h",
            Grain::Day => "d",
        }
    }
    pub fn bucket(self, ts_ms: i64) -> i64 {
        match self {
            Grain::Hour => hour_start(ts_ms),
            Grain::Day => day_start(ts_ms),
        }
    }
}

/// The group-by dimensions of a turn ('' = null or not kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dims {
    pub tier: String,
    pub model: String,
    pub classifier_version: String,
    pub router: String,
    pub segment: String,
    pub intent: String,
}

impl Dims {
    /// `[tier, model, classifier_version, router, segment, intent]`.
    pub fn fields(&self) -> [&str; 6] {
        [&self.tier, &self.model, &self.classifier_version, &self.router, &self.segment, &self.intent]
    }

    /// The inverse of [`Dims::fields`].
    pub fn from_fields(fields: [&str; 6]) -> Self {
        let [tier, model, classifier_version, router, segment, intent] = fields.map(str::to_string);
        Dims { tier, model, classifier_version, router, segment, intent }
    }
}

/// A quality row's key. The dims are shared: every event of a turn's hour and day rows (and the
/// join state's turns) point at one interned copy instead of cloning six strings per event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualityKey {
    pub grain: Grain,
    pub bucket_ms: i64,
    pub dims: Arc<Dims>,
}

/// Additive counters of one quality row (docs/contract.md#per-tier-quality).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityDelta {
    pub decisions: i64,
    pub conversations: i64,
    pub thumbs_up: i64,
    pub thumbs_down: i64,
    pub csat_n: i64,
    pub csat_sum: f64,
    pub reviews_n: i64,
    pub reviews_wrong: i64,
    pub failed_deflections: i64,
    pub escalations: i64,
    pub cost_nusd: i64,
    pub capable_cost_nusd: i64,
    pub attributed_tickets: i64,
    pub attributed_human_cost_nusd: i64,
}

impl QualityDelta {
    pub fn add(&mut self, v: &QualityDelta) {
        self.decisions += v.decisions;
        self.conversations += v.conversations;
        self.thumbs_up += v.thumbs_up;
        self.thumbs_down += v.thumbs_down;
        self.csat_n += v.csat_n;
        self.csat_sum += v.csat_sum;
        self.reviews_n += v.reviews_n;
        self.reviews_wrong += v.reviews_wrong;
        self.failed_deflections += v.failed_deflections;
        self.escalations += v.escalations;
        self.cost_nusd += v.cost_nusd;
        self.capable_cost_nusd += v.capable_cost_nusd;
        self.attributed_tickets += v.attributed_tickets;
        self.attributed_human_cost_nusd += v.attributed_human_cost_nusd;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HumanKey {
    pub day_ms: i64,
    pub cost_center: String,
    pub channel: String,
}

/// Additive counters of the human-support ledger (docs/contract.md#deflection-ledger, the other teams' side).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HumanDelta {
    pub tickets_opened: i64,
    pub attributed_tickets: i64,
    pub unattributed_tickets: i64,
    pub tickets_resolved: i64,
    pub human_cost_nusd: i64,
}

impl HumanDelta {
    pub fn add(&mut self, v: &HumanDelta) {
        self.tickets_opened += v.tickets_opened;
        self.attributed_tickets += v.attributed_tickets;
        self.unattributed_tickets += v.unattributed_tickets;
        self.tickets_resolved += v.tickets_resolved;
        self.human_cost_nusd += v.human_cost_nusd;
    }
}

/// Why an outcome could not be joined; each kind is counted per day in `tw_orphans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrphanKind {
    /// Feedback whose decision never arrived within the pending window.
    Feedback,
    /// An OPENED ticket linked to a conversation that never showed a turn before it.
    Ticket,
    /// A RESOLVED ticket whose OPENED event never arrived (cost credited to its own day).
    ResolvedWithoutOpened,
    /// Pending outcomes evicted because the per-partition bound was reached.
    Evicted,
}

impl OrphanKind {
    pub const ALL: [OrphanKind; 4] =
        [OrphanKind::Feedback, OrphanKind::Ticket, OrphanKind::ResolvedWithoutOpened, OrphanKind::Evicted];

    pub fn as_str(self) -> &'static str {
        match self {
            OrphanKind::Feedback => "feedback",
            OrphanKind::Ticket => "ticket",
            OrphanKind::ResolvedWithoutOpened => "resolved_without_opened",
            OrphanKind::Evicted => "evicted",
        }
    }
}

/// A confidence signal tracked for drift (docs/contract.md#confidence-drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Signal {
    /// PRE_ROUTE: the router classifier's probability that the query is simple.
    RouterConfidence,
    /// CASCADE: the cheap model's self-rated confidence.
    CascadeSelfConfidence,
    /// The rescorer's p_complex (once the rescorer exists).
    RescoreScore,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::RouterConfidence, Signal::CascadeSelfConfidence, Signal::RescoreScore];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::RouterConfidence => "router_confidence",
            Signal::CascadeSelfConfidence => "cascade_self_confidence",
            Signal::RescoreScore => "rescore_score",
        }
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One confidence histogram row: hour bucket × signal × classifier version × router kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfKey {
    pub hour_ms: i64,
    pub signal: Signal,
    pub classifier_version: String,
    pub router: String,
}

/// What a batch adds to one confidence histogram row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfDelta {
    pub hist: ConfHist,
    /// Conversations whose first turn of the UTC day (for this version and router) is here: the
    /// effective sample size of significance tests.
    pub conversations: i64,
    /// Decisions routed to a tier other than the capable one.
    pub routed_cheap: i64,
    pub threshold_sum: f64,
    pub threshold_n: i64,
}

impl ConfDelta {
    /// A stored row's counters and serialized histogram (both stores keep the same columns).
    pub fn from_stored(
        conversations: i64,
        routed_cheap: i64,
        threshold_sum: f64,
        threshold_n: i64,
        hist: &[u8],
    ) -> Result<ConfDelta, crate::stats::hist::HistError> {
        Ok(ConfDelta { hist: ConfHist::from_bytes(hist)?, conversations, routed_cheap, threshold_sum, threshold_n })
    }

    pub fn add(&mut self, v: &ConfDelta) {
        self.hist.merge(&v.hist);
        self.conversations += v.conversations;
        self.routed_cheap += v.routed_cheap;
        self.threshold_sum += v.threshold_sum;
        self.threshold_n += v.threshold_n;
    }
}

/// Width of a confidence cell of the router-evaluation aggregates: 0.01, the grid of candidate
/// thresholds, so "routed cheap at threshold t" is exactly "cell ≥ 100·t".
pub const CALIB_CELLS: u8 = 100;
/// Conversations are hashed into this many groups; the calibration error's bootstrap resamples
/// groups, so turns of one conversation always move together (they are not independent).
pub const CALIB_GROUPS: u8 = 32;
/// The cell of a turn whose confidence is not known (state written before turns carried it).
pub const CALIB_CELL_UNKNOWN: u8 = 127;

/// The 0.01 cell of a confidence, from its 1e-4 grid point (so it agrees with the drift
/// histograms exactly); 1.0 falls in the top cell.
pub fn calib_cell(confidence: f64) -> u8 {
    match crate::stats::hist::bin_of(confidence) {
        Some(bin) => ((bin / 100) as u8).min(CALIB_CELLS - 1),
        None => CALIB_CELL_UNKNOWN,
    }
}

/// The bootstrap group of a conversation.
pub fn calib_group(conversation_id: &str) -> u8 {
    (xxhash_rust::xxh3::xxh3_64_with_seed(conversation_id.as_bytes(), 0x7769_6e64) % u64::from(CALIB_GROUPS)) as u8
}

/// One router-evaluation cell in a batch: cohort day × the turn's (shared) dimensions ×
/// confidence cell × conversation group. The dimensions collapse to (classifier_version, router,
/// tier) when written ([`Deltas::calib_rows`]).
///
/// Hashed and compared by the dimensions' *pointer*: a partition interns each combination once,
/// so equal pointers are equal dimensions, and hashing one address instead of six strings is what
/// keeps this second map off the hot path's profile. Two partitions' copies of the same
/// combination are simply separate entries until `calib_rows` merges them by value.
#[derive(Debug, Clone)]
pub struct CalibKey {
    pub day_ms: i64,
    pub dims: Arc<Dims>,
    pub cell: u8,
    pub group: u8,
}

impl PartialEq for CalibKey {
    fn eq(&self, o: &Self) -> bool {
        self.day_ms == o.day_ms && Arc::ptr_eq(&self.dims, &o.dims) && self.cell == o.cell && self.group == o.group
    }
}

impl Eq for CalibKey {}

impl std::hash::Hash for CalibKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.day_ms.hash(h);
        std::ptr::hash(Arc::as_ptr(&self.dims), h);
        self.cell.hash(h);
        self.group.hash(h);
    }
}

/// What a batch adds to one router-evaluation cell (the same counters as a stored row).
pub type CalibDelta = CalibCounts;

/// A stored router-evaluation cell row: (day start ms, classifier_version, router, tier, cell,
/// group) and its counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CalibRow {
    pub day_ms: i64,
    pub classifier_version: String,
    pub router: String,
    pub tier: String,
    pub cell: u8,
    pub group: u8,
    pub counts: CalibCounts,
}

/// Additive counters of one router-evaluation cell (ordered, so rows sort deterministically).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CalibCounts {
    pub decisions: i64,
    /// Turns that failed: a failed deflection attributed to them, a THUMBS_DOWN, or a
    /// HUMAN_REVIEW with score 0 (each turn at most once).
    pub failures: i64,
    /// Failed deflections attributed to these turns (the outcome that costs human support).
    pub failed_deflections: i64,
    /// Σ confidence in 1e-4 units (exact).
    pub conf_e4: i64,
    pub cost_nusd: i64,
    pub capable_cost_nusd: i64,
}

impl CalibCounts {
    pub fn add(&mut self, v: &CalibCounts) {
        self.decisions += v.decisions;
        self.failures += v.failures;
        self.failed_deflections += v.failed_deflections;
        self.conf_e4 += v.conf_e4;
        self.cost_nusd += v.cost_nusd;
        self.capable_cost_nusd += v.capable_cost_nusd;
    }
}

/// A hash map for the maps touched on every event (join state, batch deltas). SipHash, std's
/// default, was the largest single cost of the hot path; foldhash is several times faster and
/// still seeded per process, so crafted ids cannot pick collisions ahead of time.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Everything one batch adds to the aggregates.
#[derive(Debug, Default, Clone)]
pub struct Deltas {
    pub quality: FastMap<QualityKey, QualityDelta>,
    /// (hour bucket, dims, latency bin) → count.
    pub latency: FastMap<(QualityKey, i32), i64>,
    /// (day, tier) → distinct new conversations.
    pub tier_day: FastMap<(i64, String), i64>,
    pub human: FastMap<HumanKey, HumanDelta>,
    /// (day, kind) → count.
    pub orphans: FastMap<(i64, OrphanKind), i64>,
    /// Confidence histograms. Stored per partition (read-modify-write by the partition's owner),
    /// so [`Deltas::merge`] leaves them out.
    pub conf: FastMap<ConfKey, ConfDelta>,
    /// Router-evaluation cells (per-confidence outcomes, see [`CalibKey`]).
    pub calib: FastMap<CalibKey, CalibDelta>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.quality.is_empty()
            && self.latency.is_empty()
            && self.tier_day.is_empty()
            && self.human.is_empty()
            && self.orphans.is_empty()
            && self.conf.is_empty()
            && self.calib.is_empty()
    }

    /// Apply `f` to a turn's router-evaluation cell (turns of unknown confidence have none).
    pub fn calib(&mut self, ts_ms: i64, dims: &Arc<Dims>, cell: u8, group: u8, f: impl FnOnce(&mut CalibDelta)) {
        if cell >= CALIB_CELLS {
            return;
        }
        let key = CalibKey { day_ms: day_start(ts_ms), dims: dims.clone(), cell, group };
        f(self.calib.entry(key).or_default());
    }

    /// The calibration cells collapsed to the stored key (classifier_version, router, tier), sorted.
    pub fn calib_rows(&self) -> Vec<CalibRow> {
        let mut merged: std::collections::BTreeMap<(i64, &str, &str, &str, u8, u8), CalibCounts> =
            std::collections::BTreeMap::new();
        for (k, v) in &self.calib {
            let key = (
                k.day_ms,
                k.dims.classifier_version.as_str(),
                k.dims.router.as_str(),
                k.dims.tier.as_str(),
                k.cell,
                k.group,
            );
            merged.entry(key).or_default().add(v);
        }
        merged
            .into_iter()
            .map(|((day_ms, cv, router, tier, cell, group), counts)| CalibRow {
                day_ms,
                classifier_version: cv.to_string(),
                router: router.to_string(),
                tier: tier.to_string(),
                cell,
                group,
                counts,
            })
            .collect()
    }

    /// Record one decision's confidence.
    pub fn confidence(
        &mut self,
        key: ConfKey,
        value: f64,
        new_conversation: bool,
        routed_cheap: bool,
        threshold: Option<f64>,
    ) {
        let c = self.conf.entry(key).or_default();
        c.hist.record(value);
        c.conversations += new_conversation as i64;
        c.routed_cheap += routed_cheap as i64;
        if let Some(t) = threshold {
            c.threshold_sum += t;
            c.threshold_n += 1;
        }
    }

    /// Apply `f` to the quality row of both grains (hour and day) for a turn at `ts_ms`.
    pub fn quality_both(&mut self, ts_ms: i64, dims: &Arc<Dims>, f: impl Fn(&mut QualityDelta)) {
        for grain in [Grain::Hour, Grain::Day] {
            self.quality_one(grain, ts_ms, dims, &f);
        }
    }

    pub fn quality_one(&mut self, grain: Grain, ts_ms: i64, dims: &Arc<Dims>, f: impl Fn(&mut QualityDelta)) {
        let key = QualityKey { grain, bucket_ms: grain.bucket(ts_ms), dims: dims.clone() };
        f(self.quality.entry(key).or_default());
    }

    /// Record a turn's latency in its hour's histogram (days are summed from hours in SQL).
    pub fn latency(&mut self, ts_ms: i64, dims: &Arc<Dims>, latency_ms: f64) {
        let key = QualityKey { grain: Grain::Hour, bucket_ms: hour_start(ts_ms), dims: dims.clone() };
        *self.latency.entry((key, latency_bin(latency_ms))).or_default() += 1;
    }

    pub fn human(&mut self, day_ms: i64, cost_center: &str, channel: &str, f: impl FnOnce(&mut HumanDelta)) {
        let key = HumanKey { day_ms, cost_center: cost_center.to_string(), channel: channel.to_string() };
        f(self.human.entry(key).or_default());
    }

    /// Add another batch's deltas into this one.
    pub fn merge(&mut self, other: &Deltas) {
        for (k, v) in &other.quality {
            self.quality.entry(k.clone()).or_default().add(v);
        }
        for (k, v) in &other.latency {
            *self.latency.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.tier_day {
            *self.tier_day.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.human {
            self.human.entry(k.clone()).or_default().add(v);
        }
        for (k, v) in &other.orphans {
            *self.orphans.entry(*k).or_default() += v;
        }
        for (k, v) in &other.calib {
            self.calib.entry(k.clone()).or_default().add(v);
        }
    }

    /// `(day, tier, new conversations)` rows of [`Deltas::tier_day`].
    pub fn tier_day_rows(&self) -> Vec<(i64, String, i64)> {
        self.tier_day.iter().map(|((d, t), n)| (*d, t.clone(), *n)).collect()
    }

    /// `(day, kind, count)` rows of [`Deltas::orphans`].
    pub fn orphan_rows(&self) -> Vec<(i64, String, i64)> {
        self.orphans.iter().map(|((d, k), n)| (*d, k.as_str().to_string(), *n)).collect()
    }

    pub fn orphan(&mut self, ts_ms: i64, kind: OrphanKind) {
        *self.orphans.entry((day_start(ts_ms), kind)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests;
