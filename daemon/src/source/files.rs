//! File replay source: the three streams from JSON Lines or Avro object container files (the
//! backfill case: rebuild last quarter's per-tier view from gateway logs).
//!
//! Each file is one "topic" with a single partition 0, named `file:<canonical path>`, and a
//! record's offset is its index in the file, so the positions committed with the state make a
//! replay resumable: running it again skips what was applied. The three files are merged by event
//! time, which keeps the join's waiting outcomes bounded (a ticket is read after the decisions
//! that precede it). Replay into a database of its own, or before a live pipeline uses it:
//! partition 0's join state is shared with Kafka partition 0.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::records::{read_records, Records};
use super::{PayloadLimit, Polled, RebalanceEvent, Source};
use crate::decode::WireFormat;
use crate::event::Stream;
use crate::store::PartitionSnapshot;

pub use super::records::FileFormat;

impl FileFormat {
    /// Avro object container files start with `Obj\x01`; anything else is read as JSON Lines.
    pub fn detect(path: &Path) -> anyhow::Result<FileFormat> {
        let mut magic = [0u8; 4];
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let n = f.read(&mut magic)?;
        Ok(FileFormat::from_magic(&magic[..n]))
    }
}

/// The replay topic name of a file.
pub fn topic_of(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    format!("file:{}", canonical.display())
}

/// One file, read record by record: (event time for merging, payload for the decoder).
struct FileStream {
    path: PathBuf,
    stream: Stream,
    format: FileFormat,
    records: Records,
    /// Offset of the next record `records` yields.
    next_offset: i64,
    peeked: Option<(i64, Vec<u8>)>,
    exhausted: bool,
    bytes_total: u64,
}

impl FileStream {
    fn open(path: &Path, stream: Stream, skip: i64) -> anyhow::Result<FileStream> {
        let format = FileFormat::detect(path)?;
        let bytes_total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let records = read_records(format, stream, file).with_context(|| path.display().to_string())?;
        let mut fs = FileStream {
            path: path.to_path_buf(),
            stream,
            format,
            records,
            next_offset: 0,
            peeked: None,
            exhausted: false,
            bytes_total,
        };
        while fs.next_offset < skip {
            if fs.records.next().is_none() {
                break;
            }
            fs.next_offset += 1;
        }
        fs.fill();
        Ok(fs)
    }

    fn fill(&mut self) {
        if self.peeked.is_none() && !self.exhausted {
            self.peeked = self.records.next();
            self.exhausted = self.peeked.is_none();
        }
    }
}

/// Replays the three streams from files, merged by event time.
pub struct FileSource {
    files: [FileStream; 3],
    topics: [String; 3],
    events: VecDeque<RebalanceEvent>,
    progress: Option<indicatif::ProgressBar>,
    read: u64,
    limit: PayloadLimit,
}

impl FileSource {
    /// Open the three files at the positions of `snapshot` (partition 0 of the store).
    pub fn open(paths: [&Path; 3], snapshot: PartitionSnapshot, progress: bool) -> anyhow::Result<FileSource> {
        let topics = paths.map(topic_of);
        let streams = [Stream::Routing, Stream::Feedback, Stream::Tickets];
        let mut files = Vec::with_capacity(3);
        for i in 0..3 {
            let skip = snapshot.offsets.get(&topics[i]).copied().unwrap_or(0);
            files.push(FileStream::open(paths[i], streams[i], skip)?);
        }
        let files: [FileStream; 3] = files.try_into().map_err(|_| anyhow::anyhow!("three files expected"))?;
        let progress = progress.then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} replay {human_pos} records ({per_sec}) {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        let resumed: i64 = files.iter().map(|f| f.next_offset).sum();
        if resumed > 0 {
            tracing::info!(records = resumed, "resuming replay after the records already applied");
        }
        let mut events = VecDeque::new();
        events.push_back(RebalanceEvent::Assigned(vec![snapshot]));
        Ok(FileSource { files, topics, events, progress, read: 0, limit: PayloadLimit::UNLIMITED })
    }

    /// Keep only the dead-letter prefix of records above the payload limit.
    pub fn with_payload_limit(mut self, limit: PayloadLimit) -> Self {
        self.limit = limit;
        self
    }

    pub fn topics(&self) -> &[String; 3] {
        &self.topics
    }

    /// The wire format the pipeline's decoder must use for each file.
    pub fn formats(&self) -> [WireFormat; 3] {
        [0, 1, 2].map(|i| self.files[i].format.wire())
    }

    pub fn bytes_total(&self) -> u64 {
        self.files.iter().map(|f| f.bytes_total).sum()
    }

    pub fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("{} ({:?}, {})", f.path.display(), f.format, f.stream.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Source for FileSource {
    fn poll(&mut self, _timeout: Duration) -> Option<Polled> {
        // The earliest event among the three heads (ties: routing first, so a decision precedes
        // outcomes stamped with the same millisecond).
        let i = (0..3).filter(|&i| self.files[i].peeked.is_some()).min_by_key(|&i| {
            let ts = self.files[i].peeked.as_ref().map_or(i64::MAX, |p| p.0);
            (ts, i)
        })?;
        let f = &mut self.files[i];
        let (_, payload) = f.peeked.take()?;
        let offset = f.next_offset;
        f.next_offset += 1;
        f.fill();
        self.read += 1;
        if let Some(bar) = &self.progress {
            if self.read % 4096 == 0 {
                bar.set_position(self.read);
            }
        }
        let (payload, len) = self.limit.cut(payload);
        Some(Polled { topic_idx: i, partition: 0, offset, payload: Some(payload), len, broker_ts: None })
    }

    fn take_events(&mut self) -> Vec<RebalanceEvent> {
        self.events.drain(..).collect()
    }

    fn high_watermark(&mut self, topic_idx: usize, partition: i32) -> Option<i64> {
        let f = &self.files[topic_idx];
        // Known once the file has been read to its end.
        (partition == 0 && f.exhausted && f.peeked.is_none()).then_some(f.next_offset)
    }

    fn committed(&mut self, _positions: &[(usize, i32, i64)]) {}

    fn seek(&mut self, topic_idx: usize, _partition: i32, offset: Option<i64>) -> anyhow::Result<()> {
        let f = &self.files[topic_idx];
        let (path, stream) = (f.path.clone(), f.stream);
        self.files[topic_idx] = FileStream::open(&path, stream, offset.unwrap_or(0))?;
        Ok(())
    }

    fn finished(&self) -> bool {
        let done = self.files.iter().all(|f| f.exhausted && f.peeked.is_none());
        if done {
            if let Some(bar) = &self.progress {
                bar.set_position(self.read);
                bar.finish_with_message("done");
            }
        }
        done
    }
}
