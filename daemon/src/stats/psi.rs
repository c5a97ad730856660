//! Population Stability Index with bins frozen from the reference.
//!
//! # Edge rule (identical in `tools/oracle/stats_fixtures.py`)
//! Let the reference hold `n` values on the 1e-4 grid and `B` be the requested number of bins.
//! For `i = 1..B−1` the candidate edge `e_i` is the `⌈i·n/B⌉`-th smallest reference grid point
//! (1-based): the inverted-CDF (type 1) quantile at `i/B`, computed in integers so there is no
//! floating-point ambiguity at exact deciles. Then:
//! * duplicate candidates (a value holding more than one decile's worth of mass) are collapsed;
//! * a candidate equal to the top grid point 10000 (confidence 1.0) is dropped, since nothing can
//!   lie above it.
//!
//! With the remaining strictly increasing edges `e_1 < … < e_K` the `K + 1` bins are
//! `(−∞, e_1], (e_1, e_2], …, (e_K, +∞)` — outer bins open-ended; grid point `k` falls into bin
//! `#{e : e < k}`. The bins actually used ([`PsiBins::len`]) can therefore be fewer than
//! requested on a heavily tied reference; the noise level must use that number.
//!
//! # Formula
//! Shares are `count / total`, floored at `floor` (`max(share, floor)`, not renormalised), and
//! `PSI = Σ (cur_i − ref_i) · ln(cur_i / ref_i)`, each term ≥ 0. With no drift,
//! `PSI ≈ (1/n + 1/m) · χ²(B − 1)` ([`psi_noise`]).

use statrs::distribution::{ChiSquared, ContinuousCDF};
use thiserror::Error;

use super::hist::{ConfHist, BINS, GRID};

/// Default number of PSI bins (deciles).
pub const DEFAULT_PSI_BINS: usize = 10;
/// Default share floor (Evidently's value for empty bins).
pub const DEFAULT_PSI_FLOOR: f64 = 1e-4;
/// Default quantile of the no-drift noise level.
pub const DEFAULT_NOISE_QUANTILE: f64 = 0.999;

/// Invalid frozen edges given to [`PsiBins::from_edges`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PsiError {
    #[error("edges must be strictly increasing grid points below {GRID}")]
    InvalidEdges,
}

/// Frozen PSI bin edges (grid points), see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsiBins {
    edges: Vec<u16>,
}

impl PsiBins {
    /// Edges at the reference's `bins`-quantiles (see the module docs). `None` if the reference
    /// is empty or `bins == 0`.
    pub fn from_reference(reference: &ConfHist, bins: usize) -> Option<Self> {
        let n = reference.total();
        if n == 0 || bins == 0 {
            return None;
        }
        let b = bins as u128;
        let mut edges: Vec<u16> = Vec::with_capacity(bins.saturating_sub(1));
        let mut cum: u64 = 0;
        let counts = reference.counts();
        let mut grid = counts.iter().enumerate();
        let mut at: usize = 0; // current grid point
        for i in 1..bins {
            // ⌈i·n/B⌉ in u128 (no overflow for any u64 n and usize B).
            let rank = (i as u128 * u128::from(n)).div_ceil(b) as u64;
            while cum < rank {
                match grid.next() {
                    Some((k, &c)) => {
                        cum += c;
                        at = k;
                    }
                    None => break,
                }
            }
            // `at` < BINS, so it fits in u16.
            let e = at as u16;
            if e < GRID && edges.last().is_none_or(|&last| last < e) {
                edges.push(e);
            }
        }
        Some(Self { edges })
    }

    /// Restores frozen edges (e.g. read back from storage): strictly increasing, all `< 10000`.
    pub fn from_edges(edges: Vec<u16>) -> Result<Self, PsiError> {
        if edges.iter().any(|&e| e >= GRID) || edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PsiError::InvalidEdges);
        }
        Ok(Self { edges })
    }

    /// The edges, as grid points (`edge / 10⁴` is the confidence).
    pub fn edges(&self) -> &[u16] {
        &self.edges
    }

    /// Number of bins actually used: `edges().len() + 1`.
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Always `false`: there is at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Counts per bin.
    pub fn counts(&self, h: &ConfHist) -> Vec<u64> {
        let mut out = vec![0u64; self.len()];
        let mut bin = 0usize;
        let counts = h.counts();
        for (k, &c) in counts.iter().enumerate().take(BINS) {
            while bin < self.edges.len() && usize::from(self.edges[bin]) < k {
                bin += 1;
            }
            out[bin] += c;
        }
        out
    }

    /// Shares per bin (`count / total`, unfloored); `None` for an empty histogram.
    pub fn shares(&self, h: &ConfHist) -> Option<Vec<f64>> {
        let total = h.total();
        if total == 0 {
            return None;
        }
        Some(self.counts(h).into_iter().map(|c| c as f64 / total as f64).collect())
    }
}

/// PSI of `current` against `reference` on the frozen `bins`, shares floored at `floor`.
/// `None` if either histogram is empty or `floor` is not a positive finite number.
pub fn psi(bins: &PsiBins, reference: &ConfHist, current: &ConfHist, floor: f64) -> Option<f64> {
    if !(floor > 0.0 && floor.is_finite()) {
        return None;
    }
    let r = bins.shares(reference)?;
    let c = bins.shares(current)?;
    let mut total = 0.0f64;
    for (&ri, &ci) in r.iter().zip(&c) {
        let (ri, ci) = (ri.max(floor), ci.max(floor));
        total += (ci - ri) * (ci / ri).ln();
    }
    Some(total)
}

/// The no-drift noise level `(1/n + 1/m) · χ²_q(B − 1)` for `bins = B` bins actually used
/// (pass [`PsiBins::len`]) and quantile `q`. `None` if `n` or `m` is 0, `bins < 2` or `q ∉ (0, 1)`.
pub fn psi_noise(n: u64, m: u64, bins: usize, quantile: f64) -> Option<f64> {
    if n == 0 || m == 0 || bins < 2 || !(quantile > 0.0 && quantile < 1.0) {
        return None;
    }
    let chi2 = ChiSquared::new((bins - 1) as f64).ok()?;
    let x = chi2.inverse_cdf(quantile);
    x.is_finite().then_some((1.0 / n as f64 + 1.0 / m as f64) * x)
}
