//! The daemon's top-level modules form no import cycle, so each can be read, tested and changed
//! from the bottom up (`stats`, `event`, `decode`, `join` … up to `pipeline` and `demo`).
//!
//! Two leaves are counted apart from their parent module, because their parent depends on the
//! features that use them: `config::error` (the error type and `Validate` trait every feature's
//! section implements, while `config` assembles those sections) and `store::error` (error
//! classification, used by the evaluator and the telemetry, while `store` implements the
//! features' storage traits). Nothing else may reach into a module that depends on it.
//!
//! Read as text (std only): a `crate::name` path in a non-test source file is a dependency of
//! the top-level module the file belongs to. Comments and `#[cfg(test)] mod tests { … }` blocks
//! at the end of a file are skipped, as are `tests.rs`, `*_tests.rs` and `testutil.rs` files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LEAF_NAMES: &[(&str, &[&str])] =
    &[("config", &["error", "ConfigError", "invalid", "Validate", "first_problem"]), ("store", &["error"])];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without line comments and without a trailing inline test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every `crate::a::b` / `crate::a::{b, c}` / `crate::{a, b}` path as (a, names after a).
fn crate_paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        if start >= 8 && is_ident(bytes[start - 8]) {
            continue; // e.g. `mycrate::`
        }
        let rest = &code[start..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push((name, vec![]));
                }
            }
            continue;
        }
        let top: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after = &rest[top.len()..];
        let mut names = vec![];
        if let Some(tail) = after.strip_prefix("::") {
            if let Some(group) = tail.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    names.push(name);
                }
            } else {
                names.push(tail.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
        out.push((top, names));
    }
    out
}

/// The node a path lands on: a leaf when every name it imports from the module is the leaf's.
fn node(top: &str, names: &[String]) -> String {
    for (module, leaf) in LEAF_NAMES {
        if top == *module && !names.is_empty() && names.iter().all(|n| leaf.contains(&n.as_str())) {
            return format!("{module}::error");
        }
    }
    top.to_string()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src_dir();
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if name != "lib" && name != "main" && (p.is_dir() || p.extension().is_some_and(|e| e == "rs")) {
            modules.insert(name);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![];
    rust_files(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let owner = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let fname = file.file_name().unwrap().to_string_lossy().to_string();
        if !modules.contains(&owner) || fname == "tests.rs" || fname.ends_with("_tests.rs") || fname == "testutil.rs" {
            continue;
        }
        // A leaf's own file belongs to the leaf.
        let owner = match (owner.as_str(), rel.to_string_lossy().as_ref()) {
            ("config", "config/error.rs") => "config::error".to_string(),
            ("store", "store/error.rs") => "store::error".to_string(),
            _ => owner,
        };
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let deps = edges.entry(owner.clone()).or_default();
        for (top, names) in crate_paths(&code) {
            let n = node(&top, &names);
            if n != owner && modules.contains(&top) {
                deps.insert(n);
            }
        }
    }
    edges
}

/// The strongly connected groups of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct S<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = vec![];
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s =
        S { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v.as_str());
        }
    }
    s.out
}

#[test]
fn top_level_modules_form_no_cycle() {
    let edges = graph();
    assert!(edges.len() > 15, "modules found: {:?}", edges.keys());
    let found = cycles(&edges);
    let shown: Vec<String> = edges.iter().map(|(m, d)| format!("{m} -> {d:?}")).collect();
    assert!(found.is_empty(), "import cycles among top-level modules: {found:?}\n{}", shown.join("\n"));
}

#[test]
fn the_leaves_import_no_feature() {
    let edges = graph();
    for leaf in ["config::error", "store::error"] {
        let deps = edges.get(leaf).cloned().unwrap_or_default();
        assert!(deps.is_empty(), "{leaf} must stay a leaf, imports {deps:?}");
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string(), "d".to_string()]));
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
    assert_eq!(node("config", &["ConfigError".into(), "Validate".into()]), "config::error");
    assert_eq!(node("config", &["Config".into(), "invalid".into()]), "config");
    let paths = crate_paths("use crate::{join, stats::wilson95};\nlet x = crate::store::error::StoreErrorKind::Fatal;");
    assert!(paths.contains(&("join".to_string(), vec![])), "{paths:?}");
    assert!(paths.contains(&("store".to_string(), vec!["error".to_string()])), "{paths:?}");
}
