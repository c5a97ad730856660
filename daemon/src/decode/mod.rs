//! Wire decoding and validation of the three event streams (docs/contract.md#events).
//!
//! * [`WireFormat::Avro`]: a bare Avro binary datum written with the committed schema; decoded by
//!   the hand-written decoder in [`avro`] straight into the structs (no per-call schema work).
//! * [`WireFormat::Confluent`]: byte 0 = 0, bytes 1–4 = big-endian schema registry id, then the
//!   Avro datum. Only the ids in [`DecoderConfig::confluent_schema_ids`] are accepted.
//! * [`WireFormat::Json`]: a plain JSON object with the schema's field names (see [`crate::event`]).
//!
//! [`Decoder::decode`] never panics on any input and turns every problem into a [`Reject`] whose
//! [`RejectReason`] is the `reason` label of `tierwatch_events_rejected_total`.

mod avro;
mod encode;
mod json;
mod validate;

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Stream};

pub(crate) use avro::decode_prefix as avro_datum_prefix;
pub use encode::{encode, to_avro_value, try_encode};
pub use validate::{now_ms, validate, validate_with, FieldLimits, MAX_HANDLE_MINUTES, MIN_TS_MS};

/// How a topic's payloads are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Bare Avro binary datum with the local (committed) schema (the default).
    #[default]
    Avro,
    /// Confluent framing: magic byte 0, 4-byte big-endian schema id, Avro datum.
    Confluent,
    /// Plain JSON object with the same field names.
    Json,
}

impl WireFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            WireFormat::Avro => "avro",
            WireFormat::Confluent => "confluent",
            WireFormat::Json => "json",
        }
    }
}

/// Why an event was rejected; `as_str()` is the metric / dead-letter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    EmptyPayload,
    PayloadTooLarge,
    Decode,
    UnknownSchemaId,
    EmptyField,
    ConfidenceOutOfRange,
    NegativeValue,
    InvalidValue,
    FutureTimestamp,
    /// `ts` before the earliest accepted event time.
    PastTimestamp,
    /// A string holds a NUL character.
    NulCharacter,
    /// A string is longer than its `[limits]` bound.
    StringTooLong,
    /// A money amount (or handle minutes) above its bound.
    ValueTooLarge,
    /// Passed validation but the store refused it (found by bisecting a refused batch).
    StoreRejected,
}

impl RejectReason {
    pub const ALL: [RejectReason; 14] = [
        RejectReason::EmptyPayload,
        RejectReason::PayloadTooLarge,
        RejectReason::Decode,
        RejectReason::UnknownSchemaId,
        RejectReason::EmptyField,
        RejectReason::ConfidenceOutOfRange,
        RejectReason::NegativeValue,
        RejectReason::InvalidValue,
        RejectReason::FutureTimestamp,
        RejectReason::PastTimestamp,
        RejectReason::NulCharacter,
        RejectReason::StringTooLong,
        RejectReason::ValueTooLarge,
        RejectReason::StoreRejected,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::EmptyPayload => "empty_payload",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::Decode => "decode_error",
            RejectReason::UnknownSchemaId => "unknown_schema_id",
            RejectReason::EmptyField => "empty_field",
            RejectReason::ConfidenceOutOfRange => "confidence_out_of_range",
            RejectReason::NegativeValue => "negative_value",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::PastTimestamp => "past_timestamp",
            RejectReason::NulCharacter => "nul_character",
            RejectReason::StringTooLong => "string_too_long",
            RejectReason::ValueTooLarge => "value_too_large",
            RejectReason::StoreRejected => "store_rejected",
        }
    }
}

/// A rejected payload: the reason label plus a human-readable detail (names the field).
///
/// The detail is stored as text with the dead letter, so [`Reject::new`] makes it storable: serde
/// quotes input values in its messages (an unknown enum symbol, a string of the wrong type), which
/// may hold NUL, refused by a Postgres text column, and be as long as the payload.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason:?}: {detail}")]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    /// Longest detail kept, in bytes; a longer one is cut at a character boundary and ends in `…`.
    pub const MAX_DETAIL_BYTES: usize = 1024;

    /// A reject with `detail` made storable: NUL written as `\0`, cut to [`Self::MAX_DETAIL_BYTES`].
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if detail.contains('\0') {
            detail = detail.replace('\0', "\\0");
        }
        if detail.len() > Self::MAX_DETAIL_BYTES {
            let mut cut = Self::MAX_DETAIL_BYTES - '…'.len_utf8();
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Reject { reason, detail }
    }
}

/// Per-topic decoder settings.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Which record type the topic carries.
    pub stream: Stream,
    pub format: WireFormat,
    /// Accepted schema registry ids (Confluent format only).
    pub confluent_schema_ids: Vec<u32>,
    /// Larger payloads are rejected with [`RejectReason::PayloadTooLarge`] before decoding.
    pub max_payload_bytes: usize,
    /// Maximum allowed lead of the event time over the broker timestamp and over the wall clock
    /// (default 1 day).
    pub max_future_ms: i64,
    /// String lengths and money bounds.
    pub limits: FieldLimits,
}

impl DecoderConfig {
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;
    pub const DEFAULT_MAX_FUTURE_MS: i64 = 86_400_000;

    /// Config with the defaults: no Confluent ids, 1 MiB payload limit, 1 day future tolerance.
    pub fn new(stream: Stream, format: WireFormat) -> Self {
        DecoderConfig {
            stream,
            format,
            confluent_schema_ids: Vec::new(),
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            max_future_ms: Self::DEFAULT_MAX_FUTURE_MS,
            limits: FieldLimits::default(),
        }
    }
}

/// Decoder for one topic. Cheap to call from the hot path; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Decoder {
    cfg: DecoderConfig,
}

impl Decoder {
    pub fn new(cfg: DecoderConfig) -> Self {
        Decoder { cfg }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Decode + validate one Kafka payload. `broker_ts_ms` = the Kafka message timestamp when known.
    pub fn decode(&self, payload: Option<&[u8]>, broker_ts_ms: Option<i64>) -> Result<Event, Reject> {
        let ev = self.decode_only(payload)?;
        validate_with(&ev, broker_ts_ms, self.cfg.max_future_ms, &self.cfg.limits, now_ms())?;
        Ok(ev)
    }

    /// Decode without validation (size and framing checks still apply).
    pub fn decode_only(&self, payload: Option<&[u8]>) -> Result<Event, Reject> {
        let bytes = match payload {
            Some(b) if !b.is_empty() => b,
            _ => return Err(Reject::new(RejectReason::EmptyPayload, "empty or null payload")),
        };
        if bytes.len() > self.cfg.max_payload_bytes {
            return Err(Reject::new(
                RejectReason::PayloadTooLarge,
                format!("payload is {} bytes, limit {}", bytes.len(), self.cfg.max_payload_bytes),
            ));
        }
        match self.cfg.format {
            WireFormat::Avro => avro::decode_datum(self.cfg.stream, bytes),
            WireFormat::Confluent => {
                if bytes.len() < 5 {
                    return Err(Reject::new(
                        RejectReason::Decode,
                        format!("confluent framing: payload is {} bytes, need at least 5", bytes.len()),
                    ));
                }
                if bytes[0] != 0 {
                    return Err(Reject::new(
                        RejectReason::Decode,
                        format!("confluent framing: magic byte is {:#04x}, expected 0x00", bytes[0]),
                    ));
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                if !self.cfg.confluent_schema_ids.contains(&id) {
                    return Err(Reject::new(
                        RejectReason::UnknownSchemaId,
                        format!("schema id {id} is not one of the configured ids {:?}", self.cfg.confluent_schema_ids),
                    ));
                }
                avro::decode_datum(self.cfg.stream, &bytes[5..])
            }
            WireFormat::Json => json::decode(self.cfg.stream, bytes),
        }
    }
}

const ROUTING_DECISION_AVSC: &str = include_str!("../../../schemas/routing_decision.avsc");
const FEEDBACK_AVSC: &str = include_str!("../../../schemas/feedback.avsc");
const SUPPORT_TICKET_AVSC: &str = include_str!("../../../schemas/support_ticket.avsc");

/// The committed `.avsc` text of a stream's schema.
pub fn schema_text(stream: Stream) -> &'static str {
    match stream {
        Stream::Routing => ROUTING_DECISION_AVSC,
        Stream::Feedback => FEEDBACK_AVSC,
        Stream::Tickets => SUPPORT_TICKET_AVSC,
    }
}

/// The committed schema of a stream, parsed once.
///
/// The schema texts are compiled in and covered by tests, so parsing cannot fail at run time.
pub fn schema(stream: Stream) -> &'static apache_avro::Schema {
    static ROUTING: OnceLock<apache_avro::Schema> = OnceLock::new();
    static FEEDBACK: OnceLock<apache_avro::Schema> = OnceLock::new();
    static TICKETS: OnceLock<apache_avro::Schema> = OnceLock::new();
    let cell = match stream {
        Stream::Routing => &ROUTING,
        Stream::Feedback => &FEEDBACK,
        Stream::Tickets => &TICKETS,
    };
    cell.get_or_init(|| {
        #[allow(clippy::expect_used)]
        apache_avro::Schema::parse_str(schema_text(stream))
            .expect("committed .avsc schema must parse (covered by tests)")
    })
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
