//! A run's own figures in Prometheus' text format, pushed to a Pushgateway so
//! a P2 stack can chart the test runs themselves.

use std::fmt::Write;
use std::time::Duration;

use crate::report::{Outcome, RunReport};

/// The Pushgateway job the figures are pushed under.
pub const JOB: &str = "rave_harness";

/// The run as Prometheus text exposition: case results and durations, boot
/// stage times, QEMU's peak RSS and CPU time per guest, and the totals.
pub fn render(run: &RunReport) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let case_labels = |r: &crate::report::CaseRecord| {
        format!(
            "profile=\"{}\",suite=\"{}\",case=\"{}\",kind=\"{}\"",
            r.profile,
            escape(&r.suite),
            escape(&r.case),
            match r.kind {
                crate::report::TrialKind::Case => "case",
                crate::report::TrialKind::Fault => "fault",
            }
        )
    };
    let ran: Vec<_> = run
        .records
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Ignored { .. }))
        .collect();
    family(
        "rave_case_passed",
        "1 when the case proved its claim, 0 when it failed.",
        "gauge",
        ran.iter()
            .map(|r| (case_labels(r), f64::from(u8::from(r.outcome == Outcome::Passed))))
            .collect(),
    );
    family(
        "rave_case_duration_seconds",
        "How long the case took.",
        "gauge",
        ran.iter().map(|r| (case_labels(r), secs(r.duration))).collect(),
    );
    family(
        "rave_boot_stage_seconds",
        "When a guest reached a boot stage, from QEMU's start.",
        "gauge",
        run.guests
            .iter()
            .flat_map(|g| {
                g.boot.iter().map(move |s| {
                    (
                        format!(
                            "guest=\"{}\",profile=\"{}\",stage=\"{}\"",
                            escape(&g.name),
                            g.profile,
                            escape(&s.stage)
                        ),
                        secs(s.at),
                    )
                })
            })
            .collect(),
    );
    let guest_labels =
        |g: &crate::report::GuestReport| format!("guest=\"{}\",profile=\"{}\"", escape(&g.name), g.profile);
    family(
        "rave_qemu_peak_rss_bytes",
        "QEMU's peak resident memory.",
        "gauge",
        run.guests
            .iter()
            .map(|g| (guest_labels(g), g.qemu_peak_rss_bytes as f64))
            .collect(),
    );
    family(
        "rave_qemu_cpu_seconds",
        "QEMU's CPU time.",
        "gauge",
        run.guests
            .iter()
            .map(|g| (guest_labels(g), secs(g.qemu_cpu_time)))
            .collect(),
    );
    family(
        "rave_run_cases",
        "Trials of the run by result.",
        "gauge",
        vec![
            ("result=\"passed\"".into(), run.passed() as f64),
            ("result=\"failed\"".into(), run.failed() as f64),
            ("result=\"ignored\"".into(), run.ignored() as f64),
        ],
    );
    family(
        "rave_run_duration_seconds",
        "Wall time of the run.",
        "gauge",
        vec![(String::new(), secs(run.duration))],
    );
    out
}

/// Pushes `run` to the Pushgateway at `url` (e.g. `http://127.0.0.1:9091`),
/// replacing the job's previous figures.
pub fn push(url: &str, run: &RunReport, timeout: Duration) -> Result<(), String> {
    let endpoint = format!("{}/metrics/job/{JOB}", url.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("making an HTTP client: {e}"))?;
    let response = client
        .put(&endpoint)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(render(run))
        .send()
        .map_err(|e| format!("pushing to {endpoint}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        return Err(format!("pushing to {endpoint}: HTTP {status}: {}", body.trim()));
    }
    Ok(())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_of_a_fixed_run() {
        insta::assert_snapshot!(render(&crate::report::tests::sample()));
    }
}
