//! Durable webhook delivery of alert notifications that never slows ingestion.
//!
//! Notifications are not queued in memory: the evaluator writes them to the store's outbox (see
//! [`super::outbox`]) in the transaction that records the alert transition, then [`WebhookSink::wake`]s
//! the delivery tasks. One task per webhook posts its undelivered rows in id order: it renders the
//! payload ([`alertmanager_payload_until`] or [`slack_payload`]) and POSTs it with a per-request
//! timeout. 2xx = delivered; 4xx other than 408/429 (and 3xx: redirects are not followed) = rejected,
//! given up at once; 5xx, 408, 429 and connection/TLS/timeout errors = the row stays undelivered and
//! is retried with exponential backoff capped at `max_backoff_ms` (a numeric `Retry-After` is
//! honoured, within the cap), for as long as it takes, after a restart too; later rows wait behind it
//! so transitions arrive in order. Delivery is at least once.
//!
//! Alertmanager webhooks also get every firing alert re-posted every `resend_interval_seconds` with
//! an `endsAt` [`RESEND_VALIDITY`] intervals ahead (as Prometheus does): Alertmanager would otherwise
//! resolve an alert after its `resolve_timeout` although tierwatch still says it fires. Slack gets
//! transitions only.
//!
//! TLS: rustls with the *ring* provider, installed as the process default by [`WebhookSink::start`]
//! (an already installed default is kept). `https` webhooks verify the server with the platform
//! verifier (the system CA store); `start` fails with a clear error when that store cannot be loaded.
//! `http` webhooks get a client that needs no CA store.
//!
//! Webhook URLs often embed a secret (Slack), so logs name a webhook by scheme, host and port only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::outbox::{webhook_key, OutboxRow, OutboxStore};
use super::{AlertState, Episode, Severity};
use crate::telemetry::{WebhookMetrics, WebhookStats};

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
    /// Alertmanager webhooks only: every firing alert is re-posted this often, with an `endsAt`
    /// [`RESEND_VALIDITY`] intervals ahead, as Prometheus does, so Alertmanager keeps it active
    /// while tierwatch says it fires (and resolves it by itself if tierwatch stops). At least 1.
    /// Slack webhooks get transitions only. Default 60.
    #[serde(default = "default_resend_interval_seconds")]
    pub resend_interval_seconds: u64,
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
fn default_resend_interval_seconds() -> u64 {
    60
}

/// A re-posted (or freshly delivered) firing alert's `endsAt` is this many resend intervals after
/// the post: Prometheus' rule, so that a few lost posts do not resolve it.
pub const RESEND_VALIDITY: u32 = 4;

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
            resend_interval_seconds: default_resend_interval_seconds(),
        }
    }

    /// Checks the URL (http or https, with a host) and the limits; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        parse_url(&self.url)?;
        anyhow::ensure!(self.max_attempts >= 1, "webhook `max_attempts` must be at least 1");
        anyhow::ensure!(self.timeout_ms >= 1, "webhook `timeout_ms` must be at least 1");
        anyhow::ensure!(self.resend_interval_seconds >= 1, "webhook `resend_interval_seconds` must be at least 1");
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

impl Notification {
    /// The notification of `e`'s current transition (its `state`), with the standard summary.
    pub fn for_episode(e: &Episode) -> Self {
        Notification {
            episode: e.clone(),
            state: e.state,
            summary: format!("{} {}: {:.4} vs threshold {:.4}", e.kind, e.subject, e.value, e.threshold),
            dashboard_url: None,
        }
    }
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
///   resolving window; event time, so it is in the past and Alertmanager resolves the alert); see
///   [`alertmanager_payload_until`] for the `endsAt` of a firing alert.
/// * `severity` is a label, so an escalated episode is a different Alertmanager alert from its
///   warning phase: the array then also carries the warning alert ended at the escalation, so it
///   does not linger until Alertmanager's resolve timeout.
/// * `value` is the value at firing/escalation (the last value on `Resolved`).
pub fn alertmanager_payload(n: &Notification) -> Value {
    alertmanager_payload_until(n, None)
}

/// [`alertmanager_payload`] with, on a firing alert, `endsAt` = `valid_until_ms` (when given): the
/// time until which Alertmanager keeps it active without a new post. Delivery and re-posting set it
/// [`RESEND_VALIDITY`] resend intervals ahead.
pub fn alertmanager_payload_until(n: &Notification, valid_until_ms: Option<i64>) -> Value {
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
    let resolved_at = if resolved { Some(e.resolved_window_end_ms.unwrap_or(e.window_end_ms)) } else { valid_until_ms };
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

/// The body for `format`; `valid_until_ms` as in [`alertmanager_payload_until`].
pub fn payload(format: PayloadFormat, n: &Notification, valid_until_ms: Option<i64>) -> Value {
    match format {
        PayloadFormat::Alertmanager => alertmanager_payload_until(n, valid_until_ms),
        PayloadFormat::Slack => slack_payload(n),
    }
}

// ---------- delivery ----------

/// How often a delivery task looks at the outbox without being woken (rows written by another
/// instance, a wake-up lost to a crash).
const POLL: Duration = Duration::from_secs(5);
/// Outbox rows read per query.
const BATCH: i64 = 64;
/// How often delivered rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

struct Route {
    key: String,
    wake: Arc<tokio::sync::Notify>,
}

/// Alert webhooks: one delivery task per configured webhook, fed by the store's outbox.
pub struct WebhookSink {
    routes: Vec<Route>,
    keys: Vec<String>,
    metrics: WebhookMetrics,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink").field("webhooks", &self.keys.len()).finish()
    }
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
    /// Spawns one delivery task per configured webhook on the current tokio runtime, each reading
    /// its rows of `store`'s outbox (rows left undelivered by an earlier run included).
    ///
    /// Fails outside a tokio runtime, on an invalid config, or when an https webhook's client cannot
    /// be built (no loadable system CA store). Call it at startup: building an https client reads the
    /// system CA store once.
    pub fn start<S: OutboxStore>(
        configs: Vec<WebhookConfig>,
        store: Arc<S>,
        metrics: WebhookMetrics,
    ) -> anyhow::Result<Self> {
        Self::start_inner(configs, store, metrics, false)
    }

    pub(crate) fn start_inner<S: OutboxStore>(
        configs: Vec<WebhookConfig>,
        store: Arc<S>,
        metrics: WebhookMetrics,
        no_proxy: bool,
    ) -> anyhow::Result<Self> {
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
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut routes = Vec::with_capacity(prepared.len());
        let mut tasks = Vec::with_capacity(prepared.len());
        for (cfg, url, client) in prepared {
            let key = webhook_key(&cfg.url, cfg.format);
            if routes.iter().any(|r: &Route| r.key == key) {
                continue; // the same webhook twice: one queue, one delivery
            }
            let wake = Arc::new(tokio::sync::Notify::new());
            let worker = Worker {
                target: redacted(&url),
                cfg,
                url,
                client,
                key: key.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                wake: wake.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(handle.spawn(worker.run()));
            routes.push(Route { key, wake });
        }
        let keys = routes.iter().map(|r| r.key.clone()).collect();
        Ok(WebhookSink { routes, keys, metrics, stop, tasks })
    }

    /// The outbox key of every webhook ([`webhook_key`]): a transition gets one outbox row each.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Never blocks: tells the delivery tasks that new outbox rows were committed.
    pub fn wake(&self) {
        for r in &self.routes {
            r.wake.notify_one();
        }
    }

    /// A snapshot of the delivery counters.
    pub fn stats(&self) -> WebhookStats {
        self.metrics.stats()
    }

    /// Stops the delivery tasks: an attempt in flight may finish within `grace`, then the tasks are
    /// aborted. Undelivered rows stay in the outbox for the next start.
    pub async fn shutdown(self, grace: Duration) -> WebhookStats {
        let WebhookSink { stop, tasks, metrics, .. } = self;
        let _ = stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let stats = metrics.stats();
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Worker<S> {
    cfg: WebhookConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    target: String,
    key: String,
    store: Arc<S>,
    metrics: WebhookMetrics,
    wake: Arc<tokio::sync::Notify>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl<S: OutboxStore> Worker<S> {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The resend interval of an Alertmanager webhook; `None` for Slack (transitions only).
    fn resend_every(&self) -> Option<Duration> {
        (self.cfg.format == PayloadFormat::Alertmanager)
            .then(|| Duration::from_secs(self.cfg.resend_interval_seconds.max(1)))
    }

    /// `endsAt` of a firing alert posted now.
    fn valid_until_ms(&self) -> Option<i64> {
        self.resend_every().map(|every| now_ms().saturating_add((every * RESEND_VALIDITY).as_millis() as i64))
    }

    /// Deliver the outbox in order; resend firing alerts every interval (the first time at start, so
    /// a restart longer than their validity does not leave them resolved); back off while the
    /// endpoint fails.
    async fn run(mut self) {
        let max_backoff = Duration::from_millis(self.cfg.max_backoff_ms);
        let initial = Duration::from_millis(self.cfg.initial_backoff_ms).min(max_backoff);
        let mut backoff = initial;
        let mut failures: u32 = 0;
        let start = tokio::time::Instant::now();
        let mut next_resend = start;
        let mut next_prune = start;
        loop {
            if self.stopping() {
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= next_prune {
                if let Err(e) = self.store.outbox_prune().await {
                    self.metrics.store_errors.count_error(&e);
                    tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "alert outbox prune failed");
                }
                next_prune = now + PRUNE_EVERY;
            }
            let mut wait = POLL;
            let leased = self.store.outbox_lease(&self.key).await.unwrap_or_else(|e| {
                self.metrics.store_errors.count_error(&e);
                tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "alert outbox lease check failed; will retry");
                false
            });
            if !leased {
                // Another instance delivers this webhook (or the store is away): look again later.
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    changed = self.stop.changed() => if changed.is_err() { break },
                }
                continue;
            }
            match self.drain().await {
                None => {
                    backoff = initial;
                    failures = 0;
                }
                Some(retry_after) => {
                    failures = failures.saturating_add(1);
                    wait = retry_after.map_or(backoff, |ra| ra.max(backoff)).min(max_backoff);
                    backoff = backoff.saturating_mul(2).min(max_backoff);
                    if failures == self.cfg.max_attempts.max(1) {
                        tracing::error!(webhook = %self.target, attempts = failures, "alert notifications still undelivered; retrying every {} ms at most until the webhook accepts them", max_backoff.as_millis());
                    }
                }
            }
            if let Some(every) = self.resend_every() {
                let now = tokio::time::Instant::now();
                if now >= next_resend && !self.stopping() {
                    self.resend().await;
                    next_resend = now + every;
                }
                wait = wait.min(next_resend.saturating_duration_since(tokio::time::Instant::now()));
            }
            let backing_off = failures > 0;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified(), if !backing_off => {}
                // Err: the sink was dropped without a shutdown.
                changed = self.stop.changed() => if changed.is_err() { break },
            }
        }
    }

    /// Post undelivered rows, oldest first, until none is left (`None`) or one fails retryably
    /// (`Some(retry_after)`): later rows wait for it, so transitions arrive in order.
    async fn drain(&self) -> Option<Option<Duration>> {
        loop {
            let rows = match self.store.outbox_pending(&self.key, BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.metrics.store_errors.count_error(&e);
                    tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "reading the alert outbox failed; will retry");
                    return Some(None);
                }
            };
            if rows.is_empty() {
                return None;
            }
            for row in rows {
                if self.stopping() {
                    return None;
                }
                if let Some(retry) = self.deliver(&row).await {
                    return Some(retry);
                }
            }
        }
    }

    /// One attempt at one row; `Some(retry_after)` when it must be retried.
    async fn deliver(&self, row: &OutboxRow) -> Option<Option<Duration>> {
        let n: Notification = match serde_json::from_str(&row.notification) {
            Ok(n) => n,
            Err(e) => {
                let why = format!("stored notification does not decode: {e}");
                return self.finish(row, Some(why)).await;
            }
        };
        let body = match serde_json::to_vec(&payload(self.cfg.format, &n, self.valid_until_ms())) {
            Ok(b) => b,
            Err(e) => return self.finish(row, Some(format!("payload not serialisable: {e}"))).await,
        };
        match self.attempt(body).await {
            Outcome::Delivered => {
                if row.attempts > 0 {
                    tracing::info!(webhook = %self.target, episode = %n.episode.id, attempts = row.attempts + 1, "alert notification delivered after retries");
                }
                self.finish(row, None).await
            }
            Outcome::GiveUp(why) => {
                tracing::warn!(webhook = %self.target, episode = %n.episode.id, "alert notification rejected, giving up: {why}");
                self.finish(row, Some(why)).await
            }
            Outcome::Retry(why, retry_after) => {
                self.metrics.retried.inc();
                let attempts = row.attempts.saturating_add(1);
                // Log the 1st, 2nd, 4th, 8th … failure of a row: an outage must not become a log storm.
                if (attempts as u32).is_power_of_two() {
                    tracing::warn!(webhook = %self.target, episode = %n.episode.id, attempts, "alert notification failed, will retry: {why}");
                }
                if let Err(e) = self.store.outbox_attempt_failed(row.id, &why).await {
                    self.metrics.store_errors.count_error(&e);
                    tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "recording a failed alert delivery failed");
                }
                Some(retry_after)
            }
        }
    }

    /// Mark a row delivered (`rejected = None`) or given up; a store error means retry later (the
    /// webhook may then see the notification twice: delivery is at least once).
    async fn finish(&self, row: &OutboxRow, rejected: Option<String>) -> Option<Option<Duration>> {
        match self.store.outbox_done(row.id, rejected.is_some(), rejected.as_deref()).await {
            Ok(()) => {
                let counter = if rejected.is_some() { &self.metrics.rejected } else { &self.metrics.delivered };
                counter.inc();
                None
            }
            Err(e) => {
                self.metrics.store_errors.count_error(&e);
                tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "recording an alert delivery failed; will retry");
                Some(None)
            }
        }
    }

    /// Post every firing episode in one body with a fresh `endsAt`.
    async fn resend(&self) {
        let firing = match self.store.firing_episodes().await {
            Ok(f) => f,
            Err(e) => {
                self.metrics.store_errors.count_error(&e);
                tracing::warn!(webhook = %self.target, error = %format!("{e:#}"), "reading firing alerts failed");
                self.metrics.resend_failed.inc();
                return;
            }
        };
        if firing.is_empty() {
            return;
        }
        let until = self.valid_until_ms();
        let mut alerts = Vec::with_capacity(firing.len());
        for e in &firing {
            if let Value::Array(a) = alertmanager_payload_until(&Notification::for_episode(e), until) {
                alerts.extend(a);
            }
        }
        let body = match serde_json::to_vec(&Value::Array(alerts)) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(webhook = %self.target, "firing alerts not serialisable: {e}");
                self.metrics.resend_failed.inc();
                return;
            }
        };
        match self.attempt(body).await {
            Outcome::Delivered => self.metrics.resent.inc(),
            Outcome::GiveUp(why) | Outcome::Retry(why, _) => {
                self.metrics.resend_failed.inc();
                tracing::warn!(webhook = %self.target, alerts = firing.len(), "re-posting firing alerts failed (next try in one interval): {why}");
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

#[cfg(test)]
mod tests;
