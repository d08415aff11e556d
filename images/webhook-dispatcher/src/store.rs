//! Durable storage of deliveries in PostgreSQL, each delivery key once.
//!
//! The insert is `ON CONFLICT (delivery_key) DO NOTHING`: concurrent
//! redeliveries of one event race on the unique index, one row wins, and the
//! others learn it is a duplicate only after the winner committed.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::event::Delivery;

/// The schema, in order; each entry runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE webhook_events (
        id BIGSERIAL PRIMARY KEY,
        delivery_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        gitlab_event TEXT NOT NULL,
        payload JSONB NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )",
)];

/// The database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string is invalid.
    #[error("invalid database connection string: {0}")]
    Config(String),
    /// No connection, or a statement failed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database did not answer in time.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
}

/// What storing a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new event, stored with this id.
    New(i64),
    /// Its key was stored before: not stored again.
    Duplicate,
}

/// The event store.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    timeout: Duration,
}

impl Store {
    /// A store on `connection` (libpq key=value form); connects lazily.
    pub fn new(connection: &str, timeout: Duration) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = connection
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(e.to_string()))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store { pool, timeout })
    }

    /// Applies the migrations not applied yet (safe to run from several starts at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let mut client = self.pool.get().await.map_err(unavailable)?;
            let tx = client.transaction().await.map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock(7243001)", &[]).await.map_err(unavailable)?;
            tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())", &[])
                .await
                .map_err(unavailable)?;
            for (version, sql) in MIGRATIONS {
                let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version]).await.map_err(unavailable)?;
                if done.is_none() {
                    tx.batch_execute(sql).await.map_err(unavailable)?;
                    tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version]).await.map_err(unavailable)?;
                }
            }
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// Stores `delivery` unless its key was stored before.
    pub async fn store(&self, delivery: &Delivery) -> Result<Stored, StoreError> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(unavailable)?;
            let row = client
                .query_opt(
                    "INSERT INTO webhook_events (delivery_key, kind, gitlab_event, payload) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (delivery_key) DO NOTHING RETURNING id",
                    &[&delivery.key, &delivery.kind, &delivery.header, &delivery.payload],
                )
                .await
                .map_err(unavailable)?;
            Ok(match row {
                Some(row) => Stored::New(row.get(0)),
                None => Stored::Duplicate,
            })
        })
        .await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(async {
            let client = self.pool.get().await.map_err(unavailable)?;
            client.execute("SELECT 1", &[]).await.map_err(unavailable).map(|_| ())
        })
        .await
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
