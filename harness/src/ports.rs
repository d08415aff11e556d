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
    /// The connection was accepted but nothing came back: a listener that
    /// waits for the client to speak first (HTTP, PostgreSQL). Seen directly
    /// on a host reached without a forward, or in the guest's own socket
    /// table behind a forward (see [`accepted_from`]).
    Accepted,
    /// The connection was reset: nothing listens there, or the firewall rejects.
    Reset,
    /// Nothing at all until the timeout: the firewall drops.
    Silent,
}

impl ProbeResult {
    /// Whether something in the guest answered.
    pub fn answered(&self) -> bool {
        matches!(self, ProbeResult::Answered(_) | ProbeResult::Accepted)
    }
}

/// The address connections through a QEMU user-network forward come from,
/// as the guest sees them.
pub const USER_NET_HOST: &str = "10.0.2.2";

/// A probe's result, with its connection held open until this is dropped
/// (so the guest's socket table still shows it, see [`accepted_from`]).
#[derive(Debug)]
pub struct HeldProbe {
    /// What the probe saw.
    pub result: ProbeResult,
    _stream: Option<std::net::TcpStream>,
}

/// [`probe`], keeping the connection open. `through_forward`: `addr` is a
/// QEMU user-network forward (which accepts every connection itself); else a
/// completed connect is the host's own answer ([`ProbeResult::Accepted`] when
/// no bytes follow).
pub fn probe_held(
    addr: std::net::SocketAddr,
    wait: std::time::Duration,
    through_forward: bool,
) -> std::io::Result<HeldProbe> {
    use std::io::Read;
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, wait) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(HeldProbe {
                result: ProbeResult::Reset,
                _stream: None,
            })
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            return Ok(HeldProbe {
                result: ProbeResult::Silent,
                _stream: None,
            })
        }
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 64];
    let result = match stream.read(&mut buf) {
        Ok(n) => ProbeResult::Answered(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            if through_forward {
                ProbeResult::Silent
            } else {
                ProbeResult::Accepted
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            ProbeResult::Reset
        }
        Err(e) => return Err(e),
    };
    Ok(HeldProbe {
        result,
        _stream: Some(stream),
    })
}

/// The guest's local ports that hold a TCP connection (any state) from
/// `peer`, read from `ss -Htan` in the guest: behind a QEMU forward, a
/// connection from outside comes from the user network's host address
/// (`10.0.2.2`), and a port the guest accepted it on answered at the TCP
/// level even when no bytes came back.
pub fn accepted_from(ss: &str, peer: &str) -> std::collections::BTreeSet<u16> {
    ss.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (local, remote) = (words.get(3)?, words.get(4)?);
            let remote_host = remote.rsplit_once(':')?.0.trim_start_matches('[').trim_end_matches(']');
            let remote_host = remote_host.strip_prefix("::ffff:").unwrap_or(remote_host);
            if remote_host != peer || words[0] == "LISTEN" {
                return None;
            }
            local.rsplit_once(':')?.1.parse().ok()
        })
        .collect()
}

/// Connects to `addr` (a QEMU forward) and waits up to `wait` for anything
/// to come back; the connection is closed on return (see [`probe_held`]).
///
/// A host reached directly answers a connection to a closed or rejecting
/// port with a reset at once, and a dropping one with nothing: a refused
/// connect is [`ProbeResult::Reset`], one that times out [`ProbeResult::Silent`].
pub fn probe(addr: std::net::SocketAddr, wait: std::time::Duration) -> std::io::Result<ProbeResult> {
    probe_held(addr, wait, addr.ip().is_loopback()).map(|held| held.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_from_the_forward_are_found_by_local_port() {
        let ss = "\
LISTEN 0 511 0.0.0.0:3002 0.0.0.0:*
ESTAB 0 0 10.0.2.15:22 10.0.2.2:41830
ESTAB 0 0 10.0.2.15:9090 10.0.2.2:41831
SYN-RECV 0 0 10.0.2.15:5432 10.0.2.2:41832
ESTAB 0 0 127.0.0.1:3000 127.0.0.1:51000
ESTAB 0 0 [::ffff:10.0.2.15]:8099 [::ffff:10.0.2.2]:41833
TIME-WAIT 0 0 10.0.2.15:3001 10.0.2.3:53
";
        let ports: Vec<u16> = accepted_from(ss, "10.0.2.2").into_iter().collect();
        assert_eq!(ports, [22, 5432, 8099, 9090]);
    }

    #[test]
    fn a_direct_host_that_accepts_and_stays_silent_answered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let wait = std::time::Duration::from_millis(200);
        assert_eq!(probe_held(addr, wait, false).unwrap().result, ProbeResult::Accepted);
        assert_eq!(probe_held(addr, wait, true).unwrap().result, ProbeResult::Silent);
        drop(listener);
        assert_eq!(probe_held(addr, wait, false).unwrap().result, ProbeResult::Reset);
    }
}
