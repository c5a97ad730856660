//! The self-contained HTML report: inline SVG charts drawn with `plotters`, HTML tables, inline
//! CSS, no scripts or external assets, so the page can be mailed, attached to a post-mortem, or
//! served by the daemon (`GET /report`) under a Content-Security-Policy that allows nothing else.
//!
//! [`load`] reads every figure back from the public views — the same ones a Grafana dashboard
//! queries — of either store, with one portable SQL text per query; [`render`] turns the figures
//! into the page. `tierwatch demo`, `tierwatch report` and the daemon's `/report` all use both.

pub mod live;
pub mod load;
pub mod render;
mod tables;

use chrono::{DateTime, NaiveDate, Utc};

pub use live::LiveReport;
pub use load::{ReportData, ReportPool, ReportSettings};

/// One alert episode as read back from the `alerts` view.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMark {
    pub kind: String,
    pub subject: String,
    /// The highest severity reached.
    pub severity: String,
    pub state: String,
    /// End of the event-time window whose evaluation made it fire: for drift the end of the
    /// evaluated day; for quality rules the end of the cohort day (see `known_at`).
    pub fired_at: DateTime<Utc>,
    /// When a warning episode escalated to critical.
    pub escalated_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The value and threshold at firing, or at escalation when it escalated.
    pub value: f64,
    pub threshold: f64,
    /// When the evaluation could first run in production: drift at `fired_at`; quality and
    /// calibration rules use mature cohorts only, so `fired_at` plus the attribution window W.
    pub known_at: DateTime<Utc>,
}

/// Which days a report covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DayRange {
    /// From the first to the last day found in the store.
    #[default]
    All,
    /// The last N days found in the store (ending on the last day with data).
    Last(u32),
    /// From this day to the last day with data.
    Since(NaiveDate),
}

/// The page's heading: what the report is about, above the charts.
#[derive(Debug, Clone)]
pub struct Page {
    /// The document's `<title>`.
    pub title: String,
    /// The `<h1>`.
    pub heading: String,
    /// One paragraph of plain text under the heading.
    pub intro: String,
    /// Preformatted text under the paragraph (the demo's timeline), if any.
    pub preformatted: Option<String>,
}
