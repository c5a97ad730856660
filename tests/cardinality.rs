//! Cardinality bounds against the real broker and Postgres: 5,000 distinct bogus `model` values
//! (and some bogus tiers) with small caps keep the aggregate rows bounded, the overflow counter
//! equals what the `__other__` bucket holds, totals stay exact, a conversation beyond its turn
//! limit is dead-lettered, and a run killed with -9 in the middle and restarted ends with exactly
//! the rows of an uninterrupted run (the admitted values are committed with the join state).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

const N: usize = 5_000;
const LONG_TURNS: i32 = 30;
const MAX_TURNS: i32 = 20;
const MAX_VALUES: usize = 10;
const MAX_TIERS: usize = 4;

fn decision(id: String, conv: String, turn: i32, at: i64, tier: String, model: String) -> Event {
    RoutingDecision { tier, model, latency_ms: 40.0, ..testkit::decision(id, conv, turn, at) }.into()
}

/// 5,000 one-turn conversations, each with its own model; every 100th with its own tier too; and
/// one conversation with more turns than the limit.
fn stream(topics: &[String; 3]) -> Vec<(String, Event, WireFormat)> {
    let mut out = vec![];
    for i in 0..N {
        let tier = match i {
            _ if i % 100 == 7 => format!("bogus-tier-{i}"),
            _ if i % 2 == 0 => "cheap".into(),
            _ => "capable".into(),
        };
        let at = DAY0 + i as i64 * 10_000;
        let ev = decision(format!("d-{i}"), format!("c-{i}"), 0, at, tier, format!("bogus-model-{i}"));
        out.push((topics[0].clone(), ev, WireFormat::Avro));
    }
    for k in 0..LONG_TURNS {
        let ev =
            decision(format!("long-{k}"), "long".into(), k, DAY0 + k as i64, "cheap".into(), "bogus-model-long".into());
        out.push((topics[0].clone(), ev, WireFormat::Avro));
    }
    out
}

fn config(env: &Env, port: Option<u16>) -> std::path::PathBuf {
    let listen = port.map_or(String::new(), |p| format!("127.0.0.1:{p}"));
    env.config(
        ["avro", "avro", "avro"],
        &format!(
            "[batch]\nmax_events = 25\nmax_wait_ms = 10\n[http]\nlisten = \"{listen}\"\n\
             [limits]\nmax_dimension_values = {MAX_VALUES}\nmax_tiers = {MAX_TIERS}\n\
             max_turns_per_conversation = {MAX_TURNS}\n"
        ),
    )
}

/// Every daily row: (tier, model, decisions, conversations, cost in nano-USD).
async fn rows(env: &Env) -> Vec<(String, String, i64, i64, i64)> {
    sqlx::query(
        "SELECT tier, model, decisions, conversations, round(cost_usd * 1e9)::bigint FROM tier_quality_daily \
         ORDER BY tier, model, bucket",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

/// Two-column rows of a query.
async fn pairs<A, B>(env: &Env, sql: &str) -> Vec<(A, B)>
where
    A: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    B: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    let rows = sqlx::query(sql).fetch_all(&env.pool).await.unwrap();
    rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The partitions' admitted values as committed.
async fn admitted(env: &Env) -> Vec<(i32, String)> {
    pairs(env, "SELECT partition, convert_from(state, 'UTF8') FROM tw_join_state WHERE key = 'x:admitted' ORDER BY 1")
        .await
}

async fn dead_letters(env: &Env) -> Vec<(String, i64)> {
    pairs(env, "SELECT reason, COUNT(*) FROM dead_letters GROUP BY 1 ORDER BY 1").await
}

fn metric(text: &str, series: &str) -> i64 {
    metric_value(text, series).unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}")) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_values_are_capped_exactly_across_kill_9() {
    let total = (N + LONG_TURNS as usize) as i64;

    // Uninterrupted run.
    let env = Env::new("cardinality").await;
    let port = free_port();
    let cfg = config(&env, Some(port));
    send_all(&env.producer(), &stream(&env.topics)).await;
    let mut daemon = Daemon::start(&cfg, "uninterrupted");
    env.wait_committed([total, 0, 0], &mut daemon, Duration::from_secs(120)).await;
    let metrics = metrics_once_counted(port, total);
    daemon.stop();
    let whole = rows(&env).await;

    let models: std::collections::BTreeSet<&str> = whole.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(models.len(), PARTITIONS as usize * MAX_VALUES + 1, "10 admitted per partition + the bucket");
    assert!(models.contains("__other__"));
    let tiers: std::collections::BTreeSet<&str> = whole.iter().map(|r| r.0.as_str()).collect();
    assert!(tiers.len() <= PARTITIONS as usize * MAX_TIERS + 2, "{tiers:?}");
    assert!(tiers.contains("capable") && tiers.contains("cheap") && tiers.contains("__other__"), "{tiers:?}");
    assert!(whole.len() <= tiers.len() * models.len(), "rows bounded by the caps: {}", whole.len());
    let accepted = N as i64 + MAX_TURNS as i64;
    assert_eq!(whole.iter().map(|r| r.2).sum::<i64>(), accepted, "every accepted decision counted once");
    assert_eq!(whole.iter().map(|r| r.4).sum::<i64>(), accepted * 1_000_000, "cost exact");
    let bucketed: i64 = whole.iter().filter(|r| r.1 == "__other__").map(|r| r.2).sum();
    assert_eq!(metric(&metrics, "tierwatch_dimension_values_capped_total{dimension=\"model\"}"), bucketed);
    assert_eq!(bucketed, accepted - (PARTITIONS as usize * MAX_VALUES) as i64, "one decision per admitted model");
    let bucketed_tiers: i64 = whole.iter().filter(|r| r.0 == "__other__").map(|r| r.2).sum();
    assert_eq!(metric(&metrics, "tierwatch_dimension_values_capped_total{dimension=\"tier\"}"), bucketed_tiers);
    let dead = vec![("conversation_turn_limit".to_string(), (LONG_TURNS - MAX_TURNS) as i64)];
    assert_eq!(dead_letters(&env).await, dead);
    let whole_admitted = admitted(&env).await;
    assert_eq!(whole_admitted.len(), PARTITIONS as usize);

    // The same stream on fresh topics and database, killed with -9 mid-way, then restarted.
    let env2 = Env::new("cardinality_kill").await;
    let cfg2 = config(&env2, None);
    send_all(&env2.producer(), &stream(&env2.topics)).await;
    let mut daemon = Daemon::start(&cfg2, "killed");
    let start = Instant::now();
    loop {
        let done = env2.committed(&env2.topics[0]).await;
        if done >= total / 3 {
            assert!(done < total, "the stream finished before the kill; the test needs a slower batch");
            break;
        }
        assert!(daemon.child.try_wait().unwrap().is_none(), "daemon exited\n{}", daemon.log_tail());
        assert!(start.elapsed() < Duration::from_secs(120), "no progress\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();
    let mut daemon = Daemon::start(&cfg2, "restarted");
    env2.wait_committed([total, 0, 0], &mut daemon, Duration::from_secs(120)).await;
    daemon.stop();
    assert_eq!(rows(&env2).await, whole, "the killed and restarted run groups every event as the uninterrupted one");
    assert_eq!(admitted(&env2).await, whole_admitted);
    assert_eq!(dead_letters(&env2).await, dead);
}
