//! `[rescore]`: the rescoring slice's model, sampler, workers and what it keeps of the text.

use serde::{Deserialize, Serialize};

use super::sampler::SamplerConfig;
use crate::config::{invalid, ConfigError, Validate};
use crate::privacy::TextPrivacy;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RescoreConfig {
    /// The ONNX model; its sidecar is the same path with `.json`. Reloaded when either file
    /// changes (and on SIGHUP); a broken file is refused and the previous model keeps serving.
    pub model_path: String,
    /// Which decisions are sampled and with what probability.
    pub sampler: SamplerConfig,
    /// What `review_queue` keeps of the query text: `full`, `hashed` or `none`. The text needed
    /// for scoring stays in memory only until it is scored.
    pub store_text: TextPrivacy,
    /// Key of the text hash when `store_text = "hashed"` (keep it secret: short queries are
    /// guessable from an unkeyed hash). May be `${env:NAME}` or `${file:PATH}`.
    pub hash_key: crate::secret::Secret,
    /// Rescoring worker threads (each scores whole batches on one core).
    pub workers: usize,
    /// Sampled queries that may wait for a worker; beyond it they are shed (counted in
    /// `tierwatch_rescore_shed_total`, and reweighted in the estimates) so ingestion never waits.
    pub queue_capacity: usize,
    /// Queries per model run.
    pub batch_size: usize,
    /// Seconds between checks of the model files for a change.
    pub reload_poll_seconds: f64,
    /// Samples still unscored this many seconds after they were committed (a crash, or another
    /// instance that stopped) are rescored again if their text was stored, or marked shed.
    pub recover_after_seconds: f64,
}

impl Default for RescoreConfig {
    /// No model: a `[rescore]` section must name one (validation says so).
    fn default() -> Self {
        Self {
            model_path: String::new(),
            sampler: SamplerConfig::default(),
            store_text: TextPrivacy::Full,
            hash_key: Default::default(),
            workers: 1,
            queue_capacity: 4096,
            batch_size: 64,
            reload_poll_seconds: 5.0,
            recover_after_seconds: 300.0,
        }
    }
}

impl Validate for RescoreConfig {
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
