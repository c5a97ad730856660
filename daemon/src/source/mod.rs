//! Event sources. A source hands the pipeline raw messages with their (topic, partition, offset)
//! position, tells it which partitions it owns, and re-reads from a stored position on request.
//! Kafka is the production source ([`kafka`]); files are the backfill/replay source ([`files`]).

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
    pub payload: Option<Vec<u8>>,
    /// The broker's timestamp (Kafka), for the future-timestamp check.
    pub broker_ts: Option<i64>,
}

/// A change of ownership, handed from the source to the pipeline.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// Newly owned partitions, each with its snapshot loaded before reading resumed there.
    Assigned(Vec<PartitionSnapshot>),
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
    /// A finite source that has delivered everything (replay): the pipeline stops when idle.
    fn finished(&self) -> bool {
        false
    }
}
