//! The cases as libtest trials: `cargo test -p rave-suites -- --list`.
//!
//! - `p0::systemd_services::nginx`: a case on the shared P0 guest, booted once
//!   for all the cases of that profile and powered down after the last one.
//! - `fault::p0::systemd_services::nginx`: the case's fault test, on a fresh
//!   guest of its own: green first, then the fault, then it must be red.
//!
//! A profile the flavor cannot build, or a component the image lacks, makes
//! the trial *ignored* with the reason; nothing passes without running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use rave_harness::manifest::Profile;
use rave_harness::{Launcher, Machine};
use rave_suites::catalog::{self, Case};

/// One profile's shared guest.
#[derive(Default)]
struct Slot {
    machine: OnceLock<Result<Arc<Machine>, String>>,
    remaining: AtomicUsize,
}

/// Guests and the launcher, made on first use so `--list` boots nothing.
#[derive(Default)]
struct Pool {
    launcher: OnceLock<Result<Launcher, String>>,
    slots: BTreeMap<Profile, Slot>,
}

impl Pool {
    fn launcher(&self) -> Result<&Launcher, Failed> {
        self.launcher
            .get_or_init(|| Launcher::from_env().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Failed::from(e.as_str()))
    }

    /// `Ok(None)` when the profile can be booted; `Ok(Some(reason))` when the flavor cannot build it.
    fn unbuildable(&self, profile: Profile) -> Result<Option<String>, Failed> {
        let launcher = self.launcher()?;
        Ok(launcher.store.buildable(launcher.spec(profile)).err())
    }

    fn shared(&self, profile: Profile) -> Result<Arc<Machine>, Failed> {
        let launcher = self.launcher()?;
        self.slots[&profile]
            .machine
            .get_or_init(|| {
                launcher
                    .boot(profile, &format!("rave-{profile}"))
                    .map(Arc::new)
                    .map_err(|e| format!("booting {profile}: {e}"))
            })
            .clone()
            .map_err(Failed::from)
    }

    /// A trial of `profile` is done; the last one powers its guest down.
    fn release(&self, profile: Profile) {
        let slot = &self.slots[&profile];
        if slot.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(Ok(machine)) = slot.machine.get() {
                machine.shutdown(Duration::from_secs(30));
            }
        }
    }
}

fn case_trial(pool: &Arc<Pool>, profile: Profile, case: Case) -> Trial {
    let pool = Arc::clone(pool);
    Trial::ignorable_test(format!("{profile}::{}", case.id()), move || {
        let outcome = run_case(&pool, profile, &case);
        pool.release(profile);
        outcome
    })
}

fn run_case(pool: &Pool, profile: Profile, case: &Case) -> Result<Completion, Failed> {
    if let Some(reason) = pool.unbuildable(profile)? {
        return Ok(Completion::ignored_with(reason));
    }
    let machine = pool.shared(profile)?;
    if let Err(reason) = case.applies_to(&machine.image().manifest) {
        return Ok(Completion::ignored_with(reason));
    }
    (case.run)(&machine).map_err(|e| Failed::from(e.to_string()))?;
    Ok(Completion::Completed)
}

fn fault_trial(pool: &Arc<Pool>, profile: Profile, case: Case) -> Trial {
    let pool = Arc::clone(pool);
    Trial::ignorable_test(format!("fault::{profile}::{}", case.id()), move || {
        if let Some(reason) = pool.unbuildable(profile)? {
            return Ok(Completion::ignored_with(reason));
        }
        let name = format!("rave-fault-{profile}-{}", case.name.replace('_', "-"));
        let machine = pool
            .launcher()?
            .boot(profile, &name)
            .map_err(|e| Failed::from(format!("booting {name}: {e}")))?;
        if let Err(reason) = case.applies_to(&machine.image().manifest) {
            return Ok(Completion::ignored_with(reason));
        }
        catalog::prove_fault(&case, &machine).map_err(Failed::from)?;
        Ok(Completion::Completed)
    })
}

fn main() {
    let args = Arguments::from_args();
    let mut pool = Pool::default();
    for profile in Profile::ALL {
        pool.slots.insert(profile, Slot::default());
    }
    let cases = catalog::all();
    let pool = Arc::new(pool);
    let mut trials = Vec::new();
    for profile in Profile::ALL {
        for case in cases.iter().filter(|c| c.profiles.contains(&profile)) {
            trials.push(case_trial(&pool, profile, *case));
        }
    }
    for case in &cases {
        trials.push(fault_trial(&pool, case.profiles[0], *case));
    }
    // A guest is powered down after the last of its trials that will run.
    for trial in &trials {
        if args.is_filtered_out(trial) || args.is_ignored(trial) {
            continue;
        }
        if let Some(profile) = trial.name().split("::").next().and_then(|p| p.parse::<Profile>().ok()) {
            pool.slots[&profile].remaining.fetch_add(1, Ordering::SeqCst);
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Guests go (and their state directories with them) before the exit.
    drop(pool);
    conclusion.exit();
}
