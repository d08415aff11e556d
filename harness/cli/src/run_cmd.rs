//! `rave-harness run`: build what is missing, boot, run the cases, report.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rave_harness::events::EventLog;
use rave_harness::report::{Outcome, RunReport};
use rave_harness::target::TargetDescription;
use rave_harness::Machine;
use rave_suites::runner::{self, Guests, Trial};

use crate::progress::Progress;
use crate::{FlavorArg, ProfileArg};

/// How long a push to the Pushgateway may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// `run`'s options.
#[derive(Args)]
pub struct RunArgs {
    /// p0, p1, p2 or all.
    #[arg(long, value_enum, default_value = "all")]
    profile: ProfileArg,
    /// The image flavor (default: RAVE_FLAVOR, else debian).
    #[arg(long, value_enum)]
    flavor: Option<FlavorArg>,
    /// Only trials whose name contains this (e.g. `security::`, `p2::http_health::webhook_endpoint`).
    #[arg(long)]
    filter: Option<String>,
    /// Also run each case's fault test (a fresh guest each: green, fault, red).
    #[arg(long)]
    faults: bool,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write JSON lines of events here (boot stages, case start and finish, guest figures, the run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only shard I of N (1-based), e.g. 2/3.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Push the run's figures to this Pushgateway (e.g. http://127.0.0.1:9091).
    #[arg(long)]
    pushgateway: Option<String>,
    /// Run against a running target instead of booting: the JSON line `rave-harness boot` prints.
    #[arg(long, value_name = "FILE")]
    attach: Option<PathBuf>,
    /// The whole run's deadline in seconds: past it, every guest is stopped and the run exits 124.
    #[arg(long, value_name = "SECONDS", default_value_t = 5400)]
    deadline: u64,
    /// Boot every guest cold instead of restoring the images' saved states (RAVE_COLD=1).
    #[arg(long)]
    cold: bool,
    /// Let fault tests break the attached target (they run on it, not on a fresh guest).
    #[arg(long, requires = "attach")]
    allow_faults: bool,
}

/// How long an attached target gets to accept the SSH login.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// `I/N` with 1 <= I <= N.
fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("--shard {text:?}: use I/N with 1 <= I <= N, e.g. 2/3");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n) = (
        i.trim().parse::<usize>().map_err(|_| bad())?,
        n.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Runs the trials asked for; exit 0 when every one that ran passed.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // Before any thread starts: SIGINT/SIGTERM then end every guest and its state.
    rave_harness::reaper::clean_up_on_signals().context("blocking SIGINT/SIGTERM")?;
    rave_harness::reaper::exit_after(Duration::from_secs(args.deadline));
    let started = Instant::now();
    let target = match &args.attach {
        Some(file) => Some(TargetDescription::load(file)?),
        None => None,
    };
    if target.is_some() && args.faults && !args.allow_faults {
        bail!("--faults with --attach would break the attached target: add --allow-faults to let it, or drop --faults");
    }
    let profiles = match &target {
        Some(t) if args.profile != ProfileArg::All && !args.profile.profiles().contains(&t.profile) => {
            bail!("--profile {:?} but the attached target is {}", args.profile, t.profile)
        }
        Some(t) => vec![t.profile],
        None => args.profile.profiles(),
    };
    let mut trials: Vec<Trial> = runner::trials(&profiles, args.faults);
    if let Some(pattern) = &args.filter {
        trials.retain(|t| t.name().contains(pattern.as_str()));
    }
    if let Some((index, count)) = args.shard {
        trials = runner::shard(trials, index, count);
    }
    if trials.is_empty() {
        bail!("no trial matches (see rave-harness list)");
    }
    let events = Arc::new(match &args.json {
        Some(path) => EventLog::create(path).with_context(|| format!("creating {}", path.display()))?,
        None => EventLog::disabled(),
    });
    let progress = Progress::new();
    let guests = match &target {
        Some(target) => {
            progress.set(format!("attaching to {}", target.name));
            let machine = Machine::attach(target, ATTACH_TIMEOUT)?;
            Guests::attached(machine, args.allow_faults, Arc::clone(&events))
        }
        None => {
            let mut launcher = crate::launcher(args.flavor.map(Into::into))?;
            launcher.cold |= args.cold;
            build_images(&launcher, &trials, &progress)?;
            let launcher = Mutex::new(Some(launcher));
            Guests::new(
                move || {
                    launcher
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .ok_or_else(|| "the launcher was already taken".to_string())
                },
                Arc::clone(&events),
            )
        }
    };
    guests.expect(&trials);
    // Lanes side by side as far as the host allows (never over-committing its
    // CPUs or memory); within a lane, a shared guest's cases run at once over
    // connections of their own, up to `runner::CASES_AT_ONCE`.
    let width = match &target {
        Some(_) => 1,
        None => rave_harness::host_check::HostResources::read().guests_at_once(&rave_harness::RunConfig::from_env()?),
    };
    let queue = Mutex::new(
        runner::lanes(&trials)
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    );
    let done = Mutex::new(Vec::new());
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let run_one = |index: usize, trial: runner::Trial| {
        progress.set(format!(
            "[{}/{}] {}",
            finished.load(Ordering::SeqCst) + 1,
            trials.len(),
            trial.name()
        ));
        let record = guests.run(&trial);
        finished.fetch_add(1, Ordering::SeqCst);
        progress.line(format!(
            "{:<7} {} ({:.1} s)",
            record.outcome.label(),
            record.name(),
            record.duration.as_secs_f64()
        ));
        if let Outcome::Failed { message } = &record.outcome {
            progress.line(indent(message));
        }
        done.lock().unwrap_or_else(|p| p.into_inner()).push((index, record));
    };
    std::thread::scope(|scope| {
        for _ in 0..width {
            scope.spawn(|| loop {
                let Some(lane) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                let workers = runner::CASES_AT_ONCE.min(lane.len());
                let lane = Mutex::new(lane.into_iter());
                let next = || lane.lock().unwrap_or_else(|p| p.into_inner()).next();
                std::thread::scope(|inner| {
                    for _ in 0..workers {
                        inner.spawn(|| {
                            while let Some((index, trial)) = next() {
                                run_one(index, trial);
                            }
                        });
                    }
                });
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(index, _)| *index);
    let records: Vec<_> = done.into_iter().map(|(_, record)| record).collect();
    progress.set("powering guests down");
    let report = RunReport {
        records,
        guests: guests.finish(),
        duration: started.elapsed(),
    };
    progress.finish();
    events.emit("run_finished", serde_json::to_value(&report)?);
    println!("{}", report.summary());
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(url) = &args.pushgateway {
        if let Err(e) = rave_harness::pushgateway::push(url, &report, PUSH_TIMEOUT) {
            eprintln!("rave-harness: the figures were not pushed: {e}");
        }
    }
    Ok(verdict(&report))
}

/// 0 when something ran and nothing failed; 1 otherwise (all ignored proves nothing).
fn verdict(report: &RunReport) -> i32 {
    if report.failed() > 0 {
        return 1;
    }
    if report.passed() == 0 {
        eprintln!("rave-harness: no trial ran (every one was ignored): nothing was proved");
        return 1;
    }
    0
}

/// Builds the images the trials need, before any boot, so a build's output is not mixed with cases.
fn build_images(launcher: &rave_harness::Launcher, trials: &[Trial], progress: &Progress) -> anyhow::Result<()> {
    let mut profiles: Vec<_> = trials.iter().map(|t| t.profile).collect();
    profiles.dedup();
    for profile in profiles {
        let spec = launcher.spec(profile);
        if launcher.store.buildable(spec).is_err() {
            continue; // its trials report why, as ignored
        }
        progress.set(format!("{}: image", spec.name()));
        launcher
            .store
            .ensure_reporting(spec, &|step| {
                progress.set(step.to_string());
                progress.line(step);
            })
            .with_context(|| format!("building {}", spec.name()))?;
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rave_harness::report::TrialKind;

    #[test]
    fn shard_values() {
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        for bad in ["0/3", "4/3", "1/0", "x/2", "3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_ignored_is_not_green() {
        let record = |outcome| rave_harness::report::CaseRecord {
            suite: "s".into(),
            case: "c".into(),
            profile: rave_harness::Profile::P0,
            kind: TrialKind::Case,
            outcome,
            duration: Duration::ZERO,
        };
        let mut report = RunReport {
            records: vec![record(Outcome::Ignored { reason: "r".into() })],
            ..RunReport::default()
        };
        assert_eq!(verdict(&report), 1);
        report.records.push(record(Outcome::Passed));
        assert_eq!(verdict(&report), 0);
        report.records.push(record(Outcome::Failed { message: "m".into() }));
        assert_eq!(verdict(&report), 1);
    }
}
