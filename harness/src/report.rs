//! What a run found, for a person (the summary table) and a pipeline (JUnit
//! XML, JSON). Pure: records in, text out, so every rendering is snapshot-tested.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::manifest::Profile;

/// A case's own check, or its fault test (green, fault, then red).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialKind {
    /// The case against a guest.
    Case,
    /// The case's fault test on a fresh guest.
    Fault,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    /// It proved its claim.
    Passed,
    /// It did not; the message says what to look at first, then the evidence.
    Failed {
        /// The failure, first line first.
        message: String,
    },
    /// It did not run, and why (a component the image lacks, a profile the flavor cannot build).
    Ignored {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// `passed`, `FAILED` or `ignored`, as the summary prints it.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "FAILED",
            Outcome::Ignored { .. } => "ignored",
        }
    }
}

/// One trial's result: a case (or its fault test) on one profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseRecord {
    /// The suite, e.g. `systemd_services`.
    pub suite: String,
    /// The case, e.g. `nginx`.
    pub case: String,
    /// The profile it ran on.
    pub profile: Profile,
    /// Case or fault test.
    pub kind: TrialKind,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it took (boot of a fault test's guest included).
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

impl CaseRecord {
    /// `p0::systemd_services::nginx`, or `fault::p0::systemd_services::nginx`.
    pub fn name(&self) -> String {
        trial_name(self.kind, self.profile, &self.suite, &self.case)
    }
}

/// The trial name libtest and the CLI's `--filter` use.
pub fn trial_name(kind: TrialKind, profile: Profile, suite: &str, case: &str) -> String {
    match kind {
        TrialKind::Case => format!("{profile}::{suite}::{case}"),
        TrialKind::Fault => format!("fault::{profile}::{suite}::{case}"),
    }
}

/// A stage of a guest's boot and when it was reached, from QEMU's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BootStage {
    /// e.g. `console` (first serial output), `restored` (saved state loaded),
    /// `ssh` (first key login), `clock` (a restored guest's clock set),
    /// `contract` (every unit of the contract active).
    pub stage: String,
    /// Since QEMU started.
    #[serde(serialize_with = "seconds", deserialize_with = "from_seconds")]
    pub at: Duration,
}

/// A unit's memory against its limit, as systemd reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitMemory {
    /// The unit.
    pub unit: String,
    /// `MemoryCurrent` in bytes, when accounted.
    pub current_bytes: Option<u64>,
    /// `MemoryMax` in bytes, when set.
    pub max_bytes: Option<u64>,
}

/// What one guest cost the host and its units used, taken before it went down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestReport {
    /// The guest's name, e.g. `rave-p2`.
    pub name: String,
    /// Its profile.
    pub profile: Profile,
    /// Whether it was an attached target (no boot, no QEMU figures).
    pub attached: bool,
    /// Its boot stages.
    pub boot: Vec<BootStage>,
    /// QEMU's peak resident memory in bytes.
    pub qemu_peak_rss_bytes: u64,
    /// QEMU's CPU time (user and system).
    #[serde(serialize_with = "seconds")]
    pub qemu_cpu_time: Duration,
    /// Each component unit's memory against its MemoryMax.
    pub units: Vec<UnitMemory>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// Every trial, in the order run.
    pub records: Vec<CaseRecord>,
    /// Every guest's figures.
    pub guests: Vec<GuestReport>,
    /// Wall time of the run.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

impl RunReport {
    /// Trials that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    /// Trials that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// Trials ignored.
    pub fn ignored(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Ignored { .. }))
    }

    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.records.iter().filter(|r| pick(&r.outcome)).count()
    }

    /// The table a person reads at the end of a run: one row per trial, then
    /// the guests' figures, then the totals.
    pub fn summary(&self) -> String {
        let mut rows: Vec<[String; 4]> = vec![["case".into(), "profile".into(), "result".into(), "time".into()]];
        for r in &self.records {
            let case = match r.kind {
                TrialKind::Case => format!("{}::{}", r.suite, r.case),
                TrialKind::Fault => format!("fault::{}::{}", r.suite, r.case),
            };
            rows.push([
                case,
                r.profile.to_string(),
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
                out.push_str(&format!("ignored {}: {}\n", r.name(), first_line(reason)));
            }
        }
        for g in &self.guests {
            out.push_str(&guest_line(g));
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} ignored in {:.1} s\n",
            self.passed(),
            self.failed(),
            self.ignored(),
            self.duration.as_secs_f64()
        ));
        for r in &self.records {
            if let Outcome::Failed { message } = &r.outcome {
                out.push_str(&format!("FAILED {}: {}\n", r.name(), first_line(message)));
            }
        }
        out
    }

    /// The JUnit XML that GitLab and Jenkins read: one `testsuite` per profile
    /// (fault tests in `fault::PROFILE`), one `testcase` per case, with real
    /// durations and, for a failure, the whole diagnostics in `system-out`.
    pub fn junit(&self) -> String {
        let mut report = Report::new("rave-harness");
        report.set_time(self.duration);
        let mut suites: Vec<(String, TestSuite)> = Vec::new();
        for r in &self.records {
            let suite_name = match r.kind {
                TrialKind::Case => r.profile.to_string(),
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
                Outcome::Failed { message } => {
                    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    status.set_message(first_line(message));
                    status.set_type("CaseFailure");
                    status
                }
                Outcome::Ignored { reason } => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(first_line(reason));
                    status
                }
            };
            let mut case = TestCase::new(format!("{}::{}", r.suite, r.case), status);
            case.set_classname(format!("{suite_name}.{}", r.suite));
            case.set_time(r.duration);
            if let Outcome::Failed { message } = &r.outcome {
                case.set_system_out(message.as_str());
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
        without_testsuites_skipped(xml)
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

fn from_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed run: a pass, a failure with diagnostics, an ignored case, a fault test.
    pub(crate) fn sample() -> RunReport {
        let record = |suite: &str, case: &str, profile, kind, outcome, ms| CaseRecord {
            suite: suite.into(),
            case: case.into(),
            profile,
            kind,
            outcome,
            duration: Duration::from_millis(ms),
        };
        RunReport {
            records: vec![
                record("systemd_services", "nginx", Profile::P0, TrialKind::Case, Outcome::Passed, 412),
                record(
                    "http_health",
                    "webhook_endpoint",
                    Profile::P0,
                    TrialKind::Case,
                    Outcome::Failed {
                        message: "expected 202 from POST /webhook, saw 502\n--- journal of nginx.service ---\nupstream refused <&>".into(),
                    },
                    1250,
                ),
                record(
                    "systemd_services",
                    "grafana",
                    Profile::P2,
                    TrialKind::Case,
                    Outcome::Ignored {
                        reason: "grafana is absent from this image: Debian has no grafana package".into(),
                    },
                    0,
                ),
                record("systemd_services", "nginx", Profile::P0, TrialKind::Fault, Outcome::Passed, 31_900),
            ],
            guests: vec![GuestReport {
                name: "rave-p0".into(),
                profile: Profile::P0,
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
    fn counts() {
        let run = sample();
        assert_eq!((run.passed(), run.failed(), run.ignored()), (2, 1, 1));
    }
}
