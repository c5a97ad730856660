//! `/metrics` (Prometheus text format), `/healthz` (the process is up) and `/readyz` (partitions
//! are assigned and the last commit reached the store).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::telemetry::Telemetry;

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

/// Serve until the task is dropped.
pub async fn serve(listen: &str, telemetry: Arc<Telemetry>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "http listening");
    axum::serve(listener, router(telemetry)).await?;
    Ok(())
}
