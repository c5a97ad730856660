use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn chunks_are_full_statements_then_powers_of_two() {
    let sizes = |n| chunk_sizes(n).collect::<Vec<_>>();
    assert_eq!(sizes(0), Vec::<usize>::new());
    assert_eq!(sizes(1), vec![1]);
    assert_eq!(sizes(127), vec![64, 32, 16, 8, 4, 2, 1]);
    assert_eq!(sizes(128), vec![128]);
    assert_eq!(sizes(300), vec![128, 128, 32, 8, 4]);
    for n in 0..600 {
        assert_eq!(sizes(n).iter().sum::<usize>(), n);
    }
    assert_eq!(placeholders(3, 2), "(?,?,?),(?,?,?)");
    assert_eq!(placeholders(1, 1), "(?)");
}

fn dims(i: usize) -> std::sync::Arc<crate::metrics::Dims> {
    std::sync::Arc::new(crate::metrics::Dims {
        tier: if i % 2 == 0 { "cheap" } else { "capable" }.into(),
        model: "m".into(),
        classifier_version: "v1".into(),
        router: "PRE_ROUTE".into(),
        segment: format!("s{}", i % 7),
        intent: String::new(),
    })
}

fn sample(i: usize) -> super::super::RescoreSample {
    super::super::RescoreSample {
        event_id: format!("e{i}"),
        conversation_id: format!("c{i}"),
        turn: 1,
        partition: 0,
        ts_ms: 3_600_000 * i as i64,
        tier: "cheap".into(),
        model: "m".into(),
        classifier_version: "v1".into(),
        router: "PRE_ROUTE".into(),
        segment: String::new(),
        router_confidence: Some(0.8),
        threshold: Some(0.5),
        margin: None,
        ood_score: None,
        p: 0.5,
        w: 2.0,
        reason: "base".into(),
        query_text: Some(format!("q{i}")),
        query_hash: None,
    }
}

fn label(conversation: &str, reviewed_ms: i64, addressed: bool) -> ReviewLabel {
    ReviewLabel { conversation_id: conversation.into(), turn: 1, addressed, reviewed_ms }
}

/// A batch of 300 rows per table (several statements of different row counts) twice: the
/// aggregates add up, state upserts and deletes land, histograms merge, duplicate samples and
/// rescores apply once, and review labels keep the latest (ties: not addressed).
#[tokio::test]
async fn multi_row_statements_keep_the_row_by_row_semantics() {
    use crate::metrics::{ConfKey, Deltas, Grain, Signal};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("tw.db").to_str().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.load_partition(0, &["routing"]).await.unwrap().generation, 0);
    const N: usize = 300;
    let batch = |generation: i64, state: Vec<(String, Option<Vec<u8>>)>, labels: Vec<ReviewLabel>| {
        let mut deltas = Deltas::default();
        let mut conf = vec![];
        for i in 0..N {
            let ts = 3_600_000 * i as i64;
            deltas.quality_one(Grain::Hour, ts, &dims(i), |q| {
                q.decisions += 1;
                q.csat_sum += 0.5;
            });
            deltas.latency(ts, &dims(i), 10.0 + i as f64);
            let key = ConfKey {
                hour_ms: ts,
                signal: Signal::RouterConfidence,
                classifier_version: "v1".into(),
                router: "PRE_ROUTE".into(),
            };
            let mut d = ConfDelta::default();
            d.hist.record(0.25);
            d.hist.record(i as f64 / N as f64);
            d.conversations = 1;
            d.threshold_sum = 0.5;
            d.threshold_n = 1;
            conf.push((key, d));
        }
        let mut samples: Vec<_> = (0..N).map(sample).collect();
        samples.push(sample(3)); // the same event twice: stored once
        CommitBatch {
            partitions: vec![super::super::PartitionCommit {
                partition: 0,
                expected_generation: generation,
                watermark_ms: 1,
                state: state.into(),
                offsets: vec![("routing".into(), generation + 10)],
                conf,
            }],
            deltas,
            rescore_samples: samples,
            review_labels: labels,
            ..Default::default()
        }
    };
    let upserts = |tag: u8| (0..N).map(move |i| (format!("c:{i}"), Some(vec![tag, i as u8]))).collect::<Vec<_>>();
    let first = batch(
        0,
        upserts(1),
        vec![
            label("c1", 10, true),
            label("c1", 10, false),
            label("c1", 5, true),
            label("c2", 20, true),
            label("c3", 1, false),
        ],
    );
    assert!(matches!(store.commit(&first).await.unwrap(), CommitOutcome::Committed(_)));
    let mut state = upserts(2);
    for (_, s) in state.iter_mut().take(200) {
        *s = None;
    }
    let second = batch(1, state, vec![label("c2", 15, false), label("c3", 1, true), label("c4", 7, false)]);
    assert!(matches!(store.commit(&second).await.unwrap(), CommitOutcome::Committed(_)));

    let pool = store.pool();
    let one = |sql: &'static str| async move { sqlx::query_as::<_, (i64, f64)>(sql).fetch_one(pool).await.unwrap() };
    assert_eq!(
        one("SELECT count(*), total(decisions) + total(csat_sum) FROM tw_agg_quality WHERE decisions = 2").await,
        (N as i64, 3.0 * N as f64)
    );
    assert_eq!(one("SELECT count(*), total(count) FROM tw_agg_latency").await, (N as i64, 2.0 * N as f64));
    assert_eq!(one("SELECT count(*), 0.0 FROM tw_join_state").await, (100, 0.0));
    let state: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, state FROM tw_join_state ORDER BY key").fetch_all(pool).await.unwrap();
    let mut expected: Vec<(String, Vec<u8>)> = (200..N).map(|i| (format!("c:{i}"), vec![2, i as u8])).collect();
    expected.sort();
    assert_eq!(state, expected);
    assert_eq!(one("SELECT next_offset, 0.0 FROM tw_offsets").await, (11, 0.0));
    let conf: Vec<(i64, i64, i64, f64, Vec<u8>)> =
        sqlx::query_as("SELECT hour_ms, n, conversations, threshold_sum, hist FROM tw_conf_hist ORDER BY hour_ms")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(conf.len(), N);
    for (i, (_, n, conversations, threshold_sum, hist)) in conf.iter().enumerate() {
        assert_eq!((*n, *conversations, *threshold_sum), (4, 2, 1.0));
        let mut expected = crate::stats::hist::ConfHist::new();
        for _ in 0..2 {
            expected.record(0.25);
            expected.record(i as f64 / N as f64);
        }
        assert_eq!(*hist, expected.to_bytes(), "hour {i}");
    }
    assert_eq!(one("SELECT count(*), 0.0 FROM tw_rescore_samples").await, (N as i64, 0.0));
    let labels: Vec<(String, Option<bool>, Option<i64>)> = sqlx::query_as(
        "SELECT conversation_id, review_addressed, reviewed_at_ms FROM tw_rescore_samples \
         WHERE conversation_id IN ('c1', 'c2', 'c3', 'c4', 'c5') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        labels,
        vec![
            ("c1".into(), Some(false), Some(10)), // the later time wins; at a tie, not addressed
            ("c2".into(), Some(true), Some(20)),  // an older label does not overwrite a newer one
            ("c3".into(), Some(true), Some(1)),   // an equal time does
            ("c4".into(), Some(false), Some(7)),
            ("c5".into(), None, None),
        ]
    );

    // Rescores: a first result per event applies (Scored, or Shed), a repeat changes nothing.
    let scored = |i: usize| RescoreResult {
        event_id: format!("e{i}"),
        outcome: RescoreOutcome::Scored { p_complex: 0.75, model_version: "m1".into(), threshold: 0.5 },
    };
    let shed = |i: usize| RescoreResult { event_id: format!("e{i}"), outcome: RescoreOutcome::Shed };
    let mut results: Vec<_> = (0..200).map(scored).chain((200..N).map(shed)).collect();
    results.push(shed(5));
    results.push(scored(250));
    assert_eq!(store.apply_rescores(&results).await.unwrap(), N as u64);
    assert_eq!(store.apply_rescores(&results).await.unwrap(), 0);
    assert_eq!(
        one("SELECT count(*), sum(p_complex) FROM tw_rescore_samples WHERE status = 'scored' AND model_version = 'm1'")
            .await,
        (200, 150.0)
    );
    assert_eq!(one("SELECT count(*), 0.0 FROM tw_rescore_samples WHERE status = 'shed'").await, (100, 0.0));
    assert_eq!(
        one("SELECT sum(n), total(conversations) FROM tw_conf_hist WHERE signal = 'rescore_score'").await,
        (200, 200.0)
    );
}

#[tokio::test]
async fn new_database_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tw.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    for f in ["tw.db", "tw.db-wal", "tw.db-shm"] {
        let p = dir.path().join(f);
        let mode = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{f}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
    }
    // An sqlx URL names the file too.
    let url = format!("sqlite://{}", dir.path().join("u.db").display());
    drop(SqliteStore::open(&url).await.unwrap());
    let mode = std::fs::metadata(dir.path().join("u.db")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
