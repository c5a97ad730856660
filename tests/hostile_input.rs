//! Hostile input against the real broker and Postgres (and a replay into SQLite): values the
//! store cannot hold are dead-lettered with their reason, every good event is counted exactly
//! once, readiness stays up and SIGTERM still stops the daemon.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::Row;
use tierwatch::decode::{encode, WireFormat};
use tierwatch::event::*;
use tierwatch::sim::FileFormat;
use tierwatch::testkit::{self, DAY0};

/// 9999-12-31T23:59:59Z.
const YEAR_9999: i64 = 253_402_300_799_000;

/// (topic, event, wire format) as produced.
type Produced = (String, Event, WireFormat);
/// A `tier_totals` row: (tier, decisions, conversations, thumbs down, failed deflections).
type TierTotals = (String, i64, i64, i64, i64);

fn decision(i: usize, tier: &str) -> RoutingDecision {
    RoutingDecision {
        tier: tier.into(),
        latency_ms: 20.0,
        capable_cost_usd: None,
        ..testkit::decision(format!("d-{i}"), format!("c-{i}"), 0, DAY0 + i as i64 * 1000)
    }
}

fn thumbs_down(i: usize, conversation: &str) -> Feedback {
    testkit::thumbs_down(format!("f-{i}"), conversation, Some(0), DAY0 + i as i64 * 1000 + 500)
}

fn tier_of(i: usize) -> &'static str {
    if i % 2 == 0 {
        "cheap"
    } else {
        "capable"
    }
}

/// `n` decisions and a thumbs-down on every third conversation, and the expected
/// `tier_totals` (tier, decisions, conversations, thumbs down, failed deflections).
fn good_events(n: usize, topics: &[String; 3], formats: [WireFormat; 3]) -> (Vec<Produced>, Vec<TierTotals>) {
    let mut items = vec![];
    let mut want = std::collections::BTreeMap::<String, (i64, i64, i64)>::new();
    for i in 0..n {
        items.push((topics[0].clone(), Event::Decision(decision(i, tier_of(i))), formats[0]));
        let w = want.entry(tier_of(i).into()).or_default();
        w.0 += 1;
        w.1 += 1;
        if i % 3 == 0 {
            items.push((topics[1].clone(), Event::Feedback(thumbs_down(i, &format!("c-{i}"))), formats[1]));
            w.2 += 1;
        }
    }
    (items, want.into_iter().map(|(t, (d, c, td))| (t, d, c, td, 0)).collect())
}

async fn dead_letters(env: &Env) -> Vec<(String, String, String, i32, i32, bool)> {
    sqlx::query(
        "SELECT topic, reason, detail, payload_len, COALESCE(octet_length(payload), 0), truncated \
         FROM tw_dead_letters ORDER BY reason",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

/// The value of a counter series whose line contains every one of `labels`.
fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn stop_within(daemon: Daemon, bound: Duration) -> String {
    let started = Instant::now();
    let log = daemon.stop();
    assert!(started.elapsed() < bound, "SIGTERM took {:?}\n{log}", started.elapsed());
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_rest_counted_exactly() {
    let env = Env::new("hostile").await;
    let port = free_port();
    let cfg = env.config(
        ["avro", "json", "avro"],
        &format!(
            "[limits]\nmax_payload_bytes = 65536\ndead_letter_max_bytes = 1024\n\
             [batch]\nmax_events = 100\nmax_wait_ms = 50\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let formats = [WireFormat::Avro, WireFormat::Json, WireFormat::Avro];
    let (good, want) = good_events(120, &env.topics, formats);
    let p = env.producer();
    // Good traffic first: the daemon is up and committing before the hostile messages arrive.
    let (first, rest) = good.split_at(good.len() / 2);
    send_all(&p, first).await;
    let count = |items: &[(String, Event, WireFormat)]| topic_counts(items, &env.topics);
    let mut daemon = Daemon::start(&cfg, "hostile");
    env.wait_committed(count(first), &mut daemon, Duration::from_secs(60)).await;

    // A NUL in a JSON feedback's conversation id (the poison pill).
    let poison = Event::Feedback(thumbs_down(10_000, "poison\u{0}pill"));
    let poison_bytes = encode(&poison, WireFormat::Json, 0);
    assert!(String::from_utf8_lossy(&poison_bytes).contains("\\u0000"), "JSON escapes NUL");
    // An id longer than an index key allows.
    let long_id = Event::Decision(RoutingDecision { event_id: "e".repeat(4000), ..decision(10_001, "cheap") });
    // A cost whose nano-USD sum overflows 64 bits.
    let huge_cost = Event::Decision(RoutingDecision { cost_usd: 9.5e9, ..decision(10_002, "cheap") });
    // An event in year 9999.
    let far_future = Event::Decision(RoutingDecision { ts: YEAR_9999, ..decision(10_003, "cheap") });
    let hostile = vec![
        (env.topics[1].clone(), poison, WireFormat::Json),
        (env.topics[0].clone(), long_id, WireFormat::Avro),
        (env.topics[0].clone(), huge_cost, WireFormat::Avro),
        (env.topics[0].clone(), far_future, WireFormat::Avro),
    ];
    send_all(&p, &hostile).await;
    // An oversized message (200 KB against a 64 KiB limit).
    let oversized = vec![b'{'; 200_000];
    send_raw(&p, &env.topics[0], "big", Some(&oversized)).await;
    send_all(&p, rest).await;

    let (g, h) = (count(&good), count(&hostile));
    // The oversized message is one more on the routing topic.
    let sent = [g[0] + h[0] + 1, g[1] + h[1], g[2] + h[2]];
    env.wait_committed(sent, &mut daemon, Duration::from_secs(60)).await;

    let got = env.wait_tier_totals(&want, Duration::from_secs(20)).await;
    assert_eq!(got, want, "every good event counted exactly once");
    let dead = dead_letters(&env).await;
    let reasons: Vec<(&str, &str)> = dead.iter().map(|d| (d.0.as_str(), d.1.as_str())).collect();
    let (r, f) = (env.topics[0].as_str(), env.topics[1].as_str());
    assert_eq!(
        reasons,
        vec![
            (r, "future_timestamp"),
            (f, "nul_character"),
            (r, "payload_too_large"),
            (r, "string_too_long"),
            (r, "value_too_large")
        ],
        "{dead:?}"
    );
    let big = dead.iter().find(|d| d.1 == "payload_too_large").unwrap();
    assert_eq!((big.3, big.4, big.5), (200_000, 1024, true), "only the prefix is kept, with the true length");
    assert!(big.2.contains("200000 bytes"), "{}", big.2);
    let nul = dead.iter().find(|d| d.1 == "nul_character").unwrap();
    assert!(nul.2.contains("conversation_id"), "{}", nul.2);

    let (status, _) = http_get(port, "/readyz");
    assert!(status.contains("200"), "readyz: {status}");
    let body = metrics_once_counted(port, sent.iter().sum());
    for (topic, reason) in reasons {
        let n = metric(
            &body,
            "tierwatch_events_rejected_total",
            &[&format!("topic=\"{topic}\""), &format!("reason=\"{reason}\"")],
        );
        assert_eq!(n, Some(1.0), "{topic} {reason}\n{body}");
    }
    stop_within(daemon, Duration::from_secs(10));
}

/// A 5,000-byte hex string: random enough that Postgres cannot compress it below the btree
/// key limit (~2.7 KB).
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_postgres_refuses_is_bisected_out_of_its_batch() {
    let env = Env::new("bisect").await;
    let port = free_port();
    // The dimension limit is set far above what Postgres can index, so validation lets the
    // 5 KB tier through and Postgres refuses it (SQLSTATE 54000).
    let cfg = env.config(
        ["avro", "avro", "avro"],
        &format!(
            "[limits]\nmax_dimension_bytes = 60000\n[batch]\nmax_events = 5000\nmax_wait_ms = 1000\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let formats = [WireFormat::Avro; 3];
    let (mut items, want) = good_events(300, &env.topics, formats);
    let bad = Event::Decision(RoutingDecision {
        conversation_id: "refused".into(),
        ..decision(20_000, &incompressible(5000))
    });
    items.insert(items.len() / 2, (env.topics[0].clone(), bad, WireFormat::Avro));
    let p = env.producer();
    // All produced before the daemon starts: the refused message shares a batch with the others.
    send_all(&p, &items).await;
    let sent = topic_counts(&items, &env.topics);
    let mut daemon = Daemon::start(&cfg, "bisect");
    env.wait_committed(sent, &mut daemon, Duration::from_secs(60)).await;
    let got = env.wait_tier_totals(&want, Duration::from_secs(20)).await;
    assert_eq!(got, want, "every other message committed exactly once");
    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, "store_rejected");
    assert!(dead[0].2.contains("54000"), "the SQLSTATE is in the detail: {}", dead[0].2);
    let (status, _) = http_get(port, "/readyz");
    assert!(status.contains("200"), "readyz: {status}");
    // The refused commits are counted as the store's bad-data errors, and as nothing else.
    let metrics = metrics_once_counted(port, sent.iter().sum());
    let value = |series: &str| metric_value(&metrics, series);
    assert!(value(r#"tierwatch_store_errors_total{class="bad_data"}"#).is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(value(r#"tierwatch_store_errors_total{class="fatal"}"#), Some(0.0), "{metrics}");
    assert_eq!(value(r#"tierwatch_store_errors_total{class="transient"}"#), Some(0.0), "{metrics}");
    let log = stop_within(daemon, Duration::from_secs(10));
    assert!(log.contains("bisecting"), "the batch was bisected\n{log}");
}

#[test]
fn replay_rejects_a_year_9999_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut events: Vec<Event> = (0..20).map(|i| decision(i, tier_of(i)).into()).collect();
    events.push(RoutingDecision { ts: YEAR_9999, ..decision(99, "cheap") }.into());
    let files = testkit::write_event_files(dir.path(), &events, FileFormat::Jsonl);
    let db = dir.path().join("replay.db");
    let cfg = dir.path().join("replay.toml");
    std::fs::write(&cfg, format!("[sqlite]\npath = \"{}\"\n[http]\nlisten = \"\"\n", db.display())).unwrap();
    let stderr = replay(&cfg, &files);
    assert!(stderr.contains("replayed 21 records (1 rejected)"), "{stderr}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let lite = sqlx::sqlite::SqlitePoolOptions::new().connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let wm: i64 = sqlx::query_scalar("SELECT MAX(watermark_ms) FROM tw_partitions").fetch_one(&lite).await.unwrap();
        assert!(wm <= DAY0 + 19_000, "the watermark stays at the good events' time, got {wm}");
        let reason: String = sqlx::query_scalar("SELECT reason FROM tw_dead_letters").fetch_one(&lite).await.unwrap();
        assert_eq!(reason, "future_timestamp");
    });
}

/// A replay whose partition state does not deserialize (damaged here; in practice also written by
/// a newer version) fails, naming the entry, and applies nothing: its offsets stay where they
/// were. Once the entry is put right the same replay goes on from there.
#[test]
fn replay_over_state_that_does_not_load_fails_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = |n: usize| -> Vec<Event> { (0..n).map(|i| decision(i, tier_of(i)).into()).collect() };
    let files = testkit::write_event_files(dir.path(), &events(20), FileFormat::Jsonl);
    let db = dir.path().join("replay.db");
    let cfg = dir.path().join("replay.toml");
    std::fs::write(&cfg, format!("[sqlite]\npath = \"{}\"\n[http]\nlisten = \"\"\n", db.display())).unwrap();
    assert!(replay(&cfg, &files).contains("replayed 20 records"));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let lite =
        rt.block_on(sqlx::sqlite::SqlitePoolOptions::new().connect(&format!("sqlite://{}", db.display()))).unwrap();
    let key = "c:c-3";
    let state = |bytes: Option<Vec<u8>>| {
        rt.block_on(async {
            let good: Vec<u8> = sqlx::query_scalar("SELECT state FROM tw_join_state WHERE partition = 0 AND key = ?")
                .bind(key)
                .fetch_one(&lite)
                .await
                .expect("the open conversation's stored state");
            if let Some(b) = bytes {
                sqlx::query("UPDATE tw_join_state SET state = ? WHERE partition = 0 AND key = ?")
                    .bind(b)
                    .bind(key)
                    .execute(&lite)
                    .await
                    .unwrap();
            }
            good
        })
    };
    let offsets = || -> Vec<(String, i64)> {
        rt.block_on(sqlx::query_as("SELECT topic, next_offset FROM tw_offsets ORDER BY topic").fetch_all(&lite))
            .unwrap()
    };
    let good = state(Some(vec![0x01, 0xff, 0xff, 0xff, 0xff, 0xff]));
    let before = offsets();

    // The files grew by 20 decisions.
    let files = testkit::write_event_files(dir.path(), &events(40), FileFormat::Jsonl);
    let out = replay_command(&cfg, &files).output().expect("run tierwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a replay that could not read its partition fails\n{stderr}");
    assert!(stderr.contains("partition 0 does not deserialize"), "{stderr}");
    assert!(stderr.contains(&format!("join state entry \"{key}\"")), "the entry is named\n{stderr}");
    assert_eq!(offsets(), before, "nothing applied");

    state(Some(good));
    assert!(replay(&cfg, &files).contains("replayed 20 records"), "the rest, once the entry is put right");
    let decisions: i64 =
        rt.block_on(sqlx::query_scalar("SELECT SUM(decisions) FROM tier_quality_daily").fetch_one(&lite)).unwrap();
    assert_eq!(decisions, 40);
}
