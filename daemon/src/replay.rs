//! Replay (the backfill case): the three streams from JSON Lines or Avro container files through
//! the same pipeline as Kafka, into either store, then one evaluator pass so drift rows and alerts
//! reflect what was replayed. Used by `tierwatch replay` and by the demo.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::Config;
use crate::drift::evaluator::{EvalStore, Evaluator, PassSummary};
use crate::pipeline::{Pipeline, RunStats};
use crate::rescore::runtime::Rescoring;
use crate::source::files::{topic_of, FileSource};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplayOutcome {
    pub stats: RunStats,
    pub evaluation: PassSummary,
}

/// Replay `paths` (routing, feedback, tickets) into `store`, resuming from the offsets stored for
/// the files (a second run over the same files applies nothing), then evaluate drift and alerts.
///
/// The pipeline blocks on the store, so it runs on its own thread; `rt` serves the store's I/O.
pub fn replay_files<S: Store + 'static, E: EvalStore>(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    store: Arc<S>,
    eval: E,
    paths: [&Path; 3],
    progress: bool,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<ReplayOutcome> {
    let topics = paths.map(topic_of);
    let snapshot = rt.block_on(store.load_partition(0, &topics.iter().map(String::as_str).collect::<Vec<_>>()))?;
    let mut source =
        FileSource::open(paths, snapshot, progress)?.with_payload_limit(crate::source::PayloadLimit::from_config(cfg));
    tracing::info!(files = %source.describe(), "replaying");
    let formats = source.formats();
    let inputs = [0, 1, 2].map(|i| (source.topics()[i].clone(), formats[i], vec![]));
    let telemetry = Telemetry::new();
    let stats = std::thread::scope(|scope| {
        let handle = rt.handle().clone();
        let (store, telemetry) = (store.clone(), telemetry.clone());
        scope
            .spawn(move || {
                let rescoring = match &cfg.rescore {
                    Some(rc) => Some(Rescoring::start(rc, store.clone(), handle.clone(), telemetry.rescore.clone())?),
                    None => None,
                };
                let mut pipeline = Pipeline::with_inputs(cfg, inputs, store, handle, telemetry, shutdown);
                if let Some(r) = rescoring {
                    pipeline = pipeline.with_rescoring(r);
                }
                // Returns once every sample is scored and written, before drift is evaluated.
                pipeline.run(&mut source)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("replay thread panicked"))
    })??;
    let evaluator = Evaluator::new(
        Arc::new(eval),
        cfg.drift.clone(),
        cfg.alerts.quality.clone(),
        cfg.attribution.window_ms(),
        telemetry,
        None,
    )
    .with_misroute(cfg.alerts.misroute.clone(), &cfg.ledger.capable_tier)
    .with_router_eval(cfg.router_eval.clone())
    .with_routed_share(&cfg.routing.targets, &cfg.alerts.routed_share);
    let evaluation = rt.block_on(evaluator.pass())?;
    Ok(ReplayOutcome { stats, evaluation })
}
