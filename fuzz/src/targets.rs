//! The fuzz targets. Each takes the fuzzer's input: byte 0 picks the stream (modulo 3: routing,
//! feedback, tickets), the rest is the payload or file. Each panics on a broken contract.

use std::io::Cursor;

use crate::contract::{check_decoded, check_reject, decoder, fingerprint, stream_of, CONFLUENT_IDS};
use crate::decode::{schema, Reject, RejectReason, WireFormat};
use crate::records::{read_records, FileFormat};

/// Records read from one fuzzed file at most (a file of tiny records could otherwise hold
/// millions; the readers' per-record work is what is fuzzed).
const MAX_RECORDS: usize = 10_000;

fn split(data: &[u8]) -> Option<(crate::event::Stream, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    Some((stream_of(selector), rest))
}

/// A reject of a format-level decoder (no framing): empty payload or a decode error.
fn check_format_reject(r: &Reject, payload: &[u8]) {
    check_reject(r);
    let expected = if payload.is_empty() { RejectReason::EmptyPayload } else { RejectReason::Decode };
    assert_eq!(r.reason, expected, "{r:?}");
}

/// Bare Avro datum: the hand-written decoder. What it accepts, the reference implementation
/// (apache-avro, with the committed schema) accepts too, to the same record.
pub fn avro_datum(data: &[u8]) {
    let Some((stream, payload)) = split(data) else { return };
    let dec = decoder(stream, WireFormat::Avro);
    match dec.decode_only(Some(payload)) {
        Ok(ev) => {
            let mut rest = payload;
            let reference = match apache_avro::from_avro_datum(schema(stream), &mut rest, None) {
                Ok(v) => v,
                Err(e) => panic!("the hand-written decoder accepted a datum apache-avro refuses: {e}"),
            };
            assert!(
                rest.is_empty(),
                "apache-avro left {} trailing bytes the hand-written decoder consumed",
                rest.len()
            );
            let reference = match apache_avro::to_avro_datum(schema(stream), reference) {
                Ok(b) => b,
                Err(e) => panic!("apache-avro cannot re-encode its own decoding: {e}"),
            };
            assert_eq!(fingerprint(&ev), reference, "the hand-written decoder and apache-avro read different records");
            check_decoded(&ev, stream, &dec, payload);
        }
        Err(r) => check_format_reject(&r, payload),
    }
}

/// Confluent framing: magic byte, 4-byte schema id, Avro datum. Framing errors and unknown ids
/// are told apart, and a well-framed payload decodes exactly as its bare datum does.
pub fn confluent(data: &[u8]) {
    let Some((stream, payload)) = split(data) else { return };
    let dec = decoder(stream, WireFormat::Confluent);
    let bare = decoder(stream, WireFormat::Avro);
    let framed = payload.len() >= 5 && payload[0] == 0;
    let id = framed.then(|| u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]));
    let known = id.is_some_and(|id| CONFLUENT_IDS.contains(&id));
    match dec.decode_only(Some(payload)) {
        Ok(ev) => {
            assert!(known, "accepted a payload with framing {:?}", payload.get(..5));
            match bare.decode_only(Some(&payload[5..])) {
                Ok(inner) => assert_eq!(fingerprint(&inner), fingerprint(&ev)),
                Err(r) => panic!("accepted framed, but its datum alone is rejected: {r:?}"),
            }
            check_decoded(&ev, stream, &dec, payload);
        }
        Err(r) => {
            check_reject(&r);
            if payload.is_empty() {
                assert_eq!(r.reason, RejectReason::EmptyPayload);
            } else if !framed {
                assert_eq!(r.reason, RejectReason::Decode, "{r:?}");
            } else if !known {
                assert_eq!(r.reason, RejectReason::UnknownSchemaId, "{r:?}");
            } else {
                let inner = bare.decode_only(Some(&payload[5..]));
                let expected =
                    if payload.len() == 5 { Some(RejectReason::EmptyPayload) } else { inner.err().map(|e| e.reason) };
                // An empty datum after a good frame is a decode error of the framed payload.
                let expected = expected.map(|e| if e == RejectReason::EmptyPayload { RejectReason::Decode } else { e });
                assert_eq!(Some(r.reason), expected, "{r:?}");
            }
        }
    }
}

/// Plain JSON object.
pub fn json(data: &[u8]) {
    let Some((stream, payload)) = split(data) else { return };
    let dec = decoder(stream, WireFormat::Json);
    match dec.decode_only(Some(payload)) {
        Ok(ev) => {
            let first = payload.iter().find(|b| !b.is_ascii_whitespace());
            assert_eq!(first, Some(&b'{'), "accepted JSON that is not an object");
            check_decoded(&ev, stream, &dec, payload)
        }
        Err(r) => check_format_reject(&r, payload),
    }
}

/// Replay file in JSON Lines: one record per non-blank line (CRLF accepted), in order, the line
/// itself as the payload; a record's merge time is its event's `ts` whenever the line decodes.
pub fn replay_jsonl(data: &[u8]) {
    let Some((stream, file)) = split(data) else { return };
    let records = match read_records(FileFormat::JsonLines, stream, Cursor::new(file.to_vec())) {
        Ok(r) => r,
        Err(e) => panic!("opening JSON Lines cannot fail: {e:#}"),
    };
    let records: Vec<(i64, Vec<u8>)> = records.take(MAX_RECORDS + 1).collect();
    let lines: Vec<&[u8]> = file
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .take(MAX_RECORDS + 1)
        .collect();
    assert_eq!(records.len(), lines.len(), "records are not the non-blank lines");
    let dec = decoder(stream, WireFormat::Json);
    for ((ts, payload), line) in records.iter().zip(&lines) {
        assert_eq!(payload.as_slice(), *line, "a record is not its line");
        match dec.decode_only(Some(payload)) {
            Ok(ev) => {
                assert_eq!(ev.ts(), *ts, "the merge time of a record is not its event's ts");
                check_decoded(&ev, stream, &dec, payload);
            }
            Err(r) => check_reject(&r),
        }
    }
}

/// Replay file as an Avro object container. A header that is not a container of (a schema that
/// resolves to) the stream's schema fails to open with an error; every record the reader yields
/// is either an empty payload (dead-lettered) or a datum the hand-written decoder reads, with
/// the merge time its `ts`.
pub fn replay_avro(data: &[u8]) {
    let Some((stream, file)) = split(data) else { return };
    let records = match read_records(FileFormat::AvroContainer, stream, Cursor::new(file.to_vec())) {
        Ok(r) => r,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty());
            return;
        }
    };
    let dec = decoder(stream, WireFormat::Avro);
    for (ts, payload) in records.take(MAX_RECORDS) {
        if payload.is_empty() {
            assert_eq!(ts, i64::MIN, "an unreadable record must sort first");
            continue;
        }
        match dec.decode_only(Some(&payload)) {
            Ok(ev) => {
                assert_eq!(ev.ts(), ts, "the merge time of a record is not its event's ts");
                check_decoded(&ev, stream, &dec, &payload);
            }
            Err(r) => panic!("the container reader yielded a datum the decoder rejects: {r:?}"),
        }
    }
}

/// A fuzz target: the fuzzer's input in, a panic on a broken contract.
pub type Target = fn(&[u8]);

/// Every target by name (the seed generator uses this list).
pub const ALL: [(&str, Target); 5] = [
    ("avro_datum", avro_datum),
    ("confluent", confluent),
    ("json", json),
    ("replay_jsonl", replay_jsonl),
    ("replay_avro", replay_avro),
];
