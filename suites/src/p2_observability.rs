//! p2-observability: Prometheus healthy with the SAFE-mode values it was
//! built with, every target up, node exporter truthful, webhook metrics
//! counted and scraped, the pushgateway scraped, limits and alert rules in place.

use std::time::Duration;

use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::retry::{retry, Deadline, Poll, RetryError};
use rave_harness::Machine;
use serde_json::Value;

use crate::case::{Case, Fault, OBSERVED};
use crate::checks::{
    backends_ready, bytes, edit_nginx_conf, fresh_delivery_key, override_unit, post_push, prometheus_api,
    prometheus_apis, prometheus_sees, rave_image, stop_unit, unit_of, webhook_secret, SCRAPE_WAIT,
};
use crate::dashboards::dashboard_queries;
use crate::systemd_services::service_is_healthy;

/// The suite's cases, each with its fault.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            suite: "p2_observability",
            name: "prometheus_health",
            profiles: OBSERVED,
            components: &["prometheus"],
            check: prometheus_health,
            fault: Fault {
                description: "Prometheus restarted with another retention",
                inject: |m| {
                    m.succeed("sudo sed -i 's/retention.time=[0-9a-z]*/retention.time=15d/' /etc/default/prometheus && sudo systemctl restart prometheus")
                        .map(|_| ())
                },
                must_say: &["retention", "15d"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "p2_observability",
            name: "prometheus_targets",
            profiles: OBSERVED,
            components: &[
                "prometheus",
                "pushgateway",
                "node-exporter",
                "webhook-dispatcher",
                "nginx-exporter",
                "postgres-exporter",
            ],
            check: prometheus_targets,
            fault: Fault {
                description: "the pushgateway target corrupted (scraped at a port nothing serves)",
                inject: |m| {
                    m.succeed("sudo sed -i \"s/127.0.0.1:9091/127.0.0.1:9092/\" /etc/prometheus/prometheus.yml && sudo systemctl reload prometheus")
                        .map(|_| ())
                },
                must_say: &["pushgateway: down", "9092"],
            },
            waits_long: true,
            // Past the targets: the nginx exporter up, but nginx's stub_status gone from under it.
            extra_faults: &[(
                "exporter_cannot_read",
                Fault {
                    description: "nginx's stub_status moved away from where the nginx exporter reads it",
                    inject: |m| edit_nginx_conf(m, "rave-status.conf", "s#location = /stub_status#location = /moved#"),
                    must_say: &[
                        "the exporter of nginx's stub_status answers but cannot read it",
                        "nginx_up",
                    ],
                },
            )],
        },
        Case {
            suite: "p2_observability",
            name: "node_exporter",
            profiles: OBSERVED,
            components: &["node-exporter"],
            check: node_exporter,
            fault: Fault {
                description: "the node exporter stopped",
                inject: |m| stop_unit(m, "node-exporter"),
                must_say: &["node_memory_MemTotal_bytes"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "p2_observability",
            name: "grafana_integration",
            profiles: OBSERVED,
            components: &["grafana", "prometheus"],
            check: grafana_integration,
            fault: Fault {
                description: "a provisioned dashboard removed",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["Grafana"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "p2_observability",
            name: "webhook_metrics",
            profiles: OBSERVED,
            components: &["prometheus", "pushgateway", "webhook-dispatcher"],
            check: webhook_metrics,
            fault: Fault {
                description: "the webhook-dispatcher scrape job removed from Prometheus",
                inject: |m| {
                    m.succeed("sudo sed -i '/job_name: webhook-dispatcher/,$d' /etc/prometheus/prometheus.yml && sudo systemctl reload prometheus")
                        .map(|_| ())
                },
                must_say: &["to scrape webhook_requests_total"],
            },
            waits_long: true,
            extra_faults: &[],
        },
        Case {
            suite: "p2_observability",
            name: "dashboard_queries",
            profiles: OBSERVED,
            components: &[
                "prometheus",
                "pushgateway",
                "node-exporter",
                "webhook-dispatcher",
                "nginx-exporter",
                "postgres-exporter",
                "unit-memory",
            ],
            check: dashboard_queries,
            fault: Fault {
                description: "the PostgreSQL exporter stopped, and scraped as down",
                inject: |m| {
                    stop_unit(m, "postgres-exporter")?;
                    // Its series go stale at the first failed scrape: only then is a panel empty.
                    m.wait_until_succeeds(
                        "curl -fsS -G --data-urlencode 'query=up{job=\"postgres\"} == 0' http://127.0.0.1:9090/api/v1/query | grep -F '\"job\":\"postgres\"' >/dev/null",
                        SCRAPE_WAIT,
                    )
                    .map(|_| ())
                },
                must_say: &[
                    "PostgreSQL connections by database",
                    "pg_stat_activity_count",
                    "returned none",
                ],
            },
            waits_long: true,
            extra_faults: &[],
        },
        Case {
            suite: "p2_observability",
            name: "safe_mode_constraints",
            profiles: OBSERVED,
            components: &["prometheus"],
            check: safe_mode_constraints,
            fault: Fault {
                description: "Prometheus's MemoryMax raised to 1G",
                inject: |m| override_unit(m, "prometheus", "[Service]\nMemoryMax=1G\n"),
                must_say: &["MemoryMax=256M", "MemoryMax=1073741824"],
            },
            waits_long: false,
            extra_faults: &[],
        },
    ]
}

/// The scrape jobs the contract configures.
pub const JOBS: &[&str] = &[
    "prometheus",
    "node",
    "pushgateway",
    "webhook-dispatcher",
    "nginx",
    "postgres",
];
/// What each exporter must say of what it watches, once its target is up:
/// its target answers even when it cannot reach nginx or PostgreSQL.
pub const EXPORTERS_REACH: &[(&str, &str)] = &[("nginx_up", "nginx's stub_status"), ("pg_up", "PostgreSQL")];
/// The alert rules the contract loads.
pub const ALERTS: &[&str] = &[
    "HighMemoryUsage",
    "HighCPUUsage",
    "HighDiskUsage",
    "ServiceDown",
    "WebhookErrorRate",
    "ServiceNearMemoryMax",
];

/// `p2_observability::prometheus_health`: healthy and ready, with the
/// retention and scrape interval of the SAFE mode the image was built with.
pub fn prometheus_health(machine: &Machine) -> CheckResult {
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
    let image = rave_image(machine)?;
    let safe = image.safe_values();
    let (retention, interval) = (safe.retention.as_str(), safe.scrape_interval.as_str());
    let flags = prometheus_api(machine, "/api/v1/status/flags")?;
    let seen = flags["storage.tsdb.retention.time"]
        .as_str()
        .unwrap_or("(unset)")
        .to_string();
    expect(
        seen == retention,
        &format!("retention {retention} (SAFE={})", image.properties.safe_mode),
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
pub fn prometheus_targets(machine: &Machine) -> CheckResult {
    backends_ready(
        machine,
        &[
            ("prometheus", 9090),
            ("node-exporter", 9100),
            ("pushgateway", 9091),
            ("webhook-dispatcher", 3001),
            ("nginx-exporter", 9113),
            ("postgres-exporter", 9187),
        ],
    )?;
    // Health is as old as the last scrape: judge only scrapes newer than now.
    let started: f64 = machine
        .succeed("date +%s.%N")?
        .trim()
        .parse()
        .map_err(|e| CheckError::harness(format!("the guest's `date +%s.%N` is not a number: {e}")))?;
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
            Poll::Abort(CheckError::failed(format!("expected {expected}, saw {seen}\n")))
        } else {
            Poll::Pending(seen)
        }
    });
    waited.map_err(|e| match e {
        RetryError::Aborted(failure) => failure,
        RetryError::Expired { waited, last_seen } => {
            CheckError::failed(format!("expected {expected}, saw {last_seen} (after {waited:.1?})\n"))
        }
    })?;
    for (metric, watched) in EXPORTERS_REACH {
        prometheus_sees(machine, metric, "==", 1.0).map_err(|e| CheckError {
            message: format!("the exporter of {watched} answers but cannot read it: {}", e.message),
            ..e
        })?;
    }
    Ok(())
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
fn target_health(machine: &Machine, since: f64) -> Result<Vec<(&'static str, TargetHealth)>, CheckError> {
    // Timestamps first: the targets read after them are never older than a scrape judged fresh.
    let answers = prometheus_apis(
        machine,
        &["/api/v1/query?query=timestamp(up)", "/api/v1/targets?state=active"],
    )?;
    let [scraped, targets]: [Value; 2] = answers
        .try_into()
        .map_err(|_| CheckError::harness("Prometheus' two answers (timestamps, targets) did not both come"))?;
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
pub fn node_exporter(machine: &Machine) -> CheckResult {
    let exported = machine
        .succeed("curl -fsS http://127.0.0.1:9100/metrics | awk '$1 == \"node_memory_MemTotal_bytes\" { print $2 }'")?;
    let exported: f64 = exported
        .trim()
        .parse()
        .map_err(|_| CheckError::failed(format!("node_memory_MemTotal_bytes not exported (saw {exported:?})")))?;
    let kb: f64 = machine
        .succeed("awk '$1 == \"MemTotal:\" { print $2 }' /proc/meminfo")?
        .trim()
        .parse()
        .map_err(|_| CheckError::harness("no MemTotal in /proc/meminfo"))?;
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
pub fn grafana_integration(machine: &Machine) -> CheckResult {
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
pub fn webhook_metrics(machine: &Machine) -> CheckResult {
    let read = || -> Result<(f64, f64), CheckError> {
        let text = machine.succeed("curl -fsS http://127.0.0.1:3001/metrics")?;
        Ok((
            metric(&text, "webhook_requests_total")?,
            metric(&text, "webhook_errors_total")?,
        ))
    };
    backends_ready(
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
    let (requests_after, errors_after) = machine.exclusively(|| -> Result<(f64, f64), CheckError> {
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
    // Pushed before any wait, so one scrape can carry all three figures; a
    // value of this run's own, so an earlier run's push left in the
    // pushgateway (an attached target) cannot stand in for it.
    let pushed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(4242, |d| d.as_nanos() % 1_000_000_000);
    machine.succeed(&format!(
        "printf 'rave_case_pushed {pushed}\\n' | curl -fsS --data-binary @- http://127.0.0.1:9091/metrics/job/rave-case"
    ))?;
    // Other cases may post after the section: a counter scraped at or above
    // its value after our requests proves a scrape that counted them.
    // Of the dispatcher's own job: a same-named series of another cannot stand in.
    prometheus_sees(
        machine,
        "webhook_requests_total{job=\"webhook-dispatcher\"}",
        ">=",
        requests_after,
    )?;
    prometheus_sees(
        machine,
        "webhook_errors_total{job=\"webhook-dispatcher\"}",
        ">=",
        errors_after,
    )?;
    prometheus_sees(machine, "rave_case_pushed{job=\"rave-case\"}", "==", pushed as f64)
}

/// `p2_observability::safe_mode_constraints`: MemoryMax of prometheus (and
/// grafana, where the flavor has it) is the SAFE-mode value, MemoryCurrent is
/// under it, and the contract's alert rules ([`ALERTS`]) are loaded.
pub fn safe_mode_constraints(machine: &Machine) -> CheckResult {
    let image = rave_image(machine)?;
    let safe = image.safe_values();
    let mut limits = vec![("prometheus", safe.prometheus_memory_max.as_str())];
    if machine.image().manifest.unit("grafana").is_ok() {
        limits.push(("grafana", safe.grafana_memory_max.as_str()));
    }
    for (component, limit) in limits {
        let unit = unit_of(machine, component)?;
        let props = machine.unit_properties(unit, &["MemoryMax", "MemoryCurrent"])?;
        let max = props["MemoryMax"].clone();
        let current = props["MemoryCurrent"].parse::<u64>().ok();
        let expected = bytes(limit).unwrap_or(0);
        expect(
            max == expected.to_string(),
            &format!("{unit} MemoryMax={limit} (SAFE={})", image.properties.safe_mode),
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

/// A sample's value from the Prometheus text format.
fn metric(text: &str, name: &str) -> Result<f64, CheckError> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| CheckError::failed(format!("metric {name} not exposed by the dispatcher")))
}
