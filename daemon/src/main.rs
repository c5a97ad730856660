//! The `tierwatch` command line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tierwatch::alert::OutboxStore;
use tierwatch::config::Config;
use tierwatch::drift::evaluator::{EvalStore, Evaluator};
use tierwatch::pipeline::Pipeline;
use tierwatch::store::postgres::PgEvalStore;
use tierwatch::store::postgres::PgStore;
use tierwatch::store::sqlite::SqliteEvalStore;
use tierwatch::store::sqlite::SqliteStore;
use tierwatch::store::Store;
use tierwatch::telemetry::Telemetry;

#[derive(Parser)]
#[command(
    name = "tierwatch",
    version,
    about = "Per-tier quality, confidence drift and deflection ledger for LLM routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the three topics and keep the metrics in Postgres until SIGTERM/SIGINT.
    Run {
        /// TOML configuration file (`TIERWATCH_…` environment variables override it).
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Replay the three streams from JSON Lines or Avro container files into the store (the
    /// backfill case). Resumable: running it again applies only what was not applied yet.
    Replay {
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
        /// RoutingDecision records (`.jsonl` or an Avro object container file).
        #[arg(long)]
        routing: PathBuf,
        /// Feedback records.
        #[arg(long)]
        feedback: PathBuf,
        /// SupportTicket records.
        #[arg(long)]
        tickets: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Generate a reference scenario's three event streams, deterministic for a seed: into files
    /// (with the ground truth apart; `tierwatch replay` feeds them through the pipeline) or
    /// straight to Kafka (keyed by conversation, onto co-partitioned topics).
    Simulate {
        #[command(flatten)]
        run: ScenarioArgs,
        /// First simulated day (UTC), `YYYY-MM-DD`, or `auto`: the run ends yesterday, so its
        /// data falls in a dashboard's default "last N days" (the compose loader uses it).
        /// Default: the scenario's fixed start, 2026-01-05.
        #[arg(long)]
        start: Option<SimStart>,
        /// Output directory (created). Required unless `--kafka` is given.
        #[arg(long, short, required_unless_present = "kafka")]
        out: Option<PathBuf>,
        /// Files: `jsonl` or `avro` (object container files). Kafka: `avro`, `confluent` (schema
        /// ids 1, 2, 3) or `json`.
        #[arg(long, value_enum, default_value_t = SimFormat::Jsonl)]
        format: SimFormat,
        /// Produce to this Kafka cluster (bootstrap servers) instead of writing files.
        #[arg(long, conflicts_with = "out")]
        kafka: Option<String>,
        #[arg(long, default_value = "llm.routing-decisions")]
        routing_topic: String,
        #[arg(long, default_value = "llm.feedback")]
        feedback_topic: String,
        #[arg(long, default_value = "support.tickets")]
        tickets_topic: String,
    },
    /// The post-mortem in a box, no servers needed: simulate the scenario (20 weeks by default),
    /// run it through the pipeline into SQLite, print when each alert fired and the lead times, and
    /// write a self-contained HTML report.
    Demo {
        #[command(flatten)]
        run: ScenarioArgs,
        /// Output directory: streams, reference, config, database and report.html.
        #[arg(long, short, default_value = "tierwatch-demo")]
        out: PathBuf,
        /// Skip the HTML report.
        #[arg(long)]
        no_report: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write the self-contained HTML report (charts, the two ledgers, alerts) from the configured
    /// store's public views, Postgres or SQLite: the page the daemon serves as `GET /report`.
    Report {
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
        /// Output file.
        #[arg(long, short, default_value = "report.html")]
        out: PathBuf,
        /// Only the last N days with data (default: every day in the store).
        #[arg(long, conflicts_with = "since")]
        days: Option<u32>,
        /// Only from this day (YYYY-MM-DD, UTC) on.
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
    },
    /// Per classifier version: the threshold in force's net cost over the last evaluated week,
    /// the recommended threshold, the saving and how sure it is (from `threshold_advice`).
    Advise {
        #[arg(long, short, env = "TIERWATCH_CONFIG")]
        config: PathBuf,
        /// Only this classifier version.
        #[arg(long)]
        classifier_version: Option<String>,
        /// The evaluated window to read (one of `router_eval.windows_days`, as `Nd`).
        #[arg(long, default_value = "7d")]
        window: String,
    },
    /// Drift references.
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
}

/// Which simulated run: shared by `simulate` and `demo`.
#[derive(clap::Args)]
struct ScenarioArgs {
    /// Which reference scenario.
    #[arg(long, value_enum, default_value_t = tierwatch::sim::Scenario::Postmortem)]
    scenario: tierwatch::sim::Scenario,
    #[arg(long, default_value_t = 140)]
    days: u32,
    #[arg(long, default_value_t = 1500)]
    conversations_per_day: u32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// `simulate --format`: which formats fit files and which fit Kafka is checked where they are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SimFormat {
    /// JSON Lines files (for Kafka: taken as `avro`, the default wire format).
    Jsonl,
    /// Avro object container files; on Kafka, bare Avro datums.
    Avro,
    /// Kafka only: the Confluent wire format (schema ids 1, 2, 3).
    Confluent,
    /// Kafka only: plain JSON objects.
    Json,
}

/// `--start`: a date, or `auto` for "end yesterday".
#[derive(Clone, Copy)]
enum SimStart {
    Date(chrono::NaiveDate),
    EndYesterday,
}

impl std::str::FromStr for SimStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(SimStart::EndYesterday);
        }
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(SimStart::Date)
            .map_err(|e| format!("expected YYYY-MM-DD or `auto`, got {s:?}: {e}"))
    }
}

impl ScenarioArgs {
    fn sim_config(&self, start: Option<SimStart>) -> tierwatch::sim::SimConfig {
        let mut cfg = tierwatch::sim::SimConfig::new(self.scenario);
        cfg.days = self.days;
        cfg.conversations_per_day = self.conversations_per_day;
        cfg.seed = self.seed;
        match start {
            Some(SimStart::Date(d)) => cfg.start = d,
            Some(SimStart::EndYesterday) => {
                cfg.start = chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(self.days))
            }
            None => {}
        }
        cfg
    }
}

#[derive(Subcommand)]
enum ReferenceCommand {
    /// Build a compact reference histogram from training-time confidences (one value per line,
    /// or CSV with the confidence in the first column).
    Build {
        #[arg(long, short)]
        input: PathBuf,
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own timeline; per-episode alert logs would bury it.
    let default_filter = match cli.command {
        Command::Demo { .. } => "error",
        _ => "info,librdkafka=warn,rdkafka=warn,sqlx=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIERWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(run),
        Command::Migrate { config } => load(&config).and_then(migrate),
        Command::Reference { command: ReferenceCommand::Build { input, output } } => build_reference(&input, &output),
        Command::Simulate { run, start, out, format, kafka, routing_topic, feedback_topic, tickets_topic } => {
            match (kafka, out) {
                (Some(brokers), _) => {
                    simulate_to_kafka(&run, start, brokers, [routing_topic, feedback_topic, tickets_topic], format)
                }
                (None, Some(out)) => simulate(&run, start, &out, format),
                (None, None) => Err(anyhow::anyhow!("give --out DIR or --kafka BROKERS")),
            }
        }
        Command::Demo { run, out, no_report, quiet } => demo(tierwatch::demo::DemoOptions {
            scenario: run.scenario,
            days: run.days,
            conversations_per_day: run.conversations_per_day,
            seed: run.seed,
            out,
            report: !no_report,
            progress: !quiet,
            ..Default::default()
        }),
        Command::Replay { config, routing, feedback, tickets, quiet } => {
            load(&config).and_then(|c| replay(c, [&routing, &feedback, &tickets], !quiet))
        }
        Command::Report { config, out, days, since } => load(&config).and_then(|c| {
            let range = match (days, since) {
                (Some(n), _) => tierwatch::report::DayRange::Last(n),
                (None, Some(d)) => tierwatch::report::DayRange::Since(d),
                (None, None) => tierwatch::report::DayRange::All,
            };
            report(c, range, &out)
        }),
        Command::Advise { config, classifier_version, window } => {
            load(&config).and_then(|c| advise(c, classifier_version.as_deref(), &window))
        }
        Command::CheckConfig { config } => load(&config).and_then(|c| {
            println!("{}", effective_config_json(&c)?);
            eprintln!("configuration OK");
            Ok(())
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn effective_config_json(c: &Config) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(c)?)
}

fn simulate(
    run: &ScenarioArgs,
    start: Option<SimStart>,
    out: &std::path::Path,
    format: SimFormat,
) -> anyhow::Result<()> {
    let cfg = run.sim_config(start);
    let scenario = run.scenario;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let started = std::time::Instant::now();
    let summary = match format {
        SimFormat::Jsonl => tierwatch::sim::write_jsonl_days(out, &cfg)?,
        SimFormat::Avro => tierwatch::sim::write_avro_ocf_days(out, &cfg)?,
        other => anyhow::bail!("--format for files must be `jsonl` or `avro`, not `{other:?}`"),
    };
    eprintln!(
        "{scenario}: {} decisions, {} feedback, {} tickets ({} ground-truth rows) in {:.1}s → {}",
        summary.decisions,
        summary.feedback,
        summary.tickets,
        summary.truth,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn demo(opts: tierwatch::demo::DemoOptions) -> anyhow::Result<()> {
    let o = tierwatch::demo::run(&opts)?;
    println!("{}", o.timeline.render());
    println!("Database (query the views):  {}", o.database.display());
    println!("Configuration used:          {}", o.config.display());
    if let Some(r) = &o.report {
        println!("Report:                      {}", r.display());
    }
    println!(
        "Took {:.1} s: simulate {:.1} s, pipeline + evaluation {:.1} s for {} records, report {:.1} s.",
        o.total.as_secs_f64(),
        o.simulate.as_secs_f64(),
        o.replay.as_secs_f64(),
        o.records,
        o.report_time.as_secs_f64()
    );
    Ok(())
}

fn simulate_to_kafka(
    run: &ScenarioArgs,
    start: Option<SimStart>,
    brokers: String,
    topics: [String; 3],
    format: SimFormat,
) -> anyhow::Result<()> {
    let cfg = run.sim_config(start);
    let format = match format {
        SimFormat::Avro | SimFormat::Jsonl => tierwatch::decode::WireFormat::Avro,
        SimFormat::Confluent => tierwatch::decode::WireFormat::Confluent,
        SimFormat::Json => tierwatch::decode::WireFormat::Json,
    };
    let started = std::time::Instant::now();
    let target = tierwatch::sim::kafka::KafkaTarget { brokers, topics, format };
    let s = tierwatch::sim::kafka::produce(&cfg, &target)?;
    eprintln!(
        "{}: {} decisions, {} feedback, {} tickets produced and acknowledged in {:.1}s → {}",
        run.scenario,
        s.decisions,
        s.feedback,
        s.tickets,
        started.elapsed().as_secs_f64(),
        target.topics.join(", ")
    );
    Ok(())
}

fn build_reference(input: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    let hist = tierwatch::drift::reference::load(input)?;
    tierwatch::drift::reference::write(output, &hist)?;
    eprintln!("reference of {} confidences written to {}", hist.total(), output.display());
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting tokio")
}

fn migrate(cfg: Config) -> anyhow::Result<()> {
    let rt = runtime()?;
    open_stores(&rt, &cfg)?;
    eprintln!("migrations applied");
    Ok(())
}

/// The configured store, connected, migrated, with the settings the views need written.
enum Stores {
    Postgres(Arc<PgStore>),
    Sqlite(Arc<SqliteStore>),
}

fn open_stores(rt: &tokio::runtime::Runtime, cfg: &Config) -> anyhow::Result<Stores> {
    let settings = cfg.view_settings();
    rt.block_on(async {
        if let Some(pg) = &cfg.postgres {
            let store = PgStore::connect(&pg.url, pg.max_connections).await?;
            store.migrate().await?;
            store.write_settings(&settings).await?;
            Ok(Stores::Postgres(Arc::new(store)))
        } else if let Some(sq) = &cfg.sqlite {
            let store = SqliteStore::open(&sq.path).await?;
            store.migrate().await?;
            store.write_settings(&settings).await?;
            Ok(Stores::Sqlite(Arc::new(store)))
        } else {
            anyhow::bail!("no store configured")
        }
    })
}

/// The store's public views, for the report.
fn report_pool(stores: &Stores) -> tierwatch::report::ReportPool {
    match stores {
        Stores::Postgres(s) => tierwatch::report::ReportPool::Postgres(s.pool().clone()),
        Stores::Sqlite(s) => tierwatch::report::ReportPool::Sqlite(s.pool().clone()),
    }
}

fn report(cfg: Config, range: tierwatch::report::DayRange, out: &std::path::Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let pool = report_pool(&open_stores(&rt, &cfg)?);
    let started = std::time::Instant::now();
    let settings = tierwatch::report::ReportSettings::from_config(&cfg);
    let html = rt.block_on(tierwatch::report::live::generate(&pool, &settings, range))?;
    std::fs::write(out, &html).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "report of the {} store written to {} ({} KiB) in {:.1}s",
        pool.backend(),
        out.display(),
        html.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn advise(cfg: Config, classifier_version: Option<&str>, window: &str) -> anyhow::Result<()> {
    let rt = runtime()?;
    let pool = report_pool(&open_stores(&rt, &cfg)?);
    let rows = rt.block_on(tierwatch::report::load::threshold_advice(&pool, window))?;
    let advice = tierwatch::router_eval::advise::latest(&rows, classifier_version);
    if advice.is_empty() {
        anyhow::bail!(
            "no threshold advice in the {} store yet{}: it needs a reference, a full {window} window of mature days and the threshold in force",
            pool.backend(),
            classifier_version.map(|v| format!(" for {v}")).unwrap_or_default()
        );
    }
    for a in &advice {
        print!("{}", tierwatch::router_eval::advise::render(a, window));
    }
    Ok(())
}

fn replay(cfg: Config, paths: [&PathBuf; 3], progress: bool) -> anyhow::Result<()> {
    let rt = runtime()?;
    match open_stores(&rt, &cfg)? {
        Stores::Postgres(s) => replay_with(rt, cfg, s.clone(), PgEvalStore::new(s), paths, progress),
        Stores::Sqlite(s) => replay_with(rt, cfg, s.clone(), SqliteEvalStore::new(s), paths, progress),
    }
}

fn replay_with<S: Store + 'static, E: EvalStore>(
    rt: tokio::runtime::Runtime,
    cfg: Config,
    store: Arc<S>,
    eval: E,
    paths: [&PathBuf; 3],
    progress: bool,
) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal(&rt);
    let started = std::time::Instant::now();
    let outcome =
        tierwatch::replay::replay_files(&rt, &cfg, store, eval, paths.map(|p| p.as_path()), progress, shutdown)?;
    eprintln!(
        "replayed {} records ({} rejected) in {:.1}s; drift rows {}, alerts firing {}",
        outcome.stats.messages,
        outcome.stats.rejected,
        started.elapsed().as_secs_f64(),
        outcome.evaluation.rows,
        outcome.evaluation.firing
    );
    Ok(())
}

fn run(cfg: Config) -> anyhow::Result<()> {
    cfg.kafka()?;
    let rt = runtime()?;
    let stores = open_stores(&rt, &cfg)?;
    let report = Arc::new(tierwatch::report::LiveReport::new(
        report_pool(&stores),
        tierwatch::report::ReportSettings::from_config(&cfg),
        std::time::Duration::from_secs(cfg.http.report_cache_seconds),
    ));
    match stores {
        Stores::Postgres(s) => run_with(rt, cfg, s.clone(), PgEvalStore::new(s), report),
        Stores::Sqlite(s) => run_with(rt, cfg, s.clone(), SqliteEvalStore::new(s), report),
    }
}

fn run_with<S: Store + 'static, E: EvalStore + OutboxStore>(
    rt: tokio::runtime::Runtime,
    cfg: Config,
    store: Arc<S>,
    eval: E,
    report: Arc<tierwatch::report::LiveReport>,
) -> anyhow::Result<()> {
    let telemetry = Telemetry::new();
    let shutdown = shutdown_on_signal(&rt);
    if !cfg.http.listen.is_empty() {
        let t = telemetry.clone();
        let listen = cfg.http.listen.clone();
        rt.spawn(async move {
            if let Err(e) = tierwatch::http::serve(&listen, t, Some(report)).await {
                tracing::error!(error = %format!("{e:#}"), "http server stopped");
            }
        });
    }
    if let Some(retention) = cfg.privacy.retention() {
        let (store, handle, shutdown) = (store.clone(), rt.handle().clone(), shutdown.clone());
        let errors = telemetry.store_errors.clone();
        std::thread::Builder::new()
            .name("tw-retention".into())
            .spawn(move || tierwatch::privacy::retention_task(store, retention, handle, shutdown, errors))
            .context("starting the retention task")?;
    }
    let eval = Arc::new(eval);
    let webhooks = if cfg.alerts.webhooks.is_empty() {
        None
    } else {
        let _guard = rt.enter();
        Some(tierwatch::alert::WebhookSink::start(
            cfg.alerts.webhooks.clone(),
            eval.clone(),
            telemetry.webhooks.clone(),
        )?)
    };
    let evaluator = Evaluator::new(
        eval,
        cfg.drift.clone(),
        cfg.alerts.quality.clone(),
        cfg.attribution.window_ms(),
        telemetry.clone(),
        webhooks,
    )
    .with_misroute(cfg.alerts.misroute.clone(), &cfg.ledger.capable_tier)
    .with_router_eval(cfg.router_eval.clone())
    .with_routed_share(&cfg.routing.targets, &cfg.alerts.routed_share);
    let handle = rt.handle().clone();
    let stats = std::thread::scope(|scope| {
        // The evaluator: its own thread driving its future (store access is async but its heavy
        // statistics go to the blocking pool).
        let eval_handle = handle.clone();
        let eval_shutdown = shutdown.clone();
        let eval_thread = scope.spawn(move || eval_handle.block_on(evaluator.run(eval_shutdown)));
        // The consumer and its rebalance callback block on the store: keep them off the runtime.
        let pipeline_shutdown = shutdown.clone();
        let (cfg, store, telemetry) = (&cfg, store.clone(), telemetry.clone());
        let result = scope
            .spawn(move || {
                let consumer = tierwatch::source::kafka::create_consumer(
                    cfg,
                    store.clone(),
                    handle.clone(),
                    telemetry.clone(),
                    pipeline_shutdown.clone(),
                )?;
                let topics = [
                    cfg.topics.routing.name.clone(),
                    cfg.topics.feedback.name.clone(),
                    cfg.topics.tickets.name.clone(),
                ];
                let mut source = tierwatch::source::kafka::KafkaSource::new(consumer, topics)
                    .with_payload_limit(tierwatch::source::PayloadLimit::from_config(cfg));
                let rescoring = start_rescoring(cfg, store.clone(), &handle, &telemetry)?;
                let mut pipeline = Pipeline::new(cfg, store, handle, telemetry, pipeline_shutdown);
                if let Some(r) = rescoring {
                    pipeline = pipeline.with_rescoring(r);
                }
                // Returns once every committed sample is scored (or shed) and written.
                let stats = pipeline.run(&mut source)?;
                drop(source);
                anyhow::Ok(stats)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("pipeline thread panicked"));
        shutdown.store(true, Ordering::Relaxed);
        let _ = eval_thread.join();
        result
    })??;
    tracing::info!(messages = stats.messages, rejected = stats.rejected, batches = stats.batches, "stopped");
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}

/// The rescoring slice if `[rescore]` is configured, with SIGHUP reloading its model.
fn start_rescoring<S: Store + 'static>(
    cfg: &Config,
    store: Arc<S>,
    handle: &tokio::runtime::Handle,
    telemetry: &Arc<Telemetry>,
) -> anyhow::Result<Option<tierwatch::rescore::runtime::Rescoring>> {
    let Some(rc) = &cfg.rescore else { return Ok(None) };
    let r = tierwatch::rescore::runtime::Rescoring::start(rc, store, handle.clone(), telemetry.rescore.clone())?;
    #[cfg(unix)]
    {
        let model = r.model();
        let _guard = handle.enter();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                handle.spawn(async move {
                    while hup.recv().await.is_some() {
                        // A broken file is refused and logged; the old model keeps serving.
                        if let Err(e) = tokio::task::block_in_place(|| model.reload()) {
                            tracing::error!(error = %format!("{e:#}"), "SIGHUP: rescorer reload refused");
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "no SIGHUP handler; the model still reloads when its file changes"),
        }
    }
    Ok(Some(r))
}

/// A flag set on SIGTERM or SIGINT: the pipeline finishes the batch in flight and stops.
fn shutdown_on_signal(rt: &tokio::runtime::Runtime) -> Arc<AtomicBool> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing the batch in flight");
        flag.store(true, Ordering::Relaxed);
    });
    shutdown
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
