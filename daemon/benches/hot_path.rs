//! The in-process hot path (SPEC §8: ≥ 500k events/s on one core): decode + validate + join +
//! aggregate, and the join-state serialization a commit needs, without Kafka or a database.
//!
//! `cargo bench --bench hot_path`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tierwatch::decode::{encode, Decoder, DecoderConfig, WireFormat};
use tierwatch::event::*;
use tierwatch::join::{JoinCounters, JoinSettings, PartitionJoin};
use tierwatch::metrics::Deltas;

const N: usize = 50_000;
const BATCH: usize = 5_000;

/// Live-like traffic: two decisions per conversation, feedback on 1 in 4, a ticket on 1 in 10.
fn payloads() -> Vec<(usize, Vec<u8>)> {
    let day = 1_767_571_200_000i64;
    let mut out = Vec::with_capacity(N);
    let mut i = 0usize;
    while out.len() < N {
        let c = format!("conv-{i}");
        let start = day + i as i64 * 20_000;
        let tier = if i % 3 == 0 { "capable" } else { "cheap" };
        for k in 0..2 {
            let d = Event::Decision(RoutingDecision {
                event_id: format!("d-{i}-{k}"),
                conversation_id: c.clone(),
                turn: k,
                ts: start + k as i64 * 60_000,
                segment: Some("smb".into()),
                query_text: Some("where is my charge from? it says ACME*SVC 14.99".into()),
                router: RouterKind::PreRoute,
                classifier_version: "clf-2026-01".into(),
                intent: Some("billing".into()),
                confidence: (i % 1000) as f64 / 1000.0,
                threshold: Some(0.6),
                tier: tier.into(),
                model: if tier == "cheap" { "small-1".into() } else { "large-1".into() },
                escalated: false,
                latency_ms: 100.0 + (i % 900) as f64,
                input_tokens: 220,
                output_tokens: 140,
                cost_usd: 0.0004,
                capable_cost_usd: Some(0.0016),
            });
            out.push((0, encode(&d, WireFormat::Avro, 0)));
        }
        if i % 4 == 0 {
            let f = Event::Feedback(Feedback {
                event_id: format!("f-{i}"),
                conversation_id: c.clone(),
                turn: Some(1),
                ts: start + 5 * 60_000,
                kind: FeedbackKind::ThumbsUp,
                score: None,
                source: None,
            });
            out.push((1, encode(&f, WireFormat::Avro, 0)));
        }
        if i % 10 == 0 {
            let t = Event::Ticket(SupportTicket {
                event_id: format!("t-{i}"),
                ticket_id: format!("T{i}"),
                conversation_id: Some(c.clone()),
                ts: start + 3 * 3_600_000,
                status: TicketStatus::Opened,
                cost_center: "support".into(),
                channel: "phone".into(),
                handle_minutes: None,
                cost_usd: None,
                reason: None,
            });
            out.push((2, encode(&t, WireFormat::Avro, 0)));
        }
        i += 1;
    }
    out.truncate(N);
    out
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
            if let Ok(ev) = decoders[*idx].decode(Some(payload), None) {
                join.advance_watermark(ev.ts());
                match &ev {
                    Event::Decision(d) => join.apply_decision(&settings, d, &mut deltas, &mut counters),
                    Event::Feedback(f) => join.apply_feedback(&settings, f, &mut deltas, &mut counters),
                    Event::Ticket(t) => join.apply_ticket(&settings, t, &mut deltas, &mut counters),
                }
            }
            if (n + 1) % BATCH == 0 {
                join.release_due(&settings, &mut deltas, &mut counters);
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
