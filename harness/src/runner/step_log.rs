//! The runner's step sink: every step of a trial goes to the events, and
//! each ended step's line is kept for the trial's record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::events::{Event, EventSink};
use crate::steps::{Step, StepPhase, StepSink};

/// The runner's step sink: every step to the events, each ended step's line
/// kept for its trial's record.
pub(super) struct StepLog {
    pub(super) events: Arc<dyn EventSink>,
    pub(super) lines: Mutex<HashMap<String, Vec<String>>>,
}

impl StepLog {
    pub(super) fn take(&self, trial: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(trial)
            .unwrap_or_default()
    }
}

impl StepSink for StepLog {
    fn step(&self, trial: &str, step: &Step) {
        self.events.event(&Event::Step {
            case: trial.into(),
            step: step.clone(),
        });
        if step.phase != StepPhase::Began {
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(trial.into())
                .or_default()
                .push(step.line());
        }
    }
}
