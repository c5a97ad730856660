//! `[postgres]` and `[sqlite]`: where the metrics, join state and offsets live (exactly one).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://tierwatch@127.0.0.1:5432/tierwatch` (TLS:
    /// `?sslmode=verify-full&sslrootcert=/path/ca.pem`). May contain `${env:NAME}` /
    /// `${file:PATH}` references; its password is masked when shown.
    pub url: crate::secret::SecretUrl,
    /// Connection pool size.
    pub max_connections: u32,
}

impl Default for PostgresConfig {
    /// No URL: a `[postgres]` section must give one (validation says so).
    fn default() -> Self {
        Self { url: Default::default(), max_connections: 8 }
    }
}

impl Validate for PostgresConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(invalid("postgres.url", "must start with postgres:// or postgresql://"));
        }
        if self.max_connections < 2 {
            return Err(invalid("postgres.max_connections", "must be at least 2"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// Database file (created if missing), e.g. `tierwatch.db`.
    pub path: String,
}

impl Validate for SqliteConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.path.trim().is_empty() {
            return Err(invalid("sqlite.path", "must name a file"));
        }
        Ok(())
    }
}

/// Exactly one store.
pub(super) fn validate_choice(pg: Option<&PostgresConfig>, sqlite: Option<&SqliteConfig>) -> Result<(), ConfigError> {
    match (pg, sqlite) {
        (Some(pg), None) => pg.validate(),
        (None, Some(sq)) => sq.validate(),
        (Some(_), Some(_)) => Err(invalid("sqlite", "configure either [postgres] or [sqlite], not both")),
        (None, None) => Err(invalid("postgres", "a store is required: [postgres] url = … or [sqlite] path = …")),
    }
}
