//! A running QEMU that cannot outlive the harness.
//!
//! - It runs in its own process group, so one `killpg` takes it and anything it started.
//! - It gets SIGKILL when the harness dies (parent-death signal), even by SIGKILL.
//! - Dropping the handle kills it; `shutdown` first asks the guest to power off over QMP.
//!
//! The parent-death signal fires when the *thread* that forked the child ends,
//! not the process. Test runners end their threads after each test, so every
//! QEMU is forked from one spawner thread that lives as long as the process.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::qmp::Qmp;
use crate::retry::{retry, Deadline, Poll};

/// Errors of starting, watching and stopping QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU could not be started at all.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The binary tried.
        binary: String,
        /// Why.
        source: std::io::Error,
    },
    /// The log file for QEMU's own output could not be created.
    #[error("could not create {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks `command` from the process-lifetime spawner thread.
fn spawn_from_lifetime_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("qemu-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // The receiver may be gone if the caller panicked; nothing to tell then.
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the QEMU spawner thread must start");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the QEMU spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the QEMU spawner thread did not answer"))?
}

/// A QEMU process owned by the harness.
#[derive(Debug)]
pub struct QemuProcess {
    child: Child,
    qmp: Qmp,
    exit: Option<ExitStatus>,
}

impl QemuProcess {
    /// Starts `argv` (binary first) in its own process group with a parent-death
    /// signal; QEMU's stdout and stderr go to `log`.
    pub fn spawn(argv: &[String], log: &Path, qmp_socket: &Path) -> Result<Self, QemuError> {
        let out = File::create(log).map_err(|source| QemuError::Log {
            path: log.into(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| QemuError::Log {
            path: log.into(),
            source,
        })?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let parent = std::process::id() as i32;
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // The harness may have died before prctl took effect.
                if nix::unistd::getppid().as_raw() != parent {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = spawn_from_lifetime_thread(command).map_err(|source| QemuError::Spawn {
            binary: argv[0].clone(),
            source,
        })?;
        Ok(QemuProcess {
            child,
            qmp: Qmp::new(qmp_socket),
            exit: None,
        })
    }

    /// QEMU's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How QEMU ended, if it has. A QEMU already reaped elsewhere (the
    /// reaper kills and reaps every guest when the run is stopped, and then
    /// `try_wait` fails with ECHILD) has ended: as killed by SIGKILL.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = match self.child.try_wait() {
                Ok(status) => status,
                Err(_) => Some(std::os::unix::process::ExitStatusExt::from_raw(libc_sigkill())),
            };
        }
        self.exit
    }

    /// Asks the guest to power off (QMP `system_powerdown`) and waits up to
    /// `timeout` for QEMU to exit; kills the process group after that.
    /// Returns whether the guest went down by itself.
    pub fn shutdown(&mut self, timeout: Duration) -> bool {
        if self.exit_status().is_some() {
            return true;
        }
        if self.qmp.system_powerdown().is_err() {
            self.kill();
            return false;
        }
        let waited = retry(Deadline::new(timeout, Duration::from_millis(100)), || {
            match self.exit_status() {
                Some(status) => Poll::<_, ()>::Ready(status),
                None => Poll::Pending("QEMU still running".into()),
            }
        });
        if waited.is_err() {
            self.kill();
            return false;
        }
        true
    }

    /// Its control socket.
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// Kills the whole process group at once and reaps QEMU.
    pub fn kill(&mut self) {
        if self.exit_status().is_some() {
            return;
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        self.exit = Some(
            self.child
                .wait()
                .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(libc_sigkill())),
        );
    }
}

/// The raw wait status of a process killed by SIGKILL.
fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Alive means present and not a zombie waiting for a reaper.
    fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .map(|rest| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    #[test]
    fn drop_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let grandchild_file = dir.path().join("grandchild");
        // A stand-in for QEMU that starts a grandchild in its group.
        let script = format!("sleep 300 & echo $! > '{}'; wait", grandchild_file.display());
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), script];
        let process = QemuProcess::spawn(&argv, &dir.path().join("log"), &dir.path().join("qmp.sock")).unwrap();
        let pid = process.pid();
        let grandchild: u32 =
            retry(
                Deadline::new(Duration::from_secs(5), Duration::from_millis(10)),
                || match std::fs::read_to_string(&grandchild_file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    Some(p) => Poll::<u32, ()>::Ready(p),
                    None => Poll::Pending("no pid file".into()),
                },
            )
            .unwrap();
        assert!(alive(pid) && alive(grandchild));
        drop(process);
        let start = Instant::now();
        while alive(grandchild) && start.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        assert!(!alive(pid), "QEMU stand-in survived its handle");
        assert!(!alive(grandchild), "a child in QEMU's process group survived");
    }

    #[test]
    fn a_qemu_reaped_elsewhere_has_exited() {
        // As the reaper does when a run is stopped: kill the group, reap the pid.
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = vec!["sleep".into(), "300".into()];
        let mut process = QemuProcess::spawn(&argv, &dir.path().join("log"), &dir.path().join("qmp.sock")).unwrap();
        assert!(process.exit_status().is_none());
        let pid = Pid::from_raw(process.pid() as i32);
        killpg(pid, Signal::SIGKILL).unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap();
        assert!(
            process.exit_status().is_some(),
            "a QEMU reaped by someone else still reads as running: waits would poll it until their deadline"
        );
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = QemuProcess::spawn(
            &["/nonexistent/qemu".to_string()],
            &dir.path().join("log"),
            &dir.path().join("q"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("could not start /nonexistent/qemu"),
            "{err}"
        );
    }
}
