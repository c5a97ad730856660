//! Shared by the Prometheus tests: the repository's Prometheus files, `promtool`, and the PromQL
//! expressions of the alert rules and of every Grafana dashboard.
#![allow(dead_code)]

#[path = "../support/markdown.rs"]
mod markdown;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate lives in daemon/").to_path_buf()
}

pub fn rules_path() -> PathBuf {
    repo().join("deploy/prometheus/tierwatch.rules.yml")
}

/// Run a Prometheus tool (`promtool`, `prometheus`) from the repository root: (success, output).
/// A tool that is not installed fails the test: these tests never skip.
pub fn run_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool).args(args).current_dir(repo()).output().unwrap_or_else(|e| {
        panic!("`{tool}` could not be run ({e}): install it with `bash scripts/services.sh install`")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[derive(Debug, serde::Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// Every rule (alerting and recording) of the rules file.
pub fn rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(rules_path()).expect("read the rules file");
    let file: RuleFile = yaml_serde::from_str(&text).expect("the rules file parses");
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

/// The series names an expression selects: `tierwatch_*` identifiers and `up` (before a `{`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            // Not a label name or value: label names are followed by `=`/`!=`/`=~`, values are quoted.
            let quoted = start > 0 && (bytes[start - 1] == b'"' || bytes[start - 1] == b'\'');
            if !quoted && (word.starts_with("tierwatch_") || (word == "up" && bytes.get(i) == Some(&b'{'))) {
                names.insert(word.to_string());
            }
        } else if c == b'"' {
            // Skip string literals (label values, legend text).
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

/// One PromQL target of a dashboard panel.
#[derive(Debug, Clone)]
pub struct DashboardExpr {
    pub file: String,
    pub panel: String,
    pub expr: String,
}

/// Grafana's built-in interval variables, given concrete values.
pub const GRAFANA_INTERVALS: [(&str, &str); 4] =
    [("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "5m"), ("__interval_ms", "15000")];

/// Every PromQL expression of every dashboard under `grafana/dashboards/` (targets whose own or
/// whose panel's datasource is of type `prometheus`, and Prometheus annotation queries), with Grafana's interval variables and the
/// dashboard's own variables (their current value, `.*` without one) replaced.
pub fn dashboard_exprs() -> Vec<DashboardExpr> {
    let dir = repo().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = vec![];
    for path in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read dashboard"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut vars: Vec<(String, String)> =
            GRAFANA_INTERVALS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for v in dash["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let value = match &v["current"]["value"] {
                serde_json::Value::String(s) if !s.is_empty() && s != "$__all" => s.clone(),
                serde_json::Value::Array(a) if !a.is_empty() => {
                    a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("|")
                }
                _ => ".*".to_string(),
            };
            vars.push((name, value));
        }
        // Longest names first: `$__interval_ms` before `$__interval`.
        vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        // Annotation queries on a Prometheus datasource count as targets too.
        for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
            if let Some(expr) = a["expr"].as_str().filter(|_| is_prometheus(&a["datasource"])) {
                let panel = format!("annotation {}", a["name"].as_str().unwrap_or_default());
                out.push(DashboardExpr { file: file.clone(), panel, expr: expand(expr, &vars) });
            }
        }
        let mut panels = vec![];
        collect_panels(&dash["panels"], &mut panels);
        for p in panels {
            let panel_prom = is_prometheus(&p["datasource"]);
            for t in p["targets"].as_array().into_iter().flatten() {
                let own = &t["datasource"];
                let prom = if own.is_object() { is_prometheus(own) } else { panel_prom };
                let Some(expr) = t["expr"].as_str().filter(|_| prom) else { continue };
                out.push(DashboardExpr {
                    file: file.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_string(),
                    expr: expand(expr, &vars),
                });
            }
        }
    }
    out
}

fn collect_panels(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    for p in v.as_array().into_iter().flatten() {
        out.push(p.clone());
        collect_panels(&p["panels"], out);
    }
}

fn is_prometheus(ds: &serde_json::Value) -> bool {
    ds["type"].as_str() == Some("prometheus") || ds["uid"].as_str() == Some("tierwatch-prom")
}

/// Replace `$name`, `${name}` and `[[name]]` by their values.
pub fn expand(expr: &str, vars: &[(String, String)]) -> String {
    let mut s = expr.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("${{{k}}}"), v).replace(&format!("[[{k}]]"), v).replace(&format!("${k}"), v);
    }
    s
}

/// Check expressions with `promtool check rules`, each as a recording rule of a throwaway rules
/// file: (success, promtool's output).
pub fn promtool_check_exprs(exprs: &[String], dir: &Path) -> (bool, String) {
    let mut text = String::from("groups:\n  - name: expressions\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        text.push_str(&format!(
            "      - record: check:expr_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let path = dir.join("exprs.rules.yml");
    std::fs::write(&path, text).expect("write the expressions' rules file");
    run_tool("promtool", &["check", "rules", path.to_str().expect("utf-8 path")])
}

/// The anchors of `docs/runbook.md`'s headings (GitHub's slugs: lowercase, spaces to `-`,
/// punctuation other than `-` and `_` dropped).
pub fn runbook_anchors() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/runbook.md")).expect("docs/runbook.md exists");
    markdown::anchors(&text)
}

#[test]
fn metric_names_skip_label_names_values_and_functions() {
    let names = metric_names(
        r#"sum by (topic) (rate(tierwatch_events_consumed_total{topic="tierwatch_x"}[5m])) / on (job) up{job="tierwatch"} and absent(up)"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["tierwatch_events_consumed_total", "up"]);
}
