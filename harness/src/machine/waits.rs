//! The one wait, and the waits built on it: for SSH, for a port to open or
//! close, for the guest's CPUs to be quiet.

use std::time::Duration;

use super::{lock, Machine};
use crate::error::MachineError;
use crate::retry::{retry, Deadline, Poll, RetryError};
use crate::ssh::{SshError, SshSession};

/// The idle share of the guest's CPUs that [`Machine::wait_until_quiet`] waits for.
pub const QUIET_IDLE: f64 = 0.9;

/// How long the first login attempt on a booting guest waits for sshd's
/// banner before it tries a new connection (a banner comes in well under a
/// second once sshd listens, even on a guest still busy booting).
pub const FIRST_BANNER_WAIT: Duration = Duration::from_millis(1500);

/// Login attempts without a banner, before the guest has answered any, after
/// which each attempt waits longer anyway (about 30 s of them).
pub const UNANSWERED_ATTEMPTS: u32 = 20;

/// The bound of one login attempt while waiting for SSH.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Machine {
    /// Looks at `poll` every `interval` until it is ready, aborts, or
    /// `timeout` passes; before every look, checks that QEMU still runs (a
    /// guest that died ends the wait at once, with its console). On timeout:
    /// [`MachineError::Timeout`] with `what`, how long, what the last look
    /// saw, and the serial tail. The wait is a step of the trial running it
    /// ("waiting for `what` … finished in 2.1 s"). A check's own waits use it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rave_harness::retry::Poll;
    /// # fn demo(machine: &rave_harness::Machine) -> Result<(), rave_harness::MachineError> {
    /// let count: u32 = machine.wait_until("three nginx workers", Duration::from_secs(30), Duration::from_secs(1), || {
    ///     match machine.succeed("pgrep -c -f 'nginx: worker'") {
    ///         Ok(out) if out.trim() == "3" => Poll::Ready(3),
    ///         Ok(out) => Poll::Pending(format!("{} workers", out.trim())),
    ///         Err(e) => Poll::Pending(e.to_string()),
    ///     }
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut poll: impl FnMut() -> Poll<T, MachineError>,
    ) -> Result<T, MachineError> {
        crate::steps::step(&format!("waiting for {what}"), || {
            let result = retry(Deadline::new(timeout, interval), || {
                if let Err(e) = self.ensure_running() {
                    return Poll::Abort(e);
                }
                poll()
            });
            result.map_err(|e| match e {
                RetryError::Aborted(e) => e,
                RetryError::Expired { waited, last_seen } => MachineError::Timeout {
                    name: self.name.clone(),
                    what: what.into(),
                    waited,
                    last_seen,
                    serial_tail: self.serial_tail(),
                },
            })
        })
    }

    /// Waits until a key login as the image's SSH user works.
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<(), MachineError> {
        let addr = self.ssh_addr();
        let user = self.ssh_user.clone();
        let what = format!("SSH key login as {user} on {addr}");
        // A refused attempt costs nothing (QEMU resets it at once): look often.
        // An attempt without a banner is given up and made again at once (see
        // SshSession::connect_booting): before the guest's network is up, QEMU
        // holds a connection unanswered. Once the guest has answered an attempt
        // (a reset, a close, or a failed handshake), a missing banner means a busy sshd,
        // and each later attempt waits twice as long; so it does, for safety,
        // after many attempts without a banner.
        let mut banner_within = FIRST_BANNER_WAIT;
        let mut guest_answered = false;
        let mut without_banner = 0u32;
        let session = self.wait_until(&what, timeout, Duration::from_millis(100), || {
            if self
                .serial_log()
                .is_some_and(|log| std::fs::metadata(log).is_ok_and(|m| m.len() > 0))
            {
                self.reach_stage("console");
            }
            match SshSession::connect_booting(
                addr,
                &user,
                &self.access.client_key,
                &self.access.host_key_blob,
                banner_within,
                LOGIN_TIMEOUT,
            ) {
                Ok(session) => Poll::Ready(session),
                Err(e @ SshError::HostKeyMismatch { .. }) => Poll::Abort(self.ssh_error(e)),
                Err(e @ SshError::NoBanner { .. }) => {
                    without_banner += 1;
                    if guest_answered || without_banner > UNANSWERED_ATTEMPTS {
                        banner_within = (banner_within * 2).min(LOGIN_TIMEOUT);
                    }
                    Poll::Pending(e.to_string())
                }
                // Refused: QEMU's forward is not listening yet, which says nothing of the guest.
                Err(e @ SshError::Connect { .. }) if e.is_refused() => Poll::Pending(e.to_string()),
                Err(e) => {
                    guest_answered = true;
                    Poll::Pending(e.to_string())
                }
            }
        })?;
        self.reach_stage("ssh");
        // The first command, timed on the guest's own clock (see
        // guest_uptime_at_first_command), which also asks for the login shell.
        // A connection that failed its first command is not pooled: the pool opens another.
        if let Ok(uptime) = session.first_look(self.command_timeout) {
            let mut first = lock(&self.first_command_uptime);
            if first.is_none() {
                *first = uptime;
            }
            drop(first);
            self.ssh.add(session);
        }
        Ok(())
    }

    /// Waits until something listens on TCP `port` inside the guest.
    pub fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<(), MachineError> {
        let what = format!("a listener on TCP port {port} in the guest");
        self.wait_until(&what, timeout, Duration::from_millis(500), || {
            self.port_probe(port, |listening| match listening {
                true => Poll::Ready(()),
                false => Poll::Pending(format!("nothing listens on {port}")),
            })
        })
    }

    /// Waits until nothing listens on TCP `port` inside the guest.
    pub fn wait_for_closed_port(&self, port: u16, timeout: Duration) -> Result<(), MachineError> {
        let what = format!("TCP port {port} in the guest to have no listener");
        self.wait_until(&what, timeout, Duration::from_millis(500), || {
            self.port_probe(port, |listening| match listening {
                false => Poll::Ready(()),
                true => Poll::Pending(format!("something still listens on {port}")),
            })
        })
    }

    /// One look at whether something listens on `port`; a failed look is pending.
    fn port_probe<T>(&self, port: u16, judge: impl FnOnce(bool) -> Poll<T, MachineError>) -> Poll<T, MachineError> {
        match self.execute(&format!("ss -Htln 'sport = :{port}'")) {
            Ok(out) if out.status == 0 => judge(!out.stdout.trim().is_empty()),
            Ok(out) => Poll::Pending(super::systemd::probe_failed(&out)),
            Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
            Err(e) => Poll::Pending(e.to_string()),
        }
    }

    /// Waits until the guest's CPUs have been at least [`QUIET_IDLE`] idle over
    /// one second: the services' own start-up work (a Node service loading, a
    /// database recovering) is over, not only their units active. A guest to be
    /// saved for later restores waits for this, so no restored guest resumes a
    /// start-up halfway (with the clock set forward under it).
    pub fn wait_until_quiet(&self, timeout: Duration) -> Result<(), MachineError> {
        let probe = "head -n1 /proc/stat; sleep 1; head -n1 /proc/stat; ps -eo pcpu=,comm= --sort=-pcpu | awk 'NR <= 3 { printf \"%s %s  \", $1, $2 }'";
        let what = format!("the guest's CPUs to be {:.0}% idle over a second", QUIET_IDLE * 100.0);
        self.wait_until(&what, timeout, Duration::from_millis(200), || {
            let out = match self.execute(probe) {
                Ok(out) if out.status == 0 => out,
                Ok(out) => return Poll::Pending(super::systemd::probe_failed(&out)),
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            let lines: Vec<&str> = out.stdout.lines().collect();
            match (lines.first().copied(), lines.get(1).copied()) {
                (Some(before), Some(after)) => match idle_fraction(before, after) {
                    Some(idle) if idle >= QUIET_IDLE => Poll::Ready(()),
                    Some(idle) => Poll::Pending(format!(
                        "{:.0}% idle; busiest (%CPU over their lifetime): {}",
                        idle * 100.0,
                        lines.get(2).unwrap_or(&"?").trim()
                    )),
                    None => Poll::Pending(format!("unreadable /proc/stat: {}", out.stdout.trim())),
                },
                _ => Poll::Pending(format!("unreadable /proc/stat: {}", out.stdout.trim())),
            }
        })
    }
}

/// The idle share of the guest's CPUs between two `cpu` lines of
/// `/proc/stat` (idle and iowait over all time spent).
fn idle_fraction(before: &str, after: &str) -> Option<f64> {
    let fields = |line: &str| -> Option<Vec<u64>> {
        let mut words = line.split_whitespace();
        (words.next()? == "cpu").then_some(())?;
        words.map(|w| w.parse().ok()).collect()
    };
    let (a, b) = (fields(before)?, fields(after)?);
    if a.len() < 5 || a.len() != b.len() {
        return None;
    }
    let delta: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y.saturating_sub(*x)).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user.
    let total: u64 = delta.iter().take(8).sum();
    (total > 0).then(|| (delta[3] + delta[4]) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_idle_and_iowait_over_all_time_spent() {
        let before = "cpu  100 0 100 800 0 0 0 0 0 0";
        assert_eq!(idle_fraction(before, "cpu  110 0 110 980 0 0 0 0 0 0"), Some(0.9));
        assert_eq!(idle_fraction(before, "cpu  250 0 150 800 0 0 0 0 0 0"), Some(0.0));
        assert_eq!(idle_fraction(before, before), None);
        assert_eq!(idle_fraction(before, "cpu0 110 0 110 980 0 0 0 0 0 0"), None);
        assert_eq!(idle_fraction("garbage", before), None);
    }
}
