//! A run's own figures in Prometheus' text format, pushed to a Pushgateway so
//! a P2 stack can chart the test runs themselves.

use std::fmt::Write;
use std::time::Duration;

use super::report::{RunReport, TrialRecord};
use super::trial::TrialKind;
use crate::facts::GuestReport;
use crate::outcome::{Outcome, Red};

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
    let case_labels = |r: &TrialRecord| {
        format!(
            "profile=\"{}\",suite=\"{}\",case=\"{}\",kind=\"{}\"",
            escape(&r.profile),
            escape(&r.suite),
            escape(&r.case),
            match r.kind {
                TrialKind::Case => "case",
                TrialKind::Fault => "fault",
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
        "1 when the case proved its claim on its first attempt, 0 when it was red (failed, harness error or timed out) or passed only on a rerun (flaky).",
        "gauge",
        ran.iter()
            .map(|r| (case_labels(r), f64::from(u8::from(r.outcome == Outcome::Passed && !r.is_flaky()))))
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
                            escape(&g.profile),
                            escape(&s.stage)
                        ),
                        secs(s.at),
                    )
                })
            })
            .collect(),
    );
    let guest_labels = |g: &GuestReport| format!("guest=\"{}\",profile=\"{}\"", escape(&g.name), escape(&g.profile));
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
            ("result=\"flaky\"".into(), run.flaky() as f64),
            ("result=\"failed\"".into(), run.red(Red::Failed) as f64),
            ("result=\"harness_error\"".into(), run.red(Red::HarnessError) as f64),
            ("result=\"timed_out\"".into(), run.red(Red::TimedOut) as f64),
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
        insta::assert_snapshot!(render(&super::super::report::tests::sample()));
    }
}

#[cfg(test)]
mod push_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};

    /// A one-shot HTTP server: answers `status` and hands back the request it got.
    fn one_shot(status: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
            )
            .unwrap();
            format!("{head}{}", String::from_utf8(body).unwrap())
        });
        (url, handle)
    }

    #[test]
    fn pushes_the_run_with_put_under_the_job() {
        let (url, server) = one_shot("200 OK");
        push(&url, &super::super::report::tests::sample(), Duration::from_secs(10)).unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("PUT /metrics/job/rave_harness HTTP/1.1"),
            "{request}"
        );
        assert!(request.contains("rave_case_passed{profile=\"p0\""), "{request}");
        assert!(request.contains("rave_run_duration_seconds 58"), "{request}");
    }

    #[test]
    fn a_refused_push_says_what_the_pushgateway_said() {
        let (url, server) = one_shot("400 Bad Request");
        let err = push(&url, &super::super::report::tests::sample(), Duration::from_secs(10)).unwrap_err();
        server.join().unwrap();
        assert!(err.contains("HTTP 400") && err.contains("no"), "{err}");
    }
}
