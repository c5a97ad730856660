use apache_avro::schema::RecordSchema;
use apache_avro::Schema;
use proptest::prelude::*;

use super::testutil::*;
use super::*;
use crate::event::{Event, Feedback, FeedbackKind, RouterKind, RoutingDecision, Stream, SupportTicket, TicketStatus};
use crate::testkit::*;

const BROKER: Option<i64> = Some(T0 + 10_000_000);

fn decoder(stream: Stream, format: WireFormat) -> Decoder {
    let mut cfg = DecoderConfig::new(stream, format);
    cfg.confluent_schema_ids = vec![7, 42];
    Decoder::new(cfg)
}

fn reason_of(r: Result<Event, Reject>) -> RejectReason {
    match r {
        Ok(ev) => panic!("expected a reject, decoded {ev:?}"),
        Err(e) => e.reason,
    }
}

// ---------------------------------------------------------------- schemas

fn record_of(stream: Stream) -> &'static RecordSchema {
    match schema(stream) {
        Schema::Record(r) => r,
        other => panic!("{stream:?} schema is not a record: {other:?}"),
    }
}

#[test]
fn schemas_parse_and_every_field_is_documented() {
    for stream in Stream::ALL {
        let r = record_of(stream);
        assert_eq!(r.name.fullname(None), stream.record_name());
        assert!(r.doc.as_deref().is_some_and(|d| !d.trim().is_empty()), "{stream:?} record doc");
        assert!(!r.fields.is_empty());
        for f in &r.fields {
            assert!(f.doc.as_deref().is_some_and(|d| !d.trim().is_empty()), "{stream:?}.{} has no doc", f.name);
            if let Schema::Enum(e) = &f.schema {
                assert!(e.doc.as_deref().is_some_and(|d| !d.trim().is_empty()), "enum {} doc", e.name.name);
            }
        }
        // Also parseable on their own (not only through the OnceLock).
        Schema::parse_str(schema_text(stream)).unwrap();
    }
}

/// The hand decoder hard-codes field order and types; pin them to the committed schemas.
#[test]
fn schema_field_layout() {
    fn kind(s: &Schema) -> String {
        match s {
            Schema::String => "string".into(),
            Schema::Int => "int".into(),
            Schema::Long => "long".into(),
            Schema::TimestampMillis => "ts".into(),
            Schema::Double => "double".into(),
            Schema::Boolean => "boolean".into(),
            Schema::Enum(e) => format!("enum {}{:?}", e.name.name, e.symbols),
            Schema::Union(u) => {
                let v: Vec<String> = u.variants().iter().map(kind).collect();
                format!("[{}]", v.join(","))
            }
            Schema::Null => "null".into(),
            other => format!("{other:?}"),
        }
    }
    let syms = |v: &[&str]| format!("{:?}", v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let router = format!("enum RouterKind{}", syms(&RouterKind::ALL.map(|k| k.as_str())));
    let fbk = format!("enum FeedbackKind{}", syms(&FeedbackKind::ALL.map(|k| k.as_str())));
    let status = format!("enum TicketStatus{}", syms(&TicketStatus::ALL.map(|k| k.as_str())));
    let expected: [(Stream, Vec<(&str, &str)>); 3] = [
        (
            Stream::Routing,
            vec![
                ("event_id", "string"),
                ("conversation_id", "string"),
                ("turn", "int"),
                ("ts", "ts"),
                ("segment", "[null,string]"),
                ("query_text", "[null,string]"),
                ("router", &router),
                ("classifier_version", "string"),
                ("intent", "[null,string]"),
                ("confidence", "double"),
                ("threshold", "[null,double]"),
                ("tier", "string"),
                ("model", "string"),
                ("escalated", "boolean"),
                ("latency_ms", "double"),
                ("input_tokens", "int"),
                ("output_tokens", "int"),
                ("cost_usd", "double"),
                ("capable_cost_usd", "[null,double]"),
            ],
        ),
        (
            Stream::Feedback,
            vec![
                ("event_id", "string"),
                ("conversation_id", "string"),
                ("turn", "[null,int]"),
                ("ts", "ts"),
                ("kind", &fbk),
                ("score", "[null,double]"),
                ("source", "[null,string]"),
            ],
        ),
        (
            Stream::Tickets,
            vec![
                ("event_id", "string"),
                ("ticket_id", "string"),
                ("conversation_id", "[null,string]"),
                ("ts", "ts"),
                ("status", &status),
                ("cost_center", "string"),
                ("channel", "string"),
                ("handle_minutes", "[null,double]"),
                ("cost_usd", "[null,double]"),
                ("reason", "[null,string]"),
            ],
        ),
    ];
    for (stream, fields) in expected {
        let got: Vec<(String, String)> =
            record_of(stream).fields.iter().map(|f| (f.name.clone(), kind(&f.schema))).collect();
        let want: Vec<(String, String)> = fields.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect();
        assert_eq!(got, want, "{stream:?}");
        // Nullable unions default to null; escalated defaults to false.
        for f in &record_of(stream).fields {
            if matches!(f.schema, Schema::Union(_)) {
                assert_eq!(f.default, Some(serde_json::Value::Null), "{stream:?}.{} default", f.name);
            }
            if f.name == "escalated" {
                assert_eq!(f.default, Some(serde_json::Value::Bool(false)));
            }
        }
    }
}

// ---------------------------------------------------------------- round trips

#[test]
fn avro_round_trip_samples() {
    for ev in samples() {
        let bytes = encode(&ev, WireFormat::Avro, 0);
        let got = decoder(ev.stream(), WireFormat::Avro).decode(Some(&bytes), BROKER).unwrap();
        assert_eq!(got, ev);
    }
}

#[test]
fn confluent_round_trip_samples() {
    for ev in samples() {
        for id in [7u32, 42] {
            let bytes = encode(&ev, WireFormat::Confluent, id);
            assert_eq!(bytes[0], 0);
            assert_eq!(&bytes[1..5], &id.to_be_bytes());
            assert_eq!(&bytes[5..], &encode(&ev, WireFormat::Avro, 0)[..]);
            let got = decoder(ev.stream(), WireFormat::Confluent).decode(Some(&bytes), BROKER).unwrap();
            assert_eq!(got, ev);
        }
    }
}

#[test]
fn json_round_trip_samples() {
    for ev in samples() {
        let bytes = encode(&ev, WireFormat::Json, 0);
        let got = decoder(ev.stream(), WireFormat::Json).decode(Some(&bytes), BROKER).unwrap();
        assert_eq!(got, ev);
    }
}

/// The apache-avro reader agrees with what the hand decoder produced.
#[test]
fn apache_reader_agrees_on_samples() {
    for ev in samples() {
        let bytes = encode(&ev, WireFormat::Avro, 0);
        let v = apache_avro::from_avro_datum(schema(ev.stream()), &mut &bytes[..], None).unwrap();
        assert_eq!(v, to_avro_value(&ev));
    }
}

#[test]
fn each_stream_refuses_other_record_types() {
    for ev in samples() {
        for format in [WireFormat::Avro, WireFormat::Json] {
            let bytes = encode(&ev, format, 0);
            for stream in Stream::ALL {
                if stream == ev.stream() {
                    continue;
                }
                let r = decoder(stream, format).decode_only(Some(&bytes));
                assert_eq!(
                    r.as_ref().map_err(|e| e.reason),
                    Err(RejectReason::Decode),
                    "{:?} {format:?} decoded as {stream:?}",
                    ev.stream()
                );
            }
        }
    }
}

#[test]
fn json_examples_decode_and_validate() {
    let examples: [(Stream, &str); 3] = [
        (Stream::Routing, include_str!("../../../schemas/examples/routing_decision.json")),
        (Stream::Feedback, include_str!("../../../schemas/examples/feedback.json")),
        (Stream::Tickets, include_str!("../../../schemas/examples/support_ticket.json")),
    ];
    for (stream, text) in examples {
        let ev = decoder(stream, WireFormat::Json).decode(Some(text.as_bytes()), Some(T0)).unwrap();
        assert_eq!(ev.stream(), stream);
        // …and survive an Avro round trip.
        let bytes = encode(&ev, WireFormat::Avro, 0);
        assert_eq!(decoder(stream, WireFormat::Avro).decode(Some(&bytes), Some(T0)).unwrap(), ev);
    }
}

#[test]
fn json_optional_fields_absent_and_unknown_fields() {
    let text = r#"{"event_id":"e","conversation_id":"c","turn":1,"ts":1767225600000,"router":"CASCADE",
        "classifier_version":"v","confidence":0.5,"tier":"cheap","model":"m","latency_ms":1.0,
        "input_tokens":1,"output_tokens":2,"cost_usd":0.1,"new_field_v2":{"x":[1,null]}}"#;
    let ev = decoder(Stream::Routing, WireFormat::Json).decode(Some(text.as_bytes()), None).unwrap();
    let Event::Decision(d) = ev else { panic!() };
    assert!(!d.escalated);
    assert_eq!(d.segment, None);
    assert_eq!(d.capable_cost_usd, None);
    assert_eq!(d.router, RouterKind::Cascade);
}

#[test]
fn json_errors_carry_serde_message() {
    let dec = decoder(Stream::Feedback, WireFormat::Json);
    let e = dec.decode(Some(br#"{"event_id":"e","ts":5,"kind":"CSAT","score":3}"#), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(e.detail.contains("missing field `conversation_id`"), "{}", e.detail);
    let e = dec.decode(Some(br#"{"event_id":"e","conversation_id":"c","ts":"5","kind":"CSAT"}"#), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(e.detail.contains("invalid type"), "{}", e.detail);
    let e = dec.decode(Some(br#"{"event_id":"e","conversation_id":"c","ts":5,"kind":"MEH"}"#), None).unwrap_err();
    assert!(e.detail.contains("unknown variant"), "{}", e.detail);
    for bad in [&b"[1,2]"[..], b"null", b"{", b"{} x", b"\xff\xfe"] {
        assert_eq!(reason_of(dec.decode(Some(bad), None)), RejectReason::Decode);
    }
}

#[test]
fn avro_detail_names_the_field() {
    let ev: Event = decision_full().into();
    let bytes = encode(&ev, WireFormat::Avro, 0);
    // Cut inside the query_text string: 'RoutingDecision.query_text'.
    let at = bytes.windows(5).position(|w| w == b"where").unwrap();
    let e = decoder(Stream::Routing, WireFormat::Avro).decode(Some(&bytes[..at + 3]), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(e.detail.starts_with("RoutingDecision.query_text:"), "{}", e.detail);
    // Trailing byte.
    let mut long = bytes.clone();
    long.push(0);
    let e = decoder(Stream::Routing, WireFormat::Avro).decode(Some(&long), None).unwrap_err();
    assert!(e.detail.contains("trailing"), "{}", e.detail);
}

#[test]
fn every_strict_prefix_of_a_valid_datum_is_a_decode_error() {
    for ev in samples() {
        let bytes = encode(&ev, WireFormat::Avro, 0);
        let dec = decoder(ev.stream(), WireFormat::Avro);
        for n in 1..bytes.len() {
            assert_eq!(reason_of(dec.decode(Some(&bytes[..n]), None)), RejectReason::Decode);
        }
    }
}

// ---------------------------------------------------------------- reject reasons

#[test]
fn reject_reason_labels() {
    let labels: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "empty_payload",
            "payload_too_large",
            "decode_error",
            "unknown_schema_id",
            "empty_field",
            "confidence_out_of_range",
            "negative_value",
            "invalid_value",
            "future_timestamp",
            "past_timestamp",
            "nul_character",
            "string_too_long",
            "value_too_large",
            "store_rejected"
        ]
    );
    let r = Reject::new(RejectReason::EmptyField, "tier is empty");
    assert_eq!(r.to_string(), "EmptyField: tier is empty");
}

#[test]
fn reject_empty_payload() {
    for format in [WireFormat::Avro, WireFormat::Confluent, WireFormat::Json] {
        let dec = decoder(Stream::Routing, format);
        assert_eq!(reason_of(dec.decode(None, None)), RejectReason::EmptyPayload);
        assert_eq!(reason_of(dec.decode(Some(b""), None)), RejectReason::EmptyPayload);
    }
}

#[test]
fn reject_payload_too_large() {
    let ev: Event = decision_full().into();
    for format in [WireFormat::Avro, WireFormat::Confluent, WireFormat::Json] {
        let bytes = encode(&ev, format, 7);
        let mut cfg = DecoderConfig::new(Stream::Routing, format);
        cfg.confluent_schema_ids = vec![7];
        cfg.max_payload_bytes = bytes.len();
        assert!(Decoder::new(cfg.clone()).decode(Some(&bytes), None).is_ok());
        cfg.max_payload_bytes = bytes.len() - 1;
        let e = Decoder::new(cfg).decode(Some(&bytes), None).unwrap_err();
        assert_eq!(e.reason, RejectReason::PayloadTooLarge);
    }
}

#[test]
fn reject_decode_confluent_framing() {
    let dec = decoder(Stream::Feedback, WireFormat::Confluent);
    for short in [&[0u8][..], &[0, 0, 0, 0][..], &[0, 0, 0][..]] {
        assert_eq!(reason_of(dec.decode(Some(short), None)), RejectReason::Decode);
    }
    let mut bytes = encode(&feedback_csat().into(), WireFormat::Confluent, 7);
    bytes[0] = 1;
    let e = dec.decode(Some(&bytes), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(e.detail.contains("magic"), "{}", e.detail);
    // Framing only, no datum.
    assert_eq!(reason_of(dec.decode(Some(&[0, 0, 0, 0, 7]), None)), RejectReason::Decode);
}

#[test]
fn reject_unknown_schema_id() {
    let dec = decoder(Stream::Tickets, WireFormat::Confluent);
    let bytes = encode(&ticket_resolved().into(), WireFormat::Confluent, 0x0102_0304);
    let e = dec.decode(Some(&bytes), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::UnknownSchemaId);
    assert!(e.detail.contains(&0x0102_0304u32.to_string()), "{}", e.detail);
    // No ids configured: everything is unknown.
    let none = Decoder::new(DecoderConfig::new(Stream::Tickets, WireFormat::Confluent));
    let bytes = encode(&ticket_resolved().into(), WireFormat::Confluent, 7);
    assert_eq!(reason_of(none.decode(Some(&bytes), None)), RejectReason::UnknownSchemaId);
}

/// Encode with apache-avro, decode with the hand decoder + validation.
fn check(ev: impl Into<Event>) -> Result<Event, Reject> {
    let ev = ev.into();
    let bytes = encode(&ev, WireFormat::Avro, 0);
    decoder(ev.stream(), WireFormat::Avro).decode(Some(&bytes), BROKER)
}

fn expect(ev: impl Into<Event>, reason: RejectReason, field: &str) {
    let ev = ev.into();
    match check(ev.clone()) {
        Ok(_) => panic!("expected {reason:?} for {ev:?}"),
        Err(e) => {
            assert_eq!(e.reason, reason, "{ev:?}: {}", e.detail);
            assert!(e.detail.contains(field), "detail {:?} should name {field}", e.detail);
        }
    }
}

#[test]
fn reject_empty_field() {
    use RejectReason::EmptyField as E;
    expect(RoutingDecision { event_id: "".into(), ..decision_full() }, E, "event_id");
    expect(RoutingDecision { conversation_id: "".into(), ..decision_full() }, E, "conversation_id");
    expect(RoutingDecision { classifier_version: "".into(), ..decision_full() }, E, "classifier_version");
    expect(RoutingDecision { tier: "".into(), ..decision_full() }, E, "tier");
    expect(RoutingDecision { model: "".into(), ..decision_full() }, E, "model");
    expect(Feedback { event_id: "".into(), ..feedback_csat() }, E, "event_id");
    expect(Feedback { conversation_id: "".into(), ..feedback_csat() }, E, "conversation_id");
    expect(SupportTicket { event_id: "".into(), ..ticket_resolved() }, E, "event_id");
    expect(SupportTicket { ticket_id: "".into(), ..ticket_resolved() }, E, "ticket_id");
    expect(SupportTicket { conversation_id: Some("".into()), ..ticket_resolved() }, E, "conversation_id");
    expect(SupportTicket { cost_center: "".into(), ..ticket_resolved() }, E, "cost_center");
    expect(SupportTicket { channel: "".into(), ..ticket_resolved() }, E, "channel");
    // Optional empty strings elsewhere are fine.
    check(RoutingDecision { segment: Some("".into()), intent: Some("".into()), ..decision_full() }).unwrap();
}

#[test]
fn reject_confidence_out_of_range() {
    for c in [-0.001, 1.000_001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e300] {
        expect(RoutingDecision { confidence: c, ..decision_full() }, RejectReason::ConfidenceOutOfRange, "confidence");
    }
    for c in [0.0, -0.0, 1.0, 0.5, f64::MIN_POSITIVE] {
        check(RoutingDecision { confidence: c, ..decision_full() }).unwrap();
    }
}

#[test]
fn reject_negative_value() {
    use RejectReason::NegativeValue as N;
    expect(RoutingDecision { cost_usd: -0.01, ..decision_full() }, N, "cost_usd");
    expect(RoutingDecision { capable_cost_usd: Some(-1.0), ..decision_full() }, N, "capable_cost_usd");
    expect(RoutingDecision { latency_ms: -5.0, ..decision_full() }, N, "latency_ms");
    expect(RoutingDecision { input_tokens: -1, ..decision_full() }, N, "input_tokens");
    expect(RoutingDecision { output_tokens: i32::MIN, ..decision_full() }, N, "output_tokens");
    expect(SupportTicket { handle_minutes: Some(-3.0), ..ticket_resolved() }, N, "handle_minutes");
    expect(SupportTicket { cost_usd: Some(-0.5), ..ticket_resolved() }, N, "cost_usd");
}

#[test]
fn reject_invalid_value() {
    use RejectReason::InvalidValue as I;
    // Non-finite amounts.
    expect(RoutingDecision { cost_usd: f64::NAN, ..decision_full() }, I, "cost_usd");
    expect(RoutingDecision { cost_usd: f64::INFINITY, ..decision_full() }, I, "cost_usd");
    expect(RoutingDecision { capable_cost_usd: Some(f64::NAN), ..decision_full() }, I, "capable_cost_usd");
    expect(RoutingDecision { latency_ms: f64::NEG_INFINITY, ..decision_full() }, I, "latency_ms");
    expect(SupportTicket { handle_minutes: Some(f64::NAN), ..ticket_resolved() }, I, "handle_minutes");
    expect(SupportTicket { cost_usd: Some(f64::INFINITY), ..ticket_resolved() }, I, "cost_usd");
    // Threshold.
    for t in [f64::NAN, -0.1, 1.5] {
        expect(RoutingDecision { threshold: Some(t), ..decision_full() }, I, "threshold");
    }
    // Turn.
    expect(RoutingDecision { turn: -1, ..decision_full() }, I, "turn");
    expect(Feedback { turn: Some(-2), ..feedback_csat() }, I, "turn");
    // Timestamps.
    expect(RoutingDecision { ts: -1, ..decision_full() }, I, "ts");
    expect(Feedback { ts: i64::MIN, ..feedback_csat() }, I, "ts");
    expect(SupportTicket { ts: -1, ..ticket_resolved() }, I, "ts");
    // Feedback scores.
    let csat = feedback_csat;
    for s in [0.0, 0.99, 5.01, f64::NAN, f64::INFINITY] {
        expect(Feedback { score: Some(s), ..csat() }, I, "score");
    }
    expect(Feedback { score: None, ..csat() }, I, "score");
    for s in [1.0, 3.5, 5.0] {
        check(Feedback { score: Some(s), ..csat() }).unwrap();
    }
    let review = feedback_review;
    for s in [0.5, 2.0, -1.0, f64::NAN] {
        expect(Feedback { score: Some(s), ..review() }, I, "score");
    }
    expect(Feedback { score: None, ..review() }, I, "score");
    for s in [0.0, 1.0] {
        check(Feedback { score: Some(s), ..review() }).unwrap();
    }
    // Thumbs ignore the score, except NaN / infinities.
    check(Feedback { score: Some(42.0), ..feedback_thumbs() }).unwrap();
    check(Feedback { score: Some(-3.0), kind: FeedbackKind::ThumbsUp, ..feedback_thumbs() }).unwrap();
    expect(Feedback { score: Some(f64::NAN), ..feedback_thumbs() }, I, "score");
}

#[test]
fn reject_future_timestamp() {
    let dec = decoder(Stream::Routing, WireFormat::Avro);
    let day = 86_400_000;
    let ev: Event = RoutingDecision { ts: T0 + day + 1, ..decision_full() }.into();
    let bytes = encode(&ev, WireFormat::Avro, 0);
    let e = dec.decode(Some(&bytes), Some(T0)).unwrap_err();
    assert_eq!(e.reason, RejectReason::FutureTimestamp);
    assert!(e.detail.contains("ts"), "{}", e.detail);
    // Exactly at the limit, in the past, or broker time unknown: accepted.
    let at: Event = RoutingDecision { ts: T0 + day, ..decision_full() }.into();
    dec.decode(Some(&encode(&at, WireFormat::Avro, 0)), Some(T0)).unwrap();
    dec.decode(Some(&bytes), None).unwrap();
    dec.decode(Some(&bytes), Some(T0 + day)).unwrap();
    // No overflow near the ends of the range (and the wall clock bounds it too).
    let far: Event = RoutingDecision { ts: i64::MAX, ..decision_full() }.into();
    assert_eq!(
        reason_of(dec.decode(Some(&encode(&far, WireFormat::Avro, 0)), Some(i64::MAX))),
        RejectReason::FutureTimestamp
    );
    assert_eq!(
        reason_of(dec.decode(Some(&encode(&far, WireFormat::Avro, 0)), Some(i64::MIN))),
        RejectReason::FutureTimestamp
    );
    // validate() directly with a custom window.
    assert_eq!(validate(&ev, Some(T0), 1).unwrap_err().reason, RejectReason::FutureTimestamp);
    assert!(validate(&ev, Some(T0 + day), 1).is_ok());
}

#[test]
fn every_reject_reason_is_produced() {
    use std::collections::HashSet;
    let mut seen = HashSet::new();
    let dec = decoder(Stream::Routing, WireFormat::Confluent);
    let good = encode(&decision_full().into(), WireFormat::Confluent, 7);
    let mut push = |r: Result<Event, Reject>| {
        seen.insert(reason_of(r));
    };
    push(dec.decode(None, None));
    push(Decoder::new(DecoderConfig { max_payload_bytes: 4, ..dec.config().clone() }).decode(Some(&good), None));
    push(dec.decode(Some(&good[..good.len() - 1]), None));
    push(dec.decode(Some(&encode(&decision_full().into(), WireFormat::Confluent, 8)), None));
    push(check(RoutingDecision { tier: "".into(), ..decision_full() }));
    push(check(RoutingDecision { confidence: 2.0, ..decision_full() }));
    push(check(RoutingDecision { cost_usd: -2.0, ..decision_full() }));
    push(check(RoutingDecision { turn: -2, ..decision_full() }));
    push(dec.decode(Some(&good), Some(0)));
    push(check(RoutingDecision { ts: 1, ..decision_full() }));
    push(check(RoutingDecision { tier: "a\u{0}".into(), ..decision_full() }));
    push(check(RoutingDecision { tier: "t".repeat(100_000), ..decision_full() }));
    push(check(RoutingDecision { cost_usd: 1e10, ..decision_full() }));
    // Only the pipeline produces store_rejected (a message the store refused).
    let all: HashSet<_> = RejectReason::ALL.into_iter().filter(|r| *r != RejectReason::StoreRejected).collect();
    assert_eq!(seen, all);
}

#[test]
fn valid_samples_pass_validation() {
    for ev in samples() {
        validate(&ev, BROKER, DecoderConfig::DEFAULT_MAX_FUTURE_MS).unwrap();
    }
}

// ---------------------------------------------------------------- property tests

proptest! {
    // 256 cases each by default; raise with PROPTEST_CASES=… for a longer soak.

    /// apache-avro encoding → hand decoding is the identity (including NaN / ±inf / -0.0).
    #[test]
    fn prop_avro_round_trip(ev in arb_event(false)) {
        let bytes = encode(&ev, WireFormat::Avro, 0);
        let got = decoder(ev.stream(), WireFormat::Avro).decode_only(Some(&bytes)).unwrap();
        prop_assert!(same(&got, &ev), "{:?} != {:?}", got, ev);
    }

    #[test]
    fn prop_confluent_round_trip(ev in arb_event(false), id in prop::sample::select(vec![7u32, 42])) {
        let bytes = encode(&ev, WireFormat::Confluent, id);
        let got = decoder(ev.stream(), WireFormat::Confluent).decode_only(Some(&bytes)).unwrap();
        prop_assert!(same(&got, &ev), "{:?} != {:?}", got, ev);
    }

    #[test]
    fn prop_json_round_trip(ev in arb_event(true)) {
        let bytes = encode(&ev, WireFormat::Json, 0);
        let got = decoder(ev.stream(), WireFormat::Json).decode_only(Some(&bytes)).unwrap();
        prop_assert!(same_json(&got, &ev), "{:?} != {:?}", got, ev);
    }

    /// Validation is a pure function of the event: same verdict whatever the wire format.
    #[test]
    fn prop_validation_independent_of_format(ev in arb_event(true), broker in prop::option::of(any::<i64>())) {
        let direct = validate(&ev, broker, DecoderConfig::DEFAULT_MAX_FUTURE_MS).map_err(|e| e.reason);
        for format in [WireFormat::Avro, WireFormat::Confluent, WireFormat::Json] {
            let bytes = encode(&ev, format, 7);
            let via = decoder(ev.stream(), format).decode(Some(&bytes), broker).map(|_| ()).map_err(|e| e.reason);
            prop_assert_eq!(via, direct);
        }
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn prop_random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        frame in any::<bool>(),
        broker in prop::option::of(any::<i64>()),
    ) {
        let mut payload = Vec::new();
        if frame {
            payload.extend_from_slice(&[0, 0, 0, 0, 7]);
        }
        payload.extend_from_slice(&bytes);
        for stream in all_streams() {
            for format in [WireFormat::Avro, WireFormat::Confluent, WireFormat::Json] {
                let _ = decoder(stream, format).decode(Some(&payload), broker);
            }
        }
    }

    /// Truncations and byte mutations of valid encodings never panic; whenever the hand decoder
    /// accepts a mutated datum, the apache-avro reader reads the same value from it.
    #[test]
    fn prop_mutations_never_panic(
        ev in arb_event(false),
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        for format in [WireFormat::Avro, WireFormat::Confluent, WireFormat::Json] {
            let mut bytes = encode(&ev, format, 7);
            for (i, b) in &muts {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            for stream in all_streams() {
                let r = decoder(stream, format).decode(Some(&bytes), Some(T0));
                if format == WireFormat::Avro {
                    // Differential check against the reference reader.
                    if let Ok(got) = decoder(stream, format).decode_only(Some(&bytes)) {
                        let mut rd = &bytes[..];
                        let v = apache_avro::from_avro_datum(schema(stream), &mut rd, None);
                        prop_assert!(v.is_ok(), "apache-avro refused what we accepted: {:?}", got);
                        prop_assert!(rd.is_empty(), "apache-avro left {} bytes", rd.len());
                        let v = v.unwrap();
                        prop_assert_eq!(format!("{:?}", v), format!("{:?}", to_avro_value(&got)));
                    }
                }
                let _ = r;
            }
        }
    }
}

/// Rough throughput check (run with `cargo test --release -- --ignored decode_throughput --nocapture`).
#[test]
#[ignore]
fn decode_throughput() {
    for (format, name) in [(WireFormat::Avro, "avro"), (WireFormat::Confluent, "confluent"), (WireFormat::Json, "json")]
    {
        for ev in [Event::from(decision_full()), Event::from(feedback_csat()), Event::from(ticket_resolved())] {
            let bytes = encode(&ev, format, 7);
            let dec = decoder(ev.stream(), format);
            let n = 1_000_000;
            let t = std::time::Instant::now();
            let mut ok = 0usize;
            for _ in 0..n {
                ok += usize::from(dec.decode(Some(std::hint::black_box(&bytes)), BROKER).is_ok());
            }
            let dt = t.elapsed();
            assert_eq!(ok, n);
            println!(
                "{name:9} {:?}: {} bytes, {:.0} ns/event, {:.2} M events/s",
                ev.stream(),
                bytes.len(),
                dt.as_nanos() as f64 / n as f64,
                n as f64 / dt.as_secs_f64() / 1e6
            );
        }
    }
}

/// Found by `prop_json_round_trip`: serde_json's default (non-`float_roundtrip`) parser reads this
/// shortest representation 2 ULP off. Harmless for metrics, but pinned here so a change of feature
/// flags shows up.
#[test]
fn json_float_parse_is_within_a_few_ulp() {
    let ev: Event = SupportTicket { cost_usd: Some(3.718_638_542_776_672_4e-124), ..ticket_resolved() }.into();
    let bytes = encode(&ev, WireFormat::Json, 0);
    let got = decoder(Stream::Tickets, WireFormat::Json).decode_only(Some(&bytes)).unwrap();
    assert!(same_json(&got, &ev), "{got:?} vs {ev:?}");
}

// ---------------------------------------------------------------- values the store cannot hold

#[test]
fn nul_characters_are_rejected_in_every_string() {
    let nul = "poison\u{0}pill".to_string();
    expect(
        Feedback { conversation_id: nul.clone(), ..feedback_thumbs() },
        RejectReason::NulCharacter,
        "conversation_id",
    );
    expect(RoutingDecision { tier: nul.clone(), ..decision_full() }, RejectReason::NulCharacter, "tier");
    expect(RoutingDecision { segment: Some(nul.clone()), ..decision_full() }, RejectReason::NulCharacter, "segment");
    expect(
        RoutingDecision { query_text: Some(nul.clone()), ..decision_full() },
        RejectReason::NulCharacter,
        "query_text",
    );
    expect(Feedback { source: Some(nul.clone()), ..feedback_thumbs() }, RejectReason::NulCharacter, "source");
    expect(SupportTicket { reason: Some(nul.clone()), ..ticket_resolved() }, RejectReason::NulCharacter, "reason");
    expect(SupportTicket { ticket_id: nul.clone(), ..ticket_resolved() }, RejectReason::NulCharacter, "ticket_id");
    // The detail never carries the value itself.
    let e = check(Feedback { conversation_id: nul, ..feedback_thumbs() }).unwrap_err();
    assert!(!e.detail.contains('\u{0}'), "{:?}", e.detail);
}

#[test]
fn strings_are_bounded_by_the_limits() {
    let limits = FieldLimits::default();
    let long_id = "x".repeat(limits.max_id_bytes + 1);
    expect(
        RoutingDecision { conversation_id: long_id.clone(), ..decision_full() },
        RejectReason::StringTooLong,
        "conversation_id",
    );
    expect(Feedback { event_id: long_id.clone(), ..feedback_thumbs() }, RejectReason::StringTooLong, "event_id");
    let at_limit = "x".repeat(limits.max_id_bytes);
    check(RoutingDecision { conversation_id: at_limit, ..decision_full() }).unwrap();
    let long_dim = "d".repeat(limits.max_dimension_bytes + 1);
    expect(RoutingDecision { model: long_dim.clone(), ..decision_full() }, RejectReason::StringTooLong, "model");
    expect(SupportTicket { channel: long_dim, ..ticket_resolved() }, RejectReason::StringTooLong, "channel");
    let text = "q".repeat(limits.max_text_bytes + 1);
    expect(RoutingDecision { query_text: Some(text), ..decision_full() }, RejectReason::StringTooLong, "query_text");
    // A configured limit applies.
    let mut cfg = DecoderConfig::new(Stream::Routing, WireFormat::Avro);
    cfg.limits.max_dimension_bytes = 10_000;
    let ev: Event = RoutingDecision { tier: "t".repeat(5_000), ..decision_full() }.into();
    Decoder::new(cfg).decode(Some(&encode(&ev, WireFormat::Avro, 0)), BROKER).unwrap();
}

#[test]
fn money_is_capped() {
    let cap = FieldLimits::DEFAULT_MAX_COST_USD;
    expect(RoutingDecision { cost_usd: 9.3e9, ..decision_full() }, RejectReason::ValueTooLarge, "cost_usd");
    expect(
        RoutingDecision { capable_cost_usd: Some(cap * 2.0), ..decision_full() },
        RejectReason::ValueTooLarge,
        "capable_cost_usd",
    );
    expect(SupportTicket { cost_usd: Some(1e12), ..ticket_resolved() }, RejectReason::ValueTooLarge, "cost_usd");
    expect(
        SupportTicket { handle_minutes: Some(1e9), ..ticket_resolved() },
        RejectReason::ValueTooLarge,
        "handle_minutes",
    );
    check(RoutingDecision { cost_usd: cap, ..decision_full() }).unwrap();
    // The cap keeps sums far from the nano-USD overflow: 100,000 capped amounts in one row fit.
    assert!(crate::metrics::nano_usd(cap).checked_mul(100_000).is_some());
}

#[test]
fn event_time_is_bounded_by_the_wall_clock_without_a_broker_time() {
    let now = T0 + 100 * 86_400_000;
    let limits = FieldLimits::default();
    let day = 86_400_000;
    let at = |ts: i64| -> Event { RoutingDecision { ts, ..decision_full() }.into() };
    // Year 9999 (the replay case: no broker timestamp).
    let far = validate_with(&at(253_402_300_799_000), None, day, &limits, now).unwrap_err();
    assert_eq!(far.reason, RejectReason::FutureTimestamp, "{}", far.detail);
    // Also when a producer-set broker time agrees with it.
    let e = validate_with(&at(253_402_300_799_000), Some(253_402_300_799_000), day, &limits, now).unwrap_err();
    assert_eq!(e.reason, RejectReason::FutureTimestamp);
    validate_with(&at(now + day), None, day, &limits, now).unwrap();
    assert_eq!(
        validate_with(&at(now + day + 1), None, day, &limits, now).unwrap_err().reason,
        RejectReason::FutureTimestamp
    );
    // Far past.
    assert_eq!(
        validate_with(&at(MIN_TS_MS - 1), None, day, &limits, now).unwrap_err().reason,
        RejectReason::PastTimestamp
    );
    validate_with(&at(MIN_TS_MS), None, day, &limits, now).unwrap();
    // No overflow at the ends of the range.
    assert_eq!(validate_with(&at(i64::MAX), None, i64::MAX, &limits, i64::MAX).map_err(|e| e.reason), Ok(()));
    assert_eq!(
        validate_with(&at(i64::MAX), None, day, &limits, now).unwrap_err().reason,
        RejectReason::FutureTimestamp
    );
    // Through the decoder, with the real clock.
    let dec = decoder(Stream::Routing, WireFormat::Json);
    let r = dec.decode(Some(&encode(&at(253_402_300_799_000), WireFormat::Json, 0)), None);
    assert_eq!(reason_of(r), RejectReason::FutureTimestamp);
}

/// Found by the `json` fuzz target (fuzz/): serde quotes an unknown enum symbol in its message, so
/// a NUL in the payload reached the reject detail, which the dead-letter insert stores as text and
/// Postgres refuses; and a long symbol made a detail as long as the payload.
#[test]
fn reject_detail_has_no_nul_and_is_bounded() {
    let dec = decoder(Stream::Feedback, WireFormat::Json);
    let e = dec
        .decode(Some(br#"{"event_id":"e","conversation_id":"c","ts":5,"kind":"T\u0000HUMBS_UP"}"#), None)
        .unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(!e.detail.contains('\0'), "{:?}", e.detail);
    assert!(e.detail.contains(r"unknown variant `T\0HUMBS_UP`"), "{}", e.detail);
    let long = format!(r#"{{"event_id":"e","conversation_id":"c","ts":5,"kind":"{}"}}"#, "é".repeat(100_000));
    let e = dec.decode(Some(long.as_bytes()), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert!(e.detail.len() <= Reject::MAX_DETAIL_BYTES, "{} bytes", e.detail.len());
    assert!(e.detail.starts_with("json: unknown variant `éé") && e.detail.ends_with("é…"), "{}", e.detail);
}

/// Found by the `replay_jsonl` fuzz target: serde's derived structs also read a JSON array of the
/// field values, so `[…]` decoded as an event while the replay merge, which reads `ts` by name,
/// sorted that line as unreadable (first).
#[test]
fn json_array_of_field_values_is_rejected() {
    let dec = decoder(Stream::Routing, WireFormat::Json);
    let arr = br#" ["e","c",0,5,null,null,"PRE_ROUTE","v1",null,0.5,null,"cheap","m",false,1.0,1,1,0.1,null]"#;
    let e = dec.decode(Some(arr), None).unwrap_err();
    assert_eq!(e.reason, RejectReason::Decode);
    assert_eq!(e.detail, "json: expected a JSON object");
    let obj = encode(&decision_min().into(), WireFormat::Json, 0);
    let mut padded = b" \r\n\t".to_vec();
    padded.extend_from_slice(&obj);
    assert!(dec.decode(Some(&padded), None).is_ok());
}
