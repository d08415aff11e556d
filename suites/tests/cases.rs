//! The cases as libtest trials: `cargo test -p rave-suites --test cases -- --list`.
//!
//! - `p0::systemd_services::nginx`: a case on the shared P0 guest, booted once
//!   for all the cases of that profile and powered down after the last one.
//! - `fault::p0::systemd_services::nginx`: the case's fault test, on a fresh
//!   guest of its own: green first, then the fault, then it must be red.
//!
//! libtest only selects (its filters, `--skip`, `--exact`) and reports: the
//! selected trials run through the same runner and scheduler as
//! `rave-harness run` (`rave_suites::plan`, `rave_harness::runner`), with
//! plain progress lines on stderr while they run. A profile the flavor cannot
//! build, or a component the image lacks, makes the trial *ignored* with the
//! reason; nothing passes without running, and a run whose selected trials
//! were all ignored fails ("nothing was proved"), as `rave-harness run` does.
//! The run ends with the same summary table as `rave-harness run`.
//!
//! `RAVE_ATTACH=guest.json` runs the trials against a running target (the
//! JSON line `rave-harness boot` prints) instead of booting; its fault tests
//! run only with `RAVE_ALLOW_FAULTS=1`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial as LibtestTrial};
use rave::{Launcher, Profile, Settings};
use rave_harness::outcome::Outcome;
use rave_harness::runner::{self, AttachedTarget, Guests};
use rave_harness::target::TargetDescription;
use rave_harness::Machine;
use rave_suites::plan::{self, PlainProgress};

/// How long an attached target gets to accept the SSH login.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    // Before any thread starts: SIGINT/SIGTERM then end every guest and its state.
    if let Err(e) = rave_harness::reaper::clean_up_on_signals() {
        eprintln!("blocking SIGINT/SIGTERM: {e}");
        std::process::exit(2);
    }
    let args = Arguments::from_args();
    let planned = plan::trials(&Profile::ALL, true);
    let settings = Settings::from_env();
    // Known before anything builds or boots: listed as ignored, so `cargo
    // nextest` skips them (and never counts them as passed).
    // Not against an attached target: the local image store says nothing of it.
    let known = match &settings {
        Ok(settings) if settings.attach.is_none() => plan::known_ignored(&planned, settings),
        _ => Default::default(),
    };
    let placeholder = |t: &runner::Trial| {
        LibtestTrial::ignorable_test(t.name.clone(), || Ok(Completion::Completed))
            .with_ignored_flag(known.contains_key(&t.name))
    };
    if args.list {
        libtest_mimic::run(&args, planned.iter().map(placeholder).collect()).exit();
    }
    // The trials the filters name; those known ignored go to the runner as
    // ignored (so the summary says why, and an all-ignored run fails).
    let matched: Vec<runner::Trial> = planned
        .iter()
        .filter(|t| !args.is_filtered_out(&placeholder(t)))
        .cloned()
        .collect();
    let selected: Vec<runner::Trial> = matched
        .iter()
        .filter_map(|t| match (known.get(&t.name), args.is_ignored(&placeholder(t))) {
            (Some(reason), _) if !args.ignored && !args.include_ignored => {
                Some(t.clone().ignored_because(reason.clone()))
            }
            (_, false) => Some(t.clone()),
            (_, true) => None,
        })
        .collect();
    let settings = settings.unwrap_or_else(|e| fail(&e.to_string()));
    let (guests, selected): (Box<dyn Guests>, Vec<runner::Trial>) = match &settings.attach {
        Some(file) => {
            let machine = TargetDescription::load(file)
                .map_err(|e| e.to_string())
                .and_then(|d| Machine::attach(&d, ATTACH_TIMEOUT).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| fail(&format!("RAVE_ATTACH: {e}")));
            let name = machine.name().to_string();
            let trials = plan::on_attached_target(selected, &name, settings.allow_faults);
            (
                Box::new(AttachedTarget {
                    machine: Arc::new(machine),
                }),
                trials,
            )
        }
        None => (Box::new(Launcher::new(settings.clone())), selected),
    };
    let report = runner::run(
        &selected,
        &*guests,
        &plan::run_options(&settings),
        Arc::new(PlainProgress),
    );
    drop(guests);
    let mut outcomes: HashMap<String, Outcome> = report
        .records
        .iter()
        .map(|r| (r.name.clone(), r.outcome.clone()))
        .collect();
    let trials = planned
        .iter()
        .map(|t| {
            let outcome = outcomes.remove(&t.name);
            let known_ignored = known.contains_key(&t.name);
            LibtestTrial::ignorable_test(t.name.clone(), move || match outcome {
                Some(Outcome::Passed) => Ok(Completion::Completed),
                Some(Outcome::Ignored { reason }) => Ok(Completion::ignored_with(reason)),
                Some(red) => Err(Failed::from(format!(
                    "{}: {}",
                    red.red().map_or("red", |r| r.words()),
                    red.message().unwrap_or("")
                ))),
                None => Ok(Completion::ignored_with("not selected")),
            })
            .with_ignored_flag(known_ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if !report.records.is_empty() {
        println!("\n{}", report.summary());
    }
    // As `rave-harness run`: trials were selected and every one was ignored,
    // so nothing was proved, and that is not green.
    let nothing_proved = !report.records.is_empty() && report.passed() + report.flaky() == 0 && report.reds() == 0;
    if nothing_proved {
        eprintln!("every selected trial was ignored: nothing was proved");
    }
    // A run stopped by SIGINT/SIGTERM exits with 128 + the signal, not as its killed cases say.
    let normal = if conclusion.has_failed() || nothing_proved {
        101
    } else {
        0
    };
    let status = rave_harness::reaper::exit_status(normal);
    if status != normal || nothing_proved {
        std::process::exit(status);
    }
    conclusion.exit();
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2);
}
