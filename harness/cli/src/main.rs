//! The `rave-harness` command: build images, boot a guest, run the cases,
//! report for a person and for a pipeline.

mod boot_cmd;
mod doctor_cmd;
mod durations_cmd;
mod images_cmd;
mod list_cmd;
mod progress;
mod run_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use rave::{Flavor, Profile, Settings};

/// Boots the rave system images (P0, P1, P2) under QEMU and proves over SSH
/// and HTTPS that each works.
#[derive(Parser)]
#[command(name = "rave-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// A profile, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileArg {
    P0,
    P1,
    P2,
    All,
}

impl ProfileArg {
    fn profiles(self) -> Vec<Profile> {
        match self {
            ProfileArg::P0 => vec![Profile::P0],
            ProfileArg::P1 => vec![Profile::P1],
            ProfileArg::P2 => vec![Profile::P2],
            ProfileArg::All => Profile::ALL.to_vec(),
        }
    }
}

/// An image flavor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FlavorArg {
    Debian,
    Nixos,
}

impl From<FlavorArg> for Flavor {
    fn from(f: FlavorArg) -> Flavor {
        match f {
            FlavorArg::Debian => Flavor::Debian,
            FlavorArg::Nixos => Flavor::Nixos,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Build what is missing, boot, run the cases, print a summary; exit 1 on any failure.
    Run(run_cmd::RunArgs),
    /// Boot one guest and print how to reach it as one JSON line.
    Boot {
        /// The profile: p0, p1 or p2.
        #[arg(long)]
        profile: Profile,
        /// The image flavor (default: RAVE_FLAVOR, else debian).
        #[arg(long, value_enum)]
        flavor: Option<FlavorArg>,
        /// Stay up until Ctrl-C or SIGTERM, then power the guest down.
        #[arg(long)]
        keep: bool,
        /// Boot cold instead of restoring the image's saved state (RAVE_COLD=1).
        #[arg(long)]
        cold: bool,
        /// Print only once every unit of the contract is active (stage `contract`).
        #[arg(long)]
        until_contract: bool,
    },
    /// Build, list or find images.
    Images {
        #[command(subcommand)]
        command: images_cmd::ImagesCmd,
    },
    /// List the cases per profile, and their fault tests.
    List {
        /// p0, p1, p2 or all.
        #[arg(long, value_enum, default_value = "all")]
        profile: ProfileArg,
        /// Only shard I of N of `run --faults --shard I/N`, with the seconds each shard is estimated at.
        #[arg(long, value_parser = run_cmd::parse_shard)]
        shard: Option<(usize, usize)>,
        /// The durations the shards are balanced by (as `run --durations`).
        #[arg(long, value_name = "FILE", requires = "shard")]
        durations: Option<PathBuf>,
    },
    /// Print the durations table `run --shard` balances by, from runs' `--json` events
    /// (commit it as suites/durations.json).
    Durations {
        /// Events files of `rave-harness run --json`.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// Start from this table: trials the events lack keep its figures.
        #[arg(long, value_name = "TABLE")]
        merge: Option<PathBuf>,
    },
    /// Check that this host can run the harness: one verdict per line.
    Doctor {
        /// Where the image cache is (default: RAVE_CACHE_DIR, else ~/.cache/rave-harness).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run_cmd::run(args),
        Cmd::Boot {
            profile,
            flavor,
            keep,
            cold,
            until_contract,
        } => boot_cmd::boot(profile, flavor.map(Flavor::from), keep, cold, until_contract),
        Cmd::Images { command } => images_cmd::images(command),
        Cmd::List {
            profile,
            shard,
            durations,
        } => list_cmd::list(&profile.profiles(), shard, durations.as_deref()),
        Cmd::Durations { events, merge } => durations_cmd::durations(&events, merge),
        Cmd::Doctor { cache_dir } => doctor_cmd::doctor(cache_dir),
    };
    match result {
        Ok(code) => std::process::exit(rave_harness::reaper::exit_status(code)),
        Err(e) => {
            eprintln!("rave-harness: {}", one_line(&e));
            std::process::exit(rave_harness::reaper::exit_status(2));
        }
    }
}

/// The error and its causes on one line, each cause said once (many errors
/// already carry their cause's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// The settings of the environment, read once, with `--flavor` over
/// `RAVE_FLAVOR` and `--cold` over `RAVE_COLD`.
fn settings(flavor: Option<Flavor>, cold: bool) -> anyhow::Result<Settings> {
    let mut settings = Settings::from_env()?;
    if let Some(flavor) = flavor {
        settings.flavor = flavor;
    }
    settings.cold |= cold;
    Ok(settings)
}

/// The launcher of the environment's settings (see [`settings`]).
fn launcher(flavor: Option<Flavor>, cold: bool) -> anyhow::Result<rave::Launcher> {
    Ok(rave::Launcher::new(settings(flavor, cold)?))
}
