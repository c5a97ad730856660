//! Drift evaluation of a 10M-sample day against a 10M-sample reference (target < 10 ms,
//! docs/architecture.md#performance-targets): KS (D and the asymptotic p-value) + PSI on frozen
//! reference deciles + its noise level.
//!
//! `cargo bench --bench drift`. The histograms and the frozen PSI edges are built once, outside the
//! timed loop (edges are frozen when the reference is set, not per evaluation).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tierwatch::stats::hist::ConfHist;
use tierwatch::stats::psi::{DEFAULT_NOISE_QUANTILE, DEFAULT_PSI_BINS, DEFAULT_PSI_FLOOR};
use tierwatch::stats::{ks_two_sample, psi, psi_noise, PsiBins};

const SAMPLES: usize = 10_000_000;

/// Deterministic clipped-normal confidences (SplitMix64 + Box–Muller).
fn synthetic(n: usize, mu: f64, sd: f64, mut state: u64) -> ConfHist {
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut h = ConfHist::new();
    let mut i = 0;
    while i < n {
        let r = (-2.0 * (1.0 - next()).ln()).sqrt();
        let t = std::f64::consts::TAU * next();
        h.record(mu + sd * r * t.cos());
        h.record(mu + sd * r * t.sin());
        i += 2;
    }
    h
}

fn drift(c: &mut Criterion) {
    let reference = synthetic(SAMPLES, 0.62, 0.15, 1);
    let current = synthetic(SAMPLES, 0.621, 0.15, 2);
    let bins = PsiBins::from_reference(&reference, DEFAULT_PSI_BINS).expect("non-empty reference");
    c.bench_function("drift_eval_10M_vs_10M", |b| {
        b.iter(|| {
            let ks = ks_two_sample(black_box(&reference), black_box(&current));
            let p = psi(&bins, black_box(&reference), black_box(&current), DEFAULT_PSI_FLOOR);
            let noise = psi_noise(reference.total(), current.total(), bins.len(), DEFAULT_NOISE_QUANTILE);
            black_box((ks, p, noise))
        })
    });
}

criterion_group!(benches, drift);
criterion_main!(benches);
