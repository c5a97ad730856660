//! PromQL proven live: a real `tierwatch run` (Postgres store) consumes simulated traffic from the
//! real broker while a real Prometheus server scrapes its `/metrics` every second with the alert
//! rules loaded. Then every Prometheus expression of every dashboard under `grafana/dashboards/`
//! (Grafana's variables replaced by concrete values) is checked by `promtool` and evaluated by
//! the server: each must return at least one series. Every alert rule's expression must evaluate
//! without error and every metric it references must have a series (a misspelt name cannot
//! hide behind an expression that is legitimately empty while healthy), and the server must
//! report every rule loaded with health `ok`. Prometheus and the daemon are killed on drop.

mod common;
mod promtools;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, send_raw, simulate_command, Daemon, Env, PARTITIONS};
use promtools::{dashboard_exprs, metric_names, promtool_check_exprs, rules, rules_path};
use tierwatch::sim::{Scenario, SimConfig};

/// A Prometheus server on loopback, in its own directory; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Scrape `127.0.0.1:target` every second (job `tierwatch`) and evaluate the rules every second.
    fn start(target: u16, dir: &std::path::Path) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: tierwatch\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n",
            rules_path().display()
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("`prometheus` could not be run ({e}): install it with `bash scripts/services.sh install`")
            });
        Prometheus { child, port, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// GET an API path; the parsed JSON body (HTTP/1.0: no chunked encoding to undo).
    fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut text = String::new();
        stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).map_err(|e| format!("{e}: {text}"))
    }

    /// An instant query: its result series, or the server's error.
    fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of a query returning one series (None otherwise).
    fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr).ok()?;
        match r.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Wait up to `limit` for `cond`, failing with `what` (and the logs) after it.
async fn wait_for(limit: Duration, what: &str, daemon: &mut Daemon, prom: &Prometheus, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if let Some(st) = daemon.child.try_wait().unwrap() {
            panic!("daemon exited ({st}) while waiting for {what}\n{}", daemon.log_tail());
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\ndaemon:\n{}\nprometheus:\n{}",
            daemon.log_tail(),
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_evaluate_on_a_prometheus_scraping_a_live_daemon() {
    let started = Instant::now();
    let env = Env::new("prom_live").await;
    let http = free_port();
    let cfg = env.config(
        ["json", "json", "json"],
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[drift]\nevaluate_every_seconds = 1\n\
             [watermark]\nidle_partition_seconds = 5.0\n"
        ),
    );
    let mut daemon = Daemon::start(&cfg, "prom_live");
    let prom = Prometheus::start(http, env.dir.path());
    wait_for(Duration::from_secs(60), "the daemon to be ready", &mut daemon, &prom, || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() && http_get(http, "/readyz").0.contains(" 200")
    })
    .await;
    wait_for(Duration::from_secs(60), "Prometheus to scrape the daemon", &mut daemon, &prom, || {
        prom.scalar(r#"up{job="tierwatch"}"#) == Some(1.0)
    })
    .await;

    // Simulated traffic on the three topics, produced by the simulator while Prometheus scrapes,
    // and a few messages that are not JSON (rejected as dead letters).
    let sim_log = env.dir.path().join("simulate.log");
    let mut run = SimConfig::new(Scenario::Postmortem);
    run.days = 56;
    run.conversations_per_day = 300;
    run.seed = 7;
    let mut sim = simulate_command(&env.brokers, &env.topics, "json", &run)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&sim_log).unwrap()))
        .spawn()
        .expect("run tierwatch simulate");
    let sim_started = Instant::now();
    let status = loop {
        if let Some(status) = sim.try_wait().unwrap() {
            break status;
        }
        if sim_started.elapsed() > Duration::from_secs(120) {
            let _ = sim.kill();
            let _ = sim.wait();
            panic!("simulate did not finish in 120 s\n{}", std::fs::read_to_string(&sim_log).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "simulate failed:\n{}", std::fs::read_to_string(&sim_log).unwrap_or_default());
    let producer = env.producer();
    for i in 0..5 {
        send_raw(&producer, &env.topics[0], &format!("garbage-{i}"), Some(b"not json")).await;
    }
    let produced = Instant::now();

    // Consumed and caught up, as Prometheus sees it.
    wait_for(Duration::from_secs(180), "the daemon to catch up", &mut daemon, &prom, || {
        prom.scalar("sum(tierwatch_events_rejected_total)").is_some_and(|v| v >= 5.0)
            && prom.scalar("sum(tierwatch_consumer_lag_messages)") == Some(0.0)
            && prom.scalar("count(tierwatch_consumer_lag_messages)") == Some(f64::from(3 * PARTITIONS))
    })
    .await;
    let caught_up = produced.elapsed();
    // The scenario's cheap-tier regression (failed deflections, from its eighth week at this
    // volume and seed) fires once the watermark has moved through the simulated weeks, and stays
    // firing to the end of the traffic: tierwatch_alert_firing then has a series.
    let regression =
        r#"tierwatch_alert_firing{kind="tier_quality_regression",subject="tier=cheap metric=failed_deflection_rate"}"#;
    wait_for(Duration::from_secs(150), "the cheap tier's quality alert to fire", &mut daemon, &prom, || {
        prom.scalar(regression) == Some(1.0)
    })
    .await;
    // A few more scrapes so rate windows hold the traffic and the quiet after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("caught up {caught_up:?} after producing; whole test so far {:?}", started.elapsed());

    let mut failures = vec![];
    // Every dashboard expression: valid for promtool, and at least one series from the server.
    let dashboards = dashboard_exprs();
    assert!(dashboards.iter().any(|d| d.file == "pipeline-health.json"), "no pipeline-health dashboard");
    let alert_rules = rules();
    let mut all: Vec<String> = dashboards.iter().map(|d| d.expr.clone()).collect();
    all.extend(alert_rules.iter().map(|r| r.expr.clone()));
    let (ok, out) = promtool_check_exprs(&all, env.dir.path());
    assert!(ok, "promtool rejects an expression:\n{out}");
    for d in &dashboards {
        match prom.query(&d.expr) {
            Ok(series) if !series.is_empty() => {
                eprintln!("{} / {}: {} series  {}", d.file, d.panel, series.len(), d.expr)
            }
            Ok(_) => failures.push(format!("{} / {}: no series: {}", d.file, d.panel, d.expr)),
            Err(e) => failures.push(format!("{} / {}: {e}: {}", d.file, d.panel, d.expr)),
        }
    }
    // Every rule: evaluates; every metric it names has series.
    for r in &alert_rules {
        let name = r.alert.clone().or_else(|| r.record.clone()).unwrap_or_default();
        if let Err(e) = prom.query(&r.expr) {
            failures.push(format!("rule {name}: {e}"));
        }
        let names = metric_names(&r.expr);
        assert!(!names.is_empty(), "rule {name} names no metric: {}", r.expr);
        for m in names {
            match prom.query(&m) {
                Ok(series) if !series.is_empty() => {}
                other => failures.push(format!("rule {name}: metric {m} has no series ({other:?})")),
            }
        }
    }
    // The server loaded every rule and evaluated it without error.
    let loaded = prom.api("/api/v1/rules").expect("rules API");
    let mut seen = 0;
    for g in loaded["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            seen += 1;
            if r["health"] != "ok" {
                failures.push(format!("rule {} health {} ({})", r["name"], r["health"], r["lastError"]));
            }
        }
    }
    if seen != alert_rules.len() {
        failures.push(format!("the server loaded {seen} rules, the file has {}", alert_rules.len()));
    }
    // The product alert relayed from tierwatch_alert_firing is active in Prometheus.
    let alerts = prom.api("/api/v1/alerts").expect("alerts API");
    let active: Vec<String> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{} {}", a["labels"]["alertname"].as_str().unwrap_or_default(), a["state"]))
        .collect();
    eprintln!("active alerts: {active:?}");
    if !active.iter().any(|a| a.starts_with("TierwatchTierQualityRegression")) {
        failures.push(format!("the relayed product alert is not active in Prometheus: {active:?}"));
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
    let _ = daemon.stop();
    assert!(started.elapsed() < Duration::from_secs(300), "took {:?}", started.elapsed());
}
