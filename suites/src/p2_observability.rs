//! p2-observability: Prometheus healthy with the SAFE-mode values it was
//! built with, every target up, node exporter truthful, webhook metrics
//! counted and scraped, the pushgateway scraped, limits and alert rules in place.

use std::time::Duration;

use rave_harness::machine::quote;
use rave_harness::retry::{retry, Deadline, Poll, RetryError};
use rave_harness::Machine;
use serde_json::Value;

use crate::failure::{expect, CaseFailure, CaseResult};
use crate::http_health::{fresh_delivery_key, post_push, webhook_secret};
use crate::systemd_services::{bytes, service_is_healthy};

/// The scrape jobs the contract configures.
pub const JOBS: &[&str] = &["prometheus", "node", "pushgateway", "webhook-dispatcher"];
/// The alert rules the contract loads.
pub const ALERTS: &[&str] = &[
    "HighMemoryUsage",
    "HighCPUUsage",
    "HighDiskUsage",
    "ServiceDown",
    "WebhookErrorRate",
];
/// Long enough for two scrapes at SAFE mode's 30 s interval.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(75);

/// `p2_observability::prometheus_health`: healthy and ready, with the
/// retention and scrape interval of the SAFE mode the image was built with.
pub fn prometheus_health(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "prometheus")?;
    // A (re)started Prometheus answers only after it has loaded its data.
    machine.wait_until_succeeds("curl -fsS -o /dev/null http://127.0.0.1:9090/-/ready", SCRAPE_WAIT)?;
    for path in ["/-/healthy", "/-/ready"] {
        let code = machine.succeed(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:9090{path}"
        ))?;
        expect(
            code == "200",
            &format!("Prometheus {path} to answer 200"),
            code,
            String::new,
        )?;
    }
    let (retention, interval) = if machine.image().manifest.safe_mode {
        ("3d", "30s")
    } else {
        ("7d", "15s")
    };
    let flags = prometheus_api(machine, "/api/v1/status/flags")?;
    let seen = flags["storage.tsdb.retention.time"]
        .as_str()
        .unwrap_or("(unset)")
        .to_string();
    expect(
        seen == retention,
        &format!("retention {retention} (SAFE={})", machine.image().manifest.safe_mode),
        &seen,
        String::new,
    )?;
    let config = prometheus_api(machine, "/api/v1/status/config")?;
    let yaml = config["yaml"].as_str().unwrap_or_default();
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("scrape_interval:"))
        .unwrap_or("(none)")
        .trim()
        .to_string();
    expect(
        line == format!("scrape_interval: {interval}"),
        &format!("global scrape_interval {interval}"),
        line,
        String::new,
    )
}

/// `p2_observability::prometheus_targets`: every configured job's targets
/// are up in a scrape newer than the case's start, within a bounded wait.
///
/// A scrape that timed out while the host was busy is looked at again at the
/// next scrape; a target that refuses the connection, or a job with no
/// target, fails at once.
pub fn prometheus_targets(machine: &Machine) -> CaseResult {
    crate::http_health::backends_ready(
        machine,
        &[
            ("prometheus", 9090),
            ("node-exporter", 9100),
            ("pushgateway", 9091),
            ("webhook-dispatcher", 3001),
        ],
    )?;
    // Health is as old as the last scrape: judge only scrapes newer than now.
    let started: f64 = machine
        .succeed("date +%s.%N")?
        .trim()
        .parse()
        .map_err(|e| CaseFailure::new(format!("the guest's `date +%s.%N` is not a number: {e}")))?;
    let expected =
        format!("every target of {JOBS:?} up in a scrape newer than the case's start (waited up to {SCRAPE_WAIT:?})");
    let waited = retry(Deadline::new(SCRAPE_WAIT, Duration::from_secs(2)), || {
        let jobs = match target_health(machine, started) {
            Ok(jobs) => jobs,
            Err(e) => return Poll::Abort(e),
        };
        let seen = jobs
            .iter()
            .map(|(job, health)| format!("{job}: {health}"))
            .collect::<Vec<_>>()
            .join(", ");
        if jobs.iter().all(|(_, h)| *h == TargetHealth::Up) {
            Poll::Ready(())
        } else if jobs.iter().any(|(_, h)| h.is_final()) {
            Poll::Abort(CaseFailure::new(format!("expected {expected}, saw {seen}\n")))
        } else {
            Poll::Pending(seen)
        }
    });
    waited.map_err(|e| match e {
        RetryError::Aborted(failure) => failure,
        RetryError::Expired { waited, last_seen } => {
            CaseFailure::new(format!("expected {expected}, saw {last_seen} (after {waited:.1?})\n"))
        }
    })
}

/// What a scrape job's targets looked like, judged on scrapes newer than a start.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetHealth {
    /// Every target was scraped since the start, and answered.
    Up,
    /// A target has not been scraped since the start; its last state is kept.
    NotScrapedSince(String),
    /// A target was scraped since the start and failed, with Prometheus' error.
    Down(String),
    /// Prometheus has no target for the job.
    NotConfigured,
}

impl TargetHealth {
    /// Whether no later scrape can make the job up: no target, or nothing
    /// listening where it is scraped.
    pub fn is_final(&self) -> bool {
        match self {
            TargetHealth::NotConfigured => true,
            TargetHealth::Down(error) => error.contains("connection refused"),
            _ => false,
        }
    }
}

impl std::fmt::Display for TargetHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetHealth::Up => f.write_str("up"),
            TargetHealth::NotScrapedSince(last) => write!(f, "not scraped since the case began (last: {last})"),
            TargetHealth::Down(error) => write!(f, "down ({error})"),
            TargetHealth::NotConfigured => f.write_str("not configured"),
        }
    }
}

/// Each of [`JOBS`] with the health of its targets in scrapes newer than `since` (guest epoch seconds).
fn target_health(machine: &Machine, since: f64) -> Result<Vec<(&'static str, TargetHealth)>, CaseFailure> {
    // Timestamps first: the targets read after them are never older than a scrape judged fresh.
    let scraped = prometheus_api(machine, "/api/v1/query?query=timestamp(up)")?;
    let targets = prometheus_api(machine, "/api/v1/targets?state=active")?;
    let scraped_at = |job: &Value, instance: &Value| -> Option<f64> {
        scraped["result"].as_array()?.iter().find_map(|r| {
            (r["metric"]["job"] == *job && r["metric"]["instance"] == *instance)
                .then(|| r["value"][1].as_str()?.parse().ok())
                .flatten()
        })
    };
    let all = targets["activeTargets"].as_array().cloned().unwrap_or_default();
    Ok(JOBS
        .iter()
        .map(|job| {
            let mine: Vec<&Value> = all.iter().filter(|t| t["labels"]["job"] == *job).collect();
            if mine.is_empty() {
                return (*job, TargetHealth::NotConfigured);
            }
            let mut health = TargetHealth::Up;
            for target in mine {
                let error = target["lastError"].as_str().unwrap_or_default();
                let url = target["scrapeUrl"].as_str().unwrap_or("?");
                let state = target["health"].as_str().unwrap_or("unknown");
                let fresh =
                    scraped_at(&target["labels"]["job"], &target["labels"]["instance"]).is_some_and(|at| at > since);
                let this = if !fresh {
                    TargetHealth::NotScrapedSince(format!("{state} {url} {error}").trim().to_string())
                } else if state == "up" {
                    TargetHealth::Up
                } else {
                    TargetHealth::Down(format!("{url}: {error}"))
                };
                // The worst target speaks for the job: down, then not scraped, then up.
                health = match (&health, &this) {
                    (TargetHealth::Down(_), _) => health,
                    (_, TargetHealth::Down(_)) => this,
                    (TargetHealth::NotScrapedSince(_), _) => health,
                    _ => this,
                };
            }
            (*job, health)
        })
        .collect())
}

/// `p2_observability::node_exporter`: `node_memory_MemTotal_bytes` equals the guest's MemTotal (±1%).
pub fn node_exporter(machine: &Machine) -> CaseResult {
    let exported = machine
        .succeed("curl -fsS http://127.0.0.1:9100/metrics | awk '$1 == \"node_memory_MemTotal_bytes\" { print $2 }'")?;
    let exported: f64 = exported
        .trim()
        .parse()
        .map_err(|_| CaseFailure::new(format!("node_memory_MemTotal_bytes not exported (saw {exported:?})")))?;
    let kb: f64 = machine
        .succeed("awk '$1 == \"MemTotal:\" { print $2 }' /proc/meminfo")?
        .trim()
        .parse()
        .map_err(|_| CaseFailure::new("no MemTotal in /proc/meminfo"))?;
    let actual = kb * 1024.0;
    expect(
        ((exported - actual) / actual).abs() <= 0.01,
        &format!("node_memory_MemTotal_bytes within 1% of MemTotal {actual}"),
        exported,
        String::new,
    )
}

/// `p2_observability::grafana_integration`: the Prometheus datasource and the
/// three dashboards are provisioned, and a query through Grafana returns `up`.
pub fn grafana_integration(machine: &Machine) -> CaseResult {
    let health = machine.succeed("curl -fsS http://127.0.0.1:3030/api/health")?;
    expect(health.contains("\"ok\""), "Grafana healthy", health, String::new)?;
    let search = machine.succeed("curl -fsS 'http://127.0.0.1:3030/api/search?type=dash-db'")?;
    for title in ["Project Health", "Agent Performance", "System Health"] {
        expect(
            search.contains(title),
            &format!("dashboard {title} provisioned"),
            &search,
            String::new,
        )?;
    }
    let query = machine
        .succeed("curl -fsS 'http://127.0.0.1:3030/api/datasources/proxy/uid/prometheus/api/v1/query?query=up'")?;
    expect(
        query.contains("\"__name__\":\"up\""),
        "the up series through Grafana's Prometheus datasource",
        query,
        String::new,
    )
}

/// `p2_observability::webhook_metrics`: one accepted and one rejected webhook
/// raise the request and error counters by exactly those counts, Prometheus
/// scrapes the new values, and a job metric pushed to the pushgateway is scraped too.
pub fn webhook_metrics(machine: &Machine) -> CaseResult {
    let read = || -> Result<(f64, f64), CaseFailure> {
        let text = machine.succeed("curl -fsS http://127.0.0.1:3001/metrics")?;
        Ok((
            metric(&text, "webhook_requests_total")?,
            metric(&text, "webhook_errors_total")?,
        ))
    };
    crate::http_health::backends_ready(
        machine,
        &[
            ("webhook-dispatcher", 3001),
            ("pushgateway", 9091),
            ("prometheus", 9090),
        ],
    )?;
    let secret = webhook_secret(machine)?;
    let key = fresh_delivery_key("rave-metrics");
    let send = |token: &str| post_push(machine, Some(token), &key);
    // The counters are the guest's: no other case's request may land in between.
    let (requests_after, errors_after) = machine.exclusively(|| -> Result<(f64, f64), CaseFailure> {
        let (requests_before, errors_before) = read()?;
        let accepted = send(&secret)?;
        expect(
            (200..300).contains(&accepted.status),
            "the valid webhook accepted",
            accepted.status,
            || accepted.describe(),
        )?;
        let rejected = send("wrong-token")?;
        expect(
            rejected.status == 401,
            "the webhook with a wrong token rejected (401)",
            rejected.status,
            || rejected.describe(),
        )?;
        let (requests_after, errors_after) = read()?;
        expect(
            requests_after - requests_before == 2.0,
            "webhook_requests_total to rise by 2",
            requests_after - requests_before,
            String::new,
        )?;
        expect(
            errors_after - errors_before == 1.0,
            "webhook_errors_total to rise by 1",
            errors_after - errors_before,
            String::new,
        )?;
        Ok((requests_after, errors_after))
    })??;
    // Pushed before any wait, so one scrape can carry all three figures.
    let pushed = 4242;
    machine.succeed(&format!(
        "printf 'rave_case_pushed {pushed}\\n' | curl -fsS --data-binary @- http://127.0.0.1:9091/metrics/job/rave-case"
    ))?;
    // Other cases may post after the section: a counter scraped at or above
    // its value after our requests proves a scrape that counted them.
    prometheus_sees(machine, "webhook_requests_total", ">=", requests_after)?;
    prometheus_sees(machine, "webhook_errors_total", ">=", errors_after)?;
    prometheus_sees(machine, "rave_case_pushed{job=\"rave-case\"}", "==", pushed as f64)
}

/// `p2_observability::safe_mode_constraints`: MemoryMax of prometheus (and
/// grafana, where the flavor has it) is the SAFE-mode value, MemoryCurrent is
/// under it, and the five alert rules are loaded.
pub fn safe_mode_constraints(machine: &Machine) -> CaseResult {
    let manifest = &machine.image().manifest;
    let (prometheus_max, grafana_max) = if manifest.safe_mode {
        ("256M", "128M")
    } else {
        ("512M", "256M")
    };
    let mut limits = vec![("prometheus", prometheus_max)];
    if manifest.unit("grafana").is_ok() {
        limits.push(("grafana", grafana_max));
    }
    for (component, limit) in limits {
        let unit = manifest.unit(component).map_err(CaseFailure::new)?;
        let props = rave_harness::machine::parse_properties(
            &machine.succeed(&format!("systemctl show -p MemoryMax -p MemoryCurrent {}", quote(unit)))?,
        );
        let max = props.get("MemoryMax").cloned().unwrap_or_default();
        let current = props.get("MemoryCurrent").and_then(|c| c.parse::<u64>().ok());
        let expected = bytes(limit).unwrap_or(0);
        expect(
            max == expected.to_string(),
            &format!("{unit} MemoryMax={limit} (SAFE={})", manifest.safe_mode),
            format!("MemoryMax={max}"),
            String::new,
        )?;
        expect(
            current.is_some_and(|c| c < expected),
            &format!("{unit} MemoryCurrent under {limit}"),
            format!("{current:?}"),
            String::new,
        )?;
    }
    let rules = prometheus_api(machine, "/api/v1/rules")?;
    let loaded: Vec<String> = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&&str> = ALERTS.iter().filter(|a| !loaded.iter().any(|l| l == **a)).collect();
    expect(
        missing.is_empty(),
        &format!("alert rules {ALERTS:?} loaded"),
        format!("missing {missing:?}, loaded {loaded:?}"),
        String::new,
    )
}

/// The `data` of a Prometheus API answer, fetched inside the guest.
fn prometheus_api(machine: &Machine, path: &str) -> Result<Value, CaseFailure> {
    let text = machine.succeed(&format!("curl -fsS {}", quote(&format!("http://127.0.0.1:9090{path}"))))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| CaseFailure::new(format!("Prometheus {path} is not JSON ({e}): {text}")))?;
    Ok(value["data"].clone())
}

/// Waits (bounded) until Prometheus's value of `query` compares to `value`
/// as `op` (a PromQL comparison such as `==` or `>=`) in a scrape it holds.
fn prometheus_sees(machine: &Machine, query: &str, op: &str, value: f64) -> CaseResult {
    let condition = format!("{query} {op} {}", format_value(value));
    // A comparison without `bool` keeps only the series that meet it: a non-empty result.
    let command = format!(
        "curl -fsS -G --data-urlencode {} http://127.0.0.1:9090/api/v1/query",
        quote(&format!("query={condition}")),
    );
    machine
        .wait_until(
            &format!("Prometheus to hold {condition}"),
            SCRAPE_WAIT,
            Duration::from_millis(500),
            || match machine.execute(&command) {
                Ok(out) if out.status == 0 => match serde_json::from_str::<Value>(&out.stdout) {
                    Ok(answer) if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) => Poll::Ready(()),
                    Ok(answer) => Poll::Pending(format!("no series meets it: {}", answer["data"])),
                    Err(e) => Poll::Pending(format!("Prometheus' answer is not JSON ({e}): {}", out.stdout)),
                },
                Ok(out) => Poll::Pending(format!("exit {}: {}", out.status, out.stderr.trim())),
                Err(e @ rave_harness::MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )
        .map(|_| ())
        .map_err(|e| {
            CaseFailure::new(format!(
                "expected Prometheus to scrape {condition} within {SCRAPE_WAIT:?}, it did not:\n{e}"
            ))
        })
}

/// Prometheus's text form of a sample value (integers without a fraction).
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// A sample's value from the Prometheus text format.
fn metric(text: &str, name: &str) -> Result<f64, CaseFailure> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| CaseFailure::new(format!("metric {name} not exposed by the dispatcher")))
}
