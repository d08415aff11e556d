//! The dispatcher against a real PostgreSQL: authentication, refusals,
//! dedupe under concurrent redelivery, 503 with the database down, metrics.

mod support;

use support::postgres::TempPostgres;
use support::{metric, push, push_with_token, rows_for, webhook, Dispatcher, MAX_BODY, SECRET};

#[tokio::test(flavor = "multi_thread")]
async fn authentication_methods_and_bad_requests() {
    let pg = TempPostgres::start();
    let d = Dispatcher::start(&pg.connection()).await;
    let client = reqwest::Client::new();

    let no_token = client
        .post(d.url("/webhook"))
        .header("X-Gitlab-Event", "Push Hook")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = push_with_token(&client, &d, "k-wrong", "not it").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(rows_for(&pg.connection(), "k-wrong").await, 0);
    let prefix = push_with_token(&client, &d, "k-prefix", &SECRET[..5])
        .send()
        .await
        .unwrap();
    assert_eq!(prefix.status(), 401);
    // A second token makes the request ambiguous, even when one of them is right.
    let two = push(&client, &d, "k-two")
        .header("X-Gitlab-Token", "not it")
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 401);
    assert_eq!(rows_for(&pg.connection(), "k-two").await, 0);

    let get = client.get(d.url("/webhook")).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let big = push(&client, &d, "k-big")
        .body(vec![b' '; MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);

    let bad_json = push(&client, &d, "k-json").body("{not json").send().await.unwrap();
    assert_eq!(bad_json.status(), 400);
    assert!(bad_json.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("JSON"));

    let unknown = webhook(&client, &d, "k-kind", SECRET, "Coffee Hook")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let mismatch = webhook(&client, &d, "k-kind", SECRET, "Issue Hook")
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), 400);
    let two_kinds = push(&client, &d, "k-kind")
        .header("X-Gitlab-Event", "Issue Hook")
        .send()
        .await
        .unwrap();
    assert_eq!(two_kinds.status(), 400);
    assert_eq!(rows_for(&pg.connection(), "k-kind").await, 0);

    let stored = push(&client, &d, "k-1").send().await.unwrap();
    assert_eq!(stored.status(), 202);
    assert_eq!(stored.headers()["x-trace-id"].len(), 32, "a trace id per request");
    let again = push(&client, &d, "k-1").send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["status"], "duplicate");
    assert_eq!(rows_for(&pg.connection(), "k-1").await, 1);

    // The Idempotency-Key, when present, is the delivery key.
    let a = push(&client, &d, "uuid-a")
        .header("Idempotency-Key", "idem-1")
        .send()
        .await
        .unwrap();
    let b = push(&client, &d, "uuid-b")
        .header("Idempotency-Key", "idem-1")
        .send()
        .await
        .unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 200));
    assert_eq!(rows_for(&pg.connection(), "idem-1").await, 1);

    assert_eq!(client.get(d.url("/health")).send().await.unwrap().status(), 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_redeliveries_are_stored_once() {
    let pg = TempPostgres::start();
    let d = Dispatcher::start(&pg.connection()).await;
    let client = reqwest::Client::new();
    let sends = (0..40).map(|_| push(&client, &d, "same-event").send());
    let statuses: Vec<u16> = futures_join_all(sends)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 39, "{statuses:?}");
    assert_eq!(rows_for(&pg.connection(), "same-event").await, 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_means_503_and_nothing_acknowledged() {
    let mut pg = TempPostgres::start();
    let d = Dispatcher::start(&pg.connection()).await;
    let client = reqwest::Client::new();
    pg.stop();
    let refused = push(&client, &d, "while-down").send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(client.get(d.url("/health")).send().await.unwrap().status(), 503);
    pg.start_server();
    assert_eq!(
        rows_for(&pg.connection(), "while-down").await,
        0,
        "a 503 stored nothing"
    );
    // GitLab retries; once the database is back the same delivery is stored.
    let retried = push(&client, &d, "while-down").send().await.unwrap();
    assert_eq!(retried.status(), 202);
    assert_eq!(rows_for(&pg.connection(), "while-down").await, 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_accepted_and_rejected_requests() {
    let pg = TempPostgres::start();
    let d = Dispatcher::start(&pg.connection()).await;
    let client = reqwest::Client::new();
    let scrape = || async {
        client
            .get(d.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    assert_eq!(push(&client, &d, "m-1").send().await.unwrap().status(), 202);
    assert_eq!(push(&client, &d, "m-1").send().await.unwrap().status(), 200);
    assert_eq!(
        push_with_token(&client, &d, "m-2", "bad")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let after = scrape().await;
    let rise = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(rise("webhook_requests_total"), 3.0);
    assert_eq!(rise("webhook_errors_total"), 1.0);
    assert_eq!(rise("webhook_events_processed_total"), 1.0);
    assert_eq!(rise("webhook_events_deduplicated_total"), 1.0);
    assert_eq!(rise("webhook_duration_seconds_count"), 3.0);
    assert!(metric(&after, "webhook_dispatcher_uptime_seconds") > 0.0);
    d.stop().await;
}

/// Runs futures concurrently (tokio has no join_all of its own).
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
