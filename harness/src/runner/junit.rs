//! The run as JUnit XML, the form GitLab and Jenkins read.
//!
//! - One `testsuite` per group (fault tests in `fault::GROUP`), one
//!   `testcase` per trial, with real durations.
//! - A failed claim is a `<failure>`, a harness error or a timeout an
//!   `<error>` with its type, an ignored trial `<skipped>`; the first line of
//!   the message as `message`, the step log and the whole message in
//!   `system-out` (cut in the middle past 256 KiB).
//! - With `--retries`: a flaky trial is a success with a `<flakyFailure>` or
//!   `<flakyError>` per red attempt, one red every time a `<failure>`/`<error>`
//!   with a `<rerunFailure>`/`<rerunError>` per rerun (Maven Surefire's
//!   elements, which Jenkins reads and junit-10.xsd allows, without `time`).
//! - Files kept from a red attempt's guest as `[[ATTACHMENT|path]]` lines at
//!   the end of `system-out`, the most telling (a journal) first: GitLab links
//!   the first, Jenkins' attachments plugin all of them.
//! - Text made valid XML 1.0 with tabs and line breaks kept (`xml_text`).

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use super::report::{first_line, Rerun, RunReport};
use super::trial::TrialKind;
use super::xml_text::{self, MAX_MESSAGE, MAX_SYSTEM_OUT};
use crate::outcome::{Outcome, Red};

impl RunReport {
    /// The JUnit XML of the run (see the module's documentation).
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
            let mut status = match &r.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Ignored { reason } => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(xml_text::prepare(&first_line(reason), MAX_MESSAGE));
                    status
                }
                red => {
                    let mut status = TestCaseStatus::non_success(kind(red));
                    status.set_message(xml_text::prepare(&first_line(red.message().unwrap_or("")), MAX_MESSAGE));
                    status.set_type(red.red().map_or("?", Red::words));
                    status
                }
            };
            status.add_reruns(r.reruns.iter().filter(|a| a.outcome.red().is_some()).map(rerun));
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
            if r.is_flaky() {
                out.push_str(&format!(
                    "flaky: red on its first {} attempt(s), then passed on a fresh guest; the first said: {}",
                    r.reruns.len(),
                    r.reruns[0].outcome.message().unwrap_or("")
                ));
            }
            let mut out = if out.trim().is_empty() {
                String::new()
            } else {
                xml_text::prepare(out.trim_end(), MAX_SYSTEM_OUT)
            };
            let mut files: Vec<&std::path::PathBuf> = r.attachments.iter().collect();
            // A journal first: GitLab links only the first attachment.
            files.sort_by_key(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("journal-"))
            });
            for file in files {
                out.push_str(&xml_text::prepare(
                    &format!("\n[[ATTACHMENT|{}]]", file.display()),
                    MAX_MESSAGE,
                ));
            }
            if !out.is_empty() {
                case.set_system_out(out);
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

/// `<failure>` for a failed claim, `<error>` for a harness error or a timeout.
fn kind(outcome: &Outcome) -> NonSuccessKind {
    match outcome.red() {
        Some(Red::Failed) => NonSuccessKind::Failure,
        _ => NonSuccessKind::Error,
    }
}

fn rerun(attempt: &Rerun) -> TestRerun {
    let mut rerun = TestRerun::new(kind(&attempt.outcome));
    let message = attempt.outcome.message().unwrap_or("");
    // No `time`: junit-10.xsd does not allow it on rerun elements (the JSON report has it).
    rerun
        .set_message(xml_text::prepare(&first_line(message), MAX_MESSAGE))
        .set_type(attempt.outcome.red().map_or("?", Red::words))
        .set_system_out(xml_text::prepare(message.trim(), MAX_SYSTEM_OUT));
    rerun
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
