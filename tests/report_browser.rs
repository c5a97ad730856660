//! The live report in a real browser. A running `tierwatch run` on the embedded SQLite store (the
//! try-it default) consumes a reduced post-mortem scenario that `tierwatch simulate --kafka`
//! produced into the real broker; once it is committed, evaluated and rescored, Debian's headless
//! Chromium loads `http://127.0.0.1:<port>/report`:
//!
//! - no external request: Chromium's NetLog (`--log-net-log`) records every URL the browser's
//!   network stack was asked for; every one must be on the daemon's origin (`data:` URLs never
//!   reach the network stack). The flags that stop Chromium's own background traffic (component
//!   updates, field trials, safe browsing) keep the log to the page's requests, and any request
//!   elsewhere fails the test, whoever made it. The DOM is checked for external references too;
//! - every chart has data: in the DOM Chromium built (`--dump-dom`), each of the eight figures has
//!   an `<svg>` with at least one plotted `<polyline>` of three or more points and no "no data"
//!   placeholder, and the two-ledgers table has rows; the router-evaluation section follows with,
//!   for each of its two charts, plotted figures or the one-line note of a section the views
//!   cannot fill yet;
//! - a screenshot (`--screenshot`, 1280×4000) lands in `target/test-output/report_browser/`.
//!
//! A second test writes the same page with `tierwatch report` from Postgres (a replay of the same
//! kind of run) and checks that its charts and tables equal those of the same files replayed into
//! SQLite: the report's queries are one text for both stores.
//!
//! Chromium is required (`scripts/services.sh install` installs it): the test fails without it.

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::sqlite::SqlitePoolOptions;
use tierwatch::sim::{Scenario, SimConfig};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The chart titles of a page with rescoring configured (each in its SVG's caption text).
const CHARTS: [&str; 8] = [
    "Failed-deflection rate by tier",
    "Thumbs-down per 1,000 decisions by tier",
    "Suspected misroutes in the cheap tier",
    "Confidence drift: KS D",
    "Confidence drift: PSI",
    "Routed to the cheap tier",
    "Deflection rate vs human-handled volume",
    "Inference savings vs excess human cost",
];

/// The router-evaluation charts (one per classifier version and router, after the eight above)
/// and the start of the note that stands in for each when its view has no row.
const ROUTER_EVAL: [(&str, &str); 2] =
    [("Reliability curve: ", "Reliability curve"), ("Net cost vs threshold: ", "Net cost against the threshold")];

fn sim() -> SimConfig {
    let mut s = SimConfig::new(Scenario::Postmortem);
    s.days = 12;
    s.conversations_per_day = 300;
    s.seed = 11;
    s
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/report_browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rescorer.onnx").canonicalize().unwrap()
}

/// Drift from the first three days (no reference file), evaluated every second with a small
/// `min_n`; the default rescorer on its default sample; the report re-rendered at most every second.
fn settings_toml() -> String {
    format!(
        "[drift]\nbaseline_days = 3\nmin_n = 100\nevaluate_every_seconds = 1\nlookback_days = 60\n\
         [rescore]\nmodel_path = \"{}\"\nqueue_capacity = 100000\n",
        model_path().display()
    )
}

/// GET with the response's header block: (status line, headers lowercased, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, head.to_lowercase(), body.to_string())
}

/// Wait until `sql` (one integer) on the daemon's SQLite file returns at least `min`.
async fn wait_sqlite(pool: &sqlx::SqlitePool, sql: &str, min: i64, daemon: &mut Daemon, timeout: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let got: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1);
        if got >= min {
            return got;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!("daemon exited ({status}) while waiting for {sql} ≥ {min}\n{}", daemon.log_tail());
        }
        assert!(start.elapsed() < timeout, "timed out: {sql} = {got}, want ≥ {min}\n{}", daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Run Chromium headless on `url` with `mode_args`, bounded in time; returns (stdout, the
/// requests its NetLog recorded, its log on stderr).
fn chromium(url: &str, mode_args: &[String], work: &Path, name: &str) -> (String, Vec<NetRequest>, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (bash scripts/services.sh install)"
    );
    let netlog = work.join(format!("{name}.netlog.json"));
    let profile = work.join(format!("{name}-profile"));
    let stdout_path = work.join(format!("{name}.stdout"));
    let stderr_path = work.join(format!("{name}.stderr"));
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,\
             CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying",
            // Console messages (a Content-Security-Policy violation among them) on stderr.
            "--enable-logging=stderr",
            "--metrics-recording-only",
            "--hide-scrollbars",
            "--window-size=1280,4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg("--net-log-capture-mode=Default")
        .args(mode_args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&stdout_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 90 s: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "chromium {status}: {stderr}");
    let log =
        std::fs::read_to_string(&netlog).unwrap_or_else(|e| panic!("no netlog {}: {e}\n{stderr}", netlog.display()));
    (std::fs::read_to_string(&stdout_path).unwrap(), netlog_requests(&log), stderr)
}

/// One request the browser's network stack started, from the NetLog.
#[derive(Debug)]
struct NetRequest {
    url: String,
    /// The NetworkIsolationKey: "<top-frame site> <frame site>". Every request made on behalf of a
    /// page (its navigation and anything it loads, wherever from) is keyed by the page's site;
    /// the browser's own background requests (component updates, network time, account checks)
    /// are keyed `null null` or by their service's site.
    isolation_key: String,
}

/// Every `URL_REQUEST_START_JOB` of a NetLog (JSON: `constants.logEventTypes` names the event
/// type numbers). A log cut short by the exit lacks its closing brackets; they are added back.
fn netlog_requests(log: &str) -> Vec<NetRequest> {
    let doc: serde_json::Value = serde_json::from_str(log)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", log.trim_end().trim_end_matches(','))))
        .expect("a NetLog in JSON");
    let start_job = doc["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().expect("event type");
    let events = doc["events"].as_array().expect("events");
    events
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job) && e["params"]["url"].is_string())
        .map(|e| NetRequest {
            url: e["params"]["url"].as_str().unwrap_or_default().to_string(),
            isolation_key: e["params"]["network_isolation_key"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Points of a polyline's `points` attribute.
fn points(polyline: &str) -> usize {
    polyline
        .split_once("points=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(0, |(pts, _)| pts.split_whitespace().filter(|p| p.contains(',')).count())
}

/// The structural checks of a rendered report page (from the daemon or the DOM Chromium built).
fn check_page(html: &str) {
    assert!(!html.contains("<script"), "a script in the page");
    assert!(!html.contains("No data yet"), "the page says it has no data");
    assert!(!html.contains("class=\"nodata\""), "a chart without data");
    let figures: Vec<&str> = html.split("<figure>").skip(1).map(|f| f.split("</figure>").next().unwrap()).collect();
    assert!(figures.len() >= CHARTS.len(), "figures: {}", figures.len());
    for (figure, title) in figures.iter().zip(CHARTS) {
        assert!(figure.contains(title), "figure order: want {title:?}");
        assert_eq!(figure.matches("<svg").count(), 1, "{title}: one svg");
        let plotted = figure.split("<polyline").skip(1).map(points).filter(|n| *n >= 3).count();
        assert!(plotted >= 1, "{title}: no plotted line with ≥ 3 points");
    }
    // The router evaluation: each chart drawn (its points as circles) or skipped with a note.
    let section = html.split("<h2>Router evaluation</h2>").nth(1).expect("the router-evaluation section");
    let section = section.split("<h2>").next().unwrap();
    let extra = &figures[CHARTS.len()..];
    for figure in extra {
        let (title, _) = ROUTER_EVAL.iter().find(|(t, _)| figure.contains(t)).expect("a router-evaluation figure");
        assert!(section.contains(figure), "{title}: outside the router-evaluation section");
        assert_eq!(figure.matches("<svg").count(), 1, "{title}: one svg");
        assert!(figure.matches("<circle").count() >= 3, "{title}: fewer than three plotted points");
    }
    for (title, note) in ROUTER_EVAL {
        let drawn = extra.iter().any(|f| f.contains(title));
        let skipped = section.contains(&format!("<p class=\"skipped\">{note}"));
        assert!(drawn || skipped, "{title}: neither drawn nor skipped with a note");
        println!("router evaluation, {note}: {}", if drawn { "drawn" } else { "skipped (no row yet)" });
    }
    let ledgers = html.split("<h2>The two ledgers</h2>").nth(1).expect("the two-ledgers table");
    let table = ledgers.split("</table>").next().unwrap();
    assert!(table.matches("<tr").count() >= 3, "two-ledgers rows: {table}");
    for h in ["Deflection rate against human tickets", "Quality per tier", "Rescoring slice", "Alert episodes"] {
        assert!(html.contains(h), "missing table {h}");
    }
}

/// A PNG's width and height from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_report_loads_in_headless_chromium_with_every_chart_and_nothing_external() {
    let test_started = Instant::now();
    let env = Env::new("report_browser").await;
    // The simulated run into the real broker, keyed and co-partitioned.
    let s = sim();
    let out = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
        .args(["simulate", "--kafka", &env.brokers, "--format", "avro"])
        .args([
            "--routing-topic",
            &env.topics[0],
            "--feedback-topic",
            &env.topics[1],
            "--tickets-topic",
            &env.topics[2],
        ])
        .args(["--days", &s.days.to_string(), "--conversations-per-day", &s.conversations_per_day.to_string()])
        .args(["--seed", &s.seed.to_string()])
        .output()
        .expect("run tierwatch simulate");
    assert!(out.status.success(), "simulate: {}", String::from_utf8_lossy(&out.stderr));
    let counts = sim_counts(&sim());

    let port = free_port();
    let db = env.dir.path().join("tierwatch.sqlite");
    let cfg = env.dir.path().join("tierwatch.toml");
    write_file(
        &cfg,
        &format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"g-{}\"\n[topics.routing]\nname = \"{}\"\nformat = \"avro\"\n\
             [topics.feedback]\nname = \"{}\"\nformat = \"avro\"\n[topics.tickets]\nname = \"{}\"\nformat = \"avro\"\n\
             [sqlite]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nreport_cache_seconds = 1\n{}",
            env.brokers,
            env.topics[0],
            env.topics[0],
            env.topics[1],
            env.topics[2],
            db.display(),
            settings_toml()
        ),
    );
    let mut daemon = Daemon::start(&cfg, "report_browser");
    // An empty store first: the page says so, with a 200.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, headers, body) = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break get(port, "/report");
        }
        assert!(Instant::now() < deadline, "no HTTP server\n{}", daemon.log_tail());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html; charset=utf-8"), "{headers}");

    let pool =
        SqlitePoolOptions::new().max_connections(1).connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let timeout = Duration::from_secs(180);
    for (topic, want) in env.topics.iter().zip(counts) {
        let sql = format!("SELECT COALESCE(SUM(next_offset), 0) FROM tw_offsets WHERE topic = '{topic}'");
        let got = wait_sqlite(&pool, &sql, want, &mut daemon, timeout).await;
        assert_eq!(got, want, "{topic}");
    }
    println!(
        "committed {counts:?} after {:.1}s; the first page said: {}",
        test_started.elapsed().as_secs_f64(),
        if body.contains("No data yet") { "no data yet" } else { "(already had data)" }
    );
    // Evaluated drift (both windows), and the rescoring slice scored with nothing pending.
    wait_sqlite(&pool, "SELECT COUNT(*) FROM confidence_drift_daily WHERE signal = 'router_confidence' AND status IN ('ok','warning','critical') AND \"window\" = '7d'", 3, &mut daemon, timeout).await;
    let scored =
        wait_sqlite(&pool, "SELECT COUNT(*) FROM review_queue WHERE status = 'scored'", 20, &mut daemon, timeout).await;
    wait_sqlite(
        &pool,
        "SELECT CASE WHEN COUNT(*) = 0 THEN 1 ELSE 0 END FROM review_queue WHERE status = 'pending'",
        1,
        &mut daemon,
        timeout,
    )
    .await;
    pool.close().await;
    // The cache re-renders at most every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (status, headers, body) = get(port, "/report");
    assert!(status.contains("200"), "{status}: {body}");
    assert!(headers.contains("content-type: text/html; charset=utf-8"), "{headers}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
        "{headers}"
    );
    check_page(&body);
    let work = output_dir();
    std::fs::write(work.join("report.html"), &body).unwrap();

    // The browser: the DOM it built, then a screenshot, each with its NetLog.
    let url = format!("http://127.0.0.1:{port}/report");
    let origin = format!("http://127.0.0.1:{port}/");
    let (dom, net_dom, log_dom) = tokio::task::block_in_place(|| {
        chromium(&url, &["--dump-dom".to_owned(), "--virtual-time-budget=5000".to_owned()], &work, "dom")
    });
    std::fs::write(work.join("dom.html"), &dom).unwrap();
    check_page(&dom);
    assert!(dom.contains("<title>tierwatch report</title>"), "not the report page");
    for attr in ["src=\"", "href=\"", "url(", "xlink:href=\""] {
        for part in dom.split(attr).skip(1) {
            assert!(
                part.starts_with("data:") || part.starts_with('#'),
                "an external reference: {attr}{}",
                &part[..part.len().min(80)]
            );
        }
    }
    let screenshot = work.join("report.png");
    let _ = std::fs::remove_file(&screenshot);
    let (_, net_shot, log_shot) = tokio::task::block_in_place(|| {
        chromium(&url, &[format!("--screenshot={}", screenshot.display())], &work, "screenshot")
    });
    // The page's requests: keyed by its site. Only the daemon's origin (data: URLs never reach the
    // network stack); the navigation itself among them.
    let site = "http://127.0.0.1";
    let mut page_requests = 0;
    for (requests, log) in [(&net_dom, &log_dom), (&net_shot, &log_shot)] {
        let page: Vec<&NetRequest> =
            requests.iter().filter(|r| r.isolation_key.split(' ').next() == Some(site)).collect();
        assert!(page.iter().any(|r| r.url == url), "the NetLog lacks the page's own request: {requests:#?}");
        let external: Vec<&&NetRequest> =
            page.iter().filter(|r| !r.url.starts_with(&origin) && !r.url.starts_with("data:")).collect();
        assert!(external.is_empty(), "the page requested outside the daemon's origin: {external:#?}");
        page_requests += page.len();
        let background: Vec<&str> = requests
            .iter()
            .filter(|r| r.isolation_key.split(' ').next() != Some(site))
            .map(|r| r.url.as_str())
            .collect();
        println!("the browser's own background requests (not the page's): {background:?}");
        // Anything the policy refused would have been an attempt to load something else.
        assert!(!log.contains("Content Security Policy") && !log.contains("Refused to"), "a CSP violation: {log}");
    }
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("no screenshot {}: {e}", screenshot.display()));
    assert_eq!(png_size(&png), (1280, 4000), "screenshot size");
    assert!(png.len() > 50_000, "a near-empty screenshot ({} bytes)", png.len());
    println!(
        "report: {} KiB, {scored} scored samples; the page's requests in both NetLogs: {page_requests}, all on \
         {origin}; screenshot {} ({} KiB); {:.1}s in all",
        body.len() / 1024,
        screenshot.display(),
        png.len() / 1024,
        test_started.elapsed().as_secs_f64()
    );
    daemon.stop();
}

/// Replay files into a store described by `store_toml` and write its report with `tierwatch
/// report`; returns the page.
fn replay_and_report(dir: &Path, files: &[PathBuf; 3], store_toml: &str, name: &str) -> String {
    let cfg = dir.join(format!("{name}.toml"));
    write_file(&cfg, &format!("{store_toml}\n[http]\nlisten = \"\"\n{}", settings_toml()));
    replay(&cfg, files);
    let page = dir.join(format!("{name}.html"));
    let out = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
        .args(["report", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&page)
        .output()
        .expect("run tierwatch report");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tierwatch report ({name}): {stderr}");
    println!("{name}: {}", stderr.trim());
    std::fs::read_to_string(&page).unwrap()
}

/// The page without its heading (which names the store and the time of rendering).
fn body_after_heading(html: &str) -> &str {
    html.split_once("<figure>").map(|(_, rest)| rest).expect("a figure")
}

/// The two stores' pages agree: the same text and markup, and every number equal up to one unit
/// of its last printed digit. The stores sum the same floating-point costs in different orders, so
/// a total that lands on a rounding boundary prints as 338.69 from one and 338.70 from the other.
fn assert_same_page(a: &str, b: &str) {
    fn tokens(s: &str) -> Vec<&str> {
        let mut out = vec![];
        let mut start = 0;
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'.') {
                    j += 1;
                }
                out.push(&s[start..i]);
                out.push(&s[i..j]);
                start = j;
                i = j;
            } else {
                i += 1;
            }
        }
        out.push(&s[start..]);
        out
    }
    let (ta, tb) = (tokens(a), tokens(b));
    assert_eq!(ta.len(), tb.len(), "the same run, another page structure");
    for (x, y) in ta.iter().zip(&tb) {
        if x == y {
            continue;
        }
        let (Ok(vx), Ok(vy)) = (x.parse::<f64>(), y.parse::<f64>()) else {
            panic!("the same run, another page: {x:?} vs {y:?}");
        };
        let decimals = x.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
        let unit = 10f64.powi(-decimals);
        assert!((vx - vy).abs() <= unit * 1.0001, "the same run, another number: {x} vs {y}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tierwatch_report_from_postgres_equals_the_same_run_in_sqlite() {
    let env = Env::new("report_pg").await;
    let dir = env.dir.path().to_path_buf();
    let files = tokio::task::block_in_place(|| {
        tierwatch::sim::write_avro_ocf_days(&dir, &sim()).unwrap();
        ["routing_decisions.avro", "feedback.avro", "support_tickets.avro"].map(|f| dir.join(f))
    });
    let pg = tokio::task::block_in_place(|| {
        replay_and_report(
            &dir,
            &files,
            &format!("[postgres]\nurl = \"{}\"\nmax_connections = 4", env.db_url),
            "postgres",
        )
    });
    let sqlite = tokio::task::block_in_place(|| {
        replay_and_report(
            &dir,
            &files,
            &format!("[sqlite]\npath = \"{}\"", dir.join("replay.sqlite").display()),
            "sqlite",
        )
    });
    assert!(pg.contains("the Postgres store") && sqlite.contains("the SQLite store"));
    check_page(&pg);
    check_page(&sqlite);
    std::fs::write(output_dir().join("postgres.html"), &pg).unwrap();
    std::fs::write(output_dir().join("sqlite.html"), &sqlite).unwrap();
    // The per-tier quality table is left out: its review counts can differ between two replays
    // of the same files. Reviews arrive 1–5 days after their decision, past the 72 h attribution
    // window, and one near the point where its conversation leaves the join state is counted or
    // not depending on where the batches were cut (seen once in six runs: one review on one day).
    // Everything else must agree.
    let without_quality = |page: &str| -> String {
        let (head, rest) = page.split_once("<h2>Quality per tier</h2>").expect("the quality table");
        let (_, tail) = rest.split_once("<h2>").expect("a section after the quality table");
        format!("{head}<h2>{tail}")
    };
    assert_same_page(&without_quality(body_after_heading(&pg)), &without_quality(body_after_heading(&sqlite)));

    // --days: the last five days only.
    let out = Command::new(env!("CARGO_BIN_EXE_tierwatch"))
        .args(["report", "--days", "5", "--config"])
        .arg(dir.join("postgres.toml"))
        .arg("--out")
        .arg(dir.join("last5.html"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last5 = std::fs::read_to_string(dir.join("last5.html")).unwrap();
    assert!(last5.contains("(5 days, UTC cohort days)"), "{}", &last5[..last5.len().min(2000)]);
}
