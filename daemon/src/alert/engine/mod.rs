//! The hysteresis engine: a pure function from the ordered evaluations of one rule for one subject
//! to its alert episodes.
//!
//! Rules (counts from [`Hysteresis`], each at least 1):
//! * streaks: consecutive evaluations at warning *or* critical (the warning streak), at critical
//!   (the critical streak), and clean;
//! * not firing: fire **critical** once the critical streak ≥ `critical_after`, else fire
//!   **warning** once the warning streak ≥ `warning_after`;
//! * firing at warning: **escalate** to critical (same episode, `escalated_window_end_ms` recorded,
//!   the firing window/value/threshold replaced by the escalating one) once the critical streak ≥
//!   `critical_after`;
//! * firing: **resolve** after `resolve_after` consecutive clean evaluations. A new episode can start
//!   after that, from fresh streaks (the resolving evaluation is clean, so every streak is zero).
//!
//! Episodes of one (kind, subject) never overlap; at most the last one is firing. Because the output
//! depends only on the input (ids included, see [`episode_id`]), re-evaluating the whole history after
//! late data, after a restart or on another instance gives the same episodes: storing them is an
//! idempotent upsert by id.

use std::borrow::Cow;

use super::{AlertState, Episode, Evaluation, Hysteresis, Severity};

/// Domain separator of the episode-id hash; bump the version only together with a migration of
/// stored ids.
const ID_DOMAIN: &[u8] = b"tierwatch.alert.episode.v1";

/// The deterministic id of the episode of `kind` for `subject` that fired on the evaluation window
/// ending at `fired_window_end_ms`: 32 lowercase hex digits of XXH3-128 over a length-prefixed
/// encoding of the three (so `("ab", "c")` and `("a", "bc")` differ). Stable across restarts,
/// instances and platforms.
pub fn episode_id(kind: &str, subject: &str, fired_window_end_ms: i64) -> String {
    let mut buf = Vec::with_capacity(ID_DOMAIN.len() + kind.len() + subject.len() + 24);
    buf.extend_from_slice(ID_DOMAIN);
    buf.extend_from_slice(&(kind.len() as u64).to_le_bytes());
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(&(subject.len() as u64).to_le_bytes());
    buf.extend_from_slice(subject.as_bytes());
    buf.extend_from_slice(&fired_window_end_ms.to_le_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&buf))
}

/// The alert episodes of `kind` for `subject` given all its evaluations, in event-time order.
///
/// `evals` should be ordered by `window_end_ms` with one evaluation per window; if it is not
/// ordered, a stably sorted copy is used (so the result never depends on arrival order). Pure and
/// deterministic: the same input always gives the same episodes, ids included. Appending
/// evaluations never changes resolved episodes, nor the id and firing of the last one.
pub fn episodes(kind: &str, subject: &str, evals: &[Evaluation], h: &Hysteresis) -> Vec<Episode> {
    let warning_after = h.warning_after.max(1);
    let critical_after = h.critical_after.max(1);
    let resolve_after = h.resolve_after.max(1);

    let evals: Cow<'_, [Evaluation]> = if evals.is_sorted_by_key(|e| e.window_end_ms) {
        Cow::Borrowed(evals)
    } else {
        let mut v = evals.to_vec();
        v.sort_by_key(|e| e.window_end_ms); // stable
        Cow::Owned(v)
    };

    let mut out = Vec::new();
    let mut current: Option<Episode> = None;
    let (mut warn_streak, mut crit_streak, mut clean_streak) = (0u32, 0u32, 0u32);

    for e in evals.iter() {
        match e.level {
            None => {
                warn_streak = 0;
                crit_streak = 0;
                clean_streak = clean_streak.saturating_add(1);
            }
            Some(Severity::Warning) => {
                warn_streak = warn_streak.saturating_add(1);
                crit_streak = 0;
                clean_streak = 0;
            }
            Some(Severity::Critical) => {
                warn_streak = warn_streak.saturating_add(1);
                crit_streak = crit_streak.saturating_add(1);
                clean_streak = 0;
            }
        }

        match current.as_mut() {
            None => {
                let fire = if crit_streak >= critical_after {
                    Some(Severity::Critical)
                } else if warn_streak >= warning_after {
                    Some(Severity::Warning)
                } else {
                    None
                };
                if let Some(severity) = fire {
                    current = Some(Episode {
                        id: episode_id(kind, subject, e.window_end_ms),
                        kind: kind.to_string(),
                        subject: subject.to_string(),
                        severity,
                        state: AlertState::Firing,
                        fired_window_end_ms: e.window_end_ms,
                        escalated_window_end_ms: None,
                        resolved_window_end_ms: None,
                        window_start_ms: e.window_start_ms,
                        window_end_ms: e.window_end_ms,
                        value: e.value,
                        threshold: e.threshold,
                        last_value: e.value,
                    });
                }
            }
            Some(ep) => {
                ep.last_value = e.value;
                if ep.severity == Severity::Warning && crit_streak >= critical_after {
                    ep.severity = Severity::Critical;
                    ep.escalated_window_end_ms = Some(e.window_end_ms);
                    ep.window_start_ms = e.window_start_ms;
                    ep.window_end_ms = e.window_end_ms;
                    ep.value = e.value;
                    ep.threshold = e.threshold;
                }
                if clean_streak >= resolve_after {
                    ep.state = AlertState::Resolved;
                    ep.resolved_window_end_ms = Some(e.window_end_ms);
                    if let Some(done) = current.take() {
                        out.push(done);
                    }
                }
            }
        }
    }
    out.extend(current);
    out
}

/// The firing episode among one (kind, subject)'s episodes, if any (the latest one that is firing;
/// with [`episodes`]' output that can only be the last).
pub fn firing(episodes: &[Episode]) -> Option<&Episode> {
    episodes.iter().rev().find(|e| e.state == AlertState::Firing)
}

#[cfg(test)]
mod tests;
