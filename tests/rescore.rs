//! The rescoring slice end to end through the real broker and Postgres: the simulator's
//! decisions (real query texts) are sampled by the daemon, scored by the committed ONNX model on
//! the worker pool, and land in `review_queue` and `rescore_estimates_daily` exactly as an
//! in-process recomputation (the same sampler, the same model, `stats::weighted`) predicts;
//! HUMAN_REVIEW feedback on a sampled turn lands on its row; the scores feed the drift tables.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::rescore::sampler::SamplerConfig;
use tierwatch::rescore::Rescorer;
use tierwatch::sim::{Scenario, SimConfig};
use tierwatch::stats::weighted::WeightedProportion;
use tierwatch::testkit;

const BASE_RATE: f64 = 0.1;

fn model_path() -> String {
    format!("{}/../models/rescorer.onnx", env!("CARGO_MANIFEST_DIR"))
}

struct Expected {
    p: f64,
    w: f64,
    reason: &'static str,
    tier: String,
    day: chrono::NaiveDate,
    p_complex: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_decisions_are_scored_into_review_queue_and_weighted_estimates() {
    let env = Env::new("rescore").await;
    let mut sim = SimConfig::new(Scenario::Postmortem);
    sim.days = 3;
    sim.conversations_per_day = 250;
    sim.seed = 7;
    let run = tierwatch::sim::generate(&sim);

    // What the daemon must do, computed here with the same sampler and model.
    let sampler = SamplerConfig { base_rate: BASE_RATE, ..SamplerConfig::default() };
    let model = Rescorer::load(model_path()).expect("committed model loads");
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut texts = vec![];
    for ev in &run.events {
        let Event::Decision(d) = ev else { continue };
        let Some(text) = d.query_text.as_deref().filter(|t| !t.trim().is_empty()) else { continue };
        if let Some(s) = sampler.sample(&d.event_id, d.confidence, d.threshold, || model.ood_score(text)) {
            texts.push(text.to_owned());
            let day = chrono::DateTime::from_timestamp_millis(d.ts).unwrap().date_naive();
            expected.insert(
                d.event_id.clone(),
                Expected { p: s.p, w: s.w, reason: s.reason, tier: d.tier.clone(), day, p_complex: f64::NAN },
            );
        }
    }
    // `texts` is in event order; score each sample with its own text.
    let ids: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Decision(d) if expected.contains_key(&d.event_id) => Some(d.event_id.clone()),
            _ => None,
        })
        .collect();
    let scores = model.score_batch(&texts).unwrap();
    assert_eq!(ids.len(), scores.len());
    for (id, s) in ids.iter().zip(scores) {
        if let Some(e) = expected.get_mut(id) {
            e.p_complex = f64::from(s);
        }
    }
    assert!(expected.len() > 100, "{} sampled", expected.len());
    let reasons: std::collections::BTreeSet<&str> = expected.values().map(|e| e.reason).collect();
    assert!(reasons.contains("base") && reasons.contains("low_margin"), "{reasons:?}");

    // HUMAN_REVIEW verdicts on three sampled turns (two wrong, one right), after their decision.
    let mut reviews = vec![];
    for (i, ev) in run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Decision(d) if expected.contains_key(&d.event_id) => Some(d),
            _ => None,
        })
        .take(3)
        .enumerate()
    {
        let review = testkit::feedback(
            format!("review-{i}"),
            ev.conversation_id.clone(),
            Some(ev.turn),
            ev.ts + 60_000,
            FeedbackKind::HumanReview,
        );
        let score = Some(if i == 2 { 1.0 } else { 0.0 });
        reviews.push(Feedback { score, source: Some("review-queue".into()), ..review }.into());
    }
    let reviewed: Vec<(String, i32, bool)> = reviews
        .iter()
        .filter_map(|e| match e {
            Event::Feedback(f) => Some((f.conversation_id.clone(), f.turn.unwrap(), f.score == Some(1.0))),
            _ => None,
        })
        .collect();

    let items = env.on_topics(run.events.iter().chain(&reviews).cloned(), WireFormat::Avro);
    let counts = topic_counts(&items, &env.topics);
    send_all(&env.producer(), &items).await;
    // The daemon serves a copy, so the test can break and mend it under it.
    let served = env.dir.path().join("rescorer.onnx");
    std::fs::copy(model_path(), &served).unwrap();
    std::fs::copy(model_path().replace(".onnx", ".json"), served.with_extension("json")).unwrap();
    let cfg = env.config(
        ["avro", "avro", "avro"],
        &format!(
            "[http]\nlisten = \"\"\n[rescore]\nmodel_path = \"{}\"\nstore_text = \"full\"\nqueue_capacity = 100000\n\
             reload_poll_seconds = 0.2\n[rescore.sampler]\nbase_rate = {BASE_RATE}\n",
            served.display()
        ),
    );
    let mut daemon = Daemon::start(&cfg, "rescore");
    env.wait_committed(counts, &mut daemon, Duration::from_secs(180)).await;

    // Every sample scored.
    let start = Instant::now();
    loop {
        let (n, pending): (i64, i64) = {
            let r = sqlx::query("SELECT COUNT(*), COUNT(*) FILTER (WHERE status <> 'scored') FROM review_queue")
                .fetch_one(&env.pool)
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        if n == expected.len() as i64 && pending == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{n} rows, {pending} unscored\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken model file is refused, by the file watcher and on SIGHUP, and the daemon keeps
    // serving the old model; the mended file is picked up again.
    let wait_log = |daemon: &mut Daemon, needle: &str, times: usize| {
        let start = Instant::now();
        while daemon.log().matches(needle).count() < times {
            assert!(daemon.child.try_wait().unwrap().is_none(), "daemon exited\n{}", daemon.log_tail());
            assert!(start.elapsed() < Duration::from_secs(20), "no {needle:?}\n{}", daemon.log_tail());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    std::fs::write(&served, b"this is not an ONNX model").unwrap();
    wait_log(&mut daemon, "keeping the previous model", 1);
    let hup = std::process::Command::new("kill").args(["-HUP", &daemon.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    wait_log(&mut daemon, "SIGHUP: rescorer reload refused", 1);
    std::fs::copy(model_path(), &served).unwrap();
    wait_log(&mut daemon, "rescorer model reloaded", 1);
    let log = daemon.stop();

    // review_queue: the same sample, the same weights and scores, the full text.
    let rows = sqlx::query(
        "SELECT event_id, inclusion_probability, weight, reason, tier, p_complex, model_version, \
                rescore_threshold, suspected_misroute, query_text IS NOT NULL, review_addressed, conversation_id, turn \
         FROM review_queue ORDER BY event_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let theta = f64::from(model.threshold());
    let mut labelled = vec![];
    for r in &rows {
        let id: String = r.get(0);
        let e = expected.get(&id).unwrap_or_else(|| panic!("unexpected sample {id}"));
        assert!((r.get::<f64, _>(1) - e.p).abs() < 1e-12, "{id} p");
        assert!((r.get::<f64, _>(2) - e.w).abs() < 1e-9, "{id} w");
        assert_eq!(r.get::<String, _>(3), e.reason, "{id}");
        assert_eq!(r.get::<String, _>(4), e.tier, "{id}");
        // Same f32 model output, stored as double.
        assert!((r.get::<f64, _>(5) - e.p_complex).abs() < 1e-6, "{id} p_complex");
        assert_eq!(r.get::<String, _>(6), model.version().to_string());
        assert!((r.get::<f64, _>(7) - theta).abs() < 1e-6);
        let misroute = if e.tier == "capable" { e.p_complex < theta } else { e.p_complex >= theta };
        assert_eq!(r.get::<Option<bool>, _>(8), Some(misroute), "{id}");
        assert!(r.get::<bool, _>(9), "text kept with store_text = full");
        if let Some(addressed) = r.get::<Option<bool>, _>(10) {
            labelled.push((r.get::<String, _>(11), r.get::<i32, _>(12), addressed));
        }
    }
    labelled.sort();
    let mut want = reviewed.clone();
    want.sort();
    assert_eq!(labelled, want, "HUMAN_REVIEW verdicts on their rows");

    // rescore_estimates_daily = Hájek per (day, tier) from stats::weighted (nothing shed here).
    let mut acc: BTreeMap<(chrono::NaiveDate, String), WeightedProportion> = BTreeMap::new();
    for e in expected.values() {
        let misroute = if e.tier == "capable" { e.p_complex < theta } else { e.p_complex >= theta };
        acc.entry((e.day, e.tier.clone())).or_default().add(e.w, misroute).unwrap();
    }
    let est = sqlx::query(
        "SELECT day, tier, sampled, weight_sum, n_eff, suspected_misroute_rate, suspected_misroute_rate_lo, \
                suspected_misroute_rate_hi, shed FROM rescore_estimates_daily ORDER BY day, tier",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(est.len(), acc.len(), "one row per (day, tier)");
    for (r, ((day, tier), w)) in est.iter().zip(&acc) {
        assert_eq!((r.get::<chrono::NaiveDate, _>(0), r.get::<String, _>(1)), (*day, tier.clone()));
        assert_eq!(r.get::<i64, _>(2), w.n as i64);
        assert!((r.get::<f64, _>(3) - w.sum_w).abs() < 1e-6 * w.sum_w);
        assert!((r.get::<f64, _>(4) - w.n_eff().unwrap()).abs() < 1e-9 * w.sum_w);
        assert!((r.get::<f64, _>(5) - w.rate().unwrap()).abs() < 1e-12);
        let (lo, hi) = w.interval95().unwrap();
        assert!((r.get::<f64, _>(6) - lo).abs() < 1e-9 && (r.get::<f64, _>(7) - hi).abs() < 1e-9, "{day} {tier}");
        assert_eq!(r.get::<i64, _>(8), 0);
    }
    // What the misroute alert rule reads: the routed-down tier's rows, the same numbers.
    let pg = std::sync::Arc::new(tierwatch::store::postgres::PgStore::connect(&env.db_url, 2).await.unwrap());
    let eval = tierwatch::store::postgres::PgEvalStore::new(pg);
    let read = tierwatch::drift::evaluator::EvalStore::rescore_estimates(&eval, "capable").await.unwrap();
    let cheap: Vec<_> = acc.iter().filter(|((_, t), _)| t != "capable").collect();
    assert_eq!(read.len(), cheap.len());
    for ((day_ms, tier, e), ((day, t), w)) in read.iter().zip(cheap) {
        assert_eq!(*day_ms, day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis());
        assert_eq!((tier, e.scored), (t, w.n));
        assert!((e.rate - w.rate().unwrap()).abs() < 1e-12);
        assert!((e.weight_sum - w.sum_w).abs() < 1e-6 * w.sum_w && (e.n_eff - w.n_eff().unwrap()).abs() < 1e-6);
    }
    let scored: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(n), 0)::bigint FROM tw_conf_hist WHERE signal = 'rescore_score'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(scored, expected.len() as i64, "every score recorded once in the drift histograms");
    assert!(log.contains("rescorer loaded"), "{log}");
}
