//! The webhook dispatcher: GitLab-style webhooks on `/webhook`, authenticated
//! by `X-Gitlab-Token`, stored once per delivery in PostgreSQL, counted in
//! Prometheus metrics, traced per request.
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod event;
pub mod metrics;
pub mod server;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Serves on `listener` until `shutdown` completes, then finishes the
/// requests in flight. The schema is migrated first, waiting up to
/// `migrate_within` for the database to answer.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: server::App,
    migrate_within: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + migrate_within;
    loop {
        match app.store.migrate().await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not ready; retrying the migrations");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => anyhow::bail!("migrating the event store: {e}"),
        }
    }
    tracing::info!(listen = %listener.local_addr()?, "webhook dispatcher ready");
    axum::serve(listener, server::router(Arc::new(app)))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("stopped: requests in flight finished");
    Ok(())
}
