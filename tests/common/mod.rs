//! Shared harness for the integration tests: a real Kafka broker and a real Postgres server,
//! started by `scripts/test.sh` (which exports their addresses), a fresh database and fresh
//! topics per test, and the `tierwatch` binary run as a child process. The events themselves are
//! built with `tierwatch::testkit`.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use tierwatch::decode::{encode, WireFormat};
use tierwatch::event::{Event, RoutingDecision};
use tierwatch::sim::{message_key, SimConfig};
use tierwatch::testkit;

pub const PARTITIONS: i32 = 3;

/// A required environment variable; the tests never skip silently.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test.sh, which starts Kafka and Postgres")
    })
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

pub struct Env {
    pub brokers: String,
    pub admin_url: String,
    pub db_url: String,
    pub pool: PgPool,
    pub topics: [String; 3],
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new(name: &str) -> Env {
        Self::with_partitions(name, PARTITIONS).await
    }

    /// An environment whose three topics have `partitions` partitions (produce to them with
    /// [`send_all_partitioned`]).
    pub async fn with_partitions(name: &str, partitions: i32) -> Env {
        let brokers = required_env("TIERWATCH_TEST_KAFKA_BROKERS");
        let admin_url = required_env("TIERWATCH_TEST_DATABASE_URL");
        let db = unique(&format!("tw_{name}"));
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.expect("connect admin db");
        sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.expect("create database");
        admin.close().await;
        let db_url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{db}", &admin_url[..i]),
            None => panic!("bad TIERWATCH_TEST_DATABASE_URL"),
        };
        let pool = PgPoolOptions::new().max_connections(4).connect(&db_url).await.expect("connect test db");
        let base = unique(name).replace('_', "-");
        let topics = [format!("{base}.routing"), format!("{base}.feedback"), format!("{base}.tickets")];
        create_topics(&brokers, &topics, partitions).await;
        Env { brokers, admin_url, db_url, pool, topics, dir: tempfile::tempdir().unwrap() }
    }

    /// A fresh pool after the server restarted (the old one is closed).
    pub async fn reconnect(mut self) -> Env {
        self.pool = PgPoolOptions::new().max_connections(4).connect(&self.db_url).await.expect("reconnect test db");
        self
    }

    /// Write a config file for the daemon; `extra` is appended TOML.
    pub fn config(&self, formats: [&str; 3], extra: &str) -> PathBuf {
        let [r, f, t] = formats;
        let ids = |fmt: &str| if fmt == "confluent" { "schema_ids = [7, 8]" } else { "" };
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "g-{group}"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[topics.routing]
name = "{t0}"
format = "{r}"
{ir}
[topics.feedback]
name = "{t1}"
format = "{f}"
{if_}
[topics.tickets]
name = "{t2}"
format = "{t}"
{it}
[postgres]
url = "{db}"
max_connections = 4
{extra}
"#,
            brokers = self.brokers,
            group = self.topics[0],
            t0 = self.topics[0],
            t1 = self.topics[1],
            t2 = self.topics[2],
            ir = ids(r),
            if_ = ids(f),
            it = ids(t),
            db = self.db_url,
        );
        let path = self.dir.path().join("tierwatch.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// Messages committed per topic, as recorded in the store's offsets.
    pub async fn committed(&self, topic: &str) -> i64 {
        committed_in(&self.pool, topic).await
    }

    /// `events` as produced to this environment: each on its stream's topic, in `format`.
    pub fn on_topics(
        &self,
        events: impl IntoIterator<Item = Event>,
        format: WireFormat,
    ) -> Vec<(String, Event, WireFormat)> {
        events.into_iter().map(|ev| (self.topics[testkit::stream_index(&ev)].clone(), ev, format)).collect()
    }

    /// Per tier over all days of `tier_quality_daily`: (tier, decisions, conversations, thumbs
    /// down, failed deflections).
    pub async fn tier_totals(&self) -> Vec<(String, i64, i64, i64, i64)> {
        sqlx::query(
            "SELECT tier, SUM(decisions)::bigint, SUM(conversations)::bigint, SUM(thumbs_down)::bigint, \
             SUM(failed_deflections)::bigint FROM tier_quality_daily GROUP BY tier ORDER BY tier",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    }

    /// Poll [`Env::tier_totals`] until it equals `want` (outcomes land once the watermark passes
    /// them) or `timeout` has passed; returns the last rows read.
    pub async fn wait_tier_totals(
        &self,
        want: &[(String, i64, i64, i64, i64)],
        timeout: Duration,
    ) -> Vec<(String, i64, i64, i64, i64)> {
        let start = Instant::now();
        loop {
            let got = self.tier_totals().await;
            if got == want || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A Postgres outage under a running daemon: closes the test's pool, stops the server
    /// (`scripts/services.sh postgres-down`), produces `items` meanwhile and waits until the daemon
    /// logs a failed commit that it retries. Bring the server back with `services("postgres-up")`
    /// and [`Env::reconnect`].
    pub async fn postgres_down_while_producing(
        &self,
        producer: &FutureProducer,
        items: &[(String, Event, WireFormat)],
        daemon: &mut Daemon,
    ) {
        self.pool.close().await;
        services("postgres-down");
        send_all(producer, items).await;
        daemon.wait_log("commit failed; retrying", Duration::from_secs(60)).await;
    }

    /// Wait until the store's offsets show `counts[i]` messages of topic i.
    pub async fn wait_committed(&self, counts: [i64; 3], daemon: &mut Daemon, timeout: Duration) {
        let start = Instant::now();
        loop {
            let mut got = [0i64; 3];
            for (slot, topic) in got.iter_mut().zip(&self.topics) {
                *slot = self.committed(topic).await;
            }
            if got == counts {
                return;
            }
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("daemon exited ({status}) before committing {counts:?} (got {got:?})\n{}", daemon.log_tail());
            }
            if start.elapsed() > timeout {
                panic!("timed out waiting for {counts:?}, committed {got:?}\n{}", daemon.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Messages committed to `topic` according to the offsets in the store behind `pool` (0 before the
/// daemon created its tables).
pub async fn committed_in(pool: &PgPool, topic: &str) -> i64 {
    let exists: bool =
        sqlx::query("SELECT to_regclass('tw_offsets') IS NOT NULL").fetch_one(pool).await.unwrap().get(0);
    if !exists {
        return 0;
    }
    sqlx::query("SELECT COALESCE(SUM(next_offset), 0)::bigint FROM tw_offsets WHERE topic = $1")
        .bind(topic)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

pub async fn create_topics(brokers: &str, topics: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let res = admin.create_topics(&new, &AdminOptions::new()).await.expect("create topics");
    for r in res {
        r.expect("topic created");
    }
}

/// Stable partition of a key, the same on all three topics (co-partitioning).
pub fn partition_of(key: &str) -> i32 {
    partition_in(key, PARTITIONS)
}

/// The partition of `key` among `partitions` (the same on all three topics: co-partitioned).
pub fn partition_in(key: &str, partitions: i32) -> i32 {
    (key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % partitions as u32) as i32
}

/// A pre-route decision of classifier `cv` with `confidence` against threshold 0.6 (cheap tier at
/// or above it), no text, zero cost: what the drift tests need.
pub fn decision(event_id: String, conversation_id: String, turn: i32, ts: i64, cv: &str, confidence: f64) -> Event {
    RoutingDecision {
        classifier_version: cv.to_string(),
        confidence,
        threshold: Some(0.6),
        tier: if confidence >= 0.6 { "cheap".into() } else { "capable".into() },
        input_tokens: 1,
        output_tokens: 1,
        cost_usd: 0.0,
        capable_cost_usd: Some(0.0),
        ..testkit::decision(event_id, conversation_id, turn, ts)
    }
    .into()
}

/// Produce one event to topic `idx` in the given wire format, keyed and co-partitioned.
pub async fn send(p: &FutureProducer, topic: &str, ev: &Event, format: WireFormat) {
    let bytes = encode(ev, format, 7);
    send_raw(p, topic, message_key(ev), Some(&bytes)).await;
}

/// Produce many events without waiting for each delivery (order per partition is kept by the
/// idempotent producer); returns once all are acknowledged.
pub async fn send_all(p: &FutureProducer, items: &[(String, Event, WireFormat)]) {
    send_all_partitioned(p, items, PARTITIONS).await
}

/// [`send_all`] to topics of `partitions` partitions.
pub async fn send_all_partitioned(p: &FutureProducer, items: &[(String, Event, WireFormat)], partitions: i32) {
    let mut pending = Vec::with_capacity(items.len());
    for (topic, ev, format) in items {
        let key = message_key(ev);
        let bytes = encode(ev, *format, 7);
        let rec: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).key(key).partition(partition_in(key, partitions)).payload(bytes.as_slice());
        let mut rec = rec;
        loop {
            match p.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    for f in pending {
        f.await.expect("delivery future").map_err(|(e, _)| e).expect("delivered");
    }
}

pub async fn send_raw(p: &FutureProducer, topic: &str, key: &str, payload: Option<&[u8]>) {
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key).partition(partition_of(key));
    if let Some(b) = payload {
        rec = rec.payload(b);
    }
    p.send(rec, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
}

/// The daemon as a child process.
pub struct Daemon {
    pub child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(config: &PathBuf, log_name: &str) -> Daemon {
        let log = config.with_file_name(format!("{log_name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
            .args(["run", "--config"])
            .arg(config)
            .env("TIERWATCH_LOG", std::env::var("TW_DAEMON_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn tierwatch");
        Daemon { child, log }
    }

    /// Wait until the daemon logs its partition assignment (its join state is loaded; polling
    /// follows); panics if it exits first, or after ten minutes (the benchmarks load large states).
    pub async fn wait_assigned(&mut self) {
        self.wait_log(" assigned", Duration::from_secs(600)).await;
    }

    /// Wait until the daemon's log contains `needle`; panics if the daemon exits first or after
    /// `timeout`.
    pub async fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited ({status}) before logging '{needle}'\n{}", self.log_tail());
            }
            assert!(start.elapsed() < timeout, "no '{needle}' in the log after {timeout:?}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Poll `check` every 200 ms until it gives a value; panics if the daemon exits first or after
    /// `timeout`, naming `what` it waited for.
    pub async fn wait_until<T, F, Fut>(&mut self, timeout: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited ({status}) while waiting for {what}\n{}", self.log_tail());
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM and wait for a clean exit; returns the daemon's log.
    pub fn stop(mut self) -> String {
        let pid = self.child.id() as i32;
        unsafe_kill(pid, "TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "daemon exit status {status}\n{}", self.log_tail());
                return self.log();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9: no chance to finish anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: i32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

pub fn write_file(path: &PathBuf, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `/metrics` once the daemon's counters include all `messages` it has committed
/// (`tierwatch_events_consumed_total` summed over topics): a commit becomes visible in the store
/// a moment before the daemon takes its result and counts it. Gives up after 10 s and returns the
/// last page (the caller's assertions then show what is missing).
pub fn metrics_once_counted(port: u16, messages: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(port, "/metrics");
        let counted: f64 = body
            .lines()
            .filter(|l| l.starts_with("tierwatch_events_consumed_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if counted as i64 >= messages || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of one series in a `/metrics` page: the line `series value`, where `series` is the
/// metric's name with its labels as printed (e.g. `tierwatch_store_errors_total{class="fatal"}`).
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of `series` on the `/metrics` page of the daemon listening on `port`; `None` while it
/// is not listening yet (starting) or does not show the series.
pub fn scrape_metric(port: u16, series: &str) -> Option<f64> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    metric_value(&http_get(port, "/metrics").1, series)
}

/// GET a path from a local HTTP server; returns (status line, body).
pub fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Run `scripts/services.sh <cmd>` (e.g. `postgres-down`), on the instance `TW_SERVICES_DIR` names.
pub fn services(cmd: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let status = Command::new("bash").arg(script).arg(cmd).status().expect("run services.sh");
    assert!(status.success(), "services.sh {cmd} failed");
}

/// Messages per topic of `items`, in the order of `topics`.
pub fn topic_counts(items: &[(String, Event, WireFormat)], topics: &[String; 3]) -> [i64; 3] {
    let mut c = [0i64; 3];
    for (t, _, _) in items {
        c[topics.iter().position(|x| x == t).expect("one of the three topics")] += 1;
    }
    c
}

/// `tierwatch replay` of three files with a config; asserts success and returns its stderr.
pub fn replay(cfg: &std::path::Path, files: &[PathBuf; 3]) -> String {
    let out = replay_command(cfg, files).output().expect("run tierwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// `tierwatch replay --quiet` of `files` (routing, feedback, tickets) with config `cfg`; the caller
/// runs it ([`replay`] runs it and asserts success).
pub fn replay_command(cfg: &std::path::Path, files: &[PathBuf; 3]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierwatch"));
    cmd.args(["replay", "--quiet", "--config"]).arg(cfg);
    cmd.arg("--routing").arg(&files[0]).arg("--feedback").arg(&files[1]).arg("--tickets").arg(&files[2]);
    cmd
}

/// Messages per topic (routing decisions, feedback, tickets) of a simulated run.
pub fn sim_counts(cfg: &SimConfig) -> [i64; 3] {
    let mut counts = [0i64; 3];
    for ev in tierwatch::sim::generate(cfg).events {
        counts[testkit::stream_index(&ev)] += 1;
    }
    counts
}

/// `tierwatch simulate` of `sim` (scenario, days, conversations per day, seed) to `topics` on
/// `brokers`, in wire format `format` (`avro`, `json` or `confluent`); the caller runs it.
pub fn simulate_command(brokers: &str, topics: &[String; 3], format: &str, sim: &SimConfig) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierwatch"));
    cmd.args(["simulate", "--kafka", brokers, "--format", format, "--scenario", sim.scenario.as_str()])
        .args(["--routing-topic", &topics[0], "--feedback-topic", &topics[1], "--tickets-topic", &topics[2]])
        .args(["--days", &sim.days.to_string(), "--conversations-per-day", &sim.conversations_per_day.to_string()])
        .args(["--seed", &sim.seed.to_string()]);
    cmd
}
