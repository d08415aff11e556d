//! Which trials a run holds, the guests they run on, and how one trial runs.
//! Shared by `rave-harness run` and the libtest binary (`cargo test`).
//!
//! A case trial runs on its profile's shared guest, booted on first use and
//! powered down after that profile's last trial. A fault trial boots a fresh
//! guest of its own: green first, then the fault, then it must be red.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rave_harness::events::EventLog;
use rave_harness::manifest::Profile;
use rave_harness::report::{trial_name, CaseRecord, GuestReport, Outcome, TrialKind};
use rave_harness::{Launcher, Machine};

use crate::catalog::{self, Case};

/// How many of a shared guest's cases run at once, each over an SSH
/// connection of its own (a fault test's lane holds one trial).
pub const CASES_AT_ONCE: usize = rave_harness::ssh_pool::MAX_CONNECTIONS;

/// The cases that wait longest (for a Prometheus scrape newer than their
/// start), longest first: in a lane they start first, so the guest's shorter
/// cases fill their wait. Not the secrets search, though long: started with
/// them, it would hold `webhook_metrics`'s exclusive section, and with it
/// every other case, until it ends.
pub const START_FIRST: &[&str] = &[
    "p2_observability::prometheus_targets",
    "p2_observability::webhook_metrics",
];

/// How long a guest gets to power off before QEMU is killed.
pub const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);

/// One case (or its fault test) on one profile.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Case or fault test.
    pub kind: TrialKind,
    /// The profile it runs on.
    pub profile: Profile,
    /// The case.
    pub case: Case,
}

impl Trial {
    /// `p0::systemd_services::nginx` or `fault::p0::systemd_services::nginx`.
    pub fn name(&self) -> String {
        trial_name(self.kind, self.profile, self.case.suite, self.case.name)
    }
}

/// Every trial of `profiles`: each case on each of its profiles, then (with
/// `faults`) each case's fault test on the first of its profiles selected.
pub fn trials(profiles: &[Profile], faults: bool) -> Vec<Trial> {
    let cases = catalog::all();
    let mut out = Vec::new();
    for profile in profiles {
        for case in cases.iter().filter(|c| c.profiles.contains(profile)) {
            out.push(Trial {
                kind: TrialKind::Case,
                profile: *profile,
                case: *case,
            });
        }
    }
    if faults {
        for case in &cases {
            if let Some(profile) = case.profiles.iter().find(|p| profiles.contains(p)) {
                out.push(Trial {
                    kind: TrialKind::Fault,
                    profile: *profile,
                    case: *case,
                });
            }
        }
    }
    out
}

/// Shard `index` of `count` (1-based, as `--shard 2/3` says): a contiguous
/// slice, so a shard boots as few profiles' guests as it can.
pub fn shard(trials: Vec<Trial>, index: usize, count: usize) -> Vec<Trial> {
    let count = count.max(1);
    let len = trials.len();
    let start = len * (index - 1) / count;
    let end = len * index / count;
    trials.into_iter().skip(start).take(end - start).collect()
}

/// A target the run attached to.
struct Attached {
    machine: Machine,
    /// Whether fault tests may break it (`--allow-faults`).
    allow_faults: bool,
}

/// Trials grouped into lanes that may run side by side: one lane per
/// profile's case trials (they share that profile's guest, and run at once
/// up to [`CASES_AT_ONCE`]), one
/// lane per fault test (each boots its own guest). Each trial keeps its index
/// in `trials`, so results can be put back in order.
pub fn lanes(trials: &[Trial]) -> Vec<Vec<(usize, Trial)>> {
    let mut lanes: Vec<Vec<(usize, Trial)>> = Vec::new();
    let mut by_profile: BTreeMap<Profile, usize> = BTreeMap::new();
    for (index, trial) in trials.iter().enumerate() {
        match trial.kind {
            TrialKind::Case => {
                let lane = *by_profile.entry(trial.profile).or_insert_with(|| {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                });
                lanes[lane].push((index, *trial));
            }
            TrialKind::Fault => lanes.push(vec![(index, *trial)]),
        }
    }
    for lane in &mut lanes {
        lane.sort_by_key(|(_, trial)| {
            let id = trial.case.id();
            START_FIRST.iter().position(|c| *c == id).unwrap_or(START_FIRST.len())
        });
    }
    lanes
}

/// One profile's shared guest.
#[derive(Default)]
struct Slot {
    machine: OnceLock<Result<Arc<Machine>, String>>,
    remaining: AtomicUsize,
}

/// The guests of a run: one shared guest per profile, fresh ones for fault
/// tests; each guest's figures are taken before it goes down.
pub struct Guests {
    /// A running target every trial of its profile uses instead of a booted guest.
    attached: Option<Attached>,
    launcher: OnceLock<Result<Launcher, String>>,
    make_launcher: Box<dyn Fn() -> Result<Launcher, String> + Send + Sync>,
    slots: BTreeMap<Profile, Slot>,
    events: Arc<EventLog>,
    reports: Mutex<Vec<GuestReport>>,
}

impl Guests {
    /// Guests made by `make_launcher`'s launcher, made on first use (so
    /// listing boots nothing).
    pub fn new(
        make_launcher: impl Fn() -> Result<Launcher, String> + Send + Sync + 'static,
        events: Arc<EventLog>,
    ) -> Self {
        Guests {
            attached: None,
            launcher: OnceLock::new(),
            make_launcher: Box::new(make_launcher),
            slots: Profile::ALL.into_iter().map(|p| (p, Slot::default())).collect(),
            events,
            reports: Mutex::new(Vec::new()),
        }
    }

    /// Guests that are all one running target: trials of its profile run on
    /// it, others are ignored; fault tests only with `allow_faults`, on the
    /// target itself. Nothing is booted and the target is never powered down.
    pub fn attached(machine: Machine, allow_faults: bool, events: Arc<EventLog>) -> Self {
        let mut guests = Guests::new(|| Err("an attached run boots nothing".to_string()), events);
        guests.attached = Some(Attached { machine, allow_faults });
        guests
    }

    /// Says which trials will run, so each shared guest goes down after its
    /// profile's last one.
    pub fn expect(&self, trials: &[Trial]) {
        for trial in trials.iter().filter(|t| t.kind == TrialKind::Case) {
            self.slots[&trial.profile].remaining.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The launcher, or why there is none (a bad setting).
    pub fn launcher(&self) -> Result<&Launcher, String> {
        self.launcher
            .get_or_init(|| (self.make_launcher)())
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs one trial and says how it ended. A panic inside a case is a failure of that case.
    pub fn run(&self, trial: &Trial) -> CaseRecord {
        let started = Instant::now();
        self.events.emit(
            "case_started",
            serde_json::json!({"case": trial.name(), "profile": trial.profile, "kind": trial.kind}),
        );
        let outcome = match catch_unwind(AssertUnwindSafe(|| self.outcome(trial))) {
            Ok(outcome) => outcome,
            Err(panic) => Outcome::Failed {
                message: format!("{} panicked: {}", trial.name(), panic_message(&panic)),
            },
        };
        if trial.kind == TrialKind::Case {
            self.release(trial.profile);
        }
        let record = CaseRecord {
            suite: trial.case.suite.into(),
            case: trial.case.name.into(),
            profile: trial.profile,
            kind: trial.kind,
            outcome,
            duration: started.elapsed(),
        };
        self.events.emit(
            "case_finished",
            serde_json::json!({"case": trial.name(), "profile": trial.profile, "kind": trial.kind,
                "outcome": &record.outcome, "duration": record.duration.as_secs_f64()}),
        );
        record
    }

    /// Every guest's figures, in the order they went down. Powers down what is still up.
    pub fn finish(&self) -> Vec<GuestReport> {
        if let Some(attached) = &self.attached {
            let report = attached.machine.report();
            self.events
                .emit("guest_report", serde_json::to_value(&report).unwrap_or_default());
            self.reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
        }
        for slot in self.slots.values() {
            if let Some(Ok(machine)) = slot.machine.get() {
                if machine.ensure_running().is_ok() {
                    self.power_off(machine);
                }
            }
        }
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn outcome(&self, trial: &Trial) -> Outcome {
        if let Some(attached) = &self.attached {
            return attached.outcome(trial);
        }
        let launcher = match self.launcher() {
            Ok(launcher) => launcher,
            Err(e) => return Outcome::Failed { message: e },
        };
        if let Err(reason) = launcher.store.buildable(launcher.spec(trial.profile)) {
            return Outcome::Ignored { reason };
        }
        match trial.kind {
            TrialKind::Case => {
                let machine = match self.shared(launcher, trial.profile) {
                    Ok(machine) => machine,
                    Err(message) => return Outcome::Failed { message },
                };
                if let Err(reason) = trial.case.applies_to(&machine.image().manifest) {
                    return Outcome::Ignored { reason };
                }
                match (trial.case.run)(&machine) {
                    Ok(()) => Outcome::Passed,
                    Err(failure) => Outcome::Failed {
                        message: failure.to_string(),
                    },
                }
            }
            TrialKind::Fault => {
                // Known from the image alone: no guest is booted for a case that cannot apply.
                match launcher.image(trial.profile) {
                    Ok(image) => {
                        if let Err(reason) = trial.case.applies_to(&image.manifest) {
                            return Outcome::Ignored { reason };
                        }
                    }
                    Err(e) => return Outcome::Failed { message: e.to_string() },
                }
                let name = format!("rave-fault-{}-{}", trial.profile, trial.case.name.replace('_', "-"));
                let machine = match self.boot(launcher, trial.profile, &name) {
                    Ok(machine) => machine,
                    Err(message) => return Outcome::Failed { message },
                };
                let outcome = match trial.case.applies_to(&machine.image().manifest) {
                    Err(reason) => Outcome::Ignored { reason },
                    Ok(()) => match catalog::prove_fault(&trial.case, &machine) {
                        Ok(()) => Outcome::Passed,
                        Err(message) => Outcome::Failed { message },
                    },
                };
                self.power_off(&machine);
                outcome
            }
        }
    }

    fn shared(&self, launcher: &Launcher, profile: Profile) -> Result<Arc<Machine>, String> {
        self.slots[&profile]
            .machine
            .get_or_init(|| self.boot(launcher, profile, &format!("rave-{profile}")).map(Arc::new))
            .clone()
    }

    fn boot(&self, launcher: &Launcher, profile: Profile, name: &str) -> Result<Machine, String> {
        self.events
            .emit("boot_started", serde_json::json!({"guest": name, "profile": profile}));
        let machine = launcher
            .boot(profile, name)
            .map_err(|e| format!("booting {name}: {e}"))?;
        self.events.emit(
            "boot_finished",
            serde_json::json!({"guest": name, "profile": profile, "stages": machine.boot_stages(),
                "pid": machine.pid(), "state_dir": machine.state_dir()}),
        );
        Ok(machine)
    }

    /// A case trial of `profile` is done; after the last one its guest goes down.
    fn release(&self, profile: Profile) {
        if self.attached.is_some() {
            return;
        }
        let slot = &self.slots[&profile];
        if slot.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(Ok(machine)) = slot.machine.get() {
                self.power_off(machine);
            }
        }
    }

    fn power_off(&self, machine: &Machine) {
        let report = machine.report();
        self.events
            .emit("guest_report", serde_json::to_value(&report).unwrap_or_default());
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).push(report);
        if !machine.shutdown(POWER_OFF_TIMEOUT) {
            eprintln!(
                "rave-harness: {} did not power off within {POWER_OFF_TIMEOUT:?}; QEMU was killed",
                machine.name()
            );
        }
    }
}

impl Attached {
    fn outcome(&self, trial: &Trial) -> Outcome {
        let manifest = &self.machine.image().manifest;
        if trial.profile != manifest.profile {
            return Outcome::Ignored {
                reason: format!("the attached target {} is {}", self.machine.name(), manifest.profile),
            };
        }
        if let Err(reason) = trial.case.applies_to(manifest) {
            return Outcome::Ignored { reason };
        }
        match trial.kind {
            TrialKind::Case => match (trial.case.run)(&self.machine) {
                Ok(()) => Outcome::Passed,
                Err(failure) => Outcome::Failed {
                    message: failure.to_string(),
                },
            },
            TrialKind::Fault if !self.allow_faults => Outcome::Ignored {
                reason: format!(
                    "fault tests break the target they run on; {} is attached, so they run only with --allow-faults (RAVE_ALLOW_FAULTS=1)",
                    self.machine.name()
                ),
            },
            TrialKind::Fault => match catalog::prove_fault(&trial.case, &self.machine) {
                Ok(()) => Outcome::Passed,
                Err(message) => Outcome::Failed { message },
            },
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_on_each_of_its_profiles_then_one_fault_each() {
        let all = trials(&Profile::ALL, true);
        assert_eq!(all.iter().filter(|t| t.kind == TrialKind::Case).count(), 45);
        assert_eq!(all.iter().filter(|t| t.kind == TrialKind::Fault).count(), 21);
        let p2_only = trials(&[Profile::P2], true);
        assert!(p2_only.iter().all(|t| t.profile == Profile::P2));
        assert_eq!(p2_only.iter().filter(|t| t.kind == TrialKind::Fault).count(), 21);
    }

    #[test]
    fn lanes_keep_a_profiles_cases_together_and_faults_apart() {
        let all = trials(&Profile::ALL, true);
        let lanes = lanes(&all);
        assert_eq!(lanes.len(), 3 + 21);
        for lane in &lanes[..3] {
            assert!(lane
                .iter()
                .all(|(_, t)| t.kind == TrialKind::Case && t.profile == lane[0].1.profile));
        }
        let p2 = lanes.iter().find(|l| l[0].1.profile == Profile::P2).unwrap();
        let first: Vec<String> = p2[..START_FIRST.len()].iter().map(|(_, t)| t.case.id()).collect();
        assert_eq!(first, START_FIRST, "the longest waits start first");
        let mut seen: Vec<usize> = lanes.iter().flatten().map(|(i, _)| *i).collect();
        seen.sort();
        assert_eq!(seen, (0..all.len()).collect::<Vec<_>>());
    }

    #[test]
    fn shards_cover_every_trial_once() {
        let all = trials(&Profile::ALL, true);
        let names: Vec<String> = all.iter().map(Trial::name).collect();
        let mut seen = Vec::new();
        for i in 1..=4 {
            seen.extend(shard(all.clone(), i, 4).iter().map(Trial::name));
        }
        assert_eq!(seen, names);
        assert_eq!(shard(all.clone(), 1, 1).len(), all.len());
    }
}
