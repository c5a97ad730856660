//! Overload: a rescoring queue of two sheds most samples, ingestion does not wait for it, nothing
//! stays pending, and `rescore_estimates_daily` carries each shed sample's weight on the scored
//! rows of its (day, tier, reason) cell, exactly as a recomputation with `stats::weighted` says.
//! Runs the production pipeline through file replay into SQLite (no servers needed).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sqlx::Row;
use tierwatch::config::Config;
use tierwatch::sim::{Scenario, SimConfig};
use tierwatch::stats::weighted::WeightedProportion;
use tierwatch::store::sqlite::SqliteEvalStore;
use tierwatch::store::sqlite::SqliteStore;
use tierwatch::store::Store;

#[test]
fn shed_samples_are_reweighted_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new(Scenario::Postmortem);
    sim.days = 3;
    sim.conversations_per_day = 400;
    sim.seed = 11;
    tierwatch::sim::write_avro_ocf_days(dir.path(), &sim).unwrap();
    let db = dir.path().join("shed.sqlite");
    let model = format!("{}/../models/rescorer.onnx", env!("CARGO_MANIFEST_DIR"));
    // Batches of 40 throughout (no catch-up growth): with a queue of two, 800-message catch-up
    // batches hand the pool ~240 samples at once and nearly all are shed, while this test needs
    // both outcomes in quantity (the bursts of 40-message batches already overflow the queue).
    let cfg = Config::from_toml_str(&format!(
        "[sqlite]\npath = \"{}\"\n[http]\nlisten = \"\"\n[batch]\nmax_events = 40\ncatch_up_max_events = 40\n[rescore]\nmodel_path = \"{model}\"\nqueue_capacity = 2\n\
         batch_size = 1\nworkers = 1\n[rescore.sampler]\nbase_rate = 0.3\n",
        db.display()
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = rt.block_on(async {
        let s = SqliteStore::open(&db.display().to_string()).await.unwrap();
        s.migrate().await.unwrap();
        s.write_settings(&cfg.view_settings()).await.unwrap();
        Arc::new(s)
    });
    let files = ["routing_decisions.avro", "feedback.avro", "support_tickets.avro"].map(|f| dir.path().join(f));
    let out = tierwatch::replay::replay_files(
        &rt,
        &cfg,
        store.clone(),
        SqliteEvalStore::new(store.clone()),
        [files[0].as_path(), files[1].as_path(), files[2].as_path()],
        false,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    assert!(out.stats.messages > 2_000);

    let (rows, est) = rt.block_on(async {
        let rows = sqlx::query(
            "SELECT day, tier, reason, status, weight, suspected_misroute FROM review_queue ORDER BY event_id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let est = sqlx::query(
            "SELECT day, tier, sampled, scored, shed, pending, weight_sum, sampled_weight, n_eff, \
                    suspected_misroute_rate, suspected_misroute_rate_lo, suspected_misroute_rate_hi \
             FROM rescore_estimates_daily ORDER BY day, tier",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        (rows, est)
    });
    let count = |s: &str| rows.iter().filter(|r| r.get::<String, _>(3) == s).count();
    let (scored, shed, pending) = (count("scored"), count("shed"), count("pending"));
    println!("{} sampled: {scored} scored, {shed} shed, {pending} pending", rows.len());
    assert_eq!(pending, 0, "every sample is scored or shed by the end of the replay");
    assert!(shed > rows.len() / 4, "a queue of two must shed under a replay's burst ({shed} of {})", rows.len());
    assert!(scored > 50, "{scored} scored");

    // Recompute: per (day, tier, reason) cell, scored weights scaled by Σw(all) / Σw(scored).
    let mut cells: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    for r in &rows {
        let c = cells.entry((r.get(0), r.get(1), r.get(2))).or_default();
        c.0 += r.get::<f64, _>(4);
        if r.get::<String, _>(3) == "scored" {
            c.1 += r.get::<f64, _>(4);
        }
    }
    let mut acc: BTreeMap<(String, String), WeightedProportion> = BTreeMap::new();
    let mut sampled_weight: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &rows {
        let key: (String, String, String) = (r.get(0), r.get(1), r.get(2));
        *sampled_weight.entry((key.0.clone(), key.1.clone())).or_default() += r.get::<f64, _>(4);
        if r.get::<String, _>(3) != "scored" {
            continue;
        }
        let (all, kept) = cells[&key];
        let w = r.get::<f64, _>(4) * all / kept;
        acc.entry((key.0, key.1)).or_default().add(w, r.get::<bool, _>(5)).unwrap();
    }
    assert_eq!(est.len(), sampled_weight.len());
    let mut full_cells = 0;
    for r in &est {
        let key: (String, String) = (r.get(0), r.get(1));
        let ws: f64 = r.get(6);
        let sw = sampled_weight[&key];
        assert!((r.get::<f64, _>(7) - sw).abs() < 1e-9 * sw, "{key:?} sampled_weight");
        let Some(w) = acc.get(&key) else { continue };
        assert!((ws - w.sum_w).abs() < 1e-9 * ws, "{key:?} weight_sum {ws} vs {}", w.sum_w);
        // Every cell kept something: all the sampled weight is carried by the scored rows.
        if (ws - sw).abs() < 1e-9 * sw {
            full_cells += 1;
        }
        assert!((r.get::<f64, _>(8) - w.n_eff().unwrap()).abs() < 1e-9 * ws);
        assert!((r.get::<f64, _>(9) - w.rate().unwrap()).abs() < 1e-12);
        let (lo, hi) = w.interval95().unwrap();
        assert!((r.get::<f64, _>(10) - lo).abs() < 1e-9 && (r.get::<f64, _>(11) - hi).abs() < 1e-9);
        assert_eq!(r.get::<i64, _>(3) as u64, w.n);
    }
    assert!(full_cells > 0, "some (day, tier) keeps every reason cell");
}
