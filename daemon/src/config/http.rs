//! `[http]`: the endpoint for /metrics, /healthz, /readyz and /report.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for /metrics, /healthz, /readyz and /report; empty disables the server.
    pub listen: String,
    /// `/report` renders the page from the store at most once per this many seconds and serves
    /// the cached page in between (1–86400).
    pub report_cache_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9464".into(), report_cache_seconds: 60 }
    }
}

impl Validate for HttpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("http.listen", "must be an `ip:port` socket address or empty"));
        }
        if !(1..=86_400).contains(&self.report_cache_seconds) {
            return Err(invalid("http.report_cache_seconds", "must be between 1 and 86400"));
        }
        Ok(())
    }
}
