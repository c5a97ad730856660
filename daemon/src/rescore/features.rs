//! Hashed text features, bit-compatible with `training/featurize.py` (the reference).
//!
//! The rescorer's ONNX model was trained on vectors computed by the Python featurizer; any
//! difference in how a string becomes a vector is silent model skew. Both sides therefore follow
//! a spec spelled out in code points and bytes (no `to_lowercase`, `split_whitespace` or regex
//! classes, whose Unicode behaviour differs between languages):
//!
//! 1. keep the first `max_chars` code points;
//! 2. lowercase ASCII `A`–`Z` only;
//! 3. collapse each run of ASCII whitespace (space, `\t`, `\n`, `\v`, `\f`, `\r`) into one space
//!    and strip both ends (U+00A0 and other non-ASCII spaces are ordinary characters);
//! 4. word tokens: maximal runs of ASCII letters/digits and code points ≥ 0x80; word n-grams are
//!    tokens joined by one space;
//! 5. char n-grams: every window of n code points of `pad + text + pad`;
//! 6. each n-gram's UTF-8 bytes → XXH3-64 (word and char n-grams with their own seeds);
//!    index = h mod dim, sign −1 when bit 63 of h is set (collisions cancel on average);
//! 7. signed counts, L2-normalised (empty text → zero vector).
//!
//! Parity is checked against `models/parity.json` by `tests/rescore_parity.rs`.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::RescoreError;

/// The only featurizer spec version this code implements.
pub const SPEC_VERSION: u32 = 1;

/// Featurizer section of the model sidecar (`rescorer.json` → `featurizer`). The string fields
/// name the algorithm of each step; they are checked, not interpreted, so a sidecar produced by
/// a future featurizer is refused instead of silently featurized the old way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturizerSpec {
    /// Spec version, [`SPEC_VERSION`].
    pub version: u32,
    /// Code points kept from the raw text (bounds the cost of a pathological query).
    pub max_chars: usize,
    /// `"ascii"`.
    pub lowercase: String,
    /// `"ascii_collapse_strip"`.
    pub whitespace: String,
    /// `"ascii_alnum_or_non_ascii"`.
    pub token: String,
    /// Inclusive word n-gram range `[lo, hi]`, 1 ≤ lo ≤ hi.
    pub word_ngrams: [usize; 2],
    /// Inclusive char n-gram range `[lo, hi]`, 1 ≤ lo ≤ hi.
    pub char_ngrams: [usize; 2],
    /// Padding added on both sides before char n-grams.
    pub char_pad: String,
    /// `"xxh3_64"`.
    pub hash: String,
    /// XXH3 seed of word n-grams.
    pub word_seed: u64,
    /// XXH3 seed of char n-grams.
    pub char_seed: u64,
    /// Feature dimension D (the model's input width).
    pub dim: usize,
    /// `"bit63"`: the sign of a hashed feature is −1 when bit 63 of its hash is set.
    pub sign: String,
    /// `"l2"`: the vector is divided by its Euclidean norm.
    pub transform: String,
}

/// Largest n-gram order accepted (longer ones only add hashing cost).
const MAX_NGRAM: usize = 16;

/// Featurizer validated from a [`FeaturizerSpec`]. Cheap to share (`&self` everywhere); the
/// per-call scratch lives in a caller-owned [`FeatureBuf`].
#[derive(Debug, Clone)]
pub struct Featurizer {
    spec: FeaturizerSpec,
    dim: u64,
}

impl Featurizer {
    /// Validates the spec: every algorithm name must be the one implemented here.
    pub fn new(spec: FeaturizerSpec) -> Result<Self, RescoreError> {
        let bad = |reason: String| Err(RescoreError::Spec(reason));
        if spec.version != SPEC_VERSION {
            return bad(format!("featurizer version {} (this build implements {SPEC_VERSION})", spec.version));
        }
        for (field, got, want) in [
            ("lowercase", &spec.lowercase, "ascii"),
            ("whitespace", &spec.whitespace, "ascii_collapse_strip"),
            ("token", &spec.token, "ascii_alnum_or_non_ascii"),
            ("hash", &spec.hash, "xxh3_64"),
            ("sign", &spec.sign, "bit63"),
            ("transform", &spec.transform, "l2"),
        ] {
            if got != want {
                return bad(format!("featurizer {field} = {got:?}, only {want:?} is implemented"));
            }
        }
        for (field, [lo, hi]) in [("word_ngrams", spec.word_ngrams), ("char_ngrams", spec.char_ngrams)] {
            if lo == 0 || lo > hi || hi > MAX_NGRAM {
                return bad(format!("featurizer {field} = [{lo}, {hi}], need 1 <= lo <= hi <= {MAX_NGRAM}"));
            }
        }
        if spec.dim == 0 || spec.dim > (1 << 24) {
            return bad(format!("featurizer dim = {}, need 1..=2^24", spec.dim));
        }
        if spec.max_chars == 0 {
            return bad("featurizer max_chars = 0".into());
        }
        let dim = spec.dim as u64;
        Ok(Featurizer { spec, dim })
    }

    /// The validated spec.
    pub fn spec(&self) -> &FeaturizerSpec {
        &self.spec
    }

    /// Feature dimension D.
    pub fn dim(&self) -> usize {
        self.spec.dim
    }

    /// Computes the sparse features of `text` into `buf` ([`FeatureBuf::indices`] ascending,
    /// [`FeatureBuf::values`] L2-normalised, no explicit zeros). Allocates only while `buf`'s
    /// buffers grow to the largest text seen.
    pub fn featurize(&self, text: &str, buf: &mut FeatureBuf) {
        buf.prepare(self.spec.dim);
        let FeatureBuf { text: padded, offsets, words, word_bounds, counts, touched, indices, values } = buf;

        // Steps 1–3: normalised text, padded for char n-grams.
        padded.clear();
        padded.push_str(&self.spec.char_pad);
        let norm_start = padded.len();
        let mut pending_space = false;
        for ch in text.chars().take(self.spec.max_chars) {
            if matches!(ch, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r') {
                pending_space = true;
                continue;
            }
            if pending_space && padded.len() > norm_start {
                padded.push(' ');
            }
            pending_space = false;
            padded.push(ch.to_ascii_lowercase());
        }
        let norm_end = padded.len();
        padded.push_str(&self.spec.char_pad);

        // Step 4: tokens joined by single spaces, so that every word n-gram is one contiguous
        // slice of `words` (hashed in place, no per-n-gram string).
        words.clear();
        word_bounds.clear();
        let mut open = false;
        for ch in padded[norm_start..norm_end].chars() {
            if ch.is_ascii_alphanumeric() || !ch.is_ascii() {
                if !open {
                    if !words.is_empty() {
                        words.push(' ');
                    }
                    word_bounds.push((words.len(), words.len()));
                    open = true;
                }
                words.push(ch);
            } else if open {
                if let Some(last) = word_bounds.last_mut() {
                    last.1 = words.len();
                }
                open = false;
            }
        }
        if open {
            if let Some(last) = word_bounds.last_mut() {
                last.1 = words.len();
            }
        }

        let dim = self.dim;
        let mut add = |bytes: &[u8], seed: u64| {
            let h = xxh3_64_with_seed(bytes, seed);
            let idx = (h % dim) as usize;
            if counts[idx] == 0 {
                // May be pushed twice if a count returns to 0 and moves again: deduplicated below.
                touched.push(idx as u32);
            }
            counts[idx] += if h >> 63 == 1 { -1 } else { 1 };
        };

        let [wlo, whi] = self.spec.word_ngrams;
        for n in wlo..=whi {
            if word_bounds.len() < n {
                break;
            }
            for i in 0..=(word_bounds.len() - n) {
                let (start, end) = (word_bounds[i].0, word_bounds[i + n - 1].1);
                add(&words.as_bytes()[start..end], self.spec.word_seed);
            }
        }

        // Step 5: char n-grams over code points; `offsets` holds each code point's byte start and
        // the end of the text, so an n-gram is one byte slice.
        offsets.clear();
        offsets.extend(padded.char_indices().map(|(i, _)| i as u32));
        offsets.push(padded.len() as u32);
        let nchars = offsets.len() - 1;
        let [clo, chi] = self.spec.char_ngrams;
        for n in clo..=chi {
            if nchars < n {
                break;
            }
            for i in 0..=(nchars - n) {
                add(&padded.as_bytes()[offsets[i] as usize..offsets[i + n] as usize], self.spec.char_seed);
            }
        }

        // Step 7: collect, reset the scratch counts, normalise.
        touched.sort_unstable();
        touched.dedup();
        indices.clear();
        values.clear();
        let mut sumsq = 0.0f64;
        for &idx in touched.iter() {
            let c = std::mem::take(&mut counts[idx as usize]);
            if c != 0 {
                indices.push(idx);
                // Signed counts are small integers: exact in f64, as on the Python side.
                values.push(c as f32);
                sumsq += f64::from(c) * f64::from(c);
            }
        }
        touched.clear();
        if sumsq > 0.0 {
            let norm = sumsq.sqrt();
            // Divide in f64 then round once to f32, exactly like numpy's `(val / norm).astype(f32)`.
            for v in values.iter_mut() {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }

    /// Writes the dense features of `text` into `row` (length D; zeroed first).
    ///
    /// # Panics
    /// If `row.len() != self.dim()` (a programming error, not a data error).
    pub fn write_dense(&self, text: &str, buf: &mut FeatureBuf, row: &mut [f32]) {
        assert_eq!(row.len(), self.spec.dim, "dense row length must equal the featurizer dim");
        row.fill(0.0);
        self.featurize(text, buf);
        buf.scatter(row);
    }
}

/// Reusable scratch and output of [`Featurizer::featurize`]. One per thread; keeps its
/// allocations between calls (a D-sized count array plus buffers the size of the longest text).
#[derive(Debug, Default, Clone)]
pub struct FeatureBuf {
    text: String,
    offsets: Vec<u32>,
    words: String,
    word_bounds: Vec<(usize, usize)>,
    /// Dense signed counts, all zero between calls.
    counts: Vec<i32>,
    touched: Vec<u32>,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl FeatureBuf {
    /// An empty buffer; grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn prepare(&mut self, dim: usize) {
        if self.counts.len() != dim {
            self.counts.clear();
            self.counts.resize(dim, 0);
        }
    }

    /// Nonzero feature indices of the last text, ascending.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Values matching [`Self::indices`].
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Sets the last text's nonzero features in a zeroed dense row.
    pub(crate) fn scatter(&self, row: &mut [f32]) {
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            row[i as usize] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> FeaturizerSpec {
        FeaturizerSpec {
            version: 1,
            max_chars: 2048,
            lowercase: "ascii".into(),
            whitespace: "ascii_collapse_strip".into(),
            token: "ascii_alnum_or_non_ascii".into(),
            word_ngrams: [1, 2],
            char_ngrams: [3, 5],
            char_pad: " ".into(),
            hash: "xxh3_64".into(),
            word_seed: 0x7469657277617463,
            char_seed: 0x63686172677261,
            dim: 1 << 14,
            sign: "bit63".into(),
            transform: "l2".into(),
        }
    }

    fn feats(f: &Featurizer, text: &str) -> (Vec<u32>, Vec<f32>) {
        let mut buf = FeatureBuf::new();
        f.featurize(text, &mut buf);
        (buf.indices().to_vec(), buf.values().to_vec())
    }

    #[test]
    fn normalisation_is_ascii_only_and_whitespace_insensitive() {
        let f = Featurizer::new(spec()).unwrap();
        assert_eq!(feats(&f, "Where IS my\t\r\n order?"), feats(&f, "  where is my order?  "));
        // Non-ASCII case is kept (Python's str.lower would fold it, Rust's to_lowercase differently).
        assert_ne!(feats(&f, "ÉCOLE"), feats(&f, "école"));
        // U+00A0 is not whitespace for the featurizer.
        assert_ne!(feats(&f, "a\u{a0}b"), feats(&f, "a b"));
    }

    #[test]
    fn empty_and_blank_texts_are_zero_vectors() {
        let f = Featurizer::new(spec()).unwrap();
        for t in ["", "   ", "\t\n"] {
            let (i, v) = feats(&f, t);
            assert!(i.is_empty() && v.is_empty(), "{t:?}");
        }
    }

    #[test]
    fn unit_norm_sorted_and_buffer_reuse_is_clean() {
        let f = Featurizer::new(spec()).unwrap();
        let mut buf = FeatureBuf::new();
        f.featurize("a long-ish query about refunds and chargebacks", &mut buf);
        f.featurize("short", &mut buf);
        let (i, v) = (buf.indices().to_vec(), buf.values().to_vec());
        assert_eq!((i.clone(), v.clone()), feats(&f, "short"), "no state leaks between calls");
        assert!(i.windows(2).all(|w| w[0] < w[1]));
        let n: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((n - 1.0).abs() < 1e-6, "norm² {n}");
    }

    #[test]
    fn max_chars_truncates_on_code_points() {
        let f = Featurizer::new(FeaturizerSpec { max_chars: 4, ..spec() }).unwrap();
        assert_eq!(feats(&f, "éééé"), feats(&f, "ééééxyz"));
        assert_ne!(feats(&f, "ééé"), feats(&f, "éééé"));
    }

    #[test]
    fn dense_row_matches_sparse() {
        let f = Featurizer::new(spec()).unwrap();
        let mut buf = FeatureBuf::new();
        let mut row = vec![1.0f32; f.dim()];
        f.write_dense("reset my password", &mut buf, &mut row);
        let (i, v) = feats(&f, "reset my password");
        let nz: Vec<(u32, f32)> =
            row.iter().enumerate().filter(|(_, &x)| x != 0.0).map(|(k, &x)| (k as u32, x)).collect();
        assert_eq!(nz, i.into_iter().zip(v).collect::<Vec<_>>());
    }

    #[test]
    fn unknown_algorithms_are_refused() {
        let err = Featurizer::new(FeaturizerSpec { hash: "murmur3".into(), ..spec() }).unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
        assert!(Featurizer::new(FeaturizerSpec { word_ngrams: [2, 1], ..spec() }).is_err());
        assert!(Featurizer::new(FeaturizerSpec { dim: 0, ..spec() }).is_err());
        assert!(Featurizer::new(FeaturizerSpec { version: 2, ..spec() }).is_err());
    }
}
