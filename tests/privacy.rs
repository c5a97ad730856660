//! Secrets and privacy: `check-config` shows no credential, secrets come from `${env:…}` /
//! `${file:…}` references (a broken one names its key), dead letters honour the query-text
//! privacy mode, and the retention task deletes old dead letters and review-queue rows in both
//! stores.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::Row;
use tierwatch::decode::{encode, WireFormat};
use tierwatch::event::{Event, RoutingDecision};
use tierwatch::privacy::Retention;
use tierwatch::store::postgres::PgStore;
use tierwatch::store::sqlite::SqliteStore;
use tierwatch::store::Store;
use tierwatch::testkit::{self, DAY0};

fn tierwatch(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tierwatch"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tierwatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_shows_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("sasl-password");
    std::fs::write(&pw, "kafka-pw-FROM-FILE\n").unwrap();
    let cfg = dir.path().join("tw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[kafka]
brokers = "b:9093"
[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.username" = "svc-tierwatch"
"sasl.password" = "${{file:{pw}}}"
"ssl.key.password" = "key-pw-INLINE"
[postgres]
url = "postgres://tw:${{env:TW_TEST_PGPASS}}@db:5432/tw?sslmode=verify-full"
[rescore]
model_path = "m.onnx"
store_text = "hashed"
hash_key = "${{env:TW_TEST_HASH_KEY}}"
[[alerts.webhooks]]
url = "https://hooks.example.com/services/T000/B000/webhook-TOKEN"
format = "slack"
"#,
            pw = pw.display()
        ),
    )
    .unwrap();
    let envs = [("TW_TEST_PGPASS", "pg-pw-FROM-ENV"), ("TW_TEST_HASH_KEY", "hash-key-FROM-ENV")];
    let (ok, out, err) = tierwatch(&["check-config", "--config", cfg.to_str().unwrap()], &envs);
    assert!(ok, "{err}");
    for secret in ["kafka-pw-FROM-FILE", "key-pw-INLINE", "pg-pw-FROM-ENV", "hash-key-FROM-ENV", "webhook-TOKEN"] {
        assert!(!out.contains(secret) && !err.contains(secret), "{secret} shown:\n{out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out).expect("check-config prints JSON");
    assert_eq!(v["postgres"]["url"], "postgres://tw:***@db:5432/tw?sslmode=verify-full");
    assert_eq!(v["kafka"]["properties"]["sasl.password"], "***");
    assert_eq!(v["kafka"]["properties"]["sasl.username"], "svc-tierwatch");
    assert_eq!(v["rescore"]["hash_key"], "***");
    assert_eq!(v["alerts"]["webhooks"][0]["url"], "https://hooks.example.com/***");

    // A reference that cannot be resolved stops startup and names the key.
    let (ok, _, err) = tierwatch(&["check-config", "--config", cfg.to_str().unwrap()], &envs[..1]);
    assert!(!ok);
    assert!(err.contains("TW_TEST_HASH_KEY") && err.contains("hash_key"), "{err}");
    std::fs::remove_file(&pw).unwrap();
    let (ok, _, err) = tierwatch(&["check-config", "--config", cfg.to_str().unwrap()], &envs);
    assert!(!ok);
    assert!(err.contains("sasl.password") && err.contains("cannot read secret file"), "{err}");
}

const SECRET_TEXT: &str = "my card 4111-1111 was charged twice";

/// A routing decision the validator rejects (confidence 7), carrying a query text.
fn rejected_decision_json() -> Vec<u8> {
    let d: Event = RoutingDecision {
        query_text: Some(SECRET_TEXT.into()),
        classifier_version: "clf-1".into(),
        confidence: 0.5,
        threshold: None,
        latency_ms: 1.0,
        input_tokens: 1,
        output_tokens: 1,
        ..testkit::decision("d-bad", "c-bad", 0, DAY0)
    }
    .into();
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&d, WireFormat::Json, 7)).unwrap();
    v["confidence"] = serde_json::json!(7.0);
    serde_json::to_vec(&v).unwrap()
}

/// Replay one rejected decision into a fresh SQLite file; the stored dead-letter payload.
fn dead_letter_payload(dir: &Path, privacy: &str) -> Option<Vec<u8>> {
    let routing = dir.join("routing.jsonl");
    let mut line = rejected_decision_json();
    line.push(b'\n');
    std::fs::write(&routing, line).unwrap();
    for f in ["feedback.jsonl", "tickets.jsonl"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let db = dir.join(format!("dl-{}.db", privacy.len()));
    let cfg = dir.join("replay.toml");
    std::fs::write(&cfg, format!("[sqlite]\npath = \"{}\"\n{privacy}\n", db.display())).unwrap();
    let (ok, _, err) = tierwatch(
        &[
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--routing",
            routing.to_str().unwrap(),
            "--feedback",
            dir.join("feedback.jsonl").to_str().unwrap(),
            "--tickets",
            dir.join("tickets.jsonl").to_str().unwrap(),
            "--quiet",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let conn = sqlite_rows(&db, "SELECT payload, reason FROM tw_dead_letters");
    assert_eq!(conn.len(), 1, "one dead letter");
    assert_eq!(conn[0].1, "confidence_out_of_range");
    conn[0].0.clone()
}

fn sqlite_rows(db: &Path, sql: &str) -> Vec<(Option<Vec<u8>>, String)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    })
}

#[test]
fn dead_letters_honour_the_query_text_privacy_mode() {
    let dir = tempfile::tempdir().unwrap();
    // Default (no [rescore], no [privacy]): the raw message, text included, as before.
    let full = dead_letter_payload(dir.path(), "").expect("payload kept");
    assert!(String::from_utf8_lossy(&full).contains(SECRET_TEXT));

    let none = dead_letter_payload(dir.path(), "[privacy]\ndead_letter_text = \"none\"").expect("JSON kept");
    let v: serde_json::Value = serde_json::from_slice(&none).unwrap();
    assert!(v.get("query_text").is_none(), "{v}");
    assert_eq!(v["conversation_id"], "c-bad");
    assert_eq!(v["confidence"], 7.0);

    let hashed = dead_letter_payload(dir.path(), "[privacy]\ndead_letter_text = \"hashed\"\nhash_key = \"k1\"")
        .expect("JSON kept");
    let text = String::from_utf8_lossy(&hashed).into_owned();
    assert!(!text.contains("4111") && text.contains("\"query_text\":\"hmac-sha256:"), "{text}");
}

const HOUR_MS: i64 = 3_600_000;

/// Run the retention task on a store seeded with dead letters and review-queue rows aged 1 h,
/// 3 days and 10 days (offsets / event ids 0, 1, 2): the dead letters older than 2 days and the
/// review rows older than 5 days must go, the rest stay.
async fn assert_retention<S: Store + 'static>(store: Arc<S>, count: impl AsyncFn(&'static str) -> i64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, flag) = (tokio::runtime::Handle::current(), stop.clone());
    let task = std::thread::spawn(move || {
        tierwatch::privacy::retention_task(store, retention(), handle, flag, Default::default())
    });
    let start = Instant::now();
    while count("SELECT COUNT(*) FROM tw_dead_letters").await != 1
        || count("SELECT COUNT(*) FROM tw_rescore_samples").await != 2
    {
        assert!(start.elapsed() < Duration::from_secs(20), "retention did not delete the expired rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count("SELECT MIN(kafka_offset) FROM tw_dead_letters").await, 0);
    assert_eq!(count("SELECT COUNT(*) FROM tw_rescore_samples WHERE event_id IN ('e0', 'e1')").await, 2);
    stop.store(true, Ordering::Relaxed);
    task.join().unwrap();
}

/// Ages of the seeded rows, in hours.
const AGES_H: [(i64, i64); 3] = [(0, 1), (1, 3 * 24), (2, 10 * 24)];

fn retention() -> Retention {
    Retention {
        dead_letters: Some(Duration::from_secs(2 * 86_400)),
        review_queue: Some(Duration::from_secs(5 * 86_400)),
        every: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_task_deletes_old_rows_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("r.db").to_str().unwrap()).await.unwrap());
    let now = chrono::Utc::now().timestamp_millis();
    store.migrate().await.unwrap();
    for (i, age_h) in AGES_H {
        sqlx::query(
            "INSERT INTO tw_dead_letters(received_at_ms, topic, partition, kafka_offset, reason, detail, payload, \
             payload_len, truncated) VALUES (?1, 't', 0, ?2, 'r', 'd', NULL, 0, 0)",
        )
        .bind(now - age_h * HOUR_MS)
        .bind(i)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO tw_rescore_samples(event_id, conversation_id, turn, partition, ts_ms, tier, model, \
             classifier_version, router, segment, p, w, reason, query_text, inserted_at_ms) \
             VALUES (?1, 'c', 0, 0, 0, 'cheap', 'm', 'v', 'pre_route', '', 1, 1, 'base', 'text', ?2)",
        )
        .bind(format!("e{i}"))
        .bind(now - age_h * HOUR_MS)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let pool = store.pool().clone();
    assert_retention(store, async |sql| sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_task_deletes_old_rows_in_postgres() {
    let admin_url = std::env::var("TIERWATCH_TEST_DATABASE_URL")
        .expect("TIERWATCH_TEST_DATABASE_URL is not set: run the integration tests through scripts/test.sh");
    let db = format!("tw_retention_{}", std::process::id());
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}")).execute(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.unwrap();
    let url = format!("{}/{db}", &admin_url[..admin_url.rfind('/').unwrap()]);
    let store = Arc::new(PgStore::connect(&url, 2).await.unwrap());
    store.migrate().await.unwrap();
    for (i, age_h) in AGES_H {
        sqlx::query(
            "INSERT INTO tw_dead_letters(received_at, topic, partition, kafka_offset, reason, detail, payload, \
             payload_len, truncated) VALUES (now() - make_interval(hours => $1::int), 't', 0, $2, 'r', 'd', NULL, 0, false)",
        )
        .bind(age_h)
        .bind(i)
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO tw_rescore_samples(event_id, conversation_id, turn, partition, ts, tier, model, \
             classifier_version, router, segment, p, w, reason, query_text, inserted_at) \
             VALUES ($1, 'c', 0, 0, now(), 'cheap', 'm', 'v', 'pre_route', '', 1, 1, 'base', 'text', \
             now() - make_interval(hours => $2::int))",
        )
        .bind(format!("e{i}"))
        .bind(age_h)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let pool = store.pool().clone();
    assert_retention(store, async |sql| sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap()).await;
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&admin).await.unwrap();
}
