//! Threshold advice: what each candidate threshold would have cost over a window.
//!
//! A turn is routed to (PRE_ROUTE) or kept on (CASCADE) the cheap tier when its confidence is at
//! or above the threshold; on the 0.01 grid that is "cell ≥ 100·t", exactly. For a candidate t,
//! every cell's turns either stay where they were served (observed cost and failed deflections)
//! or move:
//! * cheap → capable (stricter t): a PRE_ROUTE turn costs its capable cost, a CASCADE turn its
//!   cost plus the capable call; its failed-deflection rate is the capable tier's in the
//!   confidence range it serves just below the threshold in force (`neighbour_cells` wide).
//! * capable → cheap (looser t): the cheap tier never served these turns. Their rate is the cheap
//!   tier's rate just above the threshold in force, scaled by how much more often the rescorer
//!   judged them to need the capable tier (weighted share with p_complex ≥ θ) than the cheap
//!   tier's turns there; the row is `extrapolated`. A PRE_ROUTE turn's cheap cost is its capable
//!   cost times the window's cheap/capable cost ratio; a CASCADE turn saves the capable call.
//!
//! Bounds: observed failed deflections get the Wilson interval of their pooled rate; moved ones
//! the Wilson interval of the rate that stands in for them; an extrapolated part is widened to
//! [½, 2] × its estimate. The parts' bounds are added (conservative).

use super::{sum_cells, RouterEvalConfig};
use crate::metrics::{CalibCounts, CALIB_CELLS};
use crate::stats::wilson95;

/// Per-cell rescoring-slice evidence: Σw and Σw·[p_complex ≥ θ] of the scored samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RescoreCell {
    pub w: f64,
    pub wy: f64,
}

impl RescoreCell {
    pub fn add(&mut self, o: &RescoreCell) {
        self.w += o.w;
        self.wy += o.wy;
    }
}

/// What the advice is computed from, for one classifier version, router and window.
#[derive(Debug, Clone)]
pub struct AdviceInput<'a> {
    /// CASCADE: a kept cheap answer that moves to escalated costs its cost plus the capable call.
    pub cascade: bool,
    pub cheap: &'a [CalibCounts],
    pub capable: &'a [CalibCounts],
    /// Rescoring evidence per cell of the cheap- and the capable-served turns.
    pub rescore_cheap: &'a [RescoreCell],
    pub rescore_capable: &'a [RescoreCell],
    /// The threshold in force (mean over the window's decisions).
    pub current: f64,
    pub human_cost_per_failure_usd: f64,
}

/// One row of `threshold_advice`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceRow {
    pub threshold: f64,
    pub is_current: bool,
    pub is_recommended: bool,
    pub decisions: u64,
    pub cheap_share: f64,
    pub inference_cost_usd: f64,
    pub expected_failed_deflections: f64,
    pub expected_failed_deflections_lo: f64,
    pub expected_failed_deflections_hi: f64,
    pub cheap_failure_rate: Option<f64>,
    pub human_cost_per_failure_usd: f64,
    pub expected_human_cost_usd: f64,
    pub net_cost_usd: f64,
    pub net_cost_lo_usd: f64,
    pub net_cost_hi_usd: f64,
    /// Net cost of the threshold in force minus this one's (positive = this one is cheaper), with
    /// bounds from the turns the two thresholds route differently only: the outcomes both share
    /// cancel, so these bounds are much narrower than the difference of the net-cost bounds.
    pub net_saving_usd: f64,
    pub net_saving_lo_usd: f64,
    pub net_saving_hi_usd: f64,
    pub extrapolated: bool,
}

/// Failed deflections and cost of some cells under one threshold.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    cost_nusd: f64,
    fd: f64,
    fd_lo: f64,
    fd_hi: f64,
    cheap_n: f64,
    cheap_fd: f64,
    moved_down: f64,
    evidence: bool,
}

/// The window's cells and the rates that stand in for moved turns.
struct Env<'a> {
    cascade: bool,
    cheap: &'a [CalibCounts],
    capable: &'a [CalibCounts],
    rescore_capable: &'a [RescoreCell],
    capable_near: Option<Rate>,
    cheap_near: Option<Rate>,
    cheap_cost_ratio: f64,
    rescore_near: RescoreCell,
}

impl Env<'_> {
    /// Cells `range` under the threshold of cell `k`.
    fn under(&self, k: usize, range: std::ops::Range<usize>) -> Part {
        let clip =
            |r: std::ops::Range<usize>| r.start.max(range.start)..r.end.min(range.end).max(r.start.max(range.start));
        let cells = usize::from(CALIB_CELLS);
        let kept_cheap = sum_cells(self.cheap, clip(k..cells));
        let kept_capable = sum_cells(self.capable, clip(0..k));
        let to_capable = sum_cells(self.cheap, clip(0..k));
        let to_cheap = sum_cells(self.capable, clip(k..cells));

        let mut cost = kept_cheap.cost_nusd as f64 + kept_capable.cost_nusd as f64;
        cost += if self.cascade {
            (to_capable.cost_nusd + to_capable.capable_cost_nusd) as f64
        } else {
            to_capable.capable_cost_nusd as f64
        };
        cost += if self.cascade {
            (to_cheap.cost_nusd - to_cheap.capable_cost_nusd).max(0) as f64
        } else {
            to_cheap.capable_cost_nusd as f64 * self.cheap_cost_ratio
        };

        // Observed part.
        let mut observed = kept_cheap;
        observed.add(&kept_capable);
        let (mut fd, mut fd_lo, mut fd_hi) = (0.0, 0.0, 0.0);
        if let Some(r) = fd_rate(&observed) {
            let n = observed.decisions as f64;
            fd += r.p * n;
            fd_lo += r.lo * n;
            fd_hi += r.hi * n;
        }
        // Cheap → capable.
        let moved_up = to_capable.decisions.max(0) as f64;
        if moved_up > 0.0 {
            let r = self.capable_near.unwrap_or(Rate { p: 0.0, lo: 0.0, hi: 1.0 });
            fd += r.p * moved_up;
            fd_lo += r.lo * moved_up;
            fd_hi += r.hi * moved_up;
        }
        // Capable → cheap (extrapolated).
        let moved_down = to_cheap.decisions.max(0) as f64;
        let mut moved_down_fd = 0.0;
        let mut evidence = RescoreCell::default();
        for c in self.rescore_capable.get(k..cells).unwrap_or(&[]) {
            evidence.add(c);
        }
        if moved_down > 0.0 {
            let base = self.cheap_near.unwrap_or(Rate { p: 0.0, lo: 0.0, hi: 1.0 });
            let near = self.rescore_near;
            let ratio = if evidence.w > 0.0 && near.w > 0.0 && near.wy > 0.0 {
                (evidence.wy / evidence.w) / (near.wy / near.w)
            } else {
                1.0
            };
            let p = (base.p * ratio).min(1.0);
            moved_down_fd = p * moved_down;
            fd += moved_down_fd;
            fd_lo += (base.lo * ratio * 0.5).min(1.0) * moved_down;
            fd_hi += (base.hi * ratio * 2.0).min(1.0) * moved_down;
        }
        Part {
            cost_nusd: cost,
            fd,
            fd_lo,
            fd_hi,
            cheap_n: (kept_cheap.decisions + to_cheap.decisions).max(0) as f64,
            cheap_fd: kept_cheap.failed_deflections as f64 + moved_down_fd,
            moved_down,
            evidence: evidence.w > 0.0 && self.rescore_near.w > 0.0,
        }
    }
}

/// A rate with its 95% bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    p: f64,
    lo: f64,
    hi: f64,
}

fn fd_rate(c: &CalibCounts) -> Option<Rate> {
    let n = c.decisions.max(0) as u64;
    let x = c.failed_deflections.clamp(0, c.decisions.max(0)) as u64;
    let (lo, hi) = wilson95(x, n)?;
    Some(Rate { p: x as f64 / n as f64, lo, hi })
}

/// The grid cell of a threshold (t = 0.60 → 60).
pub fn threshold_cell(t: f64) -> usize {
    ((t * 100.0).round().max(0.0) as usize).min(usize::from(CALIB_CELLS))
}

/// Advice rows for every candidate threshold; empty when the window has no decisions.
pub fn advise(cfg: &RouterEvalConfig, input: &AdviceInput<'_>) -> Vec<AdviceRow> {
    let cells = usize::from(CALIB_CELLS);
    let all = {
        let mut s = sum_cells(input.cheap, 0..cells);
        s.add(&sum_cells(input.capable, 0..cells));
        s
    };
    if all.decisions <= 0 {
        return vec![];
    }
    let k0 = threshold_cell(input.current);
    let nb = usize::from(cfg.neighbour_cells);
    // The capable tier just below the threshold in force; all of it when that range is empty.
    let capable_near = fd_rate(&sum_cells(input.capable, k0.saturating_sub(nb)..k0))
        .or_else(|| fd_rate(&sum_cells(input.capable, 0..cells)));
    // The cheap tier just above it; all of it when that range is empty.
    let cheap_near_counts = sum_cells(input.cheap, k0..(k0 + nb).min(cells));
    let cheap_near = fd_rate(&cheap_near_counts).or_else(|| fd_rate(&sum_cells(input.cheap, 0..cells)));
    let cheap_total = sum_cells(input.cheap, 0..cells);
    let cheap_cost_ratio = if cheap_total.capable_cost_nusd > 0 {
        cheap_total.cost_nusd as f64 / cheap_total.capable_cost_nusd as f64
    } else {
        1.0
    };
    let rescore_near = {
        let mut s = RescoreCell::default();
        for c in input.rescore_cheap.get(k0..(k0 + nb).min(cells)).unwrap_or(&[]) {
            s.add(c);
        }
        s
    };

    let env = Env {
        cascade: input.cascade,
        cheap: input.cheap,
        capable: input.capable,
        rescore_capable: input.rescore_capable,
        capable_near,
        cheap_near,
        cheap_cost_ratio,
        rescore_near,
    };
    let span = (cfg.threshold_span * 100.0).round() as i64;
    let lo_cell = (k0 as i64 - span).max(1);
    let hi_cell = (k0 as i64 + span).min(cells as i64 - 1);
    let hc = input.human_cost_per_failure_usd;
    let mut rows = vec![];
    // Per row: whether the rescoring slice has evidence on the turns it would move to the cheap tier.
    let mut evidence_for = vec![];
    for k in lo_cell..=hi_cell {
        let k = k as usize;
        let p = env.under(k, 0..cells);
        evidence_for.push(p.evidence);
        // Against the threshold in force only the cells between the two thresholds differ.
        let between = k.min(k0)..k.max(k0);
        let (now, then) = (env.under(k0, between.clone()), env.under(k, between));
        let d_cost = (now.cost_nusd - then.cost_nusd) / 1e9;
        let cost_usd = p.cost_nusd / 1e9;
        rows.push(AdviceRow {
            threshold: k as f64 / 100.0,
            is_current: k == k0,
            is_recommended: false,
            decisions: all.decisions as u64,
            cheap_share: p.cheap_n / all.decisions as f64,
            inference_cost_usd: cost_usd,
            expected_failed_deflections: p.fd,
            expected_failed_deflections_lo: p.fd_lo.min(p.fd),
            expected_failed_deflections_hi: p.fd_hi.max(p.fd),
            cheap_failure_rate: (p.cheap_n > 0.0).then(|| p.cheap_fd / p.cheap_n),
            human_cost_per_failure_usd: hc,
            expected_human_cost_usd: p.fd * hc,
            net_cost_usd: cost_usd + p.fd * hc,
            net_cost_lo_usd: cost_usd + p.fd_lo.min(p.fd) * hc,
            net_cost_hi_usd: cost_usd + p.fd_hi.max(p.fd) * hc,
            net_saving_usd: d_cost + (now.fd - then.fd) * hc,
            net_saving_lo_usd: d_cost + (now.fd_lo.min(now.fd) - then.fd_hi.max(then.fd)) * hc,
            net_saving_hi_usd: d_cost + (now.fd_hi.max(now.fd) - then.fd_lo.min(then.fd)) * hc,
            extrapolated: p.moved_down > 0.0,
        });
    }
    if let Some(best) = recommended(cfg, &rows, k0, &evidence_for) {
        rows[best].is_recommended = true;
    }
    rows
}

/// The recommendation: the lowest net cost whose cheap-tier failure rate stays at or under the
/// ceiling; ties go to the candidate closest to the threshold in force. How sure it is, is the
/// row's saving bounds (`net_saving_lo_usd > 0`: significantly cheaper than the threshold in
/// force). Measured against the simulator's ground truth, gating the recommendation itself on
/// significance kept the threshold in force on 21% of the post-mortem's late windows where the
/// true optimum was elsewhere, so the two are reported side by side instead.
///
/// An extrapolated candidate sends the cheap tier turns it never served: it is only eligible with
/// rescoring evidence for them, and is ranked by its pessimistic (upper) net cost, so the advice
/// never loosens a threshold on a guess.
fn recommended(cfg: &RouterEvalConfig, rows: &[AdviceRow], k0: usize, evidence: &[bool]) -> Option<usize> {
    let rank = |r: &AdviceRow| if r.extrapolated && !r.is_current { r.net_cost_hi_usd } else { r.net_cost_usd };
    let meets = |r: &AdviceRow| r.cheap_failure_rate.is_none_or(|f| f <= cfg.failure_rate_ceiling);
    let eligible =
        |i: usize, r: &AdviceRow| r.is_current || !r.extrapolated || evidence.get(i).copied().unwrap_or(false);
    rows.iter()
        .enumerate()
        .filter(|(i, r)| eligible(*i, r) && meets(r))
        .min_by(|(_, a), (_, b)| {
            let da = (threshold_cell(a.threshold) as i64 - k0 as i64).abs();
            let db = (threshold_cell(b.threshold) as i64 - k0 as i64).abs();
            rank(a).total_cmp(&rank(b)).then(da.cmp(&db))
        })
        .map(|(i, _)| i)
}
