//! The documentation covers what the code and the migrations define, read from the source text
//! (plain file reading: no service, no daemon code):
//!
//! - every public view a migration creates (Postgres and SQLite) is documented in
//!   `docs/contract.md`, and its "Public views" section has a heading for exactly those views
//!   (`tests/dashboards_sql.rs` reads that section as the list of relations a dashboard may use);
//! - every metric name registered in `daemon/src` is a row of `docs/metrics.md` (the unit test
//!   `telemetry::tests::every_metric_is_documented` checks the registry at run time, where a
//!   labelled family without a series yet is invisible; this reads the names from the source);
//! - every section of `tierwatch.example.toml` and every alert kind is in `docs/operations.md`;
//! - every link to a section of a document under `docs/` resolves to a heading there, and no file
//!   cites a document outside the repository.

#[path = "support/markdown.rs"]
mod markdown;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn doc(name: &str) -> String {
    read(&repo().join("docs").join(name))
}

/// Files under `dir` (recursively) whose name ends with one of `exts`, sorted; build output,
/// VCS data and fuzzing corpora are skipped.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules" | "out" | "seeds" | ".tw-services") {
                    stack.push(p);
                }
            } else if exts.iter().any(|x| name.ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names in `sql` after `CREATE [OR REPLACE] VIEW [IF NOT EXISTS]`, outside `--` comments.
fn created_views(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or_default();
        let words: Vec<String> = code.split_whitespace().map(str::to_ascii_lowercase).collect();
        for (i, w) in words.iter().enumerate() {
            if w != "create" {
                continue;
            }
            let mut j = i + 1;
            if words.get(j).map(String::as_str) == Some("or") && words.get(j + 1).map(String::as_str) == Some("replace")
            {
                j += 2;
            }
            if words.get(j).map(String::as_str) != Some("view") {
                continue;
            }
            j += 1;
            if words.get(j).map(String::as_str) == Some("if") {
                j += 3; // if not exists
            }
            if let Some(name) = words.get(j) {
                let name: String = name.trim_matches('"').chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Public views (not `tw_…`) created by the `.sql` files directly in `dir`.
fn public_views_in(dir: &str) -> BTreeSet<String> {
    let mut views = BTreeSet::new();
    let mut found = 0;
    for entry in std::fs::read_dir(repo().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "sql") {
            found += 1;
            views.extend(created_views(&read(&p)).into_iter().filter(|v| !v.starts_with("tw_")));
        }
    }
    assert!(found > 0, "no migrations in {dir}");
    views
}

#[test]
fn every_public_view_is_documented_in_the_contract() {
    let postgres = public_views_in("migrations");
    let sqlite = public_views_in("migrations/sqlite");
    assert_eq!(postgres, sqlite, "both stores must create the same public views");
    assert!(postgres.contains("tier_quality_daily") && postgres.contains("alerts"), "views found: {postgres:?}");

    let contract = doc("contract.md");
    let missing: Vec<&String> = postgres.iter().filter(|v| !contract.contains(&format!("`{v}`"))).collect();
    assert!(missing.is_empty(), "public views not documented in docs/contract.md: {missing:?}");

    // The view headings of the "Public views" section, as tests/dashboards_sql.rs reads them.
    let section = contract.split("\n## ").find(|s| s.starts_with("Public views")).expect("a Public views section");
    let headed: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("### "))
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .map(str::to_string)
        .collect();
    assert_eq!(
        headed, postgres,
        "docs/contract.md#public-views must have a `### `view`` heading for exactly the public views"
    );
}

#[test]
fn every_metric_is_documented() {
    let mut names = BTreeSet::new();
    for path in files(&repo().join("daemon/src"), &[".rs"]) {
        let text = read(&path);
        // A whole string literal `"tierwatch_…"` (label selectors and help texts are not names).
        for (at, _) in text.match_indices("\"tierwatch_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .collect();
            if text[at + 1 + name.len()..].starts_with('"') && name.len() > "tierwatch_".len() {
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 30, "metric names found in daemon/src: {names:?}");
    let metrics = doc("metrics.md");
    let missing: Vec<&String> = names.iter().filter(|n| !metrics.contains(&format!("| `{n}` |"))).collect();
    assert!(missing.is_empty(), "metrics not documented in docs/metrics.md: {missing:?}");
}

/// Table headers of the example configuration, e.g. `[kafka]`, `[[alerts.webhooks]]`; commented
/// headers (`# [sqlite]`) count too, but not example entries with quoted keys.
fn config_sections(toml: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in toml.lines() {
        let line = line.trim();
        let header = line.strip_prefix('#').map(str::trim).unwrap_or(line);
        let inner = header.trim_start_matches('[').trim_end_matches(']');
        let brackets = header.len() - inner.len();
        let ok = header.starts_with('[')
            && (brackets == 2 || brackets == 4)
            && !inner.is_empty()
            && inner.chars().all(|c| is_ident(c) || c == '.');
        if ok {
            out.insert(header.to_string());
        }
    }
    out
}

#[test]
fn every_config_section_is_documented_in_operations() {
    let sections = config_sections(&read(&repo().join("tierwatch.example.toml")));
    for expected in ["[kafka]", "[sqlite]", "[[alerts.webhooks]]", "[rescore.sampler]"] {
        assert!(sections.contains(expected), "{expected} not found in tierwatch.example.toml: {sections:?}");
    }
    let ops = doc("operations.md");
    let missing: Vec<&String> = sections.iter().filter(|s| !ops.contains(&format!("`{s}`"))).collect();
    assert!(missing.is_empty(), "config sections not documented in docs/operations.md: {missing:?}");
}

#[test]
fn every_alert_kind_is_documented() {
    let mut kinds = BTreeSet::new();
    for path in files(&repo().join("daemon/src"), &[".rs"]) {
        for line in read(&path).lines() {
            let line = line.trim_start().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            let Some(rest) = line.strip_prefix("const ") else { continue };
            let Some((name, value)) = rest.split_once(": &str = \"") else { continue };
            if name.ends_with("KIND") {
                kinds.insert(value.trim_end_matches("\";").to_string());
            }
        }
    }
    assert!(kinds.contains("confidence_drift") && kinds.len() >= 6, "alert kinds found: {kinds:?}");
    let (ops, contract) = (doc("operations.md"), doc("contract.md"));
    let contract_anchors = markdown::anchors(&contract);
    for kind in &kinds {
        assert!(ops.contains(&format!("`{kind}`")), "alert kind {kind} is not in docs/operations.md");
        assert!(
            contract_anchors.contains(kind.as_str()),
            "alert kind {kind} has no section in docs/contract.md#alert-rules"
        );
    }
}

/// Every `name.md#anchor` (name one of the documents under `docs/`) in the repository's text
/// files, and every `(#anchor)` inside those documents, names a heading of that document.
#[test]
fn links_to_doc_sections_resolve() {
    let docs: Vec<PathBuf> = files(&repo().join("docs"), &[".md"]);
    let anchors_of = |name: &str| -> Option<BTreeSet<String>> {
        docs.iter().find(|p| p.file_name().is_some_and(|f| f == name)).map(|p| markdown::anchors(&read(p)))
    };
    let mut broken = vec![];
    let mut checked = 0;
    for path in files(&repo(), &[".rs", ".md", ".toml", ".sh", ".yml", ".yaml"]) {
        let text = read(&path);
        let rel = path.strip_prefix(repo()).unwrap_or(&path).display().to_string();
        let in_docs = docs.contains(&path);
        for (at, _) in text.match_indices(".md#") {
            let start = text[..at].rfind(|c: char| !(is_ident(c) || c == '-')).map_or(0, |i| i + 1);
            let name = format!("{}.md", &text[start..at]);
            let anchor: String = text[at + 4..].chars().take_while(|&c| is_ident(c) || c == '-').collect();
            if anchor.is_empty() {
                continue; // a prefix in code, e.g. `strip_prefix("docs/runbook.md#")`
            }
            // Only links into docs/: from inside it, or spelled `docs/name.md#…` elsewhere.
            let into_docs = text[..start].ends_with("docs/") || (in_docs && !text[..start].ends_with('/'));
            if !into_docs {
                continue;
            }
            let Some(known) = anchors_of(&name) else { continue };
            checked += 1;
            if !known.contains(&anchor) {
                broken.push(format!("{rel}: {name}#{anchor}"));
            }
        }
        if in_docs {
            let own = markdown::anchors(&text);
            for (at, _) in text.match_indices("](#") {
                let anchor: String = text[at + 3..].chars().take_while(|&c| is_ident(c) || c == '-').collect();
                checked += 1;
                if !own.contains(&anchor) {
                    broken.push(format!("{rel}: #{anchor}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "links to missing sections:\n{}", broken.join("\n"));
}

/// The repository documents itself: no file cites a document that is not in it. (Applied
/// migrations are exempt: their text is checksummed; docs/contract.md maps their section numbers.)
#[test]
fn nothing_cites_a_document_outside_the_repository() {
    // Assembled at run time, so that this file does not cite what it looks for.
    let needles = [["SP", "EC §"].concat(), ["../sha", "red"].concat()];
    let mut found = vec![];
    for path in files(&repo(), &[".rs", ".md", ".toml", ".sh", ".yml", ".yaml"]) {
        let rel = path.strip_prefix(repo()).unwrap_or(&path).display().to_string();
        for (i, line) in read(&path).lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                found.push(format!("{rel}:{}: {line}", i + 1));
            }
        }
    }
    assert!(found.is_empty(), "references to a document outside the repository:\n{}", found.join("\n"));
}
