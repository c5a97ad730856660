//! Encoders for tests, the simulator and benchmarks.
//!
//! Avro goes through the apache-avro crate (the reference implementation, independent of the
//! hand-written decoder) with the committed schemas, so round-trip tests check the decoder against
//! an outside implementation. Not meant for a hot path.

use apache_avro::types::Value;

use crate::event::{Event, Feedback, RoutingDecision, SupportTicket};

use super::{json, schema, WireFormat};

/// Encode one event in the given wire format. `confluent_schema_id` is used for
/// [`WireFormat::Confluent`] only.
///
/// Infallible for every `Event` value: the `Value` built here always matches the committed schema
/// (checked by the round-trip tests), and JSON serialization of these structs cannot fail.
pub fn encode(ev: &Event, format: WireFormat, confluent_schema_id: u32) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    try_encode(ev, format, confluent_schema_id).expect("event encodes with the committed schema")
}

/// [`encode`], returning the encoder error instead of panicking.
pub fn try_encode(ev: &Event, format: WireFormat, confluent_schema_id: u32) -> anyhow::Result<Vec<u8>> {
    match format {
        WireFormat::Avro => avro_datum(ev),
        WireFormat::Confluent => {
            let datum = avro_datum(ev)?;
            let mut out = Vec::with_capacity(5 + datum.len());
            out.push(0u8);
            out.extend_from_slice(&confluent_schema_id.to_be_bytes());
            out.extend_from_slice(&datum);
            Ok(out)
        }
        WireFormat::Json => Ok(json::encode(ev)?),
    }
}

/// The apache-avro `Value` of an event, shaped exactly like the committed schema.
pub fn to_avro_value(ev: &Event) -> Value {
    match ev {
        Event::Decision(d) => decision_value(d),
        Event::Feedback(f) => feedback_value(f),
        Event::Ticket(t) => ticket_value(t),
    }
}

fn avro_datum(ev: &Event) -> anyhow::Result<Vec<u8>> {
    Ok(apache_avro::to_avro_datum(schema(ev.stream()), to_avro_value(ev))?)
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn opt_s(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(Value::String(x.clone()))),
    }
}

fn opt_d(v: Option<f64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(Value::Double(x))),
    }
}

fn opt_i(v: Option<i32>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(Value::Int(x))),
    }
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn decision_value(d: &RoutingDecision) -> Value {
    record(vec![
        ("event_id", s(&d.event_id)),
        ("conversation_id", s(&d.conversation_id)),
        ("turn", Value::Int(d.turn)),
        ("ts", Value::TimestampMillis(d.ts)),
        ("segment", opt_s(&d.segment)),
        ("query_text", opt_s(&d.query_text)),
        ("router", Value::Enum(d.router.index(), d.router.as_str().to_owned())),
        ("classifier_version", s(&d.classifier_version)),
        ("intent", opt_s(&d.intent)),
        ("confidence", Value::Double(d.confidence)),
        ("threshold", opt_d(d.threshold)),
        ("tier", s(&d.tier)),
        ("model", s(&d.model)),
        ("escalated", Value::Boolean(d.escalated)),
        ("latency_ms", Value::Double(d.latency_ms)),
        ("input_tokens", Value::Int(d.input_tokens)),
        ("output_tokens", Value::Int(d.output_tokens)),
        ("cost_usd", Value::Double(d.cost_usd)),
        ("capable_cost_usd", opt_d(d.capable_cost_usd)),
    ])
}

fn feedback_value(f: &Feedback) -> Value {
    record(vec![
        ("event_id", s(&f.event_id)),
        ("conversation_id", s(&f.conversation_id)),
        ("turn", opt_i(f.turn)),
        ("ts", Value::TimestampMillis(f.ts)),
        ("kind", Value::Enum(f.kind.index(), f.kind.as_str().to_owned())),
        ("score", opt_d(f.score)),
        ("source", opt_s(&f.source)),
    ])
}

fn ticket_value(t: &SupportTicket) -> Value {
    record(vec![
        ("event_id", s(&t.event_id)),
        ("ticket_id", s(&t.ticket_id)),
        ("conversation_id", opt_s(&t.conversation_id)),
        ("ts", Value::TimestampMillis(t.ts)),
        ("status", Value::Enum(t.status.index(), t.status.as_str().to_owned())),
        ("cost_center", s(&t.cost_center)),
        ("channel", s(&t.channel)),
        ("handle_minutes", opt_d(t.handle_minutes)),
        ("cost_usd", opt_d(t.cost_usd)),
        ("reason", opt_s(&t.reason)),
    ])
}
