//! End-to-end throughput: a real broker to committed Postgres state, next to a bare rdkafka
//! consumer that merely counts the same messages, in the same run.
//!
//! Needs the services: `bash scripts/services.sh start && . .tw-services/env`, then
//! `cargo bench --bench e2e`. Knobs (environment):
//! - `TW_BENCH_EVENTS` (default 1 000 000) events, Avro, on all three topics;
//! - `TW_BENCH_PARTITIONS` (default 4) partitions per topic;
//! - `TW_BENCH_TRAFFIC`: `realistic` (default: a gateway's live rate in event time,
//!   `TW_BENCH_RATE` events/s, default 10 000, multi-turn conversations coming back minutes later:
//!   the backlog of an outage) or `compressed` (a conversation every 20 s of event time, so
//!   conversations open and close within a few thousand events);
//! - `TW_BENCH_CONFIG`: extra TOML appended to the daemon's configuration (e.g. `[batch]` limits).
//!
//! The daemon's rate is measured from its partition assignment (it polls right after) until the
//! offsets of all N messages are committed in Postgres; startup (migrations, group join) is
//! reported apart. Under `cargo test` this target does nothing (it is a benchmark, not a test).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/traffic.rs"]
mod traffic;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tierwatch::decode::WireFormat;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = env_or("TW_BENCH_EVENTS", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(n));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn run(n: usize) {
    let partitions: i32 = env_or("TW_BENCH_PARTITIONS", 4);
    let traffic_kind = std::env::var("TW_BENCH_TRAFFIC").unwrap_or_else(|_| "realistic".into());
    let rate: f64 = env_or("TW_BENCH_RATE", 10_000.0);
    let env = Env::with_partitions("bench", partitions).await;
    let evs = match traffic_kind.as_str() {
        "compressed" => traffic::events(n),
        "realistic" => traffic::realistic(n, rate),
        other => panic!("TW_BENCH_TRAFFIC={other}: expected realistic or compressed"),
    };
    println!("traffic: {traffic_kind} ({rate} events/s of event time if realistic), {partitions} partitions");
    let mut sent = [0i64; 3];
    let items: Vec<_> = evs
        .into_iter()
        .map(|(i, ev)| {
            sent[i] += 1;
            (env.topics[i].clone(), ev, WireFormat::Avro)
        })
        .collect();
    let t = Instant::now();
    send_all_partitioned(&env.producer(), &items, partitions).await;
    println!("produced {n} events in {:.2}s", t.elapsed().as_secs_f64());
    drop(items);

    // Bare consumer: count the messages, nothing else.
    let bare = {
        let brokers = env.brokers.clone();
        let topics = env.topics.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("bare-{}", topics[0]))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            c.subscribe(&refs).unwrap();
            let mut count = 0usize;
            let mut first: Option<Instant> = None;
            while count < n {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                    first.get_or_insert_with(Instant::now);
                    count += 1;
                }
            }
            first.map(|f| f.elapsed()).unwrap_or_default()
        })
        .await
        .unwrap()
    };
    let bare_rate = n as f64 / bare.as_secs_f64();
    println!(
        "bare rdkafka consumer: {n} messages in {:.2}s = {:.0} msg/s (from first message)",
        bare.as_secs_f64(),
        bare_rate
    );

    let extra = std::env::var("TW_BENCH_CONFIG").unwrap_or_default();
    let cfg = env.config(["avro", "avro", "avro"], &format!("[http]\nlisten = \"\"\n{extra}\n"));
    let t = Instant::now();
    let mut daemon = Daemon::start(&cfg, "bench");
    // From the partition assignment (logged once the join state is loaded; polling follows), so
    // startup (migrations, group join) is reported apart.
    daemon.wait_assigned().await;
    let startup = t.elapsed();
    let t1 = Instant::now();
    env.wait_committed(sent, &mut daemon, Duration::from_secs(1800)).await;
    let run = t1.elapsed();
    let log = daemon.stop();
    for line in log.lines().filter(|l| {
        l.contains("pipeline stopped") || (l.contains("batch written") && std::env::var("TW_BENCH_VERBOSE").is_ok())
    }) {
        println!("daemon: {}", line.trim());
    }
    let rate = n as f64 / run.as_secs_f64();
    println!(
        "tierwatch end to end: {n} events committed in {:.2}s after a {:.2}s start = {:.0} events/s; {:.1}% of the bare consumer",
        run.as_secs_f64(),
        startup.as_secs_f64(),
        rate,
        100.0 * rate / bare_rate
    );
}
