//! The `tierwatch` command line.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tierwatch::config::Config;
use tierwatch::pipeline::Pipeline;
use tierwatch::store::postgres::PgStore;
use tierwatch::store::{Store, ViewSettings};
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
    /// Drift references.
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIERWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => load(&config).and_then(run),
        Command::Migrate { config } => load(&config).and_then(migrate),
        Command::Reference { command: ReferenceCommand::Build { input, output } } => build_reference(&input, &output),
        Command::Replay { config, routing, feedback, tickets, quiet } => {
            load(&config).and_then(|c| replay(c, [&routing, &feedback, &tickets], !quiet))
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
    runtime()?.block_on(async {
        let store = PgStore::connect(&cfg.postgres.url, cfg.postgres.max_connections).await?;
        store.migrate().await?;
        eprintln!("migrations applied");
        Ok(())
    })
}

/// Connect, migrate and write the settings the views need.
fn open_store(rt: &tokio::runtime::Runtime, cfg: &Config) -> anyhow::Result<Arc<PgStore>> {
    rt.block_on(async {
        let store = PgStore::connect(&cfg.postgres.url, cfg.postgres.max_connections).await?;
        store.migrate().await?;
        store
            .write_settings(&ViewSettings {
                attribution_window_ms: cfg.attribution.window_ms(),
                baseline_from: cfg.ledger.baseline_from,
                baseline_to: cfg.ledger.baseline_to,
                baseline_tier: cfg.ledger.capable_tier.clone(),
            })
            .await?;
        anyhow::Ok(Arc::new(store))
    })
}

fn replay(cfg: Config, paths: [&PathBuf; 3], progress: bool) -> anyhow::Result<()> {
    use tierwatch::source::files::{topic_of, FileSource};
    let rt = runtime()?;
    let store = open_store(&rt, &cfg)?;
    let topics = paths.map(|p| topic_of(p));
    let snapshot = rt.block_on(store.load_partition(0, &topics.iter().map(String::as_str).collect::<Vec<_>>()))?;
    let mut source = FileSource::open(paths.map(|p| p.as_path()), snapshot, progress)?;
    tracing::info!(files = %source.describe(), "replaying");
    let formats = source.formats();
    let inputs = [0, 1, 2].map(|i| (source.topics()[i].clone(), formats[i], vec![]));
    let telemetry = Telemetry::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            wait_for_signal().await;
            shutdown.store(true, Ordering::Relaxed);
        });
    }
    let handle = rt.handle().clone();
    let (worker_store, worker_telemetry) = (store.clone(), telemetry.clone());
    let started = std::time::Instant::now();
    let stats = std::thread::Builder::new()
        .name("tierwatch-replay".into())
        .spawn(move || {
            let mut pipeline = Pipeline::with_inputs(&cfg, inputs, worker_store, handle, worker_telemetry, shutdown);
            pipeline.run(&mut source).map(|s| (s, cfg))
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("replay thread panicked"))?;
    let (stats, cfg) = stats?;
    // Bring the drift rows and alerts up to date with what was replayed.
    let summary = rt.block_on(
        tierwatch::drift::evaluator::Evaluator::new(
            Arc::new(tierwatch::store::postgres_eval::PgEvalStore::new(store.clone())),
            cfg.drift.clone(),
            cfg.alerts.quality.clone(),
            cfg.attribution.window_ms(),
            telemetry,
            None,
        )
        .pass(),
    )?;
    eprintln!(
        "replayed {} records ({} rejected) in {:.1}s; drift rows {}, alerts firing {}",
        stats.messages,
        stats.rejected,
        started.elapsed().as_secs_f64(),
        summary.rows,
        summary.firing
    );
    Ok(())
}

fn run(cfg: Config) -> anyhow::Result<()> {
    cfg.kafka()?;
    let rt = runtime()?;
    let telemetry = Telemetry::new();
    let shutdown = Arc::new(AtomicBool::new(false));
    let store = open_store(&rt, &cfg)?;
    if !cfg.http.listen.is_empty() {
        let t = telemetry.clone();
        let listen = cfg.http.listen.clone();
        rt.spawn(async move {
            if let Err(e) = tierwatch::http::serve(&listen, t).await {
                tracing::error!(error = %format!("{e:#}"), "http server stopped");
            }
        });
    }
    let evaluator = {
        let webhooks = if cfg.alerts.webhooks.is_empty() {
            None
        } else {
            let _guard = rt.enter();
            Some(tierwatch::alert::WebhookSink::start(cfg.alerts.webhooks.clone(), cfg.alerts.queue_capacity)?)
        };
        let ev = tierwatch::drift::evaluator::Evaluator::new(
            Arc::new(tierwatch::store::postgres_eval::PgEvalStore::new(store.clone())),
            cfg.drift.clone(),
            cfg.alerts.quality.clone(),
            cfg.attribution.window_ms(),
            telemetry.clone(),
            webhooks,
        );
        rt.spawn(ev.run(shutdown.clone()))
    };
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; finishing the batch in flight");
            shutdown.store(true, Ordering::Relaxed);
        });
    }
    // The consumer and its rebalance callback block on the store: keep them off the runtime.
    let handle = rt.handle().clone();
    let pipeline_shutdown = shutdown.clone();
    let worker = std::thread::Builder::new().name("tierwatch-pipeline".into()).spawn(move || {
        let consumer = tierwatch::source::kafka::create_consumer(&cfg, store.clone(), handle.clone())?;
        let topics =
            [cfg.topics.routing.name.clone(), cfg.topics.feedback.name.clone(), cfg.topics.tickets.name.clone()];
        let mut source = tierwatch::source::kafka::KafkaSource::new(consumer, topics);
        let mut pipeline = Pipeline::new(&cfg, store, handle, telemetry, pipeline_shutdown);
        let stats = pipeline.run(&mut source)?;
        drop(source);
        anyhow::Ok(stats)
    })?;
    let stats = worker.join().map_err(|_| anyhow::anyhow!("pipeline thread panicked"))??;
    shutdown.store(true, Ordering::Relaxed);
    let _ = rt.block_on(evaluator);
    tracing::info!(messages = stats.messages, rejected = stats.rejected, batches = stats.batches, "stopped");
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
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
