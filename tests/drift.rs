//! Confidence drift end to end through the real broker and Postgres: a classifier whose
//! confidence distribution shifts for a week raises one critical alert that resolves after it
//! shifts back; a stream with no shift raises none; the values in `confidence_drift_daily` equal
//! the statistics of the samples that were sent.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use common::*;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::stats::hist::ConfHist;
use tierwatch::stats::ks::ks_statistic;
use tierwatch::testkit;

const DAY: i64 = 86_400_000;
const DAYS: i64 = 30;

fn day0() -> i64 {
    NaiveDate::from_ymd_opt(2026, 2, 2).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis()
}

/// A smooth, skewed confidence distribution, sampled by low-discrepancy points so every day of
/// the same shape is close to the reference (no false alarm) while a shift is unmistakable.
fn confidence(u: f64, shift: f64) -> f64 {
    let v = 0.35 + 0.6 * u.powf(0.7) - shift;
    (v.clamp(0.0, 1.0) * 1e4).round() / 1e4
}

fn frac(x: f64) -> f64 {
    x - x.floor()
}

struct Stream {
    events: Vec<Event>,
    /// (version, day) → confidences sent
    sent: BTreeMap<(String, i64), Vec<f64>>,
}

/// A classifier version and its confidence as a function of the conversation number.
type Version<'a> = (&'a str, fn(i64) -> f64);

/// `per_day` conversations per day and version; a third of them have two turns.
fn stream(versions: &[Version], per_day: usize) -> Stream {
    let mut events = vec![];
    let mut sent: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for (cv, shift_of_day) in versions {
        for day in 0..DAYS {
            for i in 0..per_day {
                let conv = format!("{cv}-{day}-{i}");
                let turns = if i % 3 == 0 { 2 } else { 1 };
                for k in 0..turns {
                    let u = frac((i * 2 + k) as f64 * 0.618_033_988_749_895 + day as f64 * 0.137);
                    let c = confidence(u, shift_of_day(day));
                    sent.entry((cv.to_string(), day)).or_default().push(c);
                    let at = day0() + day * DAY + (i as i64 * DAY / per_day as i64) + k as i64 * 30_000;
                    events.push(decision(format!("d-{conv}-{k}"), conv.clone(), k as i32, at, cv, c));
                }
            }
        }
    }
    // Time order, as a gateway would emit them.
    events.sort_by_key(|e| e.ts());
    Stream { events, sent }
}

async fn run(env: &Env, s: &Stream, extra: &str) -> Daemon {
    let cfg = env.config(
        ["avro", "avro", "avro"],
        &format!("[http]\nlisten = \"\"\n[drift]\nevaluate_every_seconds = 1\n{extra}"),
    );
    let items = env.on_topics(s.events.iter().cloned(), WireFormat::Avro);
    send_all(&env.producer(), &items).await;
    let mut daemon = Daemon::start(&cfg, "drift");
    env.wait_committed([items.len() as i64, 0, 0], &mut daemon, Duration::from_secs(180)).await;
    daemon
}

/// Wait until the evaluator has seen every committed decision of the complete days.
async fn wait_evaluated(env: &Env, daemon: &mut Daemon, cv: &str, expect_n: i64) {
    let start = Instant::now();
    loop {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(n)::bigint FROM confidence_drift_daily WHERE classifier_version = $1 AND \"window\" = '1d'",
        )
        .bind(cv)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(None);
        if n == Some(expect_n) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "evaluator never caught up ({n:?} of {expect_n})\n{}",
            daemon.log_tail()
        );
        if let Some(st) = daemon.child.try_wait().unwrap() {
            panic!("daemon exited {st}\n{}", daemon.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn day_date(day: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(day0() + day * DAY).unwrap().date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_week_raises_one_critical_alert_that_resolves_and_control_stays_quiet() {
    let env = Env::new("drift").await;
    // "shift": 0.15 lower confidences on days 14..=20; "ctrl": never shifted, reference from its
    // own first 7 days.
    fn shifted(day: i64) -> f64 {
        if (14..=20).contains(&day) {
            0.15
        } else {
            0.0
        }
    }
    fn none(_: i64) -> f64 {
        0.0
    }
    let s = stream(&[("shift", shifted), ("ctrl", none)], 700);
    // Training-time reference of "shift" from a file (one value per line).
    let ref_path = env.dir.path().join("shift-ref.txt");
    let ref_values: Vec<f64> = (0..20_000).map(|j| confidence(frac(j as f64 * 0.618_033_988_749_895), 0.0)).collect();
    std::fs::write(&ref_path, ref_values.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
    // A webhook receiver (Alertmanager format) on loopback.
    let received = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/api/v2/alerts",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let extra = format!(
        "[drift.reference_files]\nshift = \"{}\"\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/api/v2/alerts\"\nformat = \"alertmanager\"\nresend_interval_seconds = 3600\n",
        ref_path.display()
    );
    let mut daemon = run(&env, &s, &extra).await;
    // The watermark reaches the last decision of day 29: days 0..=28 are complete.
    let complete = |cv: &str| -> i64 {
        (0..DAYS - 1).map(|d| s.sent.get(&(cv.to_string(), d)).map_or(0, |v| v.len() as i64)).sum()
    };
    wait_evaluated(&env, &mut daemon, "shift", complete("shift")).await;
    wait_evaluated(&env, &mut daemon, "ctrl", complete("ctrl")).await;
    // A few more passes must not repeat a notification.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = daemon.stop();
    // The webhook got each transition of the episode once.
    let posts = received.lock().unwrap().clone();
    let mut seen: Vec<(String, String, bool)> = vec![];
    for post in &posts {
        for a in post.as_array().unwrap() {
            let labels = &a["labels"];
            seen.push((
                labels["alertname"].as_str().unwrap_or_default().to_string(),
                labels["severity"].as_str().unwrap_or_default().to_string(),
                // Resolved: endsAt in the past (the resolving window). Firing: endsAt ahead, until
                // the next re-post (none here: the resend interval is an hour).
                a.get("endsAt")
                    .and_then(|e| e.as_str())
                    .and_then(|e| DateTime::parse_from_rfc3339(e).ok())
                    .is_some_and(|e| e < Utc::now()),
            ));
            assert!(labels["subject"].as_str().unwrap_or_default().contains("classifier_version=shift"), "{post}");
        }
    }
    // Depending on whether an evaluation pass ran while the episode was still firing, the webhook
    // saw "firing" then "resolved", or (first seen already over) only "resolved" — never a
    // transition twice.
    let firing = ("confidence_drift".to_string(), "critical".to_string(), false);
    let resolved = ("confidence_drift".to_string(), "critical".to_string(), true);
    assert!(seen == vec![firing.clone(), resolved.clone()] || seen == vec![resolved], "{posts:#?}");

    // Every row equals the scipy oracle's figures for exactly the samples sent
    // (tools/oracle/drift_scenario.py → daemon/tests/fixtures/drift_scenario.json).
    let oracle: serde_json::Value =
        serde_json::from_str(include_str!("../daemon/tests/fixtures/drift_scenario.json")).unwrap();
    let oracle_rows = oracle["rows"].as_array().unwrap();
    assert_eq!(oracle_rows.len() as i64, 2 * (DAYS - 1));
    for o in oracle_rows {
        let (day, window) = (o["day"].as_i64().unwrap(), o["window"].as_str().unwrap());
        let r = sqlx::query(
            "SELECT n, n_eff, ks_d, ks_p, psi, psi_noise FROM confidence_drift_daily \
             WHERE classifier_version = 'shift' AND day = $1 AND \"window\" = $2",
        )
        .bind(day_date(day))
        .bind(window)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        let what = format!("day {day} {window}");
        assert_eq!(r.get::<i64, _>(0), o["n"].as_i64().unwrap(), "{what}: n");
        assert_eq!(r.get::<i64, _>(1), o["n_eff"].as_i64().unwrap(), "{what}: n_eff (conversations)");
        let close = |col: usize, key: &str, tol: f64| {
            let (got, want) = (r.get::<f64, _>(col), o[key].as_f64().unwrap());
            assert!((got - want).abs() <= tol, "{what}: {key} {got} vs scipy {want} (tolerance {tol})");
        };
        close(2, "ks_d", 1e-12); // exact on the 1e-4 grid
        close(3, "ks_p", 1e-3); // docs/contract.md#confidence-drift: the contract for n, m ≥ 500
        close(4, "psi", 1e-9);
        close(5, "psi_noise", 1e-9);
    }
    // The same D from this crate's statistics on the samples the test itself sent.
    let reference = ConfHist::from_values(ref_values.iter().copied());
    let rows = sqlx::query(
        "SELECT day, ks_d, status FROM confidence_drift_daily \
         WHERE classifier_version = 'shift' AND \"window\" = '1d' ORDER BY day",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(rows.len() as i64, DAYS - 1);
    let mut statuses = vec![];
    for (day, r) in rows.iter().enumerate() {
        let values = &s.sent[&("shift".to_string(), day as i64)];
        let want = ks_statistic(&reference, &ConfHist::from_values(values.iter().copied())).unwrap();
        assert!((r.get::<f64, _>(1) - want).abs() < 1e-12, "day {day}");
        statuses.push(r.get::<String, _>(2));
    }
    for (day, st) in statuses.iter().enumerate() {
        let expect = if (14..=20).contains(&day) { "critical" } else { "ok" };
        assert_eq!(st, expect, "day {day} daily status; all: {statuses:?}");
    }

    let alerts =
        sqlx::query("SELECT kind, subject, severity, state, fired_at, resolved_at FROM alerts ORDER BY fired_at")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        alerts.len(),
        1,
        "exactly one episode in all: {:?}",
        alerts.iter().map(|r| r.get::<String, _>(1)).collect::<Vec<_>>()
    );
    let a = &alerts[0];
    assert_eq!(a.get::<String, _>(0), "confidence_drift");
    assert!(a.get::<String, _>(1).contains("classifier_version=shift"));
    assert_eq!(a.get::<String, _>(2), "critical");
    assert_eq!(a.get::<String, _>(3), "resolved");
    // Critical after 2 consecutive evaluations: days 14 and 15, so at the end of day 15.
    assert_eq!(a.get::<DateTime<Utc>, _>(4).timestamp_millis(), day0() + 16 * DAY);
    // Resolved after 2 clean evaluations, where a day is clean when its daily AND its 7-day
    // window are: compute that day from the stored statuses.
    let week = sqlx::query("SELECT status FROM confidence_drift_daily WHERE classifier_version = 'shift' AND \"window\" = '7d' ORDER BY day")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let clean: Vec<bool> =
        (0..statuses.len()).map(|d| statuses[d] == "ok" && week[d].get::<String, _>(0) == "ok").collect();
    let resolved_day = (16..clean.len()).find(|&d| clean[d] && clean[d - 1]).expect("clean again");
    assert!(resolved_day > 21, "the 7-day window remembers the shifted week");
    assert_eq!(
        a.get::<Option<DateTime<Utc>>, _>(5).unwrap().timestamp_millis(),
        day0() + (resolved_day as i64 + 1) * DAY
    );

    // The control version took its first 7 days as reference and never alarmed.
    let src: String = sqlx::query_scalar("SELECT source FROM tw_references WHERE classifier_version = 'ctrl'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(src, format!("baseline:{}..{}", day_date(0), day_date(6)));
    let loud: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM confidence_drift_daily WHERE classifier_version = 'ctrl' AND status NOT IN ('ok')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(loud, 0);
}

/// The cheap tier's failed-deflection rate doubles from day 20 while the capable tier's stays:
/// the per-tier rule fires after two consecutive mature days; the pooled (aggregate) signal, if it
/// fires at all, fires later; the capable tier stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tier_quality_regression_leads_the_aggregate_signal() {
    let env = Env::new("quality").await;
    let per_day = 400;
    let mut items: Vec<(String, Event, WireFormat)> = vec![];
    let mut counts = [0i64; 3];
    for day in 0..DAYS {
        for tier in ["cheap", "capable"] {
            for i in 0..per_day {
                let conv = format!("{tier}-{day}-{i}");
                let at = day0() + day * DAY + (i as i64 * DAY / per_day as i64);
                let decision = RoutingDecision {
                    classifier_version: "q".into(),
                    confidence: 0.7,
                    threshold: Some(0.6),
                    tier: tier.into(),
                    model: tier.into(),
                    input_tokens: 1,
                    output_tokens: 1,
                    capable_cost_usd: Some(0.004),
                    ..testkit::decision(format!("d-{conv}"), conv.clone(), 0, at)
                };
                items.push((env.topics[0].clone(), decision.into(), WireFormat::Avro));
                counts[0] += 1;
                let every = if tier == "cheap" && day >= 20 { 10 } else { 20 };
                if i % every == 0 {
                    let ticket =
                        testkit::ticket(format!("t-{conv}"), format!("T-{conv}"), conv.clone(), at + 6 * 3_600_000);
                    items.push((env.topics[2].clone(), ticket.into(), WireFormat::Avro));
                    counts[2] += 1;
                }
            }
        }
    }
    items.sort_by_key(|(_, e, _)| e.ts());
    send_all(&env.producer(), &items).await;
    let cfg = env.config(["avro", "avro", "avro"], "[http]\nlisten = \"\"\n[drift]\nevaluate_every_seconds = 1\n");
    let mut daemon = Daemon::start(&cfg, "quality");
    env.wait_committed(counts, &mut daemon, Duration::from_secs(180)).await;
    // Mature days: day end + 72 h ≤ the watermark (day 29 + 6 h) → days 0..=25.
    let start = Instant::now();
    let fired = loop {
        let row: Option<(DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT fired_at, state FROM alerts WHERE kind = 'tier_quality_regression' \
             AND subject = 'tier=cheap metric=failed_deflection_rate'",
        )
        .fetch_optional(&env.pool)
        .await
        .unwrap();
        if let Some(r) = row {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no per-tier alert\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Give the evaluator one more pass, then stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = daemon.stop();
    assert_eq!(fired.1, "firing");
    assert_eq!(fired.0.timestamp_millis(), day0() + 22 * DAY, "days 20 and 21 regressed → fires at the end of day 21");
    let others: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT kind, subject, fired_at FROM alerts WHERE subject <> 'tier=cheap metric=failed_deflection_rate'",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for (kind, subject, at) in &others {
        // The cheap tier's failures rise in every confidence bin, so the reliability curve's
        // regression is the same finding per bin; nothing else may fire.
        if kind == "calibration_regression" {
            assert_eq!(subject, "classifier_version=q router=PRE_ROUTE");
            continue;
        }
        assert_eq!(kind, "aggregate_quality_regression", "only the pooled signal may also fire: {subject}");
        assert!(at.timestamp_millis() > fired.0.timestamp_millis(), "the per-tier view leads the aggregate");
    }
}
