//! The three kinds of red, kept apart, and what a check returns.
//!
//! A check (a case, a fault test, a user's own) is green when its claim held.
//! When it did not, it says which kind of red, so a report never calls a
//! broken image N failed cases:
//! - [`Red::Failed`]: the claim is false (what was expected, what was seen);
//! - [`Red::HarnessError`]: it could not be checked (QEMU died, SSH was lost,
//!   an image did not build, a search could not be done);
//! - [`Red::TimedOut`]: a deadline passed before it could say.

use std::fmt;

use serde::Serialize;

/// A kind of red.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Red {
    /// The claim is false.
    Failed,
    /// The claim could not be checked.
    HarnessError,
    /// A deadline passed.
    TimedOut,
}

impl Red {
    /// `FAILED`, `ERROR` or `TIMEOUT`, as a summary prints it.
    pub fn label(self) -> &'static str {
        match self {
            Red::Failed => "FAILED",
            Red::HarnessError => "ERROR",
            Red::TimedOut => "TIMEOUT",
        }
    }

    /// `failed`, `harness error` or `timed out`, as a sentence says it.
    pub fn words(self) -> &'static str {
        match self {
            Red::Failed => "failed",
            Red::HarnessError => "harness error",
            Red::TimedOut => "timed out",
        }
    }
}

/// Why a check is red: its kind and its message (the first line says what
/// to look at; the rest is evidence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Which kind of red.
    pub red: Red,
    /// What was expected and seen, then the evidence.
    pub message: String,
}

impl CheckError {
    /// The claim is false.
    pub fn failed(message: impl Into<String>) -> Self {
        CheckError {
            red: Red::Failed,
            message: message.into(),
        }
    }

    /// The claim could not be checked.
    pub fn harness(message: impl Into<String>) -> Self {
        CheckError {
            red: Red::HarnessError,
            message: message.into(),
        }
    }

    /// A deadline passed.
    pub fn timed_out(message: impl Into<String>) -> Self {
        CheckError {
            red: Red::TimedOut,
            message: message.into(),
        }
    }

    /// The whole message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CheckError {}

/// What a check returns.
pub type CheckResult = Result<(), CheckError>;

/// Fails with "expected …, saw …" and `evidence` when `ok` is false.
///
/// ```
/// use rave_harness::outcome::{expect, Red};
/// assert!(expect(1 + 1 == 2, "arithmetic", "2", String::new).is_ok());
/// let red = expect(false, "nginx active", "ActiveState=failed", || "journal…".into()).unwrap_err();
/// assert_eq!(red.red, Red::Failed);
/// assert_eq!(red.message, "expected nginx active, saw ActiveState=failed\njournal…");
/// ```
pub fn expect(ok: bool, expected: &str, seen: impl fmt::Display, evidence: impl FnOnce() -> String) -> CheckResult {
    if ok {
        return Ok(());
    }
    Err(CheckError::failed(format!(
        "expected {expected}, saw {seen}\n{}",
        evidence()
    )))
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Its claim held.
    Passed,
    /// Its claim is false.
    Failed {
        /// What was expected and seen, then the evidence.
        message: String,
    },
    /// It could not be checked.
    HarnessError {
        /// Why.
        message: String,
    },
    /// A deadline passed.
    TimedOut {
        /// What, how long, the last state seen.
        message: String,
    },
    /// It did not run, and why (a component the image lacks, a profile the flavor cannot build).
    Ignored {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// `passed`, `FAILED`, `ERROR`, `TIMEOUT` or `ignored`, as the summary prints it.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Ignored { .. } => "ignored",
            red => red.red().map_or("?", Red::label),
        }
    }

    /// The kind of red, when it is red.
    pub fn red(&self) -> Option<Red> {
        match self {
            Outcome::Failed { .. } => Some(Red::Failed),
            Outcome::HarnessError { .. } => Some(Red::HarnessError),
            Outcome::TimedOut { .. } => Some(Red::TimedOut),
            Outcome::Passed | Outcome::Ignored { .. } => None,
        }
    }

    /// The message of a red outcome.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Failed { message } | Outcome::HarnessError { message } | Outcome::TimedOut { message } => {
                Some(message)
            }
            Outcome::Passed | Outcome::Ignored { .. } => None,
        }
    }
}

impl From<CheckResult> for Outcome {
    fn from(result: CheckResult) -> Self {
        match result {
            Ok(()) => Outcome::Passed,
            Err(CheckError { red, message }) => match red {
                Red::Failed => Outcome::Failed { message },
                Red::HarnessError => Outcome::HarnessError { message },
                Red::TimedOut => Outcome::TimedOut { message },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_red_keeps_its_kind_into_the_outcome() {
        assert_eq!(Outcome::from(Ok(())), Outcome::Passed);
        for (error, label) in [
            (CheckError::failed("f"), "FAILED"),
            (CheckError::harness("h"), "ERROR"),
            (CheckError::timed_out("t"), "TIMEOUT"),
        ] {
            let red = error.red;
            let outcome = Outcome::from(Err(error));
            assert_eq!(outcome.red(), Some(red));
            assert_eq!(outcome.label(), label);
        }
        assert_eq!(Outcome::Ignored { reason: "r".into() }.red(), None);
    }
}
