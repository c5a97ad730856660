use super::advice::{advise, AdviceInput, RescoreCell};
use super::calibration::{bins_from_edges, calibration_error, reliability, BinStatus};
use super::*;

fn uniform(rng: &mut SplitMix) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn bins_follow_the_reference_edges_on_the_cell_grid() {
    // Edges at 0.3000 and 0.6049: cells 0..=30 → bin 0 (cell 30's lowest point 0.30 is not
    // above the edge), 31..=60 → bin 1, 61.. → bin 2.
    let bins = bins_from_edges(&[3000, 6049]);
    assert_eq!(bins, vec![0..31, 31..61, 61..100]);
    // Edges closer than a cell collapse.
    assert_eq!(bins_from_edges(&[5001, 5002]).len(), 2);
    assert_eq!(bins_from_edges(&[]), vec![0..100]);
}

/// A stream of cheap-served turns with confidence uniform in [0.5, 1), two turns per
/// conversation, each failing with probability `1 − conf + shift` (shift 0 = calibrated).
fn stream(shift: f64, conversations: u32, seed: u64) -> Cells {
    let mut rng = SplitMix::new(seed);
    let mut cells = Cells::default();
    for conv in 0..conversations {
        let group = (conv % u32::from(CALIB_GROUPS)) as u8;
        for _ in 0..2 {
            let conf = 0.5 + 0.5 * uniform(&mut rng);
            let failed = uniform(&mut rng) < (1.0 - conf + shift).clamp(0.0, 1.0);
            let cell = crate::metrics::calib_cell(conf);
            let c = CalibCounts {
                decisions: 1,
                failures: failed as i64,
                conf_e4: i64::from(crate::stats::hist::bin_of(conf).unwrap()),
                ..Default::default()
            };
            cells.add(Served::Cheap, cell, group, &c);
        }
    }
    cells
}

#[test]
fn ece_interval_covers_zero_on_a_calibrated_stream_and_the_shift_on_an_overconfident_one() {
    let bins = bins_from_edges(&[5500, 6000, 6500, 7000, 7500, 8000, 8500, 9000, 9500]);
    let mut covered_zero = 0;
    let mut covered_shift = 0;
    for seed in 0..10 {
        let calibrated = calibration_error(&bins, &stream(0.0, 5000, seed).per_group_cell(Served::Cheap), 200, seed);
        let (lo, hi) = (calibrated.ece_lo.unwrap(), calibrated.ece_hi.unwrap());
        assert!(calibrated.ece.unwrap() < 0.03, "{calibrated:?}");
        covered_zero += (lo <= 0.0 && 0.0 <= hi) as u32;

        let over = calibration_error(&bins, &stream(0.1, 5000, seed + 100).per_group_cell(Served::Cheap), 200, seed);
        let (lo, hi) = (over.ece_lo.unwrap(), over.ece_hi.unwrap());
        covered_shift += (lo <= 0.1 && 0.1 <= hi) as u32;
        assert!((over.ece.unwrap() - 0.1).abs() < 0.02, "{over:?}");
        assert!((over.overconfidence.unwrap() - 0.1).abs() < 0.02, "{over:?}");
    }
    // 95% intervals: at least 8 of 10 seeds (the chance of fewer is below 1.2%).
    assert!(covered_zero >= 8, "calibrated: {covered_zero}/10");
    assert!(covered_shift >= 8, "overconfident: {covered_shift}/10");
}

#[test]
fn ece_is_deterministic_for_a_seed() {
    let bins = bins_from_edges(&[6000, 8000]);
    let g = stream(0.05, 500, 7).per_group_cell(Served::Cheap);
    assert_eq!(calibration_error(&bins, &g, 100, 1), calibration_error(&bins, &g, 100, 1));
}

fn bin_counts(cell: usize, n: i64, failures: i64) -> Vec<CalibCounts> {
    let mut v = vec![CalibCounts::default(); 100];
    v[cell] = CalibCounts { decisions: n, failures, conf_e4: n * (cell as i64 * 100 + 50), ..Default::default() };
    v
}

#[test]
fn a_confidently_wrong_bin_regresses_and_a_stable_one_does_not() {
    let cfg = RouterEvalConfig::default();
    let bins = bins_from_edges(&[9000]);
    let baseline = bin_counts(95, 4000, 200); // 5%
    let worse = bin_counts(95, 4000, 400); // 10%
    let same = bin_counts(95, 4000, 215);
    let rows = reliability(&cfg, &bins, &worse, Some(&baseline), false, 4);
    assert_eq!(rows[1].status, BinStatus::Regressed, "{rows:?}");
    assert_eq!(rows[0].status, BinStatus::Insufficient);
    assert!((rows[1].conf_mean.unwrap() - 0.955).abs() < 1e-9);
    let rows = reliability(&cfg, &bins, &same, Some(&baseline), false, 4);
    assert_eq!(rows[1].status, BinStatus::Ok);
    // +20% is not enough when it is not significant, and significance is not enough below +20%.
    let small = bin_counts(95, 100, 10);
    assert_eq!(reliability(&cfg, &bins, &small, Some(&bin_counts(95, 100, 5)), false, 4)[1].status, BinStatus::Ok);
    let huge_base = bin_counts(95, 1_000_000, 50_000);
    let slightly = bin_counts(95, 1_000_000, 55_000);
    assert_eq!(reliability(&cfg, &bins, &slightly, Some(&huge_base), false, 4)[1].status, BinStatus::Ok);
    // Inside the baseline nothing is tested.
    assert_eq!(reliability(&cfg, &bins, &worse, None, true, 4)[1].status, BinStatus::Baseline);
}

/// Synthetic decisions with known per-cell failed-deflection probabilities on both tiers: the
/// advice's bounds must contain the true expected net cost on stricter thresholds, and its
/// recommendation must be near the true optimum.
#[test]
fn advice_bounds_contain_the_true_net_cost_and_the_recommendation_is_near_the_optimum() {
    let cfg = RouterEvalConfig { failure_rate_ceiling: 1.0, ..Default::default() };
    // Cheap fails more as confidence falls; capable is flat-ish and smooth.
    let p_cheap = |c: usize| 0.01 + 0.5 * (1.0 - c as f64 / 100.0).powi(3);
    let p_capable = |c: usize| 0.03 + 0.02 * (c as f64 / 100.0);
    let (cheap_cost, capable_cost) = (250_000i64, 1_000_000i64); // nano-USD per decision
    let hc = 4.0;
    let (mut inside, mut total, mut near) = (0, 0, 0);
    let (mut saving_inside, mut saving_total) = (0u32, 0u32);
    let seeds = 8;
    for seed in 0..seeds {
        let mut rng = SplitMix::new(seed);
        let (mut cheap, mut capable) = (vec![CalibCounts::default(); 100], vec![CalibCounts::default(); 100]);
        let mut n_cell = [0i64; 100];
        for _ in 0..60_000 {
            let conf = 0.3 + 0.7 * uniform(&mut rng);
            let c = crate::metrics::calib_cell(conf) as usize;
            n_cell[c] += 1;
            let routed_cheap = c >= 60;
            let p = if routed_cheap { p_cheap(c) } else { p_capable(c) };
            let fd = (uniform(&mut rng) < p) as i64;
            let row = if routed_cheap { &mut cheap[c] } else { &mut capable[c] };
            row.decisions += 1;
            row.failed_deflections += fd;
            row.failures += fd;
            row.cost_nusd += if routed_cheap { cheap_cost } else { capable_cost };
            row.capable_cost_nusd += capable_cost;
        }
        let none = vec![RescoreCell::default(); 100];
        let input = AdviceInput {
            cascade: false,
            cheap: &cheap,
            capable: &capable,
            rescore_cheap: &none,
            rescore_capable: &none,
            current: 0.6,
            human_cost_per_failure_usd: hc,
        };
        let rows = advise(&cfg, &input);
        assert_eq!(rows.len(), 31);
        assert!(rows.iter().any(|r| r.is_current && (r.threshold - 0.6).abs() < 1e-9));
        let truth = |k: usize| -> f64 {
            (0..100)
                .map(|c| {
                    let n = n_cell[c] as f64;
                    if c >= k {
                        n * (cheap_cost as f64 / 1e9 + p_cheap(c) * hc)
                    } else {
                        n * (capable_cost as f64 / 1e9 + p_capable(c) * hc)
                    }
                })
                .sum()
        };
        for r in rows.iter().filter(|r| r.threshold >= 0.6 - 1e-9) {
            assert!(!r.extrapolated);
            let t = truth(advice::threshold_cell(r.threshold));
            total += 1;
            inside += (r.net_cost_lo_usd <= t && t <= r.net_cost_hi_usd) as u32;
            // The saving against the threshold in force, with its (narrower) bounds.
            let saving = truth(60) - t;
            saving_total += 1;
            saving_inside += (r.net_saving_lo_usd <= saving + 1e-9 && saving - 1e-9 <= r.net_saving_hi_usd) as u32;
            assert!(r.net_saving_hi_usd - r.net_saving_lo_usd <= r.net_cost_hi_usd - r.net_cost_lo_usd + 1e-9);
        }
        // Without rescoring evidence the advice never loosens: the optimum among the stricter ones.
        let best_truth = (60..=75).min_by(|&a, &b| truth(a).total_cmp(&truth(b))).unwrap();
        let rec = rows.iter().find(|r| r.is_recommended).unwrap();
        near += ((advice::threshold_cell(rec.threshold) as i64 - best_truth as i64).abs() <= 5) as u32;
        // Looser thresholds move capable turns the cheap tier never served: extrapolated.
        assert!(rows.iter().filter(|r| r.threshold < 0.6 - 1e-9).all(|r| r.extrapolated));
    }
    assert!(inside * 10 >= total * 9, "bounds contain the truth on {inside}/{total} stricter grid points");
    assert!(
        saving_inside * 10 >= saving_total * 9,
        "saving bounds contain the truth on {saving_inside}/{saving_total}"
    );
    assert!(near >= seeds as u32 - 1, "recommendation within 0.05 of the optimum in {near}/{seeds} runs");
}

#[test]
fn the_ceiling_excludes_thresholds_that_fail_too_often() {
    let mut cheap = vec![CalibCounts::default(); 100];
    let mut capable = vec![CalibCounts::default(); 100];
    for c in 0..100 {
        let target = if c >= 50 { &mut cheap[c] } else { &mut capable[c] };
        *target = CalibCounts {
            decisions: 1000,
            failed_deflections: if c >= 50 { 1000 - 10 * c as i64 } else { 20 },
            cost_nusd: if c >= 50 { 1 } else { 10 },
            capable_cost_nusd: 10,
            ..Default::default()
        };
    }
    let none = vec![RescoreCell::default(); 100];
    let cfg =
        RouterEvalConfig { failure_rate_ceiling: 0.2, human_cost_per_failure_usd: Some(0.0), ..Default::default() };
    let rows = advise(
        &cfg,
        &AdviceInput {
            cascade: false,
            cheap: &cheap,
            capable: &capable,
            rescore_cheap: &none,
            rescore_capable: &none,
            current: 0.5,
            human_cost_per_failure_usd: 0.0,
        },
    );
    // Without human cost the cheapest is the loosest, but the ceiling holds the cheap tier's
    // failed-deflection rate at 20%.
    let rec = rows.iter().find(|r| r.is_recommended).unwrap();
    assert!(rec.cheap_failure_rate.unwrap() <= 0.2, "{rec:?}");
    assert!(rows.iter().filter(|r| r.net_cost_usd < rec.net_cost_usd).all(|r| r.cheap_failure_rate.unwrap() > 0.2));
}

#[test]
fn config_problems_name_the_key() {
    let bad = RouterEvalConfig { alpha: 2.0, windows_days: vec![], ..Default::default() };
    let keys: Vec<String> = bad.problems().into_iter().map(|p| p.0).collect();
    assert!(keys.contains(&"router_eval.alpha".to_string()), "{keys:?}");
    assert!(keys.contains(&"router_eval.windows_days".to_string()));
    assert!(RouterEvalConfig::default().problems().is_empty());
}

/// A pass over synthetic cells: quiet through the baseline and while nothing changes, regressed
/// once the top bin's failure rate doubles, and advice rows for every mature window.
#[test]
fn a_pass_regresses_only_after_the_failure_rate_of_a_bin_rises() {
    use crate::metrics::{CalibRow, DAY_MS};
    let cfg = RouterEvalConfig::default();
    let subject = ("v1".to_string(), "PRE_ROUTE".to_string());
    let mut rows = vec![];
    for day in 0..60i64 {
        let fail_per_mille = if day >= 35 { 120 } else { 50 };
        for group in 0..32u8 {
            for (cell, tier) in [(95u8, "cheap"), (70, "cheap"), (40, "capable")] {
                let decisions = 40;
                let failures = if cell == 95 { decisions * fail_per_mille / 1000 } else { 2 };
                rows.push(CalibRow {
                    day_ms: day * DAY_MS,
                    classifier_version: subject.0.clone(),
                    router: subject.1.clone(),
                    tier: tier.into(),
                    cell,
                    group,
                    counts: CalibCounts {
                        decisions,
                        failures,
                        failed_deflections: failures / 2,
                        conf_e4: decisions * (i64::from(cell) * 100 + 50),
                        cost_nusd: decisions * if tier == "cheap" { 250 } else { 1000 },
                        capable_cost_nusd: decisions * 1000,
                    },
                });
            }
        }
    }
    let mut loaded = pass::Loaded::default();
    loaded.add_cells(rows, "capable");
    let mut ctx = pass::Context { first_day: 0, last_day: 59, last_mature_day: 59, ..Default::default() };
    ctx.first_days.insert(subject.clone(), 0);
    ctx.thresholds.insert(subject.clone(), (0..60).map(|d| (d, 0.6)).collect());
    ctx.ticket_costs = (0..60).map(|d| (d, (10, 10 * 20_000_000_000))).collect();
    // Before the drift reference is frozen: advice, but no reliability rows or summary (their
    // bins would otherwise depend on when the pass ran).
    let (early, early_evals) = pass::evaluate(&cfg, &ctx, &loaded);
    assert!(!early.is_empty() && early_evals.is_empty());
    assert!(early.iter().all(|r| r.bins.is_empty() && r.summary.is_none() && r.advice.len() == 31));
    ctx.edges.insert(subject.clone(), vec![3000, 6000, 8000, 9000]);
    let (results, evals) = pass::evaluate(&cfg, &ctx, &loaded);
    let evals = &evals[&subject];
    // Evaluated from the first day after the baseline (days 0–13).
    assert_eq!(evals.first().unwrap().window_start_ms, 14 * DAY_MS);
    let regressed: Vec<i64> = evals.iter().filter(|e| e.level.is_some()).map(|e| e.window_start_ms / DAY_MS).collect();
    assert!(!regressed.is_empty() && regressed[0] >= 35, "regressed days {regressed:?}");
    assert!(regressed.iter().all(|&d| d >= 35));
    // 7d windows from day 6, 28d from day 27; each with bins, a summary and 31 advice rows.
    let n7 = results.iter().filter(|r| r.window == "7d").count();
    let n28 = results.iter().filter(|r| r.window == "28d").count();
    assert_eq!((n7, n28), (54, 33));
    assert!(results.iter().all(|r| r.advice.len() == 31 && !r.bins.is_empty() && r.summary.is_some()));
    // Inside the baseline the bins are marked so, not tested.
    let day10 = results.iter().find(|r| r.day_ms == 10 * DAY_MS && r.window == "7d").unwrap();
    assert!(day10.bins.iter().all(|b| b.status == calibration::BinStatus::Baseline));
    // The human cost per failure defaults to the window's mean attributed ticket cost ($20).
    assert!((results[0].advice[0].human_cost_per_failure_usd - 20.0).abs() < 1e-9);
}
