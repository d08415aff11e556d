//! A trial: one check on one guest group, on the group's shared guest (a
//! case) or on a fresh guest of its own (a fault test, which breaks it).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::outcome::CheckResult;
use crate::Machine;

/// A check run against a guest.
pub type Check = Arc<dyn Fn(&Machine) -> CheckResult + Send + Sync>;

/// Where a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialKind {
    /// On its group's shared guest, beside the group's other cases.
    Case,
    /// On a fresh guest of its own, which it may break (a fault test).
    Fault,
}

/// One trial of a run.
#[derive(Clone)]
pub struct Trial {
    /// Its full name: `GROUP::SUITE::CASE`, or `fault::GROUP::SUITE::CASE`.
    pub name: String,
    /// The guest group (an image label such as a profile): a group's cases share a guest.
    pub group: String,
    /// The suite, e.g. `systemd_services`.
    pub suite: String,
    /// The case, e.g. `nginx`.
    pub case: String,
    /// Case or fault test.
    pub kind: TrialKind,
    /// Components the image must have; a trial whose image lacks one is
    /// ignored with the manifest's reason, before any guest boots.
    pub needs: Vec<String>,
    /// Ignored before anything runs, and why (e.g. a case that does not
    /// apply to the group).
    pub ignored: Option<String>,
    /// Starts before the others of its guest: it waits long (for a scrape,
    /// say), and the shorter ones fill the wait.
    pub waits_long: bool,
    /// What the trial is expected to take (a past run's measure, e.g. the
    /// rave suites' `durations.json`), or `None` when unknown. Lanes of
    /// guests start longest first by it, so the longest is not the last to
    /// start (see [`super::RunOptions::guests_at_once`]); nothing is judged by it.
    pub expected: Option<Duration>,
    /// The check.
    pub check: Check,
}

impl std::fmt::Debug for Trial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trial")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .field("ignored", &self.ignored)
            .finish_non_exhaustive()
    }
}

impl Trial {
    /// A trial of `kind` of check `suite::case` on `group`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use rave_harness::runner::{Trial, TrialKind};
    ///
    /// let trial = Trial::new(TrialKind::Case, "web", "http", "index", Arc::new(|machine| {
    ///     machine.succeed("curl -fsS http://127.0.0.1/")?;
    ///     Ok(())
    /// }))
    /// .needing(&["nginx"]);
    /// assert_eq!(trial.name, "web::http::index");
    /// ```
    pub fn new(kind: TrialKind, group: &str, suite: &str, case: &str, check: Check) -> Self {
        Trial {
            name: trial_name(kind, group, suite, case),
            group: group.into(),
            suite: suite.into(),
            case: case.into(),
            kind,
            needs: Vec::new(),
            ignored: None,
            waits_long: false,
            expected: None,
            check,
        }
    }

    /// The same trial, needing `components` in the image.
    pub fn needing(mut self, components: &[&str]) -> Self {
        self.needs = components.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The same trial, ignored for `reason`.
    pub fn ignored_because(mut self, reason: impl Into<String>) -> Self {
        self.ignored = Some(reason.into());
        self
    }

    /// The same trial, started before the others of its guest.
    pub fn waiting_long(mut self, waits_long: bool) -> Self {
        self.waits_long = waits_long;
        self
    }

    /// The same trial, expected to take `expected` (only its lane's start
    /// order depends on it).
    pub fn expected_to_take(mut self, expected: Duration) -> Self {
        self.expected = Some(expected);
        self
    }
}

/// `GROUP::SUITE::CASE`, or `fault::GROUP::SUITE::CASE` for a fault test:
/// the name libtest, `--filter` and the reports use.
pub fn trial_name(kind: TrialKind, group: &str, suite: &str, case: &str) -> String {
    match kind {
        TrialKind::Case => format!("{group}::{suite}::{case}"),
        TrialKind::Fault => format!("fault::{group}::{suite}::{case}"),
    }
}
