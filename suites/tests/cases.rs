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

use std::sync::{Arc, Mutex};
use std::time::Instant;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use rave_harness::events::EventLog;
use rave_harness::manifest::Profile;
use rave_harness::report::{Outcome, RunReport};
use rave_harness::Launcher;
use rave_suites::runner::{self, Guests};

fn main() {
    let args = Arguments::from_args();
    let started = Instant::now();
    let guests = Arc::new(Guests::new(
        || Launcher::from_env().map_err(|e| e.to_string()),
        Arc::new(EventLog::disabled()),
    ));
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
    conclusion.exit();
}
