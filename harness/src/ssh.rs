//! SSH to a guest: key login, the host key pinned, a timeout on every call.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// A command could not be run or its output not read (includes timeouts).
    #[error("SSH command `{command}` on {addr}: {message}")]
    Command {
        /// The command.
        command: String,
        /// Where.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
}

/// What a command did in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Its exit status.
    pub status: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// One authenticated SSH connection to a guest.
pub struct SshSession {
    session: ssh2::Session,
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
    /// Every step, and every later call on the session, is bounded by `timeout`.
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
        let session = handshake(addr, host_key_blob, timeout, banner_within)?;
        session
            .userauth_pubkey_file(user, None, key, None)
            .map_err(|source| SshError::Authentication {
                user: user.into(),
                addr,
                key: key.into(),
                source,
            })?;
        Ok(SshSession { session, addr, timeout })
    }

    /// [`SshSession::exec`] with a longer (or shorter) bound for this one command.
    pub fn exec_with_timeout(&self, command: &str, timeout: Duration) -> Result<CommandOutput, SshError> {
        self.session
            .set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        let result = self.exec_bounded(command, timeout);
        self.session
            .set_timeout(self.timeout.as_millis().min(u32::MAX as u128) as u32);
        result
    }

    /// Runs `command` through the login shell and collects its output.
    pub fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.exec_bounded(command, self.timeout)
    }

    fn exec_bounded(&self, command: &str, bound: Duration) -> Result<CommandOutput, SshError> {
        let fail = |message: String| SshError::Command {
            command: command.into(),
            addr: self.addr,
            message,
        };
        let timed = |e: ssh2::Error| fail(with_timeout_hint(e.to_string(), bound));
        let mut channel = self.session.channel_session().map_err(timed)?;
        channel.exec(command).map_err(timed)?;
        let mut stdout = String::new();
        channel
            .read_to_string(&mut stdout)
            .map_err(|e| fail(with_timeout_hint(e.to_string(), bound)))?;
        let mut stderr = String::new();
        channel
            .stderr()
            .read_to_string(&mut stderr)
            .map_err(|e| fail(with_timeout_hint(e.to_string(), bound)))?;
        channel.wait_close().map_err(timed)?;
        let status = channel.exit_status().map_err(timed)?;
        Ok(CommandOutput { status, stdout, stderr })
    }
}

/// What an unauthenticated client learns from sshd: the methods it offers
/// for `user`, and whether a password attempt got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthProbe {
    /// The methods sshd offers, e.g. `["publickey"]`.
    pub methods: Vec<String>,
    /// Whether a login with a wrong password succeeded (it must not).
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
    let session = handshake(addr, host_key_blob, timeout, None)?;
    let methods = session
        .auth_methods(user)
        .map(|m| m.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let password_accepted = session.userauth_password(user, password).is_ok() && session.authenticated();
    Ok(AuthProbe {
        methods,
        password_accepted,
    })
}

/// A TCP connection and SSH handshake with the host key checked.
fn handshake(
    addr: SocketAddr,
    host_key_blob: &[u8],
    timeout: Duration,
    banner_within: Option<Duration>,
) -> Result<ssh2::Session, SshError> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|source| SshError::Connect { addr, source })?;
    if let Some(within) = banner_within {
        await_banner(&tcp, within).map_err(|source| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SshError::NoBanner { addr, within },
            _ => SshError::Connect { addr, source },
        })?;
    }
    let mut session = ssh2::Session::new().map_err(|source| SshError::Handshake { addr, source })?;
    session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
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
    Ok(session)
}

impl SshError {
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

fn with_timeout_hint(message: String, timeout: Duration) -> String {
    format!("{message} (every SSH call is bounded by {timeout:?})")
}

fn short_fingerprint(blob: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(blob);
    format!(
        "sha256:{}",
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    )
}
