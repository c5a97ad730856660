//! Two-sample Kolmogorov–Smirnov on [`ConfHist`]s.
//!
//! * `D = sup_x |F_ref(x) − F_cur(x)|`, evaluated at every grid point. The empirical CDFs are step
//!   functions that only move at recorded grid points, so this is the supremum over the real line
//!   and equals `scipy.stats.ks_2samp(ref, cur).statistic` on the same values rounded to 4
//!   decimals, ties included (scipy evaluates both CDFs at every observed value with
//!   `searchsorted(..., side="right")`, i.e. counts of values ≤ x, exactly what the cumulative
//!   counts here are). Each CDF value is computed as `count / n` in f64 like scipy's, so D agrees to
//!   the last bit in practice (the contract is 1e-12).
//! * p-value: `scipy.stats.ks_2samp(..., method="asymp")` returns
//!   `kstwo.sf(D, round(n·m/(n+m)))` — the finite-size one-sample Kolmogorov distribution at the
//!   integer "effective size", not the limiting distribution. [`ks_two_sample`] does the same
//!   ([`effective_size`], [`ks_pvalue`]); [`ks_two_sample_with_n_eff`] takes an explicit
//!   effective size (the daemon passes one computed from distinct conversations, since turns of a
//!   conversation are not independent samples).

use super::hist::ConfHist;
use super::kolmogorov::kstwo_sf;

/// Result of a two-sample KS comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// `sup |F_ref − F_cur|` over all values, in [0, 1].
    pub d: f64,
    /// Size of the reference sample.
    pub n: u64,
    /// Size of the current sample.
    pub m: u64,
    /// Effective size the p-value was computed at.
    pub n_eff: u64,
    /// Two-sided p-value `kstwo.sf(d, n_eff)`, in [0, 1].
    pub p_value: f64,
}

/// The KS statistic `D`, or `None` if either histogram is empty.
pub fn ks_statistic(reference: &ConfHist, current: &ConfHist) -> Option<f64> {
    let (n, m) = (reference.total(), current.total());
    if n == 0 || m == 0 {
        return None;
    }
    let (nf, mf) = (n as f64, m as f64);
    let (mut a, mut b) = (0u64, 0u64);
    let (mut max, mut min) = (0.0f64, 0.0f64);
    for (&ca, &cb) in reference.counts().iter().zip(current.counts().iter()) {
        if ca == 0 && cb == 0 {
            continue;
        }
        a += ca;
        b += cb;
        let diff = a as f64 / nf - b as f64 / mf;
        max = max.max(diff);
        min = min.min(diff);
    }
    Some(max.max(-min).clamp(0.0, 1.0))
}

/// `round(n·m/(n+m))` as scipy computes it for `ks_2samp(method="asymp")`: the quotient in f64,
/// rounded half to even (`np.round`); 0 when either size is 0.
pub fn effective_size(n: u64, m: u64) -> u64 {
    if n == 0 || m == 0 {
        return 0;
    }
    let (big, small) = if n >= m { (n as f64, m as f64) } else { (m as f64, n as f64) };
    (big * small / (big + small)).round_ties_even() as u64
}

/// Two-sided p-value of a KS statistic `d` at effective size `n_eff`: `kstwo.sf(d, n_eff)`
/// (see [`super::kolmogorov`]). 1 when `n_eff = 0`.
pub fn ks_pvalue(d: f64, n_eff: u64) -> f64 {
    kstwo_sf(d, n_eff)
}

/// D and the scipy-compatible asymptotic p-value at `effective_size(n, m)`; `None` if either
/// histogram is empty.
pub fn ks_two_sample(reference: &ConfHist, current: &ConfHist) -> Option<KsResult> {
    ks_two_sample_with_n_eff(reference, current, effective_size(reference.total(), current.total()))
}

/// D from every recorded value, p-value at the given effective size (e.g.
/// `effective_size(conversations_ref, conversations_cur)`); `None` if either histogram is empty.
pub fn ks_two_sample_with_n_eff(reference: &ConfHist, current: &ConfHist, n_eff: u64) -> Option<KsResult> {
    let d = ks_statistic(reference, current)?;
    Some(KsResult { d, n: reference.total(), m: current.total(), n_eff, p_value: ks_pvalue(d, n_eff) })
}
