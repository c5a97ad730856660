//! The demo's self-contained HTML report: inline SVG charts drawn with `plotters`, inline CSS, no
//! scripts or external assets, so the file can be mailed or attached to a post-mortem as is.
//!
//! Every figure is read back from the public views, the same ones a Grafana dashboard queries:
//! `deflection_daily`, `tier_quality_daily`, `confidence_drift_daily`, `human_volume_daily`,
//! `ledger_daily` and `alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use sqlx::Row;

use super::{AlertMark, Timeline};
use crate::alert::misroute::EstimateDay;
use crate::alert::quality::{AGGREGATE_KIND, KIND as QUALITY_KIND};
use crate::config::Config;
use crate::drift::evaluator::EvalStore;
use crate::drift::evaluator::DRIFT_KIND;
use crate::metrics::DAY_MS;
use crate::stats::wilson95;
use crate::store::sqlite::SqliteStore;
use crate::store::sqlite_eval::SqliteEvalStore;

/// Days pooled by the rate charts: daily rates at demo volume are too noisy to read.
const TRAILING_DAYS: usize = 7;

/// Per (day, tier) counters.
#[derive(Debug, Clone, Copy, Default)]
struct TierDay {
    conversations: u64,
    failed: u64,
    decisions: u64,
    thumbs_down: u64,
}

/// One day of one drift window.
#[derive(Debug, Clone, Copy, Default)]
struct DriftDay {
    ks_d: Option<f64>,
    psi: Option<f64>,
    psi_noise: Option<f64>,
    share_expected: Option<f64>,
    share_observed: Option<f64>,
}

/// One day of the ledger and the human volume.
#[derive(Debug, Clone, Copy, Default)]
struct MoneyDay {
    inference_saved: f64,
    excess_human: f64,
    human_cost: f64,
    tickets: u64,
}

/// Everything the charts draw, read from the views.
pub struct ReportData {
    /// `rescore_estimates_daily` of the routed-down tiers, by day index (what the misroute rule
    /// judges).
    misroute: BTreeMap<i64, EstimateDay>,
    /// Per day index: (scored samples judged misrouted, scored samples), unweighted.
    sample_share: BTreeMap<usize, (u64, u64)>,
    start: NaiveDate,
    days: usize,
    tiers: BTreeMap<String, BTreeMap<usize, TierDay>>,
    drift: BTreeMap<String, BTreeMap<usize, DriftDay>>,
    money: BTreeMap<usize, MoneyDay>,
    thresholds: Thresholds,
    window_hours: f64,
}

struct Thresholds {
    warning_d: f64,
    critical_d: f64,
    warning_psi: f64,
    critical_psi: f64,
}

fn day_index(start: NaiveDate, day: &str) -> anyhow::Result<Option<usize>> {
    let d = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| anyhow::anyhow!("day {day:?}: {e}"))?;
    Ok(usize::try_from((d - start).num_days()).ok())
}

impl ReportData {
    pub async fn load(store: &Arc<SqliteStore>, cfg: &Config, timeline: &Timeline) -> anyhow::Result<ReportData> {
        let pool = store.pool();
        let start = timeline.start;
        let mut tiers: BTreeMap<String, BTreeMap<usize, TierDay>> = BTreeMap::new();
        // Two (count, trials) pairs per tier and day, from two views.
        type SetPair = fn(&mut TierDay, u64, u64);
        let sources: [(&str, SetPair); 2] = [
            (
                "SELECT day, tier, SUM(ai_conversations), SUM(failed_deflections) FROM deflection_daily GROUP BY day, tier",
                |e, conversations, failed| (e.conversations, e.failed) = (conversations, failed),
            ),
            (
                "SELECT day, tier, SUM(decisions), SUM(thumbs_down) FROM tier_quality_daily GROUP BY day, tier",
                |e, decisions, thumbs_down| (e.decisions, e.thumbs_down) = (decisions, thumbs_down),
            ),
        ];
        for (sql, set) in sources {
            for r in sqlx::query(sql).fetch_all(pool).await? {
                let Some(d) = day_index(start, &r.try_get::<String, _>(0)?)? else { continue };
                let e = tiers.entry(r.try_get(1)?).or_default().entry(d).or_default();
                set(e, r.try_get::<i64, _>(2)?.max(0) as u64, r.try_get::<i64, _>(3)?.max(0) as u64);
            }
        }
        let mut drift: BTreeMap<String, BTreeMap<usize, DriftDay>> = BTreeMap::new();
        let rows = sqlx::query(
            // Evaluated windows only: a day below `drift.min_n` (e.g. the drain after the last
            // simulated day) has a meaningless D.
            "SELECT day, \"window\", ks_d, psi, psi_noise, cheap_share_expected, cheap_share_observed \
             FROM confidence_drift_daily \
             WHERE signal = 'router_confidence' AND status IN ('ok', 'warning', 'critical') ORDER BY day",
        )
        .fetch_all(pool)
        .await?;
        for r in rows {
            let Some(d) = day_index(start, &r.try_get::<String, _>(0)?)? else { continue };
            drift.entry(r.try_get(1)?).or_default().insert(
                d,
                DriftDay {
                    ks_d: r.try_get(2)?,
                    psi: r.try_get(3)?,
                    psi_noise: r.try_get(4)?,
                    share_expected: r.try_get(5)?,
                    share_observed: r.try_get(6)?,
                },
            );
        }
        let mut money: BTreeMap<usize, MoneyDay> = BTreeMap::new();
        for r in sqlx::query("SELECT day, inference_saved_usd, excess_human_cost_usd FROM ledger_daily")
            .fetch_all(pool)
            .await?
        {
            let Some(d) = day_index(start, &r.try_get::<String, _>(0)?)? else { continue };
            let e = money.entry(d).or_default();
            e.inference_saved = r.try_get::<Option<f64>, _>(1)?.unwrap_or(0.0);
            e.excess_human = r.try_get::<Option<f64>, _>(2)?.unwrap_or(0.0);
        }
        for r in
            sqlx::query("SELECT day, SUM(tickets_opened), SUM(human_cost_usd) FROM human_volume_daily GROUP BY day")
                .fetch_all(pool)
                .await?
        {
            let Some(d) = day_index(start, &r.try_get::<String, _>(0)?)? else { continue };
            let e = money.entry(d).or_default();
            e.tickets = r.try_get::<i64, _>(1)?.max(0) as u64;
            e.human_cost = r.try_get::<Option<f64>, _>(2)?.unwrap_or(0.0);
        }
        // The rescoring slice of the routed-down tiers: the daily estimates as the alert rule reads
        // them, and the plain (biased) share of the sample for comparison.
        let eval = SqliteEvalStore::new(store.clone());
        let start_day = start.and_hms_opt(0, 0, 0).map_or(0, |d| d.and_utc().timestamp_millis()).div_euclid(DAY_MS);
        let mut misroute: BTreeMap<i64, EstimateDay> = BTreeMap::new();
        for (day_ms, _tier, e) in eval.rescore_estimates(&cfg.ledger.capable_tier).await? {
            // One routed-down tier in the demo; more would be pooled by the alert rule per tier.
            misroute.insert(day_ms.div_euclid(DAY_MS) - start_day, e);
        }
        let mut sample_share: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for r in sqlx::query(
            "SELECT day, SUM(suspected_misroute), COUNT(*) FROM review_queue \
             WHERE tier <> ? AND status = 'scored' GROUP BY day",
        )
        .bind(&cfg.ledger.capable_tier)
        .fetch_all(pool)
        .await?
        {
            let Some(d) = day_index(start, &r.try_get::<String, _>(0)?)? else { continue };
            sample_share.insert(d, (r.try_get::<i64, _>(1)?.max(0) as u64, r.try_get::<i64, _>(2)?.max(0) as u64));
        }
        Ok(ReportData {
            misroute,
            sample_share,
            start,
            days: timeline.days as usize,
            tiers,
            drift,
            money,
            thresholds: Thresholds {
                warning_d: cfg.drift.warning_ks_d,
                critical_d: cfg.drift.critical_ks_d,
                warning_psi: cfg.drift.warning_psi,
                critical_psi: cfg.drift.critical_psi,
            },
            window_hours: cfg.attribution.window_hours,
        })
    }

    /// Trailing-window pooled rate with its Wilson 95% interval, per day: (day, rate, lo, hi).
    fn trailing(&self, tier: Option<&str>, f: impl Fn(&TierDay) -> (u64, u64)) -> Vec<(f64, f64, f64, f64)> {
        let mut out = vec![];
        for day in (TRAILING_DAYS - 1)..self.days {
            let (mut x, mut n) = (0, 0);
            for d in (day + 1 - TRAILING_DAYS)..=day {
                for (t, by_day) in &self.tiers {
                    if tier.is_some_and(|want| want != t) {
                        continue;
                    }
                    if let Some(c) = by_day.get(&d) {
                        let (a, b) = f(c);
                        x += a;
                        n += b;
                    }
                }
            }
            if let Some((lo, hi)) = wilson95(x, n) {
                out.push((day as f64 + 1.0, x as f64 / n as f64, lo, hi));
            }
        }
        out
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn pe<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

const W: u32 = 980;
const H: u32 = 360;
/// Tiers in name order ("capable" before "cheap"): blue, red, then others.
const TIER_COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const PER_TIER_MARKER: RGBColor = RGBColor(214, 39, 40);
const POOLED: RGBColor = RGBColor(90, 90, 90);
const DRIFT_COLOR: RGBColor = RGBColor(255, 127, 14);

/// The first firing of the three headline rules, for vertical markers: (day offset, label, colour).
fn markers(timeline: &Timeline) -> Vec<(f64, String, RGBColor)> {
    let start = timeline.start.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    let at = |a: &AlertMark| start.map(|s| (a.fired_at - s).num_milliseconds() as f64 / 86_400_000.0);
    let mut out = vec![];
    for (kind, label, color) in [
        (DRIFT_KIND, "drift alert", DRIFT_COLOR),
        (QUALITY_KIND, "per-tier alert", PER_TIER_MARKER),
        (AGGREGATE_KIND, "aggregate signal", POOLED),
    ] {
        if let Some(x) = timeline.first(kind).and_then(at) {
            out.push((x, label.to_owned(), color));
        }
    }
    out
}

/// A chart with day offsets on x (labelled as dates) and the alert markers drawn.
fn svg_chart(
    title: &str,
    y_desc: &str,
    y_range: std::ops::Range<f64>,
    data: &ReportData,
    timeline: &Timeline,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let x_fmt = day_label(data.start);
        let mut chart =
            chart_builder(&root, title).build_cartesian_2d(0f64..data.days as f64, y_range.clone()).map_err(pe)?;
        draw_mesh(&mut chart, &x_fmt, y_desc)?;
        draw(&mut chart)?;
        draw_markers(&mut chart, timeline, y_range, &x_fmt)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(pe)?;
    }
    Ok(svg)
}

/// Every chart's x axis is the day offset from the run's first day, labelled with its date.
fn day_label(start: NaiveDate) -> impl Fn(&f64) -> String {
    move |x: &f64| (start + chrono::Days::new(x.max(0.0).round() as u64)).format("%b %d").to_string()
}

/// The common frame of every chart: caption, margin and label areas.
fn chart_builder<'a, 'b>(root: &'a Area<'b>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 17)).margin(12).x_label_area_size(32).y_label_area_size(64);
    builder
}

fn draw_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x_fmt: &dyn Fn(&f64) -> String,
    y_desc: &str,
) -> anyhow::Result<()> {
    chart
        .configure_mesh()
        .x_labels(20)
        .x_label_formatter(x_fmt)
        .y_desc(y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(pe)
}

fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(pe)
}

/// The first firing of each headline rule as a dashed vertical line, labelled with its date.
fn draw_markers<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    timeline: &Timeline,
    y_range: std::ops::Range<f64>,
    x_fmt: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()> {
    for (x, label, color) in markers(timeline) {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, y_range.start), (x, y_range.end)],
                6,
                4,
                ShapeStyle::from(&color).stroke_width(2),
            ))
            .map_err(pe)?
            .label(format!("{label} ({})", x_fmt(&x)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    Ok(())
}

/// A rate line with its interval band.
fn rate_series(
    chart: &mut Chart<'_, '_>,
    points: &[(f64, f64, f64, f64)],
    scale: f64,
    color: RGBColor,
    label: &str,
) -> anyhow::Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let band: Vec<(f64, f64)> =
        points.iter().map(|p| (p.0, p.3 * scale)).chain(points.iter().rev().map(|p| (p.0, p.2 * scale))).collect();
    chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15)))).map_err(pe)?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1 * scale)), color.stroke_width(2)))
        .map_err(pe)?
        .label(label.to_owned())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    Ok(())
}

fn y_max(values: impl Iterator<Item = f64>, floor: f64) -> f64 {
    let m = values.filter(|v| v.is_finite()).fold(floor, f64::max);
    m * 1.12
}

/// A labelled series of (day, rate, lower, upper).
type NamedRates = (String, Vec<(f64, f64, f64, f64)>);

/// The whole report.
pub fn render(data: &ReportData, timeline: &Timeline) -> anyhow::Result<String> {
    let tier_names: Vec<&String> = data.tiers.keys().collect();
    let mut charts: Vec<(String, String)> = vec![];

    // 1. Failed-deflection rate per tier and pooled.
    let failed: Vec<NamedRates> = tier_names
        .iter()
        .map(|t| (t.to_string(), data.trailing(Some(t), |c| (c.failed, c.conversations))))
        .chain(std::iter::once(("all tiers pooled".to_owned(), data.trailing(None, |c| (c.failed, c.conversations)))))
        .collect();
    let top = y_max(failed.iter().flat_map(|(_, p)| p.iter().map(|q| q.3 * 100.0)), 1.0);
    charts.push((
        format!(
            "Failed deflections: share of AI conversations followed by a human ticket within {} h, per tier \
             ({TRAILING_DAYS}-day trailing, Wilson 95% band). The pooled line is what a single-model dashboard shows.",
            data.window_hours
        ),
        svg_chart("Failed-deflection rate by tier (%)", "% of conversations", 0.0..top, data, timeline, |c| {
            for (i, (name, pts)) in failed.iter().enumerate() {
                let color = if i == failed.len() - 1 { POOLED } else { TIER_COLORS[i % TIER_COLORS.len()] };
                rate_series(c, pts, 100.0, color, name)?;
            }
            Ok(())
        })?,
    ));

    // 2. Thumbs-down per 1,000 decisions.
    let thumbs: Vec<NamedRates> = tier_names
        .iter()
        .map(|t| (t.to_string(), data.trailing(Some(t), |c| (c.thumbs_down, c.decisions))))
        .chain(std::iter::once(("all tiers pooled".to_owned(), data.trailing(None, |c| (c.thumbs_down, c.decisions)))))
        .collect();
    let top = y_max(thumbs.iter().flat_map(|(_, p)| p.iter().map(|q| q.3 * 1000.0)), 1.0);
    charts.push((
        "Thumbs-down per 1,000 decisions: sparse, and barely moving while customers take the problem to \
         human support instead."
            .to_owned(),
        svg_chart("Thumbs-down per 1,000 decisions by tier", "per 1,000", 0.0..top, data, timeline, |c| {
            for (i, (name, pts)) in thumbs.iter().enumerate() {
                let color = if i == thumbs.len() - 1 { POOLED } else { TIER_COLORS[i % TIER_COLORS.len()] };
                rate_series(c, pts, 1000.0, color, name)?;
            }
            Ok(())
        })?,
    ));

    // 3. The rescoring slice: weighted (Hájek) vs unweighted suspected-misroute share.
    if !data.misroute.is_empty() {
        let (mut weighted, mut naive) = (vec![], vec![]);
        for day in (TRAILING_DAYS - 1)..data.days {
            if let Some((_, r, lo, hi)) = crate::alert::misroute::window(&data.misroute, day as i64) {
                weighted.push((day as f64 + 1.0, r, lo, hi));
            }
            let (x, n) = data
                .sample_share
                .range(day + 1 - TRAILING_DAYS..=day)
                .fold((0, 0), |(x, n), (_, (dx, dn))| (x + dx, n + dn));
            if let Some((lo, hi)) = wilson95(x, n) {
                naive.push((day as f64 + 1.0, x as f64 / n as f64, lo, hi));
            }
        }
        let top = y_max(weighted.iter().chain(&naive).map(|p| p.3 * 100.0), 5.0);
        charts.push((
            format!(
                "The rescorer's second opinion on the routed-down tier: share of its decisions the rescorer judges \
                 complex ({TRAILING_DAYS}-day trailing, the windows the misroute alert judges). Weighted (Hájek, \
                 w = 1/p, interval from Kish's effective sample size) it estimates the tier's population; the plain share of the sample over-weights the low-margin \
                 and out-of-distribution queries the sampler oversamples, and is biased."
            ),
            svg_chart("Suspected misroutes in the cheap tier (%)", "% of decisions", 0.0..top, data, timeline, |c| {
                rate_series(c, &weighted, 100.0, TIER_COLORS[1], "weighted estimate (population)")?;
                line(
                    c,
                    &naive.iter().map(|p| (p.0, p.1 * 100.0)).collect::<Vec<_>>(),
                    RGBColor(150, 150, 150),
                    "unweighted share of the sample (biased)",
                )?;
                Ok(())
            })?,
        ));
    }

    // 4. KS D per day, 1d and 7d windows, with thresholds.
    let series = |window: &str, f: fn(&DriftDay) -> Option<f64>| -> Vec<(f64, f64)> {
        data.drift
            .get(window)
            .map(|m| m.iter().filter_map(|(d, v)| f(v).map(|y| (*d as f64 + 1.0, y))).collect())
            .unwrap_or_default()
    };
    let ks1 = series("1d", |d| d.ks_d);
    let ks7 = series("7d", |d| d.ks_d);
    let top = y_max(ks1.iter().chain(&ks7).map(|p| p.1), data.thresholds.critical_d);
    let th = &data.thresholds;
    charts.push((
        format!(
            "Router confidence against its training-time reference: Kolmogorov–Smirnov D per day (1-day and rolling \
             7-day windows). Warning at D ≥ {} and critical at D ≥ {} (both gated on p < 0.001).",
            th.warning_d, th.critical_d
        ),
        svg_chart("Confidence drift: KS D", "KS D", 0.0..top, data, timeline, |c| {
            hline(c, th.warning_d, DRIFT_COLOR.mix(0.6), "warning threshold", data.days)?;
            hline(c, th.critical_d, RGBColor(200, 0, 0).mix(0.6), "critical threshold", data.days)?;
            line(c, &ks1, RGBColor(160, 160, 160), "1-day window")?;
            line(c, &ks7, RGBColor(31, 119, 180), "7-day window")?;
            Ok(())
        })?,
    ));

    // 4. PSI per day with its noise level.
    let psi1 = series("1d", |d| d.psi);
    let psi7 = series("7d", |d| d.psi);
    let noise7 = series("7d", |d| d.psi_noise);
    let top = y_max(psi1.iter().chain(&psi7).map(|p| p.1), th.warning_psi);
    charts.push((
        format!(
            "Population stability index on the reference's deciles. Warning at PSI ≥ max({}, noise), critical at \
             max({}, noise); a slow mixture shift moves KS D for weeks before PSI reaches these bands.",
            th.warning_psi, th.critical_psi
        ),
        svg_chart("Confidence drift: PSI", "PSI", 0.0..top, data, timeline, |c| {
            hline(c, th.warning_psi, DRIFT_COLOR.mix(0.6), "warning band", data.days)?;
            hline(c, th.critical_psi, RGBColor(200, 0, 0).mix(0.6), "critical band", data.days)?;
            line(c, &psi1, RGBColor(160, 160, 160), "1-day window")?;
            line(c, &psi7, RGBColor(31, 119, 180), "7-day window")?;
            line(c, &noise7, RGBColor(120, 120, 120).mix(0.5), "7-day noise level")?;
            Ok(())
        })?,
    ));

    // 5. Routed share, expected vs observed.
    let exp = series("1d", |d| d.share_expected.map(|v| v * 100.0));
    let obs = series("1d", |d| d.share_observed.map(|v| v * 100.0));
    let top = y_max(exp.iter().chain(&obs).map(|p| p.1), 10.0).min(100.0);
    charts.push((
        "Share of decisions routed to the cheap tier: what the router was calibrated to send (the reference above \
         the threshold) against what it sends. The gap is the cost owner's view of confidence drift."
            .to_owned(),
        svg_chart("Routed to the cheap tier (%)", "% of decisions", 0.0..top, data, timeline, |c| {
            line(c, &exp, RGBColor(160, 160, 160), "expected from the reference")?;
            line(c, &obs, PER_TIER_MARKER, "observed")?;
            Ok(())
        })?,
    ));

    // 6. Deflection rate against human-handled volume.
    let deflection = data.trailing(None, |c| (c.conversations - c.failed.min(c.conversations), c.conversations));
    let tickets: Vec<(f64, f64)> = data.money.iter().map(|(d, m)| (*d as f64 + 1.0, m.tickets as f64)).collect();
    let top_t = y_max(tickets.iter().map(|p| p.1), 10.0);
    let lo_d = deflection.iter().map(|p| p.2 * 100.0).fold(100.0, f64::min);
    charts.push((
        "AI deflection rate (conversations not followed by a ticket, pooled, 7-day trailing) against the tickets \
         human support opens per day (all channels, attributed or not)."
            .to_owned(),
        dual_chart(data, timeline, &deflection, &tickets, (lo_d - 1.0).max(0.0)..100.0, 0.0..top_t)?,
    ));

    // 7. Money: cumulative inference savings against excess human cost.
    let (mut saved, mut excess, mut cum) = (vec![], vec![], (0.0, 0.0));
    for (d, m) in &data.money {
        cum.0 += m.inference_saved;
        cum.1 += m.excess_human;
        saved.push((*d as f64 + 1.0, cum.0));
        excess.push((*d as f64 + 1.0, cum.1));
    }
    let top = y_max(saved.iter().chain(&excess).map(|p| p.1), 1.0);
    charts.push((
        "Cumulative USD: inference saved by routing to the cheap tier (engineering's books) against the excess \
         human-support cost of failed deflections above the baseline rate, here the capable tier's same-day rate \
         (support's books; a lower bound, since the cheap tier is routed the easier queries)."
            .to_owned(),
        svg_chart("Inference savings vs excess human cost (cumulative USD)", "USD", 0.0..top, data, timeline, |c| {
            line(c, &saved, TIER_COLORS[2], "inference saved")?;
            line(c, &excess, PER_TIER_MARKER, "excess human cost")?;
            Ok(())
        })?,
    ));

    Ok(html(timeline, &charts))
}

fn line(c: &mut Chart<'_, '_>, pts: &[(f64, f64)], color: impl Into<ShapeStyle>, label: &str) -> anyhow::Result<()> {
    if pts.is_empty() {
        return Ok(());
    }
    let style: ShapeStyle = color.into();
    let style = style.stroke_width(2);
    c.draw_series(LineSeries::new(pts.iter().copied(), style))
        .map_err(pe)?
        .label(label.to_owned())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    Ok(())
}

fn hline(c: &mut Chart<'_, '_>, y: f64, color: impl Into<ShapeStyle>, label: &str, days: usize) -> anyhow::Result<()> {
    let style: ShapeStyle = color.into();
    c.draw_series(DashedLineSeries::new([(0.0, y), (days as f64, y)], 3, 3, style))
        .map_err(pe)?
        .label(label.to_owned())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
    Ok(())
}

fn dual_chart(
    data: &ReportData,
    timeline: &Timeline,
    deflection: &[(f64, f64, f64, f64)],
    tickets: &[(f64, f64)],
    left: std::ops::Range<f64>,
    right: std::ops::Range<f64>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let x_fmt = day_label(data.start);
        let mut chart = chart_builder(&root, "Deflection rate vs human-handled volume")
            .right_y_label_area_size(64)
            .build_cartesian_2d(0f64..data.days as f64, left.clone())
            .map_err(pe)?
            .set_secondary_coord(0f64..data.days as f64, right);
        draw_mesh(&mut chart, &x_fmt, "AI deflection rate (%)")?;
        chart.configure_secondary_axes().y_desc("tickets opened per day").draw().map_err(pe)?;
        let color = TIER_COLORS[0];
        let band: Vec<(f64, f64)> = deflection
            .iter()
            .map(|p| (p.0, p.3 * 100.0))
            .chain(deflection.iter().rev().map(|p| (p.0, p.2 * 100.0)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15)))).map_err(pe)?;
        chart
            .draw_series(LineSeries::new(deflection.iter().map(|p| (p.0, p.1 * 100.0)), color.stroke_width(2)))
            .map_err(pe)?
            .label("deflection rate (left)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        let tc = PER_TIER_MARKER;
        chart
            .draw_secondary_series(LineSeries::new(tickets.iter().copied(), tc.stroke_width(1)))
            .map_err(pe)?
            .label("tickets opened per day (right)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], tc.stroke_width(2)));
        draw_markers(&mut chart, timeline, left.clone(), &x_fmt)?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        root.present().map_err(pe)?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn html(timeline: &Timeline, charts: &[(String, String)]) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>tierwatch demo report</title>\n\
         <style>body{font-family:system-ui,sans-serif;max-width:1020px;margin:2em auto;color:#222}\
         pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}\
         figure{margin:2em 0}figcaption{font-size:14px;color:#444;margin-bottom:.4em}</style>\n</head><body>\n",
    );
    s.push_str(&format!(
        "<h1>tierwatch: the {} scenario</h1>\n<p>Simulated traffic through the production pipeline into the \
         embedded store. Vertical dashed lines mark the first firing of the confidence-drift alert, the per-tier \
         quality alert and the aggregate (all tiers pooled) quality signal under the same rule. Quality rules judge \
         mature cohorts only, so each is known one attribution window after its marker.</p>\n<pre>{}</pre>\n",
        timeline.scenario,
        escape(&timeline.render())
    ));
    for (caption, svg) in charts {
        s.push_str(&format!("<figure><figcaption>{}</figcaption>\n{svg}\n</figure>\n", escape(caption)));
    }
    s.push_str("</body></html>\n");
    s
}
