//! The rescorer (target ≥ 20k rescored queries/s on one core,
//! docs/architecture.md#performance-targets): featurize + tract inference on batches of simulator
//! queries, single thread, and `ood_score` alone (the sampler calls it on the ingest path).
//!
//! `cargo bench --bench rescore`

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tierwatch::event::Event;
use tierwatch::rescore::{FeatureBuf, Rescorer};
use tierwatch::sim::{generate, Scenario, SimConfig};

/// Distinct-enough real queries: a postmortem simulation (drift cohort included) of ~20 days.
fn queries(n: usize) -> Vec<String> {
    let cfg = SimConfig { days: 40, conversations_per_day: 300, seed: 7, ..SimConfig::new(Scenario::Postmortem) };
    let sim = generate(&cfg);
    let texts: Vec<String> = sim
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Decision(d) => d.query_text,
            _ => None,
        })
        .take(n)
        .collect();
    assert_eq!(texts.len(), n, "simulation too small for {n} queries");
    texts
}

fn bench(c: &mut Criterion) {
    let model = Rescorer::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rescorer.onnx"))
        .expect("committed model loads");
    let texts = queries(4096);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let mut g = c.benchmark_group("rescore");
    g.sample_size(20);
    for batch in [1usize, 8, 64, 256] {
        g.throughput(Throughput::Elements(refs.len() as u64));
        g.bench_function(format!("featurize+score/batch{batch}/4096q"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for chunk in refs.chunks(batch) {
                    n += model.score_batch(chunk).expect("inference").len();
                }
                n
            })
        });
    }
    g.throughput(Throughput::Elements(refs.len() as u64));
    g.bench_function("featurize_only/4096q", |b| {
        let mut buf = FeatureBuf::new();
        b.iter(|| {
            let mut nnz = 0usize;
            for t in &refs {
                model.featurizer().featurize(t, &mut buf);
                nnz += buf.indices().len();
            }
            nnz
        })
    });
    g.bench_function("ood_score/4096q", |b| b.iter(|| refs.iter().map(|t| model.ood_score(t)).sum::<f64>()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
