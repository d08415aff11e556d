//! QEMU's control socket (QMP), typed: one short connection per exchange,
//! each read bounded, every answer read as QEMU's schema says (the qapi
//! crate), not by matching monitor text. The user network's forwards have
//! no QMP command, so those two go through the human monitor.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A QMP exchange that failed.
#[derive(Debug, thiserror::Error)]
#[error("QMP {command} on {socket}: {message}")]
pub struct QmpError {
    /// The command.
    pub command: &'static str,
    /// The socket.
    pub socket: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// How long one QMP read may wait.
pub const QMP_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A QEMU's QMP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qmp {
    socket: PathBuf,
}

/// Where a migration (a save of the guest's state) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// Under way (or not started yet), with QEMU's name for the stage.
    Running(String),
    /// Done: the state file is whole.
    Completed,
    /// Failed, with QEMU's reason.
    Failed(String),
}

/// What the guest's CPUs are doing, as far as a restore cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Still loading an incoming state.
    Incoming,
    /// Stopped (a restored guest is, once loaded: it was saved stopped).
    Paused,
    /// Running.
    Running,
    /// Anything else, by QEMU's name.
    Other(String),
}

type Connection<'a> = qapi::Qmp<qapi::Stream<std::io::BufReader<&'a UnixStream>, &'a UnixStream>>;

impl Qmp {
    /// The QMP socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Qmp { socket: socket.into() }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the guest's CPUs.
    pub fn stop(&self) -> Result<(), QmpError> {
        self.exchange("stop", |q| q.execute(&qapi::qmp::stop {}).map(|_| ()))
    }

    /// Lets the guest's CPUs run.
    pub fn cont(&self) -> Result<(), QmpError> {
        self.exchange("cont", |q| q.execute(&qapi::qmp::cont {}).map(|_| ()))
    }

    /// Asks the guest to power off (an ACPI power button press).
    pub fn system_powerdown(&self) -> Result<(), QmpError> {
        self.exchange("system_powerdown", |q| {
            q.execute(&qapi::qmp::system_powerdown {}).map(|_| ())
        })
    }

    /// Starts saving the guest's memory and devices to `file` (QEMU 7.2 has
    /// no `file:` migration, so `exec:cat > FILE`); see [`Qmp::migration`].
    pub fn migrate_to_file(&self, file: &Path) -> Result<(), QmpError> {
        let quoted = crate::guest_command::quote(&file.display().to_string());
        let uri = format!("exec:cat > {quoted}");
        self.exchange("migrate", |q| {
            q.execute(&qapi::qmp::migrate {
                uri: Some(uri),
                channels: None,
                detach: None,
                resume: None,
            })
            .map(|_| ())
        })
    }

    /// Where the migration stands.
    pub fn migration(&self) -> Result<Migration, QmpError> {
        use qapi::qmp::MigrationStatus as S;
        let info = self.exchange("query-migrate", |q| q.execute(&qapi::qmp::query_migrate {}))?;
        Ok(match info.status {
            Some(S::completed) => Migration::Completed,
            Some(S::failed) | Some(S::cancelled) => {
                Migration::Failed(info.error_desc.unwrap_or_else(|| "no reason given".into()))
            }
            Some(other) => Migration::Running(format!("{other:?}")),
            None => Migration::Running("not started".into()),
        })
    }

    /// What the guest's CPUs are doing.
    pub fn run_state(&self) -> Result<RunState, QmpError> {
        use qapi::qmp::RunState as S;
        let status = self.exchange("query-status", |q| q.execute(&qapi::qmp::query_status {}))?;
        Ok(match status.status {
            S::inmigrate => RunState::Incoming,
            S::paused | S::postmigrate | S::prelaunch => RunState::Paused,
            S::running => RunState::Running,
            other => RunState::Other(format!("{other:?}")),
        })
    }

    /// Adds a forward from the host's `127.0.0.1:host_port` to the guest's
    /// `guest_port` on the user network (human monitor: QMP has no command for it).
    pub fn hostfwd_add(&self, host_port: u16, guest_port: u16) -> Result<(), QmpError> {
        self.human(
            "hostfwd_add",
            &format!("hostfwd_add tcp:127.0.0.1:{host_port}-:{guest_port}"),
        )
    }

    /// Removes the forward from the host's `127.0.0.1:host_port`.
    pub fn hostfwd_remove(&self, host_port: u16) -> Result<(), QmpError> {
        self.human("hostfwd_remove", &format!("hostfwd_remove tcp:127.0.0.1:{host_port}"))
    }

    /// A human-monitor command that says nothing when it works.
    fn human(&self, command: &'static str, line: &str) -> Result<(), QmpError> {
        let said = self.exchange(command, |q| {
            q.execute(&qapi::qmp::human_monitor_command {
                command_line: line.to_string(),
                cpu_index: None,
            })
        })?;
        if said.trim().is_empty() {
            Ok(())
        } else {
            Err(QmpError {
                command,
                socket: self.socket.clone(),
                message: said.trim().to_string(),
            })
        }
    }

    /// Runs one exchange on a fresh connection, each read bounded.
    fn exchange<T>(
        &self,
        command: &'static str,
        exchange: impl FnOnce(&mut Connection<'_>) -> Result<T, qapi::ExecuteError>,
    ) -> Result<T, QmpError> {
        let fail = |message: String| QmpError {
            command,
            socket: self.socket.clone(),
            message,
        };
        let stream = UnixStream::connect(&self.socket).map_err(|e| fail(e.to_string()))?;
        stream
            .set_read_timeout(Some(QMP_READ_TIMEOUT))
            .map_err(|e| fail(e.to_string()))?;
        let mut qmp = qapi::Qmp::from_stream(&stream);
        qmp.handshake().map_err(|e| fail(e.to_string()))?;
        exchange(&mut qmp).map_err(|e| fail(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_names_the_command_and_the_socket() {
        let err = Qmp::new("/nonexistent/qmp.sock").stop().unwrap_err().to_string();
        assert!(err.starts_with("QMP stop on /nonexistent/qmp.sock:"), "{err}");
    }
}
