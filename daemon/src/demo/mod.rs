//! `tierwatch demo`: the post-mortem in a box, with no servers.
//!
//! 1. The simulator writes the scenario's three streams (Avro container files) and, separately,
//!    a training-time reference of the router's confidence: the same traffic before any drift
//!    (the control scenario's first two weeks under another seed), the distribution the router
//!    was calibrated on.
//! 2. [`crate::replay`] feeds the files through the production pipeline into a fresh SQLite
//!    database, then one evaluator pass computes drift rows and alert episodes over the whole run.
//! 3. The timeline is read back from the public views (`alerts`, `confidence_drift_daily`, …), the
//!    lead times are measured, and [`crate::report`] writes a self-contained HTML report.
//!
//! Everything is deterministic for a seed; the demo's files stay in the output directory so the
//! views can be queried afterwards (`sqlite3 <out>/tierwatch-demo.sqlite`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use crate::alert::quality::{AGGREGATE_KIND, KIND as QUALITY_KIND};
use crate::config::Config;
use crate::drift::evaluator::DRIFT_KIND;
use crate::event::{Event, RouterKind};
use crate::metrics::DAY_MS;
use crate::replay::ReplayOutcome;
use crate::report::{Page, ReportData, ReportPool, ReportSettings};
use crate::sim::{self, Scenario, SimConfig};
use crate::stats::hist::ConfHist;
use crate::store::sqlite::SqliteEvalStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// The committed default rescorer, built into the binary so the demo needs no files.
const MODEL_ONNX: &[u8] = include_bytes!("../../../models/rescorer.onnx");
const MODEL_SIDECAR: &[u8] = include_bytes!("../../../models/rescorer.json");

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub scenario: Scenario,
    pub days: u32,
    pub conversations_per_day: u32,
    pub seed: u64,
    /// Conversations per day of the training-time reference sample (two weeks of pre-drift
    /// traffic). Large, as a real training set is: the reference's size sets how small a shift is
    /// significant.
    pub reference_conversations_per_day: u32,
    /// Output directory (created): the streams, the reference, the config, the database, the report.
    pub out: PathBuf,
    /// Write `report.html`.
    pub report: bool,
    /// Show a progress bar while replaying.
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: Scenario::Postmortem,
            days: 140,
            conversations_per_day: 1500,
            seed: 42,
            reference_conversations_per_day: 5000,
            out: PathBuf::from("tierwatch-demo"),
            report: true,
            progress: false,
        }
    }
}

pub use crate::report::AlertMark;

/// Every alert episode of a run, in firing order.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub scenario: Scenario,
    pub start: NaiveDate,
    pub days: u32,
    pub conversations_per_day: u32,
    pub seed: u64,
    /// The first day of the simulated query-mix drift, if the scenario drifts.
    pub drift_starts: Option<NaiveDate>,
    pub alerts: Vec<AlertMark>,
    /// The threshold advice of the 7-day window ending the day the first per-tier quality alert
    /// fired (what a team would have read that day), per classifier version.
    pub advice_at_alert: Vec<crate::router_eval::advise::Advice>,
}

impl Timeline {
    /// The first episode of a kind.
    pub fn first(&self, kind: &str) -> Option<&AlertMark> {
        self.alerts.iter().filter(|a| a.kind == kind).min_by_key(|a| a.fired_at)
    }

    pub fn first_drift(&self) -> Option<&AlertMark> {
        self.first(DRIFT_KIND)
    }

    pub fn first_per_tier(&self) -> Option<&AlertMark> {
        self.first(QUALITY_KIND)
    }

    pub fn first_aggregate(&self) -> Option<&AlertMark> {
        self.first(AGGREGATE_KIND)
    }

    /// Week number (1-based) of a time within the run.
    pub fn week_of(&self, t: DateTime<Utc>) -> i64 {
        let start = self.start.and_hms_opt(0, 0, 0).map(|d| d.and_utc()).unwrap_or(t);
        (t - start).num_milliseconds().div_euclid(7 * DAY_MS) + 1
    }

    /// Days from `earlier` firing to `later` firing (event time), if both fired.
    pub fn lead_days(earlier: Option<&AlertMark>, later: Option<&AlertMark>) -> Option<f64> {
        Some((later?.fired_at - earlier?.fired_at).num_milliseconds() as f64 / DAY_MS as f64)
    }

    /// The human-readable timeline the demo prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let end = self.start + chrono::Days::new(u64::from(self.days));
        s.push_str(&format!(
            "tierwatch demo: {} scenario, {} days ({} weeks) from {} to {}, {} conversations/day, seed {}\n",
            self.scenario,
            self.days,
            self.days / 7,
            self.start,
            end,
            self.conversations_per_day,
            self.seed
        ));
        match self.drift_starts {
            Some(d) => s.push_str(&format!(
                "simulated query-mix drift starts {d} (week {}); satisfaction only falls later\n\n",
                (d - self.start).num_days() / 7 + 1
            )),
            None => s.push_str("no simulated drift (control)\n\n"),
        }
        if self.alerts.is_empty() {
            s.push_str("no alert fired\n");
            return s;
        }
        s.push_str("Alerts (first episode per rule and subject; event time, UTC):\n");
        s.push_str(&format!(
            "  {:<10} {:>4}  {:<28} {:<44} {:>7} {:>7}  {:<10}  {}\n",
            "fired", "week", "rule", "subject", "value", "thresh", "known by", "severity"
        ));
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.alerts {
            if !seen.insert((a.kind.clone(), a.subject.clone())) {
                continue;
            }
            let severity = match a.escalated_at {
                Some(e) if e > a.fired_at => format!("warning, critical from {}", e.format("%Y-%m-%d")),
                _ => a.severity.clone(),
            };
            s.push_str(&format!(
                "  {:<10} {:>4}  {:<28} {:<44} {:>7.4} {:>7.4}  {:<10}  {}\n",
                a.fired_at.format("%Y-%m-%d"),
                self.week_of(a.fired_at - chrono::Duration::milliseconds(1)),
                a.kind,
                short_subject(&a.subject),
                a.value,
                a.threshold,
                a.known_at.format("%Y-%m-%d"),
                severity
            ));
        }
        s.push_str("\nLead times (first firing, event time):\n");
        let line = |name: &str, a: Option<&AlertMark>, b: Option<&AlertMark>| match (a, b) {
            (Some(_), Some(_)) => {
                let d = Self::lead_days(a, b).unwrap_or_default();
                if d >= 0.0 {
                    format!("  {name:<62} {d:>6.0} days = {:.1} weeks\n", d / 7.0)
                } else {
                    format!("  {name:<62} no lead: it came {:.0} days later\n", -d)
                }
            }
            (Some(_), None) => format!("  {name:<62} the later signal never fired within the run\n"),
            _ => format!("  {name:<62} n/a (the earlier signal did not fire)\n"),
        };
        let (drift, tier, agg) = (self.first_drift(), self.first_per_tier(), self.first_aggregate());
        s.push_str(&line("confidence drift  → aggregate (unsplit) quality signal", drift, agg));
        s.push_str(&line("per-tier quality  → aggregate (unsplit) quality signal", tier, agg));
        s.push_str(&line("confidence drift  → per-tier quality alert", drift, tier));
        let misroute = self.first(crate::alert::misroute::KIND);
        if misroute.is_some() {
            s.push_str(&line("misroute estimate → aggregate (unsplit) quality signal", misroute, agg));
        }
        let calibration = self.first(crate::router_eval::CALIBRATION_KIND);
        if calibration.is_some() {
            s.push_str(&line("calibration regression → aggregate (unsplit) quality signal", calibration, agg));
        }
        let routed_share = self.first(crate::drift::routed_share::KIND);
        if routed_share.is_some() {
            s.push_str(&line("routed share deviation → aggregate (unsplit) quality signal", routed_share, agg));
        }
        for a in &self.advice_at_alert {
            s.push_str(&advice_line(a));
        }
        s
    }
}

/// "As it stood the day the per-tier alert fired: raising … would have cut …".
fn advice_line(a: &crate::router_eval::advise::Advice) -> String {
    let Some((saving, lo, hi)) = a.saving() else {
        return format!(
            "\nThreshold advice on {} (7-day window): no threshold of {} meets the failure-rate ceiling\n",
            a.day, a.classifier_version
        );
    };
    let Some(r) = &a.recommended else { return String::new() };
    if (r.threshold - a.current.threshold).abs() < 1e-9 {
        return format!(
            "\nThreshold advice on {} (7-day window): keep {}'s threshold at {:.2}\n",
            a.day, a.classifier_version, a.current.threshold
        );
    }
    let verb = if r.threshold > a.current.threshold { "raising" } else { "lowering" };
    format!(
        "\nThreshold advice as it stood the day the per-tier alert fired ({}, 7-day window):\n  {verb} {}'s threshold from {:.2} to {:.2} would have cut the net weekly cost by ${:.0} (bounds ${:.0} to ${:.0}; {})\n",
        a.day,
        a.classifier_version,
        a.current.threshold,
        r.threshold,
        saving,
        lo,
        hi,
        a.confidence()
    )
}

fn short_subject(s: &str) -> String {
    // Drift subjects carry router and signal too; the timeline has room for the essentials.
    let s = s.replace("classifier_version=", "").replace(" router=PRE_ROUTE", "").replace(" signal=", " ");
    if s.chars().count() > 44 {
        s.chars().take(43).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

/// What a demo run produced.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub timeline: Timeline,
    pub records: u64,
    /// The replayed files: routing decisions, feedback, tickets.
    pub streams: [PathBuf; 3],
    pub database: PathBuf,
    pub config: PathBuf,
    pub report: Option<PathBuf>,
    pub simulate: Duration,
    pub replay: Duration,
    pub report_time: Duration,
    pub total: Duration,
}

/// Run the demo end to end.
pub fn run(opts: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let out = opts.out.canonicalize().with_context(|| format!("resolving {}", opts.out.display()))?;

    let mut sim_cfg = SimConfig::new(opts.scenario);
    sim_cfg.days = opts.days;
    sim_cfg.conversations_per_day = opts.conversations_per_day;
    sim_cfg.seed = opts.seed;
    // Late outcomes (tickets days after the last conversations) still arrive, so the last
    // cohorts are complete as far as the simulation goes.
    sim_cfg.drain_hours = 96;
    let streams = out.join("streams");
    std::fs::create_dir_all(&streams)?;
    sim::write_avro_ocf_days(&streams, &sim_cfg).context("simulating the scenario")?;
    let reference = out.join("router-reference.twref");
    let (ref_n, calibrated_share) =
        write_training_reference(&sim_cfg, opts.reference_conversations_per_day, &reference)?;
    tracing::info!(n = ref_n, path = %reference.display(), "training-time reference written");
    let simulate = started.elapsed();

    // A fresh database: the demo shows one run, not an accumulation of runs.
    let database = out.join("tierwatch-demo.sqlite");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", database.display()));
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing the previous {}", p.display()))?;
        }
    }
    let models = out.join("models");
    std::fs::create_dir_all(&models)?;
    let model = models.join("rescorer.onnx");
    std::fs::write(&model, MODEL_ONNX)?;
    std::fs::write(models.join("rescorer.json"), MODEL_SIDECAR)?;
    let config_text = demo_config(&sim_cfg, &database, &reference, &model, calibrated_share);
    let config_path = out.join("tierwatch-demo.toml");
    std::fs::write(&config_path, &config_text)?;
    let cfg = Config::from_toml_str(&config_text).context("the demo's generated configuration")?;

    let replay_started = Instant::now();
    let ext = sim::FileFormat::AvroOcf.extension();
    let files = [sim::ROUTING_FILE, sim::FEEDBACK_FILE, sim::TICKETS_FILE].map(|f| streams.join(format!("{f}.{ext}")));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (store, outcome) = replay_into(&rt, &cfg, &files, opts.progress, Arc::new(AtomicBool::new(false)))?;
    let replay = replay_started.elapsed();

    let pool = ReportPool::Sqlite(store.pool().clone());
    let alerts = rt.block_on(crate::report::load::alerts(&pool, cfg.attribution.window_ms()))?;
    let advice_at_alert = match alerts.iter().filter(|a| a.kind == QUALITY_KIND).map(|a| a.fired_at).min() {
        Some(fired) => {
            // The evaluated day is the one whose end is the alert's window end.
            let day = (fired - chrono::Duration::milliseconds(1)).date_naive().to_string();
            let rows = rt.block_on(crate::report::load::threshold_advice(&pool, "7d"))?;
            let that_day: Vec<_> = rows.into_iter().filter(|r| r.day == day).collect();
            crate::router_eval::advise::latest(&that_day, None)
        }
        None => vec![],
    };
    let timeline = Timeline {
        scenario: opts.scenario,
        start: sim_cfg.start,
        days: sim_cfg.days,
        conversations_per_day: sim_cfg.conversations_per_day,
        seed: sim_cfg.seed,
        drift_starts: sim_cfg.drift.map(|d| sim_cfg.start + chrono::Days::new(u64::from(d.start_day))),
        alerts,
        advice_at_alert,
    };
    let report_started = Instant::now();
    let report = if opts.report {
        let data = rt.block_on(ReportData::load(
            &pool,
            &ReportSettings::from_config(&cfg),
            timeline.start,
            timeline.days as usize,
        ))?;
        let page = Page {
            title: "tierwatch demo report".to_owned(),
            heading: format!("tierwatch: the {} scenario", timeline.scenario),
            intro: format!(
                "Simulated traffic through the production pipeline into the embedded store. {}",
                crate::report::render::MARKERS_NOTE
            ),
            preformatted: Some(timeline.render()),
        };
        let path = out.join("report.html");
        std::fs::write(&path, crate::report::render::render(&data, &page)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Some(path)
    } else {
        None
    };
    let report_time = report_started.elapsed();
    Ok(DemoOutcome {
        timeline,
        records: outcome.stats.messages,
        streams: files,
        database,
        config: config_path,
        report,
        simulate,
        replay,
        report_time,
        total: started.elapsed(),
    })
}

/// Open (and migrate) the demo's database and replay `files` into it.
fn replay_into(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    files: &[PathBuf; 3],
    progress: bool,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<(Arc<SqliteStore>, ReplayOutcome)> {
    let Some(sqlite) = &cfg.sqlite else { anyhow::bail!("the demo runs on the embedded store") };
    let store = rt.block_on(async {
        let store = SqliteStore::open(&sqlite.path).await?;
        store.migrate().await?;
        store.write_settings(&cfg.view_settings()).await?;
        anyhow::Ok(Arc::new(store))
    })?;
    let outcome = crate::replay::replay_files(
        rt,
        cfg,
        store.clone(),
        SqliteEvalStore::new(store.clone()),
        [files[0].as_path(), files[1].as_path(), files[2].as_path()],
        progress,
        shutdown,
    )?;
    Ok((store, outcome))
}

/// Replay a finished demo's files into its database again, with its configuration: the stored
/// offsets make this a no-op (the resumability the backfill case relies on).
pub fn replay_again(done: &DemoOutcome, shutdown: Arc<AtomicBool>) -> anyhow::Result<ReplayOutcome> {
    let cfg = Config::load(&done.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    Ok(replay_into(&rt, &cfg, &done.streams, false, shutdown)?.1)
}

/// The router's confidence on two weeks of pre-drift traffic (another seed, so the reference is
/// not the monitored sample itself), as a `tierwatch reference build` histogram file.
/// Writes the router's training-time reference; returns its size and the share of it at or above
/// the threshold (what the router was calibrated to send to the cheap tier).
fn write_training_reference(cfg: &SimConfig, per_day: u32, path: &Path) -> anyhow::Result<(u64, f64)> {
    let mut ref_cfg = SimConfig::new(Scenario::Control);
    ref_cfg.days = 14;
    ref_cfg.conversations_per_day = per_day;
    ref_cfg.seed = cfg.seed ^ 0x7261_696e_696e_6721;
    ref_cfg.threshold = cfg.threshold;
    ref_cfg.classifier_version = cfg.classifier_version.clone();
    let mut hist = ConfHist::new();
    for day in sim::days(&ref_cfg) {
        for ev in &day.events {
            if let Event::Decision(d) = ev {
                if d.router == RouterKind::PreRoute && d.classifier_version == cfg.classifier_version {
                    hist.record(d.confidence);
                }
            }
        }
    }
    crate::drift::reference::write(path, &hist)?;
    let at = crate::stats::hist::bin_of(cfg.threshold).unwrap_or(0);
    let cheap: u64 = hist.iter_nonzero().filter(|(b, _)| *b >= at).map(|(_, c)| c).sum();
    Ok((hist.total(), cheap as f64 / hist.total().max(1) as f64))
}

/// The configuration the demo runs with, written next to the database so a user can see (and
/// reuse) exactly what produced the timeline.
fn demo_config(sim: &SimConfig, database: &Path, reference: &Path, model: &Path, calibrated_share: f64) -> String {
    let toml_str = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"# Generated by `tierwatch demo`: the embedded store, the scenario's training-time reference,
# and every threshold at its documented default.

[sqlite]
path = "{db}"

[http]
# No HTTP server for a batch run.
listen = ""

[ledger]
capable_tier = "capable"
# No baseline period: excess human cost is measured against the capable tier's same-day
# failed-deflection rate. (A pooled pre-drift period would charge the capable tier for the harder
# queries it is routed, since routing selects them.)

[drift]
# Every pass re-evaluates the whole run (a live daemon looks back 60 days).
lookback_days = {lookback}

[drift.reference_files]
# The router's confidence on its calibration traffic.
"{cv}" = "{reference}"

[routing.targets."{cv}"]
# What the router was calibrated to send to the cheap tier: its training-time reference's share at
# or above the threshold ({threshold}). routed_share_deviation fires when the 7-day observed share's
# interval leaves this ± tolerance.
cheap_share = {share:.3}
tolerance = 0.05

[rescore]
# The default rescorer (models/rescorer.onnx): a second opinion on a long-tail-weighted 2% sample.
model_path = "{model}"
# A replay delivers weeks of traffic in seconds: queue it all rather than shed.
queue_capacity = 1000000
"#,
        db = toml_str(database),
        lookback = sim.days + 14,
        cv = sim.classifier_version,
        reference = toml_str(reference),
        model = toml_str(model),
        threshold = sim.threshold,
        share = calibrated_share,
    )
}
