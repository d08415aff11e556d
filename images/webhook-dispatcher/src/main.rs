//! `webhook-dispatcher`: the service's entry point.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use webhook_dispatcher::auth::Secret;
use webhook_dispatcher::config::Config;
use webhook_dispatcher::metrics::Metrics;
use webhook_dispatcher::server::App;
use webhook_dispatcher::store::Store;
use webhook_dispatcher::telemetry::Telemetry;

fn main() -> ExitCode {
    let config = Config::parse();
    // Outside the async runtime: the span exporter's blocking HTTP client runs
    // a runtime of its own, which must not be made or dropped inside another.
    let telemetry = match Telemetry::init(config.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("webhook-dispatcher: telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(config)));
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "webhook dispatcher stopped on an error");
            eprintln!("webhook-dispatcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let secret = Secret::from_file(&config.secret_file)?;
    let store = Store::new(&config.database, Duration::from_millis(config.db_timeout_ms))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let app = App {
        secret,
        store,
        metrics: Metrics::new(),
        max_body_bytes: config.max_body_bytes,
    };
    webhook_dispatcher::serve(listener, app, Duration::from_secs(60), stop_signal()).await
}

/// SIGTERM (systemd's stop) or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stop signal: finishing requests in flight");
}
