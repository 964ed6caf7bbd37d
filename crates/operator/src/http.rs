//! The operator's HTTP server: `/metrics`, `/healthz` and `/readyz` (DESIGN §3.3).
//!
//! Served by every replica, standbys included: a standby's caches are warm, so it is ready to
//! take over, and its metrics say it is not the leader.

use crate::context::Context;
use crate::metrics::CONTENT_TYPE;
use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving /metrics, /healthz and /readyz")
}

fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], ctx.render_metrics()).into_response()
}

/// Alive as long as the process serves requests; a stuck controller does not make it unhealthy
/// (restarting would not help it), a dead process does.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the controllers' caches hold the complete initial list.
async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.readiness() {
        Ok(()) => "ok".into_response(),
        Err(not_ready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {not_ready}\n"),
        )
            .into_response(),
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: the operator serves /metrics, /healthz and /readyz\n",
    )
}
