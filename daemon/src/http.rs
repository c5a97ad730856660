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
        Err(()) => (
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
