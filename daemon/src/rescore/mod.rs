//! The rescorer (docs/contract.md#rescoring-slice): a local ONNX classifier giving p_complex, the probability that a
//! query needs the capable tier, for the sampled slice of decisions.
//!
//! * [`features`]: hashed word/char n-gram features, bit-compatible with `training/featurize.py`.
//! * [`model`]: [`Rescorer`] — the tract-onnx model plus its JSON sidecar (version, featurizer
//!   spec, decision threshold θ, out-of-distribution reference), batched scoring and a cheap
//!   sparse [`Rescorer::ood_score`] for the sampler.
//! * [`sampler`]: which decisions are sampled, with what inclusion probability (deterministic in
//!   `event_id`, boosted for low router margin and out-of-distribution queries).
//! * [`runtime`]: the slice inside the daemon — samples committed with their batch, scored after,
//!   results applied exactly once, shed and crashed items reweighted or recovered.
//! * [`pool`]: [`RescorePool`] — worker threads behind a bounded queue that sheds instead of
//!   blocking ingestion, and [`ModelHandle`] — the current model, hot-reloaded when the file
//!   changes.
//!
//! Model contract: `NAME.onnx` takes float `[batch, D]` and returns float `[batch, 1]` (or
//! `[batch]`); `NAME.json` next to it is the sidecar (see `training/README.md` for the format and
//! how the committed `models/rescorer.onnx` was trained).

pub mod config;
pub mod features;
pub mod model;
pub mod pool;
pub mod runtime;
pub mod sampler;

use std::path::PathBuf;

pub use config::RescoreConfig;
pub use features::{FeatureBuf, Featurizer, FeaturizerSpec};
pub use model::{Rescorer, Sidecar};
pub use pool::{Failed, Job, ModelHandle, ModelWatcher, Outcome, PoolConfig, RescorePool, Scored};

/// Why a model could not be loaded or run. Loading errors name the file; a caller that hot-reloads
/// keeps the previous model on any of them.
#[derive(Debug, thiserror::Error)]
pub enum RescoreError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid rescorer sidecar {path}: {source}")]
    SidecarJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The sidecar parsed but its content is inconsistent (threshold, OOD reference …).
    #[error("invalid rescorer sidecar {path}: {reason}")]
    Sidecar { path: PathBuf, reason: String },
    /// The featurizer spec asks for something this build does not implement.
    #[error("unsupported featurizer spec: {0}")]
    Spec(String),
    /// tract could not parse, type or optimise the ONNX file (truncated, unsupported op …).
    #[error("cannot load ONNX model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// The model's input/output shape does not match the sidecar.
    #[error("ONNX model {path} does not match its sidecar: {reason}")]
    Shape { path: PathBuf, reason: String },
    /// Running the model failed.
    #[error("rescorer inference failed: {0}")]
    Inference(String),
    /// The model gave a probability that is not a number in [0, 1] (NaN, infinite, negative or
    /// above 1): refused at load, or the one query it was given for is shed.
    #[error("rescorer output out of range: {0}")]
    OutOfRange(String),
}
