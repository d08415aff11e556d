//! One attempt of a trial, and what a stop of the run makes of it.

use std::time::Duration;

use super::attachments;
use crate::outcome::Outcome;

/// One attempt of a trial: how it ended, how long it took, what its guest left.
pub(super) struct Attempt {
    pub(super) outcome: Outcome,
    pub(super) duration: Duration,
    pub(super) kept: attachments::Kept,
}

impl Attempt {
    pub(super) fn new(outcome: Outcome) -> Self {
        Attempt {
            outcome,
            duration: Duration::ZERO,
            kept: attachments::Kept::default(),
        }
    }

    /// The attempt as it stands, unless the run was stopped before it was
    /// judged and it is red on a guest of the run's own (`owned`: the stop
    /// killed it; an attached target is never killed, so its verdicts stand).
    pub(super) fn cut_if_stopped(mut self, owned: bool) -> Self {
        if let Some(stop) = crate::reaper::stopping() {
            if owned && self.outcome.red().is_some() {
                self.outcome = cut_short(self.outcome, &stop);
            }
        }
        self
    }
}

/// A red outcome of a trial that was running when the run was stopped: its
/// guest was killed under it, so what it said is not a verdict. Timed out
/// at the run's deadline (124), a harness error on a signal.
fn cut_short(outcome: Outcome, stop: &crate::reaper::Stopping) -> Outcome {
    let message = format!(
        "{} while it ran; it then said: {}",
        stop.reason,
        outcome.message().unwrap_or("")
    );
    if stop.status == 124 {
        Outcome::TimedOut { message }
    } else {
        Outcome::HarnessError { message }
    }
}

pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
