//! The configuration's error and the one signature every section validates itself with.
//!
//! A leaf on purpose: every feature that owns a section (`drift`, `router_eval`, `rescore`,
//! `alert`, `privacy`, `progress`) imports this module, and `config/mod.rs`, which assembles the
//! sections, imports the features. Nothing here may import a feature.

/// A configuration problem, naming the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// The error for `key` (its full dotted path, e.g. `drift.psi_bins`) and the reason.
pub fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), reason: reason.into() }
}

/// A configuration section that checks its own fields once, at startup. The error names the
/// first invalid key by its full path. Checks that need two sections (e.g. `batch.max_bytes`
/// against `limits.max_payload_bytes`) are the assembler's, in `config/mod.rs`.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// The first of a section's (key, reason) problems as an error.
pub fn first_problem(problems: Vec<(String, String)>) -> Result<(), ConfigError> {
    match problems.into_iter().next() {
        Some((key, reason)) => Err(invalid(&key, reason)),
        None => Ok(()),
    }
}
