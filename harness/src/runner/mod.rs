//! The one runner: every front end (`rave-harness run`, `cargo test`, a crate
//! of one's own) hands it trials and a source of guests, and it decides what
//! runs where and when, says so as one typed event stream, and returns the
//! run's report.
//!
//! - A trial whose image is unavailable, or lacks a component it needs, is
//!   ignored with the reason before any guest boots.
//! - A group's cases share one guest, booted on first use, and run side by
//!   side up to [`RunOptions::cases_at_once`], those that wait long first;
//!   the guest goes down after the group's last case.
//! - Each fault test gets a fresh guest of its own.
//! - Guests run side by side up to [`RunOptions::guests_at_once`].
//! - A guest that cannot be had makes each of its trials a harness error,
//!   not a failure; a panic inside a check is a harness error of that trial.
//! - With [`RunOptions::retries`], a red trial runs again on a fresh guest,
//!   up to that many times: one that then passes is *flaky*, not passed.
//! - With [`RunOptions::attachments`], a red attempt's guest leaves its
//!   journals and serial log there before it goes down (linked from JUnit).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rave_harness::runner::{self, Guest, Guests, RunOptions, Trial, TrialKind, Unavailable};
//! use rave_harness::runner::events::Discard;
//! use rave_harness::{BootOptions, CheckError, Image, Machine, Tools};
//!
//! struct OneImage(Image, Tools);
//! impl Guests for OneImage {
//!     fn image(&self, _group: &str) -> Result<Image, Unavailable> {
//!         Ok(self.0.clone())
//!     }
//!     fn guest(&self, _group: &str, name: &str) -> Result<Guest, CheckError> {
//!         let options = BootOptions::new(name, self.1.clone(), "/tmp/my-states");
//!         Machine::boot(&self.0, &options).map(|m| Guest::Owned(Box::new(m))).map_err(CheckError::from)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = Image::load("/var/cache/images/web".as_ref())?;
//! let tools = Tools::find(&std::env::var_os("PATH").unwrap_or_default(), None)?;
//! let trials = vec![Trial::new(TrialKind::Case, "web", "http", "nginx_up", Arc::new(|m| {
//!     m.wait_for_unit("nginx.service", std::time::Duration::from_secs(60))?;
//!     Ok(())
//! }))];
//! let report = runner::run(&trials, &OneImage(image, tools), &RunOptions::default(), Arc::new(Discard));
//! std::fs::write("junit.xml", report.junit())?;
//! # Ok(())
//! # }
//! ```

mod attachments;
mod attempt;
pub mod events;
mod junit;
pub mod pushgateway;
pub mod report;
mod schedule;
mod step_log;
pub mod trial;
mod xml_text;

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use trial::{trial_name, Check, Trial, TrialKind};

use crate::facts::GuestReport;
use crate::image::Image;
use crate::outcome::{CheckError, Outcome};
use crate::steps::StepSink;
use crate::Machine;
use attempt::{panic_message, Attempt};
use events::{Event, EventSink};
use report::{Rerun, RunReport, TrialRecord};
use step_log::StepLog;

/// Why a group's image cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// It is not to be had here (a flavor that cannot build it): its trials are ignored.
    Ignored(String),
    /// It should be, and is not (a build failed): its trials are harness errors.
    Error(String),
}

/// A guest a trial runs on.
pub enum Guest {
    /// Booted for the run: powered down when its trials are done.
    Owned(Box<Machine>),
    /// A running target the run attached to: never powered down.
    Attached(Arc<Machine>),
}

impl Deref for Guest {
    type Target = Machine;
    fn deref(&self) -> &Machine {
        match self {
            Guest::Owned(machine) => machine,
            Guest::Attached(machine) => machine,
        }
    }
}

/// Where the runner gets images and guests.
pub trait Guests: Send + Sync {
    /// The image of `group`, to judge its trials before any guest boots
    /// (building it, if that is how images are had).
    fn image(&self, group: &str) -> Result<Image, Unavailable>;

    /// A guest of `group` named `name`, up to SSH; an error is a harness error
    /// of every trial that needed it.
    fn guest(&self, group: &str, name: &str) -> Result<Guest, CheckError>;
}

/// A running target as the run's only guest: trials of its image's label
/// run on it (fault tests too: whether they may is the caller's to say),
/// trials of other groups are ignored. It is never powered down.
pub struct AttachedTarget {
    /// The target.
    pub machine: Arc<Machine>,
}

impl Guests for AttachedTarget {
    fn image(&self, group: &str) -> Result<Image, Unavailable> {
        let image = self.machine.image();
        if image.manifest.profile == group {
            Ok(image.clone())
        } else {
            Err(Unavailable::Ignored(format!(
                "the attached target {} is {}",
                self.machine.name(),
                image.manifest.profile
            )))
        }
    }

    fn guest(&self, _group: &str, _name: &str) -> Result<Guest, CheckError> {
        Ok(Guest::Attached(Arc::clone(&self.machine)))
    }
}

/// How a run schedules its trials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// How many of a shared guest's cases run at once, each over an SSH
    /// connection of its own.
    pub cases_at_once: usize,
    /// How many guests run side by side (see [`crate::host::HostResources::guests_at_once`]).
    pub guests_at_once: usize,
    /// How long a guest gets to power off before QEMU is killed.
    pub power_off_timeout: Duration,
    /// Guests are named `PREFIX-GROUP` (shared), `PREFIX-fault-GROUP-CASE`
    /// and `PREFIX-rerunN-GROUP-CASE`.
    pub guest_prefix: String,
    /// How many more times a red trial runs, each on a fresh guest (0: none).
    pub retries: usize,
    /// Where a red attempt's journals and serial log are kept (none: not kept).
    pub attachments: Option<PathBuf>,
}

impl Default for RunOptions {
    /// 4 cases at once per guest, one guest at a time, 30 s to power off,
    /// guests named `vm-…`, no reruns, no attachments.
    fn default() -> Self {
        RunOptions {
            cases_at_once: crate::ssh_pool::MAX_CONNECTIONS,
            guests_at_once: 1,
            power_off_timeout: Duration::from_secs(30),
            guest_prefix: "vm".into(),
            retries: 0,
            attachments: None,
        }
    }
}

/// Runs `trials` on guests from `guests`, saying what happens to `events`;
/// the report keeps the trials' order.
pub fn run(trials: &[Trial], guests: &dyn Guests, options: &RunOptions, events: Arc<dyn EventSink>) -> RunReport {
    let started = Instant::now();
    events.event(&Event::RunStarted { trials: trials.len() });
    let run = Run {
        guests,
        options,
        events: Arc::clone(&events),
        steps: Arc::new(StepLog {
            events: Arc::clone(&events),
            lines: Mutex::new(HashMap::new()),
        }),
        images: Mutex::new(BTreeMap::new()),
        slots: Mutex::new(BTreeMap::new()),
        reports: Mutex::new(Vec::new()),
    };
    let mut done: Vec<Option<TrialRecord>> = vec![None; trials.len()];
    let mut runnable = Vec::new();
    for (index, trial) in trials.iter().enumerate() {
        match run.ignored(trial) {
            Some(outcome) => done[index] = Some(run.record_now(trial, outcome)),
            None => runnable.push(index),
        }
    }
    for index in &runnable {
        let trial = &trials[*index];
        if trial.kind == TrialKind::Case {
            run.slot(&trial.group).remaining.fetch_add(1, Ordering::SeqCst);
        }
    }
    let done = Mutex::new(done);
    let to_rerun: Mutex<HashMap<usize, Attempt>> = Mutex::new(HashMap::new());
    schedule::run_lanes(
        schedule::lanes(trials, &runnable, options.cases_at_once),
        options.cases_at_once,
        options.guests_at_once,
        |index| match run.trial(&trials[index]) {
            FirstPass::Finished(record) => done.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(record),
            FirstPass::ToRerun(first) => {
                to_rerun.lock().unwrap_or_else(|p| p.into_inner()).insert(index, first);
            }
        },
    );
    // Anything still up (a group whose last case panicked before its release) goes down now.
    let groups: Vec<String> = run
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    for group in groups {
        run.release_group(&group, true);
    }
    // Reruns after the first pass, each on a fresh guest, as many at once as
    // guests may run: the shared guests are down by now.
    let to_rerun = to_rerun.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut reruns: Vec<usize> = to_rerun.keys().copied().collect();
    reruns.sort_unstable();
    let to_rerun = Mutex::new(to_rerun);
    schedule::run_lanes(
        reruns.into_iter().map(|index| vec![index]).collect(),
        1,
        options.guests_at_once,
        |index| {
            let first = to_rerun.lock().unwrap_or_else(|p| p.into_inner()).remove(&index);
            if let Some(first) = first {
                let record = run.rerun(&trials[index], first);
                done.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(record);
            }
        },
    );
    let report = RunReport {
        records: done
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .flatten()
            .collect(),
        guests: std::mem::take(&mut *run.reports.lock().unwrap_or_else(|p| p.into_inner())),
        duration: started.elapsed(),
        cut_short: crate::reaper::stopping().map(|stop| stop.reason),
    };
    events.event(&Event::RunFinished(report.clone()));
    report
}

/// A trial after its first attempt.
enum FirstPass {
    /// Judged.
    Finished(TrialRecord),
    /// Red, with reruns to go after the first pass.
    ToRerun(Attempt),
}

/// One group's shared guest.
#[derive(Default)]
struct Slot {
    guest: OnceLock<Result<Arc<Guest>, CheckError>>,
    /// Case trials of the group still to end; at 0 the guest goes down.
    remaining: AtomicUsize,
    released: std::sync::atomic::AtomicBool,
}

struct Run<'a> {
    guests: &'a dyn Guests,
    options: &'a RunOptions,
    events: Arc<dyn EventSink>,
    steps: Arc<StepLog>,
    images: Mutex<BTreeMap<String, Result<Image, Unavailable>>>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    reports: Mutex<Vec<GuestReport>>,
}

impl Run<'_> {
    /// The outcome of a trial known before anything boots: ignored (as
    /// asked, for its image, for a component its image lacks) or a harness
    /// error (an image that should be there and is not).
    fn ignored(&self, trial: &Trial) -> Option<Outcome> {
        if let Some(reason) = &trial.ignored {
            return Some(Outcome::Ignored { reason: reason.clone() });
        }
        let image = self.image(&trial.group);
        match image {
            Err(Unavailable::Ignored(reason)) => Some(Outcome::Ignored { reason }),
            Err(Unavailable::Error(message)) => Some(Outcome::HarnessError { message }),
            Ok(image) => trial
                .needs
                .iter()
                .find_map(|c| image.manifest.unit(c).err())
                .map(|reason| Outcome::Ignored { reason }),
        }
    }

    fn image(&self, group: &str) -> Result<Image, Unavailable> {
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        images
            .entry(group.to_string())
            .or_insert_with(|| self.guests.image(group))
            .clone()
    }

    fn slot(&self, group: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(slots.entry(group.to_string()).or_default())
    }

    /// Records a trial that did not run.
    fn record_now(&self, trial: &Trial, outcome: Outcome) -> TrialRecord {
        self.started(trial);
        self.finished(trial, Attempt::new(outcome), Vec::new())
    }

    fn started(&self, trial: &Trial) {
        self.events.event(&Event::CaseStarted {
            case: trial.name.clone(),
            profile: trial.group.clone(),
            kind: trial.kind,
        });
    }

    /// The record of `trial`, judged by its first attempt and its reruns;
    /// its duration is the first attempt's.
    fn finished(&self, trial: &Trial, first: Attempt, reruns: Vec<Attempt>) -> TrialRecord {
        let duration = first.duration;
        let mut steps = self.steps.take(&trial.name);
        let mut attachments = Vec::new();
        let mut attempts: Vec<Attempt> = std::iter::once(first).chain(reruns).collect();
        for attempt in &mut attempts {
            steps.append(&mut attempt.kept.problems);
            attachments.append(&mut attempt.kept.files);
        }
        let passed_last = attempts.last().is_some_and(|a| a.outcome == Outcome::Passed);
        let (outcome, reruns) = if passed_last && attempts.len() > 1 {
            // Flaky: passed, with the red attempts before.
            attempts.pop();
            (Outcome::Passed, attempts)
        } else {
            let first = attempts.remove(0);
            (first.outcome, attempts)
        };
        let record = TrialRecord {
            name: trial.name.clone(),
            suite: trial.suite.clone(),
            case: trial.case.clone(),
            profile: trial.group.clone(),
            kind: trial.kind,
            outcome,
            duration,
            steps,
            reruns: reruns
                .into_iter()
                .map(|a| Rerun {
                    outcome: a.outcome,
                    duration: a.duration,
                })
                .collect(),
            attachments,
        };
        self.events.event(&Event::CaseFinished(record.clone()));
        record
    }

    /// Runs one trial on its guest and says how it ended, or, red with
    /// reruns to go, hands its first attempt on to [`Run::rerun`]. Once the
    /// run is stopping ([`crate::reaper::stopping`]) a trial is not started,
    /// and one that was running and did not pass says it was cut short.
    fn trial(&self, trial: &Trial) -> FirstPass {
        if let Some(stop) = crate::reaper::stopping() {
            return FirstPass::Finished(self.record_now(
                trial,
                Outcome::Ignored {
                    reason: format!("{}: not started", stop.reason),
                },
            ));
        }
        let started = Instant::now();
        self.started(trial);
        let first = match trial.kind {
            TrialKind::Case => {
                let slot = self.slot(&trial.group);
                let name = format!("{}-{}", self.options.guest_prefix, trial.group);
                let guest = slot.guest.get_or_init(|| self.boot(&trial.group, &name).map(Arc::new));
                let attempt = match guest {
                    Ok(guest) => self.check(trial, guest, 0),
                    Err(e) => Attempt::new(Outcome::HarnessError {
                        message: format!("{name} could not be had: {e}"),
                    }),
                };
                // Judged now: a stop after this point did not cut this trial.
                let owned = !matches!(guest.as_deref(), Ok(Guest::Attached(_)));
                let attempt = attempt.cut_if_stopped(owned);
                if slot.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.release_group(&trial.group, false);
                }
                attempt
            }
            TrialKind::Fault => {
                let name = format!(
                    "{}-fault-{}-{}",
                    self.options.guest_prefix,
                    trial.group,
                    trial.case.replace('_', "-")
                );
                self.on_fresh_guest(trial, &name, 0)
            }
        };
        let mut first = first;
        first.duration = started.elapsed();
        if first.outcome.red().is_some() && self.options.retries > 0 && crate::reaper::stopping().is_none() {
            return FirstPass::ToRerun(first);
        }
        FirstPass::Finished(self.finished(trial, first, Vec::new()))
    }

    /// Runs a red trial again on fresh guests, up to [`RunOptions::retries`]
    /// times or until an attempt passes, and says how it ended. Its duration
    /// is the first attempt's; each rerun keeps its own.
    fn rerun(&self, trial: &Trial, first: Attempt) -> TrialRecord {
        let mut reruns: Vec<Attempt> = Vec::new();
        let mut last_red = true;
        while last_red && reruns.len() < self.options.retries && crate::reaper::stopping().is_none() {
            let n = reruns.len() + 1;
            let name = format!(
                "{}-rerun{n}-{}-{}",
                self.options.guest_prefix,
                trial.group,
                trial.case.replace('_', "-")
            );
            let began = Instant::now();
            let mut attempt = self.on_fresh_guest(trial, &name, n);
            attempt.duration = began.elapsed();
            last_red = attempt.outcome.red().is_some();
            reruns.push(attempt);
        }
        self.finished(trial, first, reruns)
    }

    /// Runs `trial` on a fresh guest named `name`, which goes down after
    /// (attempt `rerun`: 0 for the first).
    fn on_fresh_guest(&self, trial: &Trial, name: &str, rerun: usize) -> Attempt {
        match self.boot(&trial.group, name) {
            Ok(guest) => {
                let owned = matches!(guest, Guest::Owned(_));
                let attempt = self.check(trial, &guest, rerun).cut_if_stopped(owned);
                if let Guest::Owned(machine) = &guest {
                    self.power_off(machine);
                }
                attempt
            }
            Err(e) => Attempt::new(Outcome::HarnessError {
                message: format!("{name} could not be had: {e}"),
            })
            .cut_if_stopped(true),
        }
    }

    /// Runs the check with its steps said for it (a panic is a harness
    /// error); when red, keeps the guest's journals and serial log.
    fn check(&self, trial: &Trial, machine: &Machine, rerun: usize) -> Attempt {
        let steps: Arc<dyn StepSink> = Arc::clone(&self.steps) as Arc<dyn StepSink>;
        let result = catch_unwind(AssertUnwindSafe(|| {
            crate::steps::in_trial(&trial.name, steps, || (trial.check)(machine))
        }));
        let mut attempt = Attempt::new(match result {
            Ok(result) => Outcome::from(result),
            Err(panic) => Outcome::HarnessError {
                message: format!("{} panicked: {}", trial.name, panic_message(&panic)),
            },
        });
        if let (Some(dir), Some(_), None) = (
            &self.options.attachments,
            attempt.outcome.red(),
            crate::reaper::stopping(),
        ) {
            attempt.kept = attachments::keep(dir, trial, rerun, machine);
        }
        attempt
    }

    fn boot(&self, group: &str, name: &str) -> Result<Guest, CheckError> {
        self.events.event(&Event::BootStarted {
            guest: name.into(),
            profile: group.into(),
        });
        match self.guests.guest(group, name) {
            Ok(guest) => {
                self.events.event(&Event::BootFinished {
                    guest: name.into(),
                    profile: group.into(),
                    stages: guest.boot_stages(),
                    pid: guest.pid(),
                    state_dir: guest.state_dir().map(Into::into),
                });
                Ok(guest)
            }
            Err(e) => {
                self.events.event(&Event::BootFailed {
                    guest: name.into(),
                    profile: group.into(),
                    error: e.message.clone(),
                });
                Err(e)
            }
        }
    }

    /// The group's shared guest is done: its figures, then down (an attached
    /// target is only reported). Once per group; at the end of the run only
    /// what is still up (`leftover`).
    fn release_group(&self, group: &str, leftover: bool) {
        let slot = self.slot(group);
        if slot.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(Ok(guest)) = slot.guest.get() else { return };
        if leftover && guest.ensure_running().is_err() {
            return;
        }
        match &**guest {
            Guest::Owned(machine) => self.power_off(machine),
            Guest::Attached(machine) => self.report_guest(machine),
        }
    }

    fn report_guest(&self, machine: &Machine) {
        let report = machine.report();
        self.events.event(&Event::GuestReport(report.clone()));
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
    }

    fn power_off(&self, machine: &Machine) {
        self.report_guest(machine);
        // A guest that does not go down by itself is killed; its report is taken already.
        let _clean = machine.shutdown(self.options.power_off_timeout);
    }
}

#[cfg(test)]
mod tests;
