//! Replay (backfill) from files into the real Postgres: JSON Lines and Avro container files give
//! the same numbers, and replaying the same files again changes nothing.

#[path = "common/mod.rs"]
mod common;

use common::*;
use sqlx::Row;
use tierwatch::event::*;
use tierwatch::sim::FileFormat;
use tierwatch::testkit::{self, DAY0};

const H: i64 = 3_600_000;

fn events() -> Vec<Event> {
    let mut out = vec![];
    for i in 0..600 {
        let c = format!("r-{i}");
        let tier = if i % 4 == 0 { "capable" } else { "cheap" };
        let at = DAY0 + i as i64 * 120_000;
        for k in 0..(1 + i % 2) {
            let d = RoutingDecision {
                segment: Some("smb".into()),
                query_text: Some(format!("where is my order {i}?")),
                confidence: 0.5 + (i % 50) as f64 / 100.0,
                threshold: Some(0.6),
                tier: tier.into(),
                model: tier.into(),
                latency_ms: 100.0,
                capable_cost_usd: Some(0.004),
                ..testkit::decision(format!("d-{i}-{k}"), c.clone(), k, at + k as i64 * 1000)
            };
            out.push(d.into());
        }
        if i % 6 == 0 {
            out.push(testkit::thumbs_down(format!("f-{i}"), c.clone(), None, at + 60_000).into());
        }
        if i % 5 == 0 {
            out.push(testkit::ticket(format!("t-{i}"), format!("T{i}"), c.clone(), at + 5 * H).into());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_exact_resumable_and_format_independent() {
    let evs = events();
    let mut expect = std::collections::BTreeMap::<String, (i64, i64, i64, i64)>::new();
    for i in 0..600 {
        let tier = if i % 4 == 0 { "capable" } else { "cheap" };
        let e = expect.entry(tier.into()).or_default();
        e.0 += 1 + (i % 2) as i64;
        e.1 += 1;
        e.2 += (i % 6 == 0) as i64;
        e.3 += (i % 5 == 0) as i64;
    }
    let expect: Vec<_> = expect.into_iter().map(|(t, v)| (t, v.0, v.1, v.2, v.3)).collect();

    let json_env = Env::new("replayjson").await;
    let files = testkit::write_event_files(json_env.dir.path(), &evs, FileFormat::Jsonl);
    // One malformed line: dead-lettered, never fatal.
    let mut feedback = std::fs::OpenOptions::new().append(true).open(&files[1]).unwrap();
    std::io::Write::write_all(&mut feedback, b"{\"event_id\": \"broken\"\n").unwrap();
    // No [kafka] section: replay reads files.
    let cfg = json_env.dir.path().join("replay.toml");
    std::fs::write(&cfg, format!("[postgres]\nurl = \"{}\"\n[http]\nlisten = \"\"\n", json_env.db_url)).unwrap();
    let first = replay(&cfg, &files);
    assert!(first.contains(&format!("replayed {} records (1 rejected)", evs.len() + 1)), "{first}");
    assert_eq!(json_env.tier_totals().await, expect);
    let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(&json_env.pool).await.unwrap();
    assert_eq!(dead, 1);
    // Again: nothing new is applied.
    let second = replay(&cfg, &files);
    assert!(second.contains("replayed 0 records"), "{second}");
    assert_eq!(json_env.tier_totals().await, expect);

    let avro_env = Env::new("replayavro").await;
    let files = testkit::write_event_files(avro_env.dir.path(), &evs, FileFormat::AvroOcf);
    let cfg = avro_env.dir.path().join("replay.toml");
    std::fs::write(&cfg, format!("[postgres]\nurl = \"{}\"\n[http]\nlisten = \"\"\n", avro_env.db_url)).unwrap();
    replay(&cfg, &files);
    assert_eq!(avro_env.tier_totals().await, expect, "Avro container files give the same numbers");

    // The embedded store: the same replay into SQLite gives the same view rows as Postgres.
    let db = avro_env.dir.path().join("embedded.db");
    let cfg = avro_env.dir.path().join("sqlite.toml");
    std::fs::write(&cfg, format!("[sqlite]\npath = \"{}\"\n[http]\nlisten = \"\"\n", db.display())).unwrap();
    replay(&cfg, &files);
    let again = replay(&cfg, &files);
    assert!(again.contains("replayed 0 records"), "{again}");
    let lite = sqlx::sqlite::SqlitePoolOptions::new().connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let q = "SELECT tier, SUM(decisions), SUM(conversations), SUM(thumbs_down), SUM(failed_deflections) \
             FROM tier_quality_daily GROUP BY tier ORDER BY tier";
    let got: Vec<(String, i64, i64, i64, i64)> = sqlx::query(q)
        .fetch_all(&lite)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(got, expect, "SQLite");
    let cols = "tier, ai_conversations, failed_deflections, deflected, inference_cost_usd, excess_human_cost_usd";
    let pg: Vec<(String, i64, i64, i64, f64, f64)> =
        sqlx::query_as(&format!("SELECT {cols} FROM deflection_daily ORDER BY day, tier"))
            .fetch_all(&avro_env.pool)
            .await
            .unwrap();
    let sq: Vec<(String, i64, i64, i64, f64, f64)> =
        sqlx::query_as(&format!("SELECT {cols} FROM deflection_daily ORDER BY day, tier"))
            .fetch_all(&lite)
            .await
            .unwrap();
    assert_eq!(pg, sq, "deflection_daily on both stores");
}
