//! No orphans. QEMU dies with the harness (parent-death signal, process
//! group, kill on drop); this module makes sure its state directory (overlay,
//! serial log, keys) goes too, whatever ends the harness:
//!
//! - SIGINT or SIGTERM: [`clean_up_on_signals`] kills every live guest,
//!   removes its directory, lets the run write its report (the runner reads
//!   [`stopping`]: trials not finished are cut short), and exits with
//!   128 + the signal; the run's deadline ([`exit_after`]) the same, with 124;
//! - SIGKILL, where nothing can run: every state directory lives under a
//!   state root the caller chooses ([`crate::BootOptions::state_root`]) and
//!   holds a lock its owner keeps for the guest's life; the next harness to
//!   start ([`sweep_stale`]) removes those whose lock is free.
//!
//! A directory kept on purpose ([`crate::BootOptions::keep_state`]) carries
//! a `keep` mark and is never swept.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::retry::{retry, Deadline, Poll};

/// The lock a live guest's owner holds in its state directory.
pub const OWNER_LOCK: &str = "owner.lock";
/// QEMU's pid, for the sweep.
pub const PID_FILE: &str = "qemu.pid";
/// How long a stopped run waits for a killed QEMU to be reaped.
pub const REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Marks a directory kept on purpose.
pub const KEEP_MARK: &str = "keep";

/// Live guests of this process: QEMU's pid (its process group) → its state directory.
static LIVE: Mutex<BTreeMap<u32, PathBuf>> = Mutex::new(BTreeMap::new());

/// The status a stop in progress (a signal, the run's deadline) exits with; 0: none.
/// Set before any guest is killed.
static STOPPING: AtomicI32 = AtomicI32::new(0);
/// Held by the stopping thread from before it sets [`STOPPING`] until every guest is gone.
static CLEANING: Mutex<()> = Mutex::new(());
/// Set by [`exit_status`] once a stopped run has written its report.
static REPORTED: Mutex<bool> = Mutex::new(false);
static REPORTED_CHANGED: std::sync::Condvar = std::sync::Condvar::new();
/// Why the run is stopping, for the trials it cuts short.
static STOP_REASON: Mutex<Option<String>> = Mutex::new(None);
/// How long a stopped run gets to write its report (summary, JUnit) before
/// the process exits anyway: its guests are dead by then, so what runs
/// ends at once.
pub const REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// A signal within this long of the first is taken as the same stop (see
/// [`clean_up_on_signals`]); a later one exits at once without a report.
pub const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// A stop in progress: the status the process will exit with (124 for the
/// run's deadline, 128 + the signal) and why, e.g. "run cut short at its
/// deadline of 60 s".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopping {
    /// The exit status.
    pub status: i32,
    /// Why, in words a report can carry.
    pub reason: String,
}

/// The stop in progress, if any (see [`Stopping`]).
pub fn stopping() -> Option<Stopping> {
    let status = STOPPING.load(Ordering::SeqCst);
    if status == 0 {
        return None;
    }
    let reason = STOP_REASON
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| "run cut short".into());
    Some(Stopping { status, reason })
}

/// Held by a live guest's owner; dropping it frees the directory for a sweep.
#[derive(Debug)]
pub struct OwnerLock {
    _lock: Flock<File>,
}

/// Takes the owner lock of a new state directory.
pub fn own(state_dir: &Path) -> std::io::Result<OwnerLock> {
    let file = File::create(state_dir.join(OWNER_LOCK))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| std::io::Error::from(errno))?;
    Ok(OwnerLock { _lock: lock })
}

/// Records a live guest, for the signal handler. A guest started while the
/// run is stopping is killed at once (its boot then fails).
pub fn register(pid: u32, state_dir: &Path) {
    let _ = std::fs::write(state_dir.join(PID_FILE), pid.to_string());
    live().insert(pid, state_dir.to_path_buf());
    if STOPPING.load(Ordering::SeqCst) != 0 {
        stop_every_guest();
    }
}

/// Forgets a guest that is gone.
pub fn unregister(pid: u32) {
    live().remove(&pid);
}

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u32, PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the state directories under `root` whose owner is gone (its
/// lock is free), killing a QEMU of theirs that still runs. Returns what it
/// removed. Only a clean-up: what it cannot remove it leaves.
pub fn sweep_stale(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return removed;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || dir.join(KEEP_MARK).exists() {
            continue;
        }
        let lock_path = dir.join(OWNER_LOCK);
        let Ok(file) = File::open(&lock_path) else {
            continue; // being made right now, or not ours
        };
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // its owner is alive
        };
        if let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // Only a QEMU that names this directory: the pid may have been reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// Kills every live guest of this process and removes its state directory.
fn stop_every_guest() {
    let guests = std::mem::take(&mut *live());
    for (pid, dir) in guests {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        // QEMU is this process's child: reap it, so it is gone, not a zombie,
        // before the exit (a kill takes milliseconds; the wait is bounded).
        let _ = retry(
            Deadline::new(REAP_TIMEOUT, std::time::Duration::from_millis(10)),
            || match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => Poll::<(), ()>::Pending(format!("QEMU {pid} still alive")),
                _ => Poll::Ready(()),
            },
        );
        if !dir.join(KEEP_MARK).exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The whole run's deadline: once `deadline` has passed, say so, stop every
/// guest, remove its state, let the run write its report, and exit with 124
/// (as `timeout` does).
pub fn exit_after(deadline: std::time::Duration) {
    let _ = std::thread::Builder::new().name("run-deadline".into()).spawn(move || {
        std::thread::sleep(deadline);
        stop_and_exit(
            124,
            &format!("run cut short at its deadline of {} s", deadline.as_secs()),
            "stopping every guest (raise it with --deadline)",
        );
    });
}

/// Says why, marks the stop, kills every live guest and removes its state.
fn stop_guests(status: i32, reason: &str, doing: &str) {
    let _cleaning = CLEANING.lock().unwrap_or_else(|p| p.into_inner());
    *STOP_REASON.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    STOPPING.store(status, Ordering::SeqCst);
    eprintln!("rave-harness: {reason}: {doing}");
    stop_every_guest();
}

/// Says `reason`, kills every live guest, removes its state and exits with
/// `status` at once: for a stop with no report to write (a signal while
/// `boot` is still booting or saving a state).
pub fn stop_now(status: i32, reason: &str) -> ! {
    stop_guests(status, reason, "stopping every guest and removing its state");
    std::process::exit(status);
}

/// Says why, kills every live guest, removes its state, and gives the run
/// [`REPORT_GRACE`] to write its report and exit with `status` through
/// [`exit_status`]; then exits with `status` itself.
fn stop_and_exit(status: i32, reason: &str, doing: &str) -> ! {
    stop_guests(status, reason, doing);
    // Until the run says its report is out (exit_status), at most REPORT_GRACE.
    let reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    let (reported, _) = REPORTED_CHANGED
        .wait_timeout_while(reported, REPORT_GRACE, |done| !*done)
        .unwrap_or_else(|p| p.into_inner());
    if *reported {
        std::process::exit(status);
    }
    eprintln!(
        "rave-harness: the report was not written within {} s of the stop: exiting without it",
        REPORT_GRACE.as_secs()
    );
    std::process::exit(status);
}

/// On SIGINT or SIGTERM: kill every live guest, remove its state directory,
/// let the run write its report, and exit with 128 + the signal; a second
/// signal more than [`REPEAT_WINDOW`] later exits at once. Call it
/// before any other thread starts, so they all inherit the blocked signals
/// and only the waiting thread sees them.
pub fn clean_up_on_signals() -> nix::Result<()> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(signal) = signals.wait() else { return };
            let _ = std::thread::Builder::new().name("stopping".into()).spawn(move || {
                stop_and_exit(
                    128 + signal as i32,
                    &format!("run cut short by {signal:?}"),
                    "stopping every guest and removing its state (a second signal exits at once)",
                )
            });
            // A second signal: no report, exit now (QEMU dies with the harness).
            // One that comes within REPEAT_WINDOW of the first is the same stop
            // delivered twice (to the process group, and passed on by a wrapper
            // such as scripts/stage/test.sh), not a person insisting.
            let first = std::time::Instant::now();
            while let Ok(again) = signals.wait() {
                if first.elapsed() < REPEAT_WINDOW {
                    continue;
                }
                eprintln!("rave-harness: {again:?} again: exiting without a report");
                std::process::exit(128 + again as i32);
            }
        })
        .map(|_| ())
        .map_err(|_| nix::Error::EAGAIN)
}

/// The status to exit with: `status`, unless a signal or the run's deadline
/// is stopping the run; then, once every guest is gone, the stop's own
/// status (128 + the signal, or 124), so a run whose cases failed because
/// their guests were killed does not exit 1.
pub fn exit_status(status: i32) -> i32 {
    if STOPPING.load(Ordering::SeqCst) == 0 {
        return status;
    }
    drop(CLEANING.lock().unwrap_or_else(|p| p.into_inner()));
    *REPORTED.lock().unwrap_or_else(|p| p.into_inner()) = true;
    REPORTED_CHANGED.notify_all();
    STOPPING.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_swept_only_once_its_owner_lets_go() {
        let states = tempfile::tempdir().unwrap();
        let root = states.path();
        let dir = tempfile::Builder::new()
            .prefix("sweep-test-")
            .tempdir_in(root)
            .unwrap()
            .keep();
        let owner = own(&dir).unwrap();
        assert!(
            !sweep_stale(root).contains(&dir),
            "swept while its owner holds the lock"
        );
        assert!(dir.is_dir());
        drop(owner);
        assert!(sweep_stale(root).contains(&dir));
        assert!(!dir.exists());
    }

    #[test]
    fn a_kept_directory_is_never_swept() {
        let states = tempfile::tempdir().unwrap();
        let root = states.path();
        let dir = tempfile::Builder::new()
            .prefix("keep-test-")
            .tempdir_in(root)
            .unwrap()
            .keep();
        drop(own(&dir).unwrap());
        std::fs::write(dir.join(KEEP_MARK), b"").unwrap();
        assert!(!sweep_stale(root).contains(&dir));
        assert!(dir.is_dir());
    }
}
