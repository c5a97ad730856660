//! The report of a live store: `tierwatch report` writes it to a file, the daemon serves it as
//! `GET /report` from a short cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{resolve_range, ReportData, ReportPool, ReportSettings};
use super::render::{self, MARKERS_NOTE};
use super::{DayRange, Page};

/// The heading of a live page.
fn live_page(pool: &ReportPool, range: Option<(chrono::NaiveDate, usize)>) -> Page {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let covers = match range {
        Some((start, days)) => {
            let end = start + chrono::Days::new(days.saturating_sub(1) as u64);
            format!("{start} to {end} ({days} days, UTC cohort days)")
        }
        None => "no day with data yet".to_owned(),
    };
    Page {
        title: "tierwatch report".to_owned(),
        heading: "tierwatch: routing quality, drift and the two ledgers".to_owned(),
        intro: format!("Read from the public views of the {} store at {now}: {covers}. {MARKERS_NOTE}", pool.backend()),
        preformatted: None,
    }
}

/// Read the store and render the page: the charts and tables of `range`, or a page saying there
/// is no data yet. Drawing runs on the blocking pool, never on the async runtime.
pub async fn generate(pool: &ReportPool, settings: &ReportSettings, range: DayRange) -> anyhow::Result<String> {
    let Some((start, days)) = resolve_range(pool, range).await? else {
        return Ok(render::empty_page(&live_page(pool, None)));
    };
    let data = ReportData::load(pool, settings, start, days).await?;
    let page = live_page(pool, Some((start, days)));
    if data.is_empty() {
        return Ok(render::empty_page(&page));
    }
    tokio::task::spawn_blocking(move || render::render(&data, &page))
        .await
        .map_err(|e| anyhow::anyhow!("the report renderer stopped: {e}"))?
}

/// How long a failed read is remembered: a broken store is not hammered, a recovered one is seen
/// soon.
const ERROR_TTL: Duration = Duration::from_secs(5);

/// The daemon's `/report`: rendered on demand, at most once per `ttl` (concurrent requests wait
/// for the one render in flight), so a browser reloading in a loop cannot load the store.
pub struct LiveReport {
    pool: ReportPool,
    settings: ReportSettings,
    range: DayRange,
    ttl: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Rendered)>>,
}

/// The store could not be read (the cause is in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// A rendered page, or why there is none.
type Rendered = Result<Arc<String>, StoreUnavailable>;

impl LiveReport {
    pub fn new(pool: ReportPool, settings: ReportSettings, ttl: Duration) -> LiveReport {
        LiveReport { pool, settings, range: DayRange::All, ttl, cache: tokio::sync::Mutex::new(None) }
    }

    /// The page, or `Err` when the store could not be read (logged; the caller answers 503).
    pub async fn page(&self) -> Rendered {
        let mut cache = self.cache.lock().await;
        if let Some((at, page)) = &*cache {
            let ttl = if page.is_ok() { self.ttl } else { self.ttl.min(ERROR_TTL) };
            if at.elapsed() < ttl {
                return page.clone();
            }
        }
        let started = Instant::now();
        let page = match generate(&self.pool, &self.settings, self.range).await {
            Ok(html) => {
                tracing::debug!(bytes = html.len(), ms = started.elapsed().as_millis() as u64, "report rendered");
                Ok(Arc::new(html))
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "report: reading the store failed");
                Err(StoreUnavailable)
            }
        };
        *cache = Some((Instant::now(), page.clone()));
        page
    }
}
