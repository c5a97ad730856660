//! SIGTERM during a Postgres outage: the daemon, retrying a commit, stops promptly without
//! committing anything partial, and a restart once Postgres is back gives exact views.
//!
//! Its own test binary, so no other test shares the server while it is down (cargo runs test
//! binaries one after another).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

fn decision(i: usize) -> Event {
    let tier = if i % 2 == 0 { "cheap" } else { "capable" };
    RoutingDecision {
        router: RouterKind::Cascade,
        classifier_version: "head-1".into(),
        confidence: 0.7,
        tier: tier.into(),
        model: tier.into(),
        latency_ms: 50.0,
        ..testkit::decision(format!("d-{i}"), format!("c-{i}"), 0, DAY0 + i as i64 * 60_000)
    }
    .into()
}

fn part(range: std::ops::Range<usize>, topics: &[String; 3]) -> Vec<(String, Event, WireFormat)> {
    let mut out = vec![];
    for i in range {
        out.push((topics[0].clone(), decision(i), WireFormat::Avro));
        if i % 4 == 0 {
            let down =
                testkit::thumbs_down(format!("f-{i}"), format!("c-{i}"), Some(0), DAY0 + i as i64 * 60_000 + 1000);
            out.push((topics[1].clone(), down.into(), WireFormat::Avro));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_database_outage_stops_promptly_and_a_restart_is_exact() {
    let env = Env::new("outage").await;
    let cfg =
        env.config(["avro", "avro", "avro"], "[batch]\nmax_events = 100\nmax_wait_ms = 20\n[http]\nlisten = \"\"\n");
    let p = env.producer();
    let n = 400usize;
    let first = part(0..n / 2, &env.topics);
    send_all(&p, &first).await;
    let mut daemon = Daemon::start(&cfg, "outage");
    env.wait_committed(topic_counts(&first, &env.topics), &mut daemon, Duration::from_secs(60)).await;

    let second = part(n / 2..n, &env.topics);
    env.postgres_down_while_producing(&p, &second, &mut daemon).await;
    // Let the backoff grow past a few seconds, then stop it while it is still retrying.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopping = Instant::now();
    let log = daemon.stop();
    let took = stopping.elapsed();
    eprintln!("SIGTERM during the outage: stopped in {took:?}");
    services("postgres-up");
    assert!(took < Duration::from_secs(8), "SIGTERM during an outage took {took:?}\n{log}");
    assert!(log.contains("uncommitted batch is dropped"), "{log}");
    let env = env.reconnect().await;

    // Restart: everything is committed exactly once.
    let mut want = topic_counts(&first, &env.topics);
    (0..3).for_each(|i| want[i] += topic_counts(&second, &env.topics)[i]);
    let mut daemon = Daemon::start(&cfg, "outage-restart");
    env.wait_committed(want, &mut daemon, Duration::from_secs(90)).await;
    let half = (n / 2) as i64;
    let thumbs = |parity: usize| (0..n).filter(|i| i % 4 == 0 && i % 2 == parity).count() as i64;
    let expect =
        vec![("capable".to_string(), half, half, thumbs(1), 0), ("cheap".to_string(), half, half, thumbs(0), 0)];
    let got = env.wait_tier_totals(&expect, Duration::from_secs(20)).await;
    daemon.stop();
    assert_eq!(got, expect, "views after SIGTERM during an outage and a restart");
}
