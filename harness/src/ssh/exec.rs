//! Running one command on an authenticated connection: the command's
//! deadline bounds the whole of it, stdout and stderr are read together
//! without blocking, and how it ended is read from what the channel carried
//! (see [`crate::guest_command`]).

use std::io::Read;
use std::time::{Duration, Instant};

use super::{millis, SshError, SshSession};
use crate::guest_command::{ending, tail_text, Ending, GuestCommand, END_GRACE};

/// The output a command had written when it ended badly, for its error message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSoFar {
    /// Standard output, raw.
    pub stdout: Vec<u8>,
    /// Standard error, raw (the status trailer removed).
    pub stderr: Vec<u8>,
}

/// What the shell probe's line starts with.
const SHELL_MARK: &str = "rave-shell:";
/// Prints [`SHELL_MARK`] and bash's version, empty in any other shell.
const SHELL_PROBE: &str = "printf 'rave-shell:%s\\n' \"${BASH_VERSION-}\"";

/// Whether the shell probe's output names a bash version.
fn says_bash(out: &str) -> bool {
    out.lines()
        .any(|l| l.strip_prefix(SHELL_MARK).is_some_and(|v| !v.trim().is_empty()))
}

/// What [`SshSession::first_look`]'s command printed: whether the login
/// shell is bash, and the uptime's first figure (seconds) if there was one.
fn read_first_look(out: &str) -> (bool, Option<f64>) {
    let uptime = out
        .lines()
        .filter(|l| !l.starts_with(SHELL_MARK))
        .find_map(first_figure);
    (says_bash(out), uptime)
}

/// The first whitespace-separated figure of `line` (`/proc/uptime`'s uptime).
fn first_figure(line: &str) -> Option<f64> {
    line.split_whitespace().next()?.parse().ok()
}

/// How a [`SshSession::run_plain`] command went wrong.
#[derive(Debug)]
enum PlainError {
    /// It ran and exited with this status (not 0).
    Exited(i32),
    /// The channel failed: the connection cannot be trusted.
    Broken(String),
}

impl std::fmt::Display for PlainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlainError::Exited(status) => write!(f, "exited {status}"),
            PlainError::Broken(why) => f.write_str(why),
        }
    }
}

/// Characters of each stream quoted in an error message (the end of it).
pub const QUOTED_OUTPUT: usize = 2000;

impl std::fmt::Display for OutputSoFar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "output so far: stdout {:?}; stderr {:?}",
            tail_text(&self.stdout, QUOTED_OUTPUT),
            tail_text(&self.stderr, QUOTED_OUTPUT)
        )
    }
}

/// What a command did in the guest: it exited with `status`.
///
/// The output is kept as bytes (`stdout_bytes`, `stderr_bytes`) and decoded
/// lossily (`stdout`, `stderr`: an invalid byte becomes U+FFFD) for display
/// and matching, so output that is not UTF-8 is still output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit status.
    pub status: i32,
    /// Its standard output, decoded lossily.
    pub stdout: String,
    /// Its standard error, decoded lossily.
    pub stderr: String,
    /// Its standard output as the guest wrote it.
    pub stdout_bytes: Vec<u8>,
    /// Its standard error as the guest wrote it.
    pub stderr_bytes: Vec<u8>,
}

impl CommandOutput {
    /// An exit with `status` and the raw output, decoded lossily.
    pub fn new(status: i32, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        CommandOutput {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_bytes: stdout,
            stderr_bytes: stderr,
        }
    }
}

impl SshSession {
    /// Runs `command` in the guest (see [`crate::guest_command`]: under bash
    /// with `set -euo pipefail`) and collects its output. `deadline` bounds
    /// the whole command, however its output comes; at the deadline its
    /// process group is killed in the guest. stdout and stderr are read together.
    ///
    /// Errors: [`SshError::TimedOut`] past the deadline,
    /// [`SshError::Signaled`] when a signal ended it,
    /// [`SshError::NoExitStatus`] when the channel closed without a status,
    /// [`SshError::Command`] when the channel failed. After an error the
    /// connection should not be reused.
    pub fn exec_with_timeout(&self, command: &str, deadline: Duration) -> Result<CommandOutput, SshError> {
        let started = Instant::now();
        let nonce = {
            use std::sync::atomic::{AtomicU64, Ordering};
            static COUNT: AtomicU64 = AtomicU64::new(0);
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            clock ^ COUNT.fetch_add(1, Ordering::Relaxed).rotate_left(40) ^ u64::from(std::process::id())
        };
        let sent = GuestCommand::new(command, nonce, self.login_shell_is_bash(deadline));
        let fail = |message: String| SshError::Command {
            command: command.into(),
            addr: self.addr,
            message,
        };
        // Opening the channel and starting the command: blocking calls,
        // bounded by what is left of the command's time.
        self.session.set_blocking(true);
        self.session.set_timeout(millis(deadline.min(self.timeout)));
        let mut channel = self
            .session
            .channel_session()
            .map_err(|e| fail(format!("opening a channel: {e}")))?;
        channel
            .exec(&sent.line)
            .map_err(|e| fail(format!("starting the command: {e}")))?;
        // Nothing is ever written to a command: one that reads stdin gets EOF, not a wait.
        channel
            .send_eof()
            .map_err(|e| fail(format!("closing the command's stdin: {e}")))?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut closed = self
            .collect(&mut channel, started + deadline, &mut stdout, &mut stderr)
            .map_err(|e| fail(format!("reading its output: {e}")))?;
        let mut how = String::new();
        if !closed {
            // The deadline: end the command, its pipeline and its background
            // children (its process group), then take what is left.
            how = match sent.pid(&stderr) {
                Some(pid) => match self.run_plain(&kill_tree(pid), END_GRACE) {
                    Ok(_) => {
                        format!("SIGKILL sent in the guest to process {pid}, its process group and its descendants")
                    }
                    Err(e) => format!("it could not be ended in the guest (its kill: {e})"),
                },
                None => "it had not started in the guest (no process id reported)".into(),
            };
            closed = self
                .collect(&mut channel, Instant::now() + END_GRACE, &mut stdout, &mut stderr)
                .map_err(|e| fail(format!("reading its output: {e}")))?;
            if !closed {
                how.push_str(&format!(
                    "; its channel did not close within {END_GRACE:?} more, so the connection was dropped"
                ));
                // Nothing more is waited for on this connection (not even the
                // channel's close when it is dropped below): it is gone.
                let _ = self.socket.shutdown(std::net::Shutdown::Both);
            }
        }
        self.session.set_blocking(true);
        self.session.set_timeout(millis(self.timeout));
        let reported = sent.take_status(&mut stderr);
        let output = |stdout, stderr| Box::new(OutputSoFar { stdout, stderr });
        if !closed {
            return Err(SshError::TimedOut {
                command: command.into(),
                addr: self.addr,
                deadline,
                how,
                output: output(stdout, stderr),
            });
        }
        let signal = channel.exit_signal().ok().and_then(|s| s.exit_signal);
        let server_status = channel.exit_status().unwrap_or(0);
        let deadline_passed = !how.is_empty();
        match ending(server_status, signal.as_deref(), reported, deadline_passed) {
            Ending::Exited(status) => Ok(CommandOutput::new(status, stdout, stderr)),
            Ending::Signaled(signal) => Err(SshError::Signaled {
                command: command.into(),
                addr: self.addr,
                signal,
                output: output(stdout, stderr),
            }),
            Ending::NoStatus => Err(SshError::NoExitStatus {
                command: command.into(),
                addr: self.addr,
                output: output(stdout, stderr),
            }),
            Ending::TimedOut => Err(SshError::TimedOut {
                command: command.into(),
                addr: self.addr,
                deadline,
                how,
                output: output(stdout, stderr),
            }),
        }
    }

    /// Runs `command` with the session's own bound (see [`SshSession::exec_with_timeout`]).
    pub fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.exec_with_timeout(command, self.timeout)
    }

    /// Whether the user's login shell is bash, asked once per connection
    /// (within `within`): then a command's script goes to it as it is,
    /// without starting another bash (each program started costs about 0.1 s
    /// in a guest under TCG). Anything else, or no clear answer, gets bash.
    fn login_shell_is_bash(&self, within: Duration) -> bool {
        *self.login_bash.get_or_init(|| {
            self.run_plain(SHELL_PROBE, within.min(self.timeout))
                .is_ok_and(|out| says_bash(&out))
        })
    }

    /// A new connection's first look, in one round trip: the guest's uptime
    /// (seconds on its monotonic clock, `/proc/uptime`'s first figure; `None`
    /// on a system without it) and whether the login shell is bash, which the
    /// connection then knows (see [`Self::login_shell_is_bash`]). One command
    /// instead of two: on a guest still starting its services under TCG each
    /// costs about 1 s. A login shell that cannot parse the line (fish) is
    /// not bash, and the uptime is read through bash as any command. Errs,
    /// saying why, when the connection failed.
    pub fn first_look(&self, within: Duration) -> Result<Option<f64>, String> {
        let line = format!("{SHELL_PROBE}; if [ -r /proc/uptime ]; then cat /proc/uptime; fi");
        match self.run_plain(&line, within.min(self.timeout)) {
            Ok(out) => {
                let (bash, uptime) = read_first_look(&out);
                let _ = self.login_bash.set(bash);
                Ok(uptime)
            }
            Err(PlainError::Exited(_)) => {
                let _ = self.login_bash.set(false);
                let out = self
                    .exec_with_timeout("cat /proc/uptime", within)
                    .map_err(|e| e.to_string())?;
                Ok(first_figure(&out.stdout))
            }
            Err(PlainError::Broken(why)) => Err(why),
        }
    }

    /// Runs `line` as the login shell gets it, blocking, each read bounded by
    /// `within`: for the harness's own short commands (the shell probe, the
    /// kill at a deadline). Its stdout when it exits 0.
    fn run_plain(&self, line: &str, within: Duration) -> Result<String, PlainError> {
        let blocking = self.session.is_blocking();
        self.session.set_blocking(true);
        self.session.set_timeout(millis(within));
        let broken = |e: ssh2::Error| PlainError::Broken(e.to_string());
        let result = (|| {
            let mut channel = self.session.channel_session().map_err(broken)?;
            channel.exec(line).map_err(broken)?;
            let mut out = String::new();
            channel
                .read_to_string(&mut out)
                .map_err(|e| PlainError::Broken(e.to_string()))?;
            channel.wait_close().map_err(broken)?;
            match channel.exit_status().map_err(broken)? {
                0 => Ok(out),
                status => Err(PlainError::Exited(status)),
            }
        })();
        self.session.set_blocking(blocking);
        self.session.set_timeout(millis(self.timeout));
        result
    }

    /// Reads stdout and stderr together, without blocking, into `stdout`
    /// and `stderr` until the channel closes (true) or `until` passes (false).
    fn collect(
        &self,
        channel: &mut ssh2::Channel,
        until: Instant,
        stdout: &mut Vec<u8>,
        stderr: &mut Vec<u8>,
    ) -> Result<bool, String> {
        self.session.set_blocking(false);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut progress = false;
            for (stream_id, sink) in [(0, &mut *stdout), (1, &mut *stderr)] {
                // Each pass reads a bounded amount, so a fast endless writer
                // cannot keep the deadline from being looked at.
                for _ in 0..64 {
                    match channel.stream(stream_id).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if sink.len() + n > MAX_OUTPUT {
                                return Err(format!(
                                    "the command wrote more than {} MiB on one stream, more than a check reads",
                                    MAX_OUTPUT >> 20
                                ));
                            }
                            sink.extend_from_slice(&buf[..n]);
                            progress = true;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            // EOF with nothing left unread on either stream; the close (and
            // with it the exit status, which the server sends before it) follows.
            if channel.eof() {
                match channel.wait_close() {
                    Ok(()) => return Ok(true),
                    Err(e) if is_would_block(&e) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let now = Instant::now();
            if now >= until {
                return Ok(false);
            }
            if !progress {
                self.wait_for_socket(until - now)?;
            }
        }
    }

    /// Waits until the connection's socket is ready in the direction libssh2
    /// is blocked on, at most `within` (and never more than 100 ms, so the
    /// deadline is looked at often).
    fn wait_for_socket(&self, within: Duration) -> Result<(), String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let directions = self.session.block_directions();
        let mut flags = PollFlags::empty();
        if matches!(directions, ssh2::BlockDirections::Inbound | ssh2::BlockDirections::Both) {
            flags |= PollFlags::POLLIN;
        }
        if matches!(
            directions,
            ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both
        ) {
            flags |= PollFlags::POLLOUT;
        }
        if flags.is_empty() {
            flags = PollFlags::POLLIN;
        }
        let wait = within.min(Duration::from_millis(100));
        let mut fds = [PollFd::new(self.socket.as_fd(), flags)];
        match poll(&mut fds, PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(format!("waiting on the connection: {e}")),
        }
    }
}

/// The most a command may write on one stream (a check's output is small;
/// this bounds the harness's memory).
pub const MAX_OUTPUT: usize = 64 << 20;

/// Kills `pid`, its process group and every descendant (also those in other
/// sessions, such as a command `sudo` runs on a pseudo-terminal), as root
/// when `sudo -n` may (test images allow it), else as the user.
fn kill_tree(pid: u32) -> String {
    let script = format!(
        "tree() {{ for c in $(pgrep -P \"$1\"); do tree \"$c\"; done; echo \"$1\"; }}; \
         pids=$(tree {pid}); kill -s KILL -- -{pid} $pids 2>/dev/null; exit 0"
    );
    let quoted = crate::guest_command::quote(&script);
    format!("if sudo -n true 2>/dev/null; then sudo -n sh -c {quoted}; else sh -c {quoted}; fi")
}

fn is_would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(-37)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    }

    #[test]
    fn the_first_look_reads_the_shell_and_the_uptime() {
        // As bash, sh (dash: no BASH_VERSION) and a system without /proc/uptime print it.
        assert_eq!(
            read_first_look("rave-shell:5.2.15(1)-release\n27.31 50.02\n"),
            (true, Some(27.31))
        );
        assert_eq!(read_first_look("rave-shell:\n3.50 6.00\n"), (false, Some(3.5)));
        assert_eq!(read_first_look("rave-shell:5.2.15(1)-release\n"), (true, None));
        assert_eq!(read_first_look(""), (false, None));
        // A login shell that prints something of its own first.
        assert_eq!(read_first_look("welcome\nrave-shell:\n3.50 6.00\n"), (false, Some(3.5)));
    }

    #[test]
    fn the_deadline_kill_ends_the_group_and_every_descendant() {
        // A command's shell (its own process group), a background child, and
        // a descendant in a session of its own (as sudo's command is).
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let mut shell = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 300 & setsid sleep 301 & echo \"$! $(jobs -p)\" > {}; wait",
                pids.display()
            ))
            .process_group(0)
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let children: Vec<u32> = loop {
            if let Some(found) = std::fs::read_to_string(&pids).ok().filter(|s| s.ends_with('\n')) {
                break found.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the tree did not start");
            std::thread::yield_now();
        };
        let line = kill_tree(shell.id());
        let status = std::process::Command::new("sh").arg("-c").arg(&line).status().unwrap();
        assert!(status.success(), "{line}");
        shell.wait().unwrap();
        let started = std::time::Instant::now();
        while children.iter().any(|p| alive(*p)) && started.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        for pid in children {
            assert!(!alive(pid), "process {pid} survived: {line}");
        }
    }
}
