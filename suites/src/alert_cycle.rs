//! An alert's whole life in a P2 guest, run as a fault-style trial on a
//! fresh guest (`fault::p2::p2_observability::alert_fires_and_resolves`):
//! the pushgateway stopped makes `ServiceDown` pending, then firing once its
//! `for` has passed (not before), shown by the System Health dashboard's
//! "Firing alerts" panel; started again, the alert resolves.
//!
//! It takes the rule's `for` (2 min) plus a few scrape and evaluation
//! intervals (30 s each in SAFE mode): about 3 to 4.5 minutes.

use std::time::Duration;

use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::retry::Poll;
use rave_harness::{quote, Machine, MachineError};
use serde_json::Value;

use crate::checks::{backends_ready, prometheus_api, rave_image, unit_of, SCRAPE_WAIT};
use crate::dashboards::{panel_queries, PROVEN_ELSEWHERE};

/// The trial's case name (in the p2_observability suite).
pub const TRIAL: &str = "alert_fires_and_resolves";
/// The alert it drives, and the scrape job it takes down for it.
const ALERT: &str = "ServiceDown";
const JOB: &str = "pushgateway";

/// The rule's `for` as the contract sets it (shared/spec/images.md: up == 0 for 2m).
pub const SERVICE_DOWN_FOR: Duration = Duration::from_secs(120);

/// The trial: pending, firing once its `for` has passed by Prometheus's own
/// clock (not before, not much after), on the dashboard, resolved. Each wait
/// is bounded by the rule's figures and the image's scrape interval, and
/// says what it last saw.
pub fn alert_fires_and_resolves(machine: &Machine) -> CheckResult {
    backends_ready(machine, &[("prometheus", 9090), ("pushgateway", 9091)])?;
    let hold = rule_for(machine)?;
    expect(
        hold == SERVICE_DOWN_FOR,
        &format!("{ALERT}'s `for` {SERVICE_DOWN_FOR:?} as the contract sets it"),
        format!("{hold:?}"),
        String::new,
    )?;
    let interval = scrape_interval(machine)?;
    // A scrape to see the target's change and an evaluation to see that,
    // each up to one interval away, and room for a busy host.
    let react = SCRAPE_WAIT + interval * 2;
    let selector = format!("ALERTS{{alertname=\"{ALERT}\",job=\"{JOB}\"}}");
    // A guest just booted may still hold an alert from before the
    // pushgateway listened: the trial starts from none.
    wait_for_resolved(machine, &selector, react).map_err(|e| {
        CheckError::harness(format!(
            "the trial needs no {ALERT} alert for job {JOB} at its start: {}",
            e.message()
        ))
    })?;
    let unit = unit_of(machine, "pushgateway")?;
    machine.succeed(&format!("sudo systemctl stop {}", quote(unit)))?;

    wait_for_state(machine, &selector, "pending", react)?;
    wait_for_state(machine, &selector, "firing", hold + react)?;
    // Prometheus's own times: when the alert became active, and the
    // evaluation that first saw it firing (the ALERTS sample's timestamp,
    // looked up at that step).
    let active_at = active_at(machine)?;
    let fired_at = first_firing(machine, &selector, active_at)?;
    let held = fired_at - active_at;
    // Sample timestamps are whole milliseconds; an evaluation may slip by
    // one interval on a busy host.
    let (least, most) = (hold.as_secs_f64() - 0.01, (hold + interval * 2).as_secs_f64() + 1.0);
    expect(
        held >= least && held <= most,
        &format!(
            "{ALERT} firing once it had been pending for its `for` ({hold:?}), within two evaluations ({interval:?} each) after"
        ),
        format!("firing {held:.1} s after it became active"),
        String::new,
    )?;
    let panel = firing_panel_shows(machine)?;
    expect(
        panel.iter().any(|(name, job)| name == ALERT && job == JOB),
        &format!("the \"Firing alerts\" panel to show {ALERT} for job {JOB}"),
        format!("{panel:?}"),
        String::new,
    )?;

    machine.succeed(&format!("sudo systemctl start {}", quote(unit)))?;
    // The step log keeps how long each stage took.
    wait_for_resolved(machine, &selector, react)
}

/// When the alert became active (pending), from Prometheus's alerts API, as Unix seconds.
fn active_at(machine: &Machine) -> Result<f64, CheckError> {
    let alerts = prometheus_api(machine, "/api/v1/alerts")?;
    let at = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["labels"]["alertname"] == ALERT && a["labels"]["job"] == JOB)
        .and_then(|a| a["activeAt"].as_str())
        .ok_or_else(|| {
            CheckError::failed(format!(
                "expected {ALERT} for job {JOB} among Prometheus's alerts, saw {alerts}"
            ))
        })?;
    let script = format!("date -u -d {} +%s.%N", quote(at));
    machine
        .succeed(&script)?
        .trim()
        .parse()
        .map_err(|e| CheckError::harness(format!("activeAt {at:?} is not a time: {e}")))
}

/// The time of the first evaluation after `since` that recorded the alert firing.
fn first_firing(machine: &Machine, selector: &str, since: f64) -> Result<f64, CheckError> {
    let firing = selector.replace("}", ",alertstate=\"firing\"}");
    let script = format!(
        "curl -fsS -G --data-urlencode {} --data-urlencode start={since} --data-urlencode end=$(date +%s) --data-urlencode step=1 http://127.0.0.1:9090/api/v1/query_range",
        quote(&format!("query=timestamp({firing})"))
    );
    let text = machine.succeed(&script)?;
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| CheckError::harness(format!("Prometheus's range answer is not JSON ({e}): {text}")))?;
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(|v| v[1].as_str()?.parse::<f64>().ok())
        .fold(None, |first: Option<f64>, t| Some(first.map_or(t, |f| f.min(t))))
        .ok_or_else(|| {
            CheckError::failed(format!(
                "expected a firing sample of {selector} since the alert became active, saw {text}"
            ))
        })
}

/// The loaded rule's `for`, from Prometheus's rules API.
fn rule_for(machine: &Machine) -> Result<Duration, CheckError> {
    let rules = prometheus_api(machine, "/api/v1/rules?type=alert")?;
    let seconds = rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == ALERT)
        .and_then(|r| r["duration"].as_f64())
        .ok_or_else(|| CheckError::failed(format!("expected the alert rule {ALERT} loaded, Prometheus has none")))?;
    Ok(Duration::from_secs_f64(seconds))
}

/// The image's scrape (and evaluation) interval.
fn scrape_interval(machine: &Machine) -> Result<Duration, CheckError> {
    let image = rave_image(machine)?;
    let text = image.safe_values().scrape_interval.clone();
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .map(Duration::from_secs)
        .ok_or_else(|| CheckError::harness(format!("scrape interval {text:?} is not whole seconds")))
}

/// The `alertstate` of each series `selector` matches now.
fn alert_states(machine: &Machine, selector: &str) -> Result<Vec<String>, CheckError> {
    let answer = query(machine, selector)?;
    Ok(answer
        .iter()
        .filter_map(|s| s["metric"]["alertstate"].as_str().map(str::to_string))
        .collect())
}

/// The series `promql` returns now from the guest's Prometheus.
fn query(machine: &Machine, promql: &str) -> Result<Vec<Value>, CheckError> {
    let text = machine.succeed(&format!(
        "curl -fsS -G --data-urlencode {} http://127.0.0.1:9090/api/v1/query",
        quote(&format!("query={promql}"))
    ))?;
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| CheckError::harness(format!("Prometheus's answer to {promql} is not JSON ({e}): {text}")))?;
    Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Waits (at most `timeout`) until the alert is in `state`.
fn wait_for_state(machine: &Machine, selector: &str, state: &str, timeout: Duration) -> CheckResult {
    wait_for_states(
        machine,
        selector,
        &format!("{selector} to be {state}"),
        timeout,
        |states| states.iter().any(|s| s == state),
        &format!("{ALERT} {state} for job {JOB} while it is stopped"),
    )
}

/// Waits (at most `timeout`) until no series of the alert is left.
fn wait_for_resolved(machine: &Machine, selector: &str, timeout: Duration) -> CheckResult {
    wait_for_states(
        machine,
        selector,
        &format!("{selector} to resolve"),
        timeout,
        |states| states.is_empty(),
        &format!("no {ALERT} alert for job {JOB} while it runs"),
    )
}

/// Polls the alert's states until `done`; a wait whose last look could not
/// ask Prometheus is a harness error, one that saw the wrong states a failure.
fn wait_for_states(
    machine: &Machine,
    selector: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
    expected: &str,
) -> CheckResult {
    let mut could_not_ask = false;
    let waited = machine.wait_until(what, timeout, Duration::from_secs(5), || {
        match alert_states(machine, selector) {
            Ok(states) if done(&states) => Poll::Ready(()),
            Ok(states) => {
                could_not_ask = false;
                Poll::Pending(format!("alert states {states:?}"))
            }
            Err(e) => {
                could_not_ask = true;
                Poll::Pending(e.message().to_string())
            }
        }
    });
    match waited {
        Ok(()) => Ok(()),
        Err(MachineError::Timeout { waited, last_seen, .. }) if could_not_ask => Err(CheckError::harness(format!(
            "could not ask Prometheus whether {expected} within {waited:.1?}: {last_seen}"
        ))),
        Err(MachineError::Timeout { waited, last_seen, .. }) => Err(CheckError::failed(format!(
            "expected {expected} within {waited:.1?}, saw {last_seen}"
        ))),
        Err(other) => Err(CheckError::from(other)),
    }
}

/// The alerts the System Health dashboard's "Firing alerts" panel shows
/// now, by its own query: (alertname, job) of each.
fn firing_panel_shows(machine: &Machine) -> Result<Vec<(String, String)>, CheckError> {
    let (panel, _) = PROVEN_ELSEWHERE[0];
    let expr = panel_queries()
        .map_err(CheckError::harness)?
        .into_iter()
        .find(|q| q.panel == panel)
        .ok_or_else(|| CheckError::harness(format!("no dashboard panel {panel:?}")))?
        .expr;
    Ok(query(machine, &expr)?
        .iter()
        .map(|s| {
            let label = |k: &str| s["metric"][k].as_str().unwrap_or_default().to_string();
            (label("alertname"), label("job"))
        })
        .collect())
}
