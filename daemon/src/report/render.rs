//! The page: inline SVG charts drawn with `plotters`, the two ledgers and the other tables as
//! HTML, inline CSS, no scripts and nothing external.

use std::fmt::Write as _;

use chrono::NaiveDate;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::load::{
    AdviceView, CalibrationBin, DriftDay, EceDay, NetCostCurve, ReliabilityCurve, ReportData, TierDay, TRAILING_DAYS,
};
use super::Page;
use crate::alert::quality::{AGGREGATE_KIND, KIND as QUALITY_KIND};
use crate::drift::evaluator::DRIFT_KIND;
use crate::stats::wilson95;

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

/// The first firing of the three headline rules within the range, for vertical markers: (day
/// offset, label, colour).
fn markers(data: &ReportData) -> Vec<(f64, String, RGBColor)> {
    let Some(start) = data.start.and_hms_opt(0, 0, 0).map(|d| d.and_utc()) else { return vec![] };
    let mut out = vec![];
    for (kind, label, color) in [
        (DRIFT_KIND, "drift alert", DRIFT_COLOR),
        (QUALITY_KIND, "per-tier alert", PER_TIER_MARKER),
        (AGGREGATE_KIND, "aggregate signal", POOLED),
    ] {
        let first = data.alerts.iter().filter(|a| a.kind == kind).min_by_key(|a| a.fired_at);
        if let Some(a) = first {
            let x = (a.fired_at - start).num_milliseconds() as f64 / 86_400_000.0;
            if (0.0..=data.days as f64).contains(&x) {
                out.push((x, label.to_owned(), color));
            }
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
        draw_markers(&mut chart, data, y_range, &x_fmt)?;
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
    data: &ReportData,
    y_range: std::ops::Range<f64>,
    x_fmt: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()> {
    for (x, label, color) in markers(data) {
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
pub fn render(data: &ReportData, page: &Page) -> anyhow::Result<String> {
    // (caption, the chart or `None` when it has nothing to draw in the range)
    let mut charts: Vec<(String, Option<String>)> = vec![];

    // 1. Failed-deflection rate per tier and pooled.
    charts.push((
        format!(
            "Failed deflections: share of AI conversations followed by a human ticket within {} h, per tier \
             ({TRAILING_DAYS}-day trailing, Wilson 95% band). The pooled line is what a single-model dashboard shows.",
            data.settings.window_hours
        ),
        tier_rates_chart(data, "Failed-deflection rate by tier (%)", "% of conversations", 100.0, |c| {
            (c.failed, c.conversations)
        })?,
    ));

    // 2. Thumbs-down per 1,000 decisions.
    charts.push((
        "Thumbs-down per 1,000 decisions: sparse, and barely moving while customers take the problem to \
         human support instead."
            .to_owned(),
        tier_rates_chart(data, "Thumbs-down per 1,000 decisions by tier", "per 1,000", 1000.0, |c| {
            (c.thumbs_down, c.decisions)
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
            chart_or_none(!weighted.is_empty() || !naive.is_empty(), || {
                svg_chart("Suspected misroutes in the cheap tier (%)", "% of decisions", 0.0..top, data, |c| {
                rate_series(c, &weighted, 100.0, TIER_COLORS[1], "weighted estimate (population)")?;
                line(
                    c,
                    &naive.iter().map(|p| (p.0, p.1 * 100.0)).collect::<Vec<_>>(),
                    RGBColor(150, 150, 150),
                    "unweighted share of the sample (biased)",
                )?;
                Ok(())
            })
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
    let top = y_max(ks1.iter().chain(&ks7).map(|p| p.1), data.settings.thresholds.critical_d);
    let th = &data.settings.thresholds;
    charts.push((
        format!(
            "Router confidence against its training-time reference: Kolmogorov–Smirnov D per day (1-day and rolling \
             7-day windows). Warning at D ≥ {} and critical at D ≥ {} (both gated on p < 0.001).",
            th.warning_d, th.critical_d
        ),
        chart_or_none(!ks1.is_empty() || !ks7.is_empty(), || {
            svg_chart("Confidence drift: KS D", "KS D", 0.0..top, data, |c| {
                hline(c, th.warning_d, DRIFT_COLOR.mix(0.6), "warning threshold", data.days)?;
                hline(c, th.critical_d, RGBColor(200, 0, 0).mix(0.6), "critical threshold", data.days)?;
                line(c, &ks1, RGBColor(160, 160, 160), "1-day window")?;
                line(c, &ks7, RGBColor(31, 119, 180), "7-day window")?;
                Ok(())
            })
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
        chart_or_none(!psi1.is_empty() || !psi7.is_empty(), || {
            svg_chart("Confidence drift: PSI", "PSI", 0.0..top, data, |c| {
                hline(c, th.warning_psi, DRIFT_COLOR.mix(0.6), "warning band", data.days)?;
                hline(c, th.critical_psi, RGBColor(200, 0, 0).mix(0.6), "critical band", data.days)?;
                line(c, &psi1, RGBColor(160, 160, 160), "1-day window")?;
                line(c, &psi7, RGBColor(31, 119, 180), "7-day window")?;
                line(c, &noise7, RGBColor(120, 120, 120).mix(0.5), "7-day noise level")?;
                Ok(())
            })
        })?,
    ));

    // 5. Routed share, expected vs observed, with the observed share's interval and the target.
    let exp = series("1d", |d| d.share_expected.map(|v| v * 100.0));
    let obs: Vec<(f64, f64, f64, f64)> = data
        .drift
        .get("1d")
        .map(|m| {
            m.iter()
                .filter_map(|(d, v)| {
                    let o = v.share_observed?;
                    Some((*d as f64 + 1.0, o, v.share_observed_lo.unwrap_or(o), v.share_observed_hi.unwrap_or(o)))
                })
                .collect()
        })
        .unwrap_or_default();
    let target = series("1d", |d| d.share_target.map(|v| v * 100.0));
    let top = y_max(exp.iter().chain(&target).map(|p| p.1).chain(obs.iter().map(|p| p.3 * 100.0)), 10.0).min(100.0);
    let target_note = if target.is_empty() {
        "No target share is configured ([routing.targets]), so no target line."
    } else {
        "The dashed line is the share it is meant to send ([routing.targets] cheap_share); the routed-share alert \
         fires when the 7-day interval lies wholly outside the target ± its tolerance (configured, not drawn)."
    };
    charts.push((
        format!(
            "Share of decisions routed to the cheap tier: what the router was calibrated to send (the reference above \
             the threshold) against what it sends each day, with its Wilson 95% band at the day's distinct \
             conversations. The gap is the cost owner's view of confidence drift. {target_note}"
        ),
        chart_or_none(!exp.is_empty() || !obs.is_empty(), || {
            svg_chart("Routed to the cheap tier (%)", "% of decisions", 0.0..top, data, |c| {
                line(c, &exp, RGBColor(160, 160, 160), "expected from the reference")?;
                rate_series(c, &obs, 100.0, PER_TIER_MARKER, "observed (Wilson 95% band)")?;
                dashed_runs(c, &target, RGBColor(44, 160, 44), "target")?;
                Ok(())
            })
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
        chart_or_none(!deflection.is_empty(), || {
            dual_chart(data, &deflection, &tickets, (lo_d - 1.0).max(0.0)..100.0, 0.0..top_t)
        })?,
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
        chart_or_none(!saved.is_empty(), || {
            svg_chart("Inference savings vs excess human cost (cumulative USD)", "USD", 0.0..top, data, |c| {
                draw_immature(c, data, 0.0..top)?;
                line(c, &saved, TIER_COLORS[2], "inference saved")?;
                line(c, &excess, PER_TIER_MARKER, "excess human cost")?;
                Ok(())
            })
        })?,
    ));

    Ok(html(page, &charts, &router_eval(data)?, &super::tables::tables(data)))
}

/// A rate per tier and all tiers pooled ((count, trials) of each tier-day, 7-day trailing, with
/// Wilson bands), `scale`d for display, over the immature band.
fn tier_rates_chart(
    data: &ReportData,
    title: &str,
    y_desc: &str,
    scale: f64,
    f: fn(&TierDay) -> (u64, u64),
) -> anyhow::Result<Option<String>> {
    let series: Vec<NamedRates> = data
        .tiers
        .keys()
        .map(|t| (t.to_string(), data.trailing(Some(t), f)))
        .chain(std::iter::once(("all tiers pooled".to_owned(), data.trailing(None, f))))
        .collect();
    let top = y_max(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.3 * scale)), 1.0);
    chart_or_none(any_points(&series), || {
        svg_chart(title, y_desc, 0.0..top, data, |c| {
            draw_immature(c, data, 0.0..top)?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = if i == series.len() - 1 { POOLED } else { TIER_COLORS[i % TIER_COLORS.len()] };
                rate_series(c, pts, scale, color, name)?;
            }
            Ok(())
        })
    })
}

/// Whether any of the named series has a point.
fn any_points(series: &[NamedRates]) -> bool {
    series.iter().any(|(_, p)| !p.is_empty())
}

/// The chart, or `None` when it would have nothing to draw.
fn chart_or_none(has_data: bool, draw: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<Option<String>> {
    if has_data {
        draw().map(Some)
    } else {
        Ok(None)
    }
}

/// Shade the days whose cohorts are not mature yet: their outcome rates and costs still grow.
fn draw_immature<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, DB, CT>,
    data: &ReportData,
    y_range: std::ops::Range<f64>,
) -> anyhow::Result<()> {
    let Some(first) = data.first_immature.filter(|d| *d < data.days) else { return Ok(()) };
    let color = RGBColor(120, 120, 120).mix(0.12);
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(first as f64, y_range.start), (data.days as f64, y_range.end)],
            color.filled(),
        )))
        .map_err(pe)?
        .label("immature cohorts (tickets may still arrive)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.filled()));
    Ok(())
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
        draw_immature(&mut chart, data, left.clone())?;
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
        draw_markers(&mut chart, data, left.clone(), &x_fmt)?;
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
        root.present().map_err(pe)?;
    }
    Ok(svg)
}

/// Dashed line segments over consecutive days (a gap of more than one day breaks the line), one
/// legend entry.
fn dashed_runs(c: &mut Chart<'_, '_>, pts: &[(f64, f64)], color: RGBColor, label: &str) -> anyhow::Result<()> {
    let style = ShapeStyle::from(&color).stroke_width(2);
    for (i, run) in runs(pts).into_iter().enumerate() {
        let drawn = c.draw_series(DashedLineSeries::new(run, 6, 4, style)).map_err(pe)?;
        if i == 0 {
            drawn.label(label.to_owned()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    Ok(())
}

/// Points split where x jumps by more than one (a day without a value); a lone point is drawn as a
/// short segment so that it stays visible.
fn runs(pts: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    for p in pts {
        match out.last_mut() {
            Some(run) if run.last().is_some_and(|q| p.0 - q.0 <= 1.0 + 1e-9) => run.push(*p),
            _ => out.push(vec![*p]),
        }
    }
    for run in &mut out {
        if let [only] = run[..] {
            run.push((only.0 + 0.5, only.1));
        }
    }
    out
}

/// `28d` → `28-day window`.
fn window_label(window: &str) -> String {
    match window.strip_suffix('d').and_then(|n| n.parse::<u32>().ok()) {
        Some(n) => format!("{n}-day window"),
        None => format!("window {window}"),
    }
}

/// A chart over a numeric x axis (confidence, threshold): no day axis, no alert markers.
#[allow(clippy::too_many_arguments)]
fn xy_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
    y_fmt: &dyn Fn(&f64) -> String,
    legend: SeriesLabelPosition,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(pe)?;
        let mut chart = chart_builder(&root, title).build_cartesian_2d(x_range, y_range).map_err(pe)?;
        chart
            .configure_mesh()
            .x_labels(16)
            .x_label_formatter(&|x| format!("{x:.2}"))
            .y_label_formatter(y_fmt)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(pe)?;
        draw(&mut chart)?;
        draw_legend(&mut chart, legend)?;
        root.present().map_err(pe)?;
    }
    Ok(svg)
}

const NOW_COLOR: RGBColor = RGBColor(214, 39, 40);
const REGRESSED: RGBColor = RGBColor(140, 0, 0);
const BASELINE: RGBColor = RGBColor(110, 110, 110);
const RECOMMENDED: RGBColor = RGBColor(44, 160, 44);

/// The reliability curve of one classifier version and router: failure rate per confidence bin
/// now (Wilson band), the baseline window's, and the regressed bins; `None` when no bin has turns.
fn reliability_chart(curve: &ReliabilityCurve) -> anyhow::Result<Option<String>> {
    let drawn: Vec<&CalibrationBin> =
        curve.bins.iter().filter(|b| b.now().is_some() || b.baseline().is_some()).collect();
    if drawn.is_empty() {
        return Ok(None);
    }
    let now: Vec<(f64, f64, f64, f64)> =
        drawn.iter().filter_map(|b| b.now().map(|(r, lo, hi)| (b.x(), r, lo, hi))).collect();
    let regressed: Vec<(f64, f64)> =
        drawn.iter().filter(|b| b.regressed()).filter_map(|b| b.now().map(|(r, _, _)| (b.x(), r * 100.0))).collect();
    let baseline: Vec<(f64, f64)> = drawn.iter().filter_map(|b| b.baseline().map(|r| (b.x(), r * 100.0))).collect();
    let x_lo = drawn.iter().map(|b| b.conf_lo).fold(1.0, f64::min);
    let x_hi = drawn.iter().map(|b| b.conf_hi).fold(0.0, f64::max).max(x_lo + 0.01);
    let top = y_max(now.iter().map(|p| p.3 * 100.0).chain(baseline.iter().map(|p| p.1)), 1.0);
    let mut edges: Vec<f64> = drawn.iter().flat_map(|b| [b.conf_lo, b.conf_hi]).collect();
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    let title = format!("Reliability curve: {} ({})", curve.classifier_version, curve.router);
    let svg = xy_chart(
        &title,
        "router confidence (bins at the reference deciles)",
        "failure rate of cheap-served turns (%)",
        x_lo..x_hi,
        0.0..top,
        &|y| format!("{y:.1}"),
        SeriesLabelPosition::UpperRight,
        |c| {
            let edge = RGBColor(215, 215, 215);
            for x in &edges {
                c.draw_series(std::iter::once(PathElement::new(vec![(*x, 0.0), (*x, top)], edge))).map_err(pe)?;
            }
            rate_series(
                c,
                &now,
                100.0,
                NOW_COLOR,
                &format!("now: {} ending {}", window_label(&curve.window), curve.day),
            )?;
            c.draw_series(now.iter().map(|p| Circle::new((p.0, p.1 * 100.0), 3, NOW_COLOR.filled()))).map_err(pe)?;
            if !baseline.is_empty() {
                let style = ShapeStyle::from(&BASELINE).stroke_width(2);
                c.draw_series(DashedLineSeries::new(baseline.iter().copied(), 6, 4, style))
                    .map_err(pe)?
                    .label("baseline window")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                c.draw_series(baseline.iter().map(|p| Circle::new(*p, 3, BASELINE.stroke_width(2)))).map_err(pe)?;
            }
            if !regressed.is_empty() {
                c.draw_series(regressed.iter().map(|p| Circle::new(*p, 7, REGRESSED.filled())))
                    .map_err(pe)?
                    .label("regressed bin (calibration_regression test)")
                    .legend(|(x, y)| Circle::new((x + 9, y), 5, REGRESSED.filled()));
            }
            Ok(())
        },
    )?;
    Ok(Some(svg))
}

/// `0.110 [0.105–0.114] on 2026-05-24`.
fn ece_text(e: &EceDay) -> String {
    let interval = match (e.ece_lo, e.ece_hi) {
        (Some(lo), Some(hi)) => format!(" [{lo:.3}–{hi:.3}]"),
        _ => String::new(),
    };
    format!("{:.3}{interval} on {}", e.ece, e.day)
}

/// The calibration error line under a reliability curve: now against the first evaluated day.
fn ece_line(curve: &ReliabilityCurve) -> String {
    let Some(now) = &curve.ece_now else {
        return format!("Calibration error: not computed yet for the {}.", window_label(&curve.window));
    };
    let over = now.overconfidence.map(|o| format!("; its overconfident part {o:.3}")).unwrap_or_default();
    let first = match &curve.ece_first {
        Some(first) if first.day != now.day => {
            format!(", against {} (the first evaluated day in range)", ece_text(first))
        }
        _ => " (the first evaluated day in range)".to_owned(),
    };
    format!(
        "Calibration error (ECE, debiased, 95% bootstrap interval over conversations), {}: {}{first}{over}.",
        window_label(&curve.window),
        ece_text(now)
    )
}

/// The net cost against the threshold of one classifier version and router, with its bounds, the
/// threshold in force and the recommended one; extrapolated candidates dashed and hollow.
fn net_cost_chart(curve: &NetCostCurve) -> anyhow::Result<Option<String>> {
    let rows = &curve.rows;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(None) };
    let lo = rows.iter().map(|r| r.net_cost_lo_usd.min(r.net_cost_usd)).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.net_cost_hi_usd.max(r.net_cost_usd)).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.08).max(1.0);
    let (y_lo, y_hi) = ((lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY }), hi + pad);
    let x_range = (first.threshold - 0.01)..(last.threshold + 0.01);
    let a = &curve.advice;
    let title = format!("Net cost vs threshold: {} ({})", a.classifier_version, a.router);
    let svg = xy_chart(
        &title,
        "threshold (confidence at or above it goes to the cheap tier)",
        &format!("net cost, USD per {}", window_label(&curve.window)),
        x_range,
        y_lo..y_hi,
        &|y| format!("{y:.0}"),
        SeriesLabelPosition::UpperRight,
        |c| {
            let color = TIER_COLORS[0];
            let band: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (r.threshold, r.net_cost_hi_usd))
                .chain(rows.iter().rev().map(|r| (r.threshold, r.net_cost_lo_usd)))
                .collect();
            c.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))
                .map_err(pe)?
                .label("bounds (95%)")
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.mix(0.15).filled()));
            let solid = ShapeStyle::from(&color).stroke_width(2);
            let pairs: Vec<(&AdviceView, &AdviceView)> = rows.iter().zip(rows.iter().skip(1)).collect();
            let observed: Vec<_> = pairs.iter().filter(|(p, q)| !p.extrapolated && !q.extrapolated).collect();
            if !observed.is_empty() {
                c.draw_series(observed.iter().map(|(p, q)| {
                    PathElement::new(vec![(p.threshold, p.net_cost_usd), (q.threshold, q.net_cost_usd)], solid)
                }))
                .map_err(pe)?
                .label("net cost (observed outcomes)")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], solid));
            }
            let dashed = pairs.iter().filter(|(p, q)| p.extrapolated || q.extrapolated);
            for (i, (p, q)) in dashed.enumerate() {
                let segment = [(p.threshold, p.net_cost_usd), (q.threshold, q.net_cost_usd)];
                let drawn = c.draw_series(DashedLineSeries::new(segment, 5, 4, solid)).map_err(pe)?;
                if i == 0 {
                    drawn
                        .label("net cost, extrapolated from the rescoring slice")
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.stroke_width(2)));
                }
            }
            c.draw_series(rows.iter().map(|r| {
                let style = if r.extrapolated { color.stroke_width(2) } else { color.filled() };
                Circle::new((r.threshold, r.net_cost_usd), 4, style)
            }))
            .map_err(pe)?;
            let vline = |c: &mut Chart<'_, '_>, x: f64, color: RGBColor, dashed: bool, label: String| {
                let style = ShapeStyle::from(&color).stroke_width(2);
                let points = [(x, y_lo), (x, y_hi)];
                let drawn = if dashed {
                    c.draw_series(DashedLineSeries::new(points, 6, 4, style)).map_err(pe)?
                } else {
                    c.draw_series(LineSeries::new(points, style)).map_err(pe)?
                };
                drawn.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                anyhow::Ok(())
            };
            vline(c, a.current.threshold, RGBColor(40, 40, 40), true, format!("in force {:.2}", a.current.threshold))?;
            if let Some(r) = a.recommended.as_ref().filter(|r| r.threshold != a.current.threshold) {
                vline(c, r.threshold, RECOMMENDED, false, format!("recommended {:.2}", r.threshold))?;
            }
            Ok(())
        },
    )?;
    Ok(Some(svg))
}

/// What moving to the recommended threshold would have saved, in one sentence.
fn saving_line(curve: &NetCostCurve) -> String {
    let a = &curve.advice;
    match &a.recommended {
        None => "No candidate keeps the cheap tier's expected failure rate under the configured ceiling: no \
                 recommendation."
            .to_owned(),
        Some(r) if r.threshold == a.current.threshold => {
            format!("The threshold in force, {:.2}, is the recommended one: nothing to change.", a.current.threshold)
        }
        Some(r) => {
            let (saving, lo, hi) = r.net_saving;
            format!(
                "Recommended {:.2} (in force {:.2}): a net saving of {} over the {} ending {} (bounds {} to {}; {}).",
                r.threshold,
                a.current.threshold,
                dollars(saving),
                window_label(&curve.window),
                a.day,
                dollars(lo),
                dollars(hi),
                a.confidence()
            )
        }
    }
}

/// `$1,234.56`, `-$18.72`.
fn dollars(v: f64) -> String {
    let s = super::tables::usd(v);
    match s.strip_prefix('-') {
        Some(abs) => format!("-${abs}"),
        None => format!("${s}"),
    }
}

/// One figure of the router-evaluation section, with a note under the chart.
fn figure(out: &mut String, caption: &str, svg: &str, note: &str) {
    let _ = writeln!(
        out,
        "<figure><figcaption>{}</figcaption>\n{svg}\n<p class=\"note\">{}</p>\n</figure>",
        escape(caption),
        escape(note)
    );
}

fn skipped(out: &mut String, note: &str) {
    let _ = writeln!(out, "<p class=\"skipped\">{}</p>", escape(note));
}

/// The router-evaluation section: per classifier version and router, the reliability curve
/// (baseline vs now) and the net cost against the threshold, each on its last evaluated day; a
/// one-line note in place of a chart the views cannot fill yet.
fn router_eval(data: &ReportData) -> anyhow::Result<String> {
    let mut out = String::new();
    out.push_str(
        "<h2>Router evaluation</h2>\n<p>Which confidence range became confidently wrong, and where the threshold \
         should be: read from mature cohorts only, on the last evaluated day of each classifier version and \
         router.</p>\n",
    );
    if data.reliability.is_empty() {
        skipped(
            &mut out,
            "Reliability curve: nothing evaluated in this range yet (calibration_daily has no row: it needs a full \
             window of mature days).",
        );
    }
    for curve in &data.reliability {
        let cascade = if curve.router == "CASCADE" {
            " For a cascade these are the turns the cheap model answered without escalating, by its self-confidence: \
             a rising bin is under-escalation."
        } else {
            ""
        };
        let no_baseline = if curve.bins.iter().any(|b| b.baseline().is_some()) {
            ""
        } else {
            " No baseline yet: it fills in once the baseline window's days (configured, or the first mature days of \
             this version) are evaluated."
        };
        let caption = format!(
            "Reliability curve of {} ({}): the failure rate (failed deflection, thumbs-down or a reviewer's \
             \"wrong\") of the turns the cheap tier kept, per confidence bin, over the {} ending {}, with its Wilson \
             95% band, against the same bins in the baseline window. A point sits at its turns' mean confidence; \
             grey lines are bin edges. Large dark-red dots: bins regressed (significantly and materially above \
             their baseline).{no_baseline}{cascade}",
            curve.classifier_version,
            curve.router,
            window_label(&curve.window),
            curve.day
        );
        match reliability_chart(curve)? {
            Some(svg) => figure(&mut out, &caption, &svg, &ece_line(curve)),
            None => skipped(
                &mut out,
                &format!(
                    "Reliability curve of {} ({}): no bin has cheap-served turns in the {} ending {}.",
                    curve.classifier_version,
                    curve.router,
                    window_label(&curve.window),
                    curve.day
                ),
            ),
        }
    }
    if data.net_cost.is_empty() {
        skipped(
            &mut out,
            "Net cost against the threshold: no threshold advice in this range yet (threshold_advice has no row: it \
             needs a reference, a full window of mature days and the threshold in force).",
        );
    }
    for curve in &data.net_cost {
        let a = &curve.advice;
        let caption = format!(
            "Net cost against the threshold for {} ({}): inference cost plus expected failed deflections × the \
             human cost per failure, over the {} ending {}, per candidate threshold, with its bounds. Dashed line \
             and hollow points: extrapolated (a looser threshold sends the cheap tier turns it never served; their \
             outcome is the rescoring slice's estimate). The saving's bounds count only the turns the two \
             thresholds route differently, so they are narrower than the band.",
            a.classifier_version,
            a.router,
            window_label(&curve.window),
            a.day
        );
        if let Some(svg) = net_cost_chart(curve)? {
            figure(&mut out, &caption, &svg, &saving_line(curve));
        }
    }
    Ok(out)
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What the dashed vertical lines on the charts mean.
pub const MARKERS_NOTE: &str = "Vertical dashed lines mark the first firing of the confidence-drift alert, the \
     per-tier quality alert and the aggregate (all tiers pooled) quality signal under the same rule. Quality rules \
     judge mature cohorts only, so each is known one attribution window after its marker.";

/// The document up to the end of the page's heading: inline CSS, no script, nothing external.
fn head(page: &Page) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:1020px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}\
         figure{{margin:2em 0}}figcaption{{font-size:14px;color:#444;margin-bottom:.4em}}\
         table{{border-collapse:collapse;font-size:12px;margin:.6em 0 2em}}\
         th,td{{padding:2px 7px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}}\
         th{{background:#f3f3f3}}td.l,th.l{{text-align:left}}tr.immature td{{color:#888;font-style:italic}}\
         .nodata{{background:#fff6e0;border:1px solid #f0d080;padding:1em}}\
         p.note{{font-size:14px;color:#444;margin:.3em 0}}p.skipped{{font-size:14px;color:#666;font-style:italic}}</style>\n</head><body>\n\
         <h1>{}</h1>\n<p>{}</p>\n",
        escape(&page.title),
        escape(&page.heading),
        escape(&page.intro)
    );
    if let Some(pre) = &page.preformatted {
        let _ = writeln!(s, "<pre>{}</pre>", escape(pre));
    }
    s
}

fn html(page: &Page, charts: &[(String, Option<String>)], router_eval: &str, tables: &str) -> String {
    let mut s = head(page);
    for (caption, svg) in charts {
        let body = svg.as_deref().unwrap_or(NO_CHART_DATA);
        let _ = writeln!(s, "<figure><figcaption>{}</figcaption>\n{body}\n</figure>", escape(caption));
    }
    s.push_str(router_eval);
    s.push_str(tables);
    s.push_str("</body></html>\n");
    s
}

/// In place of a chart that has nothing to draw in the range.
pub const NO_CHART_DATA: &str = "<p class=\"nodata\">No data for this chart in this range yet.</p>";

/// The page of a store that holds no data (in the range) yet.
pub fn empty_page(page: &Page) -> String {
    let mut s = head(page);
    s.push_str(
        "<p class=\"nodata\">No data yet: the store holds no AI conversation and no support ticket in this range. \
         The page fills in once the daemon has committed its first batches.</p>\n</body></html>\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::load::{ReportSettings, Thresholds};
    use crate::router_eval::advise::Advice;

    fn empty_data() -> ReportData {
        ReportData {
            start: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            days: 7,
            settings: ReportSettings {
                capable_tier: "capable".to_owned(),
                window_hours: 72.0,
                window_ms: 72 * 3_600_000,
                thresholds: Thresholds { warning_d: 0.1, critical_d: 0.2, warning_psi: 0.1, critical_psi: 0.25 },
            },
            misroute: BTreeMap::new(),
            sample_share: BTreeMap::new(),
            samples: BTreeMap::new(),
            tiers: BTreeMap::new(),
            drift: BTreeMap::new(),
            money: BTreeMap::new(),
            cost_centers: BTreeMap::new(),
            channels: BTreeMap::new(),
            first_immature: None,
            alerts: vec![],
            reliability: vec![],
            net_cost: vec![],
        }
    }

    fn bin(bin: i64, n: u64, rate: f64, baseline: Option<f64>, status: &str) -> CalibrationBin {
        CalibrationBin {
            day: "2026-03-07".to_owned(),
            classifier_version: "v<1>".to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: "28d".to_owned(),
            bin,
            conf_lo: 0.5 + bin as f64 * 0.1,
            conf_hi: 0.6 + bin as f64 * 0.1,
            conf_mean: None,
            n,
            failure_rate: (n > 0).then_some(rate),
            failure_rate_lo: (n > 0).then_some(rate * 0.8),
            failure_rate_hi: (n > 0).then_some(rate * 1.2),
            baseline_n: if baseline.is_some() { 100 } else { 0 },
            baseline_failure_rate: baseline,
            status: status.to_owned(),
        }
    }

    fn row(threshold: f64, extrapolated: bool, saving: (f64, f64, f64)) -> AdviceView {
        AdviceView {
            day: "2026-03-07".to_owned(),
            classifier_version: "v1".to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: "7d".to_owned(),
            threshold,
            is_current: false,
            is_recommended: false,
            cheap_share: 0.5,
            net_cost_usd: 1000.0 - threshold * 100.0,
            net_cost_lo_usd: 900.0,
            net_cost_hi_usd: 1100.0,
            net_saving: saving,
            extrapolated,
        }
    }

    fn net_cost(current: f64, recommended: Option<f64>, saving: (f64, f64, f64)) -> NetCostCurve {
        let rows: Vec<AdviceView> = [0.58, 0.59, 0.60, 0.61, 0.62].iter().map(|t| row(*t, *t < 0.6, saving)).collect();
        let pick = |t: f64| rows.iter().find(|r| r.threshold == t).cloned();
        NetCostCurve {
            advice: Advice {
                day: "2026-03-07".to_owned(),
                classifier_version: "v1".to_owned(),
                router: "PRE_ROUTE".to_owned(),
                current: pick(current).unwrap(),
                recommended: recommended.and_then(pick),
            },
            window: "7d".to_owned(),
            rows,
        }
    }

    #[test]
    fn day_runs_break_at_gaps_and_a_lone_day_gets_a_segment() {
        let r = runs(&[(1.0, 5.0), (2.0, 5.0), (5.0, 6.0), (7.0, 7.0), (8.0, 7.0)]);
        assert_eq!(r, vec![vec![(1.0, 5.0), (2.0, 5.0)], vec![(5.0, 6.0), (5.5, 6.0)], vec![(7.0, 7.0), (8.0, 7.0)]]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn the_saving_line_names_the_recommendation_and_its_bounds() {
        let c = net_cost(0.60, Some(0.62), (210.0, -18.72, 517.3));
        let line = saving_line(&c);
        assert!(line.starts_with("Recommended 0.62 (in force 0.60): a net saving of $210.00"), "{line}");
        assert!(line.contains("(bounds -$18.72 to $517.30; unsure"), "{line}");
        assert!(saving_line(&net_cost(0.60, Some(0.60), (0.0, 0.0, 0.0))).contains("nothing to change"));
        assert!(saving_line(&net_cost(0.60, None, (0.0, 0.0, 0.0))).contains("no recommendation"));
        assert_eq!(dollars(1234.5), "$1,234.50");
        assert_eq!(window_label("7d"), "7-day window");
    }

    #[test]
    fn an_empty_router_evaluation_is_two_notes_and_no_figure() {
        let html = router_eval(&empty_data()).unwrap();
        assert!(html.contains("<h2>Router evaluation</h2>"));
        assert_eq!(html.matches("<p class=\"skipped\">").count(), 2, "{html}");
        assert!(!html.contains("<figure>") && !html.contains("nodata"));
    }

    #[test]
    fn the_router_evaluation_draws_both_curves_with_regressed_bins_and_markers() {
        let mut data = empty_data();
        data.reliability = vec![ReliabilityCurve {
            classifier_version: "v<1>".to_owned(),
            router: "PRE_ROUTE".to_owned(),
            window: "28d".to_owned(),
            day: "2026-03-07".to_owned(),
            bins: vec![
                bin(0, 0, 0.0, None, "insufficient"),
                bin(1, 500, 0.12, Some(0.05), "regressed"),
                bin(2, 500, 0.04, Some(0.03), "ok"),
                bin(3, 500, 0.02, Some(0.02), "ok"),
            ],
            ece_now: None,
            ece_first: None,
        }];
        data.net_cost = vec![net_cost(0.60, Some(0.62), (210.0, 20.0, 400.0))];
        let html = router_eval(&data).unwrap();
        assert_eq!(html.matches("<figure>").count(), 2, "{html}");
        assert!(!html.contains("class=\"skipped\""));
        // Names are escaped in the caption and in the SVG.
        assert!(html.contains("Reliability curve of v&lt;1&gt; (PRE_ROUTE)") && !html.contains("v<1>"));
        assert!(html.contains("regressed bin") && html.contains("baseline window"));
        assert!(html.contains("in force 0.60") && html.contains("recommended 0.62"));
        assert!(html.contains("extrapolated from the rescoring slice"));
        assert!(html.contains("Calibration error: not computed yet for the 28-day window."));

        // A curve whose bins have no turns at all is a note, not an empty chart.
        data.reliability[0].bins = vec![bin(0, 0, 0.0, None, "insufficient")];
        let html = router_eval(&data).unwrap();
        assert_eq!(html.matches("<figure>").count(), 1);
        assert!(html.contains("no bin has cheap-served turns in the 28-day window ending 2026-03-07"));
    }
}
