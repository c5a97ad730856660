//! The first connection to Kafka, and why it failed.
//!
//! librdkafka retries a broker connection forever, logging every attempt, and reports SASL and
//! TLS failures only as log lines and error events. A wrong password or an untrusted certificate
//! is not transient: [`ConnectWatch`] captures the first such failure from the client's log and
//! error callbacks (and logs it once, not once per retry), and [`wait_connected`] turns it into
//! one startup error that names the cause.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A connection failure that retrying does not fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "Kafka authentication failed at {brokers}: the broker rejected the SASL credentials \
         (check kafka.properties sasl.mechanism, sasl.username and sasl.password): {detail}"
    )]
    Authentication { brokers: String, detail: String },
    #[error(
        "Kafka TLS certificate verify failed at {brokers}: the broker's certificate is not trusted \
         (check kafka.properties ssl.ca.location, or the broker's host name): {detail}"
    )]
    Certificate { brokers: String, detail: String },
    #[error("Kafka TLS handshake failed at {brokers} (check kafka.properties security.protocol and ssl.*): {detail}")]
    Tls { brokers: String, detail: String },
}

/// What a failure is, judged from librdkafka's message text (the error code alone does not
/// distinguish an untrusted certificate from other TLS failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Authentication,
    Certificate,
    Tls,
}

fn classify(code: Option<RDKafkaErrorCode>, message: &str) -> Option<Kind> {
    let m = message.to_ascii_lowercase();
    if m.contains("certificate verify failed") || m.contains("broker certificate could not be verified") {
        Some(Kind::Certificate)
    } else if m.contains("sasl authentication error")
        || m.contains("authentication failed")
        || code == Some(RDKafkaErrorCode::Authentication)
    {
        Some(Kind::Authentication)
    } else if m.contains("ssl handshake failed") || code == Some(RDKafkaErrorCode::SSL) {
        Some(Kind::Tls)
    } else {
        None
    }
}

/// At most this many distinct librdkafka log lines are remembered for de-duplication.
const SEEN_CAP: usize = 1024;

/// Shared by the client context's callbacks (librdkafka threads) and the startup check.
#[derive(Default)]
pub struct ConnectWatch {
    failure: Mutex<Option<(Kind, String)>>,
    seen: Mutex<HashSet<String>>,
    /// Set once the startup check passed: later security failures are logged like any line.
    connected: AtomicBool,
}

impl ConnectWatch {
    /// The client's log callback: security failures are captured (reported once by the startup
    /// check), other lines pass through, each distinct line once at its level (later repeats at
    /// debug), so a broker that stays unreachable does not flood the log.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if !self.connected.load(Ordering::Relaxed) {
            if let Some(kind) = classify(None, message) {
                self.record(kind, message);
                tracing::debug!(target: "librdkafka", fac, "{message}");
                return;
            }
        }
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= SEEN_CAP {
                seen.clear();
            }
            seen.insert(strip_broker_prefix(message).to_string())
        };
        match level {
            _ if !first => tracing::debug!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    /// The client's error callback (global errors).
    pub fn error(&self, error: KafkaError, reason: &str) {
        let starting = !self.connected.load(Ordering::Relaxed);
        match classify(error.rdkafka_error_code(), reason) {
            Some(kind) if starting => self.record(kind, reason),
            // "All brokers down" after a captured failure is its consequence, not news.
            _ if starting && self.has_failure() => tracing::debug!(target: "librdkafka", "{error}: {reason}"),
            _ => self.log(RDKafkaLogLevel::Error, "ERROR", &format!("{error}: {reason}")),
        }
    }

    /// Keep the first security failure.
    fn record(&self, kind: Kind, message: &str) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some((kind, strip_broker_prefix(message).to_string()));
        }
    }

    fn has_failure(&self) -> bool {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The captured failure as a startup error.
    pub fn failure(&self, brokers: &str) -> Option<ConnectError> {
        let f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        let (kind, detail) = f.as_ref()?;
        let (brokers, detail) = (brokers.to_string(), detail.clone());
        Some(match kind {
            Kind::Authentication => ConnectError::Authentication { brokers, detail },
            Kind::Certificate => ConnectError::Certificate { brokers, detail },
            Kind::Tls => ConnectError::Tls { brokers, detail },
        })
    }
}

/// librdkafka prefixes lines with the broker and thread (`sasl_ssl://127.0.0.1:9093/bootstrap: …`);
/// the rest is what repeats.
fn strip_broker_prefix(message: &str) -> &str {
    match message.find("]: ") {
        Some(i) => &message[i + 3..],
        None => message,
    }
    .trim()
}

/// Wait until the cluster answers a metadata request for `topic`, for at most `bound`. Fails at
/// once with the cause when a SASL or TLS failure is captured; a cluster that merely does not
/// answer in time is left to the caller (whose own requests then time out and say so).
///
/// librdkafka queues its log lines and errors for the consumer's poll, so the wait polls (before
/// any subscription there is nothing else to receive).
pub fn wait_connected<X: ConsumerContext>(
    consumer: &BaseConsumer<X>,
    watch: &ConnectWatch,
    brokers: &str,
    topic: &str,
    bound: Duration,
) -> Result<(), ConnectError> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            let text = e.to_string();
            if let Some(kind) = classify(e.rdkafka_error_code(), &text) {
                watch.record(kind, &text);
            }
        }
        if let Some(e) = watch.failure(brokers) {
            return Err(e);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if consumer.fetch_metadata(Some(topic), (deadline - now).min(Duration::from_millis(400))).is_ok() {
            break;
        }
    }
    watch.connected.store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_librdkafka_failures() {
        let sasl = "[thrd:sasl_ssl://127.0.0.1:1/bootstrap]: sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication \
                    error: Authentication failed during authentication due to invalid credentials with SASL \
                    mechanism SCRAM-SHA-256 (after 3ms in state AUTH_REQ)";
        assert_eq!(classify(None, sasl), Some(Kind::Authentication));
        let tls = "sasl_ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate \
                   verify failed: broker certificate could not be verified";
        assert_eq!(classify(None, tls), Some(Kind::Certificate));
        assert_eq!(classify(None, "SSL handshake failed: unexpected eof"), Some(Kind::Tls));
        assert_eq!(classify(Some(RDKafkaErrorCode::SSL), "x"), Some(Kind::Tls));
        assert_eq!(classify(None, "Connect to ipv4#127.0.0.1:1 failed: Connection refused"), None);
    }

    #[test]
    fn keeps_the_first_failure_and_names_its_cause() {
        let w = ConnectWatch::default();
        assert!(w.failure("b:1").is_none());
        w.log(RDKafkaLogLevel::Error, "FAIL", "[thrd:x]: x: SSL handshake failed: certificate verify failed");
        w.log(RDKafkaLogLevel::Error, "FAIL", "[thrd:x]: x: SASL authentication error: Authentication failed");
        let e = w.failure("b:1").unwrap();
        assert!(matches!(e, ConnectError::Certificate { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("certificate verify failed") && text.contains("b:1"), "{text}");
        assert!(!text.contains("[thrd:"), "{text}");
    }
}
