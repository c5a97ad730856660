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

use crate::decode::{avro_datum_prefix, schema, WireFormat};
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
/// the line. Avro container: each record as a bare datum of the committed schema of `stream` —
/// taken from the block as it is when the container was written with exactly that schema and no
/// codec, else resolved to it by apache-avro and written back; a record that cannot be read gives
/// an empty payload. Fails only when an Avro container's header cannot be read or its schema does
/// not resolve to ours.
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
            let mut reader = BufReader::new(reader);
            let header = read_ocf_header(&mut reader)
                .with_context(|| format!("not an Avro container of the {} schema", stream.as_str()))?;
            if header.datums_are_ours(stream) {
                let datums =
                    OcfDatums { reader, stream, sync: header.sync, block: vec![], pos: 0, left: 0, broken: false };
                return Ok(Box::new(datums));
            }
            // Another writer schema (resolved to ours) or a codec: apache-avro reads it, from
            // the header on.
            resolved_records(stream, std::io::Cursor::new(header.bytes).chain(reader))?
        }
    })
}

/// A container apache-avro reads: another writer schema (resolved to ours) or a codec.
fn resolved_records<R: Read + Send + 'static>(stream: Stream, reader: R) -> anyhow::Result<Records> {
    // apache-avro allocates whatever a length in the file claims, up to this (process-wide,
    // set once; its default is 512 MiB): a corrupt 300-byte file made it take ~270 MB.
    apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION_BYTES);
    let ours = schema(stream);
    let what = || format!("not an Avro container of the {} schema", stream.as_str());
    // apache-avro 0.21 panics (an `unwrap` in `Name::parse`) on a writer schema in the
    // header whose record name is not a valid Avro name: a corrupt file must be an error.
    let reader =
        std::panic::catch_unwind(AssertUnwindSafe(|| apache_avro::Reader::with_schema(ours, BufReader::new(reader))))
            .map_err(|_| anyhow::anyhow!("the header's writer schema is invalid (the Avro reader panicked)"))
            .with_context(what)?
            .with_context(what)?;
    Ok(Box::new(reader.map(move |value| {
        let datum = value.and_then(|v| {
            let ts = avro_ts(&v);
            apache_avro::to_avro_datum(ours, v).map(|d| (ts, d))
        });
        // A record that does not resolve, or whose value does not fit our schema (apache-avro
        // yields a record in the writer's shape when a field was renamed): an empty
        // payload, dead-lettered downstream.
        datum.unwrap_or((i64::MIN, Vec::new()))
    })))
}

/// The part of an Avro object container header the fast path needs, and its bytes (for the
/// apache-avro reader when the fast path does not apply).
struct OcfHeader {
    bytes: Vec<u8>,
    schema: Option<Vec<u8>>,
    codec: Option<Vec<u8>>,
    sync: [u8; 16],
}

impl OcfHeader {
    /// Whether the blocks hold bare datums of exactly our schema: no codec (or `null`) and a
    /// writer schema whose canonical form is ours. Then each datum is passed on as it is in the
    /// file, cut out by the decoder itself, instead of being read into a `Value` and encoded again
    /// (what made reading containers most of the replay's decode time).
    fn datums_are_ours(&self, stream: Stream) -> bool {
        if !matches!(self.codec.as_deref(), None | Some(b"null")) {
            return false;
        }
        let Some(text) = self.schema.as_deref().and_then(|s| std::str::from_utf8(s).ok()) else { return false };
        // apache-avro 0.21 can panic on an invalid record name (see below).
        let parsed = std::panic::catch_unwind(|| apache_avro::Schema::parse_str(text).map(|s| s.canonical_form()));
        matches!(parsed, Ok(Ok(c)) if c == schema(stream).canonical_form())
    }
}

/// Largest header metadata value read (a schema is a few KiB).
const MAX_OCF_METADATA_BYTES: u64 = 1 << 20;

fn read_ocf_header<R: Read>(r: &mut R) -> anyhow::Result<OcfHeader> {
    let mut rec = Recording { inner: r, bytes: Vec::new() };
    let mut magic = [0u8; 4];
    rec.read_exact(&mut magic).context("reading the magic bytes")?;
    anyhow::ensure!(&magic == b"Obj\x01", "no Avro container magic bytes");
    let (mut schema, mut codec) = (None, None);
    loop {
        let count = read_long(&mut rec)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            read_long(&mut rec)?; // the block's size in bytes, not needed
        }
        for _ in 0..count.unsigned_abs() {
            let key = read_bytes(&mut rec, MAX_OCF_METADATA_BYTES)?;
            let value = read_bytes(&mut rec, MAX_OCF_METADATA_BYTES)?;
            match key.as_slice() {
                b"avro.schema" => schema = Some(value),
                b"avro.codec" => codec = Some(value),
                _ => {}
            }
        }
    }
    let mut sync = [0u8; 16];
    rec.read_exact(&mut sync).context("reading the sync marker")?;
    Ok(OcfHeader { bytes: rec.bytes, schema, codec, sync })
}

/// A reader that keeps what it read.
struct Recording<'a, R> {
    inner: &'a mut R,
    bytes: Vec<u8>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// An Avro `long` (zig-zag varint).
fn read_long<R: Read>(r: &mut R) -> anyhow::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).context("reading a length")?;
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    anyhow::bail!("a length longer than 10 bytes")
}

fn read_bytes<R: Read>(r: &mut R, max: u64) -> anyhow::Result<Vec<u8>> {
    let len = read_long(r)?;
    anyhow::ensure!((0..=max as i64).contains(&len), "a length of {len} bytes");
    let mut out = vec![0; len as usize];
    r.read_exact(&mut out).context("reading header metadata")?;
    Ok(out)
}

/// The datums of a container whose blocks hold our schema's bare datums, in file order. A datum
/// the decoder cannot read ends what can be cut out of its block: it and the rest of the block's
/// records come out as unreadable (empty payload), so offsets stay record indexes. A block that
/// cannot be read (truncated, a wrong sync marker, an absurd size) ends the file.
struct OcfDatums<R> {
    reader: BufReader<R>,
    stream: Stream,
    sync: [u8; 16],
    block: Vec<u8>,
    pos: usize,
    /// Records of the current block not yielded yet.
    left: u64,
    broken: bool,
}

impl<R: Read> OcfDatums<R> {
    /// Read the next block; false at the end of the file or on a block that cannot be read.
    fn next_block(&mut self) -> bool {
        let mut first = [0u8; 1];
        match self.reader.read(&mut first) {
            Ok(1) => {}
            _ => return false, // the end of the file (or an unreadable one)
        }
        let mut r = std::io::Cursor::new(first).chain(&mut self.reader);
        let (Ok(count), Ok(size)) = (read_long(&mut r), read_long(&mut r)) else { return false };
        if count < 0 || size < 0 || size as u64 > MAX_AVRO_ALLOCATION_BYTES as u64 || count > size.max(1) {
            return false;
        }
        self.block.resize(size as usize, 0);
        let mut sync = [0u8; 16];
        if r.read_exact(&mut self.block).is_err() || r.read_exact(&mut sync).is_err() || sync != self.sync {
            return false;
        }
        (self.pos, self.left, self.broken) = (0, count as u64, false);
        true
    }
}

impl<R: Read> Iterator for OcfDatums<R> {
    type Item = (i64, Vec<u8>);

    fn next(&mut self) -> Option<(i64, Vec<u8>)> {
        while self.left == 0 {
            if !self.next_block() {
                return None;
            }
        }
        self.left -= 1;
        if self.broken {
            return Some((i64::MIN, Vec::new()));
        }
        match avro_datum_prefix(self.stream, &self.block[self.pos..]) {
            Ok((event, len)) => {
                let datum = self.block[self.pos..self.pos + len].to_vec();
                self.pos += len;
                Some((event.ts(), datum))
            }
            Err(_) => {
                self.broken = true;
                Some((i64::MIN, Vec::new()))
            }
        }
    }
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

    /// A container of our schema in blocks of three records (the writer flushes a block on
    /// `flush`), with each feedback kind and optional field.
    fn blocks(n: usize) -> Vec<u8> {
        let mut w = apache_avro::Writer::new(schema(Stream::Feedback), Vec::new());
        for i in 0..n {
            let mut ev = feedback_up();
            ev.event_id = format!("f-{i}");
            ev.ts += i as i64 * 1000;
            ev.turn = (i % 2 == 0).then_some(i as i32);
            ev.score = (i % 3 == 0).then_some(4.0);
            ev.source = (i % 4 == 0).then(|| "survey".to_string());
            w.append(to_avro_value(&ev.into())).unwrap();
            if i % 3 == 2 {
                w.flush().unwrap();
            }
        }
        w.into_inner().unwrap()
    }

    #[test]
    fn our_schemas_datums_are_cut_from_the_blocks_as_apache_avro_would_encode_them() {
        let file = blocks(20);
        let fast = read(file.clone()).unwrap();
        let resolved: Vec<_> = resolved_records(Stream::Feedback, Cursor::new(file)).unwrap().collect();
        assert_eq!(fast.len(), 20);
        assert_eq!(fast, resolved);
        assert!(fast.iter().all(|(ts, d)| *ts > 0 && !d.is_empty()));
    }

    #[test]
    fn a_broken_datum_makes_the_rest_of_its_block_unreadable_and_a_truncated_block_ends_the_file() {
        let file = blocks(9);
        // The second record's event id ("f-1") overwritten by an over-long varint: the block's
        // first record is read, the other two are unreadable, the next blocks are whole.
        let at = file.windows(3).position(|w| w == b"f-1").unwrap() - 1;
        let mut bad = file.clone();
        bad[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let recs = read(bad).unwrap();
        assert_eq!(recs.len(), 9);
        assert!(!recs[0].1.is_empty());
        assert_eq!(recs[1..3], [(i64::MIN, Vec::new()), (i64::MIN, Vec::new())]);
        assert!(recs[3..].iter().all(|(_, d)| !d.is_empty()));
        // Cut inside the last block: the two whole blocks are read.
        let recs = read(file[..file.len() - 20].to_vec()).unwrap();
        assert_eq!(recs.len(), 6);
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
