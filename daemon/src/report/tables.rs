//! The page's tables: the two ledgers, human tickets by cost center and channel next to the AI
//! deflection rate, per-tier quality (with CSAT and review errors, which have no chart), the
//! rescoring slice's backlog, and every alert episode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::load::{ReportData, TierDay};
use super::render::escape;
use crate::stats::wilson95;

/// Consecutive days summed into one row.
struct Period {
    first: usize,
    last: usize,
    label: String,
}

/// Rows per week over more than three weeks, per day otherwise.
fn periods(data: &ReportData) -> Vec<Period> {
    let len = if data.days > 21 { 7 } else { 1 };
    let date = |d: usize| data.start + chrono::Days::new(d as u64);
    (0..data.days)
        .step_by(len)
        .map(|first| {
            let last = (first + len - 1).min(data.days - 1);
            let label = if first == last {
                date(first).format("%Y-%m-%d").to_string()
            } else {
                format!("{} – {}", date(first).format("%Y-%m-%d"), date(last).format("%b %d"))
            };
            Period { first, last, label }
        })
        .collect()
}

/// `1,234.56`, `-12.00`.
pub(crate) fn usd(v: f64) -> String {
    let cents = (v.abs() * 100.0).round() as u64;
    let (whole, frac) = (cents / 100, cents % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if v < 0.0 && cents > 0 { "-" } else { "" };
    format!("{sign}{grouped}.{frac:02}")
}

/// `12.3% [11.0–13.6]` (Wilson 95%), or `–` without trials.
fn rate(x: u64, n: u64, scale: f64, unit: &str) -> String {
    match wilson95(x, n) {
        Some((lo, hi)) => {
            let r = x as f64 / n as f64;
            format!("{:.1}{unit} [{:.1}–{:.1}]", r * scale, lo * scale, hi * scale)
        }
        None => "–".to_owned(),
    }
}

/// `<tr>` with the first cell left-aligned; `immature` greys the row.
fn row(out: &mut String, immature: bool, cells: &[String]) {
    out.push_str(if immature { "<tr class=\"immature\">" } else { "<tr>" });
    for (i, c) in cells.iter().enumerate() {
        let class = if i == 0 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<td{class}>{}</td>", escape(c));
    }
    out.push_str("</tr>\n");
}

fn header(out: &mut String, title: &str, note: &str, columns: &[&str]) {
    let _ = write!(out, "<h2>{}</h2>\n<p>{}</p>\n<table>\n<tr>", escape(title), escape(note));
    for (i, c) in columns.iter().enumerate() {
        let class = if i == 0 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", escape(c));
    }
    out.push_str("</tr>\n");
}

/// Σ of a per-day map over a period.
fn sum_days(by_day: &BTreeMap<usize, u64>, p: &Period) -> u64 {
    by_day.range(p.first..=p.last).map(|(_, v)| v).sum()
}

fn deflected(c: &TierDay) -> (u64, u64) {
    (c.conversations - c.failed.min(c.conversations), c.conversations)
}

/// All tables, as HTML.
pub fn tables(data: &ReportData) -> String {
    let periods = periods(data);
    let immature = |p: &Period| data.first_immature.is_some_and(|f| f <= p.last);
    let mut out = String::new();

    // The two ledgers.
    header(
        &mut out,
        "The two ledgers",
        "Engineering's books (inference saved by routing down) next to support's (what human tickets cost, all of \
         them and those attributed to AI conversations; the excess: failed deflections above the baseline rate, \
         priced at the mean ticket cost). Net = inference saved − excess human cost. Grey rows hold cohorts that \
         are not mature yet: tickets may still arrive and their cost still grows. USD.",
        &[
            "period",
            "AI conversations",
            "deflection rate",
            "inference saved",
            "human cost (all tickets)",
            "attributed human cost",
            "excess human cost",
            "net",
            "cumulative net",
        ],
    );
    let mut cumulative = 0.0;
    let mut totals = (0u64, 0u64, 0.0, 0.0, 0.0, 0.0, 0.0);
    for p in &periods {
        let (x, n) = data.pooled(None, p.first..=p.last, deflected);
        let days: Vec<_> = data.money.range(p.first..=p.last).map(|(_, m)| *m).collect();
        let sum = |f: fn(&super::load::MoneyDay) -> f64| days.iter().map(f).sum::<f64>();
        let (saved, human, attributed, excess, net) = (
            sum(|m| m.inference_saved),
            sum(|m| m.human_cost),
            sum(|m| m.attributed_human),
            sum(|m| m.excess_human),
            sum(|m| m.net),
        );
        cumulative += net;
        totals = (
            totals.0 + x,
            totals.1 + n,
            totals.2 + saved,
            totals.3 + human,
            totals.4 + attributed,
            totals.5 + excess,
            totals.6 + net,
        );
        row(
            &mut out,
            immature(p),
            &[
                p.label.clone(),
                n.to_string(),
                rate(x, n, 100.0, "%"),
                usd(saved),
                usd(human),
                usd(attributed),
                usd(excess),
                usd(net),
                usd(cumulative),
            ],
        );
    }
    row(
        &mut out,
        false,
        &[
            "all".to_owned(),
            totals.1.to_string(),
            rate(totals.0, totals.1, 100.0, "%"),
            usd(totals.2),
            usd(totals.3),
            usd(totals.4),
            usd(totals.5),
            usd(totals.6),
            usd(totals.6),
        ],
    );
    out.push_str("</table>\n");

    // Human tickets by cost center and channel.
    let mut columns = vec!["period", "AI deflection rate", "tickets opened", "unattributed"];
    columns.extend(data.cost_centers.keys().map(|k| k.as_str()));
    columns.extend(data.channels.keys().map(|k| k.as_str()));
    header(
        &mut out,
        "Deflection rate against human tickets, by cost center and channel",
        &format!(
            "The AI deflection rate (conversations not followed by a ticket, all tiers) next to the tickets human \
             support opened, per cost center ({}) and per channel ({}). Unattributed tickets have no AI \
             conversation within the attribution window.",
            data.cost_centers.keys().cloned().collect::<Vec<_>>().join(", "),
            data.channels.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        &columns,
    );
    for p in &periods {
        let (x, n) = data.pooled(None, p.first..=p.last, deflected);
        let money = data.money.range(p.first..=p.last).map(|(_, m)| m);
        let (tickets, unattributed) = money.fold((0, 0), |(t, u), m| (t + m.tickets, u + m.unattributed));
        let mut cells = vec![p.label.clone(), rate(x, n, 100.0, "%"), tickets.to_string(), unattributed.to_string()];
        cells.extend(data.cost_centers.values().chain(data.channels.values()).map(|m| sum_days(m, p).to_string()));
        row(&mut out, immature(p), &cells);
    }
    out.push_str("</table>\n");

    // Per-tier quality, with what has no chart.
    header(
        &mut out,
        "Quality per tier",
        "Per tier and all tiers pooled, with 95% Wilson intervals: failed deflections per AI conversation, \
         thumbs-down per 1,000 decisions, the mean CSAT (responses), and the human reviewers' error rate (reviews \
         come from the oversampled rescoring slice: not a population rate).",
        &[
            "period",
            "tier",
            "conversations",
            "failed deflections",
            "thumbs-down / 1,000",
            "CSAT (n)",
            "review errors (n)",
        ],
    );
    let tier_names: Vec<Option<&str>> =
        data.tiers.keys().map(|t| Some(t.as_str())).chain(std::iter::once(None)).collect();
    for p in &periods {
        for tier in &tier_names {
            let range = || p.first..=p.last;
            let (failed, conversations) = data.pooled(*tier, range(), |c| (c.failed, c.conversations));
            let (thumbs, decisions) = data.pooled(*tier, range(), |c| (c.thumbs_down, c.decisions));
            let (reviews_wrong, reviews) = data.pooled(*tier, range(), |c| (c.reviews_wrong, c.reviews));
            let (csat_n, csat_sum) = data
                .tiers
                .iter()
                .filter(|(t, _)| tier.is_none_or(|want| want == t.as_str()))
                .flat_map(|(_, by_day)| by_day.range(range()))
                .fold((0u64, 0.0), |(n, s), (_, c)| (n + c.csat_n, s + c.csat_sum));
            let csat =
                if csat_n > 0 { format!("{:.2} ({csat_n})", csat_sum / csat_n as f64) } else { "–".to_owned() };
            row(
                &mut out,
                immature(p),
                &[
                    p.label.clone(),
                    tier.unwrap_or("all tiers pooled").to_owned(),
                    conversations.to_string(),
                    rate(failed, conversations, 100.0, "%"),
                    rate(thumbs, decisions, 1000.0, ""),
                    csat,
                    format!("{} ({reviews})", rate(reviews_wrong, reviews, 100.0, "%")),
                ],
            );
        }
    }
    out.push_str("</table>\n");

    // The rescoring slice.
    if !data.samples.is_empty() {
        header(
            &mut out,
            "Rescoring slice and review queue",
            "Decisions sampled for the rescorer's second opinion: scored, still pending (the backlog), shed under \
             load, and reviewed by a human so far; of the routed-down tiers' scored samples, those the rescorer \
             judges misrouted (unweighted: the sample over-represents low-margin and out-of-distribution queries).",
            &["period", "sampled", "scored", "pending", "shed", "reviewed", "suspected misroutes (routed down)"],
        );
        for p in &periods {
            let s = data.samples.range(p.first..=p.last).fold([0u64; 7], |a, (_, d)| {
                [
                    a[0] + d.sampled,
                    a[1] + d.scored,
                    a[2] + d.pending,
                    a[3] + d.shed,
                    a[4] + d.reviewed,
                    a[5] + d.down_suspected,
                    a[6] + d.down_scored,
                ]
            });
            let mut cells: Vec<String> = s[..5].iter().map(|v| v.to_string()).collect();
            cells.insert(0, p.label.clone());
            cells.push(format!("{} of {} ({})", s[5], s[6], rate(s[5], s[6], 100.0, "%")));
            row(&mut out, false, &cells);
        }
        out.push_str("</table>\n");
    }

    // Alert episodes.
    header(
        &mut out,
        "Alert episodes",
        "Every episode in the alerts view, in firing order (event time, UTC). Quality rules judge mature cohorts \
         only: they are known one attribution window after the cohort day.",
        &["fired", "rule", "subject", "severity", "state", "value", "threshold", "escalated", "resolved", "known by"],
    );
    let day =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("–".to_owned(), |t| t.format("%Y-%m-%d").to_string());
    for a in &data.alerts {
        row(
            &mut out,
            false,
            &[
                day(Some(a.fired_at)),
                a.kind.clone(),
                a.subject.clone(),
                a.severity.clone(),
                a.state.clone(),
                format!("{:.4}", a.value),
                format!("{:.4}", a.threshold),
                day(a.escalated_at),
                day(a.resolved_at),
                day(Some(a.known_at)),
            ],
        );
    }
    if data.alerts.is_empty() {
        out.push_str("<tr><td class=\"l\" colspan=\"10\">No alert has fired.</td></tr>\n");
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_groups_thousands_and_keeps_the_sign() {
        assert_eq!(usd(0.0), "0.00");
        assert_eq!(usd(1234.567), "1,234.57");
        assert_eq!(usd(-1_234_567.0), "-1,234,567.00");
        assert_eq!(usd(-0.001), "0.00");
        assert_eq!(usd(999.999), "1,000.00");
    }

    #[test]
    fn rates_carry_their_interval_or_a_dash() {
        assert_eq!(rate(0, 0, 100.0, "%"), "–");
        let r = rate(10, 100, 100.0, "%");
        assert!(r.starts_with("10.0% ["), "{r}");
    }
}
