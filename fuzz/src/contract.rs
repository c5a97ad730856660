//! What every decoder promises, checked independently of its own code.
//!
//! * A reject carries one of the known reasons and a detail that can be stored as dead-letter text
//!   (not empty, no NUL, bounded).
//! * An event that passes validation satisfies the v1 constraints, restated here field by field.
//! * Decoding without and with validation agree, and a broker timestamp only adds rejects.
//! * An accepted event encodes and decodes back to itself in Avro and Confluent framing, and in
//!   JSON once validated (JSON cannot carry NaN or infinities).

use crate::decode::{try_encode, validate, Decoder, DecoderConfig, Reject, RejectReason, WireFormat};
use crate::event::{Event, FeedbackKind, Stream};

/// The broker timestamp the targets validate against (2026-01-01T00:00:00Z).
pub const BROKER_TS: i64 = 1_767_225_600_000;
/// Schema registry ids the Confluent target accepts.
pub const CONFLUENT_IDS: [u32; 2] = [1, 0x0102_0304];
/// Longest reject detail the dead-letter table should have to hold.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// The stream each selector byte picks (the first byte of every target's input, modulo 3).
pub fn stream_of(selector: u8) -> Stream {
    Stream::ALL[usize::from(selector % 3)]
}

/// A decoder with the defaults, for `stream` in `format`, accepting [`CONFLUENT_IDS`].
pub fn decoder(stream: Stream, format: WireFormat) -> Decoder {
    let mut cfg = DecoderConfig::new(stream, format);
    cfg.confluent_schema_ids = CONFLUENT_IDS.to_vec();
    Decoder::new(cfg)
}

/// The reject is one the metrics and dead letters can carry.
pub fn check_reject(r: &Reject) {
    assert!(RejectReason::ALL.contains(&r.reason), "reason {:?} is not in RejectReason::ALL", r.reason);
    assert!(!r.reason.as_str().is_empty());
    assert!(!r.detail.is_empty(), "reject {:?} has no detail", r.reason);
    assert!(!r.detail.contains('\0'), "reject detail contains NUL, which a Postgres text column refuses: {r:?}");
    assert!(
        r.detail.len() <= MAX_DETAIL_BYTES,
        "reject detail is {} bytes (limit {MAX_DETAIL_BYTES}): {:?}…",
        r.detail.len(),
        r.detail.chars().take(200).collect::<String>()
    );
}

fn non_empty(field: &str, v: &str) {
    assert!(!v.is_empty(), "validated event has an empty {field}");
}

fn amount(field: &str, v: f64) {
    assert!(v.is_finite() && v >= 0.0, "validated event has {field} = {v}");
}

/// The v1 constraints of a validated event, restated independently of `validate.rs`.
pub fn check_valid(ev: &Event, broker_ts: Option<i64>) {
    let ts = ev.ts();
    assert!(ts >= 0, "validated event has ts {ts}");
    if let Some(b) = broker_ts {
        assert!(
            ts <= b.saturating_add(DecoderConfig::DEFAULT_MAX_FUTURE_MS),
            "validated event has ts {ts} past broker {b}"
        );
    }
    match ev {
        Event::Decision(d) => {
            non_empty("event_id", &d.event_id);
            non_empty("conversation_id", &d.conversation_id);
            non_empty("classifier_version", &d.classifier_version);
            non_empty("tier", &d.tier);
            non_empty("model", &d.model);
            assert!(d.turn >= 0, "turn {}", d.turn);
            assert!((0.0..=1.0).contains(&d.confidence), "confidence {}", d.confidence);
            if let Some(t) = d.threshold {
                assert!((0.0..=1.0).contains(&t), "threshold {t}");
            }
            amount("latency_ms", d.latency_ms);
            amount("cost_usd", d.cost_usd);
            if let Some(c) = d.capable_cost_usd {
                amount("capable_cost_usd", c);
            }
            assert!(d.input_tokens >= 0 && d.output_tokens >= 0, "tokens {} {}", d.input_tokens, d.output_tokens);
        }
        Event::Feedback(f) => {
            non_empty("event_id", &f.event_id);
            non_empty("conversation_id", &f.conversation_id);
            if let Some(t) = f.turn {
                assert!(t >= 0, "turn {t}");
            }
            if let Some(s) = f.score {
                assert!(s.is_finite(), "score {s}");
            }
            match f.kind {
                FeedbackKind::Csat => assert!(f.score.is_some_and(|s| (1.0..=5.0).contains(&s)), "CSAT {:?}", f.score),
                FeedbackKind::HumanReview => {
                    assert!(f.score.is_some_and(|s| s == 0.0 || s == 1.0), "HUMAN_REVIEW {:?}", f.score)
                }
                FeedbackKind::ThumbsUp | FeedbackKind::ThumbsDown => {}
            }
        }
        Event::Ticket(t) => {
            non_empty("event_id", &t.event_id);
            non_empty("ticket_id", &t.ticket_id);
            if let Some(c) = &t.conversation_id {
                non_empty("conversation_id", c);
            }
            non_empty("cost_center", &t.cost_center);
            non_empty("channel", &t.channel);
            if let Some(m) = t.handle_minutes {
                amount("handle_minutes", m);
            }
            if let Some(c) = t.cost_usd {
                amount("cost_usd", c);
            }
        }
    }
}

/// Bytes that identify an event exactly, NaN payloads and signed zeros included.
pub fn fingerprint(ev: &Event) -> Vec<u8> {
    match try_encode(ev, WireFormat::Avro, 0) {
        Ok(b) => b,
        Err(e) => panic!("a decoded event does not encode with the committed schema: {e:#}"),
    }
}

/// A decoded event (from any wire format) keeps every promise.
pub fn check_decoded(ev: &Event, stream: Stream, dec: &Decoder, payload: &[u8]) {
    assert_eq!(ev.stream(), stream, "the {} decoder returned a {:?}", stream.as_str(), ev.stream());
    let plain = validate(ev, None, DecoderConfig::DEFAULT_MAX_FUTURE_MS);
    let brokered = validate(ev, Some(BROKER_TS), DecoderConfig::DEFAULT_MAX_FUTURE_MS);
    match &plain {
        Ok(()) => check_valid(ev, None),
        Err(r) => {
            check_reject(r);
            assert_eq!(
                brokered.as_ref().err().map(|r| r.reason),
                Some(r.reason),
                "a broker timestamp changed an earlier reject"
            );
        }
    }
    match &brokered {
        Ok(()) => check_valid(ev, Some(BROKER_TS)),
        Err(r) => check_reject(r),
    }
    // decode = decode_only + validate.
    match (dec.decode(Some(payload), Some(BROKER_TS)), &brokered) {
        (Ok(again), Ok(())) => assert_eq!(fingerprint(&again), fingerprint(ev)),
        (Err(a), Err(b)) => assert_eq!(a, *b),
        (a, b) => panic!("decode gave {a:?} but decode_only + validate gave {b:?}"),
    }
    round_trip(ev, plain.is_ok());
}

/// `ev` encodes and decodes back to itself (JSON only when `validated`).
pub fn round_trip(ev: &Event, validated: bool) {
    let stream = ev.stream();
    let formats: &[WireFormat] = if validated {
        &[WireFormat::Avro, WireFormat::Confluent, WireFormat::Json]
    } else {
        &[WireFormat::Avro, WireFormat::Confluent]
    };
    for &format in formats {
        let bytes = match try_encode(ev, format, CONFLUENT_IDS[0]) {
            Ok(b) => b,
            Err(e) => panic!("{} encoding of a decoded event failed: {e:#}", format.as_str()),
        };
        // The round trip is about the codec, not the size limit: an escaped JSON string may be
        // longer than the Avro input it came from.
        let mut cfg = decoder(stream, format).config().clone();
        cfg.max_payload_bytes = usize::MAX;
        match Decoder::new(cfg).decode_only(Some(&bytes)) {
            Ok(back) => {
                assert_eq!(fingerprint(&back), fingerprint(ev), "{} round trip changed the event", format.as_str());
                if validated {
                    assert_eq!(&back, ev, "{} round trip changed the event", format.as_str());
                }
            }
            Err(r) => panic!("{} round trip rejected its own encoding: {r:?}", format.as_str()),
        }
    }
}
