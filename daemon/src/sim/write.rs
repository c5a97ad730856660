//! File writers: plain JSON Lines (docs/contract.md#wire-formats, one object per line) or Avro object
//! container files with the committed schemas; ground truth always as JSON Lines.
//!
//! Files in `dir`: `routing_decisions.{jsonl,avro}`, `feedback.{jsonl,avro}`,
//! `support_tickets.{jsonl,avro}`, `ground_truth.jsonl`. Existing files are replaced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::decode::{schema, to_avro_value, try_encode, WireFormat};
use crate::event::{Event, Stream};

use super::rng::mix64;
use super::{
    days, DayBatch, GroundTruth, SimConfig, Simulation, FEEDBACK_FILE, ROUTING_FILE, TICKETS_FILE, TRUTH_FILE,
};

/// Event file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.jsonl`: plain JSON objects, one per line.
    Jsonl,
    /// `.avro`: Avro object container files (null codec) with the committed schemas.
    AvroOcf,
}

impl FileFormat {
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::AvroOcf => "avro",
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    pub decisions: u64,
    pub feedback: u64,
    pub tickets: u64,
    pub truth: u64,
    pub files: Vec<PathBuf>,
}

enum Out {
    Jsonl(BufWriter<File>),
    Avro(Box<apache_avro::Writer<'static, BufWriter<File>>>),
}

/// Incremental writer of the three streams and the ground truth.
pub struct FileWriter {
    outs: [Out; 3],
    truth: BufWriter<File>,
    summary: WriteSummary,
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Routing => 0,
        Stream::Feedback => 1,
        Stream::Tickets => 2,
    }
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 16, f))
}

impl FileWriter {
    /// Create (or replace) the files in `dir` (created if missing). `seed` fixes the Avro sync
    /// markers, so the same seed gives byte-identical container files.
    pub fn create(dir: &Path, format: FileFormat, seed: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        let mut open = |stream: Stream, name: &str| -> anyhow::Result<Out> {
            let path = dir.join(format!("{name}.{}", format.extension()));
            let mut w = create(&path)?;
            files.push(path);
            Ok(match format {
                FileFormat::Jsonl => Out::Jsonl(w),
                FileFormat::AvroOcf => {
                    // apache-avro writes its header metadata from a HashMap (random order); write
                    // the header here so the files are byte-identical for a seed.
                    let marker = sync_marker(seed, stream);
                    w.write_all(&ocf_header(schema(stream), &marker)?)?;
                    Out::Avro(Box::new(
                        apache_avro::Writer::builder()
                            .schema(schema(stream))
                            .writer(w)
                            .marker(marker)
                            .has_header(true)
                            .build(),
                    ))
                }
            })
        };
        let outs = [
            open(Stream::Routing, ROUTING_FILE)?,
            open(Stream::Feedback, FEEDBACK_FILE)?,
            open(Stream::Tickets, TICKETS_FILE)?,
        ];
        let truth_path = dir.join(TRUTH_FILE);
        let truth = create(&truth_path)?;
        files.push(truth_path);
        Ok(FileWriter { outs, truth, summary: WriteSummary { files, ..Default::default() } })
    }

    pub fn event(&mut self, ev: &Event) -> anyhow::Result<()> {
        match &mut self.outs[idx(ev.stream())] {
            Out::Jsonl(w) => {
                let bytes = try_encode(ev, WireFormat::Json, 0)?;
                w.write_all(&bytes)?;
                w.write_all(b"\n")?;
            }
            Out::Avro(w) => {
                w.append(to_avro_value(ev)).with_context(|| format!("avro append of {}", ev.event_id()))?;
            }
        }
        match ev.stream() {
            Stream::Routing => self.summary.decisions += 1,
            Stream::Feedback => self.summary.feedback += 1,
            Stream::Tickets => self.summary.tickets += 1,
        }
        Ok(())
    }

    pub fn truth(&mut self, t: &GroundTruth) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.truth, t)?;
        self.truth.write_all(b"\n")?;
        self.summary.truth += 1;
        Ok(())
    }

    pub fn batch(&mut self, b: &DayBatch) -> anyhow::Result<()> {
        for ev in &b.events {
            self.event(ev)?;
        }
        for t in &b.truth {
            self.truth(t)?;
        }
        Ok(())
    }

    /// Flush everything (Avro: the last block) and close the files.
    pub fn finish(self) -> anyhow::Result<WriteSummary> {
        for out in self.outs {
            match out {
                Out::Jsonl(mut w) => w.flush()?,
                Out::Avro(w) => {
                    let mut inner = w.into_inner().context("flushing avro container")?;
                    inner.flush()?;
                }
            }
        }
        let mut t = self.truth;
        t.flush()?;
        Ok(self.summary)
    }
}

/// Avro zig-zag varint of a long.
fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Object container header: magic, metadata map {avro.schema, avro.codec = null} in a fixed
/// order (the schema JSON exactly as apache-avro writes it), sync marker.
fn ocf_header(schema: &apache_avro::Schema, marker: &[u8; 16]) -> anyhow::Result<Vec<u8>> {
    let schema_json = serde_json::to_string(schema)?;
    let mut h = Vec::with_capacity(schema_json.len() + 64);
    h.extend_from_slice(b"Obj\x01");
    put_long(&mut h, 2);
    put_bytes(&mut h, b"avro.schema");
    put_bytes(&mut h, schema_json.as_bytes());
    put_bytes(&mut h, b"avro.codec");
    put_bytes(&mut h, b"null");
    put_long(&mut h, 0);
    h.extend_from_slice(marker);
    Ok(h)
}

/// A deterministic 16-byte container sync marker for `(seed, stream)`.
fn sync_marker(seed: u64, stream: Stream) -> [u8; 16] {
    let a = mix64(seed ^ 0xA5A5_0000_0000_0000 ^ idx(stream) as u64);
    let b = mix64(a);
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&a.to_le_bytes());
    m[8..].copy_from_slice(&b.to_le_bytes());
    m
}

fn write_sim(dir: &Path, sim: &Simulation, format: FileFormat) -> anyhow::Result<WriteSummary> {
    let mut w = FileWriter::create(dir, format, sim.config.seed)?;
    for ev in &sim.events {
        w.event(ev)?;
    }
    for t in &sim.truth {
        w.truth(t)?;
    }
    w.finish()
}

fn write_days(dir: &Path, cfg: &SimConfig, format: FileFormat) -> anyhow::Result<WriteSummary> {
    let mut w = FileWriter::create(dir, format, cfg.seed)?;
    for b in days(cfg) {
        w.batch(&b)?;
    }
    w.finish()
}

/// `routing_decisions.jsonl`, `feedback.jsonl`, `support_tickets.jsonl`, `ground_truth.jsonl`.
pub fn write_jsonl(dir: &Path, sim: &Simulation) -> anyhow::Result<WriteSummary> {
    write_sim(dir, sim, FileFormat::Jsonl)
}

/// `routing_decisions.avro`, `feedback.avro`, `support_tickets.avro` (object container files with
/// the committed schemas), `ground_truth.jsonl`.
pub fn write_avro_ocf(dir: &Path, sim: &Simulation) -> anyhow::Result<WriteSummary> {
    write_sim(dir, sim, FileFormat::AvroOcf)
}

/// [`write_jsonl`] generating day by day (bounded memory).
pub fn write_jsonl_days(dir: &Path, cfg: &SimConfig) -> anyhow::Result<WriteSummary> {
    write_days(dir, cfg, FileFormat::Jsonl)
}

/// [`write_avro_ocf`] generating day by day (bounded memory).
pub fn write_avro_ocf_days(dir: &Path, cfg: &SimConfig) -> anyhow::Result<WriteSummary> {
    write_days(dir, cfg, FileFormat::AvroOcf)
}
