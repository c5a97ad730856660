//! `tierwatch simulate --kafka`: the simulator's streams straight to a real broker, keyed and
//! co-partitioned so the daemon joins them. The daemon's figures in Postgres equal a replay of the
//! same run from files into SQLite (a wrong key or partition would orphan feedback and tickets and
//! change failed deflections); topics with different partition counts are refused.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sqlx::Row;
use tierwatch::sim::{Scenario, SimConfig};

const TOTALS: &str = "SELECT tier, SUM(decisions), SUM(conversations), SUM(thumbs_down), SUM(failed_deflections) \
                      FROM tier_quality_daily GROUP BY tier ORDER BY tier";

fn sim() -> SimConfig {
    let mut s = SimConfig::new(Scenario::Postmortem);
    s.days = 4;
    s.conversations_per_day = 150;
    s.seed = 5;
    s
}

fn simulate_to(env: &Env, topics: &[String; 3]) -> std::process::Output {
    simulate_command(&env.brokers, topics, "avro", &sim()).output().expect("run tierwatch simulate")
}

/// The same run from files through replay into SQLite.
fn replayed_totals(dir: &std::path::Path) -> Vec<(String, i64, i64, i64, i64)> {
    tierwatch::sim::write_avro_ocf_days(dir, &sim()).unwrap();
    let db = dir.join("replay.sqlite");
    let cfg = tierwatch::config::Config::from_toml_str(&format!(
        "[sqlite]\npath = \"{}\"\n[http]\nlisten = \"\"\n",
        db.display()
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = rt.block_on(async {
        use tierwatch::store::Store;
        let s = tierwatch::store::sqlite::SqliteStore::open(&db.display().to_string()).await.unwrap();
        s.migrate().await.unwrap();
        Arc::new(s)
    });
    let files = ["routing_decisions.avro", "feedback.avro", "support_tickets.avro"].map(|f| dir.join(f));
    tierwatch::replay::replay_files(
        &rt,
        &cfg,
        store.clone(),
        tierwatch::store::sqlite::SqliteEvalStore::new(store.clone()),
        [files[0].as_path(), files[1].as_path(), files[2].as_path()],
        false,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    rt.block_on(async {
        sqlx::query(TOTALS)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_streams_through_kafka_equal_the_replayed_files() {
    let env = Env::new("simkafka").await;
    let out = simulate_to(&env, &env.topics);
    assert!(out.status.success(), "simulate failed: {}", String::from_utf8_lossy(&out.stderr));

    let counts = sim_counts(&sim());
    assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
    let cfg = env.config(["avro", "avro", "avro"], "[http]\nlisten = \"\"\n");
    let mut daemon = Daemon::start(&cfg, "simkafka");
    env.wait_committed(counts, &mut daemon, Duration::from_secs(120)).await;

    // Its own runtime: off this test's.
    let dir = env.dir.path().to_path_buf();
    let want = std::thread::spawn(move || replayed_totals(&dir)).join().unwrap();
    assert!(want.iter().any(|t| t.4 > 0), "the run has failed deflections: {want:?}");
    // Outcomes are released as the watermark passes them: wait for the last release.
    let start = Instant::now();
    loop {
        let got = env.tier_totals().await;
        if got == want {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "Kafka {got:?} vs replay {want:?}\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let orphans: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(count), 0)::bigint FROM orphans_daily")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    daemon.stop();
    assert_eq!(orphans, 0, "co-partitioned: every outcome found its conversation");

    // Topics with different partition counts are refused before anything is produced.
    let odd = format!("{}-odd", env.topics[1]);
    create_topics(&env.brokers, std::slice::from_ref(&odd), PARTITIONS + 1).await;
    let out = simulate_to(&env, &[env.topics[0].clone(), odd.clone(), env.topics[2].clone()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not co-partitioned") && err.contains(&odd), "{err}");
}
