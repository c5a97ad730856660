//! The alert outbox: what the webhook delivery tasks need from the store.
//!
//! An alert transition and its notifications are written in one transaction (see
//! `EvalStore::upsert_episode`): one outbox row per configured webhook, identified by
//! [`webhook_key`]. The delivery task of each webhook posts its undelivered rows in id order and
//! marks them delivered (or rejected) afterwards, so a notification survives a full queue, an
//! endpoint outage, the shutdown grace period and a crash: at least once, never lost. Firing
//! episodes are also re-posted periodically (Alertmanager webhooks only) from [`firing_episodes`].
//!
//! [`firing_episodes`]: OutboxStore::firing_episodes

use std::future::Future;

use super::{AlertState, Episode, PayloadFormat, Severity};

/// Delivered rows are kept this long (for inspection), then deleted.
pub const KEEP_DELIVERED_DAYS: i64 = 7;

/// One undelivered notification of one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Outbox row id (delivery order).
    pub id: i64,
    /// The [`super::Notification`] as JSON.
    pub notification: String,
    /// Failed attempts so far (across restarts).
    pub attempts: i32,
}

/// The stable key of a webhook in the outbox: 32 hex digits of a hash of its URL and payload
/// format. The URL itself is never stored (it may embed a secret); changing a webhook's URL starts
/// a new queue (the old rows stay undelivered, see `tw_alert_outbox`).
pub fn webhook_key(url: &str, format: PayloadFormat) -> String {
    let mut buf = Vec::with_capacity(url.len() + 32);
    buf.extend_from_slice(b"tierwatch.alert.webhook.v1");
    buf.extend_from_slice(&(url.len() as u64).to_le_bytes());
    buf.extend_from_slice(url.as_bytes());
    buf.extend_from_slice(match format {
        PayloadFormat::Alertmanager => b"alertmanager",
        PayloadFormat::Slack => b"slack",
    });
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&buf))
}

/// Storage of the outbox (Postgres and SQLite implement it next to their `EvalStore`). The futures
/// are `Send`: the delivery tasks run on the tokio runtime.
pub trait OutboxStore: Send + Sync + 'static {
    /// Whether this instance is the one delivering `webhook`'s notifications (and re-posts); kept
    /// until the instance goes away. With several instances on one database exactly one holds it
    /// per webhook, so a transition is not posted once per instance.
    fn outbox_lease(&self, webhook: &str) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// Up to `limit` undelivered rows of `webhook`, oldest first.
    fn outbox_pending(&self, webhook: &str, limit: i64) -> impl Future<Output = anyhow::Result<Vec<OutboxRow>>> + Send;
    /// Mark a row done: delivered (`rejected = false`) or refused for good (`rejected = true`, with
    /// the reason).
    fn outbox_done(
        &self,
        id: i64,
        rejected: bool,
        error: Option<&str>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Count one failed (retryable) attempt of a row and keep its last error.
    fn outbox_attempt_failed(&self, id: i64, error: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Delete delivered rows older than [`KEEP_DELIVERED_DAYS`].
    fn outbox_prune(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Every episode whose stored state is firing (what to re-post).
    fn firing_episodes(&self) -> impl Future<Output = anyhow::Result<Vec<Episode>>> + Send;
}

/// A stored firing episode as both stores select it: id, kind, subject, severity, value, threshold,
/// window start, window end, fired, escalated (ms) and last value.
pub type FiringRow = (String, String, String, String, f64, f64, i64, i64, i64, Option<i64>, f64);

/// The firing [`Episode`] of a [`FiringRow`]; `None` for an unknown severity.
pub fn firing_episode(r: FiringRow) -> Option<Episode> {
    let (id, kind, subject, severity, value, threshold, window_start_ms, window_end_ms, fired, escalated, last_value) =
        r;
    Some(Episode {
        id,
        kind,
        subject,
        severity: Severity::parse(&severity)?,
        state: AlertState::Firing,
        fired_window_end_ms: fired,
        escalated_window_end_ms: escalated,
        resolved_window_end_ms: None,
        window_start_ms,
        window_end_ms,
        value,
        threshold,
        last_value,
    })
}
