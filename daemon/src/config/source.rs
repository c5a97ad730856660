//! `[kafka]` and `[topics]`: where the three streams come from.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Validate};
use crate::decode::WireFormat;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group id; every tierwatch instance of one deployment uses the same group.
    pub group_id: String,
    /// Where to start when Postgres holds no offset for a partition: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Extra librdkafka properties passed through verbatim (e.g. security settings). Values may
    /// be `${env:NAME}` / `${file:PATH}` references; credentials are masked when shown.
    pub properties: crate::secret::KafkaProperties,
}

impl Default for KafkaConfig {
    /// No brokers: a `[kafka]` section must name them (validation says so).
    fn default() -> Self {
        Self {
            brokers: String::new(),
            group_id: "tierwatch".into(),
            auto_offset_reset: "earliest".into(),
            properties: Default::default(),
        }
    }
}

impl Validate for KafkaConfig {
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// RoutingDecision events from the gateway.
    pub routing: TopicConfig,
    /// Feedback events from the product.
    pub feedback: TopicConfig,
    /// SupportTicket events from the support system.
    pub tickets: TopicConfig,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            routing: TopicConfig::named("llm.routing-decisions"),
            feedback: TopicConfig::named("llm.feedback"),
            tickets: TopicConfig::named("support.tickets"),
        }
    }
}

impl Validate for TopicsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let names =
            [("topics.routing", &self.routing), ("topics.feedback", &self.feedback), ("topics.tickets", &self.tickets)];
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
        if self.routing.name == self.feedback.name
            || self.routing.name == self.tickets.name
            || self.feedback.name == self.tickets.name
        {
            return Err(invalid("topics", "the three topic names must differ"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Kafka topic name.
    pub name: String,
    /// Wire format of the message values: `avro` (bare datum, local schema), `confluent`
    /// (magic byte + schema id + datum) or `json`.
    #[serde(default)]
    pub format: WireFormat,
    /// For `confluent`: the registry schema ids that denote the local schema of this topic.
    #[serde(default)]
    pub schema_ids: Vec<u32>,
}

impl TopicConfig {
    fn named(name: &str) -> Self {
        Self { name: name.into(), format: WireFormat::default(), schema_ids: vec![] }
    }
}
