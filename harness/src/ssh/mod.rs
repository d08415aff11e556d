//! SSH to a guest: key login, the host key pinned (by its algorithm), a
//! deadline on every call that bounds the whole of it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::guest_command::short_command;

mod exec;

pub use exec::{CommandOutput, OutputSoFar, MAX_OUTPUT, QUOTED_OUTPUT};

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
