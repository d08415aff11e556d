//! The three dashboards' panels, proven against the P2 guest's Prometheus
//! where Grafana is absent too: every panel's query, read from the dashboard
//! files the images provision (kept once, in `images/observability/dashboards/`),
//! must return a series.

use std::time::Duration;

use rave_harness::outcome::{CheckError, CheckResult};
use rave_harness::retry::{retry, Deadline, Poll, RetryError};
use rave_harness::{quote, Machine, MachineError};
use serde_json::Value;

use rave_harness::steps::step;

use crate::checks::{backends_ready, SCRAPE_WAIT};

/// The dashboard files, as the images provision them.
pub const DASHBOARDS: &[(&str, &str)] = &[
    (
        "project-health.json",
        include_str!("../../images/observability/dashboards/project-health.json"),
    ),
    (
        "agent-performance.json",
        include_str!("../../images/observability/dashboards/agent-performance.json"),
    ),
    (
        "system-health.json",
        include_str!("../../images/observability/dashboards/system-health.json"),
    ),
];

/// Panels that are empty on a healthy system, and the trial that proves
/// them instead: the firing alerts, while an alert fires.
pub const PROVEN_ELSEWHERE: &[(&str, &str)] =
    &[("Firing alerts", "fault::p2::p2_observability::alert_fires_and_resolves")];

/// How long the panels get to show a series: two scrapes at SAFE mode's
/// 30 s (a query over `[5m]` needs two samples, and a restored guest's are
/// old), and room for other cases holding the guest alone meanwhile.
pub const PANELS_WAIT: Duration = Duration::from_secs(SCRAPE_WAIT.as_secs() + 45);

/// Scraped after the check pushes it, so the pushed-job panel has a series
/// (it is empty until some job has pushed, as on a new system).
const PUSHED_JOB: &str = "rave-dashboards";

/// One panel's query.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelQuery {
    /// The dashboard's title.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    /// The PromQL of one of its targets.
    pub expr: String,
}

impl std::fmt::Display for PanelQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}: `{}`", self.dashboard, self.panel, self.expr)
    }
}

/// Every query of every panel of [`DASHBOARDS`], in their order.
///
/// # Errors
/// A file that is not a dashboard, or a panel target without `expr`.
pub fn panel_queries() -> Result<Vec<PanelQuery>, String> {
    let mut out = Vec::new();
    for (file, text) in DASHBOARDS {
        let dashboard: Value = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let title = dashboard["title"].as_str().ok_or_else(|| format!("{file}: no title"))?;
        let panels = dashboard["panels"]
            .as_array()
            .ok_or_else(|| format!("{file}: no panels"))?;
        for panel in panels {
            let name = panel["title"].as_str().unwrap_or("(untitled)");
            let targets = panel["targets"]
                .as_array()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("{file}: panel {name:?} has no targets"))?;
            for target in targets {
                let expr = target["expr"]
                    .as_str()
                    .filter(|e| !e.trim().is_empty())
                    .ok_or_else(|| format!("{file}: panel {name:?} has a target without a query"))?;
                out.push(PanelQuery {
                    dashboard: title.to_string(),
                    panel: name.to_string(),
                    expr: expr.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `p2_observability::dashboard_queries`: every panel query of the three
/// dashboards (but [`PROVEN_ELSEWHERE`]) returns at least one series from
/// the guest's Prometheus within [`PANELS_WAIT`] (queries over `[5m]` need
/// two scrapes after a guest is restored). A query Prometheus refuses fails
/// at once; the panels still empty at the end are named with their query.
pub fn dashboard_queries(machine: &Machine) -> CheckResult {
    backends_ready(machine, &[("prometheus", 9090), ("pushgateway", 9091)])?;
    let queries: Vec<PanelQuery> = panel_queries()
        .map_err(CheckError::harness)?
        .into_iter()
        .filter(|q| !PROVEN_ELSEWHERE.iter().any(|(panel, _)| *panel == q.panel))
        .collect();
    machine.succeed(&format!(
        "printf 'rave_dashboards_pushed 1\\n' | curl -fsS --data-binary @- http://127.0.0.1:9091/metrics/job/{PUSHED_JOB}"
    ))?;
    let mut empty: Vec<PanelQuery> = queries.clone();
    // Whether the last look could not ask at all (the guest or Prometheus not
    // answering): a wait that ends so is a harness error, not a finding.
    let mut could_not_ask = false;
    let waited = step("waiting for every dashboard panel's query to return a series", || {
        retry(Deadline::new(PANELS_WAIT, Duration::from_secs(3)), || {
            let answers = match series_counts(machine, &empty) {
                Ok(answers) => answers,
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(CheckError::from(e)),
                Err(e) => {
                    could_not_ask = true;
                    return Poll::Pending(format!("{e}; still empty: {}", list(&empty)));
                }
            };
            let mut refused = Vec::new();
            let mut unanswered = Vec::new();
            let mut still = Vec::new();
            for (query, answer) in empty.iter().zip(answers) {
                match answer {
                    Answer::Series(0) => still.push(query.clone()),
                    Answer::Series(_) => {}
                    Answer::Refused(why) => refused.push(format!("{query}: {why}")),
                    Answer::Unanswered(why) => {
                        unanswered.push(format!("{query}: {why}"));
                        still.push(query.clone());
                    }
                }
            }
            if !refused.is_empty() {
                return Poll::Abort(CheckError::failed(format!(
                    "expected Prometheus to accept every dashboard panel's query, it refused:\n{}",
                    refused.join("\n")
                )));
            }
            could_not_ask = !unanswered.is_empty();
            empty = still;
            if empty.is_empty() {
                Poll::Ready(())
            } else if unanswered.is_empty() {
                Poll::Pending(list(&empty))
            } else {
                Poll::Pending(format!("{}; not answered: {}", list(&empty), unanswered.join("; ")))
            }
        })
    });
    waited.map_err(|e| match e {
        RetryError::Aborted(failure) => failure,
        RetryError::Expired { waited, last_seen } if could_not_ask => CheckError::harness(format!(
            "could not ask Prometheus every dashboard panel's query within {waited:.1?}: {last_seen}\n"
        )),
        RetryError::Expired { waited, last_seen } => CheckError::failed(format!(
            "expected every dashboard panel's query to return a series from Prometheus (waited {waited:.1?}), these returned none: {last_seen}\n"
        )),
    })
}

/// What Prometheus said to one query.
#[derive(Debug, PartialEq)]
enum Answer {
    /// It ran the query: so many series.
    Series(usize),
    /// It refused the query itself (`bad_data`: not valid PromQL).
    Refused(String),
    /// No answer to judge (not ready, a timeout, not JSON): ask again.
    Unanswered(String),
}

/// Asks each query in one command; each answer is framed by a line of its
/// own index and curl's exit status, so an empty or broken body cannot
/// shift the answers onto other queries.
fn series_counts(machine: &Machine, queries: &[PanelQuery]) -> Result<Vec<Answer>, MachineError> {
    let script: String = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            format!(
                "body=$(curl -sS -m 20 -G --data-urlencode {} http://127.0.0.1:9090/api/v1/query 2>&1) && s=0 || s=$?\nprintf '@@rave-query %s %s\\n%s\\n' {i} \"$s\" \"$body\"\n",
                quote(&format!("query={}", q.expr))
            )
        })
        .collect();
    let out = machine.succeed(&script)?;
    Ok(parse_answers(&out, queries.len()))
}

/// The answers of [`series_counts`]' output, one per query in order.
fn parse_answers(out: &str, count: usize) -> Vec<Answer> {
    let mut bodies: Vec<Option<(String, String)>> = vec![None; count];
    let mut current: Option<usize> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("@@rave-query ") {
            let mut parts = rest.splitn(2, ' ');
            let index = parts
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < count);
            let status = parts.next().unwrap_or("?").to_string();
            current = index;
            if let Some(i) = index {
                bodies[i] = Some((status, String::new()));
            }
        } else if let Some((_, body)) = current.and_then(|i| bodies[i].as_mut()) {
            body.push_str(line);
            body.push('\n');
        }
    }
    bodies
        .into_iter()
        .map(|b| match b {
            None => Answer::Unanswered("no answer in the output".into()),
            Some((status, body)) if status != "0" => {
                Answer::Unanswered(format!("curl exited {status}: {}", body.trim()))
            }
            Some((_, body)) => match serde_json::from_str::<Value>(body.trim()) {
                Err(e) => Answer::Unanswered(format!("not JSON ({e}): {}", body.trim())),
                Ok(answer) if answer["status"] == "success" => {
                    Answer::Series(answer["data"]["result"].as_array().map_or(0, Vec::len))
                }
                Ok(answer) if answer["errorType"] == "bad_data" => {
                    Answer::Refused(answer["error"].as_str().unwrap_or_default().to_string())
                }
                Ok(answer) => Answer::Unanswered(format!(
                    "{}: {}",
                    answer["errorType"].as_str().unwrap_or("error"),
                    answer["error"].as_str().unwrap_or_default()
                )),
            },
        })
        .collect()
}

fn list(queries: &[PanelQuery]) -> String {
    queries.iter().map(|q| format!("\n  {q}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_of_the_three_dashboards_has_a_query() {
        let queries = panel_queries().unwrap();
        let dashboards: std::collections::BTreeSet<&str> = queries.iter().map(|q| q.dashboard.as_str()).collect();
        assert_eq!(
            dashboards.into_iter().collect::<Vec<_>>(),
            ["Agent Performance", "Project Health", "System Health"]
        );
        for (panel, _) in PROVEN_ELSEWHERE {
            assert!(queries.iter().any(|q| q.panel == *panel), "no panel {panel:?}");
        }
        assert!(queries.len() >= 10, "{queries:?}");
    }

    #[test]
    fn each_answer_is_read_against_its_own_query() {
        let out = "@@rave-query 0 0\n{\"status\":\"success\",\"data\":{\"result\":[{},{}]}}\n\
                   @@rave-query 1 22\n\n\
                   @@rave-query 2 0\n{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"parse error\"}\n\
                   @@rave-query 3 0\nService Unavailable\n";
        let answers = parse_answers(out, 5);
        assert_eq!(answers[0], Answer::Series(2));
        assert!(matches!(&answers[1], Answer::Unanswered(why) if why.contains("curl exited 22")));
        assert_eq!(answers[2], Answer::Refused("parse error".into()));
        assert!(matches!(&answers[3], Answer::Unanswered(why) if why.contains("not JSON")));
        assert!(matches!(&answers[4], Answer::Unanswered(_)));
    }

    #[test]
    fn the_design_s_panels_are_there() {
        let queries = panel_queries().unwrap();
        for needle in [
            "pg_stat_activity_count",
            "nginx_connections_active",
            "rave_unit_memory_working_set_bytes",
            "histogram_quantile(0.99",
            "webhook_events_processed_total",
            "ALERTS",
        ] {
            assert!(
                queries.iter().any(|q| q.expr.contains(needle)),
                "no panel queries {needle}"
            );
        }
    }
}
