//! Daemon configuration: one TOML file plus `TIERWATCH_…` environment overrides, validated once at
//! startup. Every field is documented here and in `tierwatch.example.toml`.
//!
//! Environment overrides use `__` between nesting levels, e.g.
//! `TIERWATCH_POSTGRES__URL=postgres://…` or `TIERWATCH_ATTRIBUTION__WINDOW_HOURS=48`.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::decode::WireFormat;

/// A configuration problem, naming the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), reason: reason.into() }
}

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
    pub watermark: crate::progress::WatermarkConfig,
    /// HTTP endpoint for /metrics, /healthz and /readyz.
    #[serde(default)]
    pub http: HttpConfig,
    /// Confidence drift evaluation and its alert thresholds (docs/contract.md#confidence-drift).
    #[serde(default)]
    pub drift: crate::drift::DriftConfig,
    /// `[router_eval]`: reliability curves, calibration regression and threshold advice.
    #[serde(default)]
    pub router_eval: crate::router_eval::RouterEvalConfig,
    /// Alert delivery.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The rescoring slice (docs/contract.md#rescoring-slice): sample, rescore with the ONNX model, weighted estimates.
    /// Absent = no rescoring.
    #[serde(default)]
    pub rescore: Option<RescoreConfig>,
    /// Query text in dead letters, and how long dead letters and the review queue are kept.
    #[serde(default)]
    pub privacy: crate::privacy::PrivacyConfig,
    /// What each router was calibrated to do (target cheap shares), for the
    /// `routed_share_deviation` alert.
    #[serde(default)]
    pub routing: RoutingConfig,
}

/// `[routing]`: the intended behaviour of the routers, compared with the observed one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Per classifier_version, the share of decisions the router was calibrated to send off the
    /// capable tier and the tolerance around it: `[routing.targets."router-2026-01"]` with
    /// `cheap_share = 0.62` and optionally `tolerance = 0.05`. Versions without an entry have no
    /// target (`confidence_drift_daily.cheap_share_target` is NULL, no alert).
    #[serde(default)]
    pub targets: BTreeMap<String, crate::alert::routed_share::RoutedShareTarget>,
}

impl RoutingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (cv, t) in &self.targets {
            if cv.is_empty() {
                return Err(invalid("routing.targets", "a classifier_version key must not be empty"));
            }
            t.validate(&format!("routing.targets.{cv}"))?;
        }
        Ok(())
    }
}

/// How much of a sampled query's text the review queue keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPrivacy {
    /// The query text as received.
    Full,
    /// A keyed hash of the text (`hash_key`): equal queries can be grouped, not read.
    Hashed,
    /// Neither text nor hash.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescoreConfig {
    /// The ONNX model; its sidecar is the same path with `.json`. Reloaded when either file
    /// changes (and on SIGHUP); a broken file is refused and the previous model keeps serving.
    pub model_path: String,
    /// Which decisions are sampled and with what probability.
    #[serde(default)]
    pub sampler: crate::rescore::sampler::SamplerConfig,
    /// What `review_queue` keeps of the query text: `full`, `hashed` or `none`. The text needed
    /// for scoring stays in memory only until it is scored.
    #[serde(default = "default_privacy")]
    pub store_text: TextPrivacy,
    /// Key of the text hash when `store_text = "hashed"` (keep it secret: short queries are
    /// guessable from an unkeyed hash). May be `${env:NAME}` or `${file:PATH}`.
    #[serde(default)]
    pub hash_key: crate::secret::Secret,
    /// Rescoring worker threads (each scores whole batches on one core).
    #[serde(default = "default_rescore_workers")]
    pub workers: usize,
    /// Sampled queries that may wait for a worker; beyond it they are shed (counted in
    /// `tierwatch_rescore_shed_total`, and reweighted in the estimates) so ingestion never waits.
    #[serde(default = "default_rescore_queue")]
    pub queue_capacity: usize,
    /// Queries per model run.
    #[serde(default = "default_rescore_batch")]
    pub batch_size: usize,
    /// Seconds between checks of the model files for a change.
    #[serde(default = "default_reload_poll")]
    pub reload_poll_seconds: f64,
    /// Samples still unscored this many seconds after they were committed (a crash, or another
    /// instance that stopped) are rescored again if their text was stored, or marked shed.
    #[serde(default = "default_recover_after")]
    pub recover_after_seconds: f64,
}

fn default_privacy() -> TextPrivacy {
    TextPrivacy::Full
}
fn default_rescore_workers() -> usize {
    1
}
fn default_rescore_queue() -> usize {
    4096
}
fn default_rescore_batch() -> usize {
    64
}
fn default_reload_poll() -> f64 {
    5.0
}
fn default_recover_after() -> f64 {
    300.0
}

impl RescoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.model_path.trim().is_empty() {
            return Err(invalid("rescore.model_path", "must name the ONNX model file"));
        }
        self.sampler.validate()?;
        if self.store_text == TextPrivacy::Hashed && self.hash_key.is_empty() {
            return Err(invalid("rescore.hash_key", "must be set when store_text = \"hashed\""));
        }
        if self.workers == 0 || self.workers > 64 {
            return Err(invalid("rescore.workers", "must be between 1 and 64"));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("rescore.queue_capacity", "must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return Err(invalid("rescore.batch_size", "must be between 1 and 4096"));
        }
        if !(self.reload_poll_seconds.is_finite() && self.reload_poll_seconds > 0.0) {
            return Err(invalid("rescore.reload_poll_seconds", "must be a positive number of seconds"));
        }
        if !(self.recover_after_seconds.is_finite() && self.recover_after_seconds > 0.0) {
            return Err(invalid("rescore.recover_after_seconds", "must be a positive number of seconds"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Webhooks that receive every alert transition (firing, escalated, resolved).
    #[serde(default)]
    pub webhooks: Vec<crate::alert::WebhookConfig>,
    /// No longer used: notifications wait in the store's alert outbox (`tw_alert_outbox`) until
    /// delivered, never dropped. Accepted so existing config files keep loading.
    #[serde(default = "default_alert_queue")]
    pub queue_capacity: usize,
    /// Tier quality regression rule (docs/contract.md#tier_quality_regression).
    #[serde(default)]
    pub quality: crate::alert::quality::QualityRuleConfig,
    /// Misroute-estimate rule on the rescorer's weighted estimates (docs/contract.md#misroute_estimate; needs
    /// `[rescore]`).
    #[serde(default)]
    pub misroute: crate::alert::misroute::MisrouteRuleConfig,
    /// Hysteresis of the routed-share-deviation alert (targets in `[routing.targets]`).
    #[serde(default)]
    pub routed_share: crate::alert::routed_share::RoutedShareRuleConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: vec![],
            queue_capacity: default_alert_queue(),
            quality: Default::default(),
            misroute: Default::default(),
            routed_share: Default::default(),
        }
    }
}

fn default_alert_queue() -> usize {
    1024
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group id; every tierwatch instance of one deployment uses the same group.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where to start when Postgres holds no offset for a partition: `earliest` or `latest`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    /// Extra librdkafka properties passed through verbatim (e.g. security settings). Values may
    /// be `${env:NAME}` / `${file:PATH}` references; credentials are masked when shown.
    #[serde(default)]
    pub properties: crate::secret::KafkaProperties,
}

impl KafkaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must name at least one broker"));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(invalid("kafka.auto_offset_reset", "must be `earliest` or `latest`"));
        }
        for key in ["enable.auto.commit", "group.id", "partition.assignment.strategy"] {
            if self.properties.contains_key(key) {
                return Err(invalid(
                    &format!("kafka.properties.{key}"),
                    "is managed by tierwatch (offsets live in Postgres; partitions must be co-assigned)",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What dead letters keep of the query text: `[privacy]`, else the review queue's setting.
    pub fn dead_letter_scrub(&self) -> crate::privacy::DeadLetterScrub {
        self.privacy.scrubber(self.rescore.as_ref().map(|r| (r.store_text, r.hash_key.expose())))
    }

    /// The Kafka section, which `run` needs.
    pub fn kafka(&self) -> Result<&KafkaConfig, ConfigError> {
        self.kafka.as_ref().ok_or_else(|| invalid("kafka", "is required to consume from Kafka (`tierwatch run`)"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// RoutingDecision events from the gateway.
    #[serde(default = "default_routing_topic")]
    pub routing: TopicConfig,
    /// Feedback events from the product.
    #[serde(default = "default_feedback_topic")]
    pub feedback: TopicConfig,
    /// SupportTicket events from the support system.
    #[serde(default = "default_tickets_topic")]
    pub tickets: TopicConfig,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self { routing: default_routing_topic(), feedback: default_feedback_topic(), tickets: default_tickets_topic() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Kafka topic name.
    pub name: String,
    /// Wire format of the message values: `avro` (bare datum, local schema), `confluent`
    /// (magic byte + schema id + datum) or `json`.
    #[serde(default = "default_format")]
    pub format: WireFormat,
    /// For `confluent`: the registry schema ids that denote the local schema of this topic.
    #[serde(default)]
    pub schema_ids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, e.g. `postgres://tierwatch@127.0.0.1:5432/tierwatch` (TLS:
    /// `?sslmode=verify-full&sslrootcert=/path/ca.pem`). May contain `${env:NAME}` /
    /// `${file:PATH}` references; its password is masked when shown.
    pub url: crate::secret::SecretUrl,
    /// Connection pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file (created if missing), e.g. `tierwatch.db`.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// W: a ticket opened within this many hours after the conversation's latest turn is a failed
    /// deflection of that turn's tier.
    #[serde(default = "default_window_hours")]
    pub window_hours: f64,
    /// Extra event-time hours a conversation's state is kept after W, for late events.
    #[serde(default = "default_grace_hours")]
    pub grace_hours: f64,
    /// How long (event time) feedback or a ticket waits for its decision before it is counted as
    /// an orphan.
    #[serde(default = "default_pending_hours")]
    pub pending_max_hours: f64,
    /// Seconds a decision may arrive behind the event-time watermark of its partition. Tickets
    /// and turn-less feedback are attributed only once the watermark is this far past them.
    #[serde(default)]
    pub allowed_lateness_seconds: f64,
    /// At most this many waiting outcomes per partition; beyond it the oldest become orphans.
    #[serde(default = "default_pending_max")]
    pub pending_max_per_partition: usize,
    /// How long (event time) an OPENED ticket is remembered so that its RESOLVED event can be
    /// credited to the opening day and tier.
    #[serde(default = "default_ticket_retention_days")]
    pub ticket_retention_days: f64,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            window_hours: default_window_hours(),
            grace_hours: default_grace_hours(),
            pending_max_hours: default_pending_hours(),
            allowed_lateness_seconds: 0.0,
            pending_max_per_partition: default_pending_max(),
            ticket_retention_days: default_ticket_retention_days(),
        }
    }
}

impl AttributionConfig {
    pub fn window_ms(&self) -> i64 {
        (self.window_hours * 3_600_000.0).round() as i64
    }
    pub fn grace_ms(&self) -> i64 {
        (self.grace_hours * 3_600_000.0).round() as i64
    }
    pub fn pending_ms(&self) -> i64 {
        (self.pending_max_hours * 3_600_000.0).round() as i64
    }
    pub fn lateness_ms(&self) -> i64 {
        (self.allowed_lateness_seconds * 1000.0).round() as i64
    }
    pub fn ticket_retention_ms(&self) -> i64 {
        (self.ticket_retention_days * 86_400_000.0).round() as i64
    }
}

/// The optional group-by dimensions. `tier` is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Model,
    ClassifierVersion,
    Router,
    Segment,
    Intent,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionsConfig {
    /// Dimensions kept besides `tier`; dropped ones are stored as ''.
    #[serde(default = "default_dimensions")]
    pub keep: Vec<Dimension>,
}

impl Default for DimensionsConfig {
    fn default() -> Self {
        Self { keep: default_dimensions() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Capable-model price per million input tokens, used when `capable_cost_usd` is null.
    pub capable_input_usd_per_mtok: Option<f64>,
    /// Capable-model price per million output tokens, used when `capable_cost_usd` is null.
    pub capable_output_usd_per_mtok: Option<f64>,
    /// Cost of a resolved ticket per channel, used when the ticket's `cost_usd` is null.
    #[serde(default)]
    pub ticket_cost_usd_per_channel: BTreeMap<String, f64>,
    /// Cost per handled minute, used when the channel has no flat price and `handle_minutes` is set.
    pub ticket_cost_usd_per_minute: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Name of the capable tier: its failed-deflection rate is the default baseline, and its
    /// turns need no price table for `capable_cost_usd`.
    #[serde(default = "default_capable_tier")]
    pub capable_tier: String,
    /// First day (UTC, `YYYY-MM-DD`) of a baseline period before routing went live. When set
    /// (with `baseline_to`), the baseline failed-deflection rate is that period's, all tiers.
    pub baseline_from: Option<chrono::NaiveDate>,
    /// Last day (inclusive) of the baseline period.
    pub baseline_to: Option<chrono::NaiveDate>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { capable_tier: default_capable_tier(), baseline_from: None, baseline_to: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Messages larger than this are rejected as `payload_too_large`.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Dead letters keep at most this many bytes of the raw message.
    #[serde(default = "default_dead_letter_bytes")]
    pub dead_letter_max_bytes: usize,
    /// An event whose ts is more than this many hours past the broker timestamp or the wall
    /// clock is rejected (`future_timestamp`).
    #[serde(default = "default_future_hours")]
    pub max_future_hours: f64,

    // Cardinality bounds (see `join::cardinality`): per partition, persisted with its join state.
    /// Distinct tiers a partition admits besides `ledger.capable_tier` (always admitted); later
    /// ones are grouped as `__other__`.
    #[serde(default = "default_max_tiers")]
    pub max_tiers: usize,
    /// Distinct values a partition admits per kept dimension (model, classifier_version,
    /// segment, intent); later ones are grouped as `__other__`.
    #[serde(default = "default_max_dimension_values")]
    pub max_dimension_values: usize,
    /// Routing decisions kept per conversation; later ones are dead-lettered as
    /// `conversation_turn_limit`.
    #[serde(default = "default_max_per_conversation")]
    pub max_turns_per_conversation: usize,
    /// Feedback events kept per conversation; later ones are dead-lettered as
    /// `conversation_feedback_limit`.
    #[serde(default = "default_max_per_conversation")]
    pub max_feedback_per_conversation: usize,
    /// Events (OPENED, RESOLVED) kept per ticket; later ones are dead-lettered as
    /// `ticket_event_limit`.
    #[serde(default = "default_max_events_per_ticket")]
    pub max_events_per_ticket: usize,

    // Hostile-input bounds: values the store could not hold are rejected up front.
    /// Longest accepted `event_id`, `conversation_id` and `ticket_id`, in bytes
    /// (`string_too_long`). Postgres cannot index a key above ~2.7 KB.
    #[serde(default = "default_max_id_bytes")]
    pub max_id_bytes: usize,
    /// Longest accepted dimension string (tier, model, classifier_version, segment, intent,
    /// feedback source, cost_center, channel, ticket reason), in bytes.
    #[serde(default = "default_max_dimension_bytes")]
    pub max_dimension_bytes: usize,
    /// Longest accepted `query_text`, in bytes.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
    /// Largest accepted money amount of one event, in USD (`value_too_large`); keeps the
    /// nano-USD sums far below the 64-bit limit (9.2e9 USD). At most 1e6.
    #[serde(default = "default_max_cost_usd")]
    pub max_cost_usd: f64,
}

fn default_max_tiers() -> usize {
    16
}
fn default_max_dimension_values() -> usize {
    500
}
fn default_max_per_conversation() -> usize {
    1000
}
fn default_max_events_per_ticket() -> usize {
    100
}

fn default_max_id_bytes() -> usize {
    crate::decode::FieldLimits::DEFAULT_MAX_ID_BYTES
}
fn default_max_dimension_bytes() -> usize {
    crate::decode::FieldLimits::DEFAULT_MAX_DIMENSION_BYTES
}
fn default_max_text_bytes() -> usize {
    crate::decode::FieldLimits::DEFAULT_MAX_TEXT_BYTES
}
fn default_max_cost_usd() -> f64 {
    crate::decode::FieldLimits::DEFAULT_MAX_COST_USD
}
fn default_batch_bytes() -> usize {
    64 << 20
}

impl LimitsConfig {
    /// The decoder's bounds on string lengths and money.
    pub fn field_limits(&self) -> crate::decode::FieldLimits {
        crate::decode::FieldLimits {
            max_id_bytes: self.max_id_bytes,
            max_dimension_bytes: self.max_dimension_bytes,
            max_text_bytes: self.max_text_bytes,
            max_cost_usd: self.max_cost_usd,
        }
    }

    fn validate_hostile_input(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("limits.max_id_bytes", self.max_id_bytes),
            ("limits.max_dimension_bytes", self.max_dimension_bytes),
            ("limits.max_text_bytes", self.max_text_bytes),
        ] {
            // Above max_payload_bytes a limit is never reached (the payload is refused first).
            if v == 0 {
                return Err(invalid(key, "must be ≥ 1"));
            }
        }
        if !(self.max_cost_usd.is_finite() && self.max_cost_usd > 0.0 && self.max_cost_usd <= 1e6) {
            return Err(invalid("limits.max_cost_usd", format!("must be in (0, 1e6], got {}", self.max_cost_usd)));
        }
        Ok(())
    }

    /// The cardinality bounds must admit at least one value each.
    fn cardinality_problem(&self) -> Option<(&'static str, &'static str)> {
        [
            ("limits.max_tiers", self.max_tiers),
            ("limits.max_dimension_values", self.max_dimension_values),
            ("limits.max_turns_per_conversation", self.max_turns_per_conversation),
            ("limits.max_feedback_per_conversation", self.max_feedback_per_conversation),
            ("limits.max_events_per_ticket", self.max_events_per_ticket),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0)
        .map(|(key, _)| (key, "must be ≥ 1"))
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload(),
            dead_letter_max_bytes: default_dead_letter_bytes(),
            max_future_hours: default_future_hours(),
            max_tiers: default_max_tiers(),
            max_dimension_values: default_max_dimension_values(),
            max_turns_per_conversation: default_max_per_conversation(),
            max_feedback_per_conversation: default_max_per_conversation(),
            max_events_per_ticket: default_max_events_per_ticket(),
            max_id_bytes: default_max_id_bytes(),
            max_dimension_bytes: default_max_dimension_bytes(),
            max_text_bytes: default_max_text_bytes(),
            max_cost_usd: default_max_cost_usd(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is committed after this many messages…
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// …or after this many milliseconds, whichever comes first.
    #[serde(default = "default_batch_ms")]
    pub max_wait_ms: u64,
    /// …or once its payloads hold this many bytes (oversized messages count only the prefix
    /// kept for their dead letter). At least `limits.max_payload_bytes`.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: usize,
    /// While the consumer is behind (the last batch filled up, or the lag of the owned
    /// partitions exceeds `max_events`), a batch grows to this many messages instead, so each
    /// touched conversation's state and each aggregate row is written once per large transaction
    /// rather than once per small one; batches shrink back once caught up. Default: 20 ×
    /// `max_events`; equal to `max_events` turns the growth off.
    #[serde(default)]
    pub catch_up_max_events: Option<usize>,
    /// The time limit of a catch-up batch, in milliseconds. Default: 5 × `max_wait_ms`.
    #[serde(default)]
    pub catch_up_max_wait_ms: Option<u64>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_batch_events(),
            max_wait_ms: default_batch_ms(),
            max_bytes: default_batch_bytes(),
            catch_up_max_events: None,
            catch_up_max_wait_ms: None,
        }
    }
}

impl BatchConfig {
    /// The message limit of a batch while catching up.
    pub fn catch_up_events(&self) -> usize {
        self.catch_up_max_events.unwrap_or(self.max_events.saturating_mul(20))
    }

    /// The time limit of a batch while catching up.
    pub fn catch_up_wait_ms(&self) -> u64 {
        self.catch_up_max_wait_ms.unwrap_or(self.max_wait_ms.saturating_mul(5))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for /metrics, /healthz, /readyz and /report; empty disables the server.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/report` renders the page from the store at most once per this many seconds and serves
    /// the cached page in between (1–86400).
    #[serde(default = "default_report_cache_seconds")]
    pub report_cache_seconds: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_listen(), report_cache_seconds: default_report_cache_seconds() }
    }
}

fn default_report_cache_seconds() -> u64 {
    60
}

fn default_group() -> String {
    "tierwatch".into()
}
fn default_reset() -> String {
    "earliest".into()
}
fn default_format() -> WireFormat {
    WireFormat::Avro
}
fn topic(name: &str) -> TopicConfig {
    TopicConfig { name: name.into(), format: default_format(), schema_ids: vec![] }
}
fn default_routing_topic() -> TopicConfig {
    topic("llm.routing-decisions")
}
fn default_feedback_topic() -> TopicConfig {
    topic("llm.feedback")
}
fn default_tickets_topic() -> TopicConfig {
    topic("support.tickets")
}
fn default_pool() -> u32 {
    8
}
fn default_window_hours() -> f64 {
    72.0
}
fn default_grace_hours() -> f64 {
    24.0
}
fn default_pending_hours() -> f64 {
    24.0
}
fn default_pending_max() -> usize {
    1_000_000
}
fn default_ticket_retention_days() -> f64 {
    30.0
}
fn default_dimensions() -> Vec<Dimension> {
    vec![Dimension::Model, Dimension::ClassifierVersion, Dimension::Router, Dimension::Segment]
}
fn default_capable_tier() -> String {
    "capable".into()
}
fn default_max_payload() -> usize {
    64 * 1024
}
fn default_dead_letter_bytes() -> usize {
    16 * 1024
}
fn default_future_hours() -> f64 {
    24.0
}
fn default_batch_events() -> usize {
    5_000
}
fn default_batch_ms() -> u64 {
    200
}
fn default_listen() -> String {
    "127.0.0.1:9464".into()
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(kafka) = &self.kafka {
            kafka.validate()?;
        }
        if let Some(rescore) = &self.rescore {
            rescore.validate()?;
        }
        self.privacy.validate(self.rescore.as_ref().map(|r| (r.store_text, r.hash_key.expose())))?;
        self.alerts.misroute.validate()?;
        self.alerts.routed_share.validate()?;
        self.routing.validate()?;
        self.watermark.validate()?;
        let names = [
            ("topics.routing", &self.topics.routing),
            ("topics.feedback", &self.topics.feedback),
            ("topics.tickets", &self.topics.tickets),
        ];
        for (key, t) in names {
            if t.name.trim().is_empty() {
                return Err(invalid(&format!("{key}.name"), "must not be empty"));
            }
            if t.format == WireFormat::Confluent && t.schema_ids.is_empty() {
                return Err(invalid(
                    &format!("{key}.schema_ids"),
                    "format `confluent` needs the schema ids that map to the local schema",
                ));
            }
        }
        if names[0].1.name == names[1].1.name
            || names[0].1.name == names[2].1.name
            || names[1].1.name == names[2].1.name
        {
            return Err(invalid("topics", "the three topic names must differ"));
        }
        match (&self.postgres, &self.sqlite) {
            (Some(pg), None) => {
                if !url_is_postgres(&pg.url) {
                    return Err(invalid("postgres.url", "must start with postgres:// or postgresql://"));
                }
                if pg.max_connections < 2 {
                    return Err(invalid("postgres.max_connections", "must be at least 2"));
                }
            }
            (None, Some(sq)) => {
                if sq.path.trim().is_empty() {
                    return Err(invalid("sqlite.path", "must name a file"));
                }
            }
            (Some(_), Some(_)) => return Err(invalid("sqlite", "configure either [postgres] or [sqlite], not both")),
            (None, None) => {
                return Err(invalid("postgres", "a store is required: [postgres] url = … or [sqlite] path = …"))
            }
        }
        let positive = [
            ("attribution.window_hours", self.attribution.window_hours),
            ("attribution.pending_max_hours", self.attribution.pending_max_hours),
            ("attribution.ticket_retention_days", self.attribution.ticket_retention_days),
            ("limits.max_future_hours", self.limits.max_future_hours),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, format!("must be a positive number, got {v}")));
            }
        }
        if !(self.attribution.allowed_lateness_seconds.is_finite() && self.attribution.allowed_lateness_seconds >= 0.0)
        {
            return Err(invalid("attribution.allowed_lateness_seconds", "must be ≥ 0"));
        }
        if !(self.attribution.grace_hours.is_finite() && self.attribution.grace_hours >= 0.0) {
            return Err(invalid("attribution.grace_hours", "must be ≥ 0"));
        }
        if self.attribution.pending_max_per_partition == 0 {
            return Err(invalid("attribution.pending_max_per_partition", "must be ≥ 1"));
        }
        for (key, v) in [
            ("pricing.capable_input_usd_per_mtok", self.pricing.capable_input_usd_per_mtok),
            ("pricing.capable_output_usd_per_mtok", self.pricing.capable_output_usd_per_mtok),
            ("pricing.ticket_cost_usd_per_minute", self.pricing.ticket_cost_usd_per_minute),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(invalid(key, "must be a non-negative number"));
                }
            }
        }
        if self.pricing.capable_input_usd_per_mtok.is_some() != self.pricing.capable_output_usd_per_mtok.is_some() {
            return Err(invalid(
                "pricing.capable_output_usd_per_mtok",
                "set both capable input and output prices, or neither",
            ));
        }
        for (ch, v) in &self.pricing.ticket_cost_usd_per_channel {
            if !(v.is_finite() && *v >= 0.0) {
                return Err(invalid(
                    &format!("pricing.ticket_cost_usd_per_channel.{ch}"),
                    "must be a non-negative number",
                ));
            }
        }
        match (self.ledger.baseline_from, self.ledger.baseline_to) {
            (Some(a), Some(b)) if a > b => {
                return Err(invalid("ledger.baseline_to", "must not be before ledger.baseline_from"))
            }
            (Some(_), None) => return Err(invalid("ledger.baseline_to", "set with baseline_from")),
            (None, Some(_)) => return Err(invalid("ledger.baseline_from", "set with baseline_to")),
            _ => {}
        }
        if self.ledger.capable_tier.is_empty() {
            return Err(invalid("ledger.capable_tier", "must not be empty"));
        }
        if self.limits.max_payload_bytes < 16 {
            return Err(invalid("limits.max_payload_bytes", "must be at least 16"));
        }
        self.limits.validate_hostile_input()?;
        if let Some((key, reason)) = self.limits.cardinality_problem() {
            return Err(invalid(key, reason));
        }
        if self.batch.max_bytes < self.limits.max_payload_bytes {
            return Err(invalid("batch.max_bytes", "must be at least limits.max_payload_bytes"));
        }
        if self.batch.max_events == 0 {
            return Err(invalid("batch.max_events", "must be ≥ 1"));
        }
        if self.batch.max_wait_ms == 0 {
            return Err(invalid("batch.max_wait_ms", "must be ≥ 1"));
        }
        if self.batch.catch_up_events() < self.batch.max_events {
            return Err(invalid("batch.catch_up_max_events", "must be at least batch.max_events"));
        }
        if self.batch.catch_up_wait_ms() < self.batch.max_wait_ms {
            return Err(invalid("batch.catch_up_max_wait_ms", "must be at least batch.max_wait_ms"));
        }
        if let Some((key, reason)) = self.drift.problems().into_iter().next() {
            return Err(invalid(&key, reason));
        }
        if let Some((key, reason)) = self.router_eval.problems().into_iter().next() {
            return Err(invalid(&key, reason));
        }
        for (i, w) in self.alerts.webhooks.iter().enumerate() {
            if let Err(e) = w.validate() {
                return Err(invalid(&format!("alerts.webhooks[{i}]"), e.to_string()));
            }
        }
        let q = &self.alerts.quality;
        if q.baseline_from.is_some() != q.baseline_to.is_some() || q.baseline_from > q.baseline_to {
            return Err(invalid(
                "alerts.quality.baseline_to",
                "set both baseline dates, the second not before the first",
            ));
        }
        if !(q.alpha > 0.0 && q.alpha < 1.0) {
            return Err(invalid("alerts.quality.alpha", "must be in (0, 1)"));
        }
        if !(q.min_relative_increase >= 0.0 && q.min_relative_increase.is_finite()) {
            return Err(invalid("alerts.quality.min_relative_increase", "must be ≥ 0"));
        }
        if q.baseline_days == 0 || q.fire_after == 0 || q.resolve_after == 0 {
            return Err(invalid("alerts.quality", "baseline_days, fire_after and resolve_after must be ≥ 1"));
        }
        if self.alerts.queue_capacity == 0 {
            return Err(invalid("alerts.queue_capacity", "must be ≥ 1"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("http.listen", "must be an `ip:port` socket address or empty"));
        }
        if !(1..=86_400).contains(&self.http.report_cache_seconds) {
            return Err(invalid("http.report_cache_seconds", "must be between 1 and 86400"));
        }
        Ok(())
    }
}

fn url_is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// figment's messages already name the key path ("for key `kafka.brokers`"); keep them whole.
fn figment_message(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        [postgres]
        url = "postgres://tw@127.0.0.1/tw"
    "#;

    #[test]
    fn minimal_config_takes_spec_defaults() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.attribution.window_ms(), 72 * 3_600_000);
        assert_eq!(c.topics.routing.name, "llm.routing-decisions");
        assert_eq!(c.topics.feedback.name, "llm.feedback");
        assert_eq!(c.topics.tickets.name, "support.tickets");
        assert_eq!(c.topics.routing.format, WireFormat::Avro);
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::from_toml_str(&format!("{MINIMAL}\n[attribution]\nwindow_hour = 3\n")).unwrap_err().to_string();
        assert!(err.contains("window_hour"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_reason() {
        let err =
            Config::from_toml_str(&format!("{MINIMAL}\n[attribution]\nwindow_hours = -1\n")).unwrap_err().to_string();
        assert!(err.contains("attribution.window_hours") && err.contains("positive"), "{err}");
        let err =
            Config::from_toml_str(&format!("{MINIMAL}\n[topics.routing]\nname = \"r\"\nformat = \"confluent\"\n"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("topics.routing.schema_ids"), "{err}");
        let err = Config::from_toml_str(&format!("{MINIMAL}\n[topics.routing]\nname = \"r\"\nformat = \"protobuf\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("protobuf"), "{err}");
    }

    #[test]
    fn routing_targets_parse_with_a_default_tolerance_and_are_validated() {
        let c = Config::from_toml_str(&format!(
            "{MINIMAL}\n[routing.targets.\"router-2026-01\"]\ncheap_share = 0.62\n\
             [routing.targets.\"router-2026-02\"]\ncheap_share = 0.5\ntolerance = 0.1\n\
             [alerts.routed_share]\nfire_after = 4\n"
        ))
        .unwrap();
        let t = &c.routing.targets["router-2026-01"];
        assert_eq!((t.cheap_share, t.tolerance), (0.62, 0.05));
        assert_eq!(c.routing.targets["router-2026-02"].tolerance, 0.1);
        assert_eq!((c.alerts.routed_share.fire_after, c.alerts.routed_share.resolve_after), (4, 2));
        let err = Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 1.2\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("routing.targets.v1.cheap_share"), "{err}");
        let err =
            Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 0.6\ntolerance = 0\n"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("routing.targets.v1.tolerance"), "{err}");
        let err = Config::from_toml_str(&format!("{MINIMAL}\n[routing.targets.v1]\ncheap_share = 0.6\nshare = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("share"), "{err}");
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../tierwatch.example.toml");
        Config::from_toml_str(text).unwrap();
    }
}
