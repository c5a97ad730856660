//! Webhook tests: payload goldens, config parsing, and delivery against local (loopback) servers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::engine::episode_id;
use super::webhook::{one_line, WebhookStats};
use super::{
    alertmanager_payload, slack_payload, AlertState, Episode, Notification, PayloadFormat, Severity, WebhookConfig,
    WebhookSink,
};

const D5: i64 = 1_736_035_200_000; // 2025-01-05T00:00:00Z
const D6: i64 = 1_736_121_600_000; // 2025-01-06T00:00:00Z
const D7: i64 = 1_736_208_000_000; // 2025-01-07T00:00:00Z
const D9: i64 = 1_736_380_800_000; // 2025-01-09T00:00:00Z

fn episode() -> Episode {
    Episode {
        id: episode_id("confidence_drift", "clf-1", D6),
        kind: "confidence_drift".into(),
        subject: "clf-1".into(),
        severity: Severity::Critical,
        state: AlertState::Firing,
        fired_window_end_ms: D6,
        escalated_window_end_ms: None,
        resolved_window_end_ms: None,
        window_start_ms: D5,
        window_end_ms: D6,
        value: 0.13,
        threshold: 0.1,
        last_value: 0.13,
    }
}

fn firing() -> Notification {
    Notification {
        episode: episode(),
        state: AlertState::Firing,
        summary: "KS D 0.13 on the daily window, n = 12034".into(),
        dashboard_url: Some("https://grafana.example/d/tierwatch?var-subject=clf-1".into()),
    }
}

fn resolved() -> Notification {
    let mut n = firing();
    n.state = AlertState::Resolved;
    n.episode.state = AlertState::Resolved;
    n.episode.resolved_window_end_ms = Some(D9);
    n.episode.last_value = 0.031;
    n.dashboard_url = None;
    n
}

fn escalated() -> Notification {
    let mut n = firing();
    n.episode.fired_window_end_ms = D6;
    n.episode.escalated_window_end_ms = Some(D7);
    n.episode.window_start_ms = D6;
    n.episode.window_end_ms = D7;
    n
}

// ---------- payload goldens ----------

#[test]
fn alertmanager_firing_golden() {
    let n = firing();
    let id = n.episode.id.clone();
    assert_eq!(
        alertmanager_payload(&n),
        json!([{
            "labels": {
                "alertname": "confidence_drift",
                "kind": "confidence_drift",
                "subject": "clf-1",
                "severity": "critical",
                "service": "tierwatch"
            },
            "annotations": {
                "summary": "KS D 0.13 on the daily window, n = 12034",
                "value": "0.13",
                "threshold": "0.10",
                "window": "2025-01-05T00:00:00Z/2025-01-06T00:00:00Z",
                "episode_id": id
            },
            "startsAt": "2025-01-06T00:00:00Z",
            "generatorURL": "https://grafana.example/d/tierwatch?var-subject=clf-1"
        }])
    );
}

#[test]
fn alertmanager_resolved_golden() {
    let n = resolved();
    let id = n.episode.id.clone();
    assert_eq!(
        alertmanager_payload(&n),
        json!([{
            "labels": {
                "alertname": "confidence_drift",
                "kind": "confidence_drift",
                "subject": "clf-1",
                "severity": "critical",
                "service": "tierwatch"
            },
            "annotations": {
                "summary": "KS D 0.13 on the daily window, n = 12034",
                "value": "0.031",
                "threshold": "0.100",
                "window": "2025-01-05T00:00:00Z/2025-01-06T00:00:00Z",
                "episode_id": id
            },
            "startsAt": "2025-01-06T00:00:00Z",
            "endsAt": "2025-01-09T00:00:00Z"
        }])
    );
}

#[test]
fn alertmanager_escalation_ends_the_warning_alert() {
    let p = alertmanager_payload(&escalated());
    let alerts = p.as_array().expect("array");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["labels"]["severity"], "warning");
    assert_eq!(alerts[0]["startsAt"], "2025-01-06T00:00:00Z");
    assert_eq!(alerts[0]["endsAt"], "2025-01-07T00:00:00Z");
    assert_eq!(alerts[1]["labels"]["severity"], "critical");
    assert_eq!(alerts[1]["startsAt"], "2025-01-07T00:00:00Z");
    assert!(alerts[1].get("endsAt").is_none(), "still firing");
    assert_eq!(alerts[1]["annotations"]["window"], "2025-01-06T00:00:00Z/2025-01-07T00:00:00Z");
}

#[test]
fn slack_firing_golden() {
    let n = firing();
    let id = n.episode.id.clone();
    assert_eq!(
        slack_payload(&n),
        json!({
            "text": "[FIRING:critical] confidence_drift clf-1: KS D 0.13 on the daily window, n = 12034; value 0.13 \u{2265} 0.10 (window 2025-01-05T00:00:00Z/2025-01-06T00:00:00Z)",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn",
                    "text": "*[FIRING:critical] confidence_drift clf-1*\nKS D 0.13 on the daily window, n = 12034"}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Value*\n0.13"},
                    {"type": "mrkdwn", "text": "*Threshold*\n0.10"},
                    {"type": "mrkdwn", "text": "*Window*\n2025-01-05T00:00:00Z/2025-01-06T00:00:00Z"},
                    {"type": "mrkdwn", "text": format!("*Episode*\n{id}")}
                ]},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": "<https://grafana.example/d/tierwatch?var-subject=clf-1|Dashboard>"}
                ]}
            ]
        })
    );
}

#[test]
fn slack_resolved_and_escalated_text() {
    assert_eq!(
        slack_payload(&resolved())["text"],
        "[RESOLVED:critical] confidence_drift clf-1: KS D 0.13 on the daily window, n = 12034; last value 0.031, \
         threshold 0.100 (fired on the window ending 2025-01-06T00:00:00Z, resolved on the window ending 2025-01-09T00:00:00Z)"
    );
    assert_eq!(slack_payload(&resolved())["blocks"].as_array().map(Vec::len), Some(2), "no dashboard link");
    assert_eq!(
        one_line(&escalated()),
        "[FIRING:critical] confidence_drift clf-1: KS D 0.13 on the daily window, n = 12034; value 0.13 \u{2265} 0.10 \
         (window 2025-01-06T00:00:00Z/2025-01-07T00:00:00Z) (escalated from warning)"
    );
}

#[test]
fn slack_escapes_and_numbers() {
    let mut n = firing();
    n.summary = "p < 0.001 & D > 0.1".into();
    n.episode.value = 0.0213;
    n.episode.threshold = 0.02;
    let p = slack_payload(&n);
    let text = p["text"].as_str().unwrap_or_default();
    assert!(text.contains("p &lt; 0.001 &amp; D &gt; 0.1"), "{text}");
    assert!(text.contains("value 0.0213 \u{2265} 0.0200"), "{text}");
    assert!(!text.chars().any(|c| ('\u{1F000}'..='\u{1FAFF}').contains(&c)), "emoji-free");
    n.summary = String::new();
    n.episode.value = 1234.5678;
    n.episode.threshold = 1000.0;
    assert!(
        one_line(&n).starts_with("[FIRING:critical] confidence_drift clf-1; value 1235 \u{2265} 1000 "),
        "{}",
        one_line(&n)
    );
}

// ---------- config ----------

#[test]
fn config_defaults_and_strictness() {
    let c: WebhookConfig =
        serde_json::from_value(json!({"url": "http://127.0.0.1:9093/api/v2/alerts", "format": "alertmanager"}))
            .expect("parses");
    assert_eq!(c, WebhookConfig::new("http://127.0.0.1:9093/api/v2/alerts", PayloadFormat::Alertmanager));
    assert_eq!((c.max_attempts, c.initial_backoff_ms, c.max_backoff_ms, c.timeout_ms), (8, 200, 30_000, 5_000));
    assert!(c.validate().is_ok());
    let s: WebhookConfig =
        serde_json::from_value(json!({"url": "https://hooks.slack.com/services/X", "format": "slack",
        "max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 100, "timeout_ms": 50}))
        .expect("parses");
    assert_eq!(s.format, PayloadFormat::Slack);
    assert_eq!(s.max_attempts, 3);
    assert!(
        serde_json::from_value::<WebhookConfig>(json!({"url": "http://x", "format": "slack", "retries": 3})).is_err()
    );
    assert!(serde_json::from_value::<WebhookConfig>(json!({"url": "http://x", "format": "teams"})).is_err());

    for bad in ["ftp://example.com/x", "not a url", "http://"] {
        assert!(WebhookConfig::new(bad, PayloadFormat::Slack).validate().is_err(), "{bad}");
    }
    let mut c0 = c.clone();
    c0.max_attempts = 0;
    assert!(c0.validate().is_err());
}

#[test]
fn start_needs_a_runtime() {
    let err = WebhookSink::start(vec![], 8).expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn start_rejects_invalid_configs_without_echoing_the_url() {
    let err = WebhookSink::start(vec![WebhookConfig::new("gopher://hooks.example/SECRET", PayloadFormat::Slack)], 8)
        .expect_err("bad scheme");
    let msg = format!("{err:#}");
    assert!(msg.contains("http:// or https://"), "{msg}");
    assert!(!msg.contains("SECRET"), "{msg}");
}

// ---------- delivery against loopback servers ----------

#[derive(Default)]
struct Hook {
    fail_first: usize,
    fail_status: u16,
    always: Option<u16>,
    hits: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
}

async fn handle(State(h): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let hit = h.hits.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    if let Some(code) = h.always {
        return StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if hit < h.fail_first {
        return StatusCode::from_u16(h.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    h.bodies.lock().unwrap_or_else(|p| p.into_inner()).push(v);
    StatusCode::OK
}

async fn serve(hook: Hook) -> (SocketAddr, Arc<Hook>) {
    let hook = Arc::new(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(handle)).with_state(hook.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hook)
}

/// A loopback port with nothing listening.
async fn dead_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

fn fast(url: String, format: PayloadFormat, max_attempts: u32) -> WebhookConfig {
    WebhookConfig { url, format, max_attempts, initial_backoff_ms: 2, max_backoff_ms: 10, timeout_ms: 2_000 }
}

fn start(configs: Vec<WebhookConfig>, capacity: usize) -> WebhookSink {
    // Loopback tests must not go through an HTTP(S)_PROXY from the environment.
    WebhookSink::start_inner(configs, capacity, true).expect("start")
}

async fn wait_for(sink: &WebhookSink, what: &str, pred: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sink.stats();
        if pred(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn retries_503_then_delivers_the_alertmanager_shape() {
    let (addr, hook) = serve(Hook { fail_first: 3, fail_status: 503, ..Hook::default() }).await;
    let sink = start(vec![fast(format!("http://{addr}/hook"), PayloadFormat::Alertmanager, 8)], 16);
    let n = firing();
    sink.notify(n.clone());
    let s = wait_for(&sink, "delivery", |s| s.delivered == 1).await;
    assert_eq!((s.retried, s.failed, s.dropped), (3, 0, 0));
    assert_eq!(hook.hits.load(Ordering::SeqCst), 4);
    let bodies = hook.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(bodies, vec![alertmanager_payload(&n)]);
    let alert = &bodies[0][0];
    for key in ["alertname", "kind", "subject", "severity", "service"] {
        assert!(alert["labels"][key].is_string(), "labels.{key}");
    }
    for key in ["summary", "value", "threshold", "window"] {
        assert!(alert["annotations"][key].is_string(), "annotations.{key}");
    }
    assert!(alert["startsAt"].is_string() && alert["generatorURL"].is_string());
    let s = sink.shutdown(Duration::from_secs(1)).await;
    assert_eq!(s.pending, 0);
}

#[tokio::test]
async fn retries_429_and_408_then_delivers_slack() {
    for status in [429, 408] {
        let (addr, hook) = serve(Hook { fail_first: 2, fail_status: status, ..Hook::default() }).await;
        let sink = start(vec![fast(format!("http://{addr}/hook"), PayloadFormat::Slack, 5)], 4);
        let n = resolved();
        sink.notify(n.clone());
        let s = wait_for(&sink, "delivery", |s| s.delivered == 1).await;
        assert_eq!(s.retried, 2, "status {status}");
        let bodies = hook.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(bodies, vec![slack_payload(&n)]);
        assert!(bodies[0]["text"].as_str().is_some_and(|t| t.starts_with("[RESOLVED:critical] ")));
        sink.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn gives_up_on_400_after_one_attempt() {
    let (addr, hook) = serve(Hook { always: Some(400), ..Hook::default() }).await;
    let sink = start(vec![fast(format!("http://{addr}/hook"), PayloadFormat::Slack, 8)], 4);
    sink.notify(firing());
    let s = wait_for(&sink, "give-up", |s| s.failed == 1).await;
    assert_eq!((s.delivered, s.retried), (0, 0));
    // Nothing more happens afterwards.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(hook.hits.load(Ordering::SeqCst), 1);
    assert_eq!(sink.shutdown(Duration::from_secs(1)).await.failed, 1);
}

#[tokio::test]
async fn retries_always_failing_5xx_up_to_max_attempts() {
    let (addr, hook) = serve(Hook { always: Some(500), ..Hook::default() }).await;
    let sink = start(vec![fast(format!("http://{addr}/hook"), PayloadFormat::Alertmanager, 4)], 4);
    sink.notify(firing());
    let s = wait_for(&sink, "give-up", |s| s.failed == 1).await;
    assert_eq!((s.delivered, s.retried), (0, 3));
    assert_eq!(hook.hits.load(Ordering::SeqCst), 4);
    sink.shutdown(Duration::from_secs(1)).await;
}

// current_thread: the delivery task cannot run while the test body loops without awaiting, so exactly
// `capacity` notifications are queued and the rest are dropped.
#[tokio::test(flavor = "current_thread")]
async fn dead_endpoint_never_slows_notify_and_gives_up() {
    let addr = dead_port().await;
    let capacity = 4;
    let sink = start(vec![fast(format!("http://{addr}/hook"), PayloadFormat::Alertmanager, 3)], capacity);
    let n = firing();
    let t = Instant::now();
    for _ in 0..10_000 {
        sink.notify(n.clone());
    }
    let elapsed = t.elapsed();
    assert!(elapsed < Duration::from_secs(1), "10_000 notify calls took {elapsed:?}");
    let s = sink.stats();
    assert_eq!(s.dropped, 10_000 - capacity as u64);
    assert_eq!(s.pending, capacity as u64);
    let s = wait_for(&sink, "give-up on every queued notification", |s| s.failed == capacity as u64).await;
    assert_eq!((s.delivered, s.retried, s.pending), (0, 2 * capacity as u64, 0));
    let s = sink.shutdown(Duration::from_secs(1)).await;
    assert_eq!(s.failed + s.dropped, 10_000);
}

#[tokio::test]
async fn https_uses_rustls_with_ring() {
    // A plain-http server behind an https URL: the client must be buildable (ring provider, system CA
    // store) and the TLS handshake must fail as a retryable error, never reach the handler.
    let (addr, hook) = serve(Hook::default()).await;
    let cfg = fast(format!("https://{addr}/hook"), PayloadFormat::Slack, 2);
    let sink = match WebhookSink::start_inner(vec![cfg], 4, true) {
        Ok(s) => s,
        Err(e) => {
            // Only acceptable reason: this machine has no loadable CA store.
            let msg = format!("{e:#}");
            assert!(msg.contains("CA certificates"), "{msg}");
            eprintln!("skipping https delivery check: {msg}");
            return;
        }
    };
    assert!(rustls::crypto::CryptoProvider::get_default().is_some(), "a default provider is installed");
    sink.notify(firing());
    let s = wait_for(&sink, "give-up", |s| s.failed == 1).await;
    assert_eq!((s.delivered, s.retried), (0, 1));
    assert!(hook.bodies.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
    sink.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn every_webhook_gets_every_notification_and_shutdown_drains() {
    let (a, hook_a) = serve(Hook::default()).await;
    let (b, hook_b) = serve(Hook { fail_first: 1, fail_status: 502, ..Hook::default() }).await;
    let sink = start(
        vec![
            fast(format!("http://{a}/hook"), PayloadFormat::Alertmanager, 3),
            fast(format!("http://{b}/hook"), PayloadFormat::Slack, 3),
        ],
        16,
    );
    for _ in 0..5 {
        sink.notify(firing());
    }
    let s = sink.shutdown(Duration::from_secs(10)).await;
    assert_eq!((s.delivered, s.failed, s.dropped, s.pending, s.retried), (10, 0, 0, 0, 1));
    let bodies_a = hook_a.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let bodies_b = hook_b.bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(bodies_a.len(), 5);
    assert_eq!(bodies_b.len(), 5);
    assert!(bodies_a.iter().all(|v| v.is_array()));
    assert!(bodies_b.iter().all(|v| v["text"].is_string()));
}

#[tokio::test]
async fn shutdown_gives_up_after_the_grace_period() {
    let addr = dead_port().await;
    let cfg = WebhookConfig {
        url: format!("http://{addr}/hook"),
        format: PayloadFormat::Slack,
        max_attempts: 5,
        initial_backoff_ms: 60_000,
        max_backoff_ms: 60_000,
        timeout_ms: 1_000,
    };
    let sink = start(vec![cfg], 4);
    sink.notify(firing());
    sink.notify(firing());
    wait_for(&sink, "first failed attempt", |s| s.retried >= 1).await;
    let t = Instant::now();
    let s = sink.shutdown(Duration::from_millis(100)).await;
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown honours its grace period");
    assert_eq!(s.pending, 2, "both abandoned: {s:?}");
    assert_eq!(s.delivered + s.failed, 0);
}

#[tokio::test]
async fn no_webhooks_is_a_no_op() {
    let sink = start(vec![], 4);
    sink.notify(firing());
    assert_eq!(sink.shutdown(Duration::from_millis(10)).await, WebhookStats::default());
}
