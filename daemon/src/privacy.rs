//! What tierwatch keeps of the users' query text outside the review queue, and for how long it
//! keeps the rows that may hold it.
//!
//! Dead letters keep a prefix of the rejected message for debugging, and a routing decision's
//! payload carries the query text. Under `hashed` or `none` (by default the review queue's
//! `rescore.store_text`):
//!
//! - a JSON object payload keeps every field but `query_text`, which is replaced by its keyed
//!   hash (`"hmac-sha256:<hex>"`, the same hash as `review_queue.query_hash`) or removed;
//! - any other payload (Avro, Confluent framing, malformed or truncated JSON) may contain the text
//!   where it cannot be found reliably, so no bytes are kept (`payload` NULL; `payload_len`,
//!   `reason` and `detail` still say what was rejected).
//!
//! Retention: dead letters older than `dead_letter_retention_days` and review-queue rows
//! (sampled decisions) older than `review_retention_days` (processing time of their insert) are
//! deleted by a periodic task in both stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError, Validate};
use crate::secret::Secret;
use crate::store::Store;

/// How much of a query's text is kept (the review queue's `rescore.store_text`, the dead
/// letters' `privacy.dead_letter_text`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPrivacy {
    /// The query text as received.
    #[default]
    Full,
    /// A keyed hash of the text (`hash_key`): equal queries can be grouped, not read.
    Hashed,
    /// Neither text nor hash.
    None,
}

/// The keyed hash (HMAC-SHA256, hex) of a query text: what `review_queue.query_hash` and hashed
/// dead letters keep instead of the text.
pub(crate) fn keyed_hash(key: &str, text: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// What dead letters keep of a routing decision's query text: `full` (the raw message
    /// prefix), `hashed` (JSON: `query_text` replaced by its keyed hash; other formats: no bytes)
    /// or `none` (JSON: `query_text` removed; other formats: no bytes). Default: the review
    /// queue's `rescore.store_text` when `[rescore]` is configured, else `full`.
    pub dead_letter_text: Option<TextPrivacy>,
    /// Key of the hash for `dead_letter_text = "hashed"`; defaults to `rescore.hash_key`.
    pub hash_key: Secret,
    /// Dead letters are deleted this many days after they were written. Absent: kept forever.
    pub dead_letter_retention_days: Option<f64>,
    /// Review-queue rows (sampled decisions, with their text, hash, score and review label) are
    /// deleted this many days after they were inserted; their weight leaves
    /// `rescore_estimates_daily` with them, so keep it longer than the days you want estimated.
    /// Absent: kept forever.
    pub review_retention_days: Option<f64>,
    /// Seconds between two runs of the retention task.
    pub retention_interval_seconds: f64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            dead_letter_text: None,
            hash_key: Secret::default(),
            dead_letter_retention_days: None,
            review_retention_days: None,
            retention_interval_seconds: 3600.0,
        }
    }
}

impl Validate for PrivacyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("privacy.dead_letter_retention_days", self.dead_letter_retention_days),
            ("privacy.review_retention_days", self.review_retention_days),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(invalid(key, "must be a positive number of days"));
            }
        }
        let s = self.retention_interval_seconds;
        if !(s.is_finite() && s > 0.0) {
            return Err(invalid("privacy.retention_interval_seconds", "must be a positive number of seconds"));
        }
        Ok(())
    }
}

impl PrivacyConfig {
    /// The check that needs `[rescore]` too: hashed dead letters need a key from one of them.
    pub fn validate_key(&self, rescore: Option<(TextPrivacy, &str)>) -> Result<(), ConfigError> {
        if self.scrubber(rescore).mode == TextPrivacy::Hashed && self.key(rescore).is_empty() {
            return Err(invalid(
                "privacy.hash_key",
                "must be set (or rescore.hash_key) when dead letters keep hashed query text",
            ));
        }
        Ok(())
    }

    fn key<'a>(&'a self, rescore: Option<(TextPrivacy, &'a str)>) -> &'a str {
        if self.hash_key.is_empty() {
            rescore.map_or("", |(_, k)| k)
        } else {
            self.hash_key.expose()
        }
    }

    /// The dead-letter scrubber in force.
    pub fn scrubber(&self, rescore: Option<(TextPrivacy, &str)>) -> DeadLetterScrub {
        let mode = self.dead_letter_text.or(rescore.map(|(m, _)| m)).unwrap_or(TextPrivacy::Full);
        DeadLetterScrub { mode, key: self.key(rescore).to_string() }
    }

    /// What the retention task deletes; None when nothing is to be deleted.
    pub fn retention(&self) -> Option<Retention> {
        if self.dead_letter_retention_days.is_none() && self.review_retention_days.is_none() {
            return None;
        }
        let days = |d: Option<f64>| d.map(|d| Duration::from_secs_f64(d * 86_400.0));
        Some(Retention {
            dead_letters: days(self.dead_letter_retention_days),
            review_queue: days(self.review_retention_days),
            every: Duration::from_secs_f64(self.retention_interval_seconds),
        })
    }
}

/// Ages beyond which rows are deleted, and how often to look.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    pub dead_letters: Option<Duration>,
    pub review_queue: Option<Duration>,
    pub every: Duration,
}

/// Delete what is past retention now: `(dead letters, review-queue rows)` deleted.
pub async fn delete_expired<S: Store>(store: &S, r: &Retention) -> anyhow::Result<(u64, u64)> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let before = |age: Option<Duration>| age.map(|a| now_ms.saturating_sub(a.as_millis().min(i64::MAX as u128) as i64));
    store.delete_expired(before(r.dead_letters), before(r.review_queue)).await
}

/// The periodic retention task, for a dedicated thread: deletes expired rows now and every
/// `r.every` after, until `shutdown` is set. A failure is logged, counted in `store_errors` and
/// retried at the next run.
pub fn retention_task<S: Store>(
    store: Arc<S>,
    r: Retention,
    runtime: tokio::runtime::Handle,
    shutdown: Arc<AtomicBool>,
    store_errors: crate::telemetry::StoreErrors,
) {
    while !shutdown.load(Ordering::Relaxed) {
        match runtime.block_on(delete_expired(store.as_ref(), &r)) {
            Ok((0, 0)) => {}
            Ok((dead_letters, review_rows)) => {
                tracing::info!(dead_letters, review_rows, "retention: deleted expired rows")
            }
            Err(e) => {
                store_errors.count_error(&e);
                tracing::warn!(error = %format!("{e:#}"), "retention: deleting expired rows failed")
            }
        }
        let next = Instant::now() + r.every;
        while !shutdown.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

/// Applies the query-text privacy mode to a dead letter's payload.
#[derive(Debug, Clone)]
pub struct DeadLetterScrub {
    mode: TextPrivacy,
    key: String,
}

impl Default for DeadLetterScrub {
    fn default() -> Self {
        Self { mode: TextPrivacy::Full, key: String::new() }
    }
}

impl DeadLetterScrub {
    /// The payload (already cut to the dead-letter bound) as it may be stored.
    pub fn payload(&self, payload: Option<Vec<u8>>) -> Option<Vec<u8>> {
        if self.mode == TextPrivacy::Full {
            return payload;
        }
        let bytes = payload?;
        let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return None;
        };
        match obj.remove("query_text") {
            None => Some(bytes),
            Some(serde_json::Value::String(text)) if self.mode == TextPrivacy::Hashed => {
                let hash = format!("hmac-sha256:{}", keyed_hash(&self.key, &text));
                obj.insert("query_text".into(), serde_json::Value::String(hash));
                serde_json::to_vec(&obj).ok()
            }
            Some(serde_json::Value::Null) => {
                obj.insert("query_text".into(), serde_json::Value::Null);
                serde_json::to_vec(&obj).ok()
            }
            Some(_) => serde_json::to_vec(&obj).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(mode: TextPrivacy) -> DeadLetterScrub {
        PrivacyConfig { dead_letter_text: Some(mode), hash_key: "k".into(), ..Default::default() }.scrubber(None)
    }

    const JSON: &[u8] =
        br#"{"event_id":"e1","conversation_id":"c1","turn":"x","query_text":"my card 4111 was charged"}"#;

    #[test]
    fn full_keeps_the_bytes() {
        assert_eq!(scrub(TextPrivacy::Full).payload(Some(JSON.to_vec())).unwrap(), JSON);
    }

    #[test]
    fn hashed_replaces_the_text_by_its_keyed_hash() {
        let out = scrub(TextPrivacy::Hashed).payload(Some(JSON.to_vec())).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let expected = format!("hmac-sha256:{}", keyed_hash("k", "my card 4111 was charged"));
        assert_eq!(v["query_text"], serde_json::Value::String(expected));
        assert_eq!(v["conversation_id"], "c1");
        assert!(!String::from_utf8_lossy(&out).contains("4111"));
    }

    #[test]
    fn none_removes_the_text_and_keeps_the_rest() {
        let out = scrub(TextPrivacy::None).payload(Some(JSON.to_vec())).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("query_text").is_none());
        assert_eq!(v["turn"], "x");
    }

    #[test]
    fn unparseable_or_binary_payloads_keep_no_bytes() {
        for mode in [TextPrivacy::Hashed, TextPrivacy::None] {
            let s = scrub(mode);
            assert_eq!(s.payload(Some(JSON[..40].to_vec())), None, "truncated JSON");
            assert_eq!(s.payload(Some(vec![0, 0, 0, 0, 7, 2, b'a'])), None, "Confluent/Avro");
            assert_eq!(s.payload(Some(b"[\"query\"]".to_vec())), None, "not an object");
            assert_eq!(s.payload(None), None);
            let no_text = br#"{"event_id":"e2","kind":"THUMBS"}"#.to_vec();
            assert_eq!(s.payload(Some(no_text.clone())), Some(no_text));
        }
    }

    #[test]
    fn mode_follows_the_review_queue_unless_set() {
        let p = PrivacyConfig::default();
        assert_eq!(p.scrubber(None).mode, TextPrivacy::Full);
        assert_eq!(p.scrubber(Some((TextPrivacy::None, ""))).mode, TextPrivacy::None);
        assert_eq!(p.scrubber(Some((TextPrivacy::Hashed, "rk"))).key, "rk");
        let err = PrivacyConfig { dead_letter_text: Some(TextPrivacy::Hashed), ..Default::default() }
            .validate_key(None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("privacy.hash_key"), "{err}");
        let err = PrivacyConfig { review_retention_days: Some(0.0), ..Default::default() }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("privacy.review_retention_days"), "{err}");
    }
}
