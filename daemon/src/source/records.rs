//! Record readers of the replay files: JSON Lines and Avro object container files, read from any
//! byte stream.
//!
//! Each record comes out as (event time for merging, payload for the decoder). A record that
//! cannot be read is still yielded (the raw line, or an empty payload) so that a record's offset
//! stays its index in the file; the decoder then dead-letters it.
//!
//! This module depends only on [`crate::decode`] and [`crate::event`]: the fuzz crate (`fuzz/`)
//! compiles it, with those two, on its own, so the readers are fuzzed without building the
//! daemon's other dependencies. Keep it that way.

use std::io::{BufRead, BufReader, Read};
use std::panic::AssertUnwindSafe;

use anyhow::Context;

use crate::decode::{schema, WireFormat};
use crate::event::Stream;

/// Container format of a replay file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    JsonLines,
    AvroContainer,
}

impl FileFormat {
    /// Avro object container files start with `Obj\x01`; anything else is read as JSON Lines.
    pub fn from_magic(head: &[u8]) -> FileFormat {
        if head.starts_with(b"Obj\x01") {
            FileFormat::AvroContainer
        } else {
            FileFormat::JsonLines
        }
    }

    /// The wire format the decoder must use for records of this container.
    pub fn wire(self) -> WireFormat {
        match self {
            FileFormat::JsonLines => WireFormat::Json,
            FileFormat::AvroContainer => WireFormat::Avro,
        }
    }
}

/// Largest single allocation the Avro container reader may make for one block or value. A
/// container block holds many records (writers flush at 16–64 KiB by default); 64 MiB is far above
/// any sane block.
pub const MAX_AVRO_ALLOCATION_BYTES: usize = 64 << 20;

/// The records of one file, in file order: (event time, payload). The event time is `i64::MIN`
/// when the record has none that can be read, and always with an empty payload (it sorts first
/// and is dead-lettered).
pub type Records = Box<dyn Iterator<Item = (i64, Vec<u8>)> + Send>;

/// Read `reader` as a `format` file of `stream` records.
///
/// JSON Lines: one record per line that is not blank (`\r\n` endings accepted); the payload is
/// the line. Avro container: each record resolved to the committed schema of `stream` and written
/// back as a bare datum; a record that does not resolve gives an empty payload. Fails only when an
/// Avro container's header cannot be read or its schema does not resolve to ours.
pub fn read_records<R: Read + Send + 'static>(
    format: FileFormat,
    stream: Stream,
    reader: R,
) -> anyhow::Result<Records> {
    Ok(match format {
        FileFormat::JsonLines => {
            Box::new(BufReader::new(reader).split(b'\n').filter_map(|line| {
                // An unreadable line is still a record (it will be dead-lettered), so offsets
                // stay aligned with line numbers.
                let mut line = line.unwrap_or_default();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                Some((json_ts(&line), line))
            }))
        }
        FileFormat::AvroContainer => {
            // apache-avro allocates whatever a length in the file claims, up to this (process-wide,
            // set once; its default is 512 MiB): a corrupt 300-byte file made it take ~270 MB.
            apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION_BYTES);
            let ours = schema(stream);
            let what = || format!("not an Avro container of the {} schema", stream.as_str());
            // apache-avro 0.21 panics (an `unwrap` in `Name::parse`) on a writer schema in the
            // header whose record name is not a valid Avro name: a corrupt file must be an error.
            let reader = std::panic::catch_unwind(AssertUnwindSafe(|| {
                apache_avro::Reader::with_schema(ours, BufReader::new(reader))
            }))
            .map_err(|_| anyhow::anyhow!("the header's writer schema is invalid (the Avro reader panicked)"))
            .with_context(what)?
            .with_context(what)?;
            Box::new(reader.map(move |value| {
                let datum = value.and_then(|v| {
                    let ts = avro_ts(&v);
                    apache_avro::to_avro_datum(ours, v).map(|d| (ts, d))
                });
                // A record that does not resolve, or whose value does not fit our schema (apache-avro
                // yields a record in the writer's shape when a field was renamed): an empty
                // payload, dead-lettered downstream.
                datum.unwrap_or((i64::MIN, Vec::new()))
            }))
        }
    })
}

fn json_ts(line: &[u8]) -> i64 {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: i64,
    }
    serde_json::from_slice::<Ts>(line).map(|t| t.ts).unwrap_or(i64::MIN)
}

fn avro_ts(v: &apache_avro::types::Value) -> i64 {
    use apache_avro::types::Value;
    if let Value::Record(fields) = v {
        for (name, value) in fields {
            if name == "ts" {
                return match value {
                    Value::Long(t) | Value::TimestampMillis(t) => *t,
                    _ => i64::MIN,
                };
            }
        }
    }
    i64::MIN
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::decode::to_avro_value;
    use crate::testkit::feedback_up;

    fn container() -> Vec<u8> {
        let mut w = apache_avro::Writer::new(schema(Stream::Feedback), Vec::new());
        w.append(to_avro_value(&feedback_up().into())).unwrap();
        w.into_inner().unwrap()
    }

    /// `file` with the first `from` replaced by `to` (same length: the header stays well-formed).
    fn patched(file: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = file.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        let mut out = file.to_vec();
        out[at..at + to.len()].copy_from_slice(to.as_bytes());
        out
    }

    fn read(file: Vec<u8>) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
        Ok(read_records(FileFormat::AvroContainer, Stream::Feedback, Cursor::new(file))?.collect())
    }

    #[test]
    fn container_records_are_bare_datums_with_their_ts() {
        let recs = read(container()).unwrap();
        let ev = feedback_up();
        assert_eq!(recs, vec![(ev.ts, crate::decode::encode(&ev.into(), WireFormat::Avro, 0))]);
    }

    /// Found by the `replay_avro` fuzz target: a header whose writer schema has a record name that
    /// is not a valid Avro name made apache-avro 0.21 panic inside `Reader::with_schema`.
    #[test]
    fn invalid_writer_schema_name_is_an_error_not_a_panic() {
        let bad = patched(&container(), r#""name":"Feedback""#, r#""name":"Feedbac[""#);
        let err = read(bad).expect_err("an invalid header must not open");
        let msg = format!("{err:#}");
        assert!(msg.contains("not an Avro container of the feedback schema"), "{msg}");
    }

    /// Found by the `replay_avro` fuzz target: with a writer schema that renames one of our fields,
    /// apache-avro yields the record in the writer's shape, which does not encode with our schema;
    /// the record came out as an empty payload with its real `ts` instead of an unreadable record
    /// (first in merge order).
    #[test]
    fn record_with_a_renamed_field_is_unreadable() {
        let bad = patched(&container(), r#""name":"conversation_id""#, r#""name":"convetxfkggi_id""#);
        assert_eq!(read(bad).unwrap(), vec![(i64::MIN, Vec::new())]);
    }
}
