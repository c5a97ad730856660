//! The simulator's three streams straight to Kafka: keyed like the gateway's (docs/contract.md#events: the
//! conversation id, the ticket id for an unlinked ticket), partitioned with the Java client's
//! murmur2 hash so the simulator lands on the same partitions a real gateway's producers would,
//! and only onto topics that are co-partitioned (same partition count) — otherwise the daemon
//! could not join them and refuses to start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{days, message_key, SimConfig, WriteSummary};
use crate::decode::try_encode;
use crate::decode::WireFormat;
use crate::event::Event;

/// Where and how to produce.
#[derive(Debug, Clone)]
pub struct KafkaTarget {
    pub brokers: String,
    /// Routing decisions, feedback, tickets.
    pub topics: [String; 3],
    /// Avro datum, Confluent framing (schema ids 1, 2, 3 for the three streams) or JSON.
    pub format: WireFormat,
}

/// Counts delivery failures reported by the producer's background thread.
#[derive(Clone, Default)]
struct Deliveries {
    failed: Arc<AtomicU64>,
    first_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produce the whole run, day by day (bounded memory), and wait until every message is
/// acknowledged. Errors name what failed; nothing is reported as written that was not delivered.
pub fn produce(cfg: &SimConfig, target: &KafkaTarget) -> anyhow::Result<WriteSummary> {
    let context = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &target.brokers)
        // Per-partition order and no duplicates on retry: a conversation's events stay in order.
        .set("enable.idempotence", "true")
        // The Java client's default: the same partitions as the gateway's own producers.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create_with_context(context.clone())
        .context("creating the Kafka producer")?;
    crate::source::kafka::check_copartitioned(producer.client(), &target.topics)?;

    let mut summary = WriteSummary::default();
    for day in days(cfg) {
        for ev in &day.events {
            let idx = match ev {
                Event::Decision(_) => 0,
                Event::Feedback(_) => 1,
                Event::Ticket(_) => 2,
            };
            let payload = try_encode(ev, target.format, idx as u32 + 1)?;
            let key = message_key(ev);
            let mut record = BaseRecord::to(&target.topics[idx]).key(key).payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The local queue is full: let the background thread deliver.
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => bail!("producing to {}: {e}", target.topics[idx]),
                }
            }
            match idx {
                0 => summary.decisions += 1,
                1 => summary.feedback += 1,
                _ => summary.tickets += 1,
            }
        }
        summary.truth += day.truth.len() as u64;
    }
    producer.flush(Duration::from_secs(60)).context("waiting for Kafka to acknowledge every message")?;
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context.first_error.lock().ok().and_then(|g| g.clone()).unwrap_or_default();
        bail!("{failed} messages were not delivered (first error: {first})");
    }
    Ok(summary)
}
