//! End to end through a real Kafka broker and a real Postgres: produce events in all three wire
//! formats, run the `tierwatch` binary, and compare the public views with numbers computed by
//! hand from docs/contract.md (attribution, metrics) — including across a graceful restart and across kill -9.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use common::*;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
const MIN: i64 = 60_000;

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn decision(id: &str, conv: &str, turn: i32, at: i64, tier: &str) -> Event {
    let cheap = tier == "cheap";
    RoutingDecision {
        segment: Some("smb".into()),
        query_text: Some("where is my charge from?".into()),
        classifier_version: "clf-1".into(),
        intent: Some("billing".into()),
        threshold: Some(0.6),
        tier: tier.into(),
        model: if cheap { "small-1".into() } else { "large-1".into() },
        latency_ms: if cheap { 120.0 } else { 900.0 },
        input_tokens: 200,
        output_tokens: 100,
        cost_usd: if cheap { 0.001 } else { 0.004 },
        capable_cost_usd: Some(0.004),
        ..testkit::decision(id, conv, turn, at)
    }
    .into()
}

fn feedback(id: &str, conv: &str, turn: Option<i32>, at: i64, kind: FeedbackKind, score: Option<f64>) -> Event {
    Feedback { score, ..testkit::feedback(id, conv, turn, at, kind) }.into()
}

#[allow(clippy::too_many_arguments)]
fn ticket(
    id: &str,
    tid: &str,
    conv: Option<&str>,
    at: i64,
    status: TicketStatus,
    cc: &str,
    ch: &str,
    cost: Option<f64>,
) -> Event {
    SupportTicket {
        conversation_id: conv.map(Into::into),
        status,
        cost_center: cc.into(),
        channel: ch.into(),
        cost_usd: cost,
        reason: Some("billing".into()),
        ..testkit::ticket(id, tid, "", at)
    }
    .into()
}

/// Formats used by the exact scenario: one topic per wire format.
const FORMATS: [WireFormat; 3] = [WireFormat::Avro, WireFormat::Json, WireFormat::Confluent];

#[derive(Debug, PartialEq, Default, Clone)]
struct QualityRow {
    decisions: i64,
    conversations: i64,
    thumbs_up: i64,
    thumbs_down: i64,
    csat_n: i64,
    csat_sum: f64,
    reviews_n: i64,
    reviews_wrong: i64,
    failed_deflections: i64,
    attributed_tickets: i64,
    cost_usd: f64,
    attributed_human_cost_usd: f64,
}

async fn quality(pool: &sqlx::PgPool, view: &str) -> BTreeMap<(i64, String), (QualityRow, bool, Option<f64>)> {
    let rows = sqlx::query(&format!(
        "SELECT bucket, tier, decisions, conversations, thumbs_up, thumbs_down, csat_n, csat_sum, reviews_n, \
         reviews_wrong, failed_deflections, attributed_tickets, cost_usd, attributed_human_cost_usd, mature, latency_p50_ms \
         FROM {view}"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        let bucket: DateTime<Utc> = r.get(0);
        let key = (bucket.timestamp_millis(), r.get::<String, _>(1));
        let row = QualityRow {
            decisions: r.get(2),
            conversations: r.get(3),
            thumbs_up: r.get(4),
            thumbs_down: r.get(5),
            csat_n: r.get(6),
            csat_sum: r.get(7),
            reviews_n: r.get(8),
            reviews_wrong: r.get(9),
            failed_deflections: r.get(10),
            attributed_tickets: r.get(11),
            cost_usd: r.get(12),
            attributed_human_cost_usd: r.get(13),
        };
        let prev = out.insert(key.clone(), (row, r.get::<bool, _>(14), r.get::<Option<f64>, _>(15)));
        assert!(prev.is_none(), "one row per bucket and tier expected in this scenario: {key:?}");
    }
    out
}

fn approx(a: f64, b: f64) -> bool {
    // Money is summed exactly in nano-USD; the only rounding is the final division by 1e9.
    (a - b).abs() < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_numbers_across_formats_out_of_order_and_restart() {
    let env = Env::new("exact").await;
    let d = DAY0;
    let port = free_port();
    let cfg = env.config(
        ["avro", "json", "confluent"],
        &format!(
            r#"
[limits]
max_payload_bytes = 4096
[pricing]
ticket_cost_usd_per_channel = {{ email = 6.0 }}
[batch]
max_events = 50
max_wait_ms = 50
[http]
listen = "127.0.0.1:{port}"
"#
        ),
    );
    let p = env.producer();
    let mut sent = [0i64; 3];

    // ---- Phase 1: outcomes of c2 arrive before c2's decision; every reject reason once. ----
    let phase1 = vec![
        decision("d-c1-0", "c1", 0, d + H + 10 * MIN, "cheap"),
        decision("d-c1-1", "c1", 1, d + H + 40 * MIN, "capable"),
        decision("d-c1-2", "c1", 2, d + 2 * H + 5 * MIN, "cheap"),
        feedback("f-c1-a", "c1", Some(0), d + 3 * H, FeedbackKind::ThumbsDown, None),
        // turn = null at 01:50 → the latest turn at or before it: turn 1 (capable).
        feedback("f-c1-b", "c1", None, d + H + 50 * MIN, FeedbackKind::Csat, Some(4.0)),
        feedback("f-c1-c", "c1", Some(2), d + 3 * H, FeedbackKind::HumanReview, Some(0.0)),
        // 10:00 is within W of turn 2 (02:05): a failed deflection of the cheap tier, hour 02.
        ticket("t1-o", "T1", Some("c1"), d + 10 * H, TicketStatus::Opened, "support", "phone", None),
        // A second ticket on c1: attributed volume, not a second failed deflection.
        ticket("t2-o", "T2", Some("c1"), d + 12 * H, TicketStatus::Opened, "support", "phone", None),
        // c2's feedback and ticket, before its decision.
        feedback("f-c2", "c2", Some(0), d + 3 * H + 5 * MIN, FeedbackKind::ThumbsUp, None),
        ticket("t3-o", "T3", Some("c2"), d + 5 * H, TicketStatus::Opened, "support", "phone", None),
        decision("d-c3-0", "c3", 0, d + 4 * H, "cheap"),
        decision("d-c4-0", "c4", 0, d + 4 * H + 30 * MIN, "capable"),
        // An unlinked ticket, resolved with no cost: priced by channel (email = 6.0).
        ticket("t5-o", "T5", None, d + 6 * H, TicketStatus::Opened, "retention", "email", None),
        ticket("t5-r", "T5", None, d + 9 * H, TicketStatus::Resolved, "retention", "email", None),
        // Duplicates (producer retries).
        decision("d-c4-0", "c4", 0, d + 4 * H + 30 * MIN, "capable"),
        ticket("t1-o", "T1", Some("c1"), d + 10 * H, TicketStatus::Opened, "support", "phone", None),
    ];
    for ev in &phase1 {
        let i = testkit::stream_index(ev);
        send(&p, &env.topics[i], ev, FORMATS[i]).await;
        sent[i] += 1;
    }
    // Malformed events, one per reject reason.
    let good = match decision("bad", "bad", 0, d, "cheap") {
        Event::Decision(x) => x,
        _ => unreachable!(),
    };
    let bad_decisions = [
        RoutingDecision { confidence: 1.5, event_id: "bad-conf".into(), ..good.clone() },
        RoutingDecision { cost_usd: -1.0, event_id: "bad-cost".into(), ..good.clone() },
        RoutingDecision { conversation_id: "".into(), event_id: "bad-conv".into(), ..good.clone() },
        RoutingDecision { ts: Utc::now().timestamp_millis() + 3 * DAY, event_id: "bad-future".into(), ..good.clone() },
        RoutingDecision { query_text: Some("x".repeat(5000)), event_id: "bad-big".into(), ..good.clone() },
    ];
    for bd in &bad_decisions {
        send(&p, &env.topics[0], &Event::Decision(bd.clone()), WireFormat::Avro).await;
        sent[0] += 1;
    }
    send_raw(&p, &env.topics[0], "bad", Some(b"\x02\xff\xfe not avro")).await;
    send_raw(&p, &env.topics[0], "bad", None).await;
    sent[0] += 2;
    let bad_csat = feedback("bad-csat", "bad", Some(0), d, FeedbackKind::Csat, Some(9.0));
    send(&p, &env.topics[1], &bad_csat, WireFormat::Json).await;
    sent[1] += 1;
    let mut unknown_id = tierwatch::decode::encode(
        &ticket("bad-id", "TB", None, d, TicketStatus::Opened, "support", "phone", None),
        WireFormat::Confluent,
        7,
    );
    unknown_id[1..5].copy_from_slice(&99u32.to_be_bytes());
    send_raw(&p, &env.topics[2], "TB", Some(&unknown_id)).await;
    sent[2] += 1;

    let mut daemon = Daemon::start(&cfg, "phase1");
    env.wait_committed(sent, &mut daemon, Duration::from_secs(90)).await;
    // Rejects are counted by topic and reason on /metrics, next to the dead-letter rows.
    let metrics = metrics_once_counted(port, sent.iter().sum());
    let counter = |topic: &str, reason: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("tierwatch_events_rejected_total{")
                    && l.contains(&format!("topic=\"{topic}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(counter(&env.topics[0], "decode_error"), 1.0, "{metrics}");
    assert_eq!(counter(&env.topics[2], "unknown_schema_id"), 1.0);
    assert_eq!(counter(&env.topics[1], "decode_error"), 0.0, "series exist at zero");
    assert!(http_get(port, "/readyz").0.contains("200"));
    let _ = daemon.stop();

    let reasons: Vec<(String, String, i64)> =
        sqlx::query("SELECT topic, reason, COUNT(*) FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let mut expected_reasons = vec![
        (env.topics[0].clone(), "confidence_out_of_range".to_string(), 1),
        (env.topics[0].clone(), "decode_error".to_string(), 1),
        (env.topics[0].clone(), "empty_field".to_string(), 1),
        (env.topics[0].clone(), "empty_payload".to_string(), 1),
        (env.topics[0].clone(), "future_timestamp".to_string(), 1),
        (env.topics[0].clone(), "negative_value".to_string(), 1),
        (env.topics[0].clone(), "payload_too_large".to_string(), 1),
        (env.topics[1].clone(), "invalid_value".to_string(), 1),
        (env.topics[2].clone(), "unknown_schema_id".to_string(), 1),
    ];
    expected_reasons.sort();
    assert_eq!(reasons, expected_reasons);
    let (raw_len, truncated): (i32, bool) =
        sqlx::query("SELECT payload_len, truncated FROM dead_letters WHERE reason = 'payload_too_large'")
            .fetch_one(&env.pool)
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
    assert!(raw_len > 5000, "the original length is kept: {raw_len}");
    assert!(!truncated, "16 KiB bound not reached");
    // c2's outcomes wait in persisted join state across the restart.
    let waiting: i64 =
        sqlx::query("SELECT COUNT(*) FROM tw_join_state WHERE key = 'c:c2'").fetch_one(&env.pool).await.unwrap().get(0);
    assert_eq!(waiting, 1);

    // ---- Phase 2 (after a restart): c2's decision, late tickets, and a clock tick. ----
    let mut phase2 = vec![
        decision("d-c2-0", "c2", 0, d + 3 * H, "cheap"),
        // Resolved the next day: its cost belongs to the day T1 was opened, and to cheap hour 02.
        ticket("t1-r", "T1", Some("c1"), d + DAY + 3 * H, TicketStatus::Resolved, "support", "phone", Some(12.5)),
        // 100 h after c3's only turn: outside W, unattributed volume of day 4.
        ticket("t4-o", "T4", Some("c3"), d + 4 * H + 100 * H, TicketStatus::Opened, "support", "phone", None),
    ];
    // One later conversation per partition moves every partition's watermark past day 0 + 1 d + W.
    let mut clocks = BTreeMap::new();
    for i in 0.. {
        let c = format!("clock-{i}");
        clocks.entry(partition_of(&c)).or_insert(c);
        if clocks.len() == PARTITIONS as usize {
            break;
        }
    }
    for c in clocks.values() {
        phase2.push(decision(&format!("d-{c}"), c, 0, d + 5 * DAY, "cheap"));
    }
    for ev in &phase2 {
        let i = testkit::stream_index(ev);
        send(&p, &env.topics[i], ev, FORMATS[i]).await;
        sent[i] += 1;
    }
    let mut daemon = Daemon::start(&cfg, "phase2");
    env.wait_committed(sent, &mut daemon, Duration::from_secs(90)).await;
    let _ = daemon.stop();

    // ---- The hand computation. ----
    let hourly = quality(&env.pool, "tier_quality_hourly").await;
    let row = |bucket: i64, tier: &str| hourly.get(&(bucket, tier.to_string())).cloned().unwrap_or_default();
    let q = |decisions, conversations| QualityRow { decisions, conversations, ..Default::default() };
    assert_eq!(
        row(d + H, "cheap").0,
        QualityRow { thumbs_down: 1, cost_usd: 0.001, ..q(1, 1) },
        "cheap 01:00: c1 turn 0 with its thumbs-down"
    );
    assert_eq!(
        row(d + H, "capable").0,
        QualityRow { csat_n: 1, csat_sum: 4.0, cost_usd: 0.004, ..q(1, 1) },
        "capable 01:00: c1 turn 1 with the turn-less CSAT"
    );
    assert_eq!(
        row(d + 2 * H, "cheap").0,
        QualityRow {
            reviews_n: 1,
            reviews_wrong: 1,
            failed_deflections: 1,
            attributed_tickets: 2,
            cost_usd: 0.001,
            attributed_human_cost_usd: 12.5,
            ..q(1, 1)
        },
        "cheap 02:00: c1 turn 2, its review, one failed deflection, two tickets, T1's cost"
    );
    assert_eq!(
        row(d + 3 * H, "cheap").0,
        QualityRow { thumbs_up: 1, failed_deflections: 1, attributed_tickets: 1, cost_usd: 0.001, ..q(1, 1) },
        "cheap 03:00: c2, whose outcomes arrived first"
    );
    assert_eq!(row(d + 4 * H, "cheap").0, QualityRow { cost_usd: 0.001, ..q(1, 1) }, "c3: its ticket is outside W");
    assert_eq!(
        row(d + 4 * H, "capable").0,
        QualityRow { cost_usd: 0.004, ..q(1, 1) },
        "c4, once despite its duplicate"
    );
    assert_eq!(hourly.len(), 6 + 1, "six cohort rows plus the clock hour");
    // Latency p50 of the cheap 01:00 row: 120 ms within the histogram's 0.5%.
    let p50 = row(d + H, "cheap").2.unwrap();
    assert!((p50 - 120.0).abs() / 120.0 < 0.005, "p50 {p50}");
    assert!(row(d + H, "cheap").1, "day 0 + 1 h is mature: every partition's watermark is at day 5");
    assert!(!row(d + 5 * DAY, "cheap").1, "the clock hour is not mature");

    let daily = quality(&env.pool, "tier_quality_daily").await;
    let cheap_day = daily[&(d, "cheap".to_string())].0.clone();
    assert_eq!(
        cheap_day,
        QualityRow {
            thumbs_up: 1,
            thumbs_down: 1,
            reviews_n: 1,
            reviews_wrong: 1,
            failed_deflections: 2,
            attributed_tickets: 3,
            cost_usd: 0.004,
            attributed_human_cost_usd: 12.5,
            ..q(4, 3)
        }
    );
    let capable_day = daily[&(d, "capable".to_string())].0.clone();
    assert_eq!(capable_day, QualityRow { csat_n: 1, csat_sum: 4.0, cost_usd: 0.008, ..q(2, 2) });

    // Deflection ledger, engineering's side.
    let rows = sqlx::query(
        "SELECT tier, ai_conversations, failed_deflections, deflected, deflection_rate, inference_cost_usd, \
         capable_cost_usd, inference_saved_usd, attributed_human_cost_usd, excess_human_cost_usd, mature \
         FROM deflection_daily WHERE day = $1 ORDER BY tier",
    )
    .bind(ts(d).date_naive())
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let (cap, cheap) = (&rows[0], &rows[1]);
    assert_eq!(cap.get::<String, _>(0), "capable");
    assert_eq!((cap.get::<i64, _>(1), cap.get::<i64, _>(2), cap.get::<i64, _>(3)), (2, 0, 2));
    assert!(approx(cap.get(7), 0.0) && approx(cap.get(9), 0.0));
    assert_eq!((cheap.get::<i64, _>(1), cheap.get::<i64, _>(2), cheap.get::<i64, _>(3)), (3, 2, 1));
    assert!(approx(cheap.get(4), 1.0 / 3.0));
    assert!(approx(cheap.get(5), 0.004) && approx(cheap.get(6), 0.016) && approx(cheap.get(7), 0.012));
    assert!(approx(cheap.get(8), 12.5));
    // Baseline = capable's same-day rate 0; mean ticket cost of day 0 = (12.5 + 6) / 2.
    // excess = (2/3 − 0) × 3 × 9.25 = 18.5
    assert!(approx(cheap.get(9), 18.5), "excess {}", cheap.get::<f64, _>(9));
    assert!(cheap.get::<bool, _>(10));

    // The other teams' side, by the day the ticket was opened.
    let rows: Vec<(NaiveDate, String, String, i64, i64, i64, f64)> = sqlx::query(
        "SELECT day, cost_center, channel, tickets_opened, attributed_tickets, unattributed_tickets, human_cost_usd \
         FROM human_volume_daily ORDER BY day, cost_center",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
    .collect();
    let day = |ms: i64| ts(ms).date_naive();
    assert_eq!(
        rows,
        vec![
            (day(d), "retention".into(), "email".into(), 1, 0, 1, 6.0),
            (day(d), "support".into(), "phone".into(), 3, 3, 0, 12.5),
            (day(d + 104 * H), "support".into(), "phone".into(), 1, 0, 1, 0.0),
        ]
    );

    let ledger = sqlx::query(
        "SELECT inference_saved_usd, human_cost_usd, excess_human_cost_usd, net_usd FROM ledger_daily WHERE day = $1",
    )
    .bind(day(d))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(approx(ledger.get(0), 0.012));
    assert!(approx(ledger.get(1), 18.5));
    assert!(approx(ledger.get(2), 18.5));
    assert!(approx(ledger.get(3), 0.012 - 18.5));

    let orphans: i64 = sqlx::query("SELECT COALESCE(SUM(count), 0)::bigint FROM tw_orphans")
        .fetch_one(&env.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0, "every outcome found its decision");
}

/// A bulk stream with simple structure, so the expected totals are plain counts:
/// per tier [decisions, conversations, thumbs_down, failed_deflections, attributed tickets].
fn bulk(conversations: usize) -> (Vec<Event>, BTreeMap<String, [i64; 5]>, i64) {
    let d = DAY0;
    let mut expect: BTreeMap<String, [i64; 5]> = BTreeMap::new();
    let mut events = Vec::new();
    let mut tickets = 0;
    for i in 0..conversations {
        let c = format!("bulk-{i}");
        let tier = if i % 3 == 0 { "capable" } else { "cheap" };
        let turns = 1 + (i % 3) as i32;
        let start = d + (i % 20) as i64 * H;
        let e = expect.entry(tier.to_string()).or_default();
        e[0] += turns as i64;
        e[1] += 1;
        for k in 0..turns {
            events.push(decision(&format!("d-{i}-{k}"), &c, k, start + k as i64 * MIN, tier));
        }
        if i % 7 == 0 {
            events.push(feedback(&format!("f-{i}"), &c, Some(0), start + 30 * MIN, FeedbackKind::ThumbsDown, None));
            e[2] += 1;
        }
        if i % 5 == 0 {
            let (id, tid) = (format!("t-{i}"), format!("T{i}"));
            events.push(ticket(&id, &tid, Some(&c), start + 2 * H, TicketStatus::Opened, "support", "chat", None));
            e[3] += 1;
            e[4] += 1;
            tickets += 1;
        }
        if i % 11 == 0 {
            // A producer retry of the first decision.
            events.push(decision(&format!("d-{i}-0"), &c, 0, start, tier));
        }
    }
    (events, expect, tickets)
}

async fn produce_bulk(env: &Env, events: &[Event]) -> [i64; 3] {
    let items = env.on_topics(events.iter().cloned(), WireFormat::Avro);
    send_all(&env.producer(), &items).await;
    topic_counts(&items, &env.topics)
}

async fn committed_total(env: &Env) -> i64 {
    let mut done = 0;
    for t in &env.topics {
        done += env.committed(t).await;
    }
    done
}

/// Wait until the store holds at least `target` committed messages.
async fn wait_progress(env: &Env, target: i64, daemons: &mut [&mut Daemon]) {
    let start = std::time::Instant::now();
    while committed_total(env).await < target {
        for d in daemons.iter_mut() {
            if let Some(s) = d.child.try_wait().unwrap() {
                panic!("daemon exited {s}\n{}", d.log_tail());
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress\n{}", daemons[0].log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_bulk_totals(env: &Env, expect: &BTreeMap<String, [i64; 5]>, tickets: i64, what: &str) {
    let rows = sqlx::query(
        "SELECT tier, SUM(decisions)::bigint, SUM(conversations)::bigint, SUM(thumbs_down)::bigint, \
         SUM(failed_deflections)::bigint, SUM(attributed_tickets)::bigint FROM tier_quality_daily GROUP BY tier ORDER BY tier",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let got: BTreeMap<String, [i64; 5]> =
        rows.into_iter().map(|r| (r.get(0), [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)])).collect();
    assert_eq!(&got, expect, "{what}");
    let opened: i64 = sqlx::query("SELECT SUM(tickets_opened)::bigint FROM human_volume_daily")
        .fetch_one(&env.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(opened, tickets, "{what}");
    let dead: i64 = sqlx::query("SELECT COUNT(*) FROM dead_letters").fetch_one(&env.pool).await.unwrap().get(0);
    assert_eq!(dead, 0, "{what}");
    // The confidence histograms (drift) are committed with the same transaction: exactly once too.
    let (hist_n, hist_conv): (i64, i64) =
        sqlx::query_as("SELECT SUM(n)::bigint, SUM(conversations)::bigint FROM tw_conf_hist")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let decisions: i64 = expect.values().map(|v| v[0]).sum();
    let conversations: i64 = expect.values().map(|v| v[1]).sum();
    assert_eq!((hist_n, hist_conv), (decisions, conversations), "{what}: confidence histograms");
}

/// The daemon is killed with SIGKILL twice in the middle of a stream and restarted; it must end
/// with exactly the totals of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_kill9() {
    let env = Env::new("kill").await;
    let cfg =
        env.config(["avro", "avro", "avro"], "[batch]\nmax_events = 150\nmax_wait_ms = 20\n[http]\nlisten = \"\"\n");
    let (events, expect, tickets) = bulk(1500);
    let sent = produce_bulk(&env, &events).await;
    let total: i64 = sent.iter().sum();
    for round in 0..2 {
        let mut daemon = Daemon::start(&cfg, &format!("kill{round}"));
        // Let it commit part of the stream, then kill it without warning.
        wait_progress(&env, total * (round + 1) / 3, &mut [&mut daemon]).await;
        daemon.kill9();
    }
    let mut daemon = Daemon::start(&cfg, "final");
    env.wait_committed(sent, &mut daemon, Duration::from_secs(120)).await;
    let _ = daemon.stop();
    assert_bulk_totals(&env, &expect, tickets, "totals after two kill -9 restarts").await;
}

/// Two instances in one consumer group: the second joins while the first owns every partition
/// (rebalance), both then consume, then the first is killed and the second takes its partitions
/// over once the session times out (another rebalance). Totals must be exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_rebalances() {
    let env = Env::new("rebal").await;
    let cfg =
        env.config(["avro", "avro", "avro"], "[batch]\nmax_events = 100\nmax_wait_ms = 20\n[http]\nlisten = \"\"\n");
    let (events, expect, tickets) = bulk(1500);
    let third = events.len() / 3;
    let mut sent = produce_bulk(&env, &events[..third]).await;
    let mut a = Daemon::start(&cfg, "a");
    env.wait_committed(sent, &mut a, Duration::from_secs(60)).await;
    let mut b = Daemon::start(&cfg, "b");
    b.wait_log("assigned", Duration::from_secs(60)).await;
    let more = produce_bulk(&env, &events[third..2 * third]).await;
    (0..3).for_each(|i| sent[i] += more[i]);
    env.wait_committed(sent, &mut b, Duration::from_secs(60)).await;
    assert!(a.log().matches("assigned").count() >= 2, "a was rebalanced when b joined\n{}", a.log_tail());
    a.kill9();
    let rest = produce_bulk(&env, &events[2 * third..]).await;
    (0..3).for_each(|i| sent[i] += rest[i]);
    env.wait_committed(sent, &mut b, Duration::from_secs(120)).await;
    assert!(b.log().matches("assigned").count() >= 2, "b took over a's partitions\n{}", b.log_tail());
    let _ = b.stop();
    assert_bulk_totals(&env, &expect, tickets, "totals after a join and a crash in the group").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_topics_that_are_not_copartitioned() {
    let env = Env::new("copart").await;
    let other = format!("{}-x", env.topics[2]);
    create_topics(&env.brokers, std::slice::from_ref(&other), PARTITIONS + 1).await;
    let cfg = env.config(["avro", "avro", "avro"], "[http]\nlisten = \"\"\n");
    let text =
        std::fs::read_to_string(&cfg).unwrap().replace(&format!("\"{}\"", env.topics[2]), &format!("\"{other}\""));
    std::fs::write(&cfg, text).unwrap();
    let mut daemon = Daemon::start(&cfg, "copart");
    let status = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = daemon.log_tail();
    assert!(log.contains("not co-partitioned") && log.contains(&other) && log.contains(": 4"), "{log}");
}
