//! Fault injection against the real services: Postgres goes away mid-stream, then the broker
//! restarts. The daemon must keep retrying, lose nothing and count nothing twice.
//!
//! Its own test binary, so no other test shares the servers while they are down (cargo runs test
//! binaries one after another).

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

const H: i64 = 3_600_000;

fn decision(i: usize, k: i32, at: i64) -> Event {
    let tier = if i % 2 == 0 { "cheap" } else { "capable" };
    RoutingDecision {
        router: RouterKind::Cascade,
        classifier_version: "head-1".into(),
        confidence: 0.7,
        tier: tier.into(),
        model: tier.into(),
        escalated: k == 1,
        latency_ms: 50.0,
        ..testkit::decision(format!("d-{i}-{k}"), format!("c-{i}"), k, at)
    }
    .into()
}

fn part(range: std::ops::Range<usize>, topics: &[String; 3]) -> Vec<(String, Event, WireFormat)> {
    let mut out = vec![];
    for i in range {
        let at = DAY0 + (i as i64) * 60_000;
        out.push((topics[0].clone(), decision(i, 0, at), WireFormat::Avro));
        out.push((topics[0].clone(), decision(i, 1, at + 1000), WireFormat::Avro));
        if i % 3 == 0 {
            let ticket = SupportTicket {
                channel: "chat".into(),
                ..testkit::ticket(format!("t-{i}"), format!("T{i}"), format!("c-{i}"), at + H)
            };
            out.push((topics[2].clone(), ticket.into(), WireFormat::Avro));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_database_and_broker_restarts() {
    let env = Env::new("faults").await;
    let cfg =
        env.config(["avro", "avro", "avro"], "[batch]\nmax_events = 200\nmax_wait_ms = 20\n[http]\nlisten = \"\"\n");
    let p = env.producer();
    let n = 900usize;
    let first = part(0..n / 3, &env.topics);
    send_all(&p, &first).await;
    let mut sent = topic_counts(&first, &env.topics);
    let mut daemon = Daemon::start(&cfg, "faults");
    env.wait_committed(sent, &mut daemon, Duration::from_secs(60)).await;

    // Postgres goes down while a new part of the stream arrives.
    let second = part(n / 3..2 * n / 3, &env.topics);
    env.postgres_down_while_producing(&p, &second, &mut daemon).await;
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon must survive a database outage");
    services("postgres-up");
    let env = env.reconnect().await;
    (0..3).for_each(|i| sent[i] += topic_counts(&second, &env.topics)[i]);
    env.wait_committed(sent, &mut daemon, Duration::from_secs(90)).await;

    // The broker restarts; the last part is produced after it is back.
    services("restart-kafka");
    let p = env.producer();
    let third = part(2 * n / 3..n, &env.topics);
    send_all(&p, &third).await;
    (0..3).for_each(|i| sent[i] += topic_counts(&third, &env.topics)[i]);
    env.wait_committed(sent, &mut daemon, Duration::from_secs(120)).await;

    let per_tier = (n / 2) as i64;
    let failed = |parity: usize| (0..n).filter(|i| i % 3 == 0 && i % 2 == parity).count() as i64;
    let want = vec![
        ("capable".to_string(), 2 * per_tier, per_tier, per_tier, failed(1)),
        ("cheap".to_string(), 2 * per_tier, per_tier, per_tier, failed(0)),
    ];
    // Offsets are committed with every message; the last tickets are attributed once the
    // partition's watermark passes them (when the topics are seen caught up), which can take an
    // idle tick or two more after a broker restart.
    let query = "SELECT tier, SUM(decisions)::bigint, SUM(conversations)::bigint, SUM(escalations)::bigint, \
                 SUM(failed_deflections)::bigint FROM tier_quality_daily GROUP BY tier ORDER BY tier";
    let started = std::time::Instant::now();
    let mut got: Vec<(String, i64, i64, i64, i64)>;
    loop {
        got = sqlx::query(query)
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        if got == want || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = daemon.stop();
    std::fs::write(std::env::temp_dir().join("tierwatch-faults-last.log"), &log).unwrap();
    assert_eq!(got, want, "totals after a database outage and a broker restart");
}
