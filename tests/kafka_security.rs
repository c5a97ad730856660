//! A managed-Kafka style connection against the real broker: its SASL_SSL listener (SCRAM, a
//! server certificate from the throwaway CA of `scripts/services.sh`), configured only through
//! `[kafka] properties`. Correct credentials consume a stream exactly (also from zstd-compressed
//! batches, and with Postgres over TLS, `sslmode=verify-full`); a wrong password or an untrusted
//! CA stops the daemon at startup, fast, with one error line naming the cause.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;
use tierwatch::testkit::{self, DAY0};

const MIN: i64 = 60_000;

/// Events to produce: (topic, event, wire format).
type Items = Vec<(String, Event, WireFormat)>;
/// `Env::tier_totals` rows: (tier, decisions, conversations, thumbs down, failed deflections).
type Totals = Vec<(String, i64, i64, i64, i64)>;

/// The SASL_SSL listener and its credentials, as exported by `scripts/services.sh`.
struct Secure {
    brokers: String,
    user: String,
    password: String,
    ca: String,
    untrusted_ca: String,
}

fn secure() -> Secure {
    Secure {
        brokers: required_env("TIERWATCH_TEST_KAFKA_SASL_BROKERS"),
        user: required_env("TIERWATCH_TEST_KAFKA_SASL_USER"),
        password: required_env("TIERWATCH_TEST_KAFKA_SASL_PASSWORD"),
        ca: required_env("TIERWATCH_TEST_TLS_CA"),
        untrusted_ca: required_env("TIERWATCH_TEST_TLS_UNTRUSTED_CA"),
    }
}

/// The test's daemon configuration pointed at the SASL_SSL listener. The password is read from a
/// file through a `${file:…}` reference, as a deployment would mount it.
fn secure_config(env: &Env, s: &Secure, mechanism: &str, password: &str, ca: &str, pg_url: Option<&str>) -> PathBuf {
    let path = env.config(["json"; 3], "[http]\nlisten = \"\"\n");
    let pw_file = env.dir.path().join("kafka-password");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace(&format!("brokers = \"{}\"", env.brokers), &format!("brokers = \"{}\"", s.brokers));
    text = text.replace(
        "[kafka.properties]\n",
        &format!(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"{mechanism}\"\n\
             \"sasl.username\" = \"{}\"\n\"sasl.password\" = \"${{file:{}}}\"\n\"ssl.ca.location\" = \"{ca}\"\n",
            s.user,
            pw_file.display()
        ),
    );
    if let Some(url) = pg_url {
        text = text.replace(&format!("url = \"{}\"", env.db_url), &format!("url = \"{url}\""));
    }
    assert!(text.contains(&s.brokers) && text.contains("SASL_SSL"), "{text}");
    std::fs::write(&path, text).unwrap();
    path
}

fn decision(conv: &str, turn: i32, at: i64, tier: &str) -> Event {
    RoutingDecision {
        query_text: Some("why was I charged twice?".into()),
        classifier_version: "clf-1".into(),
        confidence: 0.7,
        tier: tier.into(),
        model: format!("{tier}-model"),
        latency_ms: 100.0,
        capable_cost_usd: Some(0.004),
        ..testkit::decision(format!("d-{conv}-{turn}"), conv, turn, at)
    }
    .into()
}

/// A small stream (JSON on all three topics, no tickets) and the `tier_totals` it must give:
/// conversation i is `cheap` unless i % 3 == 0; even ones have a second turn; every fourth gets
/// a thumbs-down on its first turn.
fn stream(topics: &[String; 3], conversations: usize) -> (Items, Totals) {
    let mut items = vec![];
    let (mut cheap, mut capable) = ((0i64, 0i64, 0i64), (0i64, 0i64, 0i64));
    for i in 0..conversations {
        let conv = format!("conv-{i}");
        let tier = if i % 3 == 0 { "capable" } else { "cheap" };
        let at = DAY0 + i as i64 * MIN;
        let turns = if i % 2 == 0 { 2 } else { 1 };
        for t in 0..turns {
            items.push((topics[0].clone(), decision(&conv, t, at + t as i64 * 1000, tier), WireFormat::Json));
        }
        let down = i % 4 == 0;
        if down {
            let fb = testkit::thumbs_down(format!("f-{conv}"), conv.clone(), Some(0), at + 30_000);
            items.push((topics[1].clone(), fb.into(), WireFormat::Json));
        }
        let acc = if tier == "cheap" { &mut cheap } else { &mut capable };
        acc.0 += turns as i64;
        acc.1 += 1;
        acc.2 += down as i64;
    }
    let expected = vec![
        ("capable".to_string(), capable.0, capable.1, capable.2, 0),
        ("cheap".to_string(), cheap.0, cheap.1, cheap.2, 0),
    ];
    (items, expected)
}

/// Wait for the daemon to exit by itself; returns how long it took and its log.
fn wait_exit(mut daemon: Daemon, bound: Duration) -> (Duration, bool, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            return (start.elapsed(), status.success(), daemon.log());
        }
        if start.elapsed() > bound {
            panic!(
                "daemon still running after {bound:?} (a retry loop instead of a startup error)\n{}",
                daemon.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The SCRAM-SHA-256 user consumes the stream exactly, with Postgres over verified TLS.
#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_scram_sha256_consumes_exactly_with_postgres_tls() {
    let s = secure();
    let env = Env::new("ksec_sasl").await;
    let (items, expected) = stream(&env.topics, 24);
    send_all(&env.producer(), &items).await;
    // The same database over TLS, verified against the throwaway CA (host 127.0.0.1 is in the
    // server certificate's names).
    let tls_url = required_env("TIERWATCH_TEST_DATABASE_TLS_URL");
    let db = env.db_url.rsplit('/').next().unwrap().to_string();
    let tls_url = tls_url.replacen("/postgres?", &format!("/{db}?"), 1);
    let cfg = secure_config(&env, &s, "SCRAM-SHA-256", &s.password, &s.ca, Some(&tls_url));
    let mut daemon = Daemon::start(&cfg, "sasl256");
    env.wait_committed(topic_counts(&items, &env.topics), &mut daemon, Duration::from_secs(90)).await;
    assert_eq!(env.tier_totals().await, expected);
    // Every connection the daemon holds to its database is encrypted.
    let rows = sqlx::query(
        "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let ssl: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!ssl.is_empty() && ssl.iter().all(|x| *x), "daemon connections' ssl flags: {ssl:?}");
    let log = daemon.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

/// zstd-compressed batches (topic and producer set to zstd), read by the SCRAM-SHA-512 user.
#[tokio::test(flavor = "multi_thread")]
async fn zstd_topic_over_sasl_ssl_scram_sha512_consumes_exactly() {
    let s = secure();
    let env = Env::new("ksec_zstd").await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("admin client");
    let alter: Vec<AlterConfig> = env
        .topics
        .iter()
        .map(|t| AlterConfig::new(ResourceSpecifier::Topic(t)).set("compression.type", "zstd"))
        .collect();
    for r in admin.alter_configs(&alter, &AdminOptions::new()).await.expect("alter configs") {
        r.expect("topic compression set to zstd");
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "20")
        .create()
        .expect("zstd producer");
    let (items, expected) = stream(&env.topics, 40);
    send_all(&producer, &items).await;
    let cfg = secure_config(&env, &s, "SCRAM-SHA-512", &s.password, &s.ca, None);
    let mut daemon = Daemon::start(&cfg, "zstd");
    env.wait_committed(topic_counts(&items, &env.topics), &mut daemon, Duration::from_secs(90)).await;
    assert_eq!(env.tier_totals().await, expected);
    daemon.stop();
}

/// Lines of the log that mention `needle` (case-insensitive).
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    let n = needle.to_ascii_lowercase();
    log.lines().filter(|l| l.to_ascii_lowercase().contains(&n)).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_at_startup_with_one_clear_error() {
    let s = secure();
    let env = Env::new("ksec_badpw").await;
    let cfg = secure_config(&env, &s, "SCRAM-SHA-256", "not-the-password", &s.ca, None);
    let (took, ok, log) = wait_exit(Daemon::start(&cfg, "badpw"), Duration::from_secs(30));
    assert!(!ok, "the daemon must exit with an error\n{log}");
    let errors = lines_with(&log, "authentication");
    assert_eq!(errors.len(), 1, "one line naming the cause, got:\n{}\n---\n{log}", errors.join("\n"));
    assert!(errors[0].contains("Kafka authentication failed") && errors[0].contains(&s.brokers), "{}", errors[0]);
    assert!(!log.contains("not-the-password"), "the password leaked into the log\n{log}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_certificate_fails_at_startup_with_one_clear_error() {
    let s = secure();
    let env = Env::new("ksec_badca").await;
    let cfg = secure_config(&env, &s, "SCRAM-SHA-256", &s.password, &s.untrusted_ca, None);
    let (took, ok, log) = wait_exit(Daemon::start(&cfg, "badca"), Duration::from_secs(30));
    assert!(!ok, "the daemon must exit with an error\n{log}");
    let errors = lines_with(&log, "certificate verify failed");
    assert_eq!(errors.len(), 1, "one line naming the cause, got:\n{}\n---\n{log}", errors.join("\n"));
    assert!(errors[0].contains("Kafka TLS certificate verify failed"), "{}", errors[0]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// `sslmode=verify-full` refuses a server whose certificate the given root does not vouch for.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_verify_full_refuses_an_untrusted_server() {
    let s = secure();
    let url = required_env("TIERWATCH_TEST_DATABASE_TLS_URL").replace(&s.ca, &s.untrusted_ca);
    assert!(url.contains(&s.untrusted_ca), "{url}");
    let err = match tierwatch::store::postgres::PgStore::connect(&url, 2).await {
        Ok(_) => panic!("connected over TLS to a server the root does not vouch for"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.to_ascii_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    // The right root connects.
    let url = required_env("TIERWATCH_TEST_DATABASE_TLS_URL");
    tierwatch::store::postgres::PgStore::connect(&url, 2).await.expect("verify-full with the right CA");
}
