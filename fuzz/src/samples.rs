//! Sample events and the seed corpus built from them with the daemon's own encoders.

use std::io::Write;

use crate::contract::{stream_of, CONFLUENT_IDS};
use crate::decode::{encode, schema, to_avro_value, WireFormat};
use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};

const T0: i64 = 1_767_225_600_000;

fn decision(i: usize) -> RoutingDecision {
    RoutingDecision {
        event_id: format!("rd-{i}-ünïcødé"),
        conversation_id: format!("conv-{i}"),
        turn: i as i32,
        ts: T0 + i as i64 * 1000,
        segment: i.is_multiple_of(2).then(|| "enterprise/émea".into()),
        query_text: i.is_multiple_of(3).then(|| "where is my charge from? 💳".into()),
        router: RouterKind::ALL[i % 2],
        classifier_version: "conf-head-2025.12".into(),
        intent: (i % 2 == 1).then(|| "billing".into()),
        confidence: 0.42,
        threshold: (i % 2 == 1).then_some(0.6),
        tier: if i.is_multiple_of(2) { "cheap".into() } else { "capable".into() },
        model: "model-x".into(),
        escalated: i % 2 == 1,
        latency_ms: 1834.25,
        input_tokens: 1200,
        output_tokens: 350,
        cost_usd: 0.0123,
        capable_cost_usd: i.is_multiple_of(2).then_some(0.0101),
    }
}

fn feedback(i: usize) -> Feedback {
    let kind = FeedbackKind::ALL[i % 4];
    Feedback {
        event_id: format!("fb-{i}"),
        conversation_id: format!("conv-{i}"),
        turn: i.is_multiple_of(2).then_some(i as i32),
        ts: T0 + i as i64 * 1000 + 500,
        kind,
        score: match kind {
            FeedbackKind::Csat => Some(4.0),
            FeedbackKind::HumanReview => Some(1.0),
            _ => None,
        },
        source: i.is_multiple_of(3).then(|| "widget".into()),
    }
}

fn ticket(i: usize) -> SupportTicket {
    SupportTicket {
        event_id: format!("tk-ev-{i}"),
        ticket_id: format!("tk-{i}"),
        conversation_id: i.is_multiple_of(2).then(|| format!("conv-{i}")),
        ts: T0 + i as i64 * 1000 + 900,
        status: TicketStatus::ALL[i % 2],
        cost_center: "support-emea".into(),
        channel: "email".into(),
        handle_minutes: (i % 2 == 1).then_some(12.5),
        cost_usd: (i % 2 == 1).then_some(9.75),
        reason: i.is_multiple_of(3).then(|| "refund".into()),
    }
}

/// Valid events of each kind (every enum value, optional fields present and absent), then a few
/// that validation rejects, so the seeds reach both sides.
pub fn events(stream: Stream) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    match stream {
        Stream::Routing => {
            out.extend((0..4).map(|i| decision(i).into()));
            let mut d = decision(4);
            d.confidence = 1.5;
            out.push(d.into());
            let mut d = decision(5);
            d.event_id.clear();
            out.push(d.into());
            let mut d = decision(6);
            d.cost_usd = -1.0;
            out.push(d.into());
        }
        Stream::Feedback => {
            out.extend((0..4).map(|i| feedback(i).into()));
            let mut f = feedback(2);
            f.score = Some(9.0);
            out.push(f.into());
        }
        Stream::Tickets => {
            out.extend((0..4).map(|i| ticket(i).into()));
            let mut t = ticket(5);
            t.ts = T0 + 10 * 86_400_000;
            out.push(t.into());
        }
    }
    out
}

fn selector(stream: Stream) -> u8 {
    (0u8..3).find(|&s| stream_of(s) == stream).unwrap_or(0)
}

fn with_selector(stream: Stream, body: &[u8]) -> Vec<u8> {
    let mut v = vec![selector(stream)];
    v.extend_from_slice(body);
    v
}

/// An Avro object container of `events` written by apache-avro with `codec`.
fn container(stream: Stream, events: &[Event], codec: apache_avro::Codec) -> anyhow::Result<Vec<u8>> {
    let mut w = apache_avro::Writer::with_codec(schema(stream), Vec::new(), codec);
    for ev in events {
        w.append(to_avro_value(ev))?;
    }
    Ok(w.into_inner()?)
}

/// The seed corpus: (target, file name, bytes).
pub fn seeds() -> anyhow::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let mut out = Vec::new();
    for stream in Stream::ALL {
        let name = stream.as_str();
        let events = events(stream);
        for (i, ev) in events.iter().enumerate() {
            out.push(("avro_datum", format!("{name}-{i}"), with_selector(stream, &encode(ev, WireFormat::Avro, 0))));
            out.push((
                "confluent",
                format!("{name}-{i}"),
                with_selector(stream, &encode(ev, WireFormat::Confluent, CONFLUENT_IDS[i % 2])),
            ));
            out.push(("json", format!("{name}-{i}"), with_selector(stream, &encode(ev, WireFormat::Json, 0))));
        }
        let mut lines = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            lines.extend_from_slice(&encode(ev, WireFormat::Json, 0));
            lines.extend_from_slice(if i.is_multiple_of(2) { b"\n" } else { b"\r\n" });
            if i == 1 {
                lines.extend_from_slice(b"   \n{\"not\": \"an event\"}\n");
            }
        }
        out.push(("replay_jsonl", name.to_string(), with_selector(stream, &lines)));
        let valid = &events[..4];
        out.push((
            "replay_avro",
            format!("{name}-null"),
            with_selector(stream, &container(stream, valid, apache_avro::Codec::Null)?),
        ));
        out.push((
            "replay_avro",
            format!("{name}-deflate"),
            with_selector(stream, &container(stream, &events, apache_avro::Codec::Deflate(Default::default()))?),
        ));
    }
    Ok(out)
}

/// Write the seed corpus under `dir/<target>/`. Other files there (minimized crashes, kept as
/// seeds after their fix) stay.
pub fn write_seeds(dir: &std::path::Path) -> anyhow::Result<usize> {
    let seeds = seeds()?;
    for (target, _) in crate::targets::ALL {
        std::fs::create_dir_all(dir.join(target))?;
    }
    for (target, name, bytes) in &seeds {
        std::fs::File::create(dir.join(target).join(name))?.write_all(bytes)?;
    }
    Ok(seeds.len())
}
