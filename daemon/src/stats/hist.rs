//! [`ConfHist`]: an exact, mergeable count histogram of confidences at 1e-4 resolution.
//!
//! A confidence `v ∈ [0, 1]` is recorded at grid point (bin) `round(v · 10⁴) ∈ 0..=10000`
//! (nearest, ties away from zero; values outside [0, 1] are clamped, NaN is ignored).
//!
//! # Why a flat 10001-bin array
//! * **Exact.** The grid *is* the recording resolution, so a histogram is the rounded sample up to
//!   order: KS and PSI computed on it equal the same statistics computed on the raw values rounded
//!   to 4 decimals (which is what the spec requires and what the scipy oracle checks). There is no
//!   bucketing error to reason about, unlike a log-bucketed or sketch histogram.
//! * **Small enough.** 10001 × 8 bytes ≈ 80 KB in memory per histogram with many distinct values,
//!   whatever the number of samples; merging is one vector add. A histogram with few distinct
//!   values (an hour's delta in a batch, a classifier that uses few values) is kept as a sorted
//!   list of its non-zero bins until it has [`SPARSE_MAX`] of them: a catch-up batch holds
//!   hundreds of hourly deltas, and allocating, zeroing, copying and scanning 80 KB for each of
//!   them cost more than the join itself. The representation never shows: equality, counts and
//!   the encoding are those of the 10001 bins. At rest it is stored sparsely
//!   ([`ConfHist::to_bytes`]): at most ~50 KB, 27 KB for a 10M-sample day spread over 9888 grid
//!   points, far less for a classifier that uses few distinct values.
//! * **Fast.** KS and PSI are one pass over 10001 bins: O(10⁴), independent of n (a 10M-sample
//!   day costs the same as a 1k-sample one).
//!
//! hdrhistogram (values = bins) is supported for callers that want its V2 serializer:
//! [`ConfHist::to_hdr`] / [`ConfHist::from_hdr`]. At 4 significant figures hdrhistogram keeps unit
//! resolution below 32768, so every grid point 0..=10000 is represented exactly.

use std::borrow::Cow;

use hdrhistogram::Histogram;
use thiserror::Error;

/// Number of grid points per unit: a confidence `v` is recorded at `round(v · GRID)`.
pub const GRID: u16 = 10_000;
/// Number of bins: grid points `0..=GRID`.
pub const BINS: usize = GRID as usize + 1;
/// Serialization format version written by [`ConfHist::to_bytes`].
pub const FORMAT_VERSION: u8 = 1;
/// Non-zero bins a histogram keeps as a sorted list before it switches to the flat array
/// (512 × 16 bytes = 8 KB, a tenth of the array; inserting stays a short memmove).
pub const SPARSE_MAX: usize = 512;

/// Errors of [`ConfHist`] construction, decoding and hdrhistogram conversion.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HistError {
    #[error("bin {0} is outside 0..={GRID}")]
    BinOutOfRange(u64),
    #[error("empty input")]
    Empty,
    #[error("unsupported histogram format version {0}")]
    UnsupportedVersion(u8),
    #[error("input truncated")]
    Truncated,
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("varint not minimally encoded")]
    NonCanonicalVarint,
    #[error("{0} entries declared, at most {BINS} possible")]
    TooManyEntries(u64),
    #[error("bins not strictly increasing (zero delta after bin {0})")]
    NonIncreasingBin(u64),
    #[error("zero count stored for bin {0}")]
    ZeroCount(u64),
    #[error("total count overflows u64")]
    CountOverflow,
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
    #[error("hdrhistogram bucket at {0} spans {1} values: not an exact 1e-4 confidence histogram")]
    InexactHdr(u64, u64),
    #[error("hdrhistogram: {0}")]
    Hdr(String),
}

/// Exact count histogram of confidences on the 1e-4 grid (see the module docs).
///
/// Invariant: `total` is the sum of the counts (counts saturate at `u64::MAX`, which no real
/// stream reaches).
#[derive(Clone)]
pub struct ConfHist {
    bins: Bins,
    total: u64,
}

/// The counts: sorted `(bin, count ≥ 1)` pairs while there are at most [`SPARSE_MAX`] of them,
/// then all [`BINS`] counts. Only grows from sparse to dense.
#[derive(Clone)]
enum Bins {
    Sparse(Vec<(u16, u64)>),
    Dense(Box<[u64]>),
}

/// The flat array of a sparse histogram's sorted `(bin, count)` pairs.
fn to_dense(pairs: &[(u16, u64)]) -> Box<[u64]> {
    let mut counts = vec![0u64; BINS].into_boxed_slice();
    for &(b, c) in pairs {
        counts[usize::from(b)] = c;
    }
    counts
}

impl PartialEq for ConfHist {
    fn eq(&self, other: &Self) -> bool {
        self.total == other.total && self.iter_nonzero().eq(other.iter_nonzero())
    }
}

impl Eq for ConfHist {}

impl Default for ConfHist {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ConfHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfHist")
            .field("total", &self.total)
            .field("nonzero_bins", &self.iter_nonzero().count())
            .finish()
    }
}

/// The grid point of a confidence: `round(v · 10⁴)` after clamping to [0, 1]; `None` for NaN.
pub fn bin_of(v: f64) -> Option<u16> {
    if v.is_nan() {
        return None;
    }
    let x = (v.clamp(0.0, 1.0) * f64::from(GRID)).round();
    // x is an integer in 0..=10000 here, so the cast is exact.
    Some(x as u16)
}

/// The confidence a grid point stands for (`bin / 10⁴`).
pub fn value_of(bin: u16) -> f64 {
    f64::from(bin) / f64::from(GRID)
}

impl ConfHist {
    /// An empty histogram.
    pub fn new() -> Self {
        Self { bins: Bins::Sparse(Vec::new()), total: 0 }
    }

    /// A histogram of `values` (NaN skipped, others clamped to [0, 1]).
    pub fn from_values<I: IntoIterator<Item = f64>>(values: I) -> Self {
        let mut h = Self::new();
        for v in values {
            h.record(v);
        }
        h
    }

    /// Records one confidence. Returns `false` (and records nothing) for NaN; values outside
    /// [0, 1] (including ±∞) are clamped to the nearest end.
    pub fn record(&mut self, v: f64) -> bool {
        match bin_of(v) {
            Some(b) => {
                self.add(usize::from(b), 1);
                true
            }
            None => false,
        }
    }

    /// Adds `n` observations at grid point `bin` (0..=10000).
    pub fn record_n(&mut self, bin: u16, n: u64) -> Result<(), HistError> {
        if usize::from(bin) >= BINS {
            return Err(HistError::BinOutOfRange(u64::from(bin)));
        }
        self.add(usize::from(bin), n);
        Ok(())
    }

    /// Adds `n` at `bin` (< BINS, checked by every caller).
    fn add(&mut self, bin: usize, n: u64) {
        if n == 0 {
            return;
        }
        match &mut self.bins {
            Bins::Dense(counts) => counts[bin] = counts[bin].saturating_add(n),
            Bins::Sparse(pairs) => {
                // bin < BINS = 10001 fits in u16.
                let b = bin as u16;
                match pairs.binary_search_by_key(&b, |(k, _)| *k) {
                    Ok(i) => pairs[i].1 = pairs[i].1.saturating_add(n),
                    Err(i) => {
                        pairs.insert(i, (b, n));
                        if pairs.len() > SPARSE_MAX {
                            self.with_dense(|_| ());
                        }
                    }
                }
            }
        }
        self.total = self.total.saturating_add(n);
    }

    /// Run `f` on the flat array, switching to it first if needed (the counts do not change).
    fn with_dense(&mut self, f: impl FnOnce(&mut [u64])) {
        let mut counts = match std::mem::replace(&mut self.bins, Bins::Sparse(Vec::new())) {
            Bins::Dense(counts) => counts,
            Bins::Sparse(pairs) => to_dense(&pairs),
        };
        f(&mut counts);
        self.bins = Bins::Dense(counts);
    }

    /// Adds every count of `other` into `self` (histograms of disjoint samples merge into the
    /// histogram of their union).
    pub fn merge(&mut self, other: &ConfHist) {
        match (&mut self.bins, &other.bins) {
            (Bins::Sparse(a), Bins::Sparse(b)) if a.len() + b.len() <= SPARSE_MAX => *a = merge_sorted(a, b),
            (_, Bins::Dense(b)) => self.with_dense(|a| {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = x.saturating_add(*y);
                }
            }),
            (_, Bins::Sparse(b)) => self.with_dense(|a| {
                for &(bin, c) in b {
                    let x = &mut a[usize::from(bin)];
                    *x = x.saturating_add(c);
                }
            }),
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// Number of recorded observations.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `true` when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Count at grid point `bin` (0 outside the grid).
    pub fn count(&self, bin: u16) -> u64 {
        match &self.bins {
            Bins::Dense(counts) => counts.get(usize::from(bin)).copied().unwrap_or(0),
            Bins::Sparse(pairs) => pairs.binary_search_by_key(&bin, |(k, _)| *k).map_or(0, |i| pairs[i].1),
        }
    }

    /// All 10001 counts, indexed by grid point (built for a histogram kept sparse).
    pub fn counts(&self) -> Cow<'_, [u64]> {
        match &self.bins {
            Bins::Dense(counts) => Cow::Borrowed(counts),
            Bins::Sparse(pairs) => Cow::Owned(to_dense(pairs).into_vec()),
        }
    }

    /// `(bin, count)` for every grid point with a non-zero count, in increasing bin order.
    pub fn iter_nonzero(&self) -> NonZero<'_> {
        match &self.bins {
            Bins::Dense(counts) => NonZero::Dense(counts.iter().enumerate()),
            Bins::Sparse(pairs) => NonZero::Sparse(pairs.iter()),
        }
    }

    /// Compact bytes: `[version = 1]`, varint `K` (number of non-zero bins), then `K` pairs of
    /// varints `(bin delta, count)`, where the first delta is the first bin itself and later deltas
    /// are the (≥ 1) distance from the previous non-zero bin. Varints are unsigned LEB128. Counts are
    /// ≥ 1. The encoding of a histogram is unique (canonical), so equal histograms have equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let nonzero = self.iter_nonzero().count();
        let mut out = Vec::with_capacity(4 + nonzero * 4);
        out.push(FORMAT_VERSION);
        put_varint(&mut out, nonzero as u64);
        let mut prev: u64 = 0;
        for (i, (b, c)) in self.iter_nonzero().enumerate() {
            let b = u64::from(b);
            put_varint(&mut out, if i == 0 { b } else { b - prev });
            put_varint(&mut out, c);
            prev = b;
        }
        out
    }

    /// Decodes [`ConfHist::to_bytes`]; rejects anything but the canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HistError> {
        let (&version, mut rest) = bytes.split_first().ok_or(HistError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(HistError::UnsupportedVersion(version));
        }
        let k = get_varint(&mut rest)?;
        if k > BINS as u64 {
            return Err(HistError::TooManyEntries(k));
        }
        let mut pairs = Vec::with_capacity(k.min(BINS as u64) as usize);
        let mut total: u64 = 0;
        let mut bin: u64 = 0;
        for i in 0..k {
            let delta = get_varint(&mut rest)?;
            if i > 0 && delta == 0 {
                return Err(HistError::NonIncreasingBin(bin));
            }
            bin = bin.checked_add(delta).ok_or(HistError::BinOutOfRange(u64::MAX))?;
            if bin >= BINS as u64 {
                return Err(HistError::BinOutOfRange(bin));
            }
            let c = get_varint(&mut rest)?;
            if c == 0 {
                return Err(HistError::ZeroCount(bin));
            }
            total = total.checked_add(c).ok_or(HistError::CountOverflow)?;
            // bin < BINS = 10001 (checked above) fits in u16.
            pairs.push((bin as u16, c));
        }
        if !rest.is_empty() {
            return Err(HistError::TrailingBytes(rest.len()));
        }
        let bins = if pairs.len() > SPARSE_MAX { Bins::Dense(to_dense(&pairs)) } else { Bins::Sparse(pairs) };
        Ok(Self { bins, total })
    }

    /// An hdrhistogram holding the same counts, with values = grid points (0..=10000), created
    /// with `new_with_max(10000, 4)` (unit resolution over the whole grid).
    pub fn to_hdr(&self) -> Result<Histogram<u64>, HistError> {
        let mut h = Histogram::<u64>::new_with_max(u64::from(GRID), 4).map_err(|e| HistError::Hdr(e.to_string()))?;
        for (b, c) in self.iter_nonzero() {
            h.record_n(u64::from(b), c).map_err(|e| HistError::Hdr(e.to_string()))?;
        }
        Ok(h)
    }

    /// The histogram of an hdrhistogram whose values are grid points. Fails if a recorded value is
    /// above 10000 or falls in a bucket wider than one unit (the conversion would not be exact).
    pub fn from_hdr(hdr: &Histogram<u64>) -> Result<Self, HistError> {
        let mut h = Self::new();
        for it in hdr.iter_recorded() {
            let v = it.value_iterated_to();
            let width = hdr.equivalent_range(v);
            if width != 1 {
                return Err(HistError::InexactHdr(v, width));
            }
            if v >= BINS as u64 {
                return Err(HistError::BinOutOfRange(v));
            }
            let c = it.count_at_value();
            h.total.checked_add(c).ok_or(HistError::CountOverflow)?;
            h.add(v as usize, c);
        }
        Ok(h)
    }
}

/// Iterator of [`ConfHist::iter_nonzero`].
pub enum NonZero<'a> {
    Dense(std::iter::Enumerate<std::slice::Iter<'a, u64>>),
    Sparse(std::slice::Iter<'a, (u16, u64)>),
}

impl Iterator for NonZero<'_> {
    type Item = (u16, u64);

    fn next(&mut self) -> Option<(u16, u64)> {
        match self {
            // Indices are < BINS = 10001, so they fit in u16.
            NonZero::Dense(it) => it.find(|(_, &c)| c > 0).map(|(b, &c)| (b as u16, c)),
            NonZero::Sparse(it) => it.next().copied(),
        }
    }
}

/// The union of two sorted `(bin, count)` lists, counts of a common bin added.
fn merge_sorted(a: &[(u16, u64)], b: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                merged.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                merged.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                merged.push((a[i].0, a[i].1.saturating_add(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    merged.extend_from_slice(&a[i..]);
    merged.extend_from_slice(&b[j..]);
    merged
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64, HistError> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let (&byte, rest) = input.split_first().ok_or(HistError::Truncated)?;
        *input = rest;
        let low = u64::from(byte & 0x7f);
        if shift == 63 && low > 1 || shift > 63 {
            return Err(HistError::VarintOverflow);
        }
        v |= low << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && shift > 0 {
                return Err(HistError::NonCanonicalVarint);
            }
            return Ok(v);
        }
        shift += 7;
    }
}
