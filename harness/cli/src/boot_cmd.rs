//! `rave-harness boot`: one guest, and how to reach it as one JSON line.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use anyhow::Context;
use rave::{Flavor, Profile};
use rave_harness::image::MANIFEST_FILE;
use rave_harness::target::TargetDescription;
use rave_harness::Machine;
use rave_suites::plan::POWER_OFF_TIMEOUT;

/// Boots `profile`, prints its [`TargetDescription`], and with `keep` stays
/// up until SIGINT or SIGTERM; then powers the guest down.
pub fn boot(
    profile: Profile,
    flavor: Option<Flavor>,
    keep: bool,
    cold: bool,
    until_contract: bool,
) -> anyhow::Result<i32> {
    // Blocked before any thread starts, so every thread inherits the mask and
    // only the thread below sees them. Until the guest is up (a boot, or a
    // saved state being made, can take minutes) a signal kills it and exits
    // 128 + the signal at once; once it is up, it powers the guest down.
    let signals = shutdown_signals();
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    let up = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = mpsc::channel();
    {
        let up = Arc::clone(&up);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    if !up.load(Ordering::SeqCst) {
                        rave_harness::reaper::stop_now(128 + signal as i32, &format!("{signal:?} while booting"));
                    }
                    let _ = stop.send(signal);
                }
            })
            .context("starting the signal thread")?;
    }
    let launcher = crate::launcher(flavor, cold)?;
    let machine = launcher.boot(profile, &format!("rave-{profile}"))?;
    if until_contract {
        machine.wait_for_components(rave::launcher::CONTRACT_UP_TIMEOUT)?;
    }
    let description = describe(&machine)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&description)?)?;
    stdout.flush()?;
    drop(stdout);
    up.store(true, Ordering::SeqCst);
    if keep {
        let signal = stopped.recv().context("waiting for SIGINT/SIGTERM")?;
        eprintln!("rave-harness: {signal:?}: powering {} down", machine.name());
    }
    if !machine.shutdown(POWER_OFF_TIMEOUT) {
        eprintln!(
            "rave-harness: {} did not power off within {POWER_OFF_TIMEOUT:?}; QEMU was killed",
            machine.name()
        );
    }
    Ok(0)
}

/// How to reach `machine`: an attached run reaches its ports from outside
/// through forwards it adds over the QMP socket.
fn describe(machine: &Machine) -> anyhow::Result<TargetDescription> {
    let image = machine.image();
    Ok(TargetDescription {
        name: machine.name().into(),
        profile: image.manifest.profile.clone(),
        flavor: image.manifest.flavor.clone(),
        ssh_host: "127.0.0.1".into(),
        ssh_port: machine.ssh_port(),
        ssh_user: machine.ssh_user().into(),
        ssh_key: machine.access().client_key.clone(),
        ssh_host_key: machine.access().host_public.clone(),
        https_host: machine.https_addr().map(|a| a.ip().to_string()),
        https_port: machine.https_addr().map(|a| a.port()),
        ca_cert: machine.ca_cert().map(Into::into),
        manifest: image.dir.join(MANIFEST_FILE),
        forwards: BTreeMap::new(),
        qmp_socket: machine.qmp_socket(),
        serial_log: machine.serial_log(),
        state_dir: machine.state_dir().map(Into::into),
        pid: machine.pid(),
        boot_stages: machine.boot_stages(),
        guest_uptime_at_first_command: machine.guest_uptime_at_first_command(),
    })
}

fn shutdown_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}
