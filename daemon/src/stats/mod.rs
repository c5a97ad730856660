//! Pure statistics for drift and quality alerts (docs/contract.md#confidence-drift, #alert-rules): no I/O, no clocks,
//! no panics on data.
//!
//! * [`hist`]: [`ConfHist`], the exact mergeable 10001-bin histogram of confidences at 1e-4
//!   resolution (why a flat array is fine: see its module docs).
//! * [`ks`]: two-sample Kolmogorov–Smirnov D and the scipy-compatible `method="asymp"` p-value,
//!   with an explicit effective size for multi-turn traffic; [`kolmogorov`]: the finite-n
//!   Kolmogorov distribution behind it.
//! * [`psi`]: PSI with reference-decile bins frozen when the reference is set, and its no-drift
//!   noise level.
//! * [`weighted`]: the mergeable weighted proportion (Hájek estimator, Kish and linearization
//!   effective sizes, Wilson interval at a fractional effective size) of the rescoring slice
//!   (docs/contract.md#rescoring-slice); oracle: `tools/oracle/weighted_fixtures.py`.
//! * This module: Wilson score intervals, the one-sided pooled two-proportion z test, Bonferroni.
//!
//! Checked against scipy by fixtures generated with `tools/oracle/stats_fixtures.py` (committed
//! under `daemon/tests/fixtures/stats/`; CI does not run Python).

pub mod hist;
pub mod kolmogorov;
pub mod ks;
pub mod psi;
pub mod weighted;

#[cfg(test)]
mod tests;

pub use hist::{ConfHist, HistError};
pub use kolmogorov::{kstwo_cdf, kstwo_sf};
pub use ks::{effective_size, ks_pvalue, ks_statistic, ks_two_sample, ks_two_sample_with_n_eff, KsResult};
pub use psi::{psi, psi_noise, PsiBins, PsiError};
pub use weighted::{wilson_at, WeightError, WeightedProportion};

use statrs::function::erf::erfc;

/// The two-sided 95% normal quantile, `Φ⁻¹(0.975)`.
pub const Z95: f64 = 1.959963984540054;

/// Wilson score interval `(lo, hi)` for `x` successes out of `n` at normal quantile `z`.
///
/// `None` when `n = 0`, `x > n` or `z` is not a finite non-negative number; otherwise both bounds
/// are in [0, 1] and `lo ≤ x/n ≤ hi` (the bounds are exactly 0 at `x = 0` and 1 at `x = n`).
pub fn wilson(x: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 || x > n || !(z.is_finite() && z >= 0.0) {
        return None;
    }
    let nf = n as f64;
    let p = x as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let centre = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    let lo = if x == 0 { 0.0 } else { (centre - half).clamp(0.0, p) };
    let hi = if x == n { 1.0 } else { (centre + half).clamp(p, 1.0) };
    Some((lo, hi))
}

/// [`wilson`] at 95% ([`Z95`]).
pub fn wilson95(x: u64, n: u64) -> Option<(f64, f64)> {
    wilson(x, n, Z95)
}

/// A one-sided test result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneSidedTest {
    /// The z statistic.
    pub z: f64,
    /// `P(Z ≥ z)` under the null, in [0, 1].
    pub p_value: f64,
}

/// Pooled two-proportion z test of `H₁: rate₁ > rate₂` with `rate_i = x_i / n_i`:
/// `z = (p̂₁ − p̂₂) / √(p̂(1 − p̂)(1/n₁ + 1/n₂))` with the pooled `p̂ = (x₁ + x₂)/(n₁ + n₂)`, and the
/// one-sided p-value `1 − Φ(z)`.
///
/// `None` when a sample is empty or `x_i > n_i`. When the pooled rate is 0 or 1 both rates are
/// equal and there is no variance: the result is `z = 0`, `p = 0.5` (the formula's value at
/// `z = 0`; never significant).
pub fn two_proportion_one_sided(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<OneSidedTest> {
    if n1 == 0 || n2 == 0 || x1 > n1 || x2 > n2 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (x1 as f64 + x2 as f64) / (n1f + n2f);
    let var = pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f);
    // var is ≥ 0 and finite here; 0 when the pooled rate is 0 or 1.
    if var <= 0.0 {
        return Some(OneSidedTest { z: 0.0, p_value: 0.5 });
    }
    let z = (x1 as f64 / n1f - x2 as f64 / n2f) / var.sqrt();
    let p_value = (0.5 * erfc(z / std::f64::consts::SQRT_2)).clamp(0.0, 1.0);
    Some(OneSidedTest { z, p_value })
}

/// Bonferroni-corrected per-test level `alpha / tests` (`alpha` itself for `tests ≤ 1`).
pub fn bonferroni(alpha: f64, tests: usize) -> f64 {
    if tests <= 1 {
        alpha
    } else {
        alpha / tests as f64
    }
}
