//! `rave-harness run`: build what is missing, boot, run the cases, report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rave::Profile;
use rave_harness::runner::events::{EventSink, Fanout, JsonLines};
use rave_harness::runner::report::RunReport;
use rave_harness::runner::{self, pushgateway, AttachedTarget, Guests, Trial};
use rave_harness::target::TargetDescription;
use rave_harness::Machine;
use rave_suites::plan;
use rave_suites::shard::{self, Durations};

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
    /// Only trials whose name contains this (e.g. `security::`, `p2::http_health::webhook_security`).
    #[arg(long)]
    filter: Option<String>,
    /// Also run each case's fault test (a fresh guest each: green, fault, red).
    #[arg(long)]
    faults: bool,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Keep each red trial's journals and serial log here, linked from the JUnit
    /// (default: `attachments/` beside the --junit file; none without --junit).
    #[arg(long, value_name = "DIR")]
    attachments: Option<PathBuf>,
    /// Run a red trial again, up to N more times, each on a fresh guest: one that then
    /// passes is reported flaky (exit 3 when nothing else was red), not passed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: usize,
    /// Write JSON lines of events here (boot stages, case start and finish, guest figures, the run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only shard I of N (1-based), e.g. 2/3: shards are balanced by the trials' measured
    /// durations (suites/durations.json, or --durations), a profile's cases kept on one shard.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// The durations --shard balances by: a table `rave-harness durations` wrote, or a run's
    /// --json events (default: the committed suites/durations.json).
    #[arg(long, value_name = "FILE", requires = "shard")]
    pub durations: Option<PathBuf>,
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
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
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
    let settings = crate::settings(args.flavor.map(Into::into), args.cold)?;
    let target = match &args.attach {
        Some(file) => Some(TargetDescription::load(file)?),
        None => None,
    };
    if target.is_some() && args.faults && !args.allow_faults {
        bail!("--faults with --attach would break the attached target: add --allow-faults to let it, or drop --faults");
    }
    let profiles = match &target {
        Some(t) => {
            let profile: Profile = t
                .profile
                .parse()
                .map_err(|e| anyhow::anyhow!("the attached target's profile: {e}"))?;
            if args.profile != ProfileArg::All && !args.profile.profiles().contains(&profile) {
                bail!("--profile {:?} but the attached target is {profile}", args.profile)
            }
            vec![profile]
        }
        None => args.profile.profiles(),
    };
    let mut trials = plan::trials(&profiles, args.faults);
    if let Some(pattern) = &args.filter {
        trials.retain(|t| t.name.contains(pattern.as_str()));
    }
    if let Some((index, count)) = args.shard {
        let durations = durations(args.durations.as_deref())?;
        let known = durations.known(&trials);
        if known < trials.len() {
            eprintln!(
                "rave-harness: the durations table has no figure for {} of the {} trials selected: they count as its median",
                trials.len() - known,
                trials.len()
            );
        }
        let before = trials.len();
        trials = shard::shard(trials, index, count, &durations);
        if trials.is_empty() && before > 0 {
            bail!("shard {index}/{count} holds no trial: the {before} selected make fewer units than shards (a profile's cases are one); use fewer shards");
        }
    }
    if trials.is_empty() {
        bail!("no trial matches (see rave-harness list)");
    }
    // Found now, not after the run: a report that cannot be written.
    if let Some(path) = &args.junit {
        std::fs::File::create(path).with_context(|| format!("--junit {}: cannot write there", path.display()))?;
    }
    let progress = Arc::new(Progress::new());
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![progress.clone()];
    if let Some(path) = &args.json {
        sinks.push(Arc::new(
            JsonLines::create(path).with_context(|| format!("creating {}", path.display()))?,
        ));
    }
    let events: Arc<dyn EventSink> = Arc::new(Fanout(sinks));
    let mut options = plan::run_options(&settings);
    options.retries = args.retries;
    options.attachments = args.attachments.clone().or_else(|| {
        args.junit
            .as_ref()
            .map(|j| j.parent().unwrap_or(std::path::Path::new("")).join("attachments"))
    });
    let guests: Box<dyn Guests> = match &target {
        Some(target) => {
            progress.set(format!("attaching to {}", target.name));
            let machine = Machine::attach(target, ATTACH_TIMEOUT)?;
            trials = plan::on_attached_target(trials, &target.name, args.allow_faults);
            options.guests_at_once = 1;
            Box::new(AttachedTarget {
                machine: Arc::new(machine),
            })
        }
        None => {
            let launcher = rave::Launcher::new(settings);
            build_images(&launcher, &trials, &progress)?;
            Box::new(launcher)
        }
    };
    let report = runner::run(&trials, &*guests, &options, events);
    drop(guests);
    progress.finish();
    println!("{}", report.summary());
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(url) = &args.pushgateway {
        if let Err(e) = pushgateway::push(url, &report, PUSH_TIMEOUT) {
            eprintln!("rave-harness: the figures were not pushed: {e}");
        }
    }
    Ok(verdict(&report))
}

/// The durations shards are balanced by: `path` (a table, or a run's JSON
/// events), else the committed table.
pub fn durations(path: Option<&std::path::Path>) -> anyhow::Result<Durations> {
    let Some(path) = path else {
        return Ok(Durations::committed());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("--durations {}", path.display()))?;
    Durations::parse(&text)
        .or_else(|table_error| {
            Durations::from_events(&text)
                .ok()
                .filter(|d| !d.is_empty())
                .ok_or(table_error)
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "--durations {}: neither a durations table nor a run's JSON events ({e}); write one with `rave-harness durations EVENTS.jsonl`",
                path.display()
            )
        })
}

/// 0 when something ran and nothing was red; 1 when something was red, or
/// nothing ran (all ignored proves nothing); 3 when nothing was red but some
/// trial passed only on a rerun (flaky).
fn verdict(report: &RunReport) -> i32 {
    if report.reds() > 0 {
        return 1;
    }
    if report.passed() + report.flaky() == 0 {
        eprintln!("rave-harness: no trial ran (every one was ignored): nothing was proved");
        return 1;
    }
    if report.flaky() > 0 {
        eprintln!(
            "rave-harness: {} trial(s) passed only on a rerun (flaky): exit 3",
            report.flaky()
        );
        return 3;
    }
    0
}

/// Builds the images the trials need, before any boot, so a build's output
/// is not mixed with the cases'. A build that fails is its trials' harness
/// error (the runner says so), not the run's end.
fn build_images(launcher: &rave::Launcher, trials: &[Trial], progress: &Progress) -> anyhow::Result<()> {
    if rave_harness::reaper::stopping().is_some() {
        return Ok(()); // the run is cut short: its trials say so, not started
    }
    let mut profiles: Vec<Profile> = trials.iter().filter_map(|t| t.group.parse().ok()).collect();
    profiles.sort();
    profiles.dedup();
    // An unbuildable image's trials report why, as ignored.
    let specs: Vec<_> = profiles
        .into_iter()
        .map(|profile| launcher.spec(profile))
        .filter(|&spec| launcher.store.buildable(spec).is_ok())
        .collect();
    progress.set("images");
    let built = launcher.store.ensure_all(&specs, &|_, step| {
        progress.set(step.to_string());
        progress.line(step);
    });
    for (spec, image) in specs.iter().zip(built) {
        if let Err(e) = image {
            progress.line(format!("building {}: {e}", spec.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rave_harness::outcome::Outcome;
    use rave_harness::runner::report::{Rerun, TrialRecord};
    use rave_harness::runner::TrialKind;

    #[test]
    fn shard_values() {
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        for bad in ["0/3", "4/3", "1/0", "x/2", "3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn all_ignored_is_not_green_and_every_red_is_red() {
        let record = |outcome| TrialRecord {
            name: "p0::s::c".into(),
            suite: "s".into(),
            case: "c".into(),
            profile: "p0".into(),
            kind: TrialKind::Case,
            outcome,
            duration: Duration::ZERO,
            steps: Vec::new(),
            reruns: Vec::new(),
            attachments: Vec::new(),
        };
        let mut report = RunReport {
            records: vec![record(Outcome::Ignored { reason: "r".into() })],
            ..RunReport::default()
        };
        assert_eq!(verdict(&report), 1);
        report.records.push(record(Outcome::Passed));
        assert_eq!(verdict(&report), 0);
        let mut flaky = report.clone();
        let mut record_flaky = record(Outcome::Passed);
        record_flaky.reruns.push(Rerun {
            outcome: Outcome::Failed { message: "m".into() },
            duration: Duration::ZERO,
        });
        flaky.records.push(record_flaky);
        assert_eq!(verdict(&flaky), 3, "flaky is not passed");
        for red in [
            Outcome::Failed { message: "m".into() },
            Outcome::HarnessError { message: "m".into() },
            Outcome::TimedOut { message: "m".into() },
        ] {
            let mut with_red = report.clone();
            with_red.records.push(record(red));
            assert_eq!(verdict(&with_red), 1);
        }
    }
}
