//! The rave run plan, shared by `rave-harness run` and `cargo test`: the
//! trials a run holds (every case on each of its profiles; with faults, each
//! case's fault test on the first of its profiles selected), as the core
//! runner's trials, and how they are scheduled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rave::image_store::{ImageSpec, ImageStore};
use rave::{Profile, Settings};
use rave_harness::host::HostResources;
use rave_harness::runner::events::{Event, EventSink};
use rave_harness::runner::{RunOptions, Trial, TrialKind};
use rave_harness::steps::StepPhase;

use crate::durations::Durations;
use crate::{alert_cycle, catalog};

/// How many of a shared guest's cases run at once, each over an SSH connection of its own.
pub const CASES_AT_ONCE: usize = 4;

/// How long a guest gets to power off before QEMU is killed.
pub const POWER_OFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Every trial of `profiles`: each case on each of its profiles, then (with
/// `faults`, and P2 among the profiles) the alert's fire-and-resolve trial
/// ([`alert_cycle`]), and each case's fault test on the
/// first of its profiles selected. Each is expected to take what the
/// committed durations table says (its median for a trial it lacks), which
/// orders the guests' lanes, longest first.
pub fn trials(profiles: &[Profile], faults: bool) -> Vec<Trial> {
    let durations = Durations::committed();
    listed(profiles, faults)
        .into_iter()
        .map(|t| match Duration::try_from_secs_f64(durations.seconds(&t.name)) {
            Ok(expected) => t.expected_to_take(expected),
            Err(_) => t,
        })
        .collect()
}

fn listed(profiles: &[Profile], faults: bool) -> Vec<Trial> {
    let cases = catalog::all();
    let mut out = Vec::new();
    for profile in profiles {
        for case in cases.iter().filter(|c| c.profiles.contains(profile)) {
            let check = case.check;
            out.push(
                Trial::new(
                    TrialKind::Case,
                    profile.as_str(),
                    case.suite,
                    case.name,
                    Arc::new(check),
                )
                .needing(case.components)
                .waiting_long(case.waits_long),
            );
        }
    }
    if faults {
        if profiles.contains(&Profile::P2) {
            out.push(
                Trial::new(
                    TrialKind::Fault,
                    Profile::P2.as_str(),
                    "p2_observability",
                    alert_cycle::TRIAL,
                    Arc::new(alert_cycle::alert_fires_and_resolves),
                )
                .needing(&["prometheus", "pushgateway"])
                .waiting_long(true),
            );
        }
        for case in &cases {
            if let Some(profile) = case.profiles.iter().find(|p| profiles.contains(p)) {
                let case = *case;
                for (name, fault) in case.faults() {
                    out.push(
                        Trial::new(
                            TrialKind::Fault,
                            profile.as_str(),
                            case.suite,
                            &name,
                            Arc::new(move |machine| case.prove_fault(&fault, machine)),
                        )
                        .needing(case.components),
                    );
                }
            }
        }
    }
    out
}

/// The trials known to be ignored before anything is built or booted, by
/// name, with why: those of a profile the flavor cannot build, and, where
/// the image is built already, those needing a component its manifest lists
/// as absent. A profile whose image is not built yet says nothing (its
/// trials are judged when it is). Nothing is built, booted or swept: this is
/// what `cargo test -- --list` (and so `cargo nextest list`) marks ignored.
pub fn known_ignored(trials: &[Trial], settings: &Settings) -> BTreeMap<String, String> {
    let store = ImageStore::new(settings);
    let mut images: BTreeMap<String, Result<Option<rave_harness::Image>, String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for trial in trials {
        let Ok(profile) = trial.group.parse::<Profile>() else {
            continue;
        };
        let image = images.entry(trial.group.clone()).or_insert_with(|| {
            let spec = ImageSpec {
                flavor: settings.flavor,
                profile,
                safe_mode: settings.safe_mode,
            };
            store.buildable(spec).map(|()| store.find(spec).ok().flatten())
        });
        let reason = match image {
            Err(why) => Some(why.clone()),
            Ok(Some(image)) => trial.needs.iter().find_map(|c| image.manifest.unit(c).err()),
            Ok(None) => None,
        };
        if let Some(reason) = reason.or_else(|| trial.ignored.clone()) {
            out.insert(trial.name.clone(), reason);
        }
    }
    out
}

/// Ignores the fault tests of a run against an attached target unless
/// `allow_faults`: they break the target they run on.
pub fn on_attached_target(trials: Vec<Trial>, target: &str, allow_faults: bool) -> Vec<Trial> {
    trials
        .into_iter()
        .map(|trial| match trial.kind {
            TrialKind::Fault if !allow_faults => trial.ignored_because(format!(
                "fault tests break the target they run on; {target} is attached, so they run only with --allow-faults (RAVE_ALLOW_FAULTS=1)"
            )),
            _ => trial,
        })
        .collect()
}

/// The runner's options for a run with `settings`: guests side by side as
/// `RAVE_GUESTS_AT_ONCE` says, else two guest CPUs per host CPU, as far as
/// the host's memory allows (one at a time against an attached target),
/// named `rave-…`; no reruns, no
/// attachments (the CLI's `--retries` and `--attachments` set those).
pub fn run_options(settings: &Settings) -> RunOptions {
    // An attached target is one machine: its lanes (its cases, and fault
    // tests when allowed, which break it) run one after another.
    let guests_at_once = match settings.attach {
        Some(_) => 1,
        None => HostResources::read().guests_at_once(settings.ram_mb, settings.cpus, settings.guests_at_once),
    };
    RunOptions {
        cases_at_once: CASES_AT_ONCE,
        guests_at_once,
        power_off_timeout: POWER_OFF_TIMEOUT,
        guest_prefix: "rave".into(),
        retries: 0,
        attachments: None,
    }
}

/// Plain progress lines on stderr, for a front end without a display of
/// its own (`cargo test`): boots, each trial's end, and each step that took
/// a while, so a long wait is never silent.
#[derive(Debug, Default)]
pub struct PlainProgress;

impl EventSink for PlainProgress {
    fn event(&self, event: &Event) {
        match event {
            Event::BootStarted { guest, .. } => eprintln!("booting {guest}"),
            Event::BootFailed { guest, error, .. } => eprintln!("{guest} could not be had: {error}"),
            Event::Step { case, step } => match step.phase {
                StepPhase::Began => {}
                StepPhase::Finished { after } | StepPhase::GaveUp { after } if after >= Duration::from_secs(5) => {
                    eprintln!("  {case}: {}", step.line())
                }
                _ => {}
            },
            Event::CaseFinished(record) => eprintln!(
                "{:<7} {} ({:.1} s)",
                record.label(),
                record.name,
                record.duration.as_secs_f64()
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Case;

    fn applicable(cases: &[Case], profiles: &[Profile]) -> usize {
        cases
            .iter()
            .map(|c| profiles.iter().filter(|p| c.profiles.contains(p)).count())
            .sum()
    }

    #[test]
    fn every_case_on_each_of_its_profiles_then_one_fault_each() {
        let cases = catalog::all();
        let all = trials(&Profile::ALL, true);
        let count = |kind| all.iter().filter(|t| t.kind == kind).count();
        assert_eq!(count(TrialKind::Case), applicable(&cases, &Profile::ALL));
        let faults: usize = cases.iter().map(|c| c.faults().len()).sum();
        // And the alert's fire-and-resolve trial, on P2.
        assert_eq!(count(TrialKind::Fault), faults + 1);
        let p2_only = trials(&[Profile::P2], true);
        assert!(p2_only.iter().all(|t| t.group == "p2"));
        let p2_faults = p2_only.iter().filter(|t| t.kind == TrialKind::Fault).count();
        assert_eq!(
            p2_faults,
            cases
                .iter()
                .filter(|c| c.profiles.contains(&Profile::P2))
                .map(|c| c.faults().len())
                .sum::<usize>()
                + 1
        );
        let p0_only = trials(&[Profile::P0], true);
        assert!(!p0_only.iter().any(|t| t.name.contains(alert_cycle::TRIAL)));
    }

    #[test]
    fn an_attached_target_gets_one_lane_at_a_time_whatever_is_asked() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v)))
                .collect()
        };
        let attached = Settings::from_vars(&vars(&[("RAVE_ATTACH", "g.json"), ("RAVE_GUESTS_AT_ONCE", "4")])).unwrap();
        assert_eq!(run_options(&attached).guests_at_once, 1);
    }

    #[test]
    fn an_attached_target_runs_no_fault_test_unless_allowed() {
        let all = trials(&[Profile::P2], true);
        let guarded = on_attached_target(all.clone(), "rave-p2", false);
        assert!(guarded
            .iter()
            .all(|t| (t.kind == TrialKind::Fault) == t.ignored.is_some()));
        assert!(on_attached_target(all, "rave-p2", true)
            .iter()
            .all(|t| t.ignored.is_none()));
    }
}
