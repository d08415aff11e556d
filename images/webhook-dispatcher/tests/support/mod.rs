//! Shared by the dispatcher's tests: a real PostgreSQL and a running dispatcher.
#![allow(dead_code)]

pub mod postgres;

use std::net::SocketAddr;
use std::time::Duration;

use webhook_dispatcher::auth::Secret;
use webhook_dispatcher::metrics::Metrics;
use webhook_dispatcher::server::App;
use webhook_dispatcher::store::Store;

/// The secret every test signs with.
pub const SECRET: &str = "correct horse battery staple";
/// The body limit the tests' dispatcher uses.
pub const MAX_BODY: usize = 4096;

/// A dispatcher serving in this process, stopped on drop.
pub struct Dispatcher {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Dispatcher {
    /// Starts one on a free loopback port against `connection`.
    pub async fn start(connection: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App {
            secret: Secret::new(SECRET.as_bytes().to_vec()).unwrap(),
            store: Store::new(connection, Duration::from_secs(2)).unwrap(),
            metrics: Metrics::new(),
            max_body_bytes: MAX_BODY,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(webhook_dispatcher::serve(
            listener,
            app,
            Duration::from_secs(10),
            async {
                let _ = stopped.await;
            },
        ));
        let dispatcher = Dispatcher {
            addr,
            stop: Some(stop),
            task: Some(task),
        };
        // Ready when /health answers (the migrations ran before it listens).
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(dispatcher.url("/health")).send().await.is_ok() {
                return dispatcher;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the dispatcher did not answer /health within 5 s");
    }

    /// A URL on the dispatcher.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it and waits for the requests in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A signed push event with delivery key `key`.
pub fn push(client: &reqwest::Client, d: &Dispatcher, key: &str) -> reqwest::RequestBuilder {
    webhook(client, d, key, SECRET, "Push Hook")
}

/// A push event with delivery key `key` and `token` as X-Gitlab-Token.
pub fn push_with_token(client: &reqwest::Client, d: &Dispatcher, key: &str, token: &str) -> reqwest::RequestBuilder {
    webhook(client, d, key, token, "Push Hook")
}

/// A push body sent with `token` and `event` as X-Gitlab-Event.
pub fn webhook(
    client: &reqwest::Client,
    d: &Dispatcher,
    key: &str,
    token: &str,
    event: &str,
) -> reqwest::RequestBuilder {
    client
        .post(d.url("/webhook"))
        .header("X-Gitlab-Token", token)
        .header("X-Gitlab-Event", event)
        .header("X-Gitlab-Event-UUID", key)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"object_kind":"push","ref":"refs/heads/main","key":"{key}"}}"#
        ))
}

/// Rows stored for `key`.
pub async fn rows_for(connection: &str, key: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(connection, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM webhook_events WHERE delivery_key = $1", &[&key])
        .await
        .unwrap()
        .get(0)
}

/// A metric's value from the text format.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("metric {name} not exposed"))
}
