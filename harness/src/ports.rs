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
