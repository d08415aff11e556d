//! What a run found, for a person (the summary table) and a pipeline (JUnit
//! XML, JSON). Pure: records in, text out, so every rendering is snapshot-tested.
//!
//! The three kinds of red stay apart: a failed claim is a JUnit `<failure>`,
//! a harness error and a timeout are `<error>`s (with their type).

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use super::trial::TrialKind;
use super::xml_text::{self, MAX_MESSAGE, MAX_SYSTEM_OUT};
use crate::facts::{seconds, GuestReport};
use crate::outcome::{Outcome, Red};

/// One trial's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialRecord {
    /// The trial's full name (`p0::systemd_services::nginx`).
    #[serde(rename = "case")]
    pub name: String,
    /// The suite, e.g. `systemd_services`.
    pub suite: String,
    /// The case, e.g. `nginx`.
    #[serde(rename = "case_name")]
    pub case: String,
    /// The group (profile) it ran on.
    pub profile: String,
    /// Case or fault test.
    pub kind: TrialKind,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took (the boot of a fault test's guest included).
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Its step log, one line per step that ended.
    pub steps: Vec<String>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Every trial, in the order selected.
    pub records: Vec<TrialRecord>,
    /// Every guest's figures.
    pub guests: Vec<GuestReport>,
    /// Wall time of the run.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Why the run was cut short (its deadline, a signal), if it was: then
    /// trials that ran are red with that reason and those not started ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<String>,
}

impl RunReport {
    /// Trials that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// Trials ignored.
    pub fn ignored(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Ignored { .. }))
    }

    /// Trials red with `red`.
    pub fn red(&self, red: Red) -> usize {
        self.count(|o| o.red() == Some(red))
    }

    /// Trials red in any way.
    pub fn reds(&self) -> usize {
        self.count(|o| o.red().is_some())
    }

    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.records.iter().filter(|r| pick(&r.outcome)).count()
    }

    /// The table a person reads at the end of a run: one row per trial, then
    /// the ignored reasons, the guests' figures, the totals, and the first
    /// line of every red trial.
    pub fn summary(&self) -> String {
        let mut rows: Vec<[String; 4]> = vec![["case".into(), "profile".into(), "result".into(), "time".into()]];
        for r in &self.records {
            let case = match r.kind {
                TrialKind::Case => format!("{}::{}", r.suite, r.case),
                TrialKind::Fault => format!("fault::{}::{}", r.suite, r.case),
            };
            rows.push([
                case,
                r.profile.clone(),
                r.outcome.label().into(),
                format!("{:.1} s", r.duration.as_secs_f64()),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, row) in rows.iter().enumerate() {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
            out.push_str(line.trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 6));
                out.push('\n');
            }
        }
        for r in &self.records {
            if let Outcome::Ignored { reason } = &r.outcome {
                out.push_str(&format!("ignored {}: {}\n", r.name, first_line(reason)));
            }
        }
        for g in &self.guests {
            out.push_str(&guest_line(g));
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} harness errors, {} timed out, {} ignored in {:.1} s\n",
            self.passed(),
            self.red(Red::Failed),
            self.red(Red::HarnessError),
            self.red(Red::TimedOut),
            self.ignored(),
            self.duration.as_secs_f64()
        ));
        if let Some(reason) = &self.cut_short {
            out.push_str(&format!(
                "the {reason}: the trials above that were not finished say so\n"
            ));
        }
        for r in &self.records {
            if let (Some(red), Some(message)) = (r.outcome.red(), r.outcome.message()) {
                out.push_str(&format!("{} {}: {}\n", red.label(), r.name, first_line(message)));
            }
        }
        out
    }

    /// The JUnit XML that GitLab and Jenkins read: one `testsuite` per group
    /// (fault tests in `fault::GROUP`), one `testcase` per trial, with real
    /// durations; a red trial's first line as its message, and its step log
    /// and diagnostics in `system-out` (cut in the middle past 256 KiB). Text
    /// is made valid XML 1.0 with tabs and line breaks kept (the `xml_text` module).
    pub fn junit(&self) -> String {
        let mut report = Report::new("rave-harness");
        report.set_time(self.duration);
        let mut suites: Vec<(String, TestSuite)> = Vec::new();
        for r in &self.records {
            let suite_name = match r.kind {
                TrialKind::Case => r.profile.clone(),
                TrialKind::Fault => format!("fault::{}", r.profile),
            };
            let index = match suites.iter().position(|(n, _)| *n == suite_name) {
                Some(i) => i,
                None => {
                    suites.push((suite_name.clone(), TestSuite::new(suite_name.clone())));
                    suites.len() - 1
                }
            };
            let status = match &r.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Ignored { reason } => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(xml_text::prepare(&first_line(reason), MAX_MESSAGE));
                    status
                }
                red => {
                    let kind = match red.red() {
                        Some(Red::Failed) => NonSuccessKind::Failure,
                        _ => NonSuccessKind::Error,
                    };
                    let mut status = TestCaseStatus::non_success(kind);
                    status.set_message(xml_text::prepare(&first_line(red.message().unwrap_or("")), MAX_MESSAGE));
                    status.set_type(red.red().map_or("?", Red::words));
                    status
                }
            };
            let mut case = TestCase::new(format!("{}::{}", r.suite, r.case), status);
            case.set_classname(format!("{suite_name}.{}", r.suite));
            case.set_time(r.duration);
            let mut out = String::new();
            for step in &r.steps {
                out.push_str(step);
                out.push('\n');
            }
            if let Some(message) = r.outcome.message() {
                out.push_str(message);
            }
            if !out.trim().is_empty() {
                case.set_system_out(xml_text::prepare(out.trim_end(), MAX_SYSTEM_OUT));
            }
            suites[index].1.add_test_case(case);
        }
        for (_, mut suite) in suites {
            let time: Duration = suite.test_cases.iter().filter_map(|c| c.time).sum();
            suite.set_time(time);
            report.add_test_suite(suite);
        }
        let xml = report
            .to_string()
            .unwrap_or_else(|e| format!("<!-- could not render JUnit: {e} -->"));
        xml_text::finish(&without_testsuites_skipped(xml))
    }
}

/// Jenkins' junit-10.xsd allows `skipped` on `testsuite` but not on
/// `testsuites`, where quick-junit always writes it: drop it from that one tag.
fn without_testsuites_skipped(xml: String) -> String {
    let Some(start) = xml.find("<testsuites ") else {
        return xml;
    };
    let end = xml[start..].find('>').map_or(xml.len(), |e| start + e);
    let tag = &xml[start..end];
    let Some(attr) = tag.find(" skipped=\"") else {
        return xml;
    };
    let value_start = start + attr + " skipped=\"".len();
    let Some(value_len) = xml[value_start..end].find('"') else {
        return xml;
    };
    format!("{}{}", &xml[..start + attr], &xml[value_start + value_len + 1..])
}

fn guest_line(g: &GuestReport) -> String {
    let boot = g
        .boot
        .iter()
        .map(|s| format!("{} {:.1} s", s.stage, s.at.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ");
    let units = g
        .units
        .iter()
        .map(|u| format!("{} {}/{}", u.unit, mib(u.current_bytes), mib(u.max_bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    let units = if units.is_empty() { "-".into() } else { units };
    if g.attached {
        return format!(
            "guest {} ({}): attached; units (current/max MiB): {units}\n",
            g.name, g.profile
        );
    }
    format!(
        "guest {} ({}): boot {}; QEMU peak RSS {} MiB, CPU {:.1} s; units (current/max MiB): {units}\n",
        g.name,
        g.profile,
        if boot.is_empty() { "-".into() } else { boot },
        g.qemu_peak_rss_bytes / (1024 * 1024),
        g.qemu_cpu_time.as_secs_f64(),
    )
}

fn mib(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{}", b.div_ceil(1024 * 1024)),
        None => "-".into(),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::facts::{BootStage, UnitMemory};

    /// A fixed run: a pass, a failure with diagnostics, a harness error, a
    /// timeout, an ignored case, a fault test.
    pub(crate) fn sample() -> RunReport {
        let record = |suite: &str, case: &str, profile: &str, kind, outcome, ms| TrialRecord {
            name: super::super::trial::trial_name(kind, profile, suite, case),
            suite: suite.into(),
            case: case.into(),
            profile: profile.into(),
            kind,
            outcome,
            duration: Duration::from_millis(ms),
            steps: Vec::new(),
        };
        let mut failed = record(
            "http_health",
            "webhook_security",
            "p0",
            TrialKind::Case,
            Outcome::Failed {
                message: "expected POST /webhook to answer 202, saw 502\n--- journal of nginx.service ---\nupstream refused <&>".into(),
            },
            1250,
        );
        failed.steps = vec!["waiting for unit nginx.service to be active … finished in 0.4 s".into()];
        RunReport {
            records: vec![
                record("systemd_services", "nginx", "p0", TrialKind::Case, Outcome::Passed, 412),
                failed,
                record(
                    "security",
                    "ssh_config",
                    "p1",
                    TrialKind::Case,
                    Outcome::HarnessError {
                        message: "booting rave-p1: the overlay of disk.qcow2 could not be made".into(),
                    },
                    30,
                ),
                record(
                    "p2_observability",
                    "prometheus_targets",
                    "p2",
                    TrialKind::Case,
                    Outcome::TimedOut {
                        message: "guest rave-p2: timed out after 75.0s waiting for a scrape".into(),
                    },
                    75_100,
                ),
                record(
                    "systemd_services",
                    "grafana",
                    "p2",
                    TrialKind::Case,
                    Outcome::Ignored {
                        reason: "grafana is absent from this image: Debian has no grafana package".into(),
                    },
                    0,
                ),
                record(
                    "systemd_services",
                    "nginx",
                    "p0",
                    TrialKind::Fault,
                    Outcome::Passed,
                    31_900,
                ),
            ],
            guests: vec![GuestReport {
                name: "rave-p0".into(),
                profile: "p0".into(),
                attached: false,
                boot: vec![
                    BootStage {
                        stage: "console".into(),
                        at: Duration::from_millis(3400),
                    },
                    BootStage {
                        stage: "ssh".into(),
                        at: Duration::from_millis(20_700),
                    },
                ],
                qemu_peak_rss_bytes: 870 * 1024 * 1024,
                qemu_cpu_time: Duration::from_millis(41_300),
                units: vec![UnitMemory {
                    unit: "webhook-dispatcher.service".into(),
                    current_bytes: Some(5 * 1024 * 1024),
                    max_bytes: Some(128 * 1024 * 1024),
                }],
            }],
            duration: Duration::from_millis(58_000),
            cut_short: None,
        }
    }

    #[test]
    fn summary_table() {
        insta::assert_snapshot!(sample().summary());
    }

    #[test]
    fn junit_of_a_fixed_run() {
        insta::assert_snapshot!(sample().junit());
    }

    #[test]
    fn json_of_a_fixed_run() {
        insta::assert_snapshot!(serde_json::to_string_pretty(&sample()).unwrap());
    }

    #[test]
    fn junit_with_hostile_text_validates_against_the_xsd_with_tabs_kept() {
        let mut run = sample();
        run.records[1].outcome = Outcome::Failed {
            message: "saw\tthis\r\n\u{1b}[31mred\u{1b}[0m \u{FFFE}\u{FFFF}\u{7}\ntable inet nixos-fw {\n\tchain input {\n\t\ttcp dport 22 accept\n\t}\n}".into(),
        };
        let xml = run.junit();
        assert!(xml.contains("saw&#9;this&#13;"), "{xml}");
        assert!(xml.contains("\n&#9;&#9;tcp dport 22 accept\n&#9;}"), "{xml}");
        assert!(!xml.contains("[31m") && !xml.contains('\u{1b}'), "{xml}");
        assert!(!xml.contains('\u{FFFE}') && !xml.contains('\u{FFFF}') && !xml.contains('\u{7}'));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, &xml).unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/validate-junit");
        let out = std::process::Command::new(&script)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "the JUnit does not validate against junit-10.xsd: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn counts_keep_the_kinds_of_red_apart() {
        let run = sample();
        assert_eq!((run.passed(), run.ignored(), run.reds()), (2, 1, 3));
        assert_eq!(
            (run.red(Red::Failed), run.red(Red::HarnessError), run.red(Red::TimedOut)),
            (1, 1, 1)
        );
    }
}
