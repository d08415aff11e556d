//! The cases as libtest trials: `cargo test -p rave-suites -- --list`.
//!
//! - `p0::systemd_services::nginx`: a case on the shared P0 guest, booted once
//!   for all the cases of that profile and powered down after the last one.
//! - `fault::p0::systemd_services::nginx`: the case's fault test, on a fresh
//!   guest of its own: green first, then the fault, then it must be red.
//!
//! A profile the flavor cannot build, or a component the image lacks, makes
//! the trial *ignored* with the reason; nothing passes without running. The
//! run ends with the same summary table as `rave-harness run`.
//!
//! `RAVE_ATTACH=guest.json` runs the trials against a running target (the
//! JSON line `rave-harness boot` prints) instead of booting; its fault tests
//! run only with `RAVE_ALLOW_FAULTS=1`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use rave_harness::events::EventLog;
use rave_harness::manifest::Profile;
use rave_harness::report::{Outcome, RunReport};
use rave_harness::target::TargetDescription;
use rave_harness::{Launcher, Machine};
use rave_suites::runner::{self, Guests};

/// How long an attached target gets to accept the SSH login.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    // Before any thread starts: SIGINT/SIGTERM then end every guest and its state.
    if let Err(e) = rave_harness::reaper::clean_up_on_signals() {
        eprintln!("blocking SIGINT/SIGTERM: {e}");
        std::process::exit(2);
    }
    let args = Arguments::from_args();
    let started = Instant::now();
    let events = Arc::new(EventLog::disabled());
    let guests = Arc::new(
        match std::env::var_os("RAVE_ATTACH").filter(|v| !v.is_empty() && !args.list) {
            Some(file) => {
                let allow_faults = std::env::var("RAVE_ALLOW_FAULTS").is_ok_and(|v| v == "1");
                match TargetDescription::load(Path::new(&file))
                    .map_err(|e| e.to_string())
                    .and_then(|d| Machine::attach(&d, ATTACH_TIMEOUT).map_err(|e| e.to_string()))
                {
                    Ok(machine) => Guests::attached(machine, allow_faults, events),
                    Err(e) => {
                        eprintln!("RAVE_ATTACH: {e}");
                        std::process::exit(2);
                    }
                }
            }
            None => Guests::new(|| Launcher::from_env().map_err(|e| e.to_string()), events),
        },
    );
    let records = Arc::new(Mutex::new(Vec::new()));
    let planned = runner::trials(&Profile::ALL, true);
    let mut selected = Vec::new();
    let mut trials = Vec::new();
    for trial in planned {
        let (guests, records) = (Arc::clone(&guests), Arc::clone(&records));
        let libtest_trial = Trial::ignorable_test(trial.name(), move || {
            let record = guests.run(&trial);
            let result = match &record.outcome {
                Outcome::Passed => Ok(Completion::Completed),
                Outcome::Ignored { reason } => Ok(Completion::ignored_with(reason.clone())),
                Outcome::Failed { message } => Err(Failed::from(message.as_str())),
            };
            records.lock().unwrap_or_else(|p| p.into_inner()).push(record);
            result
        });
        if !args.is_filtered_out(&libtest_trial) && !args.is_ignored(&libtest_trial) {
            selected.push(trial);
        }
        trials.push(libtest_trial);
    }
    guests.expect(&selected);
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    // Guests go (and their state directories with them) before the exit.
    let report = RunReport {
        records: std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner())),
        guests: guests.finish(),
        duration: started.elapsed(),
    };
    drop(guests);
    if !listing && !report.records.is_empty() {
        println!("\n{}", report.summary());
    }
    // A run stopped by SIGINT/SIGTERM exits with 128 + the signal, not as its killed cases say.
    let normal = if conclusion.has_failed() { 101 } else { 0 };
    let status = rave_harness::reaper::exit_status(normal);
    if status != normal {
        std::process::exit(status);
    }
    conclusion.exit();
}
