//! Running commands in the guest: `execute`, `succeed`, `fail`, the waits on
//! a command, and the exclusive section.

use std::time::Duration;

use super::{last_line, Machine, GATE_TIMEOUT};
use crate::error::MachineError;
use crate::guest_command::short_command;
use crate::retry::Poll;
use crate::ssh::{CommandOutput, SshError, SshSession};
use crate::ssh_pool::PoolError;

impl Machine {
    /// Runs `command` in the guest as the SSH user, under bash with `set
    /// -euo pipefail` (see [`crate::guest_command`]): its exit status and
    /// output. The machine's command deadline (60 s unless the boot options
    /// say otherwise) bounds the whole of it; past it the command is ended in
    /// the guest and this is a [`MachineError::Timeout`] with the output so
    /// far. A command that a signal ended, or whose channel closed without an
    /// exit status, is an error ([`MachineError::Ssh`]), never an exit status.
    ///
    /// ```no_run
    /// # fn demo(machine: &rave_harness::Machine) -> Result<(), rave_harness::MachineError> {
    /// let out = machine.execute("systemctl is-active nginx.service")?;
    /// if out.status != 0 {
    ///     println!("nginx is {}", out.stdout.trim());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn execute(&self, command: &str) -> Result<CommandOutput, MachineError> {
        self.execute_within(command, self.command_timeout)
    }

    /// [`Machine::execute`] for a command that may take up to `timeout`.
    pub fn execute_within(&self, command: &str, timeout: Duration) -> Result<CommandOutput, MachineError> {
        self.ensure_running()?;
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        let session = self
            .ssh
            .take(self.command_timeout, || {
                SshSession::connect(
                    self.ssh_addr(),
                    &self.ssh_user,
                    &self.access.client_key,
                    &self.access.host_key_blob,
                    self.command_timeout,
                )
            })
            .map_err(|e| match e {
                PoolError::Connect(e) => self.ssh_error(e),
                busy @ PoolError::Busy { .. } => self.busy(busy),
            })?;
        match session.exec_with_timeout(command, timeout) {
            Ok(output) => Ok(output),
            Err(e) => {
                session.discard();
                self.ensure_running()?;
                Err(match e {
                    SshError::TimedOut { how, output, .. } => MachineError::Timeout {
                        name: self.name.clone(),
                        what: format!("command `{}` to finish ({how})", short_command(command)),
                        waited: timeout,
                        last_seen: output.to_string(),
                        serial_tail: self.serial_tail(),
                    },
                    other => self.ssh_error(other),
                })
            }
        }
    }

    /// Runs `command` and returns its stdout; an error when it exits non-zero.
    pub fn succeed(&self, command: &str) -> Result<String, MachineError> {
        let out = self.execute(command)?;
        if out.status != 0 {
            return Err(MachineError::CommandFailed {
                name: self.name.clone(),
                command: command.into(),
                status: out.status,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        Ok(out.stdout)
    }

    /// Runs `command` and returns its stdout; an error when it exits zero
    /// (or was ended without an exit status: that is no failure either).
    pub fn fail(&self, command: &str) -> Result<String, MachineError> {
        let out = self.execute(command)?;
        if out.status == 0 {
            return Err(MachineError::CommandSucceeded {
                name: self.name.clone(),
                command: command.into(),
                stdout: out.stdout,
            });
        }
        Ok(out.stdout)
    }

    /// Runs `command` every half second until it succeeds, at most
    /// `timeout`; returns its stdout.
    pub fn wait_until_succeeds(&self, command: &str, timeout: Duration) -> Result<String, MachineError> {
        let what = format!("`{}` to succeed", short_command(command));
        self.wait_until(&what, timeout, Duration::from_millis(500), || {
            match self.execute(command) {
                Ok(out) if out.status == 0 => Poll::Ready(out.stdout),
                Ok(out) => Poll::Pending(format!("exit {}: {}", out.status, last_line(&out.stderr, &out.stdout))),
                Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            }
        })
    }

    /// Runs `command` every half second until it exits non-zero, at most
    /// `timeout`; returns its stdout. A command ended without an exit status
    /// does not count as failing: the wait goes on.
    pub fn wait_until_fails(&self, command: &str, timeout: Duration) -> Result<String, MachineError> {
        let what = format!("`{}` to fail", short_command(command));
        self.wait_until(&what, timeout, Duration::from_millis(500), || {
            match self.execute(command) {
                Ok(out) if out.status != 0 => Poll::Ready(out.stdout),
                Ok(out) => Poll::Pending(format!("exit 0: {}", last_line(&out.stdout, "no output"))),
                Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            }
        })
    }

    /// Runs `section` with no other thread's command or request reaching
    /// the guest (a check that counts requests must not count another
    /// check's); commands already on their way finish first. Sections nest.
    pub fn exclusively<T>(&self, section: impl FnOnce() -> T) -> Result<T, MachineError> {
        self.gate.exclusive(GATE_TIMEOUT, section).map_err(|e| self.busy(e))
    }

    pub(super) fn ssh_error(&self, source: SshError) -> MachineError {
        MachineError::Ssh {
            name: self.name.clone(),
            source: Box::new(source),
        }
    }
}
