//! `webhook-load`: sends N signed GitLab push events to a dispatcher, some of
//! them redeliveries of an earlier event (same delivery key), from C
//! concurrent senders; prints requests per second and p50/p99 latency, and
//! writes the distinct keys it sent so the caller can check the database.
//! Not a timed test: it measures, the caller decides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Load a webhook dispatcher with signed events and redeliveries")]
struct Args {
    /// The dispatcher's /webhook URL (loopback only).
    #[arg(long)]
    url: String,
    /// File holding the X-Gitlab-Token secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// Requests to send in all.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Share of requests that redeliver an earlier event (0.0-1.0).
    #[arg(long, default_value_t = 0.2)]
    redeliveries: f64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Where to write the distinct delivery keys sent, one per line.
    #[arg(long)]
    keys_out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let host = reqwest::Url::parse(&args.url)?
        .host_str()
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "webhook-load sends only to loopback, not {host}"
    );
    let secret = std::fs::read_to_string(&args.secret_file)?
        .trim_end_matches('\n')
        .to_string();
    // Request i is a redelivery of event (i * 7919 mod i) when it falls in the
    // redelivered share; otherwise it is a new event. Deterministic, so runs compare.
    let redeliver_every = if args.redeliveries > 0.0 {
        (1.0 / args.redeliveries).round() as usize
    } else {
        0
    };
    let plan: Vec<String> = {
        let mut keys: Vec<String> = Vec::with_capacity(args.requests);
        for i in 0..args.requests {
            let key = if redeliver_every > 0 && i > 0 && i % redeliver_every == 0 {
                keys[(i * 7919) % i].clone()
            } else {
                format!("load-{i:08}")
            };
            keys.push(key);
        }
        keys
    };
    let mut distinct: Vec<String> = plan.clone();
    distinct.sort();
    distinct.dedup();
    std::fs::write(
        &args.keys_out,
        distinct.iter().map(|k| format!("{k}\n")).collect::<String>(),
    )?;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let queue = Arc::new(Mutex::new(plan.into_iter().enumerate()));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..args.concurrency {
        let (queue, client, url, secret) = (queue.clone(), client.clone(), args.url.clone(), secret.clone());
        senders.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let next = queue.lock().await.next();
                let Some((i, key)) = next else { break };
                let body = format!(
                    r#"{{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"{i:040x}","delivery":"{key}"}}"#
                );
                let sent = Instant::now();
                let status = client
                    .post(&url)
                    .header("X-Gitlab-Token", &secret)
                    .header("X-Gitlab-Event", "Push Hook")
                    .header("Idempotency-Key", &key)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                seen.push((sent.elapsed(), status));
            }
            seen
        }));
    }
    let mut results = Vec::new();
    for sender in senders {
        results.extend(sender.await?);
    }
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let stored = results.iter().filter(|(_, s)| *s == 202).count();
    let duplicate = results.iter().filter(|(_, s)| *s == 200).count();
    let other = results.len() - stored - duplicate;
    println!(
        "requests {} concurrency {} distinct events {}",
        results.len(),
        args.concurrency,
        distinct.len()
    );
    println!("answers: 202 stored {stored}, 200 duplicate {duplicate}, other {other}");
    println!(
        "wall {:.2} s, {:.0} requests/s",
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "latency p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    anyhow::ensure!(other == 0, "{other} requests were not answered 200/202");
    anyhow::ensure!(
        stored == distinct.len(),
        "{stored} answered stored, but {} distinct events were sent",
        distinct.len()
    );
    Ok(())
}
