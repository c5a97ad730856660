//! Router evaluation on both stores: the same simulated traffic replayed into SQLite and into the
//! real Postgres gives the same per-confidence cells and the same reliability curves, calibration
//! errors and threshold advice; a second evaluator pass changes nothing.
//!
//! Needs the Postgres of `scripts/services.sh` (`TIERWATCH_TEST_DATABASE_URL`).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use tierwatch::config::Config;
use tierwatch::drift::evaluator::{EvalStore, Evaluator};
use tierwatch::sim::{self, Scenario, SimConfig};
use tierwatch::store::postgres::PgEvalStore;
use tierwatch::store::postgres::PgStore;
use tierwatch::store::sqlite::SqliteEvalStore;
use tierwatch::store::sqlite::SqliteStore;
use tierwatch::store::Store;

/// One SQL text per view for both backends (days as text, flags as integers, numbers as doubles).
const QUERIES: [(&str, &str); 5] = [
    (
        "cells",
        r#"SELECT CAST(day AS TEXT), classifier_version, router, tier, CAST(cell AS BIGINT), CAST(grp AS BIGINT),
                  CAST(decisions AS BIGINT), CAST(failures AS BIGINT), CAST(failed_deflections AS BIGINT),
                  CAST(conf_e4 AS BIGINT), CAST(cost_nusd AS BIGINT), CAST(capable_cost_nusd AS BIGINT)
           FROM cells ORDER BY 1, 2, 3, 4, 5, 6"#,
    ),
    (
        "calibration_daily",
        r#"SELECT CAST(day AS TEXT), classifier_version, router, "window", CAST(bin AS BIGINT), CAST(n AS BIGINT),
                  CAST(failures AS BIGINT), CAST(baseline_n AS BIGINT), CAST(baseline_failures AS BIGINT), status,
                  CAST(conf_lo AS DOUBLE PRECISION), CAST(conf_mean AS DOUBLE PRECISION),
                  CAST(failure_rate_hi AS DOUBLE PRECISION), CAST(p_value AS DOUBLE PRECISION)
           FROM calibration_daily ORDER BY 1, 2, 3, 4, 5"#,
    ),
    (
        "calibration_summary_daily",
        r#"SELECT CAST(day AS TEXT), classifier_version, router, "window", CAST(n AS BIGINT), CAST(failures AS BIGINT),
                  CAST(ece AS DOUBLE PRECISION), CAST(ece_lo AS DOUBLE PRECISION), CAST(ece_hi AS DOUBLE PRECISION),
                  CAST(overconfidence AS DOUBLE PRECISION), CAST(ece_plugin AS DOUBLE PRECISION)
           FROM calibration_summary_daily ORDER BY 1, 2, 3, 4"#,
    ),
    (
        "threshold_advice",
        r#"SELECT CAST(day AS TEXT), classifier_version, router, "window", CAST(threshold AS DOUBLE PRECISION),
                  CAST(CASE WHEN is_current THEN 1 ELSE 0 END AS BIGINT),
                  CAST(CASE WHEN is_recommended THEN 1 ELSE 0 END AS BIGINT),
                  CAST(CASE WHEN extrapolated THEN 1 ELSE 0 END AS BIGINT),
                  CAST(cheap_share AS DOUBLE PRECISION), CAST(net_cost_usd AS DOUBLE PRECISION),
                  CAST(net_cost_lo_usd AS DOUBLE PRECISION), CAST(net_saving_hi_usd AS DOUBLE PRECISION)
           FROM threshold_advice ORDER BY 1, 2, 3, 4, 5"#,
    ),
    (
        "tier_cost_daily",
        r#"SELECT CAST(t.day AS TEXT), t.tier, CAST(t.deflected AS BIGINT),
                  CAST(t.cost_per_successful_conversation_usd AS DOUBLE PRECISION),
                  CAST((d.inference_cost_usd + d.attributed_human_cost_usd) / d.deflected AS DOUBLE PRECISION)
           FROM tier_cost_daily t JOIN deflection_daily d ON d.day = t.day AND d.tier = t.tier
           WHERE d.deflected > 0 ORDER BY 1, 2"#,
    ),
];

/// SQLite keeps the cell table's day as epoch ms.
const SQLITE_CELLS: &str =
    "(SELECT date(day_ms / 1000, 'unixepoch') AS day, classifier_version, router, tier, cell, grp, \
    decisions, failures, failed_deflections, conf_e4, cost_nusd, capable_cost_nusd FROM tw_agg_calibration) c";

/// Every row of every query as text, numbers printed to 12 significant digits (the stores keep
/// doubles; the last bits of a sum may differ by summation order, nothing more).
#[derive(Debug, PartialEq)]
struct Views(Vec<Vec<String>>);

fn fmt_row(cols: Vec<Option<String>>) -> String {
    cols.into_iter().map(|c| c.unwrap_or_else(|| "NULL".into())).collect::<Vec<_>>().join("|")
}

macro_rules! read_views {
    ($pool:expr, $cells:expr) => {{
        use sqlx::Row;
        let mut out = vec![];
        for (_, sql) in QUERIES {
            let sql = sql.replace("FROM cells", &format!("FROM {}", $cells));
            let rows = sqlx::query(&sql).fetch_all($pool).await.unwrap();
            let mut lines = vec![];
            for r in rows {
                let mut cols = vec![];
                for i in 0..r.len() {
                    let v = if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        v
                    } else if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        v.map(|v| v.to_string())
                    } else {
                        r.try_get::<Option<f64>, _>(i).unwrap().map(|v| format!("{v:.12e}"))
                    };
                    cols.push(v);
                }
                lines.push(fmt_row(cols));
            }
            out.push(lines);
        }
        Views(out)
    }};
}

fn config(store_section: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"{store_section}
[http]
listen = ""
[drift]
lookback_days = 90
baseline_days = 7
"#
    ))
    .unwrap()
}

fn simulate(dir: &Path) -> [std::path::PathBuf; 3] {
    let mut cfg = SimConfig::new(Scenario::Postmortem);
    cfg.days = 70;
    cfg.conversations_per_day = 250;
    cfg.drain_hours = 96;
    sim::write_avro_ocf_days(dir, &cfg).unwrap();
    let ext = sim::FileFormat::AvroOcf.extension();
    [sim::ROUTING_FILE, sim::FEEDBACK_FILE, sim::TICKETS_FILE].map(|f| dir.join(format!("{f}.{ext}")))
}

fn replay<S: Store + 'static, E: EvalStore>(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    store: Arc<S>,
    eval: E,
    files: &[std::path::PathBuf; 3],
) {
    let paths = [files[0].as_path(), files[1].as_path(), files[2].as_path()];
    let outcome =
        tierwatch::replay::replay_files(rt, cfg, store, eval, paths, false, Arc::new(AtomicBool::new(false))).unwrap();
    assert!(outcome.evaluation.ran);
}

async fn second_pass<E: EvalStore>(cfg: &Config, eval: E) {
    let evaluator = Evaluator::new(
        Arc::new(eval),
        cfg.drift.clone(),
        cfg.alerts.quality.clone(),
        cfg.attribution.window_ms(),
        tierwatch::telemetry::Telemetry::new(),
        None,
    )
    .with_router_eval(cfg.router_eval.clone());
    assert!(evaluator.pass().await.unwrap().ran);
}

#[test]
fn both_stores_evaluate_the_same_traffic_identically() {
    let dir = tempfile::tempdir().unwrap();
    let files = simulate(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // SQLite.
    let db = dir.path().join("tw.sqlite");
    let cfg = config(&format!("[sqlite]\npath = \"{}\"", db.display()));
    let sqlite = Arc::new(rt.block_on(async {
        let s = SqliteStore::open(db.to_str().unwrap()).await.unwrap();
        s.migrate().await.unwrap();
        s.write_settings(&cfg.view_settings()).await.unwrap();
        s
    }));
    replay(&rt, &cfg, sqlite.clone(), SqliteEvalStore::new(sqlite.clone()), &files);
    let sq_views = rt.block_on(async { read_views!(sqlite.pool(), SQLITE_CELLS) });

    // Postgres.
    let admin_url = std::env::var("TIERWATCH_TEST_DATABASE_URL")
        .expect("TIERWATCH_TEST_DATABASE_URL: run `bash scripts/services.sh start && . .tw-services/env`");
    let name = format!("tw_reval_{}", std::process::id());
    let url = rt.block_on(async {
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.unwrap();
        admin.close().await;
        format!("{}/{name}", &admin_url[..admin_url.rfind('/').unwrap()])
    });
    let pg_cfg = config(&format!("[postgres]\nurl = \"{url}\""));
    let pg = Arc::new(rt.block_on(async {
        let s = PgStore::connect(&url, 4).await.unwrap();
        s.migrate().await.unwrap();
        s.write_settings(&pg_cfg.view_settings()).await.unwrap();
        s
    }));
    replay(&rt, &pg_cfg, pg.clone(), PgEvalStore::new(pg.clone()), &files);
    let pg_views = rt.block_on(async { read_views!(pg.pool(), "tw_agg_calibration") });

    // tier_cost_daily is its formula over deflection_daily (last two columns).
    for line in &sq_views.0[4] {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols[3], cols[4], "tier_cost_daily: {line}");
    }
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        assert!(sq_views.0[i].len() > 100, "{name}: {} rows", sq_views.0[i].len());
        assert_eq!(sq_views.0[i].len(), pg_views.0[i].len(), "{name}: row counts differ");
        for (a, b) in sq_views.0[i].iter().zip(&pg_views.0[i]) {
            assert_eq!(a, b, "{name}: SQLite vs Postgres");
        }
    }

    // Idempotent: another pass over the same data rewrites the same rows.
    rt.block_on(second_pass(&cfg, SqliteEvalStore::new(sqlite.clone())));
    rt.block_on(second_pass(&pg_cfg, PgEvalStore::new(pg.clone())));
    assert_eq!(rt.block_on(async { read_views!(sqlite.pool(), SQLITE_CELLS) }), sq_views);
    assert_eq!(rt.block_on(async { read_views!(pg.pool(), "tw_agg_calibration") }), pg_views);
}
