//! Durable alert delivery to a real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `scripts/services.sh install`), through the real broker and Postgres.
//!
//! A classifier's confidences shift from day 7: the drift rule fires. The test checks, against
//! Alertmanager's v2 API:
//! 1. a transition made while Alertmanager is down stays in the outbox (attempted, undelivered);
//!    after a kill -9 of the daemon and a restart (Alertmanager now up) it is delivered;
//! 2. the firing alert stays active past Alertmanager's `resolve_timeout` (10 s here) while tierwatch
//!    says it fires: tierwatch re-posts it with a fresh `endsAt`;
//! 3. when the shift ends and tierwatch resolves the episode, Alertmanager resolves the alert at
//!    once (well before the `endsAt` of the last re-post would).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sqlx::Row;
use tierwatch::decode::WireFormat;
use tierwatch::event::*;

const DAY: i64 = 86_400_000;
const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";
/// Alertmanager's `resolve_timeout`: an alert posted without `endsAt` is resolved after it.
const RESOLVE_TIMEOUT_S: u64 = 10;
/// tierwatch's `resend_interval_seconds`: re-posts carry `endsAt` 4 intervals ahead (8 s).
const RESEND_S: u64 = 2;

/// Its own Alertmanager on a loopback port: clustering off, storage in a temp dir.
struct Alertmanager {
    child: Child,
    port: u16,
}

impl Alertmanager {
    fn start(dir: &Path, port: u16) -> Alertmanager {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  resolve_timeout: {RESOLVE_TIMEOUT_S}s\nroute:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
        let child = Command::new(AM_BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {AM_BIN} (run scripts/services.sh install): {e}"));
        Alertmanager { child, port }
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = client().get(format!("http://127.0.0.1:{}/-/ready", self.port)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("alertmanager exited: {st}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "alertmanager not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Alertmanager's active alerts (`GET /api/v2/alerts`: resolved ones are not listed) of the
    /// drift rule for classifier version "shift".
    async fn drift_alerts(&self) -> Vec<Value> {
        let body: Value = client()
            .get(format!("http://127.0.0.1:{}/api/v2/alerts", self.port))
            .send()
            .await
            .expect("alertmanager API")
            .json()
            .await
            .expect("alertmanager JSON");
        body.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"] == "confidence_drift"
                    && a["labels"]["subject"].as_str().is_some_and(|s| s.contains("classifier_version=shift"))
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider (as in the daemon): install ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap()
}

fn day0() -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 3, 2).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis()
}

/// 700 single-turn decisions a day for days `0..days` of classifier "shift", whose confidences are
/// 0.15 lower on `shifted` days; time-ordered.
fn decisions(days: i64, shifted: std::ops::RangeInclusive<i64>) -> Vec<Event> {
    const PER_DAY: i64 = 700;
    let mut out = vec![];
    for day in 0..days {
        let shift = if shifted.contains(&day) { 0.15 } else { 0.0 };
        for i in 0..PER_DAY {
            let u = (i as f64 * 0.618_033_988_749_895 + day as f64 * 0.137).fract();
            let c = ((0.35 + 0.6 * u.powf(0.7) - shift).clamp(0.0, 1.0) * 1e4).round() / 1e4;
            let ts = day0() + day * DAY + i * DAY / PER_DAY;
            out.push(decision(format!("d-{day}-{i}"), format!("c-{day}-{i}"), 0, ts, "shift", c));
        }
    }
    out
}

async fn produce(env: &Env, events: &[Event]) {
    let items = env.on_topics(events.iter().cloned(), WireFormat::Avro);
    send_all(&env.producer(), &items).await;
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `secs` with `what`.
/// (state, notified) of the one drift episode, if any.
async fn episode(env: &Env) -> Option<(String, String)> {
    let row = sqlx::query("SELECT state, notified FROM tw_alerts WHERE kind = 'confidence_drift'")
        .fetch_optional(&env.pool)
        .await
        .ok()??;
    Some((row.get(0), row.get(1)))
}

/// (transition, delivered, rejected, attempts) of every outbox row, in order.
async fn outbox(env: &Env) -> Vec<(String, bool, bool, i32)> {
    sqlx::query("SELECT transition, delivered, rejected, attempts FROM tw_alert_outbox ORDER BY id")
        .fetch_all(&env.pool)
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
        .unwrap_or_default()
}

fn config(env: &Env, am_port: u16, http_port: u16) -> PathBuf {
    env.config(
        ["avro", "avro", "avro"],
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\n[drift]\nevaluate_every_seconds = 1\n\
             [[alerts.webhooks]]\nurl = \"http://127.0.0.1:{am_port}/api/v2/alerts\"\nformat = \"alertmanager\"\n\
             resend_interval_seconds = {RESEND_S}\ninitial_backoff_ms = 100\nmax_backoff_ms = 1000\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager_across_kill9_stay_active_and_resolve() {
    let env = Env::new("alert_delivery").await;
    let (am_port, http_port) = (free_port(), free_port());
    let am_dir = env.dir.path().join("alertmanager");
    let cfg = config(&env, am_port, http_port);

    // Days 0–6 are the reference, 7–9 shifted: critical after two days. Days 10–18 are clean again;
    // the first two hours of day 10 go with the first part, so day 9 is complete.
    let all = decisions(19, 7..=9);
    let split = day0() + 10 * DAY + 2 * 3_600_000;
    let (first, rest): (Vec<Event>, Vec<Event>) = all.into_iter().partition(|e| e.ts() < split);

    // 1. Alertmanager down when the episode fires: the transition waits in the outbox.
    produce(&env, &first).await;
    let mut daemon = Daemon::start(&cfg, "daemon1");
    daemon
        .wait_until(Duration::from_secs(240), "a firing episode and a failed delivery attempt", || async {
            let ep = episode(&env).await?;
            let rows = outbox(&env).await;
            (ep.0 == "firing" && rows.len() == 1 && rows[0].3 >= 2).then_some(())
        })
        .await;
    let rows = outbox(&env).await;
    assert_eq!(rows, vec![("firing:critical".to_string(), false, false, rows[0].3)], "undelivered before the crash");
    daemon.kill9();

    let mut am = Alertmanager::start(&am_dir, am_port);
    am.wait_ready().await;
    assert!(am.drift_alerts().await.is_empty());
    let mut daemon = Daemon::start(&cfg, "daemon2");
    daemon
        .wait_until(Duration::from_secs(120), "the outbox row delivered after the restart", || async {
            let rows = outbox(&env).await;
            (rows.len() == 1 && rows[0].1).then_some(())
        })
        .await;
    let rows = outbox(&env).await;
    assert!(!rows[0].2, "accepted, not rejected: {rows:?}");
    let alerts = daemon
        .wait_until(Duration::from_secs(30), "the alert active in Alertmanager", || async {
            let a = am.drift_alerts().await;
            (!a.is_empty()).then_some(a)
        })
        .await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    assert_eq!(alerts[0]["status"]["state"], "active");

    // 2. Still active well past resolve_timeout: tierwatch keeps re-posting while it fires.
    let watch_until = Instant::now() + Duration::from_secs(RESOLVE_TIMEOUT_S * 2 + 5);
    while Instant::now() < watch_until {
        assert_eq!(episode(&env).await.map(|e| e.0).as_deref(), Some("firing"));
        let a = am.drift_alerts().await;
        assert_eq!(a.len(), 1, "the firing alert must stay active past resolve_timeout: {a:#?}");
        let ends = chrono::DateTime::parse_from_rfc3339(a[0]["endsAt"].as_str().unwrap()).unwrap();
        assert!(ends > chrono::Utc::now(), "endsAt in the future: {ends}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(outbox(&env).await.len(), 1, "re-posts do not go through the outbox");

    // 3. The shift is over: tierwatch resolves the episode, Alertmanager follows at once.
    produce(&env, &rest).await;
    daemon
        .wait_until(Duration::from_secs(240), "the episode resolved", || async {
            (episode(&env).await?.0 == "resolved").then_some(())
        })
        .await;
    let resolved_at = Instant::now();
    // The last re-post (≤ 2 s ago) said endsAt = +8 s: only the resolved notification ends it
    // within 4 s.
    daemon
        .wait_until(Duration::from_secs(4), "Alertmanager to resolve the alert", || async {
            am.drift_alerts().await.is_empty().then_some(())
        })
        .await;
    assert!(resolved_at.elapsed() < Duration::from_secs(4));
    let rows = outbox(&env).await;
    assert_eq!(
        rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect::<Vec<_>>(),
        [("firing:critical", true, false), ("resolved:critical", true, false)]
    );
    // A few more passes: nothing is re-posted for a resolved alert.
    tokio::time::sleep(Duration::from_secs(RESEND_S * 2)).await;
    assert!(am.drift_alerts().await.is_empty());

    let (_, metrics) = http_get(http_port, "/metrics");
    let count = |result: &str| -> f64 {
        metric_value(&metrics, &format!("tierwatch_alert_webhook_deliveries_total{{result=\"{result}\"}}"))
            .unwrap_or(0.0)
    };
    // This process delivered the firing row (after restart) and the resolved one; it re-posted.
    assert_eq!(count("delivered"), 2.0, "{metrics}");
    assert!(count("resent") >= 5.0, "{metrics}");
    assert_eq!(count("rejected"), 0.0, "{metrics}");
    let _ = daemon.stop();
    drop(am);
}
