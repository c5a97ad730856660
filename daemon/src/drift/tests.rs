//! Unit tests of the drift status rules, with measured false-alarm and detection rates.

use super::*;

fn window(values: impl IntoIterator<Item = f64>, conversations: u64) -> Window {
    let hist = ConfHist::from_values(values);
    Window { hist, conversations, ..Default::default() }
}

fn reference(values: impl IntoIterator<Item = f64>) -> Reference {
    let hist = ConfHist::from_values(values);
    let bins = PsiBins::from_reference(&hist, 10).unwrap();
    Reference { n_eff: hist.total(), hist, bins, source: "test".into() }
}

/// A deterministic smooth sample: quantiles of a tent-like distribution on [lo, hi].
fn sample(n: usize, shift: f64) -> Vec<f64> {
    (0..n).map(|i| ((i as f64 + 0.5) / n as f64).sqrt() * 0.6 + 0.2 + shift).collect()
}

#[test]
fn large_n_negligible_shift_is_ok_though_significant() {
    let cfg = DriftConfig::default();
    let r = reference(sample(1_000_000, 0.0));
    let row = evaluate(&cfg, Some(&r), &window(sample(1_000_000, 0.005), 1_000_000));
    assert!(row.ks_p.unwrap() < 1e-6, "tiny p with a million samples: {:?}", row.ks_p);
    assert!(row.ks_d.unwrap() < cfg.warning_ks_d);
    assert_eq!(row.status, Status::Ok);
    let row = evaluate(&cfg, Some(&r), &window(sample(1_000_000, 0.05), 1_000_000));
    assert!(matches!(row.status, Status::Warning | Status::Critical), "{row:?}");
}

#[test]
fn multi_turn_traffic_uses_conversations_for_significance() {
    let cfg = DriftConfig::default();
    let r = reference(sample(20_000, 0.0));
    // A shift of D ≈ 0.03 over 20k decisions but only 600 conversations is not significant.
    let w = window(sample(20_000, 0.01), 600);
    let row = evaluate(&cfg, Some(&r), &w);
    assert!(row.ks_d.unwrap() >= cfg.warning_ks_d);
    assert!(row.ks_p.unwrap() > cfg.ks_p_max, "{row:?}");
    assert_eq!(row.status, Status::Ok);
    let w = window(sample(20_000, 0.01), 20_000);
    assert_eq!(evaluate(&cfg, Some(&r), &w).status, Status::Warning);
}

#[test]
fn small_windows_are_insufficient_and_missing_reference_is_reported() {
    let cfg = DriftConfig::default();
    let r = reference(sample(10_000, 0.0));
    assert_eq!(evaluate(&cfg, Some(&r), &window(sample(499, 0.3), 499)).status, Status::Insufficient);
    assert_eq!(evaluate(&cfg, None, &window(sample(5_000, 0.0), 5_000)).status, Status::NoReference);
}

/// SplitMix64: a tiny seeded generator for the measurements below.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A skewed confidence like a router's: 0.35 + 0.6·u^0.7, shifted down by `shift`.
    fn confidence(&mut self, shift: f64) -> f64 {
        (0.35 + 0.6 * self.uniform().powf(0.7) - shift).clamp(0.0, 1.0)
    }
}

/// Measured false-alarm and detection rates of a single evaluation (no hysteresis) on
/// independent random windows; the figures are printed (`--nocapture`) and bounded.
#[test]
fn measured_false_alarm_and_detection_rates() {
    let cfg = DriftConfig::default();
    let mut rng = Rng(20260105);
    let r = reference((0..20_000).map(|_| rng.confidence(0.0)));
    let rate = |rng: &mut Rng, n: usize, shift: f64, windows: usize| -> (f64, f64) {
        let (mut warn, mut crit) = (0, 0);
        for _ in 0..windows {
            let w = window((0..n).map(|_| rng.confidence(shift)), n as u64);
            match evaluate(&cfg, Some(&r), &w).status {
                Status::Warning => warn += 1,
                Status::Critical => crit += 1,
                _ => {}
            }
        }
        (warn as f64 / windows as f64, crit as f64 / windows as f64)
    };
    let (fa_w, fa_c) = rate(&mut rng, 1_000, 0.0, 1_000);
    let (fa_w5, fa_c5) = rate(&mut rng, 5_000, 0.0, 300);
    let (d_w, d_c) = rate(&mut rng, 5_000, 0.02, 300);
    let (d_w2, d_c2) = rate(&mut rng, 5_000, 0.05, 100);
    println!(
        "no drift, n=1000: warning {fa_w:.4} critical {fa_c:.4}; n=5000: warning {fa_w5:.4} critical {fa_c5:.4}; \
         shift 0.02, n=5000: warning {d_w:.3} critical {d_c:.3}; shift 0.05: warning {d_w2:.3} critical {d_c2:.3}"
    );
    // p < 0.001 gates every KS decision and PSI's bar is far above its noise: about 1 in 1000.
    assert!(fa_w + fa_c <= 0.005 && fa_w5 + fa_c5 <= 0.01);
    assert!(d_w + d_c >= 0.9, "a 0.02 shift (D ≈ 0.03) is seen at n = 5000");
    assert!(d_w2 + d_c2 >= 0.99);
}

#[test]
fn big_shift_is_critical_and_expected_share_follows_the_reference() {
    let cfg = DriftConfig::default();
    let r = reference(sample(10_000, 0.0));
    let mut w = window(sample(10_000, 0.15), 10_000);
    w.threshold_sum = 0.5 * 10_000.0;
    w.threshold_n = 10_000;
    let row = evaluate(&cfg, Some(&r), &w);
    assert_eq!(row.status, Status::Critical);
    // Reference: share of sqrt(u)·0.6 + 0.2 ≥ 0.5 ⇔ u ≥ 0.25 → 0.75.
    assert!((row.cheap_share_expected.unwrap() - 0.75).abs() < 1e-3, "{row:?}");
}
