//! Event sources. A source hands the pipeline raw messages with their (topic, partition, offset)
//! position, tells it which partitions it owns, and re-reads from a stored position on request.
//! Kafka is the production source ([`kafka`]); files are the backfill/replay source ([`files`]).

pub mod connect;
pub mod files;
pub mod kafka;
pub mod records;

use std::time::Duration;

use crate::store::PartitionSnapshot;

/// A message copied out of the source's buffers. `topic_idx`: 0 routing, 1 feedback, 2 tickets.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub topic_idx: usize,
    pub partition: i32,
    pub offset: i64,
    /// The payload, or only its first bytes when it is above the payload limit (see `len`).
    pub payload: Option<Vec<u8>>,
    /// The payload's true length (more than `payload` holds when it was cut at the source).
    pub len: usize,
    /// The broker's timestamp (Kafka), for the future-timestamp check.
    pub broker_ts: Option<i64>,
}

impl Polled {
    /// Whether the source kept only a prefix of an oversized payload.
    pub fn cut(&self) -> bool {
        self.payload.as_ref().map_or(0, Vec::len) < self.len
    }
}

/// How much of a payload a source copies: an oversized payload (above `max_bytes`) is rejected
/// anyway, so only the `keep_bytes` its dead letter stores are copied (a batch of 1 MB messages
/// would otherwise hold them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimit {
    pub max_bytes: usize,
    pub keep_bytes: usize,
}

impl PayloadLimit {
    pub const UNLIMITED: PayloadLimit = PayloadLimit { max_bytes: usize::MAX, keep_bytes: usize::MAX };

    pub fn from_config(cfg: &crate::config::Config) -> Self {
        PayloadLimit { max_bytes: cfg.limits.max_payload_bytes, keep_bytes: cfg.limits.dead_letter_max_bytes }
    }

    /// Copy a payload (whole, or its prefix when oversized); returns it with its true length.
    pub fn copy(&self, payload: Option<&[u8]>) -> (Option<Vec<u8>>, usize) {
        match payload {
            None => (None, 0),
            Some(b) if b.len() > self.max_bytes => (Some(b[..self.keep_bytes.min(b.len())].to_vec()), b.len()),
            Some(b) => (Some(b.to_vec()), b.len()),
        }
    }

    /// [`PayloadLimit::copy`] for an owned payload (no copy when it is within the limit).
    pub fn cut(&self, mut payload: Vec<u8>) -> (Vec<u8>, usize) {
        let len = payload.len();
        if len > self.max_bytes {
            payload.truncate(self.keep_bytes);
            payload.shrink_to_fit();
        }
        (payload, len)
    }
}

/// A change of ownership, handed from the source to the pipeline.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// Newly owned partitions, each with its snapshot loaded before reading resumed there.
    Assigned(Vec<PartitionSnapshot>),
    /// A topic-partition of a newly assigned partition had no stored offset: the source starts
    /// it at this concrete offset (resolved from `auto_offset_reset` against the broker's low or
    /// high watermark), which the pipeline stores with its next commit. Storing it at once is
    /// what keeps `latest` from skipping, after a restart, whatever arrived in between.
    StartResolved { partition: i32, topic: String, offset: i64 },
    /// Partitions no longer owned: their in-memory state and unprocessed messages are dropped.
    Revoked(Vec<i32>),
}

pub trait Source {
    /// The next message, waiting at most `timeout`; `None` when nothing arrived.
    fn poll(&mut self, timeout: Duration) -> Option<Polled>;
    /// Ownership changes since the last call.
    fn take_events(&mut self) -> Vec<RebalanceEvent>;
    /// One past the last offset currently available in (topic, partition), when known.
    fn high_watermark(&mut self, topic_idx: usize, partition: i32) -> Option<i64>;
    /// The positions the store committed (for lag visibility only).
    fn committed(&mut self, positions: &[(usize, i32, i64)]);
    /// Read (topic, partition) again from `offset` (`None`: from the start).
    fn seek(&mut self, topic_idx: usize, partition: i32, offset: Option<i64>) -> anyhow::Result<()>;
    /// Called repeatedly while the pipeline waits to retry a commit: stay a live member of the
    /// consumer group (heartbeats, rebalance callbacks) without delivering new messages, for at
    /// most `timeout`. Anything read meanwhile is delivered by later `poll`s.
    fn hold(&mut self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
    /// The commit went through: deliver messages again.
    fn release(&mut self) {}
    /// A finite source that has delivered everything (replay): the pipeline stops when idle.
    fn finished(&self) -> bool {
        false
    }
}
