//! Webhook delivery of alert notifications that never slows ingestion.
//!
//! [`WebhookSink::notify`] only does a non-blocking `try_send` per configured webhook into a bounded
//! queue; a full queue drops the notification and counts it. One task per webhook drains its queue
//! in order: it renders the payload ([`alertmanager_payload`] or [`slack_payload`]) and POSTs it with
//! a per-request timeout, retrying with exponential backoff. 2xx = delivered; 4xx other than 408/429
//! (and 3xx: redirects are not followed) = give up at once; 5xx, 408, 429 and connection/TLS/timeout
//! errors = retry, up to `max_attempts` attempts in all (a numeric `Retry-After` is honoured, capped at
//! `max_backoff_ms`).
//!
//! TLS: rustls with the *ring* provider, installed as the process default by [`WebhookSink::start`]
//! (an already installed default is kept). `https` webhooks verify the server with the platform
//! verifier (the system CA store); `start` fails with a clear error when that store cannot be loaded.
//! `http` webhooks get a client that needs no CA store.
//!
//! Webhook URLs often embed a secret (Slack), so logs name a webhook by scheme, host and port only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AlertState, Episode, Severity};

/// One webhook to POST alert notifications to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL to POST to (`http://` or `https://`). For Alertmanager, its `/api/v2/alerts` endpoint,
    /// e.g. `http://alertmanager:9093/api/v2/alerts`; for Slack, the incoming-webhook URL. May
    /// contain `${env:NAME}` / `${file:PATH}` references; shown as `scheme://host/***`.
    #[serde(deserialize_with = "crate::secret::expand_string", serialize_with = "crate::secret::serialize_url_origin")]
    pub url: String,
    /// Payload shape: `"alertmanager"` (Alertmanager API v2 alerts array) or `"slack"` (Slack
    /// incoming-webhook message).
    pub format: PayloadFormat,
    /// Attempts (the first one included) before giving up on one notification. At least 1.
    /// Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay in milliseconds, doubled after each retry up to `max_backoff_ms`.
    /// Default 200.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Cap on the retry delay in milliseconds (also caps a server's `Retry-After`). Default 30000.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Timeout of one attempt (connect, send and response), in milliseconds. At least 1.
    /// Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    8
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

impl WebhookConfig {
    /// A webhook to `url` in `format` with the default retry settings.
    pub fn new(url: impl Into<String>, format: PayloadFormat) -> Self {
        WebhookConfig {
            url: url.into(),
            format,
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// Checks the URL (http or https, with a host) and the limits; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        parse_url(&self.url)?;
        anyhow::ensure!(self.max_attempts >= 1, "webhook `max_attempts` must be at least 1");
        anyhow::ensure!(self.timeout_ms >= 1, "webhook `timeout_ms` must be at least 1");
        Ok(())
    }
}

fn parse_url(raw: &str) -> anyhow::Result<reqwest::Url> {
    // Do not echo the URL: it may hold a secret.
    let url = reqwest::Url::parse(raw).map_err(|e| anyhow::anyhow!("webhook `url` is not a valid URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https"),
        "webhook `url` must be http:// or https://, not {}://",
        url.scheme()
    );
    anyhow::ensure!(url.host_str().is_some_and(|h| !h.is_empty()), "webhook `url` has no host");
    Ok(url)
}

/// A log-safe name of a webhook: scheme, host and port, never the path or query.
fn redacted(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("{}://?", url.scheme()),
    }
}

/// The JSON body shape a webhook expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Alertmanager API v2 `POST /api/v2/alerts`: see [`alertmanager_payload`].
    Alertmanager,
    /// Slack incoming webhook: see [`slack_payload`].
    Slack,
}

/// One alert transition to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The episode as of this transition.
    pub episode: Episode,
    /// Which transition: `Firing` (fired or escalated) or `Resolved`.
    pub state: AlertState,
    /// One human sentence on what happened (e.g. "KS D 0.13 on the daily window, n = 12034").
    pub summary: String,
    /// Link to a dashboard for this alert (Alertmanager `generatorURL`, a Slack link).
    pub dashboard_url: Option<String>,
}

// ---------- payloads ----------

/// Unix ms as RFC 3339 UTC (`2025-01-05T00:00:00Z`, sub-second digits only when non-zero); the raw
/// number when out of chrono's range.
fn rfc3339(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => ms.to_string(),
    }
}

/// Decimals needed to show `x` to 3 significant digits, trailing zeros dropped (0..=9).
fn decimals_needed(x: f64) -> usize {
    if !x.is_finite() || x == 0.0 {
        return 0;
    }
    let d = (2 - x.abs().log10().floor() as i64).clamp(0, 9) as usize;
    let s = format!("{x:.d$}");
    match s.split_once('.') {
        Some((_, frac)) => frac.trim_end_matches('0').len(),
        None => 0,
    }
}

/// `value` and `threshold` with the same number of decimals, enough for 3 significant digits of
/// either (`0.13`, `0.1` → `"0.13"`, `"0.10"`).
fn fmt_pair(value: f64, threshold: f64) -> (String, String) {
    let d = decimals_needed(value).max(decimals_needed(threshold));
    let f = |x: f64| if x.is_finite() { format!("{x:.d$}") } else { x.to_string() };
    (f(value), f(threshold))
}

/// Escapes `&`, `<` and `>` for Slack mrkdwn / message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Alertmanager API v2 `POST /api/v2/alerts` body: an array of alerts, each
/// `{labels: {alertname, kind, subject, severity, service: "tierwatch"}, annotations: {summary,
/// value, threshold, window, episode_id}, startsAt, endsAt?, generatorURL?}`.
///
/// * `alertname` is the kind; `window` is the event-time window that fired (or escalated) as an
///   RFC 3339 interval `start/end`.
/// * `startsAt` is the end of that window. `endsAt` is set only on `Resolved` (the end of the
///   resolving window; event time, so it is in the past and Alertmanager resolves the alert).
/// * `severity` is a label, so an escalated episode is a different Alertmanager alert from its
///   warning phase: the array then also carries the warning alert ended at the escalation, so it
///   does not linger until Alertmanager's resolve timeout.
/// * `value` is the value at firing/escalation (the last value on `Resolved`).
pub fn alertmanager_payload(n: &Notification) -> Value {
    let e = &n.episode;
    let resolved = n.state == AlertState::Resolved;
    let shown_value = if resolved { e.last_value } else { e.value };
    let (value, threshold) = fmt_pair(shown_value, e.threshold);
    let annotations = json!({
        "summary": n.summary,
        "value": value,
        "threshold": threshold,
        "window": format!("{}/{}", rfc3339(e.window_start_ms), rfc3339(e.window_end_ms)),
        "episode_id": e.id,
    });
    let alert = |severity: Severity, starts_ms: i64, ends_ms: Option<i64>| {
        let mut a = json!({
            "labels": {
                "alertname": e.kind,
                "kind": e.kind,
                "subject": e.subject,
                "severity": severity.as_str(),
                "service": "tierwatch",
            },
            "annotations": annotations.clone(),
            "startsAt": rfc3339(starts_ms),
        });
        if let Some(obj) = a.as_object_mut() {
            if let Some(ends) = ends_ms {
                obj.insert("endsAt".into(), Value::String(rfc3339(ends)));
            }
            if let Some(url) = &n.dashboard_url {
                obj.insert("generatorURL".into(), Value::String(url.clone()));
            }
        }
        a
    };
    let resolved_at = if resolved { Some(e.resolved_window_end_ms.unwrap_or(e.window_end_ms)) } else { None };
    let mut alerts = Vec::with_capacity(2);
    match e.escalated_window_end_ms {
        Some(escalated) if e.severity == Severity::Critical => {
            alerts.push(alert(Severity::Warning, e.fired_window_end_ms, Some(escalated)));
            alerts.push(alert(Severity::Critical, escalated, resolved_at));
        }
        _ => alerts.push(alert(e.severity, e.fired_window_end_ms, resolved_at)),
    }
    Value::Array(alerts)
}

/// The one-line, emoji-free text of a notification (also Slack's fallback `text`), unescaped:
///
/// * firing: `[FIRING:critical] confidence_drift clf-1: <summary>; value 0.13 ≥ 0.10 (window
///   <start>/<end>)`, plus ` (escalated from warning)` when it was;
/// * resolved: `[RESOLVED:critical] confidence_drift clf-1: <summary>; last value 0.03, threshold
///   0.10 (fired on the window ending <t>, resolved on the window ending <t>)`.
pub fn one_line(n: &Notification) -> String {
    let e = &n.episode;
    let head = format!("[{}:{}] {} {}", n.state.as_str().to_ascii_uppercase(), e.severity.as_str(), e.kind, e.subject);
    let summary = if n.summary.trim().is_empty() { String::new() } else { format!(": {}", n.summary.trim()) };
    match n.state {
        AlertState::Firing => {
            let (v, t) = fmt_pair(e.value, e.threshold);
            let escalated = if e.escalated_window_end_ms.is_some() { " (escalated from warning)" } else { "" };
            format!(
                "{head}{summary}; value {v} \u{2265} {t} (window {}/{}){escalated}",
                rfc3339(e.window_start_ms),
                rfc3339(e.window_end_ms)
            )
        }
        AlertState::Resolved => {
            let (v, t) = fmt_pair(e.last_value, e.threshold);
            let resolved = e.resolved_window_end_ms.map_or_else(|| "?".to_string(), rfc3339);
            format!(
                "{head}{summary}; last value {v}, threshold {t} (fired on the window ending {}, resolved on the window ending {resolved})",
                rfc3339(e.fired_window_end_ms)
            )
        }
    }
}

/// The Slack incoming-webhook body: `{"text": <one_line, escaped>, "blocks": [header section,
/// fields section (value, threshold, window, episode), optional dashboard link context]}`.
pub fn slack_payload(n: &Notification) -> Value {
    let e = &n.episode;
    let resolved = n.state == AlertState::Resolved;
    let (v, t) = fmt_pair(if resolved { e.last_value } else { e.value }, e.threshold);
    let title = format!(
        "*[{}:{}] {} {}*",
        n.state.as_str().to_ascii_uppercase(),
        e.severity.as_str(),
        slack_escape(&e.kind),
        slack_escape(&e.subject)
    );
    let header =
        if n.summary.trim().is_empty() { title } else { format!("{title}\n{}", slack_escape(n.summary.trim())) };
    let window = format!("{}/{}", rfc3339(e.window_start_ms), rfc3339(e.window_end_ms));
    let field = |name: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")});
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": header}}),
        json!({"type": "section", "fields": [
            field(if resolved { "Last value" } else { "Value" }, v),
            field("Threshold", t),
            field("Window", window),
            field("Episode", e.id.clone()),
        ]}),
    ];
    if let Some(url) = &n.dashboard_url {
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("<{}|Dashboard>", slack_escape(url))}
        ]}));
    }
    json!({"text": slack_escape(&one_line(n)), "blocks": blocks})
}

/// The body for `format`.
pub fn payload(format: PayloadFormat, n: &Notification) -> Value {
    match format {
        PayloadFormat::Alertmanager => alertmanager_payload(n),
        PayloadFormat::Slack => slack_payload(n),
    }
}

// ---------- delivery ----------

/// Delivery counters, summed over all webhooks (one notification to two webhooks counts twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Notifications delivered (a 2xx answer).
    pub delivered: u64,
    /// Notifications given up on (a non-retryable answer, or `max_attempts` failed attempts).
    pub failed: u64,
    /// Retries (attempts after the first).
    pub retried: u64,
    /// Notifications dropped because a queue was full (or closed).
    pub dropped: u64,
    /// Notifications queued or being delivered right now (after [`WebhookSink::shutdown`]: the ones
    /// abandoned when the grace period ran out).
    pub pending: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Route {
    target: String,
    tx: mpsc::Sender<Arc<Notification>>,
}

/// Alert webhooks: one bounded queue and one delivery task per configured webhook.
#[derive(Debug)]
pub struct WebhookSink {
    routes: Vec<Route>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

/// Installs rustls' ring provider as the process default unless a provider is already installed.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err = someone installed one concurrently: theirs is used, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn build_client(url: &reqwest::Url, cfg: &WebhookConfig, no_proxy: bool) -> anyhow::Result<reqwest::Client> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tierwatch/", env!("CARGO_PKG_VERSION")));
    if no_proxy {
        builder = builder.no_proxy();
    }
    if url.scheme() == "http" {
        // Plain http needs no CA store: hand reqwest a TLS config with no roots (it would refuse any
        // https it was redirected to; redirects are not followed anyway).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("webhook TLS configuration")?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder = builder.tls_backend_preconfigured(tls);
    }
    // https: reqwest's rustls backend with the installed default provider (ring) and the platform
    // verifier (system CA store).
    builder.build().map_err(|e| {
        anyhow::anyhow!(
            "webhook {}: cannot build the HTTP client (for https the system CA certificates must be loadable, \
             e.g. the ca-certificates package): {}",
            redacted(url),
            error_chain(&e)
        )
    })
}

impl WebhookSink {
    /// Spawns one delivery task per configured webhook on the current tokio runtime, each fed by a
    /// bounded queue of `capacity` notifications (at least 1).
    ///
    /// Fails outside a tokio runtime, on an invalid config, or when an https webhook's client cannot
    /// be built (no loadable system CA store). Call it at startup: building an https client reads the
    /// system CA store once.
    pub fn start(configs: Vec<WebhookConfig>, capacity: usize) -> anyhow::Result<Self> {
        Self::start_inner(configs, capacity, false)
    }

    pub(crate) fn start_inner(configs: Vec<WebhookConfig>, capacity: usize, no_proxy: bool) -> anyhow::Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("WebhookSink::start must be called inside a tokio runtime"))?;
        install_crypto_provider();
        let mut prepared = Vec::with_capacity(configs.len());
        for (i, cfg) in configs.into_iter().enumerate() {
            cfg.validate().with_context(|| format!("webhook #{i}"))?;
            let url = parse_url(&cfg.url).with_context(|| format!("webhook #{i}"))?;
            let client = build_client(&url, &cfg, no_proxy)?;
            prepared.push((cfg, url, client));
        }
        let counters = Arc::new(Counters::default());
        let mut routes = Vec::with_capacity(prepared.len());
        let mut tasks = Vec::with_capacity(prepared.len());
        for (cfg, url, client) in prepared {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            let target = redacted(&url);
            let worker = Worker { cfg, url, client, target: target.clone(), counters: counters.clone() };
            tasks.push(handle.spawn(worker.run(rx)));
            routes.push(Route { target, tx });
        }
        Ok(WebhookSink { routes, counters, tasks })
    }

    /// Never blocks, never awaits: enqueues `n` to every webhook; a full queue drops the
    /// notification for that webhook and counts it in `dropped`.
    pub fn notify(&self, n: Notification) {
        if self.routes.is_empty() {
            return;
        }
        let n = Arc::new(n);
        for route in &self.routes {
            // Count before sending so the worker's decrement can never come first.
            self.counters.pending.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = route.tx.try_send(n.clone()) {
                self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Log the 1st, 2nd, 4th, 8th … drop: a storm of drops must not become a storm of logs.
                if dropped.is_power_of_two() {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "delivery task stopped",
                    };
                    tracing::warn!(webhook = %route.target, dropped_total = dropped, "alert notification dropped: {why}");
                }
            }
        }
    }

    /// A snapshot of the delivery counters.
    pub fn stats(&self) -> WebhookStats {
        self.counters.snapshot()
    }

    /// Stops accepting notifications and waits up to `grace` for the queues to drain (deliveries,
    /// retries included, continue meanwhile); tasks still running then are aborted. Returns the final
    /// counters (`pending` = notifications abandoned).
    pub async fn shutdown(self, grace: Duration) -> WebhookStats {
        let WebhookSink { routes, counters, tasks } = self;
        drop(routes); // closes the queues: each worker drains its queue, then returns
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let stats = counters.snapshot();
        if stats.pending > 0 {
            tracing::warn!(
                abandoned = stats.pending,
                "alert webhooks: shutdown grace period over, notifications abandoned"
            );
        }
        tracing::info!(?stats, "alert webhooks stopped");
        stats
    }
}

enum Outcome {
    Delivered,
    GiveUp(String),
    Retry(String, Option<Duration>),
}

/// `e` and its sources, `: `-separated, without any URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

struct Worker {
    cfg: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    target: String,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Arc<Notification>>) {
        while let Some(n) = rx.recv().await {
            self.deliver(&n).await;
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, n: &Notification) {
        let body = match serde_json::to_vec(&payload(self.cfg.format, n)) {
            Ok(b) => b,
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = %self.target, episode = %n.episode.id, "alert payload not serialisable: {e}");
                return;
            }
        };
        let max_attempts = self.cfg.max_attempts.max(1);
        let max_backoff = Duration::from_millis(self.cfg.max_backoff_ms);
        let mut backoff = Duration::from_millis(self.cfg.initial_backoff_ms).min(max_backoff);
        for attempt in 1..=max_attempts {
            match self.attempt(body.clone()).await {
                Outcome::Delivered => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    if attempt > 1 {
                        tracing::info!(webhook = %self.target, episode = %n.episode.id, attempt, "alert notification delivered after retries");
                    }
                    return;
                }
                Outcome::GiveUp(why) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(webhook = %self.target, episode = %n.episode.id, attempt, "alert notification rejected, giving up: {why}");
                    return;
                }
                Outcome::Retry(why, retry_after) => {
                    if attempt == max_attempts {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(webhook = %self.target, episode = %n.episode.id, attempt, "alert notification failed, giving up after {max_attempts} attempts: {why}");
                        return;
                    }
                    let delay = retry_after.map_or(backoff, |ra| ra.max(backoff)).min(max_backoff);
                    tracing::warn!(webhook = %self.target, episode = %n.episode.id, attempt, retry_in_ms = delay.as_millis() as u64, "alert notification failed, will retry: {why}");
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    backoff = backoff.saturating_mul(2).min(max_backoff);
                }
            }
        }
    }

    async fn attempt(&self, body: Vec<u8>) -> Outcome {
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                let why = error_chain(&e);
                return if e.is_builder() { Outcome::GiveUp(why) } else { Outcome::Retry(why, None) };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let why = format!("HTTP {status}{}", body_snippet(resp).await);
        let code = status.as_u16();
        if status.is_server_error() || code == 408 || code == 429 {
            Outcome::Retry(why, retry_after)
        } else if status.is_redirection() {
            Outcome::GiveUp(format!("{why} (redirects are not followed: configure the final URL)"))
        } else {
            Outcome::GiveUp(why)
        }
    }
}

/// The start of an error response's body (Slack explains rejections there), for the log.
async fn body_snippet(mut resp: reqwest::Response) -> String {
    const MAX: usize = 200;
    match resp.chunk().await {
        Ok(Some(chunk)) if !chunk.is_empty() => {
            let text = String::from_utf8_lossy(&chunk[..chunk.len().min(MAX)]);
            format!(": {}", text.trim())
        }
        _ => String::new(),
    }
}
