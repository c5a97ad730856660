//! The Prometheus files of the deployment, checked by `promtool` (which must be installed: a
//! missing promtool fails these tests): the rules and the scrape config are valid, the rules'
//! unit tests (deploy/prometheus/tests/) pass, every alert is labelled, annotated, documented in
//! the runbook and tested both firing and quiet, and every dashboard expression is valid PromQL.

mod promtools;

use std::collections::BTreeSet;

use promtools::{dashboard_exprs, promtool_check_exprs, repo, rules, run_tool, runbook_anchors};

#[test]
fn promtool_accepts_the_rules_and_the_scrape_config() {
    let (ok, out) = run_tool("promtool", &["check", "rules", "deploy/prometheus/tierwatch.rules.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run_tool("promtool", &["check", "config", "--syntax-only", "deploy/prometheus/prometheus.yml"]);
    assert!(ok, "promtool check config --syntax-only:\n{out}");
    // The full check also loads the rule files: point the config at the repository's copy of the
    // file it names (/etc/prometheus/tierwatch.rules.yml in the compose deployment).
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    assert!(text.contains("/etc/prometheus/tierwatch.rules.yml"), "the config must load the mounted rules file");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("prometheus.yml");
    let rules = promtools::rules_path();
    std::fs::write(&local, text.replace("/etc/prometheus/tierwatch.rules.yml", rules.to_str().unwrap())).unwrap();
    let (ok, out) = run_tool("promtool", &["check", "config", local.to_str().unwrap()]);
    assert!(ok, "promtool check config:\n{out}");
    assert!(out.contains("SUCCESS: 12 rules found"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let dir = repo().join("deploy/prometheus/tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests under {}", dir.display());
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = run_tool("promtool", &args);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn every_alert_is_labelled_annotated_in_the_runbook_and_tested_firing_and_quiet() {
    let anchors = runbook_anchors();
    let tests_dir = repo().join("deploy/prometheus/tests");
    // (alertname, whether a case expects it firing)
    let mut cases: BTreeSet<(String, bool)> = BTreeSet::new();
    for entry in std::fs::read_dir(&tests_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let doc: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
        for t in doc["tests"].as_sequence().into_iter().flatten() {
            for c in t["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = c["alertname"].as_str().unwrap_or_default().to_string();
                let firing = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
                cases.insert((name, firing));
            }
        }
    }
    let alerts: Vec<_> = rules().into_iter().filter(|r| r.alert.is_some()).collect();
    assert_eq!(alerts.len(), 12, "{alerts:#?}");
    for r in &alerts {
        let name = r.alert.as_deref().unwrap();
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(matches!(severity, Some("warning" | "critical")), "{name}: severity {severity:?}");
        for key in ["summary", "description", "runbook_url"] {
            assert!(r.annotations.get(key).is_some_and(|v| !v.trim().is_empty()), "{name}: no {key}");
        }
        let url = &r.annotations["runbook_url"];
        let anchor = url.strip_prefix("docs/runbook.md#").unwrap_or_else(|| panic!("{name}: runbook_url {url}"));
        assert!(anchors.contains(anchor), "{name}: docs/runbook.md has no section #{anchor} ({anchors:?})");
        assert!(cases.contains(&(name.to_string(), true)), "{name}: no promtool case where it fires");
        assert!(cases.contains(&(name.to_string(), false)), "{name}: no promtool case where it must not fire");
    }
}

#[test]
fn scrape_config_matches_the_compose_deployment() {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/prometheus.yml")).unwrap();
    let cfg: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(cfg["global"]["scrape_interval"].as_str(), Some("15s"));
    let jobs = cfg["scrape_configs"].as_sequence().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job_name"].as_str(), Some("tierwatch"));
    assert_eq!(jobs[0]["static_configs"][0]["targets"][0].as_str(), Some("tierwatch:9464"));
    assert_eq!(cfg["rule_files"][0].as_str(), Some("/etc/prometheus/tierwatch.rules.yml"));
}

#[test]
fn pipeline_health_dashboard_is_valid_promql_on_the_provisioned_datasource() {
    let path = repo().join("grafana/dashboards/pipeline-health.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dash["uid"].as_str(), Some("tierwatch-pipeline-health"));
    assert!(dash["schemaVersion"].as_i64().is_some_and(|v| v >= 36), "{}", dash["schemaVersion"]);
    let mut targets = 0;
    for p in dash["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"].as_str(), Some("tierwatch-prom"), "{title}");
        assert_eq!(p["datasource"]["type"].as_str(), Some("prometheus"), "{title}");
        for t in p["targets"].as_array().unwrap() {
            targets += 1;
            assert_eq!(t["datasource"]["uid"].as_str(), Some("tierwatch-prom"), "{title}");
            let expr = t["expr"].as_str().unwrap();
            // Rate windows follow the scrape interval through Grafana's $__rate_interval.
            if expr.contains("rate(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
            }
        }
    }
    assert!(targets >= 20, "{targets} targets");
    // Every Prometheus expression of every dashboard (variables expanded) is valid PromQL.
    let exprs: Vec<String> = dashboard_exprs().into_iter().map(|d| d.expr).collect();
    assert!(exprs.len() >= targets, "{} of {targets}", exprs.len());
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = promtool_check_exprs(&exprs, dir.path());
    assert!(ok, "promtool rejects a dashboard expression:\n{out}");
}
