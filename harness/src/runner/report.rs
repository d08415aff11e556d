//! What a run found, for a person (the summary table) and a pipeline (JUnit
//! XML, JSON). Pure: records in, text out, so every rendering is snapshot-tested.
//!
//! The three kinds of red stay apart: a failed claim is a JUnit `<failure>`,
//! a harness error and a timeout are `<error>`s (with their type).

use std::time::Duration;

use std::path::PathBuf;

use serde::Serialize;

use super::trial::TrialKind;
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
    /// How long its first attempt took (the boot of a fault test's guest
    /// included); each rerun's is in `reruns`.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Its step log, one line per step that ended.
    pub steps: Vec<String>,
    /// With `--retries`: the other attempts, each on a fresh guest. When a
    /// rerun passed, the red attempts before it (the trial is *flaky*, its
    /// outcome passed); when every attempt was red, those after the first
    /// (its outcome is the first's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reruns: Vec<Rerun>,
    /// Files kept from a red attempt's guest (journals, serial log), as JUnit links them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<PathBuf>,
}

impl TrialRecord {
    /// Passed, but only on a rerun: some attempt before was red.
    pub fn is_flaky(&self) -> bool {
        self.outcome == Outcome::Passed && !self.reruns.is_empty()
    }

    /// `flaky` for a flaky trial, else its outcome's label.
    pub fn label(&self) -> &'static str {
        if self.is_flaky() {
            "flaky"
        } else {
            self.outcome.label()
        }
    }
}

/// One more attempt of a trial (`--retries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rerun {
    /// How it ended (always red for a flaky trial's).
    pub outcome: Outcome,
    /// How long it took, its guest's boot included.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
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
    /// Trials that passed on their first attempt.
    pub fn passed(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.outcome == Outcome::Passed && !r.is_flaky())
            .count()
    }

    /// Trials that passed only on a rerun (`--retries`).
    pub fn flaky(&self) -> usize {
        self.records.iter().filter(|r| r.is_flaky()).count()
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
                r.label().into(),
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
        let flaky = match self.flaky() {
            0 => String::new(),
            n => format!(", {n} flaky (passed only on a rerun)"),
        };
        out.push_str(&format!(
            "{} passed{flaky}, {} failed, {} harness errors, {} timed out, {} ignored in {:.1} s\n",
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
                let reruns = match r.reruns.len() {
                    0 => String::new(),
                    n => format!(" (and on {n} rerun(s))"),
                };
                out.push_str(&format!(
                    "{} {}{reruns}: {}\n",
                    red.label(),
                    r.name,
                    first_line(message)
                ));
            }
            if r.is_flaky() {
                let first = r.reruns[0].outcome.message().unwrap_or("");
                out.push_str(&format!(
                    "flaky {}: passed on rerun {} after: {}\n",
                    r.name,
                    r.reruns.len(),
                    first_line(first)
                ));
            }
        }
        out
    }
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

pub(super) fn first_line(text: &str) -> String {
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
            reruns: Vec::new(),
            attachments: Vec::new(),
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
        validate(&xml);
    }

    /// Writes `xml` and validates it with `scripts/validate-junit`.
    fn validate(xml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        std::fs::write(&path, xml).unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/validate-junit");
        let out = std::process::Command::new(&script)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "the JUnit does not validate: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn flaky_and_rerun_trials_and_attachments_in_junit_and_the_summary() {
        let mut run = sample();
        let rerun = |message: &str| Rerun {
            outcome: Outcome::TimedOut {
                message: message.into(),
            },
            duration: Duration::from_secs(40),
        };
        // The pass: flaky, red once before.
        run.records[0].reruns = vec![rerun("timed out after 60 s waiting for nginx.service\tactivating")];
        run.records[0].attachments = vec!["artifacts/attachments/p0__x/serial.log".into()];
        // The failure: red on its rerun too.
        run.records[1].reruns = vec![rerun("again <&>")];
        run.records[1].attachments = vec![
            "artifacts/attachments/p0__y/serial.log".into(),
            "artifacts/attachments/p0__y/journal-nginx.service.txt".into(),
        ];
        assert_eq!((run.passed(), run.flaky(), run.reds()), (1, 1, 3));
        let summary = run.summary();
        assert!(summary.contains("1 passed, 1 flaky"), "{summary}");
        assert!(
            summary.contains("flaky p0::systemd_services::nginx: passed on rerun 1 after: timed out"),
            "{summary}"
        );
        assert!(
            summary.contains("FAILED p0::http_health::webhook_security (and on 1 rerun(s))"),
            "{summary}"
        );
        let xml = run.junit();
        assert!(xml.contains("<flakyError"), "{xml}");
        assert!(xml.contains("<rerunError"), "{xml}");
        let journal = xml.find("[[ATTACHMENT|artifacts/attachments/p0__y/journal-nginx.service.txt]]");
        let serial = xml.find("[[ATTACHMENT|artifacts/attachments/p0__y/serial.log]]");
        assert!(journal.is_some() && journal < serial, "the journal first: {xml}");
        validate(&xml);
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
