//! SSH to a guest: key login, the host key pinned (by its algorithm), a
//! deadline on every call that bounds the whole of it.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::guest_command::{ending, short_command, tail_text, Ending, GuestCommand, END_GRACE};

/// Errors of one SSH step, each saying which step and where.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No TCP connection.
    #[error("SSH connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// sshd's banner did not come within the wait given to a login attempt on
    /// a booting guest (see [`SshSession::connect_booting`]).
    #[error("SSH connect to {addr}: no banner from sshd within {within:?}")]
    NoBanner {
        /// Where.
        addr: SocketAddr,
        /// How long the attempt waited for it.
        within: Duration,
    },
    /// The SSH handshake failed (sshd not up yet, or the connection was reset).
    #[error("SSH handshake with {addr}: {source}")]
    Handshake {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: ssh2::Error,
    },
    /// The guest presented a host key other than the one it was given.
    #[error("SSH host key of {addr} is not the pinned one (got {got}); refusing to log in")]
    HostKeyMismatch {
        /// Where.
        addr: SocketAddr,
        /// A short form of the key that was presented.
        got: String,
    },
    /// The key login was refused.
    #[error("SSH key login as {user}@{addr} with {key}: {source}")]
    Authentication {
        /// The user.
        user: String,
        /// Where.
        addr: SocketAddr,
        /// The private key file.
        key: PathBuf,
        /// Why.
        source: ssh2::Error,
    },
    /// A command could not be started, or its output not read.
    #[error("SSH command `{}` on {addr}: {message}", short_command(command))]
    Command {
        /// The command.
        command: String,
        /// Where.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// A signal ended the command: it has no exit status, and is not a success.
    #[error(
        "SSH command `{}` on {addr} was ended by signal {signal} (no exit status)\n{output}",
        short_command(command)
    )]
    Signaled {
        /// The command.
        command: String,
        /// Where.
        addr: SocketAddr,
        /// The signal, e.g. `KILL`.
        signal: String,
        /// Its output so far.
        output: Box<OutputSoFar>,
    },
    /// The channel closed with neither an exit status nor a signal (the
    /// server ended it, e.g. OpenSSH's `ChannelTimeout`, or the connection
    /// broke): how the command ended is unknown, and it is not a success.
    #[error("SSH command `{}` on {addr}: the channel closed without an exit status or signal (the SSH server ended it, e.g. a ChannelTimeout, or the connection broke); not a success\n{output}", short_command(command))]
    NoExitStatus {
        /// The command.
        command: String,
        /// Where.
        addr: SocketAddr,
        /// Its output so far.
        output: Box<OutputSoFar>,
    },
    /// The command's deadline passed: it was ended in the guest (`timeout`),
    /// or, when the guest did not end it either, the connection was dropped.
    #[error("SSH command `{}` on {addr} did not finish within its deadline of {deadline:?} (the deadline bounds the whole command); {how}\n{output}", short_command(command))]
    TimedOut {
        /// The command.
        command: String,
        /// Where.
        addr: SocketAddr,
        /// Its deadline.
        deadline: Duration,
        /// How it was ended.
        how: String,
        /// Its output so far.
        output: Box<OutputSoFar>,
    },
}

/// The output a command had written when it ended badly, for its error message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSoFar {
    /// Standard output, raw.
    pub stdout: Vec<u8>,
    /// Standard error, raw (the status trailer removed).
    pub stderr: Vec<u8>,
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

/// One authenticated SSH connection to a guest.
pub struct SshSession {
    session: ssh2::Session,
    /// Whether the user's login shell is bash (see [`SshSession::exec_with_timeout`]).
    login_bash: std::sync::OnceLock<bool>,
    /// The connection's socket (a clone of the one the session owns), to
    /// wait on while a command runs without blocking.
    socket: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SshSession {
    /// Connects, checks the host key against `host_key_blob` before anything
    /// else, and logs in as `user` with the private key at `key`.
    /// Every step of the login is bounded by `timeout`.
    pub fn connect(
        addr: SocketAddr,
        user: &str,
        key: &Path,
        host_key_blob: &[u8],
        timeout: Duration,
    ) -> Result<Self, SshError> {
        Self::login(addr, user, key, host_key_blob, timeout, None)
    }

    /// [`SshSession::connect`] to a guest that may still be booting: the
    /// attempt gives up when sshd's banner has not come within `banner_within`,
    /// so that the caller tries a new connection. QEMU's user network accepts
    /// the host side of a connection at once; a SYN it sent before the guest's
    /// network was up is sent again only seconds later, so an attempt that
    /// waited on it would log in seconds after sshd was ready.
    pub fn connect_booting(
        addr: SocketAddr,
        user: &str,
        key: &Path,
        host_key_blob: &[u8],
        banner_within: Duration,
        timeout: Duration,
    ) -> Result<Self, SshError> {
        Self::login(addr, user, key, host_key_blob, timeout, Some(banner_within))
    }

    fn login(
        addr: SocketAddr,
        user: &str,
        key: &Path,
        host_key_blob: &[u8],
        timeout: Duration,
        banner_within: Option<Duration>,
    ) -> Result<Self, SshError> {
        let (session, socket) = handshake(addr, host_key_blob, timeout, banner_within)?;
        session
            .userauth_pubkey_file(user, None, key, None)
            .map_err(|source| SshError::Authentication {
                user: user.into(),
                addr,
                key: key.into(),
                source,
            })?;
        Ok(SshSession {
            session,
            login_bash: std::sync::OnceLock::new(),
            socket,
            addr,
            timeout,
        })
    }

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
                    Err(e) => format!("it could not be ended in the guest ({e})"),
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
            self.run_plain(
                "printf 'rave-shell:%s\\n' \"${BASH_VERSION-}\"",
                within.min(self.timeout),
            )
            .is_ok_and(|out| {
                out.lines()
                    .any(|l| l.strip_prefix("rave-shell:").is_some_and(|v| !v.trim().is_empty()))
            })
        })
    }

    /// Runs `line` as the login shell gets it, blocking, each read bounded by
    /// `within`: for the harness's own short commands (the shell probe, the
    /// kill at a deadline). Its stdout when it exits 0.
    fn run_plain(&self, line: &str, within: Duration) -> Result<String, String> {
        let blocking = self.session.is_blocking();
        self.session.set_blocking(true);
        self.session.set_timeout(millis(within));
        let result = (|| {
            let mut channel = self.session.channel_session().map_err(|e| e.to_string())?;
            channel.exec(line).map_err(|e| e.to_string())?;
            let mut out = String::new();
            channel.read_to_string(&mut out).map_err(|e| e.to_string())?;
            channel.wait_close().map_err(|e| e.to_string())?;
            match channel.exit_status().map_err(|e| e.to_string())? {
                0 => Ok(out),
                status => Err(format!("`{line}` exited {status}")),
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

fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
}

/// What an unauthenticated client learns from sshd: the methods it offers
/// for `user`, and whether a password attempt got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthProbe {
    /// The methods sshd offers, e.g. `["publickey"]`.
    pub methods: Vec<String>,
    /// Whether a login with a wrong password succeeded (it must not), or the
    /// server let the client in with no credentials at all (`methods` is then `["none"]`).
    pub password_accepted: bool,
}

/// Connects as an attacker would (host key still pinned) and asks sshd which
/// methods it offers `user`, then tries `password`.
pub fn probe_auth(
    addr: SocketAddr,
    user: &str,
    password: &str,
    host_key_blob: &[u8],
    timeout: Duration,
) -> Result<AuthProbe, SshError> {
    let (session, _socket) = handshake(addr, host_key_blob, timeout, None)?;
    let failed = |source| SshError::Authentication {
        user: user.into(),
        addr,
        key: PathBuf::from("(none: probing as an attacker)"),
        source,
    };
    // Asking for the methods is the "none" method: a server may let it in.
    let methods = match session.auth_methods(user) {
        Ok(methods) => methods.split(',').map(str::to_string).collect(),
        Err(_) if session.authenticated() => {
            return Ok(AuthProbe {
                methods: vec!["none".into()],
                password_accepted: true,
            })
        }
        Err(source) => return Err(failed(source)),
    };
    // Only the server's refusal is a refusal: a broken connection proves nothing.
    let password_accepted = match session.userauth_password(user, password) {
        Ok(()) => session.authenticated(),
        Err(e) if is_refusal(&e) => false,
        Err(source) => return Err(failed(source)),
    };
    Ok(AuthProbe {
        methods,
        password_accepted,
    })
}

/// Whether libssh2's error is the server refusing the credentials
/// (`LIBSSH2_ERROR_AUTHENTICATION_FAILED`, `LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED`),
/// not a connection or protocol failure.
fn is_refusal(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(-18) | ssh2::ErrorCode::Session(-19))
}

/// A TCP connection and SSH handshake with the host key checked: the
/// session and a clone of its socket.
///
/// The server is asked for a host key of the pinned key's algorithm only, so
/// a host that also offers RSA or ECDSA keys, or host certificates, is still
/// reached with the pinned key; any other key is refused.
fn handshake(
    addr: SocketAddr,
    host_key_blob: &[u8],
    timeout: Duration,
    banner_within: Option<Duration>,
) -> Result<(ssh2::Session, TcpStream), SshError> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|source| SshError::Connect { addr, source })?;
    if let Some(within) = banner_within {
        await_banner(&tcp, within).map_err(|source| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SshError::NoBanner { addr, within },
            _ => SshError::Connect { addr, source },
        })?;
    }
    let socket = tcp.try_clone().map_err(|source| SshError::Connect { addr, source })?;
    let mut session = ssh2::Session::new().map_err(|source| SshError::Handshake { addr, source })?;
    session.set_timeout(millis(timeout));
    session
        .method_pref(ssh2::MethodType::HostKey, &host_key_methods(host_key_blob))
        .map_err(|source| SshError::Handshake { addr, source })?;
    session.set_tcp_stream(tcp);
    session
        .handshake()
        .map_err(|source| SshError::Handshake { addr, source })?;
    let (presented, _) = session.host_key().ok_or_else(|| SshError::HostKeyMismatch {
        addr,
        got: "none".into(),
    })?;
    if presented != host_key_blob {
        return Err(SshError::HostKeyMismatch {
            addr,
            got: short_fingerprint(presented),
        });
    }
    Ok((session, socket))
}

/// The host-key algorithms to ask for, from the pinned key's SSH wire form
/// (its first field names its type): `ssh-ed25519` for an ed25519 key, the
/// RSA signature algorithms for an RSA key.
pub fn host_key_methods(blob: &[u8]) -> String {
    let name = blob
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| blob.get(4..4 + len))
        .and_then(|name| std::str::from_utf8(name).ok())
        .unwrap_or("ssh-ed25519");
    match name {
        "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa".into(),
        other => other.into(),
    }
}

impl SshError {
    /// Whether the server refused the login's credentials (not a connection,
    /// handshake or host-key failure).
    pub fn is_login_refused(&self) -> bool {
        matches!(self, SshError::Authentication { source, .. } if is_refusal(source))
    }

    /// Whether the TCP connection itself was refused (nothing listens there yet).
    pub fn is_refused(&self) -> bool {
        matches!(self, SshError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Waits until the peer has sent something (sshd's banner), without reading it.
fn await_banner(tcp: &TcpStream, within: Duration) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(within))?;
    let mut first = [0u8; 1];
    let seen = tcp.peek(&mut first)?;
    tcp.set_read_timeout(None)?;
    if seen == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before sshd's banner",
        ));
    }
    Ok(())
}

fn short_fingerprint(blob: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(blob);
    format!(
        "sha256:{}",
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    )
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

    #[test]
    fn the_host_key_is_asked_for_by_the_pinned_keys_algorithm() {
        let blob = |name: &str| {
            let mut b = (name.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&[0, 0, 0, 1, 7]);
            b
        };
        assert_eq!(host_key_methods(&blob("ssh-ed25519")), "ssh-ed25519");
        assert_eq!(host_key_methods(&blob("ssh-rsa")), "rsa-sha2-512,rsa-sha2-256,ssh-rsa");
        assert_eq!(host_key_methods(&blob("ecdsa-sha2-nistp256")), "ecdsa-sha2-nistp256");
        assert_eq!(host_key_methods(b"\0\0"), "ssh-ed25519");
    }
}
