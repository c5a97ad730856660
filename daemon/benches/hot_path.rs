//! The in-process hot path (target ≥ 500k events/s on one core,
//! docs/architecture.md#performance-targets): decode + validate + join + aggregate, and the
//! join-state serialization a commit needs, without Kafka or a database.
//!
//! `cargo bench --bench hot_path`

#[path = "support/traffic.rs"]
mod traffic;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tierwatch::decode::{encode, Decoder, DecoderConfig, WireFormat};
use tierwatch::event::*;
use tierwatch::join::{JoinCounters, JoinSettings, PartitionJoin};
use tierwatch::metrics::Deltas;

const N: usize = 50_000;
const BATCH: usize = 5_000;

fn payloads() -> Vec<(usize, Vec<u8>)> {
    traffic::events(N).into_iter().map(|(i, ev)| (i, encode(&ev, WireFormat::Avro, 0))).collect()
}

fn bench(c: &mut Criterion) {
    let data = payloads();
    let decoders = [Stream::Routing, Stream::Feedback, Stream::Tickets]
        .map(|s| Decoder::new(DecoderConfig::new(s, WireFormat::Avro)));
    let settings = JoinSettings::default();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let run = |serialize: bool| {
        let mut join = PartitionJoin::new();
        let mut counters = JoinCounters::default();
        let mut deltas = Deltas::default();
        let mut state_bytes = 0usize;
        for (n, (idx, payload)) in data.iter().enumerate() {
            if let Ok(mut ev) = decoders[*idx].decode(Some(payload), None) {
                join.advance_watermark(ev.ts());
                let _ = match &mut ev {
                    Event::Decision(d) => join.apply_decision(&settings, d, &mut deltas, &mut counters),
                    Event::Feedback(f) => join.apply_feedback(&settings, f, &mut deltas, &mut counters),
                    Event::Ticket(t) => join.apply_ticket(&settings, t, &mut deltas, &mut counters),
                };
            }
            if (n + 1) % BATCH == 0 {
                join.release_due(&settings, &mut deltas);
                join.sweep(&settings, &mut deltas, false);
                if serialize {
                    state_bytes += join.take_dirty().iter().map(|(_, v)| v.as_ref().map_or(0, Vec::len)).sum::<usize>();
                }
                deltas = Deltas::default();
            }
        }
        (join.open_conversations(), state_bytes)
    };
    g.bench_function("decode_validate_join_aggregate", |b| {
        b.iter_batched(|| (), |_| run(false), BatchSize::PerIteration)
    });
    g.bench_function("plus_state_serialization", |b| b.iter_batched(|| (), |_| run(true), BatchSize::PerIteration));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
