//! The dispatcher's settings: flags, each also read from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the dispatcher runs.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "webhook-dispatcher",
    version,
    about = "GitLab-style webhooks, stored once in PostgreSQL"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WEBHOOK_LISTEN", default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,
    /// File holding the shared secret GitLab sends as X-Gitlab-Token.
    #[arg(
        long,
        env = "WEBHOOK_SECRET_FILE",
        default_value = "/run/secrets/webhook-gitlab-secret"
    )]
    pub secret_file: PathBuf,
    /// PostgreSQL connection string (key=value form; a host starting with / is a socket directory).
    #[arg(
        long,
        env = "WEBHOOK_DATABASE",
        default_value = "host=/run/postgresql user=webhook dbname=webhook"
    )]
    pub database: String,
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "WEBHOOK_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// OTLP/HTTP endpoint for spans (e.g. http://127.0.0.1:4318/v1/traces); none exports nothing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// How long a database call may take before the request gets 503, in milliseconds.
    #[arg(long, env = "WEBHOOK_DB_TIMEOUT_MS", default_value_t = 5000)]
    pub db_timeout_ms: u64,
}
