//! What is sent to the guest for one command, and how its ending is read.
//!
//! Every guest command runs under bash as SCRIPT: `set -euo pipefail` and
//! then the command (the NixOS test driver does the same), so a failure
//! inside a pipeline or a list, or an unset variable, is the command's
//! failure. The SSH server hands the command line to the user's login shell:
//! when that is bash, the line is SCRIPT itself; otherwise it is `exec bash
//! -c SCRIPT`, SCRIPT quoted as one argument.
//!
//! A command is finished when it and its background children have ended (the
//! script's exit waits for them). The script first reports its process id,
//! which is its process group's: at the command's deadline the harness kills
//! that group (the command, its pipeline, its background children).
//!
//! The script reports its own exit status on a file descriptor of its own
//! (a trailer with a nonce, stripped from stderr), because an SSH server can
//! close a channel without an `exit-status` (OpenSSH's `ChannelTimeout`, a
//! broken connection) and libssh2 then reports 0: a status that did not
//! arrive is never read as success. A command killed by a signal ends its
//! channel with `exit-signal` and no status; that is said as such too.

use std::time::Duration;

/// How long the host waits past a command's deadline, once it has killed the
/// command's process group, for the channel to close before it gives up on
/// the connection.
pub const END_GRACE: Duration = Duration::from_secs(5);

/// One guest command as sent: the line for the login shell, and the trailers
/// that carry the script's process id and its own exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCommand {
    /// The command as the caller wrote it.
    pub command: String,
    /// What the SSH server is asked to run (through the login shell).
    pub line: String,
    /// The status trailer's opening, unique to this command: `<rave-exit-NONCE:`.
    exit_mark: String,
    /// The process-id trailer's opening: `<rave-pid-NONCE:`.
    pid_mark: String,
}

impl GuestCommand {
    /// `command`, with `nonce` making its trailers its own; `login_bash`
    /// says whether the login shell is bash (else the line starts bash).
    pub fn new(command: &str, nonce: u64, login_bash: bool) -> Self {
        let exit_mark = format!("<rave-exit-{nonce:016x}:");
        let pid_mark = format!("<rave-pid-{nonce:016x}:");
        // $rave_fd (bash picks one above 9) is the original stderr: a
        // command that redirects its own stderr, or uses a low descriptor of
        // its own, still has its status reported. The newline before the
        // trailer keeps it off the last line of the command's own stderr.
        // The trap waits for the command's background children: a command
        // is finished when they are.
        let script = format!(
            "exec {{rave_fd}}>&2; printf '{pid_mark}%d>\\n' \"$$\" >&\"$rave_fd\"; trap 'rave_status=$?; set +e; wait; printf \"\\n{exit_mark}%d>\\n\" \"$rave_status\" >&\"$rave_fd\"' EXIT; set -euo pipefail\n{command}"
        );
        let line = if login_bash {
            script
        } else {
            format!("exec bash -c {}", quote(&script))
        };
        GuestCommand {
            command: command.to_string(),
            line,
            exit_mark,
            pid_mark,
        }
    }

    /// The process id the script reported (its process group's), if it has.
    pub fn pid(&self, stderr: &[u8]) -> Option<u32> {
        let (_, _, pid) = find_trailer(stderr, self.pid_mark.as_bytes())?;
        u32::try_from(pid).ok()
    }

    /// Removes the trailers from `stderr` and returns the exit status the
    /// script reported, if it got to report one.
    pub fn take_status(&self, stderr: &mut Vec<u8>) -> Option<i32> {
        if let Some((from, to, _)) = find_trailer(stderr, self.pid_mark.as_bytes()) {
            stderr.drain(from..to);
        }
        let (from, to, status) = find_trailer(stderr, self.exit_mark.as_bytes())?;
        stderr.drain(from..to);
        i32::try_from(status).ok()
    }
}

/// The last `mark` + digits + `>` in `bytes`: where it starts (with a
/// newline before it), where it ends (with a newline after it), and its number.
fn find_trailer(bytes: &[u8], mark: &[u8]) -> Option<(usize, usize, i64)> {
    let start = find_last(bytes, mark)?;
    let digits_start = start + mark.len();
    let digits_len = bytes[digits_start..].iter().take_while(|b| b.is_ascii_digit()).count();
    let close = digits_start + digits_len;
    if digits_len == 0 || digits_len > 12 || bytes.get(close) != Some(&b'>') {
        return None;
    }
    let number = std::str::from_utf8(&bytes[digits_start..close]).ok()?.parse().ok()?;
    let mut from = start;
    if from > 0 && bytes[from - 1] == b'\n' {
        from -= 1;
    }
    let mut to = close + 1;
    if bytes.get(to) == Some(&b'\n') {
        to += 1;
    }
    Some((from, to, number))
}

/// How a guest command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this status (its own report, which the server's
    /// `exit-status` agrees with or which arrived without one).
    Exited(i32),
    /// A signal ended it (the server sent `exit-signal`, e.g. `KILL`).
    Signaled(String),
    /// The channel closed with no status and no signal: nothing says how
    /// the command ended, so it did not succeed.
    NoStatus,
    /// Its deadline passed before it ended.
    TimedOut,
}

/// Reads how a command ended from what the channel carried: the server's
/// `exit-status` (`server_status`: libssh2 reports 0 when none came), its
/// `exit-signal`, the script's own `reported` status, and whether the host's
/// deadline for the command passed before the channel closed.
///
/// A non-zero `server_status` is a status the server really sent (only 0 is
/// what libssh2 also reports when none came): it stands, also against the
/// script's report, so no reading ever turns a reported failure into 0.
pub fn ending(server_status: i32, signal: Option<&str>, reported: Option<i32>, deadline_passed: bool) -> Ending {
    match (signal, reported) {
        // The script reported, nothing contradicts it: a real exit, even one
        // that came right at the deadline.
        (None, Some(status)) if server_status == status => Ending::Exited(status),
        _ if deadline_passed => Ending::TimedOut,
        (Some(signal), _) => Ending::Signaled(signal.to_string()),
        (None, _) if server_status != 0 => Ending::Exited(server_status),
        // The script reported but the status message did not arrive.
        (None, Some(status)) => Ending::Exited(status),
        (None, None) => Ending::NoStatus,
    }
}

/// Quotes one word for a POSIX shell.
pub fn quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", word.replace('\0', "").replace('\'', "'\\''")))
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// A command as an error message names it: its first line, at most 100
/// characters, with `…` when anything was left out (a search script is long).
pub fn short_command(command: &str) -> String {
    let trimmed = command.trim();
    let first = trimmed.lines().next().unwrap_or("");
    let cut: String = first.chars().take(100).collect();
    if cut.len() < trimmed.len() {
        format!("{cut} …")
    } else {
        cut
    }
}

/// The end of `bytes` decoded lossily, at most `max` characters, with a
/// marker when it was cut: output quoted in an error message.
pub fn tail_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let tail: String = text.chars().skip(count - max).collect();
    format!("[… {} characters before]{tail}", count - max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(login_bash: bool) -> GuestCommand {
        GuestCommand::new("echo hi | tr a-z A-Z", 0xabc, login_bash)
    }

    #[test]
    fn the_script_sets_pipefail_and_reports_its_pid_first() {
        let c = command(true);
        assert!(
            c.line.starts_with(
                "exec {rave_fd}>&2; printf '<rave-pid-0000000000000abc:%d>\\n' \"$$\" >&\"$rave_fd\"; trap "
            ),
            "{}",
            c.line
        );
        assert!(
            c.line.ends_with("set -euo pipefail\necho hi | tr a-z A-Z"),
            "{}",
            c.line
        );
    }

    #[test]
    fn another_login_shell_gets_bash_with_the_script_as_one_word() {
        let c = command(false);
        assert!(c.line.starts_with("exec bash -c "), "{}", c.line);
        let words = shlex::split(&c.line).expect("a POSIX shell can split it");
        assert_eq!(words.len(), 4, "{words:?}");
        assert_eq!(words[3], command(true).line);
        let quoted = GuestCommand::new("printf '%s\\n' \"it's\"", 1, false);
        assert!(shlex::split(&quoted.line).unwrap()[3].ends_with("printf '%s\\n' \"it's\""));
    }

    #[test]
    fn the_trailers_are_read_and_removed_wherever_they_are() {
        let c = command(true);
        let mut stderr = b"<rave-pid-0000000000000abc:4242>\nwarning: x\n\n<rave-exit-0000000000000abc:3>\n".to_vec();
        assert_eq!(c.pid(&stderr), Some(4242));
        assert_eq!(c.take_status(&mut stderr), Some(3));
        assert_eq!(stderr, b"warning: x\n");
        // A background child may write after the exit trailer.
        let mut stderr = b"<rave-pid-0000000000000abc:7>\n\n<rave-exit-0000000000000abc:0>\nlate\n".to_vec();
        assert_eq!(c.take_status(&mut stderr), Some(0));
        assert_eq!(stderr, b"late\n");
        // Another command's trailer, a cut one, or none: no status.
        for other in [
            &b"\n<rave-exit-0000000000000abd:0>\n"[..],
            b"\n<rave-exit-0000000000000abc:",
            b"\n<rave-exit-0000000000000abc:>\n",
            b"",
        ] {
            let mut stderr = other.to_vec();
            assert_eq!(c.take_status(&mut stderr), None, "{:?}", String::from_utf8_lossy(other));
        }
        assert_eq!(c.pid(b"nothing yet"), None);
    }

    #[test]
    fn a_missing_status_or_a_signal_is_never_success() {
        // sshd closed the channel with nothing (ChannelTimeout): libssh2 says 0.
        assert_eq!(ending(0, None, None, false), Ending::NoStatus);
        // kill -9 $$: exit-signal KILL, no status, no trailer.
        assert_eq!(ending(0, Some("KILL"), None, false), Ending::Signaled("KILL".into()));
        // A signal after the script reported (a trap ran on SIGTERM).
        assert_eq!(
            ending(0, Some("TERM"), Some(143), false),
            Ending::Signaled("TERM".into())
        );
        assert_eq!(ending(0, None, Some(0), false), Ending::Exited(0));
        assert_eq!(ending(3, None, Some(3), false), Ending::Exited(3));
        // The script's report stands when the status message was lost.
        assert_eq!(ending(0, None, Some(3), false), Ending::Exited(3));
        // A status the server sent stands, with or without a report.
        assert_eq!(ending(2, None, None, false), Ending::Exited(2));
        assert_eq!(ending(2, None, Some(0), false), Ending::Exited(2));
    }

    #[test]
    fn past_the_deadline_only_a_real_exit_is_an_exit() {
        // Killed at the deadline: exit-signal KILL, or nothing at all.
        assert_eq!(ending(0, Some("KILL"), None, true), Ending::TimedOut);
        assert_eq!(ending(0, None, None, true), Ending::TimedOut);
        // A command that finished right at the deadline finished.
        assert_eq!(ending(0, None, Some(0), true), Ending::Exited(0));
        assert_eq!(ending(124, None, Some(124), true), Ending::Exited(124));
    }

    #[test]
    fn long_commands_are_named_by_their_first_line() {
        assert_eq!(short_command("true"), "true");
        assert_eq!(short_command("sudo bash -c 'set -e\nfind /'"), "sudo bash -c 'set -e …");
        assert_eq!(short_command(&"x".repeat(150)), format!("{} …", "x".repeat(100)));
    }

    #[test]
    fn tails_are_cut_with_a_marker_and_decoded_lossily() {
        assert_eq!(tail_text(b"caf\xe9\n", 10), "caf\u{fffd}");
        assert_eq!(tail_text(b"0123456789", 4), "[\u{2026} 6 characters before]6789");
    }
}
