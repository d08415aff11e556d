//! Choosing the accelerator. `/dev/kvm` can exist and open while KVM guests
//! hang (nested virtualisation), so "KVM works" is decided by booting the
//! guest's kernel under KVM and seeing it run to its first panic: with no root
//! filesystem it panics at once, and `panic=-1` plus `-no-reboot` make QEMU exit.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::qemu_command::Accel;
use crate::retry::{retry, Deadline, Poll, RetryError};

/// How the accelerator is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// Use KVM when a probe boot shows it works, else multi-threaded TCG.
    Auto,
    /// KVM or nothing: fail fast when it does not work.
    Kvm,
    /// Software emulation (multi-threaded TCG).
    Tcg,
}

impl std::fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

/// How long a KVM probe may take; a working KVM needs about a second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// KVM was demanded and does not work.
#[derive(Debug, thiserror::Error)]
#[error("KVM does not work on this host: {reason}; use TCG (or auto) to run under software emulation")]
pub struct KvmUnusable {
    /// What the probe found.
    pub reason: String,
}

/// The accelerator chosen, and a one-line warning when `auto` fell back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    /// The accelerator to use.
    pub accel: Accel,
    /// Said once to the user when `auto` fell back to TCG.
    pub warning: Option<String>,
}

/// Decides the accelerator for `choice`, probing KVM with `kernel` when needed.
///
/// A probe's verdict is kept in `cache_dir` for as long as the host stays up
/// (keyed by its boot id), so a run pays for the probe once, not per guest.
pub fn decide(choice: AccelChoice, qemu: &Path, kernel: &Path, cache_dir: &Path) -> Result<AccelDecision, KvmUnusable> {
    match choice {
        AccelChoice::Tcg => Ok(AccelDecision {
            accel: Accel::Tcg,
            warning: None,
        }),
        AccelChoice::Kvm => probe_kvm_cached(qemu, kernel, cache_dir)
            .map(|()| AccelDecision {
                accel: Accel::Kvm,
                warning: None,
            })
            .map_err(|reason| KvmUnusable { reason }),
        AccelChoice::Auto => Ok(match probe_kvm_cached(qemu, kernel, cache_dir) {
            Ok(()) => AccelDecision {
                accel: Accel::Kvm,
                warning: None,
            },
            Err(reason) => AccelDecision {
                accel: Accel::Tcg,
                warning: Some(format!(
                    "warning: KVM unusable ({reason}); using multi-threaded TCG (slower)"
                )),
            },
        }),
    }
}

/// [`probe_kvm`], remembered per host boot in `cache_dir/kvm-probe`.
fn probe_kvm_cached(qemu: &Path, kernel: &Path, cache_dir: &Path) -> Result<(), String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let record = cache_dir.join("kvm-probe");
    if let Some(verdict) = std::fs::read_to_string(&record)
        .ok()
        .and_then(|text| text.strip_prefix(boot_id.trim()).map(|rest| rest.trim().to_string()))
        .filter(|_| !boot_id.trim().is_empty())
    {
        return if verdict == "ok" { Ok(()) } else { Err(verdict) };
    }
    let scratch =
        tempfile::tempdir_in(cache_dir).map_err(|e| format!("no scratch directory in {}: {e}", cache_dir.display()))?;
    let verdict = probe_kvm(qemu, kernel, scratch.path());
    let text = format!(
        "{}\n{}\n",
        boot_id.trim(),
        verdict.as_ref().err().map(String::as_str).unwrap_or("ok")
    );
    // Only a cache: failing to write it costs the next run a probe, nothing else.
    let _ = std::fs::write(&record, text);
    verdict
}

/// Boots `kernel` under KVM with no root filesystem and waits for its panic.
/// `Err` says why KVM is not usable.
pub fn probe_kvm(qemu: &Path, kernel: &Path, scratch: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Err(format!("/dev/kvm cannot be opened: {e}"));
    }
    let serial = scratch.join("kvm-probe.serial");
    let mut child = Command::new(qemu)
        .args([
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", qemu.display()))?;
    let waited = retry(
        Deadline::new(PROBE_TIMEOUT, Duration::from_millis(100)),
        || match child.try_wait() {
            Ok(Some(status)) => Poll::<_, String>::Ready(status),
            Ok(None) => Poll::Pending("the probe guest is still running".into()),
            Err(e) => Poll::Abort(e.to_string()),
        },
    );
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    match waited {
        Ok(_) if console.contains("Kernel panic") => Ok(()),
        Ok(status) => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let said = stderr.lines().last().unwrap_or("no error output").to_string();
            Err(format!(
                "a KVM probe guest exited ({status}) before its kernel ran: {said}"
            ))
        }
        Err(RetryError::Expired { waited, .. }) => {
            let _ = child.kill();
            let _ = child.wait();
            let last = console
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("nothing on the console");
            Err(format!(
                "a KVM probe guest hung for {waited:.0?} (last console line: {last:?})"
            ))
        }
        Err(RetryError::Aborted(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}
