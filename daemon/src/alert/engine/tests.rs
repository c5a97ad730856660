//! Unit and property tests of the hysteresis engine.

use proptest::prelude::*;

use super::{episode_id, episodes, firing};
use crate::alert::{AlertState, Episode, Evaluation, Hysteresis, Severity};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

#[derive(Clone, Copy, Debug)]
enum L {
    C,
    W,
    K, // clean
}

fn ev(i: usize, l: L) -> Evaluation {
    let (level, value, threshold) = match l {
        L::K => (None, 0.01, 0.02),
        L::W => (Some(Severity::Warning), 0.05, 0.02),
        L::C => (Some(Severity::Critical), 0.13 + i as f64 / 1000.0, 0.1),
    };
    Evaluation {
        window_start_ms: T0 + i as i64 * DAY,
        window_end_ms: T0 + (i as i64 + 1) * DAY,
        level,
        value,
        threshold,
    }
}

fn evs(ls: &[L]) -> Vec<Evaluation> {
    ls.iter().enumerate().map(|(i, &l)| ev(i, l)).collect()
}

fn end(i: usize) -> i64 {
    T0 + (i as i64 + 1) * DAY
}

fn run(ls: &[L]) -> Vec<Episode> {
    episodes("confidence_drift", "clf-1", &evs(ls), &Hysteresis::default())
}

use L::{C, K, W};

#[test]
fn defaults_match_spec() {
    assert_eq!(Hysteresis::default(), Hysteresis { warning_after: 3, critical_after: 2, resolve_after: 2 });
    assert_eq!(Severity::Warning.as_str(), "warning");
    assert_eq!(Severity::Critical.as_str(), "critical");
    assert!(Severity::Warning < Severity::Critical);
    assert_eq!(serde_json::to_string(&Severity::Critical).ok().as_deref(), Some("\"critical\""));
    assert_eq!(serde_json::to_string(&AlertState::Resolved).ok().as_deref(), Some("\"resolved\""));
}

#[test]
fn empty_and_clean_histories_have_no_episodes() {
    assert!(run(&[]).is_empty());
    assert!(run(&[K, K, K, K]).is_empty());
    assert!(firing(&run(&[K, K])).is_none());
}

#[test]
fn warning_needs_three_consecutive() {
    assert!(run(&[W, W]).is_empty());
    assert!(run(&[W, W, K, W, W, K, W]).is_empty(), "broken streaks never fire");
    let eps = run(&[W, W, W]);
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    assert_eq!(e.severity, Severity::Warning);
    assert_eq!(e.state, AlertState::Firing);
    assert_eq!(e.fired_window_end_ms, end(2));
    assert_eq!((e.window_start_ms, e.window_end_ms), (T0 + 2 * DAY, end(2)));
    assert_eq!(e.escalated_window_end_ms, None);
    assert_eq!(e.resolved_window_end_ms, None);
    assert_eq!(e.id, episode_id("confidence_drift", "clf-1", end(2)));
    assert_eq!(firing(&eps), Some(e));
}

#[test]
fn critical_counts_toward_the_warning_streak() {
    // W C W: three at ≥ warning, but no two consecutive criticals.
    let eps = run(&[W, C, W]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].severity, Severity::Warning);
    assert_eq!(eps[0].fired_window_end_ms, end(2));
}

#[test]
fn critical_needs_two_consecutive_and_fires_directly() {
    assert!(run(&[C]).is_empty());
    assert!(run(&[C, K, C]).is_empty());
    let eps = run(&[C, C]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].severity, Severity::Critical);
    assert_eq!(eps[0].fired_window_end_ms, end(1));
    assert_eq!(eps[0].escalated_window_end_ms, None, "fired critical, not escalated");
    assert_eq!(eps[0].value, ev(1, C).value);
    assert_eq!(eps[0].threshold, 0.1);
    // W C C: the critical streak reaches 2 at the same time the warning streak reaches 3 —
    // critical wins.
    let eps = run(&[W, C, C]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].severity, Severity::Critical);
    assert_eq!(eps[0].escalated_window_end_ms, None);
}

#[test]
fn warning_escalates_within_the_same_episode() {
    let eps = run(&[W, W, W, C, C, C]);
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    assert_eq!(e.severity, Severity::Critical);
    assert_eq!(e.state, AlertState::Firing);
    assert_eq!(e.fired_window_end_ms, end(2));
    assert_eq!(e.escalated_window_end_ms, Some(end(4)));
    assert_eq!((e.window_start_ms, e.window_end_ms), (T0 + 4 * DAY, end(4)));
    assert_eq!(e.value, ev(4, C).value, "value at escalation");
    assert_eq!(e.threshold, 0.1);
    assert_eq!(e.last_value, ev(5, C).value);
    assert_eq!(e.id, episode_id("confidence_drift", "clf-1", end(2)), "id keeps the firing window");
}

#[test]
fn a_single_critical_does_not_escalate() {
    let eps = run(&[W, W, W, C, W, C, K, K]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].severity, Severity::Warning);
    assert_eq!(eps[0].state, AlertState::Resolved);
}

#[test]
fn resolves_after_two_clean() {
    let eps = run(&[C, C, K]);
    assert_eq!(eps[0].state, AlertState::Firing, "one clean is not enough");
    let eps = run(&[C, C, K, W, K]);
    assert_eq!(eps[0].state, AlertState::Firing, "a non-clean evaluation resets the clean streak");
    let eps = run(&[C, C, K, K]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].state, AlertState::Resolved);
    assert_eq!(eps[0].resolved_window_end_ms, Some(end(3)));
    assert_eq!(eps[0].last_value, ev(3, K).value);
    assert!(firing(&eps).is_none());
}

#[test]
fn staying_above_threshold_is_one_episode() {
    let eps = run(&[W, W, W, W, W, W, W, W, W, W]);
    assert_eq!(eps.len(), 1);
    let eps = run(&[C, C, C, C, C, W, C, C]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].severity, Severity::Critical);
}

#[test]
fn a_new_episode_starts_after_resolution() {
    let eps = run(&[C, C, K, K, W, W, W, K, K, C, C]);
    assert_eq!(eps.len(), 3);
    assert_eq!(
        eps.iter().map(|e| e.severity).collect::<Vec<_>>(),
        [Severity::Critical, Severity::Warning, Severity::Critical]
    );
    assert_eq!(
        eps.iter().map(|e| e.state).collect::<Vec<_>>(),
        [AlertState::Resolved, AlertState::Resolved, AlertState::Firing]
    );
    assert_eq!(eps.iter().map(|e| e.fired_window_end_ms).collect::<Vec<_>>(), [end(1), end(6), end(10)]);
    assert_eq!(firing(&eps).map(|e| e.fired_window_end_ms), Some(end(10)));
    // The streak needed after resolution starts from zero: the resolving clean evaluations reset it.
    let eps = run(&[C, C, K, K, C]);
    assert_eq!(eps.len(), 1);
}

#[test]
fn custom_hysteresis_and_zero_counts() {
    let h = Hysteresis { warning_after: 1, critical_after: 3, resolve_after: 1 };
    let eps = episodes("k", "s", &evs(&[C, C, C, K, W]), &h);
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].fired_window_end_ms, end(0));
    assert_eq!(eps[0].severity, Severity::Critical);
    assert_eq!(eps[0].escalated_window_end_ms, Some(end(2)));
    assert_eq!(eps[0].resolved_window_end_ms, Some(end(3)));
    assert_eq!(eps[1].severity, Severity::Warning);
    // 0 behaves as 1: a clean evaluation never fires anything.
    let h0 = Hysteresis { warning_after: 0, critical_after: 0, resolve_after: 0 };
    let h1 = Hysteresis { warning_after: 1, critical_after: 1, resolve_after: 1 };
    let seq = evs(&[K, W, K, C, C, K]);
    assert_eq!(episodes("k", "s", &seq, &h0), episodes("k", "s", &seq, &h1));
    assert_eq!(episodes("k", "s", &seq, &h0).len(), 2);
}

#[test]
fn unordered_input_is_ordered_first() {
    let seq = evs(&[W, W, W, C, C, K, K]);
    let mut shuffled = seq.clone();
    shuffled.reverse();
    shuffled.swap(1, 4);
    assert_eq!(run(&[W, W, W, C, C, K, K]), episodes("confidence_drift", "clf-1", &shuffled, &Hysteresis::default()));
}

#[test]
fn ids_are_stable_and_distinct() {
    // Golden: the id must never change across versions without a migration of stored alerts.
    assert_eq!(episode_id("confidence_drift", "clf-1", T0), episode_id("confidence_drift", "clf-1", T0));
    let id = episode_id("confidence_drift", "clf-1", T0);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(id, GOLDEN_ID);
    assert_ne!(episode_id("ab", "c", T0), episode_id("a", "bc", T0));
    assert_ne!(id, episode_id("confidence_drift", "clf-1", T0 + 1));
    assert_ne!(id, episode_id("confidence_drift", "clf-2", T0));
    assert_ne!(id, episode_id("tier_quality", "clf-1", T0));
}

const GOLDEN_ID: &str = "5f7182e0d3b394f0aa40fca0b5df9cb1";

// ---------- properties ----------

fn arb_levels() -> impl Strategy<Value = Vec<L>> {
    prop::collection::vec(prop_oneof![3 => Just(K), 2 => Just(W), 2 => Just(C)], 0..60)
}

fn arb_h() -> impl Strategy<Value = Hysteresis> {
    (1u32..5, 1u32..5, 1u32..5).prop_map(|(w, c, r)| Hysteresis {
        warning_after: w,
        critical_after: c,
        resolve_after: r,
    })
}

fn idx(e: i64) -> usize {
    ((e - T0) / DAY - 1) as usize
}

/// Number of consecutive evaluations ending at `i` that satisfy `pred`.
fn streak(ls: &[L], i: usize, pred: impl Fn(L) -> bool) -> usize {
    ls[..=i].iter().rev().take_while(|&&l| pred(l)).count()
}

fn is_warn(l: L) -> bool {
    matches!(l, W | C)
}
fn is_crit(l: L) -> bool {
    matches!(l, C)
}
fn is_clean(l: L) -> bool {
    matches!(l, K)
}

proptest! {
    #[test]
    fn prop_ordered_non_overlapping(ls in arb_levels(), h in arb_h()) {
        let eps = episodes("k", "s", &evs(&ls), &h);
        for (i, e) in eps.iter().enumerate() {
            if let Some(x) = e.escalated_window_end_ms {
                prop_assert!(x > e.fired_window_end_ms);
                prop_assert_eq!(e.severity, Severity::Critical);
            }
            match e.state {
                AlertState::Resolved => {
                    let r = e.resolved_window_end_ms.unwrap();
                    prop_assert!(r > e.fired_window_end_ms);
                    prop_assert!(e.escalated_window_end_ms.is_none_or(|x| x < r));
                }
                AlertState::Firing => {
                    prop_assert_eq!(e.resolved_window_end_ms, None);
                    prop_assert_eq!(i, eps.len() - 1, "only the last episode may be firing");
                }
            }
            if let Some(next) = eps.get(i + 1) {
                prop_assert!(e.resolved_window_end_ms.unwrap() < next.fired_window_end_ms);
            }
        }
        prop_assert!(firing(&eps).is_none_or(|f| std::ptr::eq(f, eps.last().unwrap())));
    }

    #[test]
    fn prop_fires_only_after_required_streak(ls in arb_levels(), h in arb_h()) {
        let eps = episodes("k", "s", &evs(&ls), &h);
        let (wa, ca, ra) = (h.warning_after as usize, h.critical_after as usize, h.resolve_after as usize);
        for e in &eps {
            let f = idx(e.fired_window_end_ms);
            let fired_critical = e.severity == Severity::Critical && e.escalated_window_end_ms.is_none();
            if fired_critical {
                prop_assert!(streak(&ls, f, is_crit) >= ca);
            } else {
                prop_assert!(streak(&ls, f, is_warn) >= wa);
                prop_assert!(streak(&ls, f, is_crit) < ca, "should have fired critical");
            }
            if let Some(x) = e.escalated_window_end_ms {
                prop_assert!(streak(&ls, idx(x), is_crit) >= ca);
            }
            if let Some(r) = e.resolved_window_end_ms {
                let r = idx(r);
                prop_assert!(streak(&ls, r, is_clean) >= ra);
                // ... and not earlier.
                prop_assert!((f..r).all(|j| streak(&ls, j, is_clean) < ra));
            }
        }
        // Liveness: every evaluation completing a qualifying streak is inside an episode.
        for i in 0..ls.len() {
            if streak(&ls, i, is_warn) >= wa || streak(&ls, i, is_crit) >= ca {
                let covered = eps.iter().any(|e| {
                    let f = idx(e.fired_window_end_ms);
                    let r = e.resolved_window_end_ms.map_or(usize::MAX, idx);
                    f <= i && i < r
                });
                prop_assert!(covered, "evaluation {} should be firing", i);
            }
        }
    }

    #[test]
    fn prop_deterministic(ls in arb_levels(), h in arb_h()) {
        let seq = evs(&ls);
        let a = episodes("confidence_drift", "clf-1", &seq, &h);
        let b = episodes("confidence_drift", "clf-1", &seq.clone(), &h.clone());
        prop_assert_eq!(&a, &b);
        for e in &a {
            prop_assert_eq!(&e.id, &episode_id("confidence_drift", "clf-1", e.fired_window_end_ms));
        }
        let mut ids: Vec<_> = a.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), a.len());
    }

    #[test]
    fn prop_appending_clean_never_changes_resolved_history(ls in arb_levels(), h in arb_h(), extra in 0usize..10) {
        let seq = evs(&ls);
        let before = episodes("k", "s", &seq, &h);
        let mut longer = ls.clone();
        longer.extend(std::iter::repeat_n(K, extra));
        let after = episodes("k", "s", &evs(&longer), &h);
        if firing(&before).is_none() {
            prop_assert_eq!(&before, &after);
        } else {
            // The firing episode may resolve; nothing else changes and it keeps its identity.
            prop_assert_eq!(before.len(), after.len());
            prop_assert_eq!(&before[..before.len() - 1], &after[..after.len() - 1]);
            let (b, a) = (before.last().unwrap(), after.last().unwrap());
            prop_assert_eq!(&b.id, &a.id);
            prop_assert_eq!(b.severity, a.severity);
            prop_assert_eq!(b.escalated_window_end_ms, a.escalated_window_end_ms);
        }
    }

    #[test]
    fn prop_prefix_stable(ls in arb_levels(), h in arb_h(), cut in 0usize..60) {
        // Evaluating a prefix (the history as known earlier) never contradicts the full history:
        // its resolved episodes are exactly the full history's first ones, and its firing one has
        // the same id and start.
        let cut = cut.min(ls.len());
        let full = episodes("k", "s", &evs(&ls), &h);
        let part = episodes("k", "s", &evs(&ls[..cut]), &h);
        prop_assert!(part.len() <= full.len());
        for (p, f) in part.iter().zip(&full) {
            prop_assert_eq!(&p.id, &f.id);
            prop_assert_eq!(p.fired_window_end_ms, f.fired_window_end_ms);
            if p.state == AlertState::Resolved {
                prop_assert_eq!(p, f);
            }
        }
    }
}
