//! The page: inline SVG charts drawn with `plotters`, the two ledgers and the other tables as
//! HTML, inline CSS, no scripts and nothing external.

use std::fmt::Write as _;

use chrono::NaiveDate;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::load::{DriftDay, ReportData, TierDay, TRAILING_DAYS};
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

    // 5. Routed share, expected vs observed.
    let exp = series("1d", |d| d.share_expected.map(|v| v * 100.0));
    let obs = series("1d", |d| d.share_observed.map(|v| v * 100.0));
    let top = y_max(exp.iter().chain(&obs).map(|p| p.1), 10.0).min(100.0);
    charts.push((
        "Share of decisions routed to the cheap tier: what the router was calibrated to send (the reference above \
         the threshold) against what it sends. The gap is the cost owner's view of confidence drift."
            .to_owned(),
        chart_or_none(!exp.is_empty() || !obs.is_empty(), || {
            svg_chart("Routed to the cheap tier (%)", "% of decisions", 0.0..top, data, |c| {
                line(c, &exp, RGBColor(160, 160, 160), "expected from the reference")?;
                line(c, &obs, PER_TIER_MARKER, "observed")?;
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

    Ok(html(page, &charts, &super::tables::tables(data)))
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
         .nodata{{background:#fff6e0;border:1px solid #f0d080;padding:1em}}</style>\n</head><body>\n\
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

fn html(page: &Page, charts: &[(String, Option<String>)], tables: &str) -> String {
    let mut s = head(page);
    for (caption, svg) in charts {
        let body = svg.as_deref().unwrap_or(NO_CHART_DATA);
        let _ = writeln!(s, "<figure><figcaption>{}</figcaption>\n{body}\n</figure>", escape(caption));
    }
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
