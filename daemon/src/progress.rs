//! Where each of a partition's three topics stands, and the event-time watermark that follows.
//!
//! A partition's watermark decides when waiting outcomes are attributed, when cohorts mature and
//! when state expires, so it must neither run ahead of a topic that still has data to deliver
//! (its outcomes would turn into false orphans) nor stay behind forever. The rules:
//!
//! - A topic-partition **holds the watermark back** while it still has data to deliver: its next
//!   offset is below the source's high watermark, and it has not been quiet for
//!   `watermark.idle_partition_seconds` of polling. Among such topics the slowest one's event
//!   time is the watermark.
//! - A topic that is caught up (next offset ≥ high watermark), or quiet for that long (a topic
//!   with no traffic at night, a partition whose log retention removed everything, a high
//!   watermark that is unknown or stands on a transaction marker), does not hold it back. When
//!   every topic is caught up the watermark is the latest event time any of them delivered.
//! - Each topic's latest event time is **persisted** with the partition's state in the same
//!   transaction as its offsets. A topic read to its end before a restart (typically the small
//!   tickets topic, done in seconds while the large decisions topic still has a backlog) must
//!   still count after the restart; without it, the watermark would stop at the decisions'
//!   last time and the last days' tickets and feedback would wait forever.
//! - One step may move the watermark by at most `watermark.max_advance_hours`, so a single event
//!   stamped far ahead of the stream (inside the validation bound) cannot expire every waiting
//!   outcome at once; idle ticks keep moving it, one step each.
//! - Except the pipeline's last pass before it stops (a graceful shutdown, the end of a replay):
//!   no message will be applied between the steps, so it moves straight to where the steps would
//!   end. Releasing and expiring once at the end gives the same state and aggregates as doing it
//!   one step at a time, because a waiting outcome is always released before it could expire
//!   (`attribution.allowed_lateness_seconds` ≤ `attribution.pending_max_hours`, validated), and
//!   neither depends on the watermark it happens at (see `join::tests`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError, Validate};

/// Join-state key under which a partition's per-topic progress is persisted (next to the
/// conversations and tickets; the join ignores keys it does not know).
pub const PROGRESS_KEY: &str = "p:topics";

/// `[watermark]`: how a partition's event-time watermark follows its three topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkConfig {
    /// A topic-partition that delivered no message for this many seconds of polling no longer
    /// holds the partition's watermark back, even if its high watermark says it has data left
    /// (a transaction marker, an unknown high watermark, a stalled partition).
    pub idle_partition_seconds: f64,
    /// The most one step (a batch, or an idle tick every second) may move a partition's
    /// watermark, in hours.
    pub max_advance_hours: f64,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        Self { idle_partition_seconds: 30.0, max_advance_hours: 24.0 }
    }
}

impl Validate for WatermarkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.idle_partition_seconds.is_finite() && self.idle_partition_seconds > 0.0) {
            return Err(invalid("watermark.idle_partition_seconds", "must be a positive number of seconds"));
        }
        if !(self.max_advance_hours.is_finite() && self.max_advance_hours > 0.0) {
            return Err(invalid("watermark.max_advance_hours", "must be a positive number of hours"));
        }
        Ok(())
    }
}

impl WatermarkConfig {
    pub fn idle_after(&self) -> Duration {
        Duration::from_secs_f64(self.idle_partition_seconds)
    }

    pub fn max_advance_ms(&self) -> i64 {
        (self.max_advance_hours * 3_600_000.0).round() as i64
    }
}

/// The persisted part: the latest event time delivered per topic (by topic name, so a
/// configuration that renames a topic starts that topic afresh instead of inheriting another's).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Persisted {
    max_event_ms: BTreeMap<String, i64>,
}

/// One topic-partition of an owned partition.
#[derive(Debug, Clone, Default)]
struct TopicState {
    /// Next offset to apply (None: nothing stored and no start resolved yet).
    next: Option<i64>,
    /// A start offset resolved at assignment that the store does not hold yet.
    next_unsaved: bool,
    /// Latest event time delivered (valid events only).
    max_event_ms: Option<i64>,
    /// Next offset has reached the source's high watermark.
    at_end: bool,
    /// Polling time since this topic-partition last delivered a message.
    quiet: Duration,
}

/// Progress of the three topics of one partition.
#[derive(Debug, Clone, Default)]
pub struct TopicProgress {
    topics: [TopicState; 3],
    /// The persisted part changed since it was last taken.
    dirty: bool,
}

impl TopicProgress {
    /// Rebuild from the stored offsets (per topic index) and the persisted entry, if any.
    pub fn restore(next: [Option<i64>; 3], names: &[String; 3], persisted: Option<&[u8]>) -> Self {
        let saved: Persisted = persisted.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        let topics = [0, 1, 2].map(|i| TopicState {
            next: next[i],
            max_event_ms: saved.max_event_ms.get(&names[i]).copied(),
            ..TopicState::default()
        });
        Self { topics, dirty: false }
    }

    pub fn next(&self, topic: usize) -> Option<i64> {
        self.topics[topic].next
    }

    /// A message at `offset` was taken into the batch.
    pub fn consumed(&mut self, topic: usize, offset: i64) {
        let t = &mut self.topics[topic];
        t.next = Some(offset + 1);
        t.next_unsaved = false;
        t.quiet = Duration::ZERO;
    }

    /// A valid event with event time `ts` was applied.
    pub fn saw_event_time(&mut self, topic: usize, ts: i64) {
        let slot = &mut self.topics[topic].max_event_ms;
        if slot.is_none_or(|m| ts > m) {
            *slot = Some(ts);
            self.dirty = true;
        }
    }

    /// Where the source will start a topic-partition that had no stored offset. Ignored when an
    /// offset is known already.
    pub fn resolved_start(&mut self, topic: usize, offset: i64) {
        let t = &mut self.topics[topic];
        if t.next.is_none() {
            t.next = Some(offset);
            t.next_unsaved = true;
        }
    }

    /// Start offsets resolved at assignment that must be written with the next commit, so a
    /// restart resumes there instead of resolving `latest` again and skipping what came between.
    pub fn take_unsaved_starts(&mut self) -> Vec<(usize, i64)> {
        let mut out = vec![];
        for (i, t) in self.topics.iter_mut().enumerate() {
            if let (true, Some(n)) = (t.next_unsaved, t.next) {
                out.push((i, n));
                t.next_unsaved = false;
            }
        }
        out
    }

    /// `listened` of polling passed; the topics in `delivered` had messages in it.
    pub fn listened(&mut self, listened: Duration, delivered: [bool; 3]) {
        for (t, got) in self.topics.iter_mut().zip(delivered) {
            if !got {
                t.quiet = t.quiet.saturating_add(listened);
            }
        }
    }

    /// Record the source's high watermark of a topic-partition (None: unknown).
    pub fn set_high_watermark(&mut self, topic: usize, high: Option<i64>) {
        let t = &mut self.topics[topic];
        t.at_end = match (high, t.next) {
            (Some(high), Some(next)) => next >= high,
            // Nothing stored and nothing resolved: only an empty topic-partition is at its end.
            (Some(high), None) => high <= 0,
            (None, _) => false,
        };
    }

    /// The watermark the topics allow (before the step cap); None while a topic that holds it back
    /// has not delivered any event time yet.
    pub fn candidate(&self, idle_after: Duration) -> Option<i64> {
        let holding = |t: &&TopicState| !t.at_end && t.quiet < idle_after;
        let lagging: Vec<Option<i64>> = self.topics.iter().filter(holding).map(|t| t.max_event_ms).collect();
        if lagging.is_empty() {
            self.topics.iter().filter_map(|t| t.max_event_ms).max()
        } else if lagging.iter().any(Option::is_none) {
            None
        } else {
            lagging.into_iter().flatten().min()
        }
    }

    /// The next watermark from `current`: the candidate, at most `max_advance_ms` further (the
    /// first watermark of a partition is not capped: there is nothing to measure a step from).
    pub fn next_watermark(&self, current: i64, cfg: &WatermarkConfig) -> Option<i64> {
        let candidate = self.final_watermark(current, cfg)?;
        Some(if current > 0 { candidate.min(current.saturating_add(cfg.max_advance_ms())) } else { candidate })
    }

    /// The candidate itself, when it is ahead of `current`: where repeated capped steps end. The
    /// pipeline's last pass before it stops moves there at once (see `Pipeline::run`).
    pub fn final_watermark(&self, current: i64, cfg: &WatermarkConfig) -> Option<i64> {
        self.candidate(cfg.idle_after()).filter(|candidate| *candidate > current)
    }

    /// The persisted entry, when it changed since the last call.
    pub fn take_persisted(&mut self, names: &[String; 3]) -> Option<Vec<u8>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let saved = Persisted {
            max_event_ms: (0..3).filter_map(|i| Some((names[i].clone(), self.topics[i].max_event_ms?))).collect(),
        };
        serde_json::to_vec(&saved).ok()
    }

    /// Mark the persisted part as changed (e.g. after a failed commit discarded it).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> [String; 3] {
        ["r".to_string(), "f".to_string(), "t".to_string()]
    }

    fn cfg() -> WatermarkConfig {
        WatermarkConfig { idle_partition_seconds: 30.0, max_advance_hours: 24.0 }
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_lagging_topic_holds_the_watermark_at_its_own_time() {
        let mut p = TopicProgress::restore([Some(0); 3], &names(), None);
        p.saw_event_time(0, 10 * H);
        p.saw_event_time(1, 12 * H);
        p.saw_event_time(2, 20 * H);
        for i in 0..3 {
            p.set_high_watermark(i, Some(100));
        }
        assert_eq!(p.candidate(cfg().idle_after()), Some(10 * H));
        // Decisions caught up: the slowest of the others holds it.
        p.consumed(0, 99);
        p.set_high_watermark(0, Some(100));
        assert_eq!(p.candidate(cfg().idle_after()), Some(12 * H));
    }

    #[test]
    fn caught_up_topics_release_the_latest_time_even_after_a_restore() {
        // Before the restart: tickets (topic 2) were read to their end at 20 h, decisions at 10 h.
        let mut before = TopicProgress::restore([Some(0); 3], &names(), None);
        before.saw_event_time(0, 10 * H);
        before.saw_event_time(2, 20 * H);
        let saved = before.take_persisted(&names()).expect("dirty after new event times");
        assert_eq!(before.take_persisted(&names()), None, "taken once");

        // After it: the decisions drain, nothing more arrives on tickets.
        let mut after = TopicProgress::restore([Some(50), Some(0), Some(7)], &names(), Some(&saved));
        after.consumed(0, 99);
        after.saw_event_time(0, 11 * H);
        after.set_high_watermark(0, Some(100));
        after.set_high_watermark(1, Some(0));
        after.set_high_watermark(2, Some(7));
        assert_eq!(after.candidate(cfg().idle_after()), Some(20 * H), "the tickets' time survives the restart");

        // Without the persisted entry the tickets' time is lost (what went wrong before).
        let mut lost = TopicProgress::restore([Some(50), Some(0), Some(7)], &names(), None);
        lost.consumed(0, 99);
        lost.saw_event_time(0, 11 * H);
        lost.set_high_watermark(0, Some(100));
        lost.set_high_watermark(1, Some(0));
        lost.set_high_watermark(2, Some(7));
        assert_eq!(lost.candidate(cfg().idle_after()), Some(11 * H));
    }

    #[test]
    fn a_renamed_topic_does_not_inherit_progress() {
        let mut p = TopicProgress::restore([Some(0); 3], &names(), None);
        p.saw_event_time(2, 20 * H);
        let saved = p.take_persisted(&names()).unwrap();
        let renamed = ["r".to_string(), "f".to_string(), "t2".to_string()];
        let q = TopicProgress::restore([Some(0); 3], &renamed, Some(&saved));
        assert_eq!(q.topics[2].max_event_ms, None);
    }

    #[test]
    fn a_quiet_topic_stops_holding_the_watermark() {
        let mut p = TopicProgress::restore([Some(0); 3], &names(), None);
        p.saw_event_time(0, 10 * H);
        p.saw_event_time(1, 12 * H);
        // Tickets: high watermark unknown, never delivered anything.
        p.set_high_watermark(0, None);
        p.set_high_watermark(1, None);
        p.set_high_watermark(2, None);
        assert_eq!(p.candidate(cfg().idle_after()), None);
        p.listened(Duration::from_secs(29), [true, true, false]);
        assert_eq!(p.candidate(cfg().idle_after()), None, "not quiet long enough");
        p.listened(Duration::from_secs(2), [true, true, false]);
        assert_eq!(p.candidate(cfg().idle_after()), Some(10 * H));
        // A message resets the quiet time.
        p.consumed(2, 0);
        assert_eq!(p.candidate(cfg().idle_after()), None);
    }

    #[test]
    fn retention_emptied_partitions_and_empty_topics_are_at_their_end() {
        let mut p = TopicProgress::restore([None; 3], &names(), None);
        p.set_high_watermark(0, Some(0));
        assert!(p.topics[0].at_end);
        p.set_high_watermark(1, Some(500));
        assert!(!p.topics[1].at_end, "unknown position, data may remain");
        p.resolved_start(1, 500);
        p.set_high_watermark(1, Some(500));
        assert!(p.topics[1].at_end, "started at the end (latest, or everything expired)");
    }

    #[test]
    fn resolved_starts_are_saved_once_and_never_override_a_stored_offset() {
        let mut p = TopicProgress::restore([Some(5), None, None], &names(), None);
        p.resolved_start(0, 9);
        p.resolved_start(1, 40);
        assert_eq!(p.next(0), Some(5));
        assert_eq!(p.take_unsaved_starts(), vec![(1, 40)]);
        assert_eq!(p.take_unsaved_starts(), vec![]);
        p.resolved_start(2, 3);
        p.consumed(2, 3);
        assert_eq!(p.take_unsaved_starts(), vec![], "a consumed message's offset supersedes the start");
    }

    #[test]
    fn one_step_moves_the_watermark_at_most_the_cap() {
        let mut p = TopicProgress::restore([Some(0); 3], &names(), None);
        p.saw_event_time(0, 1000 * H);
        for i in 0..3 {
            p.set_high_watermark(i, Some(0));
        }
        assert_eq!(p.next_watermark(0, &cfg()), Some(1000 * H), "the first watermark is not capped");
        assert_eq!(p.next_watermark(10 * H, &cfg()), Some(34 * H));
        assert_eq!(p.next_watermark(1000 * H, &cfg()), None);
        assert_eq!(p.next_watermark(i64::MAX - 1, &cfg()), None);
        p.saw_event_time(1, i64::MAX);
        assert_eq!(p.next_watermark(i64::MAX - 5, &cfg()), Some(i64::MAX), "saturates");
    }
}
