//! Step logs: what a check is doing while it waits ("waiting for unit
//! nginx.service to be active … finished in 2.1 s"), said for the trial that
//! runs on this thread, so a long wait is never silent: the progress display
//! shows the step in flight, the report keeps them all.
//!
//! The runner opens a scope for each trial ([`in_trial`]); every wait of a
//! [`crate::Machine`] is a step, and a check may log its own with [`step`].
//! Outside a scope (a boot, a thread a check starts) steps are not logged.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use rave_harness::steps::{self, Step, StepSink};
//!
//! struct Lines(Mutex<Vec<String>>);
//! impl StepSink for Lines {
//!     fn step(&self, trial: &str, step: &Step) {
//!         self.0.lock().unwrap().push(format!("{trial}: {}", step.line()));
//!     }
//! }
//! let lines = Arc::new(Lines(Mutex::new(Vec::new())));
//! steps::in_trial("p0::demo", lines.clone(), || {
//!     steps::step("injecting the fault", || Ok::<(), ()>(()))
//! })
//! .unwrap();
//! let said = lines.0.lock().unwrap().clone();
//! assert_eq!(said[0], "p0::demo: injecting the fault");
//! assert!(said[1].starts_with("p0::demo: injecting the fault … finished in "));
//! ```

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One line of a step log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What the step does, e.g. `waiting for unit nginx.service to be active`.
    pub text: String,
    /// Whether it began or ended, and how.
    #[serde(flatten)]
    pub phase: StepPhase,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum StepPhase {
    /// It began.
    Began,
    /// It ended as hoped, after this long.
    Finished {
        /// How long it took.
        #[serde(serialize_with = "crate::facts::seconds")]
        after: Duration,
    },
    /// It ended otherwise (a timeout, an error), after this long.
    GaveUp {
        /// How long it took.
        #[serde(serialize_with = "crate::facts::seconds")]
        after: Duration,
    },
}

impl Step {
    /// `TEXT`, `TEXT … finished in 2.1 s` or `TEXT … gave up after 75.0 s`.
    pub fn line(&self) -> String {
        match self.phase {
            StepPhase::Began => self.text.clone(),
            StepPhase::Finished { after } => format!("{} … finished in {:.1} s", self.text, after.as_secs_f64()),
            StepPhase::GaveUp { after } => format!("{} … gave up after {:.1} s", self.text, after.as_secs_f64()),
        }
    }
}

/// Where a trial's steps go.
pub trait StepSink: Send + Sync {
    /// `step` happened in `trial`.
    fn step(&self, trial: &str, step: &Step);
}

thread_local! {
    static SCOPE: RefCell<Option<(String, Arc<dyn StepSink>)>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread with its steps said for `trial` into `sink`.
pub fn in_trial<T>(trial: &str, sink: Arc<dyn StepSink>, f: impl FnOnce() -> T) -> T {
    let previous = SCOPE.with(|scope| scope.replace(Some((trial.to_string(), sink))));
    struct Restore(Option<(String, Arc<dyn StepSink>)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE.with(|scope| *scope.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Says `text`, runs `f`, then says how it ended and after how long
/// (`Err` is "gave up"). Outside a trial's scope it only runs `f`.
pub fn step<T, E>(text: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let scope = SCOPE.with(|scope| scope.borrow().clone());
    let Some((trial, sink)) = scope else {
        return f();
    };
    sink.step(
        &trial,
        &Step {
            text: text.into(),
            phase: StepPhase::Began,
        },
    );
    let started = Instant::now();
    let result = f();
    let after = started.elapsed();
    let phase = match &result {
        Ok(_) => StepPhase::Finished { after },
        Err(_) => StepPhase::GaveUp { after },
    };
    sink.step(
        &trial,
        &Step {
            text: text.into(),
            phase,
        },
    );
    result
}
