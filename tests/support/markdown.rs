//! Markdown headings and their GitHub anchors, for the tests that check links into `docs/`
//! (std only: `docs_coverage` and the Prometheus rule tests include it by path).

#![allow(dead_code)] // each including test uses part of it

use std::collections::BTreeSet;

/// Markdown headings outside fenced code blocks, as (level, text).
pub fn headings(md: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if line[level..].starts_with(' ') {
            out.push((level, line[level..].trim().to_string()));
        }
    }
    out
}

/// GitHub's anchor of a heading: lowercase, spaces to `-`, punctuation other than `-` and `_`
/// dropped (backticks included).
pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document; a repeated heading gets `-1`, `-2`, … as on GitHub.
pub fn anchors(md: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, h) in headings(md) {
        let base = slug(&h);
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.insert(anchor);
    }
    out
}
