//! The `rave-harness` command: build images, boot a guest.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rave_harness::manifest::Profile;
use rave_harness::{Launcher, Machine};

/// Boots the rave system images under QEMU and checks that they work.
#[derive(Parser)]
#[command(name = "rave-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, find or list images.
    Images {
        #[command(subcommand)]
        command: ImagesCmd,
    },
    /// Boot one guest and print how to reach it as one JSON object.
    Boot {
        /// The profile: p0, p1 or p2.
        #[arg(long)]
        profile: Profile,
        /// Stay up until Ctrl-C or SIGTERM, then power the guest down.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Build the image of a profile (or all) when the cache lacks it.
    Build {
        /// p0, p1, p2 or all.
        #[arg(long, default_value = "all")]
        profile: String,
    },
    /// Print the directory of a profile's cached image (build it first).
    Path {
        /// The profile: p0, p1 or p2.
        #[arg(long)]
        profile: Profile,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("rave-harness: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Images {
            command: ImagesCmd::Build { profile },
        } => images_build(&profile),
        Cmd::Images {
            command: ImagesCmd::Path { profile },
        } => {
            let launcher = Launcher::from_env()?;
            let image = launcher.store.find(launcher.spec(profile))?.with_context(|| {
                format!("no {profile} image in the cache: run rave-harness images build --profile {profile}")
            })?;
            println!("{}", image.dir.display());
            Ok(())
        }
        Cmd::Boot { profile, keep } => boot(profile, keep),
    }
}

fn images_build(which: &str) -> Result<()> {
    let launcher = Launcher::from_env()?;
    let profiles: Vec<Profile> = match which {
        "all" => Profile::ALL
            .into_iter()
            .filter(|p| launcher.store.buildable(launcher.spec(*p)).is_ok())
            .collect(),
        one => vec![one.parse().map_err(anyhow::Error::msg)?],
    };
    for profile in profiles {
        let image = launcher.image(profile)?;
        println!("{profile}: {}", image.dir.display());
    }
    Ok(())
}

fn boot(profile: Profile, keep: bool) -> Result<()> {
    // Blocked before any thread starts, so every thread inherits the mask and
    // the signals wait for `sigwait` below instead of killing the process.
    let signals = shutdown_signals();
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    let launcher = Launcher::from_env()?;
    let machine = launcher.boot(profile, &format!("rave-{profile}"))?;
    let image = machine.image();
    let description = serde_json::json!({
        "name": machine.name(),
        "profile": image.manifest.profile,
        "flavor": image.manifest.flavor,
        "ssh_host": "127.0.0.1",
        "ssh_port": machine.ssh_port(),
        "ssh_user": image.manifest.ssh_user,
        "ssh_key": machine.access().client_key,
        "ssh_host_key": machine.access().host_public,
        "https_host": "127.0.0.1",
        "https_port": machine.https_port(),
        "ca_cert": image.ca_cert(),
        "manifest": image.dir.join(rave_harness::manifest::MANIFEST_FILE),
        "serial_log": machine.serial_log(),
        "state_dir": machine.state_dir(),
        "pid": machine.pid(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{description}")?;
    stdout.flush()?;
    drop(stdout);
    if keep {
        let signal = signals.wait().context("waiting for SIGINT/SIGTERM")?;
        eprintln!("rave-harness: {signal:?}: powering {} down", machine.name());
    }
    power_down(&machine);
    Ok(())
}

fn shutdown_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

fn power_down(machine: &Machine) {
    if !machine.shutdown(Duration::from_secs(30)) {
        eprintln!(
            "rave-harness: {} did not power off within 30 s; QEMU was killed",
            machine.name()
        );
    }
}
