//! `/metrics` (Prometheus text format), `/healthz` (the process is up), `/readyz` (partitions
//! are assigned and the last commit reached the store) and `/report` (the self-contained HTML
//! report of the store, from a short cache).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::report::LiveReport;
use crate::telemetry::Telemetry;

/// The page needs nothing but its own inline styles and `data:` images; no script may run.
pub const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(telemetry)
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], t.render())
}

async fn ready(State(t): State<Arc<Telemetry>>) -> (StatusCode, &'static str) {
    if t.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// `GET /report` next to the other routes.
pub fn with_report(router: Router, report: Arc<LiveReport>) -> Router {
    router.merge(Router::new().route("/report", get(report_page)).with_state(report))
}

async fn report_page(State(report): State<Arc<LiveReport>>) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    match report.page().await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, REPORT_CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html.as_str().to_owned(),
        )
            .into_response(),
        Err(crate::report::live::StoreUnavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "report unavailable: the store could not be read (see the daemon's log)\n",
        )
            .into_response(),
    }
}

/// Serve until the task is dropped.
pub async fn serve(listen: &str, telemetry: Arc<Telemetry>, report: Option<Arc<LiveReport>>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "http listening");
    let app = match report {
        Some(r) => with_report(router(telemetry), r),
        None => router(telemetry),
    };
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::report::{ReportPool, ReportSettings};
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    /// Serve `/report` of `report` on a loopback port; returns the port.
    async fn serve_report(report: LiveReport) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = with_report(router(Telemetry::new()), Arc::new(report));
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// (status line, lowercased headers, body), off the runtime.
    async fn get(port: u16) -> (String, String, String) {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(s, "GET /report HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            (head.lines().next().unwrap().to_owned(), head.to_lowercase(), body.to_owned())
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_says_no_data_yet_serves_from_its_cache_and_answers_503_when_the_store_fails() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let cfg = crate::config::Config::from_toml_str("[sqlite]\npath = \"unused.db\"\n").unwrap();
        let settings = ReportSettings::from_config(&cfg);
        let pool = ReportPool::Sqlite(store.pool().clone());
        let port = serve_report(LiveReport::new(pool.clone(), settings.clone(), Duration::from_secs(60))).await;

        let (status, headers, body) = get(port).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("content-type: text/html; charset=utf-8"), "{headers}");
        assert!(headers.contains(&format!("content-security-policy: {REPORT_CSP}")), "{headers}");
        assert!(body.contains("No data yet") && !body.contains("<svg") && !body.contains("<script"), "{body}");

        // The store goes away: the cached page is served until it expires.
        store.pool().close().await;
        let (status, _, cached) = get(port).await;
        assert_eq!((status.as_str(), cached.as_str()), ("HTTP/1.1 200 OK", body.as_str()));

        // Without a cached page, a store that cannot be read is a 503 with a short text.
        let port = serve_report(LiveReport::new(pool, settings, Duration::from_secs(60))).await;
        let (status, headers, body) = get(port).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(headers.contains("content-type: text/plain"), "{headers}");
        assert!(body.starts_with("report unavailable") && body.len() < 200, "{body}");
    }
}
