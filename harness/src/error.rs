//! Everything that can go wrong booting or using a guest, and which kind of
//! red each is when a check meets it (see [`crate::outcome`]).

use std::time::Duration;

use crate::guest_command::short_command;
use crate::host::HostError;
use crate::outcome::{CheckError, Red};
use crate::qemu_process::QemuError;
use crate::qmp::QmpError;
use crate::ssh::SshError;
use crate::test_access::KeyError;

/// Everything that can go wrong booting or using a guest.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The host cannot run it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The run's keys could not be made.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// QEMU could not be started.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// QEMU could not be controlled over its QMP socket.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The state directory, the overlay or another file could not be made.
    #[error("{what}: {message}")]
    Setup {
        /// What was being made.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// QEMU is gone: the guest panicked, powered off, or QEMU was killed.
    #[error("guest {name}: QEMU exited ({status}); QEMU said: {qemu_said}\n--- serial console (last lines) ---\n{serial_tail}")]
    QemuExited {
        /// The guest.
        name: String,
        /// How QEMU ended.
        status: String,
        /// The end of QEMU's own output.
        qemu_said: String,
        /// The end of the console.
        serial_tail: String,
    },
    /// A wait or a command ran out of time.
    #[error("guest {name}: timed out after {waited:.1?} waiting for {what}; last seen: {last_seen}\n--- serial console (last lines) ---\n{serial_tail}")]
    Timeout {
        /// The guest.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// What the last look found.
        last_seen: String,
        /// The end of the console.
        serial_tail: String,
    },
    /// SSH failed.
    #[error("guest {name}: {source}")]
    Ssh {
        /// The guest.
        name: String,
        /// The SSH step that failed.
        source: Box<SshError>,
    },
    /// An HTTPS exchange failed (connection, TLS verification, timeout).
    #[error("guest {name}: {message}")]
    Https {
        /// The guest.
        name: String,
        /// What failed.
        message: String,
    },
    /// `succeed` ran a command that failed.
    #[error(
        "guest {name}: command `{}` exited {status}\nstdout: {stdout}\nstderr: {stderr}",
        short_command(command)
    )]
    CommandFailed {
        /// The guest.
        name: String,
        /// The command.
        command: String,
        /// Its status.
        status: i32,
        /// Its output.
        stdout: String,
        /// Its errors.
        stderr: String,
    },
    /// `fail` ran a command that succeeded.
    #[error(
        "guest {name}: command `{}` succeeded but was expected to fail\nstdout: {stdout}",
        short_command(command)
    )]
    CommandSucceeded {
        /// The guest.
        name: String,
        /// The command.
        command: String,
        /// Its output.
        stdout: String,
    },
    /// Checks running at once held the guest longer than a command may wait:
    /// every SSH connection busy, or another check's exclusive section.
    #[error("guest {name}: a command could not start: {message}")]
    Busy {
        /// The guest.
        name: String,
        /// What it waited for, and how long.
        message: String,
    },
    /// A verb that needs a guest booted by the harness, used on an attached target.
    #[error("guest {name} is an attached target: {what} needs a guest booted by the harness")]
    NotBooted {
        /// The target.
        name: String,
        /// What was asked.
        what: String,
    },
    /// A unit cannot become active: it failed, stopped with nothing queued, or does not exist.
    #[error("guest {name}: unit {unit} will not become active: {state}\n{diagnostics}")]
    UnitNotActive {
        /// The guest.
        name: String,
        /// The unit.
        unit: String,
        /// Its state, e.g. `ActiveState=failed SubState=failed`.
        state: String,
        /// `systemctl status` and its journal tail.
        diagnostics: String,
    },
}

impl MachineError {
    /// Which kind of red this is when a check meets it:
    /// - the guest behaved against the claim (a unit that will not become
    ///   active, a command that exited non-zero, an HTTPS request refused or
    ///   not verified): [`Red::Failed`];
    /// - a wait or a command ran out of time: [`Red::TimedOut`];
    /// - the harness lost the guest or could not do its part (QEMU exited,
    ///   SSH failed, a command ended by a signal or without a status, setup,
    ///   keys, the host): [`Red::HarnessError`].
    pub fn red(&self) -> Red {
        match self {
            MachineError::UnitNotActive { .. }
            | MachineError::CommandFailed { .. }
            | MachineError::CommandSucceeded { .. }
            | MachineError::Https { .. } => Red::Failed,
            MachineError::Timeout { .. } => Red::TimedOut,
            MachineError::Host(_)
            | MachineError::Keys(_)
            | MachineError::Qemu(_)
            | MachineError::Qmp(_)
            | MachineError::Setup { .. }
            | MachineError::QemuExited { .. }
            | MachineError::Ssh { .. }
            | MachineError::Busy { .. }
            | MachineError::NotBooted { .. } => Red::HarnessError,
        }
    }
}

impl From<MachineError> for CheckError {
    fn from(e: MachineError) -> Self {
        CheckError {
            red: e.red(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_guest_is_a_harness_error_and_a_refusing_one_a_failure() {
        let exited = MachineError::QemuExited {
            name: "g".into(),
            status: "signal 9".into(),
            qemu_said: "nothing".into(),
            serial_tail: String::new(),
        };
        assert_eq!(CheckError::from(exited).red, Red::HarnessError);
        let inactive = MachineError::UnitNotActive {
            name: "g".into(),
            unit: "nginx.service".into(),
            state: "ActiveState=failed".into(),
            diagnostics: String::new(),
        };
        assert_eq!(CheckError::from(inactive).red, Red::Failed);
        let timeout = MachineError::Timeout {
            name: "g".into(),
            what: "x".into(),
            waited: Duration::from_secs(1),
            last_seen: "y".into(),
            serial_tail: String::new(),
        };
        assert_eq!(CheckError::from(timeout).red, Red::TimedOut);
    }
}
