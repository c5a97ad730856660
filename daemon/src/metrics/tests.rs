//! Unit tests of the time buckets, the latency bins and nano-USD money.

use super::*;

#[test]
fn buckets_are_utc_and_handle_negative_times() {
    assert_eq!(hour_start(3_600_000 + 5), 3_600_000);
    assert_eq!(day_start(DAY_MS * 3 + 1), DAY_MS * 3);
    assert_eq!(hour_start(-1), -HOUR_MS);
}

#[test]
fn latency_bins_have_half_percent_error() {
    for l in [0.5, 1.0, 37.0, 250.0, 1234.5, 98_765.0] {
        let v = latency_bin_value(latency_bin(l));
        assert!(((v - l) / l).abs() <= 0.0051, "{l} → {v}");
    }
    assert_eq!(latency_bin(f64::NAN), latency_bin(0.0));
}

#[test]
fn nano_usd_is_exact_for_typical_prices() {
    assert_eq!(nano_usd(0.000123), 123_000);
    assert_eq!(nano_usd(12.5), 12_500_000_000);
}
