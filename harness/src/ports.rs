//! Host ports for a guest's forwards: free, on 127.0.0.1 only.

use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before QEMU binds it; a run that loses the race sees
/// QEMU fail to start with "Could not set up host forwarding rule".
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// What a probe of a forwarded port saw. Through QEMU user networking the
/// connect always succeeds at once; what comes next tells the cases apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// A listener answered: bytes, or a clean close.
    Answered(String),
    /// The connection was reset: nothing listens there, or the firewall rejects.
    Reset,
    /// Nothing at all until the timeout: the firewall drops.
    Silent,
}

impl ProbeResult {
    /// Whether something in the guest answered.
    pub fn answered(&self) -> bool {
        matches!(self, ProbeResult::Answered(_))
    }
}

/// Connects to `addr` and waits up to `wait` for anything to come back.
///
/// A host reached directly (not through QEMU's forward) answers a connection
/// to a closed or rejecting port with a reset at once, and a dropping one with
/// nothing: a refused connect is [`ProbeResult::Reset`], one that times out
/// [`ProbeResult::Silent`].
pub fn probe(addr: std::net::SocketAddr, wait: std::time::Duration) -> std::io::Result<ProbeResult> {
    use std::io::Read;
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, wait) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(ProbeResult::Reset),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            return Ok(ProbeResult::Silent)
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(n) => Ok(ProbeResult::Answered(String::from_utf8_lossy(&buf[..n]).into_owned())),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Ok(ProbeResult::Silent)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(ProbeResult::Reset)
        }
        Err(e) => Err(e),
    }
}
