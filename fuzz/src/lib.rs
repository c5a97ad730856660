//! Fuzz targets for tierwatch's decoders and replay file readers.
//!
//! The daemon's decoder sources are compiled here by path (the same files, not a copy), so an
//! instrumented build needs only their few dependencies. Each target in [`targets`] takes the raw
//! fuzzer input and panics (which AFL++ records as a crash) when the decoder breaks its contract,
//! not only when it panics by itself: see [`contract`].

#[path = "../../daemon/src/event.rs"]
pub mod event;

#[path = "../../daemon/src/decode/mod.rs"]
pub mod decode;

#[path = "../../daemon/src/source/records.rs"]
pub mod records;

pub mod contract;
pub mod samples;
pub mod targets;
