//! A topic that has nothing to deliver must not hold the watermark back, and `latest` must not
//! lose what arrives while the daemon is down.
//!
//! With `auto_offset_reset = "latest"`, old messages on every topic are skipped; the daemon must
//! store where it started at once. Then decisions and turn-less feedback (which waits for the
//! watermark) arrive, while the tickets topic stays quiet: one partition's only new ticket is
//! early and written in a transaction (its high watermark stands past a commit marker the consumer
//! never sees, so by offsets it is never caught up), the others have only the old, skipped tickets.
//! All feedback must still be attributed (pending 0) once the quiet topic stops holding the
//! watermark back.
//! Finally a ticket produced while the daemon is stopped, on a partition where nothing was ever
//! consumed, must be counted after the restart.

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sqlx::Row;
use tierwatch::decode::{encode, WireFormat};
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

const H: i64 = 3_600_000;
const MIN: i64 = 60_000;

fn decision_at(conv: &str, at: i64) -> Event {
    common::decision(format!("d-{conv}"), conv.into(), 0, at, "clf-1", 0.8)
}

fn thumbs_down(conv: &str, at: i64) -> Event {
    testkit::thumbs_down(format!("f-{conv}"), conv, None, at).into()
}

fn ticket(conv: &str, at: i64) -> Event {
    testkit::ticket(format!("t-{conv}-{at}"), format!("T-{conv}-{at}"), conv, at).into()
}

/// A conversation id that lands on partition `p`.
fn conv_on(p: i32, n: usize) -> String {
    (0..).map(|k| format!("q{n}-{k}")).find(|c| partition_of(c) == p).unwrap()
}

async fn totals(env: &Env) -> (i64, i64, i64) {
    let r = sqlx::query(
        "SELECT COALESCE(SUM(decisions), 0)::bigint, COALESCE(SUM(thumbs_down), 0)::bigint, \
         COALESCE(SUM(failed_deflections), 0)::bigint FROM tier_quality_daily",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn offset_rows(env: &Env) -> i64 {
    let exists: bool =
        sqlx::query("SELECT to_regclass('tw_offsets') IS NOT NULL").fetch_one(&env.pool).await.unwrap().get(0);
    if !exists {
        return 0;
    }
    sqlx::query_scalar("SELECT COUNT(*) FROM tw_offsets").fetch_one(&env.pool).await.unwrap()
}

fn pending(port: u16) -> Option<f64> {
    scrape_metric(port, "tierwatch_pending_outcomes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_topics_release_outcomes_and_latest_loses_nothing() {
    let env = Env::new("quiet").await;
    let port = free_port();
    let cfg = env.config(
        ["avro", "avro", "avro"],
        &format!("[watermark]\nidle_partition_seconds = 3\n[batch]\nmax_wait_ms = 50\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let text =
        std::fs::read_to_string(&cfg).unwrap().replacen("[kafka]\n", "[kafka]\nauto_offset_reset = \"latest\"\n", 1);
    std::fs::write(&cfg, text).unwrap();
    let p = env.producer();

    // Old traffic on every partition of every topic: `latest` skips it.
    let mut old = vec![];
    for part in 0..PARTITIONS {
        let c = conv_on(part, 0);
        old.push((env.topics[0].clone(), decision_at(&c, DAY0), WireFormat::Avro));
        old.push((env.topics[1].clone(), thumbs_down(&c, DAY0 + MIN), WireFormat::Avro));
        old.push((env.topics[2].clone(), ticket(&c, DAY0 + H), WireFormat::Avro));
    }
    send_all(&p, &old).await;

    let mut daemon = Daemon::start(&cfg, "quiet-1");
    // Where each of the 9 topic-partitions starts is stored before anything is consumed there.
    daemon
        .wait_until(Duration::from_secs(60), "stored start offsets", || async {
            (offset_rows(&env).await == 3 * PARTITIONS as i64).then_some(())
        })
        .await;

    // New traffic: decisions and turn-less thumbs-down on every partition, two days later.
    let day = DAY0 + 2 * 24 * H;
    let mut new = vec![];
    let convs: Vec<String> = (0..PARTITIONS).flat_map(|part| (1..4).map(move |n| conv_on(part, n))).collect();
    for (i, c) in convs.iter().enumerate() {
        let at = day + i as i64 * MIN;
        new.push((env.topics[0].clone(), decision_at(c, at), WireFormat::Avro));
        new.push((env.topics[1].clone(), thumbs_down(c, at + 30_000), WireFormat::Avro));
    }
    // Partition 0's tickets: one ticket, early, in a committed transaction. Its commit marker
    // stays past the last message, so that topic-partition never looks caught up by offsets.
    let tx: ThreadedProducer<DefaultProducerContext> = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("transactional.id", format!("tx-{}", env.topics[2]))
        .create()
        .expect("transactional producer");
    tx.init_transactions(Duration::from_secs(30)).expect("init transactions");
    tx.begin_transaction().expect("begin");
    let key = conv_on(0, 1);
    let bytes = encode(&ticket(&key, day + MIN), WireFormat::Avro, 7);
    tx.send(BaseRecord::to(&env.topics[2]).key(key.as_str()).partition(0).payload(bytes.as_slice()))
        .map_err(|(e, _)| e)
        .expect("send in transaction");
    tx.commit_transaction(Duration::from_secs(30)).expect("commit");

    send_all(&p, &new).await;
    let n = convs.len() as i64;
    daemon
        .wait_until(Duration::from_secs(60), "every turn-less thumbs-down attributed", || async {
            (totals(&env).await == (n, n, 1) && pending(port) == Some(0.0)).then_some(())
        })
        .await;
    daemon.stop();

    // While it is down, a ticket on partition 1, whose tickets were never consumed (only skipped).
    let victim = conv_on(1, 1);
    send_all(&p, &[(env.topics[2].clone(), ticket(&victim, day + 2 * H), WireFormat::Avro)]).await;
    let mut daemon = Daemon::start(&cfg, "quiet-2");
    daemon
        .wait_until(Duration::from_secs(60), "the ticket produced while stopped", || async {
            (totals(&env).await == (n, n, 2) && pending(port) == Some(0.0)).then_some(())
        })
        .await;
    daemon.stop();
}
