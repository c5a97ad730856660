use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;
use crate::decode::{validate, Decoder, DecoderConfig, WireFormat};
use crate::event::{FeedbackKind, RouterKind, RoutingDecision, Stream, TicketStatus};
use crate::stats::{effective_size, ks_statistic, ks_two_sample_with_n_eff, two_proportion_one_sided, ConfHist};

fn cfg(scenario: Scenario, days: u32, per_day: u32, seed: u64) -> SimConfig {
    SimConfig { days, conversations_per_day: per_day, seed, ..SimConfig::new(scenario) }
}

fn decisions(sim: &Simulation) -> impl Iterator<Item = &RoutingDecision> {
    sim.events.iter().filter_map(|e| match e {
        Event::Decision(d) => Some(d),
        _ => None,
    })
}

const DAY_MS: i64 = 86_400_000;

/// Per-day analysis with the daemon's semantics (docs/contract.md#attribution), computed independently here.
#[derive(Default)]
struct DayStats {
    conf: ConfHist,
    convs: BTreeSet<String>,
    decisions: u64,
    thumbs_down: u64,
    /// Per tier: (distinct conversations, failed deflections).
    tiers: BTreeMap<String, (BTreeSet<String>, u64)>,
    /// capable_cost_usd − cost_usd.
    saved: f64,
    /// Cost of RESOLVED tickets (null → the example config's per-channel price), by decision day
    /// of attributed tickets.
    attributed_cost: f64,
}

fn analyse(sim: &Simulation) -> Vec<DayStats> {
    let start = sim.config.start_ms();
    let n_days = sim.config.days as usize;
    let mut days: Vec<DayStats> = (0..n_days).map(|_| DayStats::default()).collect();
    let mut turns: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    let mut attributed: HashMap<&str, usize> = HashMap::new();
    for ev in &sim.events {
        match ev {
            Event::Decision(d) => {
                let day = ((d.ts - start) / DAY_MS) as usize;
                let s = &mut days[day];
                s.conf.record(d.confidence);
                s.convs.insert(d.conversation_id.clone());
                s.decisions += 1;
                s.tiers.entry(d.tier.clone()).or_default().0.insert(d.conversation_id.clone());
                s.saved += d.capable_cost_usd.unwrap_or(d.cost_usd) - d.cost_usd;
                turns.entry(&d.conversation_id).or_default().push((d.ts, &d.tier));
            }
            Event::Feedback(f) if f.kind == FeedbackKind::ThumbsDown => {
                // Attributed to the decision's day; approximated by the feedback's own day.
                let day = ((f.ts - start) / DAY_MS) as usize;
                if day < n_days {
                    days[day].thumbs_down += 1;
                }
            }
            Event::Ticket(t) if t.status == TicketStatus::Opened => {
                let Some(c) = t.conversation_id.as_deref() else { continue };
                if counted.contains(c) {
                    continue;
                }
                let Some(ts) = turns.get(c) else { continue };
                let Some(&(tts, tier)) = ts.iter().rev().find(|(x, _)| *x <= t.ts) else { continue };
                if t.ts - tts <= 72 * 3_600_000 {
                    counted.insert(c);
                    let day = ((tts - start) / DAY_MS) as usize;
                    days[day].tiers.entry(tier.to_owned()).or_default().1 += 1;
                    attributed.insert(t.ticket_id.as_str(), day);
                }
            }
            Event::Ticket(t) if t.status == TicketStatus::Resolved => {
                if let Some(&day) = attributed.get(t.ticket_id.as_str()) {
                    let flat = match t.channel.as_str() {
                        "phone" => 14.0,
                        "email" => 6.0,
                        _ => 4.5,
                    };
                    days[day].attributed_cost += t.cost_usd.unwrap_or(flat);
                }
            }
            _ => {}
        }
    }
    days
}

/// (failed, conversations) of a tier (None = pooled: conversations per tier summed) over days.
fn rate(days: &[DayStats], tier: Option<&str>) -> (u64, u64) {
    let (mut x, mut n) = (0, 0);
    for d in days {
        for (t, (c, f)) in &d.tiers {
            if tier.is_none_or(|want| want == t) {
                x += f;
                n += c.len() as u64;
            }
        }
    }
    (x, n)
}

fn merged_conf(days: &[DayStats]) -> (ConfHist, u64) {
    let mut h = ConfHist::new();
    let mut n = 0;
    for d in days {
        h.merge(&d.conf);
        n += d.convs.len() as u64;
    }
    (h, n)
}

#[test]
fn deterministic_for_a_seed() {
    let a = generate(&cfg(Scenario::Postmortem, 3, 150, 7));
    let b = generate(&cfg(Scenario::Postmortem, 3, 150, 7));
    let c = generate(&cfg(Scenario::Postmortem, 3, 150, 8));
    assert!(a.events.len() > 500);
    assert_eq!(a, b);
    assert_ne!(a.events, c.events);
    // Byte-identical files too.
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    write_jsonl(d1.path(), &a).unwrap();
    write_jsonl_days(d2.path(), &a.config).unwrap();
    write_avro_ocf(d1.path(), &a).unwrap();
    write_avro_ocf_days(d2.path(), &b.config).unwrap();
    for f in [
        "routing_decisions.jsonl",
        "feedback.jsonl",
        "support_tickets.jsonl",
        "ground_truth.jsonl",
        "routing_decisions.avro",
        "feedback.avro",
        "support_tickets.avro",
    ] {
        assert_eq!(std::fs::read(d1.path().join(f)).unwrap(), std::fs::read(d2.path().join(f)).unwrap(), "{f}");
    }
}

#[test]
fn streaming_equals_in_memory_and_events_are_sorted_and_unique() {
    let c = cfg(Scenario::Cascade, 4, 120, 3);
    let sim = generate(&c);
    let mut n = 0;
    for (i, b) in days(&c).enumerate() {
        assert_eq!(b.day as usize, i);
        let end = c.day_start_ms(b.day + 1);
        if b.day + 1 < c.days {
            assert!(b.events.iter().all(|e| e.ts() < end));
        }
        n += b.events.len();
    }
    assert_eq!(n, sim.events.len());
    assert!(sim.events.windows(2).all(|w| w[0].ts() <= w[1].ts()));
    let horizon = c.day_start_ms(c.days);
    assert!(sim.events.iter().all(|e| e.ts() < horizon && e.ts() >= c.start_ms()));
    let ids: BTreeSet<_> = sim.events.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids.len(), sim.events.len(), "unique event ids");
    // Truth matches decisions one to one.
    let dec: BTreeSet<_> = decisions(&sim).map(|d| d.event_id.as_str()).collect();
    let tru: BTreeSet<_> = sim.truth.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(dec, tru);
    // Same seed, other scenario: the same traffic (conversations, texts).
    let pm = generate(&SimConfig { scenario: Scenario::Postmortem, ..c.clone() });
    let texts = |s: &Simulation| {
        decisions(s).map(|d| (d.conversation_id.clone(), d.turn, d.query_text.clone())).collect::<BTreeSet<_>>()
    };
    assert_eq!(texts(&pm), texts(&sim));
}

#[test]
fn every_event_validates() {
    for s in Scenario::ALL {
        let sim = generate(&SimConfig { drain_hours: 96, ..cfg(s, 30, 60, 11) });
        for ev in &sim.events {
            validate(ev, None, 86_400_000).unwrap_or_else(|e| panic!("{s}: {e} in {ev:?}"));
            validate(ev, Some(ev.ts()), 0).unwrap_or_else(|e| panic!("{s}: {e} in {ev:?}"));
            assert!(!message_key(ev).is_empty());
        }
        let d: Vec<_> = decisions(&sim).collect();
        match s {
            Scenario::Cascade => {
                assert!(d.iter().all(|d| d.router == RouterKind::Cascade && d.classifier_version == "selfconf-1"));
                assert!(d.iter().all(|d| d.escalated == (d.tier == "capable")));
                for d in d.iter().filter(|d| d.escalated) {
                    assert!(d.cost_usd > d.capable_cost_usd.unwrap());
                }
            }
            _ => {
                assert!(d.iter().all(|d| d.router == RouterKind::PreRoute && !d.escalated));
                for d in &d {
                    assert_eq!(d.tier == "cheap", d.confidence >= 0.6);
                    let cap = d.capable_cost_usd.unwrap();
                    if d.tier == "cheap" {
                        assert!((d.cost_usd / cap - 0.25).abs() < 1e-3, "{} vs {cap}", d.cost_usd);
                    } else {
                        assert_eq!(d.cost_usd, cap);
                    }
                }
            }
        }
        // Redaction, multi-turn, tier switches within a conversation, null ticket costs,
        // conversation-level feedback, unlinked tickets are all exercised.
        assert!(d.iter().any(|d| d.query_text.is_none()));
        assert!(d.iter().any(|d| d.turn == 3));
        let mut tiers: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for d in &d {
            tiers.entry(&d.conversation_id).or_default().insert(&d.tier);
        }
        assert!(tiers.values().any(|t| t.len() == 2));
        let tickets: Vec<_> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Ticket(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(tickets.iter().any(|t| t.status == TicketStatus::Resolved && t.cost_usd.is_none()));
        assert!(tickets.iter().any(|t| t.status == TicketStatus::Resolved && t.cost_usd.is_some()));
        assert!(tickets.iter().any(|t| t.conversation_id.is_none()));
        for cc in ["support", "customer-experience", "retention"] {
            assert!(tickets.iter().any(|t| t.cost_center == cc), "{cc}");
        }
        let fb: Vec<_> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Feedback(f) => Some(f),
                _ => None,
            })
            .collect();
        for k in FeedbackKind::ALL {
            assert!(fb.iter().any(|f| f.kind == k), "{k:?}");
        }
        assert!(fb.iter().any(|f| f.turn.is_none()));
    }
}

#[test]
fn varied_texts_and_intents_in_a_week() {
    let sim = generate(&cfg(Scenario::Control, 7, 300, 1));
    let texts: BTreeSet<_> = decisions(&sim).filter_map(|d| d.query_text.as_deref()).collect();
    let intents: BTreeSet<_> = sim.truth.iter().map(|t| t.true_intent.as_str()).collect();
    assert!(intents.len() >= 20, "{} intents", intents.len());
    assert!(texts.len() >= 500, "{} texts", texts.len());
    // Hidden complexity reads like the simple center: the very same openers occur as both.
    let by_id: HashMap<_, _> = decisions(&sim).map(|d| (d.event_id.as_str(), d)).collect();
    let mut simple_texts = BTreeSet::new();
    let mut hidden_texts = BTreeSet::new();
    for t in sim.truth.iter().filter(|t| t.turn == 0) {
        if let Some(q) = by_id[t.event_id.as_str()].query_text.as_deref() {
            if t.hidden_complexity {
                hidden_texts.insert(q);
            } else if t.true_complexity == Complexity::Simple {
                simple_texts.insert(q);
            }
        }
    }
    assert!(!hidden_texts.is_empty());
    assert!(hidden_texts.intersection(&simple_texts).next().is_some(), "some hidden openers are verbatim simple ones");
    // Paraphrase styling shows up (typos themselves are tested in `text`).
    assert!(texts.iter().any(|t| t.starts_with("hi ") || t.starts_with("hey, ")));
    assert!(texts.iter().any(|t| t.chars().all(|c| !c.is_ascii_uppercase())));
    // Surface-simple openers of hidden complexity, and the new product only after the drift.
    assert!(texts.iter().any(|t| t.to_ascii_lowercase().contains("where is my charge from")));
    assert!(!texts.iter().any(|t| t.contains("FlexPay")), "control has no FlexPay cohort");
}

#[test]
fn simple_complex_split_is_65_35() {
    for s in [Scenario::Control, Scenario::Postmortem] {
        let sim = generate(&cfg(s, 7, 800, 5));
        let conv: BTreeMap<_, _> =
            sim.truth.iter().filter(|t| t.turn == 0).map(|t| (&t.conversation_id, t.true_complexity)).collect();
        let simple = conv.values().filter(|c| **c == Complexity::Simple).count() as f64 / conv.len() as f64;
        assert!((simple - 0.65).abs() <= 0.03, "{s}: simple share {simple}");
    }
}

#[test]
fn control_baseline_rates() {
    let sim = generate(&cfg(Scenario::Control, 28, 600, 9));
    let days = analyse(&sim);
    let dec: u64 = days.iter().map(|d| d.decisions).sum();
    let td: u64 = days.iter().map(|d| d.thumbs_down).sum();
    let per_mille = td as f64 * 1000.0 / dec as f64;
    assert!((1.5..=5.0).contains(&per_mille), "thumbs-down per 1000 decisions: {per_mille}");
    let up = sim.events.iter().filter(|e| matches!(e, Event::Feedback(f) if f.kind == FeedbackKind::ThumbsUp)).count();
    assert!(up as u64 > td * 5, "more thumbs-up than down");
    // Failed cheap answers: tickets mostly within 72 h of the conversation's last answer.
    let opened: HashMap<&str, i64> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Ticket(t) if t.status == TicketStatus::Opened => Some((t.ticket_id.as_str(), t.ts)),
            _ => None,
        })
        .collect();
    let mut last_turn: HashMap<&str, i32> = HashMap::new();
    for t in &sim.truth {
        let e = last_turn.entry(&t.conversation_id).or_insert(0);
        *e = (*e).max(t.turn);
    }
    let (mut within, mut total, mut failed_cheap, mut failed_cheap_last) = (0, 0, 0, 0);
    for t in &sim.truth {
        if t.cheap_answer_failed {
            failed_cheap += 1;
            if last_turn[t.conversation_id.as_str()] == t.turn {
                failed_cheap_last += 1;
            }
        }
        if let (true, Some(id)) = (t.cheap_answer_failed, &t.ticket_id) {
            if let Some(&ots) = opened.get(id.as_str()) {
                total += 1;
                let hours = (ots - t.ts) as f64 / 3_600_000.0;
                assert!(hours > 0.1, "hours, not seconds: {hours}");
                if hours <= 72.0 {
                    within += 1;
                }
            }
        }
    }
    let share = within as f64 / total as f64;
    // (A failure followed by a good answer in a later turn is resolved: count the last turns.)
    assert!(
        total as f64 > 0.4 * failed_cheap_last as f64,
        "failed cheap last answers often lead to a ticket: {total}/{failed_cheap_last}"
    );
    assert!(share > 0.85 && share < 0.99, "share within 72 h: {share}");
    // Failed cheap answers rarely get a thumbs-down.
    let downs: BTreeSet<(String, Option<i32>)> = sim
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Feedback(f) if f.kind == FeedbackKind::ThumbsDown => Some((f.conversation_id.clone(), f.turn)),
            _ => None,
        })
        .collect();
    let down_on_failed = sim
        .truth
        .iter()
        .filter(|t| t.cheap_answer_failed && downs.contains(&(t.conversation_id.clone(), Some(t.turn))))
        .count();
    assert!((down_on_failed as f64) < 0.05 * failed_cheap as f64);
}

#[test]
fn postmortem_confidence_drifts_control_does_not() {
    // Weeks 1–2 (reference) against week 12, streamed day by day.
    let per_day = 2000;
    let run = |s: Scenario| {
        let c = cfg(s, 84, per_day, 21);
        let mut ref_h = ConfHist::new();
        let mut wk12 = ConfHist::new();
        for b in days(&c) {
            if b.day >= 14 && b.day < 77 {
                continue;
            }
            for e in &b.events {
                if let Event::Decision(d) = e {
                    let day = ((d.ts - c.start_ms()) / DAY_MS) as u32;
                    if day < 14 {
                        ref_h.record(d.confidence);
                    } else if (77..84).contains(&day) {
                        wk12.record(d.confidence);
                    }
                }
            }
        }
        ks_statistic(&ref_h, &wk12).unwrap()
    };
    let pm = run(Scenario::Postmortem);
    let ctl = run(Scenario::Control);
    assert!(pm >= 0.05, "postmortem week-12 KS D {pm}");
    assert!(ctl < 0.02, "control week-12 KS D {ctl}");
}

#[test]
fn files_decode_back_to_the_same_events() {
    let sim = generate(&SimConfig { drain_hours: 24, ..cfg(Scenario::Postmortem, 3, 80, 4) });
    let dir = tempfile::tempdir().unwrap();
    let js = write_jsonl(dir.path(), &sim).unwrap();
    let av = write_avro_ocf(dir.path(), &sim).unwrap();
    assert_eq!(js.decisions, av.decisions);
    assert_eq!((js.decisions + js.feedback + js.tickets) as usize, sim.events.len());
    let mut by_stream: HashMap<Stream, Vec<&Event>> = HashMap::new();
    for e in &sim.events {
        by_stream.entry(e.stream()).or_default().push(e);
    }
    for (stream, name) in
        [(Stream::Routing, "routing_decisions"), (Stream::Feedback, "feedback"), (Stream::Tickets, "support_tickets")]
    {
        let want = &by_stream[&stream];
        // JSON Lines.
        let dec = Decoder::new(DecoderConfig::new(stream, WireFormat::Json));
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.jsonl"))).unwrap();
        let got: Vec<Event> = text.lines().map(|l| dec.decode(Some(l.as_bytes()), None).unwrap()).collect();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(want.iter()).all(|(a, b)| a == *b), "{name}.jsonl");
        // Avro container: each record re-encoded as a datum and decoded by tierwatch's decoder.
        let dec = Decoder::new(DecoderConfig::new(stream, WireFormat::Avro));
        let f = std::fs::File::open(dir.path().join(format!("{name}.avro"))).unwrap();
        let reader = apache_avro::Reader::new(std::io::BufReader::new(f)).unwrap();
        assert_eq!(reader.writer_schema(), crate::decode::schema(stream));
        let got: Vec<Event> = reader
            .map(|v| {
                let datum = apache_avro::to_avro_datum(crate::decode::schema(stream), v.unwrap()).unwrap();
                dec.decode(Some(&datum), None).unwrap()
            })
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(want.iter()).all(|(a, b)| a == *b), "{name}.avro");
    }
    let truth: Vec<GroundTruth> = std::fs::read_to_string(dir.path().join(TRUTH_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(truth, sim.truth);
}

/// Measured rates and a re-implementation of the alert rules (docs/contract.md#alert-rules) on the simulated streams:
/// `cargo test -p tierwatch --release --lib sim::tests::report -- --ignored --nocapture`.
#[test]
#[ignore]
fn report() {
    let per_day: u32 = std::env::var("SIM_PER_DAY").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    for s in Scenario::ALL {
        let t0 = std::time::Instant::now();
        let seed: u64 = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(42);
        let mut c = cfg(s, 140, per_day, seed);
        // SIM_DRIFT="per_week,hidden_start,hidden_end,hidden_ramp_weeks" overrides the drift.
        if let (Some(d), Ok(v)) = (c.drift.as_mut(), std::env::var("SIM_DRIFT")) {
            let v: Vec<f64> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            if let [a, b, e, r] = v[..] {
                (d.per_week, d.hidden_start, d.hidden_end, d.hidden_ramp_weeks) = (a, b, e, r);
            }
        }
        let sim = generate(&c);
        let gen_s = t0.elapsed().as_secs_f64();
        let days = analyse(&sim);
        println!("== {s}: {} events, {} decisions, generated in {gen_s:.2}s", sim.events.len(), sim.truth.len());
        let base = &days[..14];
        let (ref_h, ref_c) = merged_conf(base);
        let bcheap = rate(base, Some("cheap"));
        let bcap = rate(base, Some("capable"));
        let bpool = rate(base, None);
        println!(
            "baseline failed-deflection: cheap {:.4} capable {:.4} pooled {:.4}",
            bcheap.0 as f64 / bcheap.1 as f64,
            bcap.0 as f64 / bcap.1 as f64,
            bpool.0 as f64 / bpool.1 as f64
        );
        let alpha = 0.001 / 12.0;
        let mut streak = [0u32; 4];
        let mut fired: [Option<usize>; 4] = [None; 4];
        let names = ["drift-warning(7d)", "drift-critical(7d)", "per-tier cheap(7d)", "aggregate(7d)"];
        for d in 6..days.len() {
            let w = &days[d - 6..=d];
            let (h, c) = merged_conf(w);
            let ks = ks_two_sample_with_n_eff(&ref_h, &h, effective_size(ref_c, c)).unwrap();
            let conds = [
                d >= 20 && ks.d >= 0.02 && ks.p_value < 0.001,
                d >= 20 && ks.d >= 0.1 && ks.p_value < 0.001,
                d >= 20 && {
                    let (x, n) = rate(w, Some("cheap"));
                    let t = two_proportion_one_sided(x, n, bcheap.0, bcheap.1).unwrap();
                    t.p_value < alpha && x as f64 / n as f64 >= 1.2 * bcheap.0 as f64 / bcheap.1 as f64
                },
                d >= 20 && {
                    let (x, n) = rate(w, None);
                    let t = two_proportion_one_sided(x, n, bpool.0, bpool.1).unwrap();
                    t.p_value < alpha && x as f64 / n as f64 >= 1.2 * bpool.0 as f64 / bpool.1 as f64
                },
            ];
            let need = [3, 2, 2, 2];
            for i in 0..4 {
                streak[i] = if conds[i] { streak[i] + 1 } else { 0 };
                if streak[i] >= need[i] && fired[i].is_none() {
                    fired[i] = Some(d);
                }
            }
            if d % 7 == 6 {
                let wk = d / 7 + 1;
                let dec: u64 = w.iter().map(|x| x.decisions).sum();
                let td: u64 = w.iter().map(|x| x.thumbs_down).sum();
                let (xc, nc) = rate(w, Some("cheap"));
                let (xk, nk) = rate(w, Some("capable"));
                let (xp, np) = rate(w, None);
                let hidden = sim
                    .truth
                    .iter()
                    .filter(|t| t.turn == 0 && ((t.ts - sim.config.start_ms()) / DAY_MS) as usize / 7 + 1 == wk);
                let (mut nh, mut nt) = (0, 0);
                for t in hidden {
                    nt += 1;
                    nh += usize::from(t.hidden_complexity);
                }
                let daily_d = ks_statistic(&ref_h, &days[d].conf).unwrap();
                let saved: f64 = w.iter().map(|x| x.saved).sum::<f64>() / 7.0;
                let human: f64 = w.iter().map(|x| x.attributed_cost).sum::<f64>();
                let mean_cost = human / xp.max(1) as f64;
                let base_rate = bpool.0 as f64 / bpool.1 as f64;
                let excess = (xc as f64 / nc as f64 - base_rate).max(0.0) * nc as f64 * mean_cost / 7.0;
                println!(
                    "wk{wk:2} KS7d {:.4} p {:.1e} KS1d {:.4} | td/1000 {:.2} | ticket rate cheap {:.4} capable {:.4} pooled {:.4} | hidden {:.3} | cheap share {:.3} | $/day saved {saved:.0} excess(cheap vs pooled baseline) {excess:.0} mean ticket {mean_cost:.2}",
                    ks.d,
                    ks.p_value,
                    daily_d,
                    td as f64 * 1000.0 / dec as f64,
                    xc as f64 / nc as f64,
                    xk as f64 / nk as f64,
                    xp as f64 / np as f64,
                    nh as f64 / nt as f64,
                    nc as f64 / np as f64,
                );
            }
        }
        for i in 0..4 {
            println!("  {:20} first fires day {:?} (week {:?})", names[i], fired[i], fired[i].map(|d| d / 7 + 1));
        }
    }
}
