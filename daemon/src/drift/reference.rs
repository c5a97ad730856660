//! Reference distributions: training-time confidence files and the compact histogram files that
//! `tierwatch reference build` writes from them.

use std::path::Path;

use crate::stats::hist::{ConfHist, HistError};

/// Leading bytes of a histogram reference file.
pub const MAGIC: &[u8] = b"TWREF1\n";

#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}, line {line}: {reason}")]
    Line { path: String, line: usize, reason: String },
    #[error("{path}: no confidences in the file")]
    Empty { path: String },
    #[error("{path}: histogram does not decode: {source}")]
    Hist { path: String, source: HistError },
}

/// Read a reference: a histogram file (starts with [`MAGIC`]) or text with one confidence per
/// line (or CSV whose first column is the confidence; one header line and `#` comments are
/// skipped). Values must lie in [0, 1].
pub fn load(path: &Path) -> Result<ConfHist, ReferenceError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ReferenceError::Io { path: name.clone(), source })?;
    let hist = if let Some(rest) = bytes.strip_prefix(MAGIC) {
        ConfHist::from_bytes(rest).map_err(|source| ReferenceError::Hist { path: name.clone(), source })?
    } else {
        parse_text(&name, &String::from_utf8_lossy(&bytes))?
    };
    if hist.is_empty() {
        return Err(ReferenceError::Empty { path: name });
    }
    Ok(hist)
}

fn parse_text(name: &str, text: &str) -> Result<ConfHist, ReferenceError> {
    let mut hist = ConfHist::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let field = line.split([',', '\t', ';']).next().unwrap_or("").trim().trim_matches('"');
        match field.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => {
                hist.record(v);
            }
            Ok(v) => {
                return Err(ReferenceError::Line {
                    path: name.into(),
                    line: i + 1,
                    reason: format!("confidence {v} is outside [0, 1]"),
                })
            }
            // A header line (only the first non-comment line may be one).
            Err(_) if hist.is_empty() && i == first_content_line(text) => {}
            Err(_) => {
                return Err(ReferenceError::Line {
                    path: name.into(),
                    line: i + 1,
                    reason: format!("`{field}` is not a number"),
                })
            }
        }
    }
    Ok(hist)
}

fn first_content_line(text: &str) -> usize {
    text.lines().position(|l| !l.trim().is_empty() && !l.trim().starts_with('#')).unwrap_or(0)
}

/// Write a histogram reference file.
pub fn write(path: &Path, hist: &ConfHist) -> Result<(), ReferenceError> {
    let mut out = MAGIC.to_vec();
    out.extend(hist.to_bytes());
    std::fs::write(path, out).map_err(|source| ReferenceError::Io { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_csv_and_histogram_files_agree() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("scores.csv");
        std::fs::write(&txt, "confidence,label\n# training set 2026-01\n0.91,simple\n0.12345,complex\n\n1,simple\n")
            .unwrap();
        let h = load(&txt).unwrap();
        assert_eq!(h.total(), 3);
        let bin = dir.path().join("ref.twref");
        write(&bin, &h).unwrap();
        assert_eq!(load(&bin).unwrap(), h);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.txt");
        std::fs::write(&p, "0.5\n1.5\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("outside"), "{e}");
        std::fs::write(&p, "0.5\nabc\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("line 2"));
        std::fs::write(&p, "# nothing\n").unwrap();
        assert!(matches!(load(&p), Err(ReferenceError::Empty { .. })));
        let mut corrupt = MAGIC.to_vec();
        corrupt.extend([9, 9, 9]);
        std::fs::write(&p, corrupt).unwrap();
        assert!(matches!(load(&p), Err(ReferenceError::Hist { .. })));
    }
}
