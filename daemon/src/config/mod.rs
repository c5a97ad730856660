//! Daemon configuration: one TOML file plus `TIERWATCH_…` environment overrides, validated once at
//! startup. Every field is documented here and in `tierwatch.example.toml`.
//!
//! Environment overrides use `__` between nesting levels, e.g.
//! `TIERWATCH_POSTGRES__URL=postgres://…` or `TIERWATCH_ATTRIBUTION__WINDOW_HOURS=48`.

//! This module only assembles the sections. Each feature owns its section's type and checks it
//! with the one [`Validate`] signature (`drift`, `router_eval`, `rescore`, `alert`, `privacy`,
//! `progress`); the pipeline's own sections (Kafka and topics, the store, attribution and
//! pricing, limits and batching, HTTP) are the files beside this one. Features import only
//! [`error`], never this module's assembly, so the dependency runs one way.

mod alerts;
mod attribution;
mod error;
mod http;
mod limits;
mod source;
mod store;

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::drift::routed_share::RoutingConfig;
pub use crate::drift::DriftConfig;
pub use crate::privacy::{PrivacyConfig, TextPrivacy};
pub use crate::progress::WatermarkConfig;
pub use crate::rescore::RescoreConfig;
pub use crate::router_eval::RouterEvalConfig;
pub use alerts::AlertsConfig;
pub use attribution::{AttributionConfig, Dimension, DimensionsConfig, LedgerConfig, PricingConfig};
pub use error::{first_problem, invalid, ConfigError, Validate};
pub use http::HttpConfig;
pub use limits::{BatchConfig, LimitsConfig};
pub use source::{KafkaConfig, TopicConfig, TopicsConfig};
pub use store::{PostgresConfig, SqliteConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and consumer-group settings (required by `run`; `replay` reads files).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    /// The three input topics and their wire formats.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Where the metrics, join state and offsets live.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// The embedded store instead of Postgres (try it without servers): exactly one of
    /// `[postgres]` and `[sqlite]`.
    #[serde(default)]
    pub sqlite: Option<SqliteConfig>,
    /// Join and attribution rules (docs/contract.md#attribution).
    #[serde(default)]
    pub attribution: AttributionConfig,
    /// Which group-by dimensions are kept (bounds cardinality).
    #[serde(default)]
    pub dimensions: DimensionsConfig,
    /// Prices used when an event leaves a cost field null.
    #[serde(default)]
    pub pricing: PricingConfig,
    /// Deflection-ledger options (docs/contract.md#deflection-ledger).
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Input limits and dead-lettering.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Batching of the consume → commit loop.
    #[serde(default)]
    pub batch: BatchConfig,
    /// `[watermark]`: how each partition's event-time watermark follows its three topics.
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// HTTP endpoint for /metrics, /healthz and /readyz.
    #[serde(default)]
    pub http: HttpConfig,
    /// Confidence drift evaluation and its alert thresholds (docs/contract.md#confidence-drift).
    #[serde(default)]
    pub drift: DriftConfig,
    /// `[router_eval]`: reliability curves, calibration regression and threshold advice.
    #[serde(default)]
    pub router_eval: RouterEvalConfig,
    /// Alert delivery.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The rescoring slice (docs/contract.md#rescoring-slice): sample, rescore with the ONNX model, weighted estimates.
    /// Absent = no rescoring.
    #[serde(default)]
    pub rescore: Option<RescoreConfig>,
    /// Query text in dead letters, and how long dead letters and the review queue are kept.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// What each router was calibrated to do (target cheap shares), for the
    /// `routed_share_deviation` alert.
    #[serde(default)]
    pub routing: RoutingConfig,
}

impl Config {
    /// Load a TOML file, apply `TIERWATCH_…` overrides, then validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Parse(format!("file {} does not exist", path.display())));
        }
        let cfg: Config = Figment::new()
            .merge(Toml::file(path))
            // Only nested keys (`SECTION__KEY`) are overrides: TIERWATCH_CONFIG, TIERWATCH_LOG and
            // the test harness's TIERWATCH_TEST_* variables are not configuration.
            .merge(Env::prefixed("TIERWATCH_").filter(|k| k.as_str().contains("__")).split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(figment_message(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a TOML string (no environment), then validate. Used by tests and `check-config`.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let cfg: Config =
            Figment::new().merge(Toml::string(s)).extract().map_err(|e| ConfigError::Parse(figment_message(e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every section's own check, then the checks that span two sections. Reports the first
    /// problem, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(kafka) = &self.kafka {
            kafka.validate()?;
        }
        if let Some(rescore) = &self.rescore {
            rescore.validate()?;
        }
        self.privacy.validate_key(self.rescore.as_ref().map(|r| (r.store_text, r.hash_key.expose())))?;
        self.privacy.validate()?;
        self.routing.validate()?;
        self.watermark.validate()?;
        self.topics.validate()?;
        store::validate_choice(self.postgres.as_ref(), self.sqlite.as_ref())?;
        self.attribution.validate()?;
        self.pricing.validate()?;
        self.ledger.validate()?;
        self.limits.validate()?;
        self.batch.validate()?;
        if self.batch.max_bytes < self.limits.max_payload_bytes {
            return Err(invalid("batch.max_bytes", "must be at least limits.max_payload_bytes"));
        }
        self.drift.validate()?;
        self.router_eval.validate()?;
        self.alerts.validate()?;
        self.http.validate()
    }

    /// What dead letters keep of the query text: `[privacy]`, else the review queue's setting.
    pub fn dead_letter_scrub(&self) -> crate::privacy::DeadLetterScrub {
        self.privacy.scrubber(self.rescore.as_ref().map(|r| (r.store_text, r.hash_key.expose())))
    }

    /// What the join needs, read once: attribution, kept dimensions, capable tier, prices and
    /// cardinality bounds.
    pub fn join_settings(&self) -> crate::join::JoinSettings {
        crate::join::JoinSettings {
            window_ms: self.attribution.window_ms(),
            grace_ms: self.attribution.grace_ms(),
            pending_ms: self.attribution.pending_ms(),
            lateness_ms: self.attribution.lateness_ms(),
            pending_max: self.attribution.pending_max_per_partition,
            ticket_retention_ms: self.attribution.ticket_retention_ms(),
            keep: self.dimensions.keep.iter().copied().collect(),
            capable_tier: self.ledger.capable_tier.clone(),
            capable_usd_per_input_token: self.pricing.capable_input_usd_per_mtok.map(|p| p / 1e6),
            capable_usd_per_output_token: self.pricing.capable_output_usd_per_mtok.map(|p| p / 1e6),
            ticket_cost_per_channel: self.pricing.ticket_cost_usd_per_channel.clone().into_iter().collect(),
            ticket_cost_per_minute: self.pricing.ticket_cost_usd_per_minute,
            limits: crate::join::JoinLimits::from(&self.limits),
        }
    }

    /// The settings the views read from `tw_settings` (attribution window, ledger baselines).
    pub fn view_settings(&self) -> crate::store::ViewSettings {
        crate::store::ViewSettings {
            attribution_window_ms: self.attribution.window_ms(),
            baseline_from: self.ledger.baseline_from,
            baseline_to: self.ledger.baseline_to,
            baseline_tier: self.ledger.capable_tier.clone(),
            own_baseline_days: self.alerts.quality.baseline_days,
        }
    }

    /// The Kafka section, which `run` needs.
    pub fn kafka(&self) -> Result<&KafkaConfig, ConfigError> {
        self.kafka.as_ref().ok_or_else(|| invalid("kafka", "is required to consume from Kafka (`tierwatch run`)"))
    }
}

/// figment's messages already name the key path ("for key `kafka.brokers`"); keep them whole.
fn figment_message(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests;
